/**
 * The diffusion sampler (the paper's Section 3.4). One loop, two policy choices:
 * - commit policy: how many masked positions of the current block become tokens each step
 *   ("schedule": LLaDA's even split of the block's masks over its steps; "threshold":
 *   every masked position at or above a confidence threshold, at least one, as Fast-dLLM);
 * - refine policy: none (LLaDA: committed tokens never change) or ReDiff's refinement
 *   (every position of the current block that was unmasked before this step is overwritten
 *   with this step's prediction).
 * The vision encoder runs once per image. Each row moves through its blocks on its own, and
 * only rows with work left go through the language model (compaction), so a batch costs what
 * its mean row costs, not its slowest. `cache` reuses keys and values within a block
 * (./forward-pass.ts).
 */
import { EOS_ID, MASK_ID } from '../tokenizer/tokenizer.js';
import { UserError } from '../util/errors.js';
import { Rng } from '../util/rng.js';
import type { KvCache } from '../model/model.js';
import {
  CACHE_MODES,
  type CacheMode,
  type DenoisingModel,
  type PassShape,
  type RowLogits,
  isCachingModel,
  forwardPass,
} from './forward-pass.js';

export {
  CACHE_MODES,
  type CacheMode,
  type CachingModel,
  type DenoisingModel,
  batchBucket,
  isCachingModel,
} from './forward-pass.js';

export type CommitPolicy = { kind: 'schedule' } | { kind: 'threshold'; threshold: number };

export interface RefinePolicy {
  /**
   * Refine only from this fraction of each block's steps on (0 = from the first step), as the authors'
   * revise_start_step.
   */
  fromFraction: number;
  /**
   * Refine only the most confident fraction of the already-unmasked positions (1 = all), int(n * f) of them as the
   * authors' revise_topk.
   */
  topFraction: number;
}

export interface SamplerOptions {
  /** Total steps for the whole response (schedule policy); also the cap for threshold. */
  steps: number;
  /**
   * Block length for semi-autoregressive decoding; default DEFAULT_BLOCK_LENGTH where it fits (see
   * defaultBlockLength).
   */
  blockLength?: number;
  /** 0 = argmax; > 0 = Gumbel-max sampling at this temperature. */
  temperature: number;
  /** How masked positions are ranked for commitment: model confidence, or at random. */
  remasking: 'low-confidence' | 'random';
  commit: CommitPolicy;
  refine: RefinePolicy | null;
  /** Positions after the first committed EOS are finished (filled with EOS). */
  stopAtEos: boolean;
  /**
   * Row i draws its random numbers from Rng(seed + i), so a row's caption does not depend on the others in its batch.
   */
  seed: number;
  trace: boolean;
  /**
   * Finished rows leave the batch and rows move to their next block on their own (default true).
   * False runs every row at every step and the blocks in lock-step, as LLaDA's generate does;
   * results are the same either way, only the cost differs (docs/design.md#compaction).
   */
  compaction?: boolean;
  /** K/V cache of block decoding (default 'none'): see CACHE_MODES. */
  cache?: CacheMode;
  /**
   * Called after each step for every row that took part in it (e.g. to stream progress); `tokens` is the row's live
   * state: copy it to keep it.
   */
  onStep?: (row: number, step: StepTrace, tokens: readonly number[]) => void;
}

export const SAMPLER_NAMES = ['llada', 'rediff', 'threshold', 'threshold-rediff'] as const;
export type SamplerName = (typeof SAMPLER_NAMES)[number];

/** Named sampler presets: LLaDA's, ReDiff's refining sampler, and their confidence-threshold variants. */
export function samplerOptions(
  name: string,
  overrides: Partial<SamplerOptions> & { steps: number },
  threshold = 0.9,
): SamplerOptions {
  if (!(SAMPLER_NAMES as readonly string[]).includes(name)) {
    throw new UserError(`unknown sampler "${name}" (choose one of: ${SAMPLER_NAMES.join(', ')})`);
  }
  const refine = name === 'rediff' || name === 'threshold-rediff' ? { fromFraction: 0, topFraction: 1 } : null;
  const commit: CommitPolicy = name.startsWith('threshold') ? { kind: 'threshold', threshold } : { kind: 'schedule' };
  return {
    temperature: 0,
    remasking: 'low-confidence',
    stopAtEos: true,
    seed: 0,
    trace: false,
    commit,
    refine,
    ...overrides,
  };
}

