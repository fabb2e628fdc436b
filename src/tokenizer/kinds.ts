/**
 * The two kinds of Tokenizer (./tokenizer.ts) behind one door: restore either from the JSON a
 * checkpoint stores, and ask either which words of a text it cannot represent.
 */
import { UserError } from '../util/errors.js';
import { HuggingFaceTokenizer } from './huggingface.js';
import { type Tokenizer, UNK_ID } from './tokenizer.js';
import { WordTokenizer } from './word.js';

/**
 * The words of `text` the tokenizer would turn into UNK, distinct, in order of appearance.
 * Word tokenizers list them exactly; for others, the whitespace-separated words whose
 * encoding contains UNK (byte-level BPEs have none).
 */
export function wordsOutsideVocabulary(tokenizer: Tokenizer, text: string): string[] {
  if (tokenizer instanceof WordTokenizer) return [...new Set(tokenizer.encodeWithUnknown(text).unknown)];
  if (!tokenizer.encode(text).includes(UNK_ID)) return [];
  return [...new Set(text.split(/\s+/).filter((w) => w !== '' && tokenizer.encode(w).includes(UNK_ID)))];
}

/** Restores a tokenizer saved with toJSON (dispatches on its `kind`: "word" or "huggingface"). */
export function tokenizerFromJSON(json: unknown, where = 'tokenizer'): Tokenizer {
  const kind = (json as { kind?: unknown } | null)?.kind;
  if (kind === 'word') return WordTokenizer.fromJSON(json, where);
  if (kind === 'huggingface') return HuggingFaceTokenizer.fromJSON(json, where);
  throw new UserError(
    `${where}: unknown tokenizer kind ${JSON.stringify(kind ?? null)} (expected "word" or "huggingface")`,
  );
}
