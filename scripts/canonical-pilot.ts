/**
 * The validation pilots of docs/oracle.md#canonical-captions: one Stage I fine-tune from
 * models/base on a choice of training targets, then, optionally, one Stage II round with the
 * study's settings, each scored on 200 validation scenes (LLaDA at 1 tok/step, the refining
 * sampler at 1, 4 and 8). Never the test split.
 *
 *   node --import tsx scripts/canonical-pilot.ts TARGETS [--steps 1500] [--seed 0] [--scenes 5000] [--stage2]
 *
 * TARGETS: paraphrases (the references), greedy (the oracle's greedy decode, 1,000 captions per
 * scene) or canonical (canonicalCaption). Writes runs/pilot-TARGETS-s<seed>-n<scenes>/ (resumable).
 */
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { BENCHMARK_PROMPT, benchmarkTokenizer } from '../src/benchmark/captioner.js';
import { normaliseRgb } from '../src/data/image.js';
import {
  type InMemorySplit,
  benchmarkTrainingRecord,
  generateBenchmarkSplit,
  withCanonicalCaption,
} from '../src/data/training-data.js';
import type { TrainingRecord } from '../src/data/training-record.js';
import { type EvalSetting, evaluate } from '../src/evaluation/evaluate.js';
import { CaptionerOracle } from '../src/evaluation/oracle.js';
import { STAGE1_MIX, STUDY_PRESETS } from '../src/evaluation/study-presets.js';
import { GroundedExpert } from '../src/experts/grounded.js';
import { loadModel, loadModelState } from '../src/model/io.js';
import { captionImages } from '../src/sampling/caption.js';
import { samplerOptions } from '../src/sampling/sampler.js';
import { runTraining } from '../src/training/run.js';
import { draftImagesFromSplit, runSelfCorrection } from '../src/training/self-correction.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    steps: { type: 'string', default: '1500' },
    seed: { type: 'string', default: '0' },
    scenes: { type: 'string', default: '5000' },
    stage2: { type: 'boolean', default: false },
  },
});
const targets = positionals[0] ?? 'canonical';
if (!['paraphrases', 'greedy', 'canonical'].includes(targets)) {
  throw new Error(`targets must be paraphrases, greedy or canonical, got "${targets}"`);
}
const steps = Number(values.steps);
const seed = Number(values.seed);
const out = `runs/pilot-${targets}-s${seed}-n${values.scenes}`;
const base = await loadModelState('models/base');
const L = base.config.responseLength;
const tokenizer = benchmarkTokenizer();
const train = generateBenchmarkSplit('train', 0, Number(values.scenes), base.config.imageSize);
const records = await targetRecords(train);

/** The training records with the chosen targets (the hallucination pairs stay the references'). */
async function targetRecords(split: InMemorySplit): Promise<TrainingRecord[]> {
  const withReferences = split.records.map((r, i) => benchmarkTrainingRecord(r, split.rgb[i]!, tokenizer));
  if (targets === 'paraphrases') return withReferences;
  if (targets === 'canonical') return withReferences.map((r) => withCanonicalCaption(r, tokenizer));
  const texts = await greedyCaptions(split);
  return withReferences.map((r, i) => ({ ...r, captions: [tokenizer.encode(texts[i]!)] }));
}

/** The oracle at 1 tok/step with the LLaDA sampler: one caption per scene, but not one style. */
async function greedyCaptions(split: InMemorySplit): Promise<string[]> {
  const oracle = new CaptionerOracle(split, { captions: 1000, seed: 0, responseLength: L });
  const prompt = tokenizer.encode(BENCHMARK_PROMPT);
  const images = split.rgb.map((rgb) => normaliseRgb(rgb));
  const captions = await captionImages(oracle, images, prompt, samplerOptions('llada', { steps: L }));
  return captions.map((c) => c.text);
}

const { finetune, stage2 } = STUDY_PRESETS.full;
await runTraining({
  outDir: out,
  records,
  initial: base,
  settings: { ...finetune, steps, seed, checkpointEvery: 250, stage: 'revision', mix: STAGE1_MIX },
  progress: false,
  resume: fs.existsSync(`${out}/checkpoint.json`),
  meta: { prompt: BENCHMARK_PROMPT, init: 'models/base' },
});
let scored = out;
if (values.stage2) {
  const p = STUDY_PRESETS.full;
  await runSelfCorrection({
    outDir: `${out}/stage2`,
    init: out,
    images: draftImagesFromSplit(train),
    stage1Records: records,
    expert: new GroundedExpert(),
    progress: false,
    settings: {
      rounds: 1,
      draftImages: p.draftImages,
      draftTokensPerStep: p.draftTokensPerStep,
      draftSampler: 'rediff',
      stage1Share: p.stage1Share,
      sendImages: false,
      train: { ...stage2, stage: 'self-correct', mix: STAGE1_MIX },
    },
  });
  scored = `${out}/stage2/round-1/model`;
}

const val = generateBenchmarkSplit('val', 0, 200, base.config.imageSize);
const settings: EvalSetting[] = [
  { label: 'llada 1', sampler: 'llada', tokensPerStep: 1, options: samplerOptions('llada', { steps: L }) },
  ...[1, 4, 8].map((k) => ({
    label: `rediff ${k}`,
    sampler: 'rediff',
    tokensPerStep: k,
    options: samplerOptions('rediff', { steps: L / k }),
  })),
];
const model = await loadModel(scored);
try {
  for (const r of await evaluate(model, val, settings)) {
    const pct = (key: 'capture' | 'parses'): string => (100 * r.summary[key].mean).toFixed(1);
    console.log(`${scored}  ${r.setting.label}: CAPTURE ${pct('capture')}, parses ${pct('parses')}%`);
  }
} finally {
  await model.dispose();
}