export interface StepTrace {
  /** The row's own step, counted from 0. */
  step: number;
  committed: { pos: number; token: number }[];
  refined: { pos: number; from: number; to: number }[];
}

export interface SampleResult {
  tokens: number[];
  /** Forward passes spent on this row (it may finish before the others). */
  steps: number;
  trace?: StepTrace[];
}

/** LLaDA's get_num_transfer_tokens: split n masks evenly over s steps, remainder first. */
export function transferSchedule(masks: number, steps: number): number[] {
  const base = Math.floor(masks / steps);
  const rem = masks % steps;
  return Array.from({ length: steps }, (_, i) => base + (i < rem ? 1 : 0));
}

/**
 * Semi-autoregressive blocks of 32, as LLaDA's own evaluations decode: with the whole response
 * as one block, low-confidence remasking commits the EOS tail first and captions come out about
 * half as long as the references (docs/design.md#blocks-of-32).
 */
export const DEFAULT_BLOCK_LENGTH = 32;

/** DEFAULT_BLOCK_LENGTH when it divides the length and the steps split evenly over its blocks, else one block. */
export function defaultBlockLength(length: number, steps: number): number {
  const b = DEFAULT_BLOCK_LENGTH;
  return length % b === 0 && steps % (length / b) === 0 ? b : length;
}

export function validateSamplerOptions(
  o: SamplerOptions,
  length: number,
): { blockLength: number; stepsPerBlock: number } {
  const blockLength = o.blockLength ?? defaultBlockLength(length, o.steps);
  if (!Number.isInteger(o.steps) || o.steps < 1)
    throw new UserError(`steps must be a positive integer, got ${o.steps}`);
  if (o.steps > length) throw new UserError(`steps (${o.steps}) cannot exceed the generation length (${length})`);
  if (!Number.isInteger(blockLength) || blockLength < 1 || length % blockLength !== 0) {
    throw new UserError(`block length ${blockLength} must divide the generation length ${length}`);
  }
  const blocks = length / blockLength;
  if (o.steps % blocks !== 0)
    throw new UserError(`steps (${o.steps}) must be a multiple of the number of blocks (${blocks})`);
  if (!(o.temperature >= 0)) throw new UserError(`temperature must be >= 0, got ${o.temperature}`);
  if (o.commit.kind === 'threshold' && !(o.commit.threshold > 0 && o.commit.threshold <= 1)) {
    throw new UserError(`confidence threshold must be in (0, 1], got ${o.commit.threshold}`);
  }
  if (
    o.refine &&
    !(o.refine.fromFraction >= 0 && o.refine.fromFraction <= 1 && o.refine.topFraction > 0 && o.refine.topFraction <= 1)
  ) {
    throw new UserError('refine fractions must be in [0, 1] (from) and (0, 1] (top)');
  }
  if (o.cache !== undefined && !(CACHE_MODES as readonly string[]).includes(o.cache)) {
    throw new UserError(`unknown cache mode "${String(o.cache)}" (choose one of: ${CACHE_MODES.join(', ')})`);
  }
  return { blockLength, stepsPerBlock: o.steps / blocks };
}

/** Per-position prediction: x0 (argmax or Gumbel-max) and its softmax probability. */
function predict(
  logits: Float32Array,
  offset: number,
  v: number,
  temperature: number,
  rng: Rng,
): { token: number; conf: number } {
  let max = -Infinity;
  for (let k = 0; k < v; k++) if (logits[offset + k]! > max) max = logits[offset + k]!;
  let z = 0;
  for (let k = 0; k < v; k++) z += Math.exp(logits[offset + k]! - max);
  let best = 0;
  let bestScore = -Infinity;
  for (let k = 0; k < v; k++) {
    const score = temperature > 0 ? logits[offset + k]! / temperature + rng.gumbel() : logits[offset + k]!;
    if (score > bestScore) {
      bestScore = score;
      best = k;
    }
  }
  return { token: best, conf: Math.exp(logits[offset + best]! - max) / z };
}

interface Row {
  /** Index in the batch (onStep's row). */
  index: number;
  x: number[];
  prompt: readonly number[];
  embeds: Float32Array;
  rng: Rng;
  /** Index of the first EOS committed from a mask, or -1. Positions after it are finished. */
  eosAt: number;
  steps: number;
  trace: StepTrace[];
  done: boolean;
  /** The block being decoded, the steps spent in it, and its commit schedule. */
  block: number;
  blockStep: number;
  schedule: number[];
  cache: KvCache | null;
}

