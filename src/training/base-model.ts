/**
 * The base model, as one resumable pipeline:
 *   1. vision: the vision tower (with a per-cell probe head) learns what each grid cell holds
 *              (our stand-in for SigLIP);
 *   2. ground: everything, on one-object scenes with an attribute always hidden (the model
 *              learns to read the image token that holds the object);
 *   3. base:   mask-prediction fine-tuning of everything on all scenes, the pretrained tower
 *              at a lower rate;
 *   4. blocks: a shorter, low-rate phase where half the samples carry the masks that decoding in
 *              blocks of 32 meets while it writes (docs/design.md#block-masks).
 * LLaDA-V's text-only language model and projector-only alignment (the `language` and `align`
 * stages of `rediff train`) are not in the presets: a model that first learned captions from
 * text alone did not learn to read the image afterwards (docs/design.md#base-pipeline).
 * Each stage starts from the previous stage's weights, keeps its checkpoint in OUT/<n>-<name>,
 * and is skipped on a rerun once finished; the measurements and wall times go to OUT/base.json.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CELL_FACTORS } from '../benchmark/cells.js';
import { BENCHMARK_PROMPT, groundedWordIds, benchmarkTokenizer } from '../benchmark/captioner.js';
import { benchmarkTrainingRecord, generateBenchmarkSplit } from '../data/training-data.js';
import { type ModelConfig, presetConfig } from '../model/config.js';
import { loadModelState } from '../model/io.js';
import { initParams } from '../model/params.js';
import { DEFAULT_BLOCK_LENGTH } from '../sampling/sampler.js';
import { writeFileAtomic } from '../util/atomic.js';
import { UserError } from '../util/errors.js';
import { withWallTime } from '../util/wall-time.js';
import { type TrainSettings, runTraining } from './run.js';
import { MASK_PREDICTION_MIX, type MixOptions } from './samples.js';
import type { TrainingRecord } from '../data/training-record.js';
import { measureStage } from './stages/measure.js';
import type { TrainStage } from './stages/plans.js';
import { recordedPath } from '../util/paths.js';

type StageBudget = Omit<TrainSettings, 'stage' | 'mix' | 'seed' | 'minLrRatio' | 'weightDecay' | 'clipNorm'> & {
  /** The cosine schedule's floor as a share of the peak (default 0.1; 1 = constant after warmup). */
  minLrRatio?: number;
};

export interface BasePreset {
  modelPreset: string;
  /** Settings on top of the model preset (e.g. image normalisation). */
  model?: Partial<ModelConfig>;
  trainScenes: number;
  /** Validation scenes of each stage's measurement, and of the shipped base's evaluation. */
  measureScenes: number;
  evalScenes: number;
  stages: BaseStage[];
}

export interface BaseStage {
  name: string;
  stage: TrainStage;
  budget: StageBudget;
  mix?: MixOptions;
  /** Train on scenes of this many objects only (a curriculum); default: the whole benchmark. */
  scenes?: { minObjects: number; maxObjects: number; count: number };
}

/**
 * The base's caption stages hide every mention of one attribute, or every place word, in half
 * of their samples (docs/design.md#base-pipeline): with a copy always visible elsewhere
 * in the caption, the image is rarely needed.
 */
const GROUNDED_GROUPS = groundedWordIds();
export const GROUNDING_MIX: MixOptions = {
  ...MASK_PREDICTION_MIX,
  groundingMask: { share: 0.5, groups: GROUNDED_GROUPS },
};

/**
 * The grounding stage: one-object scenes, an attribute or the place hidden in every sample. With one object
 * the image token to read is the only one that is not empty; a model that has learned to read
 * it then learns the lookup by place on full scenes, which it does not find from full scenes
 * alone (docs/design.md#base-pipeline).
 */
const GROUNDING_STAGE_MIX: MixOptions = {
  ...MASK_PREDICTION_MIX,
  groundingMask: { share: 1, groups: GROUNDED_GROUPS },
};

/** The last stage: half the samples with the masks of block decoding (the sampler's default blocks of 32). */
export const BLOCK_MIX: MixOptions = {
  ...MASK_PREDICTION_MIX,
  blockMask: { share: 0.5, blockLength: DEFAULT_BLOCK_LENGTH },
};

/**
 * The image path of every base: normalised image tokens with place embeddings, the tower's own
 * reading of each cell, and image keys weighted up in attention (docs/design.md#image-key-bias);
 * and a relative position bias in the language model, with which a place word finds the object
 * named a few words before it (points 29-30).
 */
const BASE_MODEL: Partial<ModelConfig> = {
  imageNorm: true,
  imagePlace: true,
  imageCells: true,
  imageKeyBias: Math.log(10),
  relativeBias: 16,
};

