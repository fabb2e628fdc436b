/**
 * `rediff reproduce`: the paper's comparative study, resumable step by step.
 *
 * Every system starts from one base model, our stand-in for LLaDA-V (the pretrained starting
 * point of every system in the paper): the shipped `models/base`, another base checkpoint, or
 * one trained here first by the base pipeline (`fromScratch`). From it, with equal budgets and
 * the same seed: the baseline (more mask prediction), Stage I (ReDiff-Base) and its three
 * Table 5 variants; Stage II from ReDiff-Base (ReDiff, then a second round) and from the
 * baseline ("Stage II alone"). Every system is evaluated on the test split with the LLaDA and
 * the refining sampler at 1/2/4/8 tokens per step and with both confidence-threshold samplers.
 * A finished step is never redone: checkpoints, drafts, expert answers and evaluation results
 * are all reused on a rerun.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BENCHMARK_PROMPT, benchmarkTokenizer } from '../benchmark/captioner.js';
import { makeSplit } from '../data/benchmark-split.js';
import { scoreCaption } from '../benchmark/metrics.js';
import { normaliseRgb } from '../data/image.js';
import { type InMemorySplit, benchmarkTrainingRecord, generateBenchmarkSplit } from '../data/training-data.js';
import { GroundedExpert } from '../experts/grounded.js';
import { loadModel, loadModelState } from '../model/io.js';
import { captionImages, stepsForTokensPerStep } from '../sampling/caption.js';
import { samplerOptions } from '../sampling/sampler.js';
import { BLOCK_MIX, baseModelDir, trainBaseModel } from '../training/base-model.js';
import { type TrainSettings, runTraining } from '../training/run.js';
import type { MixOptions } from '../training/samples.js';
import type { TrainingRecord } from '../data/training-record.js';
import { draftImagesFromSplit, runSelfCorrection } from '../training/self-correction.js';
import { readJsonFileSync, writeFileAtomic } from '../util/atomic.js';
import { UserError } from '../util/errors.js';
import { withWallTime } from '../util/wall-time.js';
import { type EvalRowJSON, type SystemResults, rowLabel } from './results-file.js';
import { type EvalSetting, evaluate } from './evaluate.js';

export interface StudyPreset {
  /** The base pipeline (`rediff pretrain --preset`) a `fromScratch` study trains first. */
  basePreset: 'quick' | 'full';
  trainScenes: number;
  testScenes: number;
  finetune: Omit<TrainSettings, 'stage' | 'mix'>;
  stage2: Omit<TrainSettings, 'stage' | 'mix'>;
  draftImages: number;
  draftTokensPerStep: number[];
  stage1Share: number;
  tokensPerStep: number[];
  /** Confidence threshold of the `threshold` and `threshold-rediff` evaluations. */
  threshold: number;
}

const common = { batchSize: 32, minLrRatio: 0.1, weightDecay: 0.01, clipNorm: 1, seed: 0 };

export const STUDY_PRESETS: Record<'quick' | 'full', StudyPreset> = {
  /** Minutes, tiny model: proves the pipeline end to end (used by the test suite). */
  quick: {
    basePreset: 'quick',
    trainScenes: 400,
    testScenes: 12,
    finetune: { ...common, steps: 40, lr: 1e-3, warmupSteps: 5, checkpointEvery: 40 },
    stage2: { ...common, steps: 30, lr: 5e-4, warmupSteps: 5, checkpointEvery: 30 },
    draftImages: 24,
    draftTokensPerStep: [4, 8],
    stage1Share: 0.2,
    tokensPerStep: [1, 2, 4, 8],
    threshold: 0.9,
  },
  /**
   * The committed study, from the shipped base (small model): about 1.5-2 hours on 2 cores.
   * The rates stay below the base's own peak (1e-3) and the pretrained tower keeps the base's
   * 0.1x, so that more training does not first undo what the base learned.
   */
  full: {
    basePreset: 'full',
    trainScenes: 20000,
    testScenes: 200,
    finetune: { ...common, steps: 2000, lr: 3e-4, warmupSteps: 100, checkpointEvery: 500, visionLrScale: 0.1 },
    stage2: { ...common, steps: 1000, lr: 1.5e-4, warmupSteps: 50, checkpointEvery: 250, visionLrScale: 0.1 },
    draftImages: 1000,
    draftTokensPerStep: [1, 4, 8],
    stage1Share: 0.2,
    tokensPerStep: [1, 2, 4, 8],
    // The highest threshold (in steps of 0.05) at which ReDiff's threshold-rediff decoding
    // reached 4 tokens per step on the validation split (docs/diagnosis.md, point 32).
    threshold: 0.55,
  },
};

