/**
 * The tokenizer surface the rest of rediff uses. Two implementations: WordTokenizer (closed
 * word vocabulary, ./word.ts) and HuggingFaceTokenizer (a user's tokenizer.json,
 * ./huggingface.ts).
 *
 * Id layout contract, shared by both: PAD = 0, MASK = 1, EOS = 2, UNK = 3 (the constants of
 * ./word.ts, re-exported here), then any other special tokens, then ordinary tokens from
 * `firstOrdinaryId` up to `size - 1`. So code may use the constants directly, and synthetic
 * noise draws ordinary ids uniformly from [firstOrdinaryId, size). The Hugging Face adapter
 * renumbers its vocabulary to honour this.
 */
import { UserError } from '../util/errors.js';
import { EOS_ID, MASK_ID, PAD_ID, UNK_ID, WordTokenizer } from './word.js';
import { HuggingFaceTokenizer } from './huggingface.js';

export { EOS_ID, MASK_ID, PAD_ID, UNK_ID };

export interface SpecialIds {
  pad: number;
  mask: number;
  eos: number;
  unk: number;
}

/** The special ids every Tokenizer uses (see the layout contract above). */
export const SPECIAL_IDS: Readonly<SpecialIds> = Object.freeze({
  pad: PAD_ID,
  mask: MASK_ID,
  eos: EOS_ID,
  unk: UNK_ID,
});

export interface Tokenizer {
  /** Vocabulary size (the model's embedding rows / output classes). */
  readonly size: number;
  /** Ids >= this are ordinary tokens; ids below are special. */
  readonly firstOrdinaryId: number;
  isSpecial(id: number): boolean;
  /** Id of one token (a vocabulary entry, not text to be split), or undefined. */
  idOf(token: string): number | undefined;
  /** Text -> ids, without adding any special token. */
  encode(text: string): number[];
  /** Ids -> text: stops at the first EOS, drops PAD, keeps masks visible. */
  decode(ids: readonly number[]): string;
  /** One display string per id, unjoined (for traces). */
  pieces(ids: readonly number[]): string[];
  /** JSON to store in a checkpoint; restore with tokenizerFromJSON. */
  toJSON(): object;
}

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
