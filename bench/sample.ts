/**
 * npm run bench:sample — decoding speed and quality, side by side in one run.
 *
 * Captions a fixed set of validation scenes (split "val", seed 0) with a shipped model at 1, 4
 * and 8 tokens per step and with threshold decoding, each four ways: as rediff decoded before
 * (every row at every step, blocks in lock-step, no cache), with compaction (finished rows
 * leave the batch), and with compaction plus the prefix or the dual K/V cache. Prints captions
 * per second, the speed-up over the first way, and the quality of each (the metrics of
 * `rediff eval`, with 95% intervals), and for each cache its CAPTURE minus decoding without it,
 * paired by scene, with a 95% interval. Graph compilation (once per batch size and window) is
 * left out of the times.
 *
 *   npm run bench:sample -- [--scenes 64] [--checkpoint DIR] [--sampler llada|rediff] [--batch-size 32]
 */
import { parseArgs } from 'node:util';
import { generateBenchmarkSplit } from '../src/data/training-data.js';
import { type CaptionScore, pairedDifference } from '../src/benchmark/metrics.js';
import { type EvalRow, type EvalSetting, evaluate } from '../src/evaluation/evaluate.js';
import { formatEstimate, renderPlain } from '../src/evaluation/table.js';
import { loadModel } from '../src/model/io.js';
import { stepsForTokensPerStep } from '../src/sampling/caption.js';
import { type CacheMode, samplerOptions } from '../src/sampling/sampler.js';
import { shippedModelDir } from '../src/cli/models.js';
import { UserError } from '../src/util/errors.js';

interface Decoding {
  label: string;
  compaction: boolean;
  cache: CacheMode;
}

const DECODINGS: Decoding[] = [
  { label: 'lock-step (before)', compaction: false, cache: 'none' },
  { label: 'compaction', compaction: true, cache: 'none' },
  { label: 'compaction + prefix cache', compaction: true, cache: 'prefix' },
  { label: 'compaction + dual cache', compaction: true, cache: 'dual' },
];
const RATES: (number | 'threshold')[] = [1, 4, 8, 'threshold'];
const THRESHOLD = 0.9;
const QUALITY = [
  { metric: 'capture', title: 'CAPTURE' },
  { metric: 'objectFactuality', title: 'object claims' },
  { metric: 'coverage', title: 'described' },
  { metric: 'parses', title: 'parses' },
] as const;

const scores = (row: EvalRow): CaptionScore[] =>
  row.records.map((r) => ({ ...r.score, coveredFacts: [], unreadable: [] }));

function positiveInt(flag: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new UserError(`${flag} takes a whole number >= 1, got "${value}"`);
  return n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      scenes: { type: 'string', default: '32' },
      checkpoint: { type: 'string' },
      sampler: { type: 'string', default: 'llada' },
      'batch-size': { type: 'string', default: '32' },
    },
  });
  const scenes = positiveInt('--scenes', values.scenes!);
  const batchSize = positiveInt('--batch-size', values['batch-size']!);
  if (values.sampler !== 'llada' && values.sampler !== 'rediff')
    throw new UserError(`--sampler must be llada or rediff, got "${values.sampler}"`);
  const thresholdSampler = values.sampler === 'llada' ? 'threshold' : 'threshold-rediff';
  const dir = values.checkpoint ?? shippedModelDir('baseline');
  const model = await loadModel(dir);
  try {
    const L = model.config.responseLength;
    const split = generateBenchmarkSplit('val', 0, scenes, model.config.imageSize);
    const table: string[][] = [
      [
        'setting',
        'decoding',
        'captions/s',
        'speed-up',
        'tok/step',
        ...QUALITY.map((q) => q.title),
        'Δ CAPTURE, paired',
      ],
    ];
    let compileSeconds = 0;
    const t0 = performance.now();
    for (const rate of RATES) {
      let before = 0;
      let uncached: EvalRow | undefined;
      for (const d of DECODINGS) {
        const name = rate === 'threshold' ? thresholdSampler : values.sampler!;
        const steps = rate === 'threshold' ? L : stepsForTokensPerStep(L, rate);
        const options = { ...samplerOptions(name, { steps }, THRESHOLD), compaction: d.compaction, cache: d.cache };
        const label = rate === 'threshold' ? `${name} @${THRESHOLD}` : `${name} ${rate} tok/step`;
        const setting: EvalSetting = {
          label,
          sampler: name,
          tokensPerStep: rate === 'threshold' ? null : rate,
          options,
        };
        const compiledBefore = model.compileSeconds;
        const [row] = await evaluate(model, split, [setting], { batchSize });
        const compile = model.compileSeconds - compiledBefore;
        compileSeconds += compile;
        const perSecond = scenes / Math.max(1e-9, row!.seconds - compile);
        if (d === DECODINGS[0]) before = perSecond;
        if (d.cache === 'none') uncached = row;
        // The cache's quality cost: its CAPTURE minus decoding without it, caption by caption.
        const delta = d.cache === 'none' ? null : pairedDifference(scores(row!), scores(uncached!), 'capture');
        table.push([
          label,
          d.label,
          perSecond.toFixed(2),
          `${(perSecond / before).toFixed(2)}x`,
          row!.achievedTokensPerStep.toFixed(2),
          ...QUALITY.map((q) => {
            const e = row!.summary[q.metric];
            return formatEstimate(e.mean, e.lo, e.hi, true);
          }),
          delta
            ? `${formatEstimate(delta.mean, delta.lo, delta.hi, true)} [${(delta.lo * 100).toFixed(1)}, ` +
              `${(delta.hi * 100).toFixed(1)}]`
            : '',
        ]);
        process.stderr.write(`  ${label}, ${d.label}: ${perSecond.toFixed(2)} captions/s\n`);
      }
    }
    const total = (performance.now() - t0) / 1000;
    console.log(
      `${dir}: ${scenes} val scenes (seed 0), batch ${batchSize}, ${process.env.REDIFF_THREADS ?? 2} threads, block ` +
        `length 32`,
    );
    console.log(renderPlain(table));
    console.log(
      `speed-up: against lock-step decoding without a cache at the same setting; quality in %, mean ±95% interval ` +
        `half-width; Δ CAPTURE: the cached decoding's CAPTURE minus compaction's without a cache, paired by scene, ` +
        `with its 95% interval; graph compilation (${compileSeconds.toFixed(1)} s) left out of the times; ` +
        `${total.toFixed(0)} s in all`,
    );
  } finally {
    await model.dispose();
  }
}

main().catch((e: unknown) => {
  if (e instanceof UserError || (e instanceof Error && 'code' in e && String(e.code).startsWith('ERR_PARSE_ARGS'))) {
    console.error(`bench:sample: ${e.message}`);
    process.exit(1);
  }
  throw e;
});