/**
 * Every system keeps the base's last recipe: half the caption samples with the masks of block
 * decoding (training/base-model.ts BLOCK_MIX), so that more training does not undo it.
 */
const BASELINE_MIX: MixOptions = BLOCK_MIX;
const STAGE1_MIX: MixOptions = {
  objective: 'revision',
  syntaxNoise: 0.05,
  dynamicSyntaxNoise: false,
  correctionShare: 0.25,
  blockMask: BLOCK_MIX.blockMask,
};

/** The Stage I variants of the paper's Table 5 (the default "both" is the stage1 system). */
export const ABLATIONS: Record<string, MixOptions> = {
  'ablation-hallucination-only': { ...STAGE1_MIX, syntaxNoise: 0 },
  'ablation-syntax-only': { ...STAGE1_MIX, correctionShare: 0 },
  'ablation-dynamic': { ...STAGE1_MIX, dynamicSyntaxNoise: true },
};

export const SYSTEM_LABELS: Record<string, string> = {
  baseline: 'mask-pred training',
  stage1: 'ReDiff-Base (Stage I)',
  'stage2-only': 'Stage II only',
  rediff: 'ReDiff (Stage I + II)',
  'rediff-round2': 'ReDiff, 2 rounds',
  'ablation-hallucination-only': 'Stage I, hallucination only',
  'ablation-syntax-only': 'Stage I, syntax only',
  'ablation-dynamic': 'Stage I, dynamic ratio',
};

export interface ReproduceOptions {
  out: string;
  preset: 'quick' | 'full';
  /** The base checkpoint every system starts from (e.g. the shipped models/base). */
  base?: string;
  /** Instead: train the base first with the preset's base pipeline, into OUT/base. */
  fromScratch?: boolean;
  /**
   * Confidence threshold of the threshold samplers instead of the preset's. Changed on a
   * finished study, only the settings it lacks are evaluated (the earlier rows stay).
   */
  threshold?: number;
  progress?: boolean;
  log?: (line: string) => void;
}

/** What the study started from: kept in study.json so that a resumed study cannot switch bases. */
export interface StudyBase {
  dir: string;
  fromScratch: boolean;
  /** sha256 of the base's weights file(s). */
  weights: string;
}

/** sha256 over a checkpoint's weights files (model-*.safetensors), in name order. */
export function weightsFingerprint(dir: string): string {
  const files = fs.existsSync(dir)
    ? fs
        .readdirSync(dir)
        .filter((f) => /^model-.*\.safetensors$/.test(f))
        .sort()
    : [];
  if (files.length === 0)
    throw new UserError(`no base model at ${dir} (no model-*.safetensors; train one with "rediff pretrain")`);
  const h = createHash('sha256');
  for (const f of files) h.update(fs.readFileSync(path.join(dir, f)));
  return h.digest('hex');
}

const done = (dir: string, steps: number): boolean => {
  if (!fs.existsSync(path.join(dir, 'checkpoint.json'))) return false;
  const s = JSON.parse(fs.readFileSync(path.join(dir, 'checkpoint.json'), 'utf8')) as { state?: { step?: number } };
  return Number(s.state?.step) >= steps;
};

