/**
 * The diffusion sampler (SPEC 5). One loop, two policy choices:
 * - commit policy: how many masked positions of the current block become tokens each step
 *   ("schedule": LLaDA's even split of the block's masks over its steps; "threshold":
 *   every masked position at or above a confidence threshold, at least one, as Fast-dLLM);
 * - refine policy: none (LLaDA: committed tokens never change) or ReDiff's refinement
 *   (every position of the current block that was unmasked before this step is overwritten
 *   with this step's prediction).
 * The vision encoder runs once per image; each step is one language-model pass for the
 * whole batch.
 */
import { EOS_ID, MASK_ID } from '../tokenizer/tokenizer.js';
import { UserError } from '../util/errors.js';
import { Rng } from '../util/rng.js';

/** What the sampler needs from a model: two calls, so tests can drive it with a fake. */
export interface DenoisingModel {
  readonly config: { responseLength: number; vocabSize: number };
  encodeImages(patches: readonly Float32Array[]): Promise<Float32Array>;
  logits(imageEmbeds: Float32Array, rows: { prompt: readonly number[]; response: ArrayLike<number> }[]): Promise<Float32Array>;
}

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
  seed: number;
  trace: boolean;
  /** Called after each step for every row that took part in it (e.g. to stream progress); `tokens` is the row's live state: copy it to keep it. */
  onStep?: (row: number, step: StepTrace, tokens: readonly number[]) => void;
}

export const SAMPLER_NAMES = ['llada', 'rediff', 'threshold', 'threshold-rediff'] as const;
export type SamplerName = (typeof SAMPLER_NAMES)[number];

/** Named sampler presets: LLaDA's, ReDiff's refining sampler, and their confidence-threshold variants. */
export function samplerOptions(name: string, overrides: Partial<SamplerOptions> & { steps: number }, threshold = 0.9): SamplerOptions {
  if (!(SAMPLER_NAMES as readonly string[]).includes(name)) {
    throw new UserError(`unknown sampler "${name}" (choose one of: ${SAMPLER_NAMES.join(', ')})`);
  }
  const refine = name === 'rediff' || name === 'threshold-rediff' ? { fromFraction: 0, topFraction: 1 } : null;
  const commit: CommitPolicy = name.startsWith('threshold') ? { kind: 'threshold', threshold } : { kind: 'schedule' };
  return { temperature: 0, remasking: 'low-confidence', stopAtEos: true, seed: 0, trace: false, commit, refine, ...overrides };
}

