/** The packed tarball and an empty project that uses it, for test/package.test.ts and its slow twin. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

/** `npm pack` of dist/ as built (no build script run): the tarball's path and the files in it. */
export async function packTarball(root: string, dest: string): Promise<{ file: string; files: string[] }> {
  if (!fs.existsSync(path.join(root, 'dist', 'index.js')))
    throw new Error('dist/ is not built: run "npm install" or "npm run build" first');
  const { stdout } = await run(npm, ['pack', '--ignore-scripts', '--json', '--pack-destination', dest], {
    cwd: root,
    maxBuffer: 1 << 24,
  });
  const [info] = JSON.parse(stdout) as { filename: string; files: { path: string }[] }[];
  return { file: path.join(dest, info!.filename), files: info!.files.map((f) => f.path) };
}

/**
 * An empty ES-module project whose package.json depends on the tarball, with a tsconfig for
 * consumer.ts. Its allowScripts is what the README asks of users (npm >= 11.19 then runs no
 * dependency install script it does not list): onnxruntime-node's downloads CUDA libraries.
 */
export function writeProject(dir: string, tarball: string): void {
  fs.mkdirSync(dir, { recursive: true });
  const pkg = {
    name: 'consumer',
    private: true,
    type: 'module',
    dependencies: { rediff: `file:${tarball}` },
    allowScripts: { 'onnxruntime-node': false, protobufjs: false },
  };
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify(pkg, null, 2));
  const compilerOptions = {
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    target: 'ES2022',
    strict: true,
    skipLibCheck: true,
    types: ['node'],
  };
  fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions, files: ['consumer.ts'] }));
}

/**
 * The project with the tarball unpacked as node_modules/rediff and every other package linked
 * from `modules` (this repository's node_modules): what `npm install` of the tarball gives,
 * without copying onnxruntime.
 */
export async function consumerProject(tarball: string, dir: string, modules: string): Promise<string> {
  writeProject(dir, tarball);
  const installed = path.join(dir, 'node_modules');
  fs.mkdirSync(path.join(installed, 'rediff'), { recursive: true });
  await run('tar', ['-xzf', tarball, '-C', path.join(installed, 'rediff'), '--strip-components=1']);
  for (const name of fs.readdirSync(modules)) {
    if (name.startsWith('.') || name === 'rediff') continue;
    fs.symlinkSync(path.join(modules, name), path.join(installed, name), 'dir');
  }
  return dir;
}

/**
 * Type-checks consumer.ts against the installed package's declarations, runs it, and checks
 * what it printed: the installed copy was imported, the caption came with every step (also
 * through onStep), decoded pixels and the browser entry give the same tokens. Returns the caption.
 */
export async function checkConsumer(project: string, root: string): Promise<{ text: string; tokens: number[] }> {
  fs.writeFileSync(path.join(project, 'consumer.ts'), CONSUMER_TS);
  const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  await run(process.execPath, [tsc, '-p', project]).catch((e: { stdout: string }) => assert.fail(e.stdout));
  const { stdout } = await run(process.execPath, [path.join(project, 'consumer.js')], { cwd: project });
  const got = JSON.parse(stdout) as {
    text: string;
    tokens: number[];
    steps: number;
    streamed: number;
    lastStep: string;
    decodedTokens: number[];
    webTokens: number[];
    resolved: string;
  };
  assert.ok(got.resolved.startsWith(path.join(project, 'node_modules', 'rediff')), 'the installed copy was imported');
  assert.ok(got.text.length > 0);
  assert.ok(got.steps >= 1 && got.steps <= 24, '96 positions at 4 tokens per step');
  assert.equal(got.streamed, got.steps, 'onStep saw every step');
  assert.equal(got.lastStep, got.text, 'the last step is the caption');
  assert.deepEqual(got.decodedTokens, got.tokens, 'decoded pixels caption as their PNG does');
  assert.deepEqual(got.webTokens, got.tokens, 'the browser entry decodes the ONNX export alike');
  return { text: got.text, tokens: got.tokens };
}

/** What a user writes (the README's lines), plus the browser entry run on onnxruntime-node. */
export const CONSUMER_TS = `
import { createRequire } from 'node:module';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { type CaptionStep, generateBenchmarkSplit, loadModel, renderScenePng, shippedModelDir } from 'rediff';
import { type ExportManifest, OrtDenoisingModel, normalisePixels, patchify, sample, samplerOptions } from 'rediff/web';

const model = await loadModel('rediff');
const size = model.config.imageSize;
const scene = generateBenchmarkSplit('test', 0, 1, size);
const png: Uint8Array = renderScenePng(scene.records[0]!.scene, size).png;
fs.writeFileSync('scene.png', png);
const streamed: CaptionStep[] = [];
const caption = await model.caption(png, { tokensPerStep: 4, onStep: (step) => streamed.push(step) });
const decoded = await model.caption({ data: scene.rgb[0]!, width: size, height: size });
await model.dispose();

const onnx = path.join(shippedModelDir('rediff'), 'onnx');
const manifest = JSON.parse(fs.readFileSync(path.join(onnx, 'model.json'), 'utf8')) as ExportManifest;
const session = (file: string) => ort.InferenceSession.create(path.join(onnx, file));
const web = new OrtDenoisingModel(ort, await session('vision.onnx'), await session('language.onnx'), manifest);
const c = manifest.config;
const pixels = normalisePixels(scene.rgb[0]!, c.imageSize, c.imageSize, 3, manifest.pixels);
const patches = patchify(pixels, c.imageSize, c.patchSize);
const [fromWeb] = await sample(web, [patches], [manifest.promptIds], samplerOptions('rediff', { steps: 24 }));

console.log(JSON.stringify({
  text: caption.text,
  tokens: caption.tokens,
  steps: caption.steps.length,
  streamed: streamed.length,
  lastStep: caption.steps.at(-1)?.text,
  decodedTokens: decoded.tokens,
  webTokens: fromWeb!.tokens,
  resolved: createRequire(import.meta.url).resolve('rediff'),
}));
`;
