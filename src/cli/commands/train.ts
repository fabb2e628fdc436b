import { type Command, Option } from 'commander';
import { CELL_FACTORS } from '../../benchmark/cells.js';
import { benchmarkTokenizer, BENCHMARK_PROMPT } from '../../benchmark/captioner.js';
import { DEFAULT_MAX_LINE_BYTES, type DataIssue, formatIssue } from '../../data/jsonl.js';
import {
  type InMemorySplit,
  type UserData,
  benchmarkTrainingRecord,
  generateBenchmarkSplit,
  readBenchmarkSplit,
  readUserData,
} from '../../data/training-data.js';
import { PRESET_NAMES, presetConfig } from '../../model/config.js';
import { loadModelState } from '../../model/io.js';
import { countParams, initParams } from '../../model/params.js';
import { type TrainJob, type TrainSettings, runTraining } from '../../training/run.js';
import { TRAIN_STAGES, type TrainStage } from '../../training/stages/plans.js';
import { measureStage } from '../../training/stages/measure.js';
import type { MixOptions } from '../../training/samples.js';
import type { TrainingRecord } from '../../data/training-record.js';
import type { Tokenizer } from '../../tokenizer/tokenizer.js';
import { readTokenizerFile, sameTokenizer } from '../../tokenizer/file.js';
import { UserError } from '../../util/errors.js';
import { choiceOption, floatOption, intListOption, intOption } from '../options.js';
import { GroundedExpert } from '../../experts/grounded.js';
import { LlmExpert } from '../../experts/llm.js';
import type { Expert } from '../../experts/expert.js';
import {
  type DraftImage,
  draftImagesFromLlava,
  draftImagesFromSplit,
  runSelfCorrection,
} from '../../training/self-correction.js';
import { recordedPath } from '../../util/paths.js';

interface TrainFlags {
  preset: string;
  stage: TrainStage;
  visionLrScale: number;
  measureScenes: number;
  out: string;
  tokenizer?: string;
  data?: string;
  llava?: string;
  vicrit?: string;
  scenes: number;
  dataSeed: number;
  init?: string;
  resume?: boolean;
  steps: number;
  batchSize: number;
  lr: number;
  warmup: number;
  minLrRatio: number;
  weightDecay: number;
  clip: number;
  seed: number;
  checkpointEvery: number;
  syntaxNoise: number;
  dynamicNoise?: boolean;
  hallucinationShare: number;
  onError: 'skip' | 'fail';
  maxLineBytes: number;
  allowUnk?: boolean;
  progress: boolean;
  rounds: number;
  draftImages: number;
  draftTokensPerStep: number[];
  stage1Share: number;
  spanOnly: boolean;
  expert: 'grounded' | 'llm';
  expertUrl?: string;
  expertModel?: string;
  expertConcurrency: number;
  expertTimeout: number;
  maxExpertFailures: number;
}

/** The Stage I mix flags (the paper's Eq. 4) as MixOptions; the paper's Table 5 ablations are flag settings. */
export function mixFromFlags(
  f: Pick<TrainFlags, 'stage' | 'syntaxNoise' | 'dynamicNoise' | 'hallucinationShare'>,
): MixOptions {
  // Stage II mixes in Stage I samples, so self-correct uses the revision mix for those.
  if (f.stage !== 'revision' && f.stage !== 'self-correct')
    return { objective: 'mask-prediction', syntaxNoise: 0, dynamicSyntaxNoise: false, correctionShare: 0 };
  return {
    objective: 'revision',
    syntaxNoise: f.syntaxNoise,
    dynamicSyntaxNoise: Boolean(f.dynamicNoise),
    correctionShare: f.hallucinationShare,
  };
}

/**
 * What the printed loss is, for the objectives whose numbers surprise (src/training/loss.ts):
 * revision sums, per sample, 1/p times the mean cross-entropy of each token type present (p = 1
 * for a span correction, which is fed unmasked), so it is neither per token nor comparable with
 * mask prediction's.
 */