export async function reproduce(opts: ReproduceOptions): Promise<void> {
  const preset = STUDY_PRESETS[opts.preset];
  if (!preset) throw new UserError(`unknown study preset "${opts.preset}" (quick or full)`);
  if (opts.threshold !== undefined && !(opts.threshold > 0 && opts.threshold <= 1))
    throw new UserError(`confidence threshold must be in (0, 1], got ${opts.threshold}`);
  const p: StudyPreset = { ...preset, threshold: opts.threshold ?? preset.threshold };
  if (opts.fromScratch && opts.base !== undefined)
    throw new UserError('give a base checkpoint or train one from scratch, not both');
  if (!opts.fromScratch && opts.base === undefined)
    throw new UserError('no base model: give a base checkpoint (e.g. models/base) or train one from scratch');
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const progress = opts.progress !== false;
  const out = path.resolve(opts.out);
  // A given base is checked before anything is written.
  const givenWeights = opts.fromScratch ? undefined : weightsFingerprint(path.resolve(opts.base!));
  fs.mkdirSync(path.join(out, 'results'), { recursive: true });
  const studyFile = path.join(out, 'study.json');
  const previous = fs.existsSync(studyFile)
    ? (JSON.parse(fs.readFileSync(studyFile, 'utf8')) as {
        preset?: string;
        timings?: Record<string, number>;
        startedAt?: string;
        base?: StudyBase;
      })
    : null;
  if (previous && previous.preset !== opts.preset) {
    throw new UserError(`${out} holds a "${previous.preset}" study; use another --out for "${opts.preset}"`);
  }
  const timings: Record<string, number> = { ...(previous?.timings ?? {}) };
  const startedAt = previous?.startedAt ?? new Date().toISOString();
  let base: StudyBase | undefined = previous?.base;
  const saveStudy = async (finished: boolean): Promise<void> => {
    // The base's own training is not part of the study's time (the shipped base is trained once).
    const seconds = Object.entries(timings).reduce((sum, [k, v]) => (k === 'base' ? sum : sum + v), 0);
    await writeFileAtomic(
      studyFile,
      JSON.stringify(
        {
          preset: opts.preset,
          startedAt,
          ...(finished ? { finishedAt: new Date().toISOString() } : {}),
          ...(base ? { base } : {}),
          seconds,
          timings,
          settings: { ...p, baselineMix: BASELINE_MIX, stage1Mix: STAGE1_MIX, ablations: ABLATIONS },
          machine: { cpus: os.cpus().length, node: process.version },
        },
        null,
        2,
      ) + '\n',
    );
  };
  const step = async (name: string, isDone: () => boolean, fn: () => Promise<void>): Promise<void> => {
    if (isDone()) {
      log(`[reproduce] ${name}: done earlier, reused`);
      return;
    }
    log(`[reproduce] ${name} ...`);
    const before = timings[name] ?? 0;
    await withWallTime(fn, async (seconds) => {
      timings[name] = before + seconds;
      await saveStudy(false);
    });
  };

  // The base: trained here (resumable like any step) or given, and the same one on every rerun.
  const scratchOut = path.join(out, 'base');
  const baseDir = opts.fromScratch ? baseModelDir(scratchOut, p.basePreset) : path.resolve(opts.base!);
  if (opts.fromScratch) {
    const finished = (): boolean =>
      fs.existsSync(path.join(scratchOut, 'base.json')) &&
      (JSON.parse(fs.readFileSync(path.join(scratchOut, 'base.json'), 'utf8')) as { finishedAt?: string })
        .finishedAt !== undefined;
    await step('base', finished, async () => {
      await trainBaseModel({ out: scratchOut, preset: p.basePreset, progress, log });
    });
  }
  const current: StudyBase = {
    dir: baseDir,
    fromScratch: opts.fromScratch === true,
    weights: givenWeights ?? weightsFingerprint(baseDir),
  };
  if (base && base.weights !== current.weights) {
    throw new UserError(
      `${out} is a study started from the base at ${base.dir}; ${baseDir} holds other weights (use another --out, or the same base)`,
    );
  }
  base = current;
  await saveStudy(false);
  const baseState = await loadModelState(baseDir);
  const imageSize = baseState.config.imageSize;

  const tokenizer = benchmarkTokenizer();
  // The benchmark splits: test on disk (inspectable), train regenerated in memory (identical, faster).
  await step(
    'data',
    () => fs.existsSync(path.join(out, 'data', 'test', 'data.jsonl')),
    async () => {
      await makeSplit({
        split: 'test',
        n: p.testScenes,
        seed: 0,
        out: path.join(out, 'data', 'test'),
        imageSize,
        overwrite: true,
        checkSiblings: false,
      });
    },
  );
  const train = generateBenchmarkSplit('train', 0, p.trainScenes, imageSize);
  const test = generateBenchmarkSplit('test', 0, p.testScenes, imageSize);
  const records: TrainingRecord[] = train.records.map((r, i) => benchmarkTrainingRecord(r, train.rgb[i]!, tokenizer));

  /** A system fine-tuned from the base. */
  const trainRun = async (
    name: string,
    stage: string,
    s: Omit<TrainSettings, 'stage' | 'mix'>,
    mix: MixOptions,
  ): Promise<void> => {
    const dir = path.join(out, name);
    await step(
      name,
      () => done(dir, s.steps),
      async () => {
        await runTraining({
          outDir: dir,
          records,
          initial: { config: baseState.config, tokenizer: baseState.tokenizer, params: baseState.params },
          settings: { ...s, stage, mix },
          progress,
          resume: fs.existsSync(path.join(dir, 'checkpoint.json')),
          meta: { prompt: BENCHMARK_PROMPT, init: baseDir },
        });
      },
    );
  };

  const checkpoints: Record<string, string> = {
    baseline: 'baseline',
    stage1: 'stage1',
    'stage2-only': path.join('stage2-only', 'round-1', 'model'),
    rediff: path.join('stage2', 'round-1', 'model'),
    'rediff-round2': path.join('stage2', 'round-2', 'model'),
    ...Object.fromEntries(Object.keys(ABLATIONS).map((k) => [k, k])),
  };
  // Each system is evaluated as soon as it exists, so an interrupted study still has results.
  const settings = studySettings(p, baseState.config.responseLength);
  const evalStep = async (system: string): Promise<void> => {
    const file = path.join(out, 'results', `${system}.json`);
    await step(
      `eval ${system}`,
      () => missingSettings(file, settings).length === 0,
      async () =>
        evaluateSystem(
          path.join(out, checkpoints[system]!),
          system,
          test,
          missingSettings(file, settings),
          file,
          progress,
        ),
    );
  };

  await trainRun('baseline', 'mask-prediction', p.finetune, BASELINE_MIX);
  await evalStep('baseline');
  await trainRun('stage1', 'revision', p.finetune, STAGE1_MIX);
  await evalStep('stage1');
  // The Table 5 variants are Stage I runs too: they come before everything that depends on the expert.
  for (const [name, mix] of Object.entries(ABLATIONS)) {
    await trainRun(name, 'revision', p.finetune, mix);
    await evalStep(name);
  }

  const selfCorrect = async (name: string, init: string, rounds: number): Promise<void> => {
    const dir = path.join(out, name);
    await step(
      `${name} (${rounds} round${rounds > 1 ? 's' : ''})`,
      () =>
        done(path.join(dir, `round-${rounds}`, 'model'), p.stage2.steps) &&
        fs.existsSync(path.join(dir, 'rounds.json')) &&
        (JSON.parse(fs.readFileSync(path.join(dir, 'rounds.json'), 'utf8')) as unknown[]).length >= rounds,
      async () => {
        await runSelfCorrection({
          outDir: dir,
          init: path.join(out, init),
          images: draftImagesFromSplit(train),
          stage1Records: records,
          expert: new GroundedExpert(),
          progress,
          settings: {
            rounds,
            draftImages: p.draftImages,
            draftTokensPerStep: p.draftTokensPerStep,
            draftSampler: 'rediff',
            stage1Share: p.stage1Share,
            sendImages: false,
            train: { ...p.stage2, stage: 'self-correct', mix: STAGE1_MIX },
          },
        });
      },
    );
  };
  await selfCorrect('stage2', 'stage1', 1);
  await evalStep('rediff');
  await step(
    'examples',
    () => fs.existsSync(path.join(out, 'results', 'examples.json')),
    async () =>
      writeExamples(
        path.join(out, checkpoints.baseline!),
        path.join(out, checkpoints.rediff!),
        test,
        path.join(out, 'results', 'examples.json'),
      ),
  );
  await selfCorrect('stage2-only', 'baseline', 1);
  await evalStep('stage2-only');
  await selfCorrect('stage2', 'stage1', 2);
  await evalStep('rediff-round2');
  await saveStudy(true);
  const seconds = Object.entries(timings).reduce((sum, [k, v]) => (k === 'base' ? sum : sum + v), 0);
  log(`[reproduce] finished in ${seconds.toFixed(0)} s of work (the base's training not counted); results in ${out}`);
}

