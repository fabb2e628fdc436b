/** The import API's captioner (src/api/model.ts) on tiny untrained checkpoints: inputs, options, steps, errors. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type Model, loadModel } from '../src/api/model.js';
import { generateBenchmarkSplit } from '../src/data/training-data.js';
import { renderScenePng } from '../src/benchmark/render.js';
import { MASK_ID } from '../src/tokenizer/tokenizer.js';
import { UserError } from '../src/util/errors.js';
import { makeTinyModels } from './helpers/models.js';

const userError = (pattern: RegExp) => (e: unknown) => e instanceof UserError && pattern.test(e.message);

test('caption: bytes, ArrayBuffer and decoded RGB/RGBA pixels give one caption, with every step', async () => {
  const [baseline, rediff] = await makeTinyModels('rediff-api-');
  const models: Model[] = [await loadModel(baseline!.dir), await loadModel(rediff!.dir)];
  try {
    const [b, r] = models as [Model, Model];
    const size = r.config.imageSize;
    const split = generateBenchmarkSplit('val', 0, 1, size);
    const png = renderScenePng(split.records[0]!.scene, size).png;
    const seen: number[] = [];
    const res = await r.caption(png, { tokensPerStep: 4, onStep: (s) => seen.push(s.step) });
    assert.deepEqual(
      seen,
      res.steps.map((s) => s.step),
    );
    assert.ok(res.steps.length >= 1 && res.steps.length <= r.config.responseLength / 4);
    assert.deepEqual(res.steps.at(-1)!.tokens, res.tokens);
    assert.equal(res.steps.at(-1)!.text, res.text);
    assert.ok(res.steps[0]!.tokens.includes(MASK_ID), 'the first step leaves masks');
    assert.ok(
      res.steps.some((s) => s.refined.length > 0),
      'the refining sampler rewrites tokens of a random model',
    );

    const rgb = split.rgb[0]!;
    const rgba = new Uint8ClampedArray(size * size * 4).fill(255);
    for (let p = 0; p < size * size; p++) rgba.set(rgb.subarray(p * 3, p * 3 + 3), p * 4);
    const copy = png.buffer.slice(png.byteOffset, png.byteOffset + png.byteLength) as ArrayBuffer;
    for (const input of [copy, { data: rgb, width: size, height: size }, { data: rgba, width: size, height: size }])
      assert.deepEqual((await r.caption(input, { tokensPerStep: 4 })).tokens, res.tokens);

    const llada = await b.caption(png, { sampler: 'llada', tokensPerStep: 8 });
    assert.equal(llada.steps.length, b.config.responseLength / 8);
    assert.ok(llada.steps.every((s) => s.refined.length === 0));
    const threshold = await r.caption(png, { sampler: 'threshold-rediff', threshold: 0.5, cache: 'dual' });
    assert.ok(threshold.steps.length <= r.config.responseLength);

    await assert.rejects(r.caption(png, { tokensPerStep: 5 }), userError(/tokens per step 5 must .* divide/));
    await assert.rejects(r.caption(new Uint8Array([1, 2, 3])), userError(/not a readable image: image/));
    await assert.rejects(
      r.caption({ data: rgb.subarray(1), width: size, height: size }),
      userError(/needs 3 or 4 bytes per pixel/),
    );
  } finally {
    for (const m of models) await m.dispose();
  }
});

test('loadModel: a missing checkpoint directory is one clear error', async () => {
  await assert.rejects(loadModel('/nonexistent/checkpoint'), userError(/nonexistent\/checkpoint/));
});