export const REVISION_LOSS_NOTE =
  "note: the revision loss is, per sample, 1/p (p = the sample's mask ratio, 0.001 to 1) times the sum of the mean " +
  "cross-entropies of its masked, noised and clean tokens (a hallucination pair's sample is not masked, p = 1: the " +
  'mean cross-entropy of its corrected span), averaged over the batch; 1/p averages about 7 and reaches 1000, so ' +
  'values from tens to over a hundred are normal and noisy, where mask prediction (about the cross-entropy per ' +
  'masked token) reads ~2.5: follow its trend, not its size';

/**
 * The data the flags name: the user's own (--llava, --vicrit), a benchmark split on disk (--data), or generated scenes.
 */
async function loadData(
  f: TrainFlags,
  tokenizer: Tokenizer,
  imageSize: number,
): Promise<{ user: UserData } | { split: InMemorySplit }> {
  const sources = [f.data, f.llava].filter(Boolean).length;
  if (sources > 1)
    throw new UserError('give one of --data (a benchmark split) or --llava (your own captions), not both');
  const warnSkipped = (issues: readonly DataIssue[]): void => {
    for (const i of issues) process.stderr.write(`warning: ${formatIssue(i)} (skipped)\n`);
  };
  if (f.llava || f.vicrit) {
    // Words outside the model's vocabulary are reported as file:line problems unless --allow-unk.
    const user = await readUserData({ llava: f.llava, vicrit: f.vicrit }, tokenizer, imageSize, {
      onError: f.onError,
      vocabulary: f.allowUnk ? null : tokenizer,
      maxLineBytes: f.maxLineBytes,
    });
    warnSkipped(user.issues);
    return { user };
  }
  if (f.data) {
    const { split, issues } = await readBenchmarkSplit(f.data, imageSize, f.onError, f.maxLineBytes);
    warnSkipped(issues);
    return { split };
  }
  return { split: generateBenchmarkSplit('train', f.dataSeed, f.scenes, imageSize) };
}

const splitRecords = (split: InMemorySplit, tokenizer: Tokenizer): TrainingRecord[] =>
  split.records.map((r, i) => benchmarkTrainingRecord(r, split.rgb[i]!, tokenizer));

async function loadRecords(f: TrainFlags, tokenizer: Tokenizer, imageSize: number): Promise<TrainingRecord[]> {
  const data = await loadData(f, tokenizer, imageSize);
  return 'user' in data ? data.user.records : splitRecords(data.split, tokenizer);
}

export function registerTrain(program: Command): void {
  const command = program
    .command('train')
    .description(
      "train a model: the base model's stages (vision, language, align, mask-prediction), ReDiff Stage I (revision) " +
        'or Stage II (self-correct)',
    )
    .requiredOption('--out <dir>', 'checkpoint directory to write')
    .addOption(
      new Option('--preset <name>', 'model size').default('small').argParser(choiceOption('--preset', PRESET_NAMES)),
    )
    .addOption(
      new Option('--stage <name>', 'training objective')
        .default('mask-prediction')
        .argParser(choiceOption('--stage', TRAIN_STAGES)),
    );
  selfCorrectFlags(badDataFlags(revisionFlags(optimiserFlags(dataFlags(command)))))
    .option(
      '--vision-lr-scale <x>',
      'mask-prediction, revision, self-correct: learning-rate multiplier of a pretrained vision tower',
      floatOption('--vision-lr-scale', 0, 1),
      1,
    )
    .option(
      '--measure-scenes <n>',
      'validation scenes of the measurement printed after the stage (0 = none)',
      intOption('--measure-scenes', 0),
      256,
    )
    .option(
      '--max-expert-failures <share>',
      "self-correct: stop when the expert fails on more than this share of a round's drafts (on all of them, always)",
      floatOption('--max-expert-failures', 0, 1),
      0.5,
    )
    .option('--no-progress', 'no progress bar')
    .action(trainStage);
}

