/**
 * `rediff reproduce`: the paper's comparative study, resumable step by step.
 *
 * Every system starts from one base model, our stand-in for LLaDA-V (the pretrained starting
 * point of every system in the paper): the shipped `models/base`, another base checkpoint, or
 * one trained here first by the base pipeline (`fromScratch`). The base itself and the oracle
 * (the benchmark captioner's posterior, ./oracle.ts: the ceiling) are evaluated first. From the
 * base, with equal budgets and the same seed: the baseline (more mask prediction), Stage I
 * (ReDiff-Base) and its three Table 5 variants; Stage II from ReDiff-Base (ReDiff, then a second
 * round) and from the baseline ("Stage II alone"). Every system is evaluated on the test split
 * with the LLaDA and the refining sampler at 1/2/4/8 tokens per step and with both
 * confidence-threshold samplers. A finished step is never redone: checkpoints, drafts, expert
 * answers and evaluation results are all reused on a rerun.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BENCHMARK_PROMPT, benchmarkTokenizer } from '../benchmark/captioner.js';
import { makeSplit } from '../data/benchmark-split.js';
import {
  type BenchmarkTrainingRecord,
  type InMemorySplit,
  benchmarkTrainingRecord,
  generateBenchmarkSplit,
  withCanonicalCaption,
} from '../data/training-data.js';
import { GroundedExpert } from '../experts/grounded.js';
import { loadModel, loadModelState } from '../model/io.js';
import { baseModelDir, trainBaseModel } from '../training/base-model.js';
import { type TrainSettings, runTraining } from '../training/run.js';
import type { MixOptions } from '../training/samples.js';
import type { TrainingRecord } from '../data/training-record.js';
import { draftImagesFromSplit, runSelfCorrection } from '../training/self-correction.js';
import { writeFileAtomic } from '../util/atomic.js';
import { UserError } from '../util/errors.js';
import { recordedPath } from '../util/paths.js';
import { withWallTime } from '../util/wall-time.js';
import type { EvalSetting } from './evaluate.js';
import { CaptionerOracle } from './oracle.js';
import {
  ABLATIONS,
  BASELINE_MIX,
  STAGE1_MIX,
  STUDY_PRESETS,
  type StudyPreset,
  oracleSystemId,
  studySettings,
  thresholdSettings,
} from './study-presets.js';
import { type StudyModel, evaluateSystem, missingSettings, writeExamples } from './study-results.js';

export { ABLATIONS, STUDY_PRESETS, SYSTEM_LABELS, type StudyPreset, studySettings } from './study-presets.js';

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

/** One resumable unit of the study: skipped when `isDone`, timed in study.json otherwise. */
interface StudyStep {
  name: string;
  isDone: () => boolean;
  run: () => Promise<void>;
}

/** What every step reads: the preset, where things go, the base, the splits and the training records. */
interface StudyContext {
  p: StudyPreset;
  out: string;
  progress: boolean;
  baseDir: string;
  /** The base's config, tokenizer and weights: where every fine-tune starts. */
  base: TrainStart;
  train: InMemorySplit;
  test: InMemorySplit;
  records: BenchmarkTrainingRecord[];
  settings: EvalSetting[];
}
type TrainStart = Parameters<typeof runTraining>[0]['initial'];

/** Where each trained system's checkpoint lives, relative to the study directory. */
const CHECKPOINTS: Record<string, string> = {
  baseline: 'baseline',
  stage1: 'stage1',
  'stage2-only': path.join('stage2-only', 'round-1', 'model'),
  rediff: path.join('stage2', 'round-1', 'model'),
  'rediff-round2': path.join('stage2', 'round-2', 'model'),
  'stage1-canonical': 'stage1-canonical',
  'rediff-canonical': path.join('stage2-canonical', 'round-1', 'model'),
  ...Object.fromEntries(Object.keys(ABLATIONS).map((k) => [k, k])),
};

