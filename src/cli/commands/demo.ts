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

/** The end-to-end demonstration: train the tiny preset briefly on benchmark scenes, then caption fresh ones. */
export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('train the tiny preset briefly on generated scenes, then caption a few new ones (under two minutes)')
    .option('--steps <n>', 'training steps', intOption('--steps'), 1500)
    .option('--scenes <n>', 'training scenes', intOption('--scenes'), 2000)
    .action(async (f: { steps: number; scenes: number }) => {
      const tokenizer = benchmarkTokenizer();
      const config = presetConfig('tiny', tokenizer.size);
      console.log(`rediff demo: tiny preset, ${countParams(config).toLocaleString('en-US')} parameters; training ${f.steps} steps on ${f.scenes} generated scenes`);
      const train = generateBenchmarkSplit('train', 0, f.scenes, config.imageSize);
      const records = train.records.map((r, i) => benchmarkTrainingRecord(r, train.rgb[i]!, tokenizer));
      const out = fs.mkdtempSync(path.join(os.tmpdir(), 'rediff-demo-'));
      const res = await runTraining({
        outDir: out, records, initial: { config, tokenizer, params: initParams(config, 0) }, resume: false, meta: { prompt: BENCHMARK_PROMPT },
        settings: { stage: 'mask-prediction', steps: f.steps, batchSize: 32, lr: 3e-3, warmupSteps: 50, minLrRatio: 0.1, weightDecay: 0.01, clipNorm: 1, seed: 0, checkpointEvery: f.steps, mix: MASK_PREDICTION_MIX },
      });
      console.log(`trained in ${res.seconds.toFixed(0)} s: loss ${res.firstLoss.toFixed(2)} -> ${res.lastLoss.toFixed(2)} (checkpoint: ${out})\n`);
      const model = new DiffusionVLM(res.config, tokenizer, res.params, { prompt: BENCHMARK_PROMPT });
      const test = generateBenchmarkSplit('test', 0, 3, config.imageSize);
      const prompt = tokenizer.encode(BENCHMARK_PROMPT);
      for (const k of [1, 4]) {
        const opts = samplerOptions('rediff', { steps: stepsForTokensPerStep(config.responseLength, k) });
        const caps = await captionImages(model, test.rgb.map((x) => normaliseRgb(x)), prompt, opts);
        console.log(`--- refining sampler, ${k} token${k > 1 ? 's' : ''} per step ---`);
        caps.forEach((c, i) => {
          const s = scoreCaption(test.records[i]!.scene, c.text);
          console.log(`scene ${i + 1} (${test.records[i]!.scene.objects.length} objects) factuality ${(100 * s.factuality).toFixed(0)}%, coverage ${(100 * s.coverage).toFixed(0)}%:\n  ${c.text}`);
          console.log(`  truth: ${test.records[i]!.captions[0]}`);
        });
      }
      await model.dispose();
    });
}
