import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Command } from 'commander';
import { BENCHMARK_PROMPT, benchmarkTokenizer } from '../../benchmark/captioner.js';
import { scoreCaption } from '../../benchmark/metrics.js';
import { benchmarkTrainingRecord, generateBenchmarkSplit } from '../../data/training-data.js';
import { normaliseRgb } from '../../data/image.js';
import { presetConfig } from '../../model/config.js';
import { DiffusionVLM } from '../../model/model.js';
import { countParams, initParams } from '../../model/params.js';
import { captionImages, stepsForTokensPerStep } from '../../sampling/caption.js';
import { samplerOptions } from '../../sampling/sampler.js';
import { runTraining } from '../../training/run.js';
import { MASK_PREDICTION_MIX } from '../../training/samples.js';
import { intOption } from '../options.js';
import { shippedModelDir } from '../models.js';
import { loadModel } from '../../model/io.js';

/**
 * The demonstration. With the shipped models: caption a few freshly generated scenes with the
 * baseline (LLaDA sampler) and ReDiff (refining sampler) at 4 tokens per step, side by side
 * with their exact scores. Without them (or with --train): train the tiny preset briefly on
 * generated scenes and caption new ones.
 */
export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description(
      'caption fresh scenes with both shipped models side by side (or, with --train, train a tiny model first)',
    )
    .option('--train', 'train the tiny preset briefly instead of using the shipped models (under two minutes)')
    .option('--seed <n>', 'seed of the fresh scenes (default: from the clock)', intOption('--seed', 0))
    .option('--scenes-shown <n>', 'scenes to caption', intOption('--scenes-shown', 1, 20), 3)
    .option('--steps <n>', '--train: training steps', intOption('--steps'), 1500)
    .option('--scenes <n>', '--train: training scenes', intOption('--scenes'), 2000)
    .action(async (f: { train?: boolean; seed?: number; scenesShown: number; steps: number; scenes: number }) => {
      const shipped = ['baseline', 'rediff'].every((n) =>
        fs.existsSync(path.join(shippedModelDir(n as 'baseline' | 'rediff'), 'checkpoint.json')),
      );
      if (shipped && !f.train) return sideBySide(f.seed ?? Date.now() % 100000, f.scenesShown);
      const tokenizer = benchmarkTokenizer();
      const config = presetConfig('tiny', tokenizer.size);
      console.log(
        `rediff demo: tiny preset, ${countParams(config).toLocaleString('en-US')} parameters; training ${f.steps} ` +
          `steps on ${f.scenes} generated scenes`,
      );
      const train = generateBenchmarkSplit('train', 0, f.scenes, config.imageSize);
      const records = train.records.map((r, i) => benchmarkTrainingRecord(r, train.rgb[i]!, tokenizer));
      const out = fs.mkdtempSync(path.join(os.tmpdir(), 'rediff-demo-'));
      const res = await runTraining({
        outDir: out,
        records,
        initial: { config, tokenizer, params: initParams(config, 0) },
        resume: false,
        meta: { prompt: BENCHMARK_PROMPT },
        settings: {
          stage: 'mask-prediction',
          steps: f.steps,
          batchSize: 32,
          lr: 3e-3,
          warmupSteps: 50,
          minLrRatio: 0.1,
          weightDecay: 0.01,
          clipNorm: 1,
          seed: 0,
          checkpointEvery: f.steps,
          mix: MASK_PREDICTION_MIX,
        },
      });
      console.log(
        `trained in ${res.seconds.toFixed(0)} s: loss ${res.firstLoss.toFixed(2)} -> ${res.lastLoss.toFixed(2)} ` +
          `(checkpoint: ${out})\n`,
      );
      const model = new DiffusionVLM(res.config, tokenizer, res.params, { prompt: BENCHMARK_PROMPT });
      const test = generateBenchmarkSplit('test', 0, 3, config.imageSize);
      const prompt = tokenizer.encode(BENCHMARK_PROMPT);
      for (const k of [1, 4]) {
        const opts = samplerOptions('rediff', { steps: stepsForTokensPerStep(config.responseLength, k) });
        const caps = await captionImages(
          model,
          test.rgb.map((x) => normaliseRgb(x)),
          prompt,
          opts,
        );
        console.log(`--- refining sampler, ${k} token${k > 1 ? 's' : ''} per step ---`);
        caps.forEach((c, i) => {
          const s = scoreCaption(test.records[i]!.scene, c.text);
          console.log(
            `scene ${i + 1} (${test.records[i]!.scene.objects.length} objects) factuality ` +
              `${(100 * s.factuality).toFixed(0)}%, coverage ${(100 * s.coverage).toFixed(0)}%:\n  ${c.text}`,
          );
          console.log(`  truth: ${test.records[i]!.captions[0]}`);
        });
      }
      await model.dispose();
    });
}

async function sideBySide(seed: number, n: number): Promise<void> {
  const baseline = await loadModel(shippedModelDir('baseline'));
  const rediff = await loadModel(shippedModelDir('rediff'));
  try {
    const scenes = generateBenchmarkSplit(`demo-${seed}`, seed, n, baseline.config.imageSize);
    const images = scenes.rgb.map((x) => normaliseRgb(x));
    const prompt = baseline.tokenizer.encode(BENCHMARK_PROMPT);
    const steps = stepsForTokensPerStep(baseline.config.responseLength, 4);
    const a = await captionImages(baseline, images, prompt, samplerOptions('llada', { steps }));
    const b = await captionImages(rediff, images, prompt, samplerOptions('rediff', { steps }));
    const pct = (x: number): string => `${(100 * x).toFixed(0)}%`;
    console.log(`rediff demo: ${n} fresh scenes (seed ${seed}), 4 tokens per step; shipped models from models/\n`);
    scenes.records.forEach((r, i) => {
      const sa = scoreCaption(r.scene, a[i]!.text);
      const sb = scoreCaption(r.scene, b[i]!.text);
      console.log(`scene ${i + 1}: ${r.scene.objects.length} object(s); reference: ${r.captions[0]}`);
      console.log(
        `  baseline (mask-pred, LLaDA sampler)  CAPTURE ${pct(sa.capture)}, factuality ${pct(sa.factuality)}, ` +
          `coverage ${pct(sa.coverage)}:\n    ${a[i]!.text}`,
      );
      console.log(
        `  ReDiff (refining sampler)            CAPTURE ${pct(sb.capture)}, factuality ${pct(sb.factuality)}, ` +
          `coverage ${pct(sb.coverage)}:\n    ${b[i]!.text}\n`,
      );
    });
  } finally {
    await baseline.dispose();
    await rediff.dispose();
  }
}
