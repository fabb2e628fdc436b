/**
 * The K/V cache of block decoding (Fast-dLLM's prefix and dual caches) on the committed tiny
 * model: a cached pass reproduces the full pass when nothing outside its window changed since
 * the cache was taken, which is the state at the first step of every block.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BENCHMARK_PROMPT } from '../src/benchmark/captioner.js';
import { generateBenchmarkSplit } from '../src/data/training-data.js';
import { normaliseRgb, patchify } from '../src/data/image.js';
import { loadModel } from '../src/model/io.js';
import { relativeBuckets } from '../src/model/config.js';
import { Rng } from '../src/util/rng.js';
import { DiffusionVLM } from '../src/model/model.js';
import { MASK_ID } from '../src/tokenizer/tokenizer.js';
import { TINY_STAGE1_DIR } from './fixtures/tiny-stage1.js';

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};

for (const [keyBias, relativeBias] of [
  [0, 0],
  [2, 4],
] as const) {
  const bias = `image key bias ${keyBias}${relativeBias ? ', relative position bias' : ''}`;
  test(`a cached pass equals the full one if nothing outside the block changed (prefix, dual; ${bias})`, async () => {
    const loaded = await loadModel(TINY_STAGE1_DIR);
    // The image key bias enters through attn_bias: check it in the cached pass too, and the relative
    // position bias, whose buckets the cached pass reads for its window's rows.
    const config = { ...loaded.config, imageKeyBias: keyBias, relativeBias };
    const rng = new Rng(7);
    const params = new Map(loaded.params);
    for (let l = 0; l < config.lm.layers; l++)
      params.set(
        `lm.block${l}.attn.rel`,
        Float32Array.from({ length: relativeBuckets(config) * config.lm.heads }, () => rng.normal()),
      );
    const model = keyBias ? new DiffusionVLM(config, loaded.tokenizer, params) : loaded;
    try {
      const c = model.config;
      const L = c.responseLength;
      const V = c.vocabSize;
      const split = generateBenchmarkSplit('val', 0, 2, c.imageSize);
      const embeds = await model.encodeImages(
        split.rgb.map((rgb) => patchify(normaliseRgb(rgb), c.imageSize, c.patchSize)),
      );
      const prompt = model.tokenizer.encode(BENCHMARK_PROMPT);
      // Block 0 decoded (a reference caption), blocks 1 and 2 still masked, as at the start of block 1.
      const rows = split.records.map((r) => {
        const words = model.tokenizer.encode(r.captions[0]!);
        return { prompt, response: Array.from({ length: L }, (_, i) => (i < 32 ? (words[i] ?? 2) : MASK_ID)) };
      });
      const full = await model.logitsKeepingCache(embeds, rows);
      const plain = await model.logits(embeds, rows);
      assert.ok(maxAbsDiff(full.logits, plain) < 1e-5, 'the cache-keeping pass is the plain pass');
      const blockOf = (logits: Float32Array, row: number, from: number, n: number, rowLength: number): Float32Array =>
        logits.subarray((row * rowLength + from) * V, (row * rowLength + from + n) * V);
      for (const [window, name] of [
        [32, 'dual'],
        [64, 'prefix'],
      ] as const) {
        const cached = await model.logitsFromCache(
          rows.map((r, i) => ({ ...r, cache: full.caches[i]!, from: 32 })),
          window,
          32,
        );
        for (let i = 0; i < rows.length; i++) {
          const diff = maxAbsDiff(blockOf(cached, i, 0, 32, 32), blockOf(full.logits, i, 32, 32, L));
          assert.ok(diff < 1e-4, `${name} window, row ${i}: max |logit difference| ${diff}`);
        }
      }
      // Rows at different windows in one pass (each row's fresh keys go to its own positions):
      // with the cache of an unchanged state, any window reproduces the full pass there.
      const froms = [32, 0];
      const mixed = await model.logitsFromCache(
        rows.map((r, i) => ({ ...r, cache: full.caches[i]!, from: froms[i]! })),
        32,
        32,
      );
      for (let i = 0; i < rows.length; i++) {
        const diff = maxAbsDiff(blockOf(mixed, i, 0, 32, 32), blockOf(full.logits, i, froms[i]!, 32, L));
        assert.ok(diff < 1e-4, `row ${i} at window ${froms[i]}: max |logit difference| ${diff}`);
      }
      // The cache matters: another row's cache gives other logits.
      const swapped = await model.logitsFromCache(
        rows.map((r, i) => ({ ...r, cache: full.caches[1 - i]!, from: 32 })),
        32,
        32,
      );
      assert.ok(
        maxAbsDiff(blockOf(swapped, 0, 0, 32, 32), blockOf(full.logits, 0, 32, 32, L)) > 1e-2,
        'the cached keys are read',
      );
    } finally {
      await model.dispose();
      if (model !== loaded) await loaded.dispose();
    }
  });
}
