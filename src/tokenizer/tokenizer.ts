/**
 * The tokenizer surface the rest of rediff uses, and the special ids every tokenizer shares.
 * Two implementations: WordTokenizer (closed word vocabulary, ./word.ts) and
 * HuggingFaceTokenizer (a user's tokenizer.json, ./huggingface.ts); ./kinds.ts restores either
 * from a checkpoint.
 *
 * Id layout contract, shared by both: PAD = 0, MASK = 1, EOS = 2, UNK = 3, then any other
 * special tokens, then ordinary tokens from `firstOrdinaryId` up to `size - 1`. So code may use
 * the constants directly, and synthetic noise draws ordinary ids uniformly from
 * [firstOrdinaryId, size). The Hugging Face adapter renumbers its vocabulary to honour this.
 */
export const PAD_ID = 0;
export const MASK_ID = 1;
export const EOS_ID = 2;
export const UNK_ID = 3;

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