export async function reproduce(opts: ReproduceOptions): Promise<void> {
  const p = resolvePreset(opts);
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const progress = opts.progress !== false;
  const out = path.resolve(opts.out);
  // A given base is checked before anything is written.
  const givenWeights = opts.fromScratch ? undefined : weightsFingerprint(path.resolve(opts.base!));
  const journal = openJournal(out, opts.preset, p, log);
  const baseDir = await prepareBase(opts, p, out, journal, progress, log);
  await journal.setBase({
    dir: recordedPath(baseDir),
    fromScratch: opts.fromScratch === true,
    weights: givenWeights ?? weightsFingerprint(baseDir),
  });
  const ctx = await studyContext(p, out, baseDir, progress);
  for (const step of studySteps(ctx)) await journal.run(step);
  await journal.save(true);
  log(
    `[reproduce] finished in ${journal.seconds().toFixed(0)} s of work (the base's training not ` +
      `counted); results in ${out}`,
  );
}

function resolvePreset(opts: ReproduceOptions): StudyPreset {
  const preset = STUDY_PRESETS[opts.preset];
  if (!preset) throw new UserError(`unknown study preset "${opts.preset}" (quick or full)`);
  if (opts.threshold !== undefined && !(opts.threshold > 0 && opts.threshold <= 1))
    throw new UserError(`confidence threshold must be in (0, 1], got ${opts.threshold}`);
  if (opts.fromScratch && opts.base !== undefined)
    throw new UserError('give a base checkpoint or train one from scratch, not both');
  if (!opts.fromScratch && opts.base === undefined)
    throw new UserError('no base model: give a base checkpoint (e.g. models/base) or train one from scratch');
  return { ...preset, threshold: opts.threshold ?? preset.threshold };
}

/** study.json: the preset, the base, each step's wall time; a step done earlier is reused. */
function openJournal(out: string, preset: string, p: StudyPreset, log: (line: string) => void) {
  fs.mkdirSync(path.join(out, 'results'), { recursive: true });
  const file = path.join(out, 'study.json');
  const previous = fs.existsSync(file)
    ? (JSON.parse(fs.readFileSync(file, 'utf8')) as {
        preset?: string;
        timings?: Record<string, number>;
        startedAt?: string;
        finishedAt?: string;
        base?: StudyBase;
      })
    : null;
  if (previous && previous.preset !== preset) {
    throw new UserError(`${out} holds a "${previous.preset}" study; use another --out for "${preset}"`);
  }
  const timings: Record<string, number> = { ...(previous?.timings ?? {}) };
  const startedAt = previous?.startedAt ?? new Date().toISOString();
  // A rerun that runs no step (only rewrites the report) keeps the study's own finish time.
  let finishedAt = previous?.finishedAt;
  let base: StudyBase | undefined = previous?.base;
  // The base's own training is not part of the study's time (the shipped base is trained once).
  const seconds = (): number => Object.entries(timings).reduce((sum, [k, v]) => (k === 'base' ? sum : sum + v), 0);
  const save = async (finished: boolean): Promise<void> => {
    const json = {
      preset,
      startedAt,
      ...(finished ? { finishedAt: (finishedAt ??= new Date().toISOString()) } : {}),
      ...(base ? { base } : {}),
      seconds: seconds(),
      timings,
      settings: { ...p, baselineMix: BASELINE_MIX, stage1Mix: STAGE1_MIX, ablations: ABLATIONS },
      machine: { cpus: os.cpus().length, node: process.version },
    };
    await writeFileAtomic(file, JSON.stringify(json, null, 2) + '\n');
  };
  const run = async (step: StudyStep): Promise<void> => {
    if (step.isDone()) {
      log(`[reproduce] ${step.name}: done earlier, reused`);
      return;
    }
    log(`[reproduce] ${step.name} ...`);
    finishedAt = undefined;
    const before = timings[step.name] ?? 0;
    await withWallTime(step.run, async (s) => {
      timings[step.name] = before + s;
      await save(false);
    });
  };
  /** The same base on every rerun: a resumed study cannot switch bases. */
  const setBase = async (current: StudyBase): Promise<void> => {
    if (base && base.weights !== current.weights) {
      throw new UserError(
        `${out} is a study started from the base at ${base.dir}; ${current.dir} holds other weights ` +
          `(use another --out, or the same base)`,
      );
    }
    base = current;
    await save(false);
  };
  return { run, save, setBase, seconds };
}
type Journal = ReturnType<typeof openJournal>;

