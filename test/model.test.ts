import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildTrainingGraph, trainingLoss } from '../src/model/architecture.js';
import {
  DEFAULT_CELL_FACTORS,
  type ModelConfig,
  cellClasses,
  cellFactorColumns,
  cellFactorMatrix,
  presetConfig,
  validateConfig,
} from '../src/model/config.js';
import { DiffusionVLM } from '../src/model/model.js';
import { WordTokenizer } from '../src/tokenizer/word.js';
import { countParams, initParams, paramSpecs } from '../src/model/params.js';
import { serializeGraph } from '../src/graph/onnx.js';
import { CompiledGraph, type HostTensor } from '../src/graph/runtime.js';
import { batchFeeds, Trainer } from '../src/training/trainer.js';
import { MASK_PREDICTION_MIX, makeSample, recordPatches, type TrainingSample } from '../src/training/samples.js';
import type { TrainingRecord } from '../src/data/training-record.js';
import { corruptResponse, padResponse } from '../src/training/corruption.js';
import { lossWeights } from '../src/training/loss.js';
import { Rng } from '../src/util/rng.js';
import { gradCheck } from './helpers/gradcheck.js';
import { CELL_FACTORS, cellClass, cellObject } from '../src/benchmark/cells.js';
import { COLORS, SHAPES, SIZES } from '../src/benchmark/scene.js';
import { toyRecords } from './helpers/toy.js';

const MICRO: ModelConfig = {
  vocabSize: 12,
  imageSize: 8,
  patchSize: 4,
  vision: { width: 8, layers: 1, heads: 2, ff: 16 },
  lm: { width: 8, layers: 2, heads: 2, ff: 16 },
  promptLength: 3,
  responseLength: 5,
};

function samplesFor(c: ModelConfig, records: TrainingRecord[], rng: Rng, n: number): TrainingSample[] {
  return Array.from({ length: n }, () =>
    makeSample(c, rng.choice(records), rng, MASK_PREDICTION_MIX, { firstOrdinaryId: 4, vocabSize: c.vocabSize }),
  );
}

function toF64(feeds: Record<string, HostTensor>): Record<string, HostTensor> {
  const out: Record<string, HostTensor> = {};
  for (const [k, t] of Object.entries(feeds)) {
    out[k] =
      t.dtype === 'float32' ? { dtype: 'float64', shape: t.shape, data: Float64Array.from(t.data as Float32Array) } : t;
  }
  return out;
}

function paramFeeds(c: ModelConfig, seed: number): Record<string, HostTensor> {
  const params = initParams(c, seed);
  const rng = new Rng(seed + 1);
  const feeds: Record<string, HostTensor> = {};
  for (const s of paramSpecs(c)) {
    // Perturb ones/zeros so LayerNorm gains and biases are exercised away from their init.
    const data = Float32Array.from(params.get(s.name)!, (x) => x + 0.1 * rng.normal());
    feeds[s.name] = { dtype: 'float32', shape: s.shape, data };
  }
  return feeds;
}

/** The image tokens the language model receives for `images` (the model's vision graph). */
async function embedImages(
  c: ModelConfig,
  params: Map<string, Float32Array>,
  images: Float32Array[],
): Promise<Float32Array> {
  const model = new DiffusionVLM(c, new WordTokenizer(['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h']), params);
  try {
    return await model.encodeImages(images);
  } finally {
    await model.dispose();
  }
}

for (const [what, c] of [
  ['', MICRO],
  [' with image normalisation and place embeddings', { ...MICRO, imageNorm: true, imagePlace: true }],
  [
    " with the probe's cell reading on the image tokens",
    { ...MICRO, imageNorm: true, cellProbe: true, imageCells: true },
  ],
  [' with a relative position bias', { ...MICRO, relativeBias: 2 }],
] as const) {
  test(`whole-model gradient matches finite differences (float64)${what}`, async () => {
    const rng = new Rng(3);
    const records = toyRecords(c, 3, 1, 3);
    const feeds = toF64({ ...batchFeeds(c, samplesFor(c, records, rng, 2)), ...paramFeeds(c, 9) });
    const res = await gradCheck((g) => trainingLoss(g, c, 2).loss, feeds, { eps: 1e-5, directions: 3 });
    assert.ok(res.checked >= paramSpecs(c).length, `checked ${res.checked} directions`);
    assert.ok(res.maxRelError < 1e-5, `max relative error ${res.maxRelError}`);
  });
}

