/**
 * The diffusion sampler (SPEC 5). One loop, two policy choices:
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
  /** Refine only from this fraction of each block's steps on (0 = from the first step), as the authors' revise_start_step. */
  fromFraction: number;
  /** Refine only the most confident fraction of the already-unmasked positions (1 = all), int(n * f) of them as the authors' revise_topk. */
  topFraction: number;
}

export interface SamplerOptions {
  /** Total steps for the whole response (schedule policy); also the cap for threshold. */
  steps: number;
  /** Block length for semi-autoregressive decoding; default DEFAULT_BLOCK_LENGTH where it fits (see defaultBlockLength). */
  blockLength?: number;
  /** 0 = argmax; > 0 = Gumbel-max sampling at this temperature. */
  temperature: number;
  /** How masked positions are ranked for commitment: model confidence, or at random. */
  remasking: 'low-confidence' | 'random';
  commit: CommitPolicy;
  refine: RefinePolicy | null;
  /** Positions after the first committed EOS are finished (filled with EOS). */
  stopAtEos: boolean;
  /** Row i draws its random numbers from Rng(seed + i), so a row's caption does not depend on the others in its batch. */
  seed: number;
  trace: boolean;
  /**
   * Finished rows leave the batch and rows move to their next block on their own (default true).
   * False runs every row at every step and the blocks in lock-step, as rediff did before;
   * results are the same either way, only the cost differs.
   */
  compaction?: boolean;
  /** K/V cache of block decoding (default 'none'): see CACHE_MODES. */
  cache?: CacheMode;
  /** Called after each step for every row that took part in it (e.g. to stream progress); `tokens` is the row's live state: copy it to keep it. */
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
 * half as long as the references (docs/diagnosis.md).
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

/**
 * Captions a batch of images. `patches[i]` is image i's patch tensor, `prompts[i]` its prompt ids.
 */
export async function sample(
  model: DenoisingModel,
  patches: readonly Float32Array[],
  prompts: readonly (readonly number[])[],
  o: SamplerOptions,
): Promise<SampleResult[]> {
  const length = model.config.responseLength;
  const v = model.config.vocabSize;
  const { blockLength, stepsPerBlock } = validateSamplerOptions(o, length);
  const cacheMode = o.cache ?? 'none';
  if (cacheMode !== 'none' && !isCachingModel(model))
    throw new UserError(`this model cannot decode with a K/V cache (cache "${cacheMode}"); use cache "none"`);
  const blocks = length / blockLength;
  const compaction = o.compaction ?? true;
  const stepCap = o.commit.kind === 'threshold' ? blockLength : stepsPerBlock;
  const embeds = await model.encodeImages(patches);
  const perImage = embeds.length / Math.max(1, patches.length);
  const rows: Row[] = prompts.map((prompt, index) => ({
    index,
    x: new Array<number>(length).fill(MASK_ID),
    prompt,
    embeds: embeds.subarray(index * perImage, (index + 1) * perImage),
    rng: new Rng(o.seed + index),
    eosAt: -1,
    steps: 0,
    trace: [],
    done: false,
    block: -1,
    blockStep: 0,
    schedule: [],
    cache: null,
  }));

  const maskedIn = (r: Row): number[] => {
    const out: number[] = [];
    for (let i = r.block * blockLength; i < (r.block + 1) * blockLength; i++) if (r.x[i] === MASK_ID) out.push(i);
    return out;
  };
  const enterBlock = (r: Row, block: number): void => {
    r.block = block;
    r.blockStep = 0;
    r.schedule = block < blocks ? transferSchedule(maskedIn(r).length, stepsPerBlock) : [];
  };
  const hasWork = (r: Row): boolean => !r.done && r.block < blocks && r.blockStep < stepCap && maskedIn(r).length > 0;
  const shape: PassShape = { length, vocabSize: v, blockLength, blocks, cache: cacheMode, pad: compaction };

  // One step of one row on its logits: commit, refine, trace.
  const advance = (r: Row, logits: RowLogits): void => {
    const s = r.blockStep;
    const blockStart = r.block * blockLength;
    const blockEnd = blockStart + blockLength;
    const masked = maskedIn(r);
    const step = r.steps;
    r.steps++;
    r.blockStep++;
    const preds = new Map<number, { token: number; conf: number }>();
    for (let i = blockStart; i < blockEnd; i++) {
      if (r.eosAt >= 0 && i > r.eosAt) continue;
      preds.set(i, predict(logits.data, logits.base + (i - logits.first) * v, v, o.temperature, r.rng));
    }
    // The EOS boundary itself is final too: refinement never moves where the response ends.
    const wasUnmasked = [...preds.keys()].filter((i) => r.x[i] !== MASK_ID && !(r.eosAt >= 0 && i >= r.eosAt));
    // Commit.
    const rank = (i: number): number => (o.remasking === 'random' ? r.rng.next() : preds.get(i)!.conf);
    // Ties break by position, left first, so results are deterministic.
    const scored = masked.map((i) => ({ i, score: rank(i) })).sort((a, c) => c.score - a.score || a.i - c.i);
    let k: number;
    if (o.commit.kind === 'threshold') {
      const th = o.commit.threshold;
      k = Math.max(1, masked.filter((i) => preds.get(i)!.conf >= th).length);
    } else {
      k = s === stepsPerBlock - 1 ? masked.length : Math.min(masked.length, r.schedule[s]!);
    }
    const trace: StepTrace = { step, committed: [], refined: [] };
    for (const { i } of scored.slice(0, k)) {
      const tok = preds.get(i)!.token;
      r.x[i] = tok;
      trace.committed.push({ pos: i, token: tok });
      if (tok === EOS_ID && o.stopAtEos && (r.eosAt < 0 || i < r.eosAt)) r.eosAt = i;
    }
    // Refine (ReDiff): rewrite positions that were already decoded before this step.
    // Counted within each block, as the authors' revise_start_step.
    if (o.refine !== null && s >= Math.floor(o.refine.fromFraction * stepsPerBlock)) {
      let targets = wasUnmasked;
      if (o.refine.topFraction < 1) {
        const n = Math.floor(targets.length * o.refine.topFraction);
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
    if (r.eosAt >= 0) for (let i = r.eosAt + 1; i < length; i++) r.x[i] = EOS_ID;
    if (o.trace) r.trace.push(trace);
    o.onStep?.(r.index, trace, r.x);
    if (!r.x.includes(MASK_ID)) r.done = true;
  };

  if (compaction) {
    // Each row moves through its blocks on its own; only rows with work go to the model.
    for (const r of rows) enterBlock(r, 0);
    for (;;) {
      for (const r of rows) while (!r.done && r.block < blocks && !hasWork(r)) enterBlock(r, r.block + 1);
      const working = rows.filter(hasWork);
      if (working.length === 0) break;
      const logits = await forwardPass(model, shape, working, (r) => r.blockStep === 0);
      for (const r of working) advance(r, logits.get(r)!);
    }
  } else {
    // Lock-step: every row goes through the model at every step of every block.
    for (let block = 0; block < blocks; block++) {
      for (const r of rows) enterBlock(r, block);
      for (let s = 0; s < stepCap; s++) {
        const working = rows.filter(hasWork);
        if (working.length === 0) break;
        const logits = await forwardPass(model, shape, rows, () => s === 0);
        for (const r of working) advance(r, logits.get(r)!);
      }
    }
  }
  return rows.map((r) => ({ tokens: r.x, steps: r.steps, ...(o.trace ? { trace: r.trace } : {}) }));
}
