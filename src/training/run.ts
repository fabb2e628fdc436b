/**
 * A training job: the loop around Trainer with the learning-rate schedule, progress, periodic
 * crash-safe checkpoints, exact resume, and a stop on a non-finite loss that keeps the last
 * good checkpoint.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CHECKPOINT_FILE } from '../checkpoint/checkpoint.js';
import type { ModelConfig } from '../model/config.js';
import { type LoadedModel, loadModelState, saveModel } from '../model/io.js';
import type { Params } from '../model/params.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { sameTokenizer } from '../tokenizer/file.js';
import { UserError } from '../util/errors.js';
import { createProgress } from '../util/progress.js';
import { Rng } from '../util/rng.js';
import { DEFAULT_ADAMW } from './optimizer.js';
import { type MixOptions, checkRecordLengths, makeCellSample, makeSample } from './samples.js';
import type { TrainingRecord } from '../data/training-record.js';
import { learningRate } from './schedule.js';
import { isTrainStage, stagePlan } from './stages/plans.js';
import { Trainer, type TrainingPlan } from './trainer.js';

export interface TrainSettings {
  /** A label stored with the checkpoint: mask-prediction, revision, self-correct... */
  stage: string;
  steps: number;
  batchSize: number;
  lr: number;
  warmupSteps: number;
  minLrRatio: number;
  weightDecay: number;
  clipNorm: number;
  seed: number;
  checkpointEvery: number;
  mix: MixOptions;
  /** Learning-rate multiplier of the vision tower (absent = 1). */
  visionLrScale?: number;
}

export interface TrainJob {
  outDir: string;
  records: readonly TrainingRecord[];
  /** The starting model (fresh init, or weights of an earlier stage). Ignored when resuming. */
  initial: { config: ModelConfig; tokenizer: Tokenizer; params: Params };
  settings: TrainSettings;
  resume: boolean;
  /** Print progress to stderr (default true). */
  progress?: boolean;
  /** Chooses the record of each sample (default: uniform over `records`). Must use only `rng`. */
  pick?: (rng: Rng) => TrainingRecord;
  /** Stored in the checkpoint's state (e.g. the prompt the model was trained with). */
  meta?: Record<string, unknown>;
  /**
   * What is optimised. Default: the plan of `settings.stage` (a caption stage for a stage name
   * outside TRAIN_STAGES, such as a Stage II round), with the tower at `settings.visionLrScale`.
   */
  plan?: TrainingPlan;
  /** Called after every step (tests, reports). */
  onStep?: (step: number, loss: number) => void;
}

export interface TrainResult {
  config: ModelConfig;
  tokenizer: Tokenizer;
  params: Params;
  steps: number;
  /** Mean loss of the first and last 10% of the steps run in this call. */
  firstLoss: number;
  lastLoss: number;
  seconds: number;
  tokensPerSecond: number;
}

/** A per-step generator, so a resumed run draws exactly the batches the uninterrupted run would. */
export function stepRng(seed: number, step: number): Rng {
  return new Rng((Math.imul(seed, 0x9e3779b1) ^ Math.imul(step + 1, 0x85ebca6b)) >>> 0);
}

/** Settings as canonical JSON (sorted keys, checkpointEvery left out: it may change on resume). */
function settingsKey(s: TrainSettings): string {
  const sort = (v: unknown): unknown =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(
          Object.keys(v)
            .sort()
            .filter((k) => k !== 'checkpointEvery')
            .map((k) => [k, sort((v as Record<string, unknown>)[k])]),
        )
      : v;
  return JSON.stringify(sort(s));
}