test('relative position bias: starts as ALiBi, zero is none, a value moves the logits, bad ones refused', async () => {
  const c: ModelConfig = { ...MICRO, relativeBias: 2 };
  const params = initParams(c, 5);
  const tokenizer = new WordTokenizer(['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h']);
  const images = toyRecords(c, 2, 4, 3).map((r) => recordPatches(c, r.rgb));
  const rows = [
    { prompt: [4, 5], response: [6, 7, 3, 3, 3] },
    { prompt: [5], response: [8, 3, 9, 3, 3] },
  ];
  const logitsOf = async (config: ModelConfig, p: Map<string, Float32Array>): Promise<Float32Array> => {
    const model = new DiffusionVLM(config, tokenizer, p);
    try {
      return await model.logits(await model.encodeImages(images), rows);
    } finally {
      await model.dispose();
    }
  };
  // It starts as ALiBi: minus a per-head slope (2^(-8k/H) for head k of H) times the distance; 0 for image pairs.
  const start = params.get('lm.block1.attn.rel')!;
  const h = c.lm.heads;
  assert.deepEqual(
    [...start.subarray(0, 5 * h)],
    [-2 * 2 ** -4, -2 * 2 ** -8, -(2 ** -4), -(2 ** -8), 0, 0, -(2 ** -4), -(2 ** -8), -2 * 2 ** -4, -2 * 2 ** -8].map(
      Math.fround,
    ),
  );
  assert.deepEqual([...start.subarray(5 * h)], [0, 0]);
  const without = await logitsOf(MICRO, new Map([...params].filter(([k]) => !k.endsWith('.attn.rel'))));
  for (const [k, v] of params) if (k.endsWith('.attn.rel')) v.fill(0);
  const zero = await logitsOf(c, params);
  zero.forEach((x, i) => assert.ok(Math.abs(x - without[i]!) < 1e-5, `logit ${i}: ${x} against ${without[i]}`));
  assert.deepEqual(
    params.get('lm.block0.attn.rel')!.length,
    (2 * 2 + 2) * c.lm.heads,
    'offsets -2..2 and the image bucket, per head',
  );
  params.get('lm.block0.attn.rel')!.fill(3, 0, c.lm.heads); // keys two or more positions to the left
  const moved = await logitsOf(c, params);
  assert.ok(
    moved.some((x, i) => Math.abs(x - without[i]!) > 1e-3),
    'a learned offset bias changes the logits',
  );
  assert.throws(() => validateConfig({ ...MICRO, relativeBias: 0 }), /relativeBias must be an integer in \[1, 64\]/);
});

test("attention taps: every query's attention sums to 1 and padded prompt keys get none", async () => {
  const c = MICRO;
  const model = new DiffusionVLM(c, new WordTokenizer(['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h']), initParams(c, 6));
  try {
    const images = toyRecords(c, 2, 4, 3).map((r) => recordPatches(c, r.rgb));
    const layers = await model.attention(await model.encodeImages(images), [
      { prompt: [4], response: [6, 7, 3, 3, 3] },
      { prompt: [5, 6, 7], response: [8, 3, 9, 3, 3] },
    ]);
    const t = 4 + c.promptLength + c.responseLength;
    assert.equal(layers.length, c.lm.layers);
    for (const probs of layers) {
      assert.equal(probs.length, 2 * c.lm.heads * t * t);
      for (let q = 0; q < 2 * c.lm.heads * t; q++) {
        const row = probs.subarray(q * t, (q + 1) * t);
        assert.ok(Math.abs(row.reduce((a, x) => a + x, 0) - 1) < 1e-5, `query ${q} sums to 1`);
        if (Math.floor(q / (c.lm.heads * t)) === 0)
          assert.ok(row[4]! < 1e-9 && row[5]! < 1e-9, "the first row's two padded prompt keys");
      }
    }
  } finally {
    await model.dispose();
  }
});