/** The base's directory: given, or trained here first (resumable like any step). */
async function prepareBase(
  opts: ReproduceOptions,
  p: StudyPreset,
  out: string,
  journal: Journal,
  progress: boolean,
  log: (line: string) => void,
): Promise<string> {
  if (!opts.fromScratch) return path.resolve(opts.base!);
  const scratchOut = path.join(out, 'base');
  const record = path.join(scratchOut, 'base.json');
  await journal.run({
    name: 'base',
    isDone: () =>
      fs.existsSync(record) &&
      (JSON.parse(fs.readFileSync(record, 'utf8')) as { finishedAt?: string }).finishedAt !== undefined,
    run: async () => {
      await trainBaseModel({ out: scratchOut, preset: p.basePreset, progress, log });
    },
  });
  return baseModelDir(scratchOut, p.basePreset);
}

async function studyContext(p: StudyPreset, out: string, baseDir: string, progress: boolean): Promise<StudyContext> {
  const base = await loadModelState(baseDir);
  const imageSize = base.config.imageSize;
  const tokenizer = benchmarkTokenizer();
  // The benchmark splits: test written to disk by the data step (inspectable), and both
  // regenerated in memory here (identical, faster).
  const train = generateBenchmarkSplit('train', 0, p.trainScenes, imageSize);
  const test = generateBenchmarkSplit('test', 0, p.testScenes, imageSize);
  const records = train.records.map((r, i) => benchmarkTrainingRecord(r, train.rgb[i]!, tokenizer));
  const settings = studySettings(p, base.config.responseLength);
  return { p, out, progress, baseDir, base, train, test, records, settings };
}

/** The study, in order. Each system is evaluated as soon as it exists, so an interrupted study still has results. */
function studySteps(ctx: StudyContext): StudyStep[] {
  const { p } = ctx;
  return [
    dataStep(ctx),
    evalStep(ctx, 'base', async () => loadModel(ctx.baseDir), recordedPath(ctx.baseDir)),
    ...p.oracleCaptions.map((n, i) =>
      evalStep(ctx, oracleSystemId(n, i), async () => oracle(ctx, n), `oracle, ${n} captions per scene`),
    ),
    trainStep(ctx, 'baseline', 'mask-prediction', p.finetune, BASELINE_MIX),
    trainedEvalStep(ctx, 'baseline'),
    trainStep(ctx, 'stage1', 'revision', p.finetune, STAGE1_MIX),
    trainedEvalStep(ctx, 'stage1'),
    // The Table 5 variants are Stage I runs too: they come before everything that depends on the expert.
    ...Object.entries(ABLATIONS).flatMap(([name, mix]) => [
      trainStep(ctx, name, 'revision', p.finetune, mix),
      trainedEvalStep(ctx, name),
    ]),
    selfCorrectStep(ctx, 'stage2', 'stage1', 1),
    trainedEvalStep(ctx, 'rediff'),
    examplesStep(ctx),
    selfCorrectStep(ctx, 'stage2-only', 'baseline', 1),
    trainedEvalStep(ctx, 'stage2-only'),
    selfCorrectStep(ctx, 'stage2', 'stage1', 2),
    trainedEvalStep(ctx, 'rediff-round2'),
    // Beyond the paper: Stage I and one Stage II round on one canonical caption per image.
    trainStep(ctx, 'stage1-canonical', 'revision', p.finetune, STAGE1_MIX, () => canonicalRecords(ctx)),
    trainedEvalStep(ctx, 'stage1-canonical', canonicalSettings(ctx)),
    selfCorrectStep(ctx, 'stage2-canonical', 'stage1-canonical', 1, () => canonicalRecords(ctx)),
    trainedEvalStep(ctx, 'rediff-canonical', canonicalSettings(ctx)),
  ];
}

/** The training records with their canonical caption as the only target (same images, one caption each). */
function canonicalRecords(ctx: StudyContext): TrainingRecord[] {
  const tokenizer = benchmarkTokenizer();
  return ctx.records.map((r) => withCanonicalCaption(r, tokenizer));
}

function oracle(ctx: StudyContext, captions: number): StudyModel {
  const L = ctx.base.config.responseLength;
  return new CaptionerOracle(ctx.test, { captions, seed: 0, responseLength: L });
}

