/**
 * The pieces behind the server and the page: the standalone ONNX export (run through the same
 * DenoisingModel adapter the page uses, here on onnxruntime-node) against the model itself,
 * the page's pixel and input helpers against their Node counterparts, the browser bundle, and
 * the serve command's choice of models.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { BENCHMARK_PROMPT, benchmarkTokenizer, writeCaption } from '../src/benchmark/captioner.js';
import { renderScene } from '../src/benchmark/render.js';
import { COLORS, generateScene } from '../src/benchmark/scene.js';
import { modelsToServe, serverLimits } from '../src/cli/commands/serve.js';
import { shippedModelDir } from '../src/cli/models.js';
import { normaliseRgb, patchify as nodePatchify } from '../src/data/image.js';
import { presetConfig } from '../src/model/config.js';
import { exportOnnx, writeOnnxExport } from '../src/model/export.js';
import { saveModel } from '../src/model/io.js';
import { DiffusionVLM, sequenceFeeds } from '../src/model/model.js';
import { initParams } from '../src/model/params.js';
import { sample, samplerOptions, type StepTrace } from '../src/sampling/sampler.js';
import { buildWebAssets } from '../src/server/assets.js';
import { EOS_ID } from '../src/tokenizer/tokenizer.js';
import { Rng } from '../src/util/rng.js';
import { type OrtLike, OrtDenoisingModel, rowInputs } from '../src/web/ort-model.js';
import { finalCaption } from '../src/web/panel.js';
import { normalisePixels, patchify } from '../src/web/pixels.js';

const tokenizer = benchmarkTokenizer();
// Every image option on, so the export and the page's adapter are checked with them.
const config = presetConfig('tiny', tokenizer.size, {
  responseLength: 32,
  imageNorm: true,
  imagePlace: true,
  cellProbe: true,
  imageCells: true,
  imageKeyBias: 2,
  relativeBias: 3,
});
const params = initParams(config, 4);
// learned, not the zero init
for (const [name, p] of params)
  if (name.endsWith('.attn.rel')) p.forEach((_, i) => (p[i] = Math.sin(3 * i + name.length)));
const model = new DiffusionVLM(config, tokenizer, params, { prompt: BENCHMARK_PROMPT, stage: 'test' });
const rgb = renderScene(generateScene(new Rng(5), { seed: 5 }), config.imageSize).rgb;
const patches = nodePatchify(normaliseRgb(rgb), config.imageSize, config.patchSize);
const prompt = tokenizer.encode(BENCHMARK_PROMPT);

test("the exported ONNX graphs, run through the page's adapter, caption exactly like the model", async () => {
  const exp = exportOnnx(model);
  assert.deepEqual(exp.manifest.promptIds, prompt);
  assert.deepEqual(exp.manifest.shapes.logits, [1, 32, tokenizer.size]);
  const opts = { intraOpNumThreads: 1, interOpNumThreads: 1 };
  const vision = await ort.InferenceSession.create(exp.vision, opts);
  const language = await ort.InferenceSession.create(exp.language, opts);
  assert.deepEqual([...vision.inputNames], ['patches'], 'weights are baked in, not inputs');
  assert.deepEqual([...language.inputNames].sort(), ['attn_bias', 'image_embeds', 'tokens']);
  const web = new OrtDenoisingModel(ort as unknown as OrtLike, vision as never, language as never, exp.manifest);

  const e1 = await model.encodeImages([patches]);
  const e2 = await web.encodeImages([patches]);
  let d = 0;
  for (let i = 0; i < e1.length; i++) d = Math.max(d, Math.abs(e1[i]! - e2[i]!));
  assert.ok(d < 1e-4, `image embeddings differ by ${d}`);

  for (const name of ['llada', 'rediff'] as const) {
    const o = samplerOptions(name, { steps: 8, trace: true });
    const viaModel = await sample(model, [patches], [prompt], o);
    const viaExport = await sample(web, [patches], [prompt], o);
    assert.deepEqual(viaExport[0]!.tokens, viaModel[0]!.tokens, name);
    assert.deepEqual(viaExport[0]!.trace, viaModel[0]!.trace, name);
  }
  await vision.release();
  await language.release();

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rediff-export-'));
  await writeOnnxExport(dir, exp);
  assert.deepEqual(fs.readdirSync(dir).sort(), ['language.onnx', 'model.json', 'vision.onnx']);
});

test('the sampler reports every step to onStep, matching its trace', async () => {
  const seen: { row: number; step: StepTrace; tokens: number[] }[] = [];
  const o = {
    ...samplerOptions('rediff', { steps: 8, trace: true }),
    onStep: (row: number, step: StepTrace, tokens: readonly number[]) => seen.push({ row, step, tokens: [...tokens] }),
  };
  const [res] = await sample(model, [patches], [prompt], o);
  assert.deepEqual(
    seen.map((s) => s.step),
    res!.trace,
  );
  assert.ok(seen.every((s) => s.row === 0));
  assert.deepEqual(seen[seen.length - 1]!.tokens, res!.tokens);
});

test("the page's pixel helpers and model inputs match the Node ones", () => {
  const rgba = new Uint8Array((rgb.length / 3) * 4);
  for (let p = 0, q = 0; q < rgb.length; p += 4, q += 3) rgba.set([rgb[q]!, rgb[q + 1]!, rgb[q + 2]!, 255], p);
  const hwc = normaliseRgb(rgb);
  const manifest = exportOnnx(model).manifest;
  assert.deepEqual(normalisePixels(rgb, config.imageSize, config.imageSize, 3, manifest.pixels), hwc);
  assert.deepEqual(normalisePixels(rgba, config.imageSize, config.imageSize, 4, manifest.pixels), hwc);
  const all = Uint8Array.from({ length: 256 * 3 }, (_, i) => Math.floor(i / 3));
  assert.deepEqual(
    normalisePixels(all, 256, 1, 3, manifest.pixels),
    normaliseRgb(all),
    'every byte value, every channel',
  );
  assert.deepEqual(
    patchify(hwc, config.imageSize, config.patchSize),
    nodePatchify(hwc, config.imageSize, config.patchSize),
  );
  const response = Array.from({ length: 32 }, (_, i) => (i * 7) % tokenizer.size);
  const mine = rowInputs(manifest, prompt, response);
  const theirs = sequenceFeeds(config, [{ prompt, response }]);
  assert.deepEqual(mine.tokens, theirs.tokens.data);
  assert.deepEqual(mine.bias, theirs.bias.data);
});

test('the browser bundle builds and pulls in no Node-only module', async () => {
  const assets = await buildWebAssets();
  assert.deepEqual([...assets.keys()].sort(), ['app.js', 'index.html', 'style.css']);
  const js = assets.get('app.js')!.body.toString();
  assert.doesNotMatch(
    js,
    /from\s*["'](node:|fs|path|sharp|@napi-rs\/canvas|onnxruntime-node|@huggingface\/tokenizers)/,
  );
  assert.match(js, /ort\.wasm\.min\.mjs/);
});

test('serve uses the given checkpoints, or the shipped ones, and says which are missing', async () => {
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'rediff-serve-'));
  assert.throws(() => modelsToServe({ rediff: empty }), /--rediff .*no checkpoint there/);
  const dir = path.join(empty, 'm');
  await saveModel(dir, { config, tokenizer, params: model.params, state: { prompt: BENCHMARK_PROMPT } });
  assert.deepEqual(modelsToServe({ rediff: dir, baseline: dir }).models, [
    { name: 'baseline', dir },
    { name: 'rediff', dir },
  ]);
  const one = modelsToServe({ rediff: dir });
  assert.deepEqual(
    one.models.find((m) => m.name === 'rediff'),
    { name: 'rediff', dir },
  );
  const shippedBaseline = fs.existsSync(path.join(shippedModelDir('baseline'), 'checkpoint.json'));
  assert.equal(one.models.length, shippedBaseline ? 2 : 1);
  assert.equal(one.missing.length, shippedBaseline ? 0 : 1);
});

test("serve's limits: timeouts in seconds become the server's milliseconds", () => {
  assert.deepEqual(
    serverLimits({
      maxUpload: 2048,
      maxPixels: 1000,
      queue: 3,
      concurrency: 1,
      decodeConcurrency: 1,
      requestTimeout: 2.5,
      idleTimeout: 0,
      keepAliveTimeout: 5,
    }),
    {
      maxUploadBytes: 2048,
      maxPixels: 1000,
      queueLimit: 3,
      concurrency: 1,
      decodeConcurrency: 1,
      requestTimeoutMs: 2500,
      idleTimeoutMs: 0,
      keepAliveTimeoutMs: 5000,
    },
  );
});

test('the page marks the words of false claims in a caption of a generated scene', () => {
  const scene = generateScene(new Rng(31), { seed: 31, minObjects: 2, maxObjects: 3 });
  const caption = writeCaption(scene, new Rng(1));
  const pieces = (ids: readonly number[]) => tokenizer.pieces(ids);
  const encode = (words: readonly string[]) => [...tokenizer.encode(words.join(' ')), EOS_ID, EOS_ID];
  const right = finalCaption(encode(caption.tokens), pieces, scene);
  assert.equal(right.score!.errors.length, 0, caption.text);
  assert.ok(right.parts.every((p) => p.wrong === null));
  assert.deepEqual(
    right.parts.map((p) => p.piece),
    caption.tokens,
  );

  // Recolour the first object mentioned: a false claim on exactly that word.
  const i = caption.tokens.findIndex((w) => (COLORS as readonly string[]).includes(w));
  const wrongColour = COLORS.find((c) => c !== caption.tokens[i] && !scene.objects.some((o) => o.color === c))!;
  const wrong = [...caption.tokens];
  wrong[i] = wrongColour;
  const res = finalCaption(encode(wrong), pieces, scene);
  assert.ok(res.score!.errors.length >= 1);
  assert.ok(res.score!.factuality < 1);
  assert.notEqual(res.parts[i]!.wrong, null, `"${wrongColour}" at ${i} is marked`);
  assert.equal(res.parts[0]!.wrong, null);
  assert.equal(finalCaption(encode(wrong), pieces, null).score, null);
});