test('image normalisation: what all image tokens share never reaches the LM; each token is unit-scale', async () => {
  const c: ModelConfig = { ...MICRO, imageNorm: true };
  const params = initParams(c, 2);
  for (const [k, v] of params)
    if (k.startsWith('projector.fc')) v.forEach((_, i) => (v[i] = 0.5 * Math.sin(i + k.length)));
  const images = toyRecords(c, 2, 4, 3).map((r) => recordPatches(c, r.rgb));
  const embed = (p: typeof params, config: ModelConfig = c): Promise<Float32Array> => embedImages(config, p, images);
  // A large constant added to every image token (the projector's output bias).
  const shift = (p: typeof params): typeof params =>
    new Map([...p, ['projector.fc2.b', Float32Array.from(p.get('projector.fc2.b')!, (_, i) => 5 * Math.cos(i))]]);
  const before = await embed(params);
  const after = await embed(shift(params));
  before.forEach((x, i) => assert.ok(Math.abs(x - after[i]!) < 1e-4, `embedding ${i}: ${x} became ${after[i]}`));
  const d = c.lm.width;
  for (let t = 0; t < before.length / d; t++) {
    let ss = 0;
    for (let k = 0; k < d; k++) ss += before[t * d + k]! ** 2;
    assert.ok(Math.abs(Math.sqrt(ss / d) - 1) < 0.01, `token ${t}: rms ${Math.sqrt(ss / d)}`);
  }
  // Without it, the same shift goes straight through.
  const plain = initParams(MICRO, 2);
  const e1 = await embed(plain, MICRO);
  const e2 = await embed(shift(plain), MICRO);
  assert.ok(Math.abs(e1[0]! - e2[0]!) > 1, 'without image normalisation the shared part should pass');
  // Place embeddings: each token's own cell row is added after the normalisation, nothing else changes.
  const placed: ModelConfig = { ...c, imagePlace: true };
  const withPlace = initParams(placed, 2);
  for (const [k, v] of params) withPlace.set(k, v);
  const place = withPlace.get('projector.place')!;
  const e3 = await embed(withPlace, placed);
  const np = place.length / d;
  e3.forEach((x, i) => {
    const want = before[i]! + place[(Math.floor(i / d) % np) * d + (i % d)]!;
    assert.ok(Math.abs(x - want) < 1e-4, `embedding ${i}: ${x}, want ${want}`);
  });
  assert.throws(() => validateConfig({ ...MICRO, imagePlace: true }), /imagePlace needs imageNorm/);
});

test("cell reading: an image token gets the embedding of its probe's class's factors, nothing else", async () => {
  const plain: ModelConfig = { ...MICRO, imageNorm: true, cellProbe: true };
  const c: ModelConfig = { ...plain, imageCells: true };
  const params = initParams(c, 4);
  // A probe that reads every cell as one class, whatever the image: a large yellow ring.
  const cls = cellClass({ shape: 'ring', color: 'yellow', size: 'large' });
  params.get('probe.cells.w')!.fill(0);
  params.get('probe.cells.b')!.forEach((_, i, b) => (b[i] = i === cls ? 50 : 0));
  const images = toyRecords(c, 2, 4, 3).map((r) => recordPatches(c, r.rgb));
  const embed = (config: ModelConfig): Promise<Float32Array> => embedImages(config, params, images);
  const without = await embed(plain);
  const withCells = await embed(c);
  const table = params.get('projector.cells')!;
  const d = c.lm.width;
  const factors = [
    1 + SHAPES.indexOf('ring'),
    1 + SHAPES.length + COLORS.indexOf('yellow'),
    1 + SHAPES.length + COLORS.length + SIZES.indexOf('large'),
  ];
  withCells.forEach((x, i) => {
    const want = without[i]! + factors.reduce((s, f) => s + table[f * d + (i % d)]!, 0);
    assert.ok(Math.abs(x - want) < 1e-4, `embedding ${i}: ${x}, want ${want}`);
  });
  // The factor matrix: an object class has exactly its shape, colour and size; the empty class only "empty".
  // The model's default grid is the benchmark's, and the model numbers classes as the benchmark does.
  assert.deepEqual(DEFAULT_CELL_FACTORS, CELL_FACTORS);
  const m = cellFactorMatrix(c);
  const columns = cellFactorColumns(c);
  assert.equal(columns, 1 + SHAPES.length + COLORS.length + SIZES.length);
  for (const k of [0, 1, cls, cellClasses(c) - 1]) {
    const o = cellObject(k);
    const want = o
      ? [
          1 + SHAPES.indexOf(o.shape),
          1 + SHAPES.length + COLORS.indexOf(o.color),
          columns - SIZES.length + SIZES.indexOf(o.size),
        ]
      : [0];
    assert.deepEqual(
      [...m.subarray(k * columns, (k + 1) * columns)].flatMap((v, f) => (v ? [f] : [])),
      want,
    );
  }
  assert.deepEqual(
    [...m.subarray(cls * columns, (cls + 1) * columns)].flatMap((v, f) => (v ? [f] : [])),
    factors,
  );
  assert.throws(() => validateConfig({ ...MICRO, cellFactors: [8, 0] }), /cellFactors must be/);
  assert.throws(() => validateConfig({ ...MICRO, imageCells: true }), /imageCells needs cellProbe/);
});

