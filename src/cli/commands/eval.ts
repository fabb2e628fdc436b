import type { Command } from 'commander';
import { JsonlWriter } from '../../data/jsonl.js';
import { generateBenchmarkSplit, readBenchmarkSplit } from '../../data/training-data.js';
import { type EvalSetting, evaluate } from '../../evaluation/evaluate.js';
import { evalTable, renderPlain } from '../../evaluation/table.js';
import { loadModel } from '../../model/io.js';
import { validateSamplerOptions } from '../../sampling/sampler.js';
import { UserError } from '../../util/errors.js';
import { createProgress } from '../../util/progress.js';
import { intListOption, intOption } from '../options.js';
import { resolveCheckpoint } from '../models.js';
import { addSamplingFlags, type SamplingFlags, samplerFromFlags } from './sampling-flags.js';

interface EvalFlags extends Omit<SamplingFlags, 'sampler' | 'tokensPerStep'> {
  checkpoint?: string;
  tokenizer?: string;
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
  addSamplingFlags(cmd, { rates: false }).action(async (f: EvalFlags) => {
    const model = await loadModel(resolveCheckpoint(f.checkpoint, 'rediff'), { tokenizer: f.tokenizer });
    try {
      const L = model.config.responseLength;
      const rates = f.tokensPerStep ?? [1, 2, 4, 8];
      const settings: EvalSetting[] = [];
      for (const sampler of f.samplers.split(',').map((s) => s.trim())) {
        const threshold = sampler.startsWith('threshold');
        for (const k of threshold ? [null] : rates) {
          const options = samplerFromFlags(
            { ...f, sampler, tokensPerStep: undefined, steps: threshold ? L : undefined },
            L,
            k ?? undefined,
          );
          validateSamplerOptions(options, L);
          const cache = f.cache === 'none' ? '' : `, ${f.cache} cache`;
          settings.push({
            label: threshold ? `${sampler} @${f.threshold}${cache}` : `${sampler} ${k} tok/step${cache}`,
            sampler,
            tokensPerStep: k,
            options,
          });
        }
      }
      const split = f.data
        ? (await readBenchmarkSplit(f.data, model.config.imageSize)).split
        : generateBenchmarkSplit(f.split, f.dataSeed, f.scenes, model.config.imageSize);
      if (split.records.length === 0) throw new UserError('no scenes to evaluate');
      const bar = createProgress('eval', settings.length * split.records.length, { enabled: f.progress });
      const rows = await evaluate(model, split, settings, { batchSize: f.batchSize, onProgress: (d) => bar.update(d) });
      bar.stop();
      console.log(renderPlain(evalTable(rows)));
      const refLengths = split.records.flatMap((r) => r.captions.map((c) => model.tokenizer.encode(c).length));
      const refMean = refLengths.reduce((a, b) => a + b, 0) / Math.max(1, refLengths.length);
      console.log(
        `(${split.records.length} scenes; each cell: mean ±95% interval half-width, in % except length in tokens; the reference captions: ${refMean.toFixed(1)} tokens)`,
      );
      console.log(
        'factuality: true claims / (claims + unreadable spans), the always-true background left out; object claims: the same over claims about objects; ' +
          'described: objects whose size, colour, shape and place are all stated correctly; parses: captions that parse completely',
      );
      if (f.out) {
        const w = new JsonlWriter(f.out);
        for (const r of rows) for (const rec of r.records) await w.write(rec);
        await w.close();
        console.log(`per-caption records: ${f.out}`);
      }
    } finally {
      await model.dispose();
    }
  });
}