export async function runTraining(job: TrainJob): Promise<TrainResult> {
  const s = job.settings;
  if (job.records.length === 0) throw new UserError('no training data');
  const adamw = { ...DEFAULT_ADAMW, weightDecay: s.weightDecay, clipNorm: s.clipNorm };
  const plan = job.plan ?? stagePlan(isTrainStage(s.stage) ? s.stage : 'self-correct', s.visionLrScale ?? 1);
  const saved = await runToResume(job);
  checkRecordLengths(saved?.config ?? job.initial.config, job.records);
  const { config, tokenizer } = saved ?? job.initial;
  // A fresh run trains copies: the caller's initial weights stay as they were.
  const params = saved?.params ?? new Map([...job.initial.params].map(([k, v]) => [k, Float32Array.from(v)]));
  const startStep = saved ? Number(saved.state.step ?? 0) : 0;
  const trainer = new Trainer(config, params, saved?.optimizer, adamw, plan);
  const cells = plan.graph.loss === 'cells';

  const save = async (step: number): Promise<void> =>
    saveModel(job.outDir, {
      config,
      tokenizer,
      params,
      optimizer: trainer.optimizer,
      state: { ...job.meta, step, stage: s.stage, settings: s },
    });

  const schedule = { peak: s.lr, warmupSteps: s.warmupSteps, totalSteps: s.steps, minRatio: s.minLrRatio };
  const vocab = { firstOrdinaryId: tokenizer.firstOrdinaryId, vocabSize: tokenizer.size };
  const bar = createProgress(`train ${s.stage}`, s.steps, { enabled: job.progress !== false });
  bar.update(startStep);
  const losses: number[] = [];
  const t0 = performance.now();
  let tokens = 0;
  let lastSaved = startStep;
  try {
    for (let step = startStep; step < s.steps; step++) {
      const rng = stepRng(s.seed, step);
      const pick = job.pick ?? ((r: Rng) => job.records[r.int(job.records.length)]!);
      const batch = Array.from({ length: s.batchSize }, () =>
        cells ? makeCellSample(config, pick(rng)) : makeSample(config, pick(rng), rng, s.mix, vocab),
      );
      const lr = learningRate(step, schedule);
      const { loss, gradNorm } = await trainer.step(batch, lr);
      if (!Number.isFinite(loss) || !Number.isFinite(gradNorm))
        throw nonFiniteLoss(loss, gradNorm, step, lastSaved, job.outDir);
      losses.push(loss);
      tokens += s.batchSize * config.responseLength;
      job.onStep?.(step + 1, loss);
      const secs = (performance.now() - t0) / 1000;
      bar.update(step + 1, { loss: loss, lr, 'tok/s': Math.round(tokens / secs) });
      if ((step + 1) % s.checkpointEvery === 0 || step + 1 === s.steps) {
        checkFiniteParams(params, step, lastSaved, job.outDir);
        await save(step + 1);
        lastSaved = step + 1;
      }
    }
  } finally {
    bar.stop();
    await trainer.dispose();
  }
  const seconds = (performance.now() - t0) / 1000;
  const tenth = Math.max(1, Math.floor(losses.length / 10));
  const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  return {
    config,
    tokenizer,
    params,
    steps: s.steps,
    firstLoss: mean(losses.slice(0, tenth)),
    lastLoss: mean(losses.slice(-tenth)),
    seconds,
    tokensPerSecond: tokens / Math.max(1e-9, seconds),
  };
}

/**
 * The run in job.outDir to continue, with its optimizer state, or null for a fresh run. A
 * checkpoint there needs `resume`, the same settings and the same tokenizer.
 */
async function runToResume(job: TrainJob): Promise<LoadedModel | null> {
  if (!fs.existsSync(path.join(job.outDir, CHECKPOINT_FILE))) return null;
  if (!job.resume) {
    throw new UserError(
      `${job.outDir} already holds a checkpoint; pass --resume to continue it, or choose another --out`,
    );
  }
  const saved = await loadModelState(job.outDir, { withOptimizer: true });
  const before = settingsKey(saved.state.settings as TrainSettings);
  const now = settingsKey(job.settings);
  if (before !== now) {
    throw new UserError(
      `${job.outDir}: the training settings differ from the run being resumed (saved ${before}, now ${now})`,
    );
  }
  // The records were read with the initial tokenizer: it must be the one the run trains with.
  const tokenizer = job.initial.tokenizer;
  if (!sameTokenizer(saved.tokenizer, tokenizer))
    throw new UserError(
      `${job.outDir}: the run being resumed has another tokenizer (${saved.tokenizer.size} tokens, now ` +
        `${tokenizer.size}); give the same --tokenizer`,
    );
  return saved;
}

function nonFiniteLoss(loss: number, gradNorm: number, step: number, lastSaved: number, outDir: string): UserError {
  return new UserError(
    `training stopped: the loss became ${loss} (gradient norm ${gradNorm}) at step ${step + 1}; ` +
      (lastSaved > 0
        ? `the last good checkpoint (step ${lastSaved}) is kept in ${outDir}`
        : 'no checkpoint was written') +
      '; try a lower --lr',
  );
}

function checkFiniteParams(params: Params, step: number, lastSaved: number, outDir: string): void {
  const bad = [...params].find(([, p]) => !p.every(Number.isFinite));
  if (bad) {
    throw new UserError(
      `training stopped: parameter ${bad[0]} became non-finite by step ${step + 1}; the last good checkpoint ` +
        `(step ${lastSaved}) is kept in ${outDir}; try a lower --lr`,
    );
  }
}