const QUICK_STEP = { batchSize: 16, checkpointEvery: 100 };
const FULL_STEP = { batchSize: 32, checkpointEvery: 500 };

export const BASE_PRESETS: Record<'quick' | 'full', BasePreset> = {
  /** Seconds, tiny model: proves the pipeline end to end (the test suite). */
  quick: {
    modelPreset: 'tiny',
    model: BASE_MODEL,
    trainScenes: 200,
    measureScenes: 16,
    evalScenes: 8,
    stages: [
      { name: 'vision', stage: 'vision', budget: { ...QUICK_STEP, steps: 40, lr: 3e-3, warmupSteps: 5 } },
      {
        name: 'ground',
        stage: 'mask-prediction',
        mix: GROUNDING_STAGE_MIX,
        scenes: { minObjects: 1, maxObjects: 1, count: 100 },
        budget: { ...QUICK_STEP, steps: 20, lr: 1e-3, warmupSteps: 2, minLrRatio: 1, visionLrScale: 0.1 },
      },
      {
        name: 'base',
        stage: 'mask-prediction',
        budget: { ...QUICK_STEP, steps: 20, lr: 1e-3, warmupSteps: 5, visionLrScale: 0.1 },
        mix: GROUNDING_MIX,
      },
      {
        name: 'blocks',
        stage: 'mask-prediction',
        budget: { ...QUICK_STEP, steps: 10, lr: 3e-4, warmupSteps: 2, visionLrScale: 0.1 },
        mix: BLOCK_MIX,
      },
    ],
  },
  /** The shipped base: small model, within 90 minutes on 2 cores. */
  full: {
    modelPreset: 'small',
    model: BASE_MODEL,
    trainScenes: 40000,
    measureScenes: 256,
    evalScenes: 200,
    stages: [
      {
        name: 'vision',
        stage: 'vision',
        budget: { batchSize: 64, checkpointEvery: 200, steps: 600, lr: 2e-3, warmupSteps: 50 },
      },
      {
        // Colour, shape and size are read after 1,000 steps, place after 1,500 (docs/design.md#image-key-bias).
        name: 'ground',
        stage: 'mask-prediction',
        mix: GROUNDING_STAGE_MIX,
        scenes: { minObjects: 1, maxObjects: 1, count: 20000 },
        budget: { ...FULL_STEP, steps: 1500, lr: 1e-3, warmupSteps: 100, minLrRatio: 1, visionLrScale: 0.1 },
      },
      {
        name: 'base',
        stage: 'mask-prediction',
        budget: { ...FULL_STEP, steps: 12000, lr: 1e-3, warmupSteps: 200, visionLrScale: 0.1 },
        mix: GROUNDING_MIX,
      },
      // Uniform masks rarely show the context block decoding writes in (docs/design.md#block-masks); plain
      // mask prediction at this rate (point 28's polish) changed nothing once the relative bias was in.
      {
        name: 'blocks',
        stage: 'mask-prediction',
        budget: { ...FULL_STEP, steps: 1500, lr: 3e-4, warmupSteps: 100, visionLrScale: 0.1 },
        mix: BLOCK_MIX,
      },
    ],
  },
};

export interface BaseRunOptions {
  out: string;
  preset: 'quick' | 'full';
  seed?: number;
  progress?: boolean;
  log?: (line: string) => void;
}

export interface BaseRunRecord {
  preset: string;
  startedAt: string;
  finishedAt?: string;
  /** Wall seconds per stage (added up over sessions). */
  timings: Record<string, number>;
  /** Each stage's measurement, as printed. */
  measurements: Record<string, string>;
  settings: BasePreset;
  machine: { cpus: number; node: string };
}

const stepOf = (dir: string): number => {
  const f = path.join(dir, 'checkpoint.json');
  if (!fs.existsSync(f)) return 0;
  return Number((JSON.parse(fs.readFileSync(f, 'utf8')) as { state?: { step?: number } }).state?.step ?? 0);
};

/** The directory of the base model a pipeline in `out` ends with. */
export function baseModelDir(out: string, preset: 'quick' | 'full' = 'full'): string {
  const stages = BASE_PRESETS[preset].stages;
  return path.join(out, `${stages.length}-${stages[stages.length - 1]!.name}`);
}

/** The model config of a preset's base (the benchmark's vocabulary, with the vision tower's probe head). */
export function baseConfig(preset: 'quick' | 'full'): ModelConfig {
  const p = BASE_PRESETS[preset];
  return presetConfig(p.modelPreset, benchmarkTokenizer().size, {
    cellProbe: true,
    cellFactors: [...CELL_FACTORS],
    ...p.model,
  });
}