export interface StepTrace {
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

export function validateSamplerOptions(o: SamplerOptions, length: number): { blockLength: number; stepsPerBlock: number } {
  const blockLength = o.blockLength ?? defaultBlockLength(length, o.steps);
  if (!Number.isInteger(o.steps) || o.steps < 1) throw new UserError(`steps must be a positive integer, got ${o.steps}`);
  if (o.steps > length) throw new UserError(`steps (${o.steps}) cannot exceed the generation length (${length})`);
  if (!Number.isInteger(blockLength) || blockLength < 1 || length % blockLength !== 0) {
    throw new UserError(`block length ${blockLength} must divide the generation length ${length}`);
  }
  const blocks = length / blockLength;
  if (o.steps % blocks !== 0) throw new UserError(`steps (${o.steps}) must be a multiple of the number of blocks (${blocks})`);
  if (!(o.temperature >= 0)) throw new UserError(`temperature must be >= 0, got ${o.temperature}`);
  if (o.commit.kind === 'threshold' && !(o.commit.threshold > 0 && o.commit.threshold <= 1)) {
    throw new UserError(`confidence threshold must be in (0, 1], got ${o.commit.threshold}`);
  }
  if (o.refine && !(o.refine.fromFraction >= 0 && o.refine.fromFraction <= 1 && o.refine.topFraction > 0 && o.refine.topFraction <= 1)) {
    throw new UserError('refine fractions must be in [0, 1] (from) and (0, 1] (top)');
  }
  return { blockLength, stepsPerBlock: o.steps / blocks };
}

/** Per-position prediction: x0 (argmax or Gumbel-max) and its softmax probability. */
function predict(logits: Float32Array, offset: number, v: number, temperature: number, rng: Rng): { token: number; conf: number } {
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
  x: number[];
  prompt: readonly number[];
  /** Index of the first EOS committed from a mask, or -1. Positions after it are finished. */
  eosAt: number;
  steps: number;
  trace: StepTrace[];
  done: boolean;
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
  const rng = new Rng(o.seed);
  const embeds = await model.encodeImages(patches);
  const rows: Row[] = prompts.map((prompt) => ({ x: new Array<number>(length).fill(MASK_ID), prompt, eosAt: -1, steps: 0, trace: [], done: false }));
  let globalStep = 0;

  for (let blockStart = 0; blockStart < length; blockStart += blockLength) {
    const blockEnd = blockStart + blockLength;
    const maskedIn = (r: Row): number[] => {
      const out: number[] = [];
      for (let i = blockStart; i < blockEnd; i++) if (r.x[i] === MASK_ID) out.push(i);
      return out;
    };
    const schedules = rows.map((r) => transferSchedule(maskedIn(r).length, stepsPerBlock));
    const stepCap = o.commit.kind === 'threshold' ? blockLength : stepsPerBlock;
    for (let s = 0; s < stepCap; s++) {
      const active = rows.filter((r) => !r.done && maskedIn(r).length > 0);
      if (active.length === 0) break;
      const logits = await model.logits(embeds, rows.map((r) => ({ prompt: r.prompt, response: r.x })));
      // Counted within each block, as the authors' revise_start_step.
      const refining = o.refine !== null && s >= Math.floor(o.refine.fromFraction * stepsPerBlock);
      rows.forEach((r, b) => {
        const masked = maskedIn(r);
        if (r.done || masked.length === 0) return;
        r.steps++;
        const preds = new Map<number, { token: number; conf: number }>();
        for (let i = blockStart; i < blockEnd; i++) {
          if (r.eosAt >= 0 && i > r.eosAt) continue;
          preds.set(i, predict(logits, (b * length + i) * v, v, o.temperature, rng));
        }
        // The EOS boundary itself is final too: refinement never moves where the response ends.
        const wasUnmasked = [...preds.keys()].filter((i) => r.x[i] !== MASK_ID && !(r.eosAt >= 0 && i >= r.eosAt));
        // Commit.
        const rank = (i: number): number => (o.remasking === 'random' ? rng.next() : preds.get(i)!.conf);
        // Ties break by position, left first, so results are deterministic.
        const scored = masked.map((i) => ({ i, score: rank(i) })).sort((a, c) => c.score - a.score || a.i - c.i);
        let k: number;
        if (o.commit.kind === 'threshold') {
          const th = o.commit.threshold;
          k = Math.max(1, masked.filter((i) => preds.get(i)!.conf >= th).length);
        } else {
          k = s === stepsPerBlock - 1 ? masked.length : Math.min(masked.length, schedules[b]![s]!);
        }
        const trace: StepTrace = { step: globalStep, committed: [], refined: [] };
        for (const { i } of scored.slice(0, k)) {
          const tok = preds.get(i)!.token;
          r.x[i] = tok;
          trace.committed.push({ pos: i, token: tok });
          if (tok === EOS_ID && o.stopAtEos && (r.eosAt < 0 || i < r.eosAt)) r.eosAt = i;
        }
        // Refine (ReDiff): rewrite positions that were already decoded before this step.
        if (refining) {
          let targets = wasUnmasked;
          if (o.refine!.topFraction < 1) {
            const n = Math.floor(targets.length * o.refine!.topFraction);
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
        o.onStep?.(b, trace, r.x);
        if (!r.x.includes(MASK_ID)) r.done = true;
      });
      globalStep++;
    }
  }
  return rows.map((r) => ({ tokens: r.x, steps: r.steps, ...(o.trace ? { trace: r.trace } : {}) }));
}
