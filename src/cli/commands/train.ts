import { type Command, Option } from 'commander';
import { benchmarkTokenizer, BENCHMARK_PROMPT } from '../../benchmark/captioner.js';
import { formatIssue } from '../../data/jsonl.js';
import { benchmarkTrainingRecord, generateBenchmarkSplit, readBenchmarkSplit, readUserData } from '../../data/training-data.js';
import { PRESET_NAMES, presetConfig } from '../../model/config.js';
import { loadModelState } from '../../model/io.js';
import { countParams, initParams } from '../../model/params.js';
import { type TrainSettings, runTraining } from '../../training/run.js';
import type { MixOptions, TrainingRecord } from '../../training/samples.js';
import type { Tokenizer } from '../../tokenizer/tokenizer.js';
import { UserError } from '../../util/errors.js';
import { choiceOption, floatOption, intOption } from '../options.js';

export const TRAIN_STAGES = ['mask-prediction', 'revision'] as const;

interface TrainFlags {
  preset: string;
  stage: (typeof TRAIN_STAGES)[number];
  out: string;
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
  progress: boolean;
}

/** The Stage I mix flags (SPEC 3) as MixOptions; the paper's Table 5 ablations are flag settings. */
export function mixFromFlags(f: Pick<TrainFlags, 'stage' | 'syntaxNoise' | 'dynamicNoise' | 'hallucinationShare'>): MixOptions {
  if (f.stage === 'mask-prediction') return { objective: 'mask-prediction', syntaxNoise: 0, dynamicSyntaxNoise: false, correctionShare: 0 };
  return { objective: 'revision', syntaxNoise: f.syntaxNoise, dynamicSyntaxNoise: Boolean(f.dynamicNoise), correctionShare: f.hallucinationShare };
}

async function loadRecords(f: TrainFlags, tokenizer: Tokenizer, imageSize: number): Promise<TrainingRecord[]> {
  const sources = [f.data, f.llava].filter(Boolean).length;
  if (sources > 1) throw new UserError('give one of --data (a benchmark split) or --llava (your own captions), not both');
  if (f.llava || f.vicrit) {
    const { records, issues } = await readUserData({ llava: f.llava, vicrit: f.vicrit }, tokenizer, imageSize, { onError: f.onError, vocabulary: null });
    for (const i of issues) process.stderr.write(`warning: ${formatIssue(i)} (skipped)\n`);
    return records;
  }
  if (f.data) {
    const { split, issues } = await readBenchmarkSplit(f.data, imageSize, f.onError);
    for (const i of issues) process.stderr.write(`warning: ${formatIssue(i)} (skipped)\n`);
    return split.records.map((r, i) => benchmarkTrainingRecord(r, split.rgb[i]!, tokenizer));
  }
  const split = generateBenchmarkSplit('train', f.dataSeed, f.scenes, imageSize);
  return split.records.map((r, i) => benchmarkTrainingRecord(r, split.rgb[i]!, tokenizer));
}

export function registerTrain(program: Command): void {
  program
    .command('train')
    .description('train a model: mask prediction (the baseline) or ReDiff Stage I revision training')
    .requiredOption('--out <dir>', 'checkpoint directory to write')
    .addOption(new Option('--preset <name>', 'model size').default('small').argParser(choiceOption('--preset', PRESET_NAMES)))
    .addOption(new Option('--stage <name>', 'training objective').default('mask-prediction').argParser(choiceOption('--stage', TRAIN_STAGES)))
    .option('--data <dir>', 'a benchmark split written by "rediff data make"')
    .option('--llava <file>', 'your own captions: LLaVA-style conversations JSONL')
    .option('--vicrit <file>', 'your own hallucination pairs: ViCrit-style JSONL')
    .option('--scenes <n>', 'without --data: benchmark scenes generated in memory', intOption('--scenes'), 20000)
    .option('--data-seed <n>', 'seed of the generated scenes', intOption('--data-seed', 0), 0)
    .option('--init <dir>', 'start from the weights of this checkpoint (e.g. Stage I from a mask-prediction model)')
    .option('--resume', 'continue the run in --out where it stopped')
    .option('--steps <n>', 'optimisation steps', intOption('--steps'), 3000)
    .option('--batch-size <n>', 'samples per step', intOption('--batch-size'), 32)
    .option('--lr <x>', 'peak learning rate', floatOption('--lr', 0, 1, { exclusiveMin: true }), 1e-3)
    .option('--warmup <n>', 'linear warm-up steps', intOption('--warmup', 0), 100)
    .option('--min-lr-ratio <x>', 'final learning rate as a share of the peak (cosine decay)', floatOption('--min-lr-ratio', 0, 1), 0.1)
    .option('--weight-decay <x>', 'AdamW weight decay', floatOption('--weight-decay', 0), 0.01)
    .option('--clip <x>', 'gradient-norm clipping (0 = off)', floatOption('--clip', 0), 1)
    .option('--seed <n>', 'training seed (initialisation and batches)', intOption('--seed', 0), 0)
    .option('--checkpoint-every <n>', 'steps between checkpoints', intOption('--checkpoint-every'), 500)
    .option('--syntax-noise <q>', 'revision: share of unmasked tokens replaced by random tokens (paper 0.1, authors\' code 0.05)', floatOption('--syntax-noise', 0, 1), 0.05)
    .option('--dynamic-noise', 'revision: the "dynamic revise ratio" ablation, q = t while t < 0.1')
    .option('--hallucination-share <x>', 'revision: share of samples that are hallucination pairs (0 = syntax only)', floatOption('--hallucination-share', 0, 1), 0.25)
    .addOption(new Option('--on-error <mode>', 'a bad data line: skip it with a warning, or stop').choices(['skip', 'fail']).default('fail'))
    .option('--no-progress', 'no progress bar')
    .action(async (f: TrainFlags) => {
      if (f.warmup >= f.steps) throw new UserError(`--warmup (${f.warmup}) must be smaller than --steps (${f.steps})`);
      let initial;
      if (f.init) {
        const init = await loadModelState(f.init);
        initial = { config: init.config, tokenizer: init.tokenizer, params: init.params };
      } else {
        const tokenizer = benchmarkTokenizer();
        const config = presetConfig(f.preset, tokenizer.size);
        initial = { config, tokenizer, params: initParams(config, f.seed) };
      }
      const records = await loadRecords(f, initial.tokenizer, initial.config.imageSize);
      const settings: TrainSettings = {
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
      };
      process.stderr.write(`training ${f.stage}: ${countParams(initial.config).toLocaleString('en-US')} parameters, ${records.length} images, ${f.steps} steps of ${f.batchSize}\n`);
      const res = await runTraining({ outDir: f.out, records, initial, settings, resume: Boolean(f.resume), progress: f.progress, meta: { prompt: BENCHMARK_PROMPT, init: f.init ?? null } });
      console.log(`done: loss ${res.firstLoss.toFixed(3)} -> ${res.lastLoss.toFixed(3)}, ${res.seconds.toFixed(0)} s, ${Math.round(res.tokensPerSecond)} tokens/s; checkpoint in ${f.out}`);
    });
}