/** Where the records come from: a split, your own files, or scenes generated in memory; and the start. */
function dataFlags(c: Command): Command {
  return c
    .option(
      '--tokenizer <file>',
      "a Hugging Face tokenizer.json for a model trained from scratch (default: the benchmark's words); with --init, " +
        "checked against its checkpoint's",
    )
    .option('--data <dir>', 'a benchmark split written by "rediff data make"')
    .option('--llava <file>', 'your own captions: LLaVA-style conversations JSONL')
    .option('--vicrit <file>', 'your own hallucination pairs: ViCrit-style JSONL')
    .option('--scenes <n>', 'without --data: benchmark scenes generated in memory', intOption('--scenes'), 20000)
    .option('--data-seed <n>', 'seed of the generated scenes', intOption('--data-seed', 0), 0)
    .option('--init <dir>', 'start from the weights of this checkpoint (e.g. Stage I from a mask-prediction model)')
    .option('--resume', 'continue the run in --out where it stopped');
}

/** AdamW, its schedule and the checkpoints. */
function optimiserFlags(c: Command): Command {
  return c
    .option('--steps <n>', 'optimisation steps', intOption('--steps'), 3000)
    .option('--batch-size <n>', 'samples per step', intOption('--batch-size'), 32)
    .option('--lr <x>', 'peak learning rate', floatOption('--lr', 0, 1, { exclusiveMin: true }), 1e-3)
    .option('--warmup <n>', 'linear warm-up steps', intOption('--warmup', 0), 100)
    .option(
      '--min-lr-ratio <x>',
      'final learning rate as a share of the peak (cosine decay)',
      floatOption('--min-lr-ratio', 0, 1),
      0.1,
    )
    .option('--weight-decay <x>', 'AdamW weight decay', floatOption('--weight-decay', 0), 0.01)
    .option('--clip <x>', 'gradient-norm clipping (0 = off)', floatOption('--clip', 0), 1)
    .option('--seed <n>', 'training seed (initialisation and batches)', intOption('--seed', 0), 0)
    .option('--checkpoint-every <n>', 'steps between checkpoints', intOption('--checkpoint-every'), 500);
}

/** Stage I's corruption (the paper's Table 5 ablations are settings of these). */
function revisionFlags(c: Command): Command {
  return c
    .option(
      '--syntax-noise <q>',
      "revision: share of unmasked tokens replaced by random tokens (paper 0.1, authors' code 0.05)",
      floatOption('--syntax-noise', 0, 1),
      0.05,
    )
    .option('--dynamic-noise', 'revision: the "dynamic revise ratio" ablation, q = t while t < 0.1')
    .option(
      '--hallucination-share <x>',
      'revision: share of samples that are hallucination pairs (0 = syntax only)',
      floatOption('--hallucination-share', 0, 1),
      0.25,
    );
}

/** What a bad line of your own data does. */
function badDataFlags(c: Command): Command {
  return c
    .addOption(
      new Option(
        '--on-error <mode>',
        'a bad data line (or an unreadable image it names): skip it with a warning, or stop',
      )
        .choices(['skip', 'fail'])
        .default('fail'),
    )
    .option(
      '--max-line-bytes <n>',
      'longest data line read; a longer one is a bad line',
      intOption('--max-line-bytes', 1),
      DEFAULT_MAX_LINE_BYTES,
    )
    .option(
      '--allow-unk',
      'your own data (--llava, --vicrit): read words outside the vocabulary as [UNK] instead of reporting the line',
    );
}