/** What every step of one decode reads: the options and the block layout. */
interface Decoding {
  o: SamplerOptions;
  length: number;
  vocabSize: number;
  blockLength: number;
  blocks: number;
  stepsPerBlock: number;
  /** Steps a block may take: its share of the schedule, or (threshold) one per position. */
  stepCap: number;
}

type Prediction = { token: number; conf: number };

/**
 * Captions a batch of images. `patches[i]` is image i's patch tensor, `prompts[i]` its prompt ids.
 * Like LLaDA's `generate`: encode the images once, then, block by block, predict every position,
 * commit the most confident masks, and (ReDiff) refine what was decoded before.
 */
export async function sample(
  model: DenoisingModel,
  patches: readonly Float32Array[],
  prompts: readonly (readonly number[])[],
  o: SamplerOptions,
): Promise<SampleResult[]> {
  const length = model.config.responseLength;
  const { blockLength, stepsPerBlock } = validateSamplerOptions(o, length);
  const cache = o.cache ?? 'none';
  if (cache !== 'none' && !isCachingModel(model))
    throw new UserError(`this model cannot decode with a K/V cache (cache "${cache}"); use cache "none"`);
  const blocks = length / blockLength;
  const stepCap = o.commit.kind === 'threshold' ? blockLength : stepsPerBlock;
  const d: Decoding = { o, length, vocabSize: model.config.vocabSize, blockLength, blocks, stepsPerBlock, stepCap };
  const embeds = await model.encodeImages(patches);
  const perImage = embeds.length / Math.max(1, patches.length);
  const rows = prompts.map((prompt, index) =>
    newRow(d, index, prompt, embeds.subarray(index * perImage, (index + 1) * perImage)),
  );
  const compaction = o.compaction ?? true;
  const shape: PassShape = { length, vocabSize: d.vocabSize, blockLength, blocks, cache, pad: compaction };
  if (compaction) await decodeCompacted(model, shape, d, rows);
  else await decodeLockStep(model, shape, d, rows);
  return rows.map((r) => ({ tokens: r.x, steps: r.steps, ...(o.trace ? { trace: r.trace } : {}) }));
}

function newRow(d: Decoding, index: number, prompt: readonly number[], embeds: Float32Array): Row {
  return {
    index,
    x: new Array<number>(d.length).fill(MASK_ID),
    prompt,
    embeds,
    rng: new Rng(d.o.seed + index),
    eosAt: -1,
    steps: 0,
    trace: [],
    done: false,
    block: -1,
    blockStep: 0,
    schedule: [],
    cache: null,
  };
}

/** Each row moves through its blocks on its own; only rows with work go to the model. */
async function decodeCompacted(model: DenoisingModel, shape: PassShape, d: Decoding, rows: Row[]): Promise<void> {
  for (const r of rows) enterBlock(d, r, 0);
  for (;;) {
    for (const r of rows) while (!r.done && r.block < d.blocks && !hasWork(d, r)) enterBlock(d, r, r.block + 1);
    const working = rows.filter((r) => hasWork(d, r));
    if (working.length === 0) return;
    const logits = await forwardPass(model, shape, working, (r) => r.blockStep === 0);
    for (const r of working) advance(d, r, logits.get(r)!);
  }
}

/** Every row goes through the model at every step of every block (results as compaction's; only the cost differs). */
async function decodeLockStep(model: DenoisingModel, shape: PassShape, d: Decoding, rows: Row[]): Promise<void> {
  for (let block = 0; block < d.blocks; block++) {
    for (const r of rows) enterBlock(d, r, block);
    for (let s = 0; s < d.stepCap; s++) {
      const working = rows.filter((r) => hasWork(d, r));
      if (working.length === 0) break;
      const logits = await forwardPass(model, shape, rows, () => s === 0);
      for (const r of working) advance(d, r, logits.get(r)!);
    }
  }
}

function maskedIn(d: Decoding, r: Row): number[] {
  const out: number[] = [];
  for (let i = r.block * d.blockLength; i < (r.block + 1) * d.blockLength; i++) if (r.x[i] === MASK_ID) out.push(i);
  return out;
}

