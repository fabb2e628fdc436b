import type { Command } from 'commander';
import { JsonlWriter } from '../../data/jsonl.js';
import { type InMemorySplit, generateBenchmarkSplit, readBenchmarkSplit } from '../../data/training-data.js';
import { type EvalRow, type EvalSetting, evaluate } from '../../evaluation/evaluate.js';
import { evalTable, renderPlain } from '../../evaluation/table.js';
import { CaptionerOracle, DEFAULT_ORACLE } from '../../evaluation/oracle.js';
import { loadModel } from '../../model/io.js';
import type { ImageCaptioner } from '../../sampling/caption.js';
import { validateSamplerOptions } from '../../sampling/sampler.js';
import { UserError } from '../../util/errors.js';
import { createProgress } from '../../util/progress.js';
import { intListOption, intOption } from '../options.js';
import { resolveCheckpoint } from '../models.js';
import { addSamplingFlags, type SamplingFlags, samplerFromFlags } from './sampling-flags.js';

interface EvalFlags extends Omit<SamplingFlags, 'sampler' | 'tokensPerStep'> {
  checkpoint?: string;
  tokenizer?: string;
  oracle: boolean;
  oracleCaptions: number;
  oracleSeed: number;
  data?: string;
  scenes: number;
  dataSeed: number;
  split: string;
  tokensPerStep?: number[];
  samplers: string;
  sampler: string;
  out?: string;
  batchSize: number;
  progress: boolean;
}

export function registerEval(program: Command): void {
  const cmd = program
    .command('eval')
    .description('caption a benchmark split and score it: one row per sampler and tokens-per-step setting')
    .option('--checkpoint <dir>', 'model checkpoint (default: the shipped ReDiff model)')
    .option('--tokenizer <file>', "the tokenizer.json the model was trained with (checked against the checkpoint's)")
    .option('--oracle', "instead of a model: the benchmark captioner's own posterior, the ceiling (docs/oracle.md)")
    .option(
      '--oracle-captions <n>',
      'with --oracle: captions drawn per scene',
      intOption('--oracle-captions'),
      DEFAULT_ORACLE.captions,
    )
    .option('--oracle-seed <n>', 'with --oracle: seed of the drawn captions', intOption('--oracle-seed', 0), 0)
    .option('--data <dir>', 'a benchmark split written by "rediff data make"')
    .option('--split <name>', 'without --data: generate this split in memory', 'val')
    .option('--scenes <n>', 'without --data: number of scenes generated', intOption('--scenes'), 200)
    .option('--data-seed <n>', 'without --data: seed of the generated split', intOption('--data-seed', 0), 0)
    .option(
      '--tokens-per-step <list>',
      'comma-separated tokens per step, e.g. 1,2,4,8',
      intListOption('--tokens-per-step'),
    )
    .option(
      '--samplers <list>',
      'comma-separated samplers to compare (llada, rediff, threshold, threshold-rediff)',
      'llada,rediff',
    )
    .option('--out <file>', 'write the per-caption records as JSONL')
    .option('--batch-size <n>', 'images per sampling batch', intOption('--batch-size'), 32)
    .option('--no-progress', 'no progress bar');
  addSamplingFlags(cmd, { rates: false }).action(runEval);
}

async function runEval(f: EvalFlags): Promise<void> {
  if (f.oracle && (f.checkpoint !== undefined || f.tokenizer !== undefined))
    throw new UserError('give --checkpoint (and --tokenizer) or --oracle, not both');
  if (f.oracle && f.cache !== 'none') throw new UserError('the oracle decodes without a K/V cache: leave out --cache');
  const split = f.oracle ? await evalSplit(f, ORACLE_IMAGE_SIZE) : undefined;
  const model: EvalModel = split
    ? new CaptionerOracle(split, { captions: f.oracleCaptions, seed: f.oracleSeed, responseLength: ORACLE_LENGTH })
    : await loadModel(resolveCheckpoint(f.checkpoint, 'rediff'), { tokenizer: f.tokenizer });
  try {
    const settings = evalSettings(f, model.config.responseLength);
    const scenes = split ?? (await evalSplit(f, model.config.imageSize));
    const bar = createProgress('eval', settings.length * scenes.records.length, { enabled: f.progress });
    const rows = await evaluate(model, scenes, settings, { batchSize: f.batchSize, onProgress: (d) => bar.update(d) });
    bar.stop();
    printRows(f, rows, scenes, model);
    if (f.out) {
      const w = new JsonlWriter(f.out);
      for (const r of rows) for (const rec of r.records) await w.write(rec);
      await w.close();
      console.log(`per-caption records: ${f.out}`);
    }
  } finally {
    await model.dispose();
  }
}

/** One setting per sampler and rate (threshold samplers: one each, at --threshold). */
function evalSettings(f: EvalFlags, L: number): EvalSetting[] {
  const rates = f.tokensPerStep ?? [1, 2, 4, 8];
  const settings: EvalSetting[] = [];
  const cache = f.cache === 'none' ? '' : `, ${f.cache} cache`;
  for (const sampler of f.samplers.split(',').map((s) => s.trim())) {
    const threshold = sampler.startsWith('threshold');
    for (const k of threshold ? [null] : rates) {
      const flags = { ...f, sampler, tokensPerStep: undefined, steps: threshold ? L : undefined };
      const options = samplerFromFlags(flags, L, k ?? undefined);
      validateSamplerOptions(options, L);
      const label = threshold ? `${sampler} @${f.threshold}${cache}` : `${sampler} ${k} tok/step${cache}`;
      settings.push({ label, sampler, tokensPerStep: k, options });
    }
  }
  return settings;
}

function printRows(f: EvalFlags, rows: EvalRow[], scenes: InMemorySplit, model: EvalModel): void {
  console.log(renderPlain(evalTable(rows)));
  if (f.oracle) console.log(`oracle: ${f.oracleCaptions} captions drawn per scene (seed ${f.oracleSeed})`);
  const refLengths = scenes.records.flatMap((r) => r.captions.map((c) => model.tokenizer.encode(c).length));
  const refMean = refLengths.reduce((a, b) => a + b, 0) / Math.max(1, refLengths.length);
  console.log(
    `(${scenes.records.length} scenes; each cell: mean ±95% interval half-width, in % except ` +
      `length in tokens; the reference captions: ${refMean.toFixed(1)} tokens)`,
  );
  console.log(
    'factuality: true claims / (claims + unreadable spans), the always-true background left ' +
      'out; object claims: the same over claims about objects; ' +
      'described: objects whose size, colour, shape and place are all stated correctly; parses: ' +
      'captions that parse completely',
  );
}

/** What eval runs: a loaded model, or the oracle. */
type EvalModel = ImageCaptioner & { readonly meta?: { prompt?: string }; dispose(): Promise<void> };

/** The oracle reads no pixels (it recognises its scenes' images), so any size serves; the shipped models' 48. */
const ORACLE_IMAGE_SIZE = 48;
/** The shipped models' response length: captions of at most 95 tokens and an EOS. */
const ORACLE_LENGTH = 96;

async function evalSplit(f: EvalFlags, imageSize: number): Promise<InMemorySplit> {
  const split = f.data
    ? (await readBenchmarkSplit(f.data, imageSize)).split
    : generateBenchmarkSplit(f.split, f.dataSeed, f.scenes, imageSize);
  if (split.records.length === 0) throw new UserError('no scenes to evaluate');
  return split;
}