/** OUT/base.json, the run's record (a new one for a new run), and how to save it. */
function openRunRecord(out: string, preset: 'quick' | 'full'): { record: BaseRunRecord; save: () => Promise<void> } {
  fs.mkdirSync(out, { recursive: true });
  const recordFile = path.join(out, 'base.json');
  const previous = fs.existsSync(recordFile)
    ? (JSON.parse(fs.readFileSync(recordFile, 'utf8')) as BaseRunRecord)
    : null;
  if (previous && previous.preset !== preset)
    throw new UserError(`${out} holds a "${previous.preset}" base run; use another --out for "${preset}"`);
  const record: BaseRunRecord = previous ?? {
    preset,
    startedAt: new Date().toISOString(),
    timings: {},
    measurements: {},
    settings: BASE_PRESETS[preset],
    machine: { cpus: os.cpus().length, node: process.version },
  };
  return { record, save: () => writeFileAtomic(recordFile, `${JSON.stringify(record, null, 2)}\n`) };
}

/** The training records of a stage's scenes, generated once per kind of scene and shared by the stages. */
function trainingRecordsOf(
  p: BasePreset,
  seed: number,
  imageSize: number,
  log: (line: string) => void,
): (scenes?: BaseStage['scenes']) => TrainingRecord[] {
  const tokenizer = benchmarkTokenizer();
  const recordSets = new Map<string, TrainingRecord[]>();
  return (scenes) => {
    const count = scenes?.count ?? p.trainScenes;
    const key = scenes ? `${scenes.minObjects}-${scenes.maxObjects}-${count}` : 'all';
    let records = recordSets.get(key);
    if (!records) {
      const objects = scenes ? ` of ${scenes.minObjects}-${scenes.maxObjects} objects` : '';
      log(`[base] generating ${count} training scenes${objects}`);
      const split = generateBenchmarkSplit('train', seed, count, imageSize, scenes);
      records = split.records.map((r, i) => benchmarkTrainingRecord(r, split.rgb[i]!, tokenizer));
      recordSets.set(key, records);
    }
    return records;
  };
}

function stageSettings(s: BaseStage, seed: number): TrainSettings {
  return {
    stage: s.stage,
    seed,
    weightDecay: 0.01,
    clipNorm: 1,
    mix: s.mix ?? MASK_PREDICTION_MIX,
    ...s.budget,
    minLrRatio: s.budget.minLrRatio ?? 0.1,
  };
}

export async function trainBaseModel(opts: BaseRunOptions): Promise<BaseRunRecord> {
  const p = BASE_PRESETS[opts.preset];
  if (!p) throw new UserError(`unknown base preset "${opts.preset}" (quick or full)`);
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const seed = opts.seed ?? 0;
  const out = path.resolve(opts.out);
  const { record, save } = openRunRecord(out, opts.preset);
  const tokenizer = benchmarkTokenizer();
  const config = baseConfig(opts.preset);
  const trainRecords = trainingRecordsOf(p, seed, config.imageSize, log);

  let prevDir: string | null = null;
  for (const [i, s] of p.stages.entries()) {
    const dir = path.join(out, `${i + 1}-${s.name}`);
    const from = prevDir;
    prevDir = dir;
    if (stepOf(dir) >= s.budget.steps) {
      log(`[base] ${s.name}: done earlier, reused`);
      continue;
    }
    log(`[base] ${s.name} (${s.stage}, ${s.budget.steps} steps) ...`);
    // The base changes: it gets a new finishedAt, so an earlier evaluation no longer describes it.
    delete record.finishedAt;
    record.settings = p;
    const initial = from ? await loadModelState(from) : { config, tokenizer, params: initParams(config, seed) };
    const settings = stageSettings(s, seed);
    const before = record.timings[s.name] ?? 0;
    const { res, m } = await withWallTime(
      async () => {
        const res = await runTraining({
          outDir: dir,
          records: trainRecords(s.scenes),
          initial: { config: initial.config, tokenizer: initial.tokenizer, params: initial.params },
          settings,
          resume: true,
          progress: opts.progress,
          meta: { prompt: BENCHMARK_PROMPT, init: from === null ? null : recordedPath(from) },
        });
        // Measured on the scenes the stage trained on: a one-object stage says nothing about full scenes.
        return { res, m: await measureStage(s.stage, res.config, res.params, p.measureScenes, s.scenes) };
      },
      async (seconds) => {
        record.timings[s.name] = before + seconds;
        await save();
      },
    );
    record.measurements[s.name] = m;
    log(`[base] ${s.name}: loss ${res.firstLoss.toFixed(3)} -> ${res.lastLoss.toFixed(3)}\n${m}`);
    await save();
  }
  record.finishedAt ??= new Date().toISOString();
  await save();
  return record;
}