function enterBlock(d: Decoding, r: Row, block: number): void {
  r.block = block;
  r.blockStep = 0;
  r.schedule = block < d.blocks ? transferSchedule(maskedIn(d, r).length, d.stepsPerBlock) : [];
}

function hasWork(d: Decoding, r: Row): boolean {
  return !r.done && r.block < d.blocks && r.blockStep < d.stepCap && maskedIn(d, r).length > 0;
}

/** One step of one row on its logits: predict the block, commit, refine, trace. */
function advance(d: Decoding, r: Row, logits: RowLogits): void {
  const { o } = d;
  const s = r.blockStep;
  const masked = maskedIn(d, r);
  const trace: StepTrace = { step: r.steps, committed: [], refined: [] };
  r.steps++;
  r.blockStep++;
  const preds = predictBlock(d, r, logits);
  // The EOS boundary itself is final too: refinement never moves where the response ends.
  const decodedBefore = [...preds.keys()].filter((i) => r.x[i] !== MASK_ID && !(r.eosAt >= 0 && i >= r.eosAt));
  commit(d, r, preds, masked, commitCount(d, r, s, masked, preds), trace);
  // Counted within each block, as the authors' revise_start_step.
  if (o.refine !== null && s >= Math.floor(o.refine.fromFraction * d.stepsPerBlock)) {
    refine(r, preds, decodedBefore, o.refine.topFraction, trace);
  }
  if (r.eosAt >= 0) for (let i = r.eosAt + 1; i < d.length; i++) r.x[i] = EOS_ID;
  if (o.trace) r.trace.push(trace);
  o.onStep?.(r.index, trace, r.x);
  if (!r.x.includes(MASK_ID)) r.done = true;
}

/** x0 and its confidence at every position of the row's block not yet finished by an EOS. */
function predictBlock(d: Decoding, r: Row, logits: RowLogits): Map<number, Prediction> {
  const preds = new Map<number, Prediction>();
  const start = r.block * d.blockLength;
  for (let i = start; i < start + d.blockLength; i++) {
    if (r.eosAt >= 0 && i > r.eosAt) continue;
    const offset = logits.base + (i - logits.first) * d.vocabSize;
    preds.set(i, predict(logits.data, offset, d.vocabSize, d.o.temperature, r.rng));
  }
  return preds;
}

/**
 * How many masks this step commits: the schedule's share (all that remain at the block's last step), or every one
 * above the threshold (at least one).
 */
function commitCount(d: Decoding, r: Row, s: number, masked: number[], preds: Map<number, Prediction>): number {
  const c = d.o.commit;
  if (c.kind === 'threshold') return Math.max(1, masked.filter((i) => preds.get(i)!.conf >= c.threshold).length);
  return s === d.stepsPerBlock - 1 ? masked.length : Math.min(masked.length, r.schedule[s]!);
}

/** Commits the k highest-ranked masks (confidence, or random); ties break by position, left first. */
function commit(
  d: Decoding,
  r: Row,
  preds: Map<number, Prediction>,
  masked: number[],
  k: number,
  trace: StepTrace,
): void {
  const rank = (i: number): number => (d.o.remasking === 'random' ? r.rng.next() : preds.get(i)!.conf);
  const scored = masked.map((i) => ({ i, score: rank(i) })).sort((a, c) => c.score - a.score || a.i - c.i);
  for (const { i } of scored.slice(0, k)) {
    const tok = preds.get(i)!.token;
    r.x[i] = tok;
    trace.committed.push({ pos: i, token: tok });
    if (tok === EOS_ID && d.o.stopAtEos && (r.eosAt < 0 || i < r.eosAt)) r.eosAt = i;
  }
}

/**
 * ReDiff: rewrites positions decoded before this step with this step's prediction (the most confident fraction of
 * them).
 */
function refine(r: Row, preds: Map<number, Prediction>, decodedBefore: number[], top: number, trace: StepTrace): void {
  let targets = decodedBefore;
  if (top < 1) {
    const n = Math.floor(targets.length * top);
    targets = [...targets].sort((a, c) => preds.get(c)!.conf - preds.get(a)!.conf).slice(0, n);
  }
  for (const i of targets) {
    const tok = preds.get(i)!.token;
    if (tok !== r.x[i]) {
      trace.refined.push({ pos: i, from: r.x[i]!, to: tok });
      r.x[i] = tok;
    }
  }
}
