/**
 * The forward (corruption) process of training. Mask prediction (LLaDA-V): response-only masking
 * with p = (1 - 1e-3) t + 1e-3. Stage I (revision): synthetic "syntax" noise on unmasked tokens with
 * probability q, and hallucination samples fed unmasked with the wrong span in place.
 * Every response position gets a type; the loss weights follow from the types (./loss.ts).
 */
import { EOS_ID, MASK_ID } from '../tokenizer/tokenizer.js';
import { UserError } from '../util/errors.js';
import type { Rng } from '../util/rng.js';

export type TokenType = 'mask' | 'syntax' | 'clean' | 'hallucination' | 'ignore';

export interface CorruptedResponse {
  /** Model input at response positions (length L). */
  input: number[];
  /** Target at response positions (length L). */
  target: number[];
  types: TokenType[];
  /** Masking probability of this sample (1 for unmasked samples). */
  p: number;
  /** The sampled noise level t (NaN for unmasked samples). */
  t: number;
  /** Positions the loss is averaged over (default: every response position). */
  scored?: number;
}

export const MIN_MASK_PROB = 1e-3;

export interface NoiseOptions {
  /** Probability that an unmasked token is replaced by a random ordinary token (0 = mask prediction only). */
  syntaxNoise: number;
  /** Ablation "dynamic revise ratio": q = t while t < 0.1 (and 0 otherwise). */
  dynamicSyntaxNoise?: boolean;
  /** Ordinary token ids are [firstOrdinaryId, vocabSize). */
  firstOrdinaryId: number;
  vocabSize: number;
}

/** Pads a caption with EOS to L; the padding counts as response (the model learns where to stop). */
export function padResponse(ids: readonly number[], length: number, what = 'caption'): number[] {
  if (ids.length >= length) {
    throw new UserError(`${what} has ${ids.length} tokens, more than the generation length ${length} minus one EOS`);
  }
  return [...ids, ...new Array<number>(length - ids.length).fill(EOS_ID)];
}

/**
 * The masks the semi-autoregressive sampler meets while it writes (blocks of `blockLength`): the
 * blocks before block k written, block k masked at the usual rate p(t), every later position
 * masked but not scored. Uniform masks almost never show a model this context, a written prefix
 * and nothing but masks after the block, which is where it decides what to say next (and where
 * the base described objects twice; docs/design.md#block-masks). Block k is drawn uniformly from
 * the blocks of text, those wholly before the first EOS; where the caption ends stays learned
 * from uniform masks alone, since a model that also learned to end captions in this context
 * committed the EOS tail of a block first and wrote captions a fifth shorter (point 31). The
 * loss is averaged over the block, so that a block sample weighs as much as a uniform one (the
 * revision objective keeps its per-type averages). With `noise`, written tokens get the revision
 * objective's syntax noise. Null when the caption has no block of text (it ends inside the
 * first block).
 */
export function blockMaskResponse(
  clean: readonly number[],
  rng: Rng,
  blockLength: number,
  opts: { noise?: NoiseOptions; fixedT?: number } = {},
): CorruptedResponse | null {
  const k = drawTextBlock(clean, rng, blockLength);
  if (k === null) return null;
  const t = opts.fixedT ?? rng.next();
  const p = maskProbability(t);
  const q = opts.noise ? syntaxNoiseRate(opts.noise, t) : 0;
  const input: number[] = [];
  const types: TokenType[] = [];
  clean.forEach((tok, i) => {
    const block = Math.floor(i / blockLength);
    if (block < k || (block === k && !(rng.next() < p))) pushShown(tok, rng, q, opts.noise, input, types);
    else {
      input.push(MASK_ID);
      types.push(block === k ? 'mask' : 'ignore');
    }
  });
  return { input, target: [...clean], types, p, t, scored: blockLength };
}

/** The masking probability at noise level t: p = (1 - eps) t + eps, never 0. */
const maskProbability = (t: number): number => (1 - MIN_MASK_PROB) * t + MIN_MASK_PROB;

/**
 * Block k of the sampler's context, drawn uniformly from the blocks of text (those wholly before
 * the first EOS); null when there is none.
 */
function drawTextBlock(response: readonly number[], rng: Rng, blockLength: number): number | null {
  if (!(Number.isInteger(blockLength) && blockLength > 0 && response.length % blockLength === 0)) {
    throw new UserError(`block length ${blockLength} must divide the response length ${response.length}`);
  }
  const firstEos = response.indexOf(EOS_ID);
  const textBlocks = Math.floor((firstEos < 0 ? response.length : firstEos) / blockLength);
  return textBlocks === 0 ? null : rng.int(textBlocks);
}