function dataStep(ctx: StudyContext): StudyStep {
  const dir = path.join(ctx.out, 'data', 'test');
  return {
    name: 'data',
    isDone: () => fs.existsSync(path.join(dir, 'data.jsonl')),
    run: async () => {
      const imageSize = ctx.base.config.imageSize;
      await makeSplit({
        split: 'test',
        n: ctx.p.testScenes,
        seed: 0,
        out: dir,
        imageSize,
        overwrite: true,
        checkSiblings: false,
      });
    },
  };
}

/** Evaluates a system on the test split with every setting (default: the study's) its results lack. */
function evalStep(
  ctx: StudyContext,
  system: string,
  open: () => Promise<StudyModel>,
  checkpoint: string,
  settings: EvalSetting[] = ctx.settings,
): StudyStep {
  const file = path.join(ctx.out, 'results', `${system}.json`);
  return {
    name: `eval ${system}`,
    isDone: () => missingSettings(file, settings).length === 0,
    run: async () =>
      evaluateSystem(open, { id: system, checkpoint }, ctx.test, missingSettings(file, settings), file, ctx.progress),
  };
}

function trainedEvalStep(ctx: StudyContext, system: string, settings?: EvalSetting[]): StudyStep {
  const dir = CHECKPOINTS[system]!;
  return evalStep(ctx, system, async () => loadModel(path.join(ctx.out, dir)), dir, settings);
}

/** The study's settings, and the threshold samplers at the canonical systems' own threshold. */
function canonicalSettings(ctx: StudyContext): EvalSetting[] {
  const { threshold, canonicalThreshold } = ctx.p;
  if (canonicalThreshold === threshold) return ctx.settings;
  return [...ctx.settings, ...thresholdSettings(canonicalThreshold, ctx.base.config.responseLength)];
}

/** A system fine-tuned from the base. */
function trainStep(
  ctx: StudyContext,
  name: string,
  stage: string,
  s: Omit<TrainSettings, 'stage' | 'mix'>,
  mix: MixOptions,
  records: () => readonly TrainingRecord[] = () => ctx.records,
): StudyStep {
  const dir = path.join(ctx.out, name);
  return {
    name,
    isDone: () => done(dir, s.steps),
    run: async () => {
      await runTraining({
        outDir: dir,
        records: records(),
        initial: ctx.base,
        settings: { ...s, stage, mix },
        progress: ctx.progress,
        resume: fs.existsSync(path.join(dir, 'checkpoint.json')),
        meta: { prompt: BENCHMARK_PROMPT, init: recordedPath(ctx.baseDir) },
      });
    },
  };
}

/** Stage II rounds from `init` (a trained system of the study), into `name`/round-k, mixing in `stage1Records`. */
function selfCorrectStep(
  ctx: StudyContext,
  name: string,
  init: string,
  rounds: number,
  stage1Records: () => readonly TrainingRecord[] = () => ctx.records,
): StudyStep {
  const dir = path.join(ctx.out, name);
  const roundsFile = path.join(dir, 'rounds.json');
  return {
    name: `${name} (${rounds} round${rounds > 1 ? 's' : ''})`,
    isDone: () =>
      done(path.join(dir, `round-${rounds}`, 'model'), ctx.p.stage2.steps) &&
      fs.existsSync(roundsFile) &&
      (JSON.parse(fs.readFileSync(roundsFile, 'utf8')) as unknown[]).length >= rounds,
    run: async () => {
      await runSelfCorrection({
        outDir: dir,
        init: path.join(ctx.out, init),
        images: draftImagesFromSplit(ctx.train),
        stage1Records: stage1Records(),
        expert: new GroundedExpert(),
        progress: ctx.progress,
        settings: {
          rounds,
          draftImages: ctx.p.draftImages,
          draftTokensPerStep: ctx.p.draftTokensPerStep,
          draftSampler: 'rediff',
          stage1Share: ctx.p.stage1Share,
          sendImages: false,
          train: { ...ctx.p.stage2, stage: 'self-correct', mix: STAGE1_MIX },
        },
      });
    },
  };
}

function examplesStep(ctx: StudyContext): StudyStep {
  const file = path.join(ctx.out, 'results', 'examples.json');
  return {
    name: 'examples',
    isDone: () => fs.existsSync(file),
    run: async () =>
      writeExamples(path.join(ctx.out, CHECKPOINTS.baseline!), path.join(ctx.out, CHECKPOINTS.rediff!), ctx.test, file),
  };
}