test('float32 training graph (fused LayerNorm) agrees with the float64 graph', async () => {
  const rng = new Rng(4);
  const feeds32 = {
    ...batchFeeds(MICRO, samplesFor(MICRO, toyRecords(MICRO, 3, 2, 4), rng, 3)),
    ...paramFeeds(MICRO, 5),
  };
  const run = async (dtype: 'float32' | 'float64', feeds: Record<string, HostTensor>) => {
    const compiled = await CompiledGraph.create(serializeGraph(buildTrainingGraph(MICRO, 3, dtype)));
    const out = await compiled.run(feeds);
    await compiled.release();
    return out;
  };
  const a = await run('float32', feeds32);
  const b = await run('float64', toF64(feeds32));
  for (const name of ['loss', ...paramSpecs(MICRO).map((s) => `grad_${s.name}`)]) {
    const x = a[name]!.data as Float32Array;
    const y = b[name]!.data as Float64Array;
    let num = 0;
    let den = 0;
    for (let i = 0; i < x.length; i++) {
      num += (x[i]! - y[i]!) ** 2;
      den += y[i]! ** 2;
    }
    assert.ok(Math.sqrt(num) <= 1e-4 * Math.sqrt(den) + 1e-9, `${name}: relative difference ${Math.sqrt(num / den)}`);
  }
});

test('presets have the documented sizes', () => {
  const tiny = countParams(presetConfig('tiny', 300));
  const small = countParams(presetConfig('small', 300));
  assert.ok(tiny < 300_000, `tiny has ${tiny} parameters`);
  assert.ok(small > 4 * tiny, `small (${small}) should be much larger than tiny (${tiny})`);
  assert.throws(() => presetConfig('huge', 300), /unknown model preset "huge"/);
});

test('tiny preset: a few hundred steps of mask-prediction training bring the masked-token loss far down', async () => {
  const c = presetConfig('tiny', 60, { responseLength: 24 });
  const records = toyRecords(c, 6, 7, 20);
  const trainer = new Trainer(c, initParams(c, 1));
  // A fixed held-in evaluation batch at t = 0.5, the same before and after.
  const evalRng = new Rng(99);
  const evalBatch = records.flatMap((r) =>
    [0, 1].map(() => {
      const corrupted = corruptResponse(
        padResponse(r.captions[0]!, c.responseLength),
        evalRng,
        { syntaxNoise: 0, firstOrdinaryId: 4, vocabSize: 60 },
        0.5,
      );
      return {
        patches: makeSample(c, r, evalRng, MASK_PREDICTION_MIX, { firstOrdinaryId: 4, vocabSize: 60 }).patches,
        prompt: r.prompt,
        corrupted,
        weights: lossWeights(corrupted, 'mask-prediction'),
      };
    }),
  );
  const before = await trainer.loss(evalBatch);
  const rng = new Rng(5);
  for (let step = 0; step < 300; step++) {
    const r = await trainer.step(samplesFor(c, records, rng, 12), step < 20 ? (3e-3 * (step + 1)) / 20 : 3e-3);
    assert.ok(Number.isFinite(r.loss));
  }
  const after = await trainer.loss(evalBatch);
  await trainer.dispose();
  assert.ok(before > 1.5, `initial loss ${before} should be near ln(60) * 0.5 weight`);
  assert.ok(
    after < 0.25 * before,
    `masked-token loss went from ${before.toFixed(3)} to ${after.toFixed(3)}; expected below 25%`,
  );
});