/** The positions a correction's spans cover. */
function spanPositions(spans: readonly { start: number; length: number }[]): Set<number> {
  const out = new Set<number>();
  for (const s of spans) for (let i = s.start; i < s.start + s.length; i++) out.add(i);
  return out;
}

/** Draws a uniformly random ordinary token other than `avoid`, so noise is always a real error. */
export function randomOrdinaryToken(
  rng: Rng,
  opts: Pick<NoiseOptions, 'firstOrdinaryId' | 'vocabSize'>,
  avoid: number,
): number {
  const n = opts.vocabSize - opts.firstOrdinaryId;
  if (n < 2) throw new Error('vocabulary has fewer than two ordinary tokens');
  let id = opts.firstOrdinaryId + rng.int(n - 1);
  if (id >= avoid && avoid >= opts.firstOrdinaryId) id++;
  return id;
}

/** Masks (and optionally noises) a clean response; `t` may be fixed for tests. */
export function corruptResponse(
  clean: readonly number[],
  rng: Rng,
  opts: NoiseOptions,
  fixedT?: number,
): CorruptedResponse {
  const t = fixedT ?? rng.next();
  const p = maskProbability(t);
  const q = syntaxNoiseRate(opts, t);
  const input: number[] = [];
  const types: TokenType[] = [];
  for (const tok of clean) {
    if (rng.next() < p) {
      input.push(MASK_ID);
      types.push('mask');
    } else pushShown(tok, rng, q, opts, input, types);
  }
  return { input, target: [...clean], types, p, t };
}

/** The syntax-noise rate at noise level t (the dynamic ablation: q = t while t < 0.1). */
function syntaxNoiseRate(o: NoiseOptions, t: number): number {
  return o.dynamicSyntaxNoise ? (t < 0.1 ? t : 0) : o.syntaxNoise;
}

/** An unmasked token: kept, or with probability q replaced by noise that is always a real error. */
function pushShown(
  tok: number,
  rng: Rng,
  q: number,
  vocab: Pick<NoiseOptions, 'firstOrdinaryId' | 'vocabSize'> | undefined,
  input: number[],
  types: TokenType[],
): void {
  if (q > 0 && rng.next() < q) {
    input.push(randomOrdinaryToken(rng, vocab!, tok));
    types.push('syntax');
  } else {
    input.push(tok);
    types.push('clean');
  }
}

/**
 * A span-correction sample (a hallucination pair, or an expert's correction of a draft):
 * fed unmasked; the differing span positions are in the loss, and with `keepRest` every other
 * position too, as a clean token to keep.
 */
export function spanCorrectionSample(
  wrong: readonly number[],
  correct: readonly number[],
  spans: readonly { start: number; length: number }[],
  keepRest = false,
): CorruptedResponse {
  if (wrong.length !== correct.length) throw new Error('span correction: wrong and correct differ in length');
  const flagged = spanPositions(spans);
  const types: TokenType[] = wrong.map((_, i) => (flagged.has(i) ? 'hallucination' : keepRest ? 'clean' : 'ignore'));
  return { input: [...wrong], target: [...correct], types, p: 1, t: Number.NaN };
}

/**
 * A draft's correction in the context the refining sampler revises it in (Stage II with block
 * masks): the blocks before a block k shown as drafted, block k shown with its other tokens
 * masked at a random rate, every later position masked and not scored. Flagged tokens are always
 * shown (they are what is to be corrected) and scored; shown tokens are scored as ones to keep,
 * masked ones of block k as masks. Each type is averaged on its own, without the 1/p weight
 * (p = 1), like the unmasked correction sample. Block k is drawn, as in blockMaskResponse, from
 * the blocks wholly before the draft's first EOS (drafts learned to end early otherwise: their
 * captions came out an eighth shorter); null when there is none.
 */
export function blockCorrectionSample(
  wrong: readonly number[],
  correct: readonly number[],
  spans: readonly { start: number; length: number }[],
  rng: Rng,
  blockLength: number,
): CorruptedResponse | null {
  if (wrong.length !== correct.length) throw new Error('span correction: wrong and correct differ in length');
  const k = drawTextBlock(wrong, rng, blockLength);
  if (k === null) return null;
  const flagged = spanPositions(spans);
  const t = rng.next();
  const p = maskProbability(t);
  const input: number[] = [];
  const types: TokenType[] = [];
  wrong.forEach((tok, i) => {
    const block = Math.floor(i / blockLength);
    if (block > k) {
      input.push(MASK_ID);
      types.push('ignore');
    } else if (flagged.has(i)) {
      input.push(tok);
      types.push('hallucination');
    } else if (block === k && rng.next() < p) {
      input.push(MASK_ID);
      types.push('mask');
    } else {
      input.push(tok);
      types.push('clean');
    }
  });
  return { input, target: [...correct], types, p: 1, t };
}
