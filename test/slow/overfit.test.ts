/**
 * The overfit check of docs/history.md (about 30 s, so it runs in `npm run test:slow`): a tiny
 * model trained on a few dozen scenes must describe their objects, and only with their own
 * images. It proves the plumbing from pixels through patches, positions and attention to the
 * response.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { BENCHMARK_PROMPT, benchmarkTokenizer } from '../../src/benchmark/captioner.js';
import { scoreTokenIds } from '../../src/benchmark/metrics.js';
import { normaliseRgb } from '../../src/data/image.js';
import { benchmarkTrainingRecord, generateBenchmarkSplit } from '../../src/data/training-data.js';
import { presetConfig } from '../../src/model/config.js';
import { DiffusionVLM } from '../../src/model/model.js';
import { initParams } from '../../src/model/params.js';
import { captionImages } from '../../src/sampling/caption.js';
import { samplerOptions } from '../../src/sampling/sampler.js';
import { runTraining } from '../../src/training/run.js';
import { MASK_PREDICTION_MIX } from '../../src/training/samples.js';
import { stagePlan } from '../../src/training/stages/plans.js';
import { attributeBinding } from '../../src/training/stages/diagnosis.js';

const tokenizer = benchmarkTokenizer();
const GRID_TINY = presetConfig('tiny', tokenizer.size, { imageSize: 48, patchSize: 16 });

function records(split: string, n: number, opts: { minObjects?: number; maxObjects?: number } = {}) {
  const s = generateBenchmarkSplit(split, 0, n, GRID_TINY.imageSize, opts);
  return { recs: s.records.map((r, i) => benchmarkTrainingRecord(r, s.rgb[i]!, tokenizer)), split: s };
}

const settings = (stage: string, steps: number, lr: number) => ({
  stage,
  steps,
  batchSize: 16,
  lr,
  warmupSteps: 20,
  minLrRatio: 0.1,
  weightDecay: 0.01,
  clipNorm: 1,
  seed: 0,
  checkpointEvery: steps,
  mix: MASK_PREDICTION_MIX,
});

const tmp = (name: string): string => path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'rediff-overfit-')), name);

test('overfit check: trained on a few dozen scenes, a model names their objects, with their images only', async () => {
  // One object per scene, one caption each: the caption must say its size, colour, shape and
  // place. A 48-token response is enough for these captions and halves the cost.
  const config = { ...GRID_TINY, responseLength: 48, cellProbe: false };
  const { recs, split } = records('train', 24, { minObjects: 1, maxObjects: 1 });
  const one = recs.map((r) => ({ ...r, captions: [r.captions[0]!] }));
  const res = await runTraining({
    outDir: tmp('overfit'),
    records: one,
    initial: { config, tokenizer, params: initParams(config, 0) },
    settings: settings('mask-prediction', 1500, 3e-3),
    plan: stagePlan('mask-prediction'),
    resume: false,
    progress: false,
  });
  const model = new DiffusionVLM(res.config, tokenizer, res.params, { prompt: BENCHMARK_PROMPT });
  const prompt = tokenizer.encode(BENCHMARK_PROMPT);
  const images = split.rgb.map((rgb) => normaliseRgb(rgb));
  const shifted = images.map((_, i) => images[(i + 12) % images.length]!);
  const opts = samplerOptions('llada', { steps: config.responseLength });
  const own = await captionImages(model, images, prompt, opts);
  const wrong = await captionImages(model, shifted, prompt, opts);
  await model.dispose();
  const described = (caps: typeof own): number =>
    caps.reduce((n, c, i) => n + scoreTokenIds(split.records[i]!.scene, c.tokens, tokenizer).coverage, 0) / caps.length;
  const withOwn = described(own);
  const withWrong = described(wrong);
  assert.ok(
    withOwn >= 0.75,
    `objects fully described with their own images: ${withOwn}\n${own
      .slice(0, 3)
      .map((c) => c.text)
      .join('\n')}`,
  );
  assert.ok(withWrong <= withOwn - 0.5, `with another scene's image: ${withWrong} (own ${withOwn})`);
  // The binding check of `rediff diagnose` must see it too: with the caption shown whole but its
  // colour words, the model names them from its own image and not from another scene's.
  const colour = (await attributeBinding(res.config, res.params, one)).find((b) => b.kind === 'colour')!;
  assert.ok(colour.words >= one.length, `${colour.words} colour words in ${one.length} one-object captions`);
  assert.ok(
    colour.rightImage >= 0.75 && colour.shuffledImage <= colour.rightImage - 0.4,
    `colour named right: ${colour.rightImage} own image, ${colour.shuffledImage} another's`,
  );
});