/** The study's settings: the LLaDA and refining samplers at each rate, then both threshold samplers. */
export function studySettings(
  p: Pick<StudyPreset, 'tokensPerStep' | 'threshold'>,
  responseLength: number,
): EvalSetting[] {
  const settings: EvalSetting[] = [];
  for (const sampler of ['llada', 'rediff']) {
    for (const k of p.tokensPerStep) {
      settings.push({
        label: `${sampler} ${k} tok/step`,
        sampler,
        tokensPerStep: k,
        options: samplerOptions(sampler, { steps: stepsForTokensPerStep(responseLength, k) }),
      });
    }
  }
  for (const sampler of ['threshold', 'threshold-rediff']) {
    settings.push({
      label: `${sampler} @${p.threshold}`,
      sampler,
      tokensPerStep: null,
      options: samplerOptions(sampler, { steps: responseLength }, p.threshold),
    });
  }
  return settings;
}

/** The rows of a system's results file (none without the file). */
function resultRows(file: string): EvalRowJSON[] {
  return fs.existsSync(file) ? (readJsonFileSync(file, 'study results') as SystemResults).rows : [];
}

/** The settings a system's results file does not have yet (rows of older studies carry no label: rowLabel names them). */
function missingSettings(file: string, settings: readonly EvalSetting[]): EvalSetting[] {
  const done = new Set(resultRows(file).map(rowLabel));
  return settings.filter((s) => !done.has(s.label));
}