/** Stage II: rounds of drafts, an expert, and training on its corrections. */
function selfCorrectFlags(c: Command): Command {
  return c
    .option('--rounds <n>', 'self-correct: rounds of draft, review, train', intOption('--rounds', 1, 20), 1)
    .option('--draft-images <n>', 'self-correct: training images drafted per round', intOption('--draft-images'), 1000)
    .option(
      '--draft-tokens-per-step <list>',
      'self-correct: step budgets of the drafts, as tokens per step',
      intListOption('--draft-tokens-per-step'),
      [1, 4, 8],
    )
    .option(
      '--stage1-share <x>',
      'self-correct: share of Stage I samples mixed into each batch',
      floatOption('--stage1-share', 0, 1),
      0.2,
    )
    .option(
      '--span-only',
      "self-correct: score only a draft's corrected spans (the paper's Eq. 5), not also its other tokens as ones to " +
        'keep',
      false,
    )
    .addOption(
      new Option('--expert <kind>', 'self-correct: who corrects the drafts')
        .choices(['grounded', 'llm'])
        .default('grounded'),
    )
    .option(
      '--expert-url <url>',
      'llm expert: OpenAI-compatible base URL (key from REDIFF_EXPERT_API_KEY or OPENAI_API_KEY)',
    )
    .option('--expert-model <name>', 'llm expert: model name', 'o4-mini')
    .option('--expert-concurrency <n>', 'llm expert: requests in flight', intOption('--expert-concurrency'), 4)
    .option('--expert-timeout <s>', 'llm expert: seconds per request', intOption('--expert-timeout'), 120);
}

/**
 * The model a run starts from: --init's weights, or a fresh one of --preset with --tokenizer or the benchmark's words.
 */
async function initialModel(f: TrainFlags): Promise<TrainJob['initial']> {
  if (f.init) {
    const init = await loadModelState(f.init, { tokenizer: f.tokenizer });
    return { config: init.config, tokenizer: init.tokenizer, params: init.params };
  }
  const tokenizer = f.tokenizer ? await readTokenizerFile(f.tokenizer) : benchmarkTokenizer();
  const probe = f.stage === 'vision' ? { cellProbe: true, cellFactors: [...CELL_FACTORS] } : {};
  const config = presetConfig(f.preset, tokenizer.size, probe);
  return { config, tokenizer, params: initParams(config, f.seed) };
}

function trainSettings(f: TrainFlags): TrainSettings {
  return {
    stage: f.stage,
    steps: f.steps,
    batchSize: f.batchSize,
    lr: f.lr,
    warmupSteps: f.warmup,
    minLrRatio: f.minLrRatio,
    weightDecay: f.weightDecay,
    clipNorm: f.clip,
    seed: f.seed,
    checkpointEvery: f.checkpointEvery,
    mix: mixFromFlags(f),
    ...(f.visionLrScale !== 1 ? { visionLrScale: f.visionLrScale } : {}),
  };
}

/** `rediff train` for every stage but self-correct (which selfCorrect runs). */
async function trainStage(f: TrainFlags): Promise<void> {
  if (f.warmup >= f.steps) throw new UserError(`--warmup (${f.warmup}) must be smaller than --steps (${f.steps})`);
  if (f.stage === 'self-correct') return selfCorrect(f);
  const initial = await initialModel(f);
  if (f.stage === 'align' && !initial.config.cellProbe)
    process.stderr.write(
      'warning: aligning a vision tower that was not pretrained (no --init from the vision stage)\n',
    );
  const records = await loadRecords(f, initial.tokenizer, initial.config.imageSize);
  const settings = trainSettings(f);
  process.stderr.write(
    `training ${f.stage}: ${countParams(initial.config).toLocaleString('en-US')} parameters, ${records.length} ` +
      `images, ${f.steps} steps of ${f.batchSize}\n`,
  );
  if (f.stage === 'revision') process.stderr.write(`${REVISION_LOSS_NOTE}\n`);
  // runTraining trains by the stage's plan, the tower at settings.visionLrScale.
  const res = await runTraining({
    outDir: f.out,
    records,
    initial,
    settings,
    resume: Boolean(f.resume),
    progress: f.progress,
    meta: { prompt: BENCHMARK_PROMPT, init: f.init ? recordedPath(f.init) : null },
  });
  console.log(
    `done: loss ${res.firstLoss.toFixed(3)} -> ${res.lastLoss.toFixed(3)}, ${res.seconds.toFixed(0)} s; ` +
      `checkpoint in ${f.out}`,
  );
  if (f.measureScenes === 0) return;
  // The measurement reads benchmark scenes in the benchmark's word ids.
  if (sameTokenizer(res.tokenizer, benchmarkTokenizer()))
    console.log(await measureStage(f.stage, res.config, res.params, f.measureScenes));
  else console.log('(no benchmark measurement: the model has its own tokenizer)');
}

