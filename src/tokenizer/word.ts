import { UserError } from '../util/errors.js';
import { EOS_ID, PAD_ID, type Tokenizer, UNK_ID } from './tokenizer.js';

/** Special tokens, always the first ids of every word vocabulary, in the order of the ids of ./tokenizer.ts. */
export const SPECIAL_TOKENS = ['[PAD]', '[MASK]', '[EOS]', '[UNK]'] as const;

export interface TokenizerJSON {
  kind: 'word';
  vocab: string[];
}

/** Text -> word and punctuation pieces, lower-cased. "Two red circles, left." -> [two, red, circles, ",", left, "."] */
export function splitWords(text: string): string[] {
  return text.toLowerCase().match(/[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]/g) ?? [];
}

/**
 * Word-level tokenizer over a closed vocabulary. The benchmark's captions use a few hundred
 * words, so whole words are the natural unit: one token per word keeps spans aligned with
 * claims, which the hallucination pairs and the expert's same-length edits rely on.
 */
export class WordTokenizer implements Tokenizer {
  readonly vocab: readonly string[];
  private readonly index: Map<string, number>;

  constructor(words: Iterable<string>) {
    const vocab: string[] = [...SPECIAL_TOKENS];
    const seen = new Set<string>(vocab);
    for (const w of words) {
      if (!seen.has(w)) {
        seen.add(w);
        vocab.push(w);
      }
    }
    this.vocab = vocab;
    this.index = new Map(vocab.map((w, i) => [w, i]));
  }

  get size(): number {
    return this.vocab.length;
  }

  /** Ordinary (non-special) ids: the ones synthetic noise may draw from. */
  get firstOrdinaryId(): number {
    return SPECIAL_TOKENS.length;
  }

  isSpecial(id: number): boolean {
    return id < SPECIAL_TOKENS.length;
  }

  idOf(word: string): number | undefined {
    return this.index.get(word);
  }

  /** Encodes text; unknown words become [UNK] and are listed in `unknown`. */
  encodeWithUnknown(text: string): { ids: number[]; unknown: string[] } {
    const ids: number[] = [];
    const unknown: string[] = [];
    for (const w of splitWords(text)) {
      const id = this.index.get(w);
      if (id === undefined) {
        ids.push(UNK_ID);
        unknown.push(w);
      } else ids.push(id);
    }
    return { ids, unknown };
  }

  encode(text: string): number[] {
    return this.encodeWithUnknown(text).ids;
  }

  /** Strict encoding: throws a UserError naming the words outside the vocabulary. */
  encodeStrict(text: string, where = 'text'): number[] {
    const { ids, unknown } = this.encodeWithUnknown(text);
    if (unknown.length > 0) {
      throw new UserError(`${where}: words outside the vocabulary: ${[...new Set(unknown)].slice(0, 10).join(', ')}`);
    }
    return ids;
  }

  /** Pieces for ids, without joining (specials kept as their names). */
  pieces(ids: readonly number[]): string[] {
    return ids.map((id) => this.vocab[id] ?? '[UNK]');
  }

  /**
   * Ids -> readable text: stops at the first EOS, drops padding, attaches punctuation and
   * capitalises sentence starts. Masks stay visible as "[MASK]".
   */
  decode(ids: readonly number[]): string {
    const words: string[] = [];
    for (const id of ids) {
      if (id === EOS_ID) break;
      if (id === PAD_ID) continue;
      words.push(this.vocab[id] ?? '[UNK]');
    }
    return joinWords(words);
  }

  toJSON(): TokenizerJSON {
    return { kind: 'word', vocab: [...this.vocab] };
  }

  static fromJSON(json: unknown, where = 'tokenizer'): WordTokenizer {
    const j = json as Partial<TokenizerJSON> | null;
    if (!j || j.kind !== 'word' || !Array.isArray(j.vocab) || !j.vocab.every((w) => typeof w === 'string')) {
      throw new UserError(`${where}: not a rediff word tokenizer (expected {kind: "word", vocab: string[]})`);
    }
    for (let i = 0; i < SPECIAL_TOKENS.length; i++) {
      if (j.vocab[i] !== SPECIAL_TOKENS[i]) {
        throw new UserError(`${where}: vocabulary must start with ${SPECIAL_TOKENS.join(', ')}`);
      }
    }
    return new WordTokenizer(j.vocab);
  }
}

/** Joins word pieces into display text. */
export function joinWords(words: readonly string[]): string {
  let out = '';
  let capitalise = true;
  for (const w of words) {
    const isPunct = /^[^a-z0-9[]/.test(w);
    if (out.length > 0 && !isPunct) out += ' ';
    out += capitalise && !isPunct ? w.charAt(0).toUpperCase() + w.slice(1) : w;
    if (!isPunct) capitalise = false;
    if (w === '.' || w === '!' || w === '?') capitalise = true;
  }
  return out;
}