/** Evaluates `settings` and adds their rows and per-caption records to the system's results. */
async function evaluateSystem(
  dir: string,
  system: string,
  test: InMemorySplit,
  settings: EvalSetting[],
  file: string,
  progress: boolean,
): Promise<void> {
  const model = await loadModel(dir);
  try {
    const rows = await evaluate(model, test, settings, progress ? { onProgress: () => undefined } : {});
    const before = resultRows(file);
    const json = {
      system,
      label: SYSTEM_LABELS[system] ?? system,
      checkpoint: dir,
      rows: [
        ...before,
        ...rows.map((r) => ({
          sampler: r.setting.sampler,
          tokensPerStep: r.setting.tokensPerStep,
          label: r.setting.label,
          achievedTokensPerStep: r.achievedTokensPerStep,
          meanSteps: r.meanSteps,
          seconds: r.seconds,
          summary: r.summary,
        })),
      ],
    };
    const recordsFile = file.replace(/\.json$/, '.jsonl');
    // Records of these settings left by an interrupted write are replaced, not repeated.
    const labels = new Set(settings.map((x) => x.label));
    const earlier =
      before.length > 0 && fs.existsSync(recordsFile)
        ? fs
            .readFileSync(recordsFile, 'utf8')
            .split('\n')
            .filter((l) => l.trim() !== '' && !labels.has((JSON.parse(l) as { setting: string }).setting))
            .map((l) => l + '\n')
            .join('')
        : '';
    await writeFileAtomic(
      recordsFile,
      earlier + rows.flatMap((r) => r.records.map((rec) => JSON.stringify(rec) + '\n')).join(''),
    );
    await writeFileAtomic(file, JSON.stringify(json, null, 2) + '\n');
  } finally {
    await model.dispose();
  }
}

/** Three test scenes at 4 tokens per step: the baseline (LLaDA sampler) against ReDiff (refining sampler, with its trace). */
async function writeExamples(baselineDir: string, rediffDir: string, test: InMemorySplit, file: string): Promise<void> {
  const baseline = await loadModel(baselineDir);
  const rediff = await loadModel(rediffDir);
  try {
    const n = Math.min(3, test.records.length);
    const images = test.rgb.slice(0, n).map((x) => normaliseRgb(x));
    const prompt = baseline.tokenizer.encode(BENCHMARK_PROMPT);
    const steps = stepsForTokensPerStep(baseline.config.responseLength, 4);
    const a = await captionImages(baseline, images, prompt, samplerOptions('llada', { steps }));
    const b = await captionImages(rediff, images, prompt, samplerOptions('rediff', { steps, trace: true }));
    const pieces = rediff.tokenizer.pieces(Array.from({ length: rediff.tokenizer.size }, (_, i) => i));
    const examples = test.records.slice(0, n).map((r, i) => ({
      sceneId: r.id,
      scene: r.scene,
      reference: r.captions[0],
      baseline: { caption: a[i]!.text, score: scoreCaption(r.scene, a[i]!.text) },
      rediff: { caption: b[i]!.text, score: scoreCaption(r.scene, b[i]!.text), trace: b[i]!.trace, pieces },
    }));
    await writeFileAtomic(file, JSON.stringify(examples, null, 2) + '\n');
  } finally {
    await baseline.dispose();
    await rediff.dispose();
  }
}