function makeExpert(f: TrainFlags): Expert {
  if (f.expert === 'grounded') return new GroundedExpert();
  if (!f.expertUrl)
    throw new UserError('--expert llm needs --expert-url (an OpenAI-compatible chat-completions endpoint)');
  return new LlmExpert({
    baseUrl: f.expertUrl,
    model: f.expertModel ?? 'o4-mini',
    concurrency: f.expertConcurrency,
    timeoutMs: f.expertTimeout * 1000,
  });
}

/**
 * What Stage II drafts on, and the Stage I records mixed in: benchmark scenes (generated, or
 * --data) for any expert, or the user's --llava images for an LLM expert (the grounded expert
 * needs scene graphs).
 */
async function selfCorrectionData(
  f: TrainFlags,
  tokenizer: Tokenizer,
  imageSize: number,
): Promise<{ images: DraftImage[]; stage1Records: TrainingRecord[] }> {
  if (f.vicrit && !f.llava)
    throw new UserError(
      '--stage self-correct with your own data needs --llava (images with a prompt and a reference caption)',
    );
  if (f.llava && f.expert === 'grounded')
    throw new UserError(
      'the grounded expert checks drafts against benchmark scene graphs; with --llava use --expert llm --expert-url ' +
        'URL',
    );
  const data = await loadData(f, tokenizer, imageSize);
  if ('user' in data)
    return { images: draftImagesFromLlava(data.user.llava, data.user.rgbByImage), stage1Records: data.user.records };
  return { images: draftImagesFromSplit(data.split), stage1Records: splitRecords(data.split, tokenizer) };
}

/** Stage II: rounds of draft -> expert review -> training on the corrections (the paper's Stage II). */
async function selfCorrect(f: TrainFlags): Promise<void> {
  if (!f.init)
    throw new UserError('--stage self-correct needs --init (the model whose drafts are corrected, e.g. ReDiff-Base)');
  const init = await loadModelState(f.init, { tokenizer: f.tokenizer });
  const { images, stage1Records } = await selfCorrectionData(f, init.tokenizer, init.config.imageSize);
  if (images.length === 0) throw new UserError('no images to draft on');
  const expert = makeExpert(f);
  const draftLoss = f.spanOnly
    ? "the corrected spans' mean cross-entropy"
    : "the corrected spans' mean cross-entropy plus the mean over the draft's other tokens (kept)";
  if (f.stage1Share > 0)
    process.stderr.write(
      `note: the Stage II loss averages ${draftLoss} with a share (--stage1-share) of Stage I samples, whose loss is ` +
        `the revision loss below\n${REVISION_LOSS_NOTE}\n`,
    );
  const reports = await runSelfCorrection({
    outDir: f.out,
    init: f.init,
    images,
    stage1Records,
    expert,
    progress: f.progress,
    settings: {
      rounds: f.rounds,
      draftImages: f.draftImages,
      draftTokensPerStep: f.draftTokensPerStep,
      draftSampler: 'rediff',
      stage1Share: f.stage1Share,
      keepTerm: !f.spanOnly,
      sendImages: f.expert === 'llm',
      maxExpertFailures: f.maxExpertFailures,
      train: {
        ...trainSettings(f),
        stage: 'self-correct',
        mix: mixFromFlags({ ...f, stage: 'revision' }),
      },
    },
  });
  for (const r of reports) {
    const v = r.reviews;
    console.log(
      `round ${r.round}: ${r.drafts} drafts, ${v.right} judged right, ${v.pairsKept} pairs kept of ` +
        `${v.pairsProposed} (${r.trainingPairs} drafts used), draft errors ${JSON.stringify(r.draftErrors)}`,
    );
  }
  console.log(`final model in ${f.out}`);
}
