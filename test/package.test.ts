/**
 * rediff as a package: `npm pack` the tarball (dist/ as `npm install` built it), check what it
 * holds, unpack it into an empty project and import it from TypeScript there: the types check,
 * `loadModel('rediff')` captions a benchmark scene from its PNG bytes, and the browser entry
 * ('rediff/web', here on onnxruntime-node) decodes the shipped ONNX export to the same tokens.
 * The project's other dependencies are links into this repository's node_modules, so the test
 * needs no network and no copy of onnxruntime; test/slow/package-install.test.ts runs a real
 * `npm install` of the tarball.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadModel } from '../src/api/model.js';
import { generateBenchmarkSplit } from '../src/data/training-data.js';
import { renderScenePng } from '../src/benchmark/render.js';
import { checkConsumer, consumerProject, packTarball } from './helpers/package.js';

const ROOT = path.resolve('.');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rediff-package-'));
let tarball = '';
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('the packed tarball holds dist/ with types, the shipped models, and no tests, sources or maps', async () => {
  const packed = await packTarball(ROOT, tmp);
  tarball = packed.file;
  const files = new Set(packed.files);
  for (const f of [
    'package.json',
    'README.md',
    'dist/index.js',
    'dist/index.d.ts',
    'dist/api/model.d.ts',
    'dist/web/index.js',
    'dist/web/index.d.ts',
    'dist/cli/main.js',
    'dist/server/worker.js',
    'dist/public/app.js',
    ...['rediff', 'baseline', 'base'].map((m) => `models/${m}/checkpoint.json`),
    'models/rediff/onnx/model.json',
  ])
    assert.ok(files.has(f), `${f} is in the tarball`);
  const stray = packed.files.filter((f) => /^(test|src|runs|reports|docs|bench|scripts|\.ci)\/|\.map$/.test(f));
  assert.deepEqual(stray, []);
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
    exports: Record<string, string | Record<string, string>>;
  };
  for (const target of Object.values(pkg.exports).flatMap((e) => (typeof e === 'string' ? [e] : Object.values(e))))
    assert.ok(files.has(target.replace(/^\.\//, '')), `exports target ${target} is packed`);
});

test('installed in an empty project, its import captions a scene, with types, and rediff/web agrees', async () => {
  assert.ok(tarball, 'the tarball was packed');
  const project = await consumerProject(tarball, path.join(tmp, 'project'), path.join(ROOT, 'node_modules'));
  const got = await checkConsumer(project, ROOT);

  // The same caption as this checkout's code gives.
  const model = await loadModel('rediff');
  try {
    const size = model.config.imageSize;
    const png = renderScenePng(generateBenchmarkSplit('test', 0, 1, size).records[0]!.scene, size).png;
    assert.equal((await model.caption(png, { tokensPerStep: 4 })).text, got.text);
  } finally {
    await model.dispose();
  }
});

test('rediff/web bundles for the browser: nothing in it needs Node', async () => {
  const esbuild = await import('esbuild');
  const out = await esbuild.build({
    entryPoints: [path.join(ROOT, 'src', 'web', 'index.ts')],
    bundle: true,
    platform: 'browser',
    format: 'esm',
    write: false,
    logLevel: 'silent',
  });
  assert.deepEqual(out.errors, []);
  const text = out.outputFiles[0]!.text;
  assert.match(text, /export \{[^}]*OrtDenoisingModel/);
  assert.doesNotMatch(text, /from "(node:|onnxruntime-node|sharp)/);
});
