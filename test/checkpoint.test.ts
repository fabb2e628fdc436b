import { after, test } from 'node:test';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { UserError } from '../src/util/errors.js';
import { readJsonFile, writeFileAtomic } from '../src/util/atomic.js';
import {
  decodeSafetensors,
  encodeSafetensorsBuffer,
  readSafetensors,
  readSafetensorsHeader,
  writeSafetensors,
  type NamedTensor,
} from '../src/checkpoint/safetensors.js';
import {
  assertConfigMatches,
  loadCheckpoint,
  readCheckpointInfo,
  saveCheckpoint,
  type SaveCheckpointInput,
} from '../src/checkpoint/checkpoint.js';
import { WordTokenizer } from '../src/tokenizer/word.js';

const made: string[] = [];
after(() => made.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));
function tmpDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'rediff-ckpt-'));
  made.push(d);
  return d;
}

function sampleTensors(): Record<string, NamedTensor> {
  return {
    'embed.weight': { dtype: 'F32', shape: [3, 4], data: Float32Array.from({ length: 12 }, (_, i) => i * 0.5 - 2.25) },
    'f64.scalar': { dtype: 'F64', shape: [], data: Float64Array.of(Math.PI) },
    'ids.i32': { dtype: 'I32', shape: [2, 2], data: Int32Array.of(-1, 0, 2147483647, -2147483648) },
    'ids.i64': { dtype: 'I64', shape: [3], data: BigInt64Array.of(-(2n ** 63n), 0n, 2n ** 62n + 7n) },
    empty: { dtype: 'F32', shape: [0, 5], data: new Float32Array(0) },
  };
}

function assertTensorsEqual(a: Record<string, NamedTensor>, b: Record<string, NamedTensor>): void {
  assert.deepEqual(Object.keys(a).sort(), Object.keys(b).sort());
  for (const k of Object.keys(a)) {
    assert.equal(a[k]!.dtype, b[k]!.dtype, k);
    assert.deepEqual(a[k]!.shape, b[k]!.shape, k);
    assert.equal(a[k]!.data.constructor, b[k]!.data.constructor, k);
    assert.deepEqual(Array.from(a[k]!.data as ArrayLike<unknown>), Array.from(b[k]!.data as ArrayLike<unknown>), k);
  }
}

async function rejectsUser(p: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof UserError, `expected UserError, got ${String(err)}`);
    assert.match(err.message, pattern);
    assert.ok(!err.message.includes('\n'), 'one line');
    return true;
  });
}

test('safetensors: every dtype round-trips, with metadata, aligned data', async () => {
  const dir = tmpDir();
  const file = path.join(dir, 't.safetensors');
  const tensors = sampleTensors();
  await writeSafetensors(file, tensors, { note: 'hello', step: '3' });
  const buf = fs.readFileSync(file);
  const headerLen = Number(buf.readBigUInt64LE(0));
  assert.equal(headerLen % 8, 0, 'header padded to 8 bytes');
  const back = await readSafetensors(file);
  assertTensorsEqual(back.tensors, tensors);
  assert.deepEqual(back.metadata, { note: 'hello', step: '3' });
  const header = await readSafetensorsHeader(file);
  assert.deepEqual(header.tensors['embed.weight']!.shape, [3, 4]);
  assert.equal(header.headerBytes, 8 + headerLen);
  // Misaligned buffer (copy path) decodes the same.
  const shifted = Buffer.alloc(buf.length + 1);
  buf.copy(shifted, 1);
  assertTensorsEqual(decodeSafetensors(shifted.subarray(1), 'x').tensors, tensors);
});

test('safetensors: reads a file in the reference layout (unpadded header, offsets in any order)', () => {
  const f32 = Buffer.from(Float32Array.of(1.5, -2).buffer);
  const i64 = Buffer.from(BigInt64Array.of(9n).buffer);
  const header = JSON.stringify({
    b: { dtype: 'I64', shape: [1], data_offsets: [8, 16] },
    a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
  });
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(header)));
  const { tensors } = decodeSafetensors(Buffer.concat([len, Buffer.from(header), f32, i64]), 'ref.safetensors');
  assert.deepEqual(Array.from(tensors.a!.data as Float32Array), [1.5, -2]);
  assert.deepEqual(Array.from(tensors.b!.data as BigInt64Array), [9n]);
});

test('safetensors: truncated or corrupt files give a UserError naming the file', async () => {
  const dir = tmpDir();
  const file = path.join(dir, 'w.safetensors');
  await writeSafetensors(file, sampleTensors());
  const full = fs.readFileSync(file);
  const cases: Array<[string, Buffer, RegExp]> = [
    ['empty', Buffer.alloc(0), /empty file/],
    ['short', full.subarray(0, 5), /truncated/],
    ['header cut', full.subarray(0, 20), /truncated/],
    ['data cut', full.subarray(0, full.length - 3), /truncated: tensor .* needs data/],
  ];
  const badJson = Buffer.from(full);
  badJson[9] = 0x7b; // '{' inside the JSON
  badJson[10] = 0x7b;
  cases.push(['bad json', badJson, /not valid JSON/]);
  const hugeLen = Buffer.from(full);
  hugeLen.writeBigUInt64LE(2n ** 40n);
  cases.push(['huge header length', hugeLen, /not plausible/]);
  for (const [name, bytes, pattern] of cases) {
    const p = path.join(dir, `${name.replace(/ /g, '_')}.safetensors`);
    fs.writeFileSync(p, bytes);
    await rejectsUser(
      readSafetensors(p),
      new RegExp(`${p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: .*${pattern.source}`),
    );
    await rejectsUser(readSafetensorsHeader(p), pattern);
  }
  // Size inconsistent with shape and dtype.
  const header = JSON.stringify({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } });
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(header.length));
  assert.throws(
    () => decodeSafetensors(Buffer.concat([len, Buffer.from(header), Buffer.alloc(8)]), 'x.st'),
    /x\.st: corrupt: tensor a .* needs 12 bytes/,
  );
  const bf16 = JSON.stringify({ a: { dtype: 'BF16', shape: [1], data_offsets: [0, 2] } });
  len.writeBigUInt64LE(BigInt(bf16.length));
  assert.throws(
    () => decodeSafetensors(Buffer.concat([len, Buffer.from(bf16), Buffer.alloc(2)]), 'x.st'),
    /unsupported dtype "BF16"/,
  );
  await rejectsUser(readSafetensors(path.join(dir, 'nope.safetensors')), /not found: .*nope\.safetensors/);
});

test('safetensors: encoding rejects inconsistent tensors (programming errors)', () => {
  assert.throws(
    () => encodeSafetensorsBuffer({ a: { dtype: 'F32', shape: [2], data: new Float32Array(3) } }),
    RangeError,
  );
  assert.throws(
    () => encodeSafetensorsBuffer({ a: { dtype: 'I32', shape: [2], data: new Float32Array(2) } }),
    TypeError,
  );
});

test('atomic write: replaces content, removes the temp file on error; readJsonFile errors', async () => {
  const dir = tmpDir();
  const file = path.join(dir, 'a.json');
  await writeFileAtomic(file, '{"x": 1}');
  await writeFileAtomic(file, [Buffer.from('{"x":'), Buffer.from(' 2}')]);
  assert.deepEqual(await readJsonFile(file, 'thing'), { x: 2 });
  // Target is a directory: rename fails, no temp file left behind.
  fs.mkdirSync(path.join(dir, 'sub'));
  await assert.rejects(writeFileAtomic(path.join(dir, 'sub'), 'data'));
  assert.deepEqual(fs.readdirSync(dir).sort(), ['a.json', 'sub']);
  await rejectsUser(readJsonFile(path.join(dir, 'missing.json'), 'thing'), /^thing not found: .*missing\.json$/);
  fs.writeFileSync(path.join(dir, 'bad.json'), '{"x": ');
  await rejectsUser(readJsonFile(path.join(dir, 'bad.json'), 'thing'), /^thing is not valid JSON: .*bad\.json \(/);
});

function input(step: number, scale = 1): SaveCheckpointInput {
  const w = sampleTensors();
  (w['embed.weight']!.data as Float32Array).forEach((v, i, a) => (a[i] = v * scale));
  return {
    config: { preset: 'tiny', width: 16, layers: 2 },
    tokenizer: new WordTokenizer(['a', 'red', 'circle']).toJSON(),
    state: { step, seed: 1, rng: [1, 2, 3, 4] },
    weights: w,
    optimizer: { 'm.embed.weight': { dtype: 'F32', shape: [2], data: Float32Array.of(scale, -scale) } },
  };
}

test('checkpoint: save/load round-trip, info, optimizer on request', async () => {
  const dir = path.join(tmpDir(), 'nested', 'ckpt');
  await saveCheckpoint(dir, input(10));
  const loaded = await loadCheckpoint(dir);
  assert.deepEqual(loaded.config, { preset: 'tiny', width: 16, layers: 2 });
  assert.deepEqual(loaded.state, { step: 10, seed: 1, rng: [1, 2, 3, 4] });
  assert.deepEqual(WordTokenizer.fromJSON(loaded.tokenizer).vocab, new WordTokenizer(['a', 'red', 'circle']).vocab);
  assertTensorsEqual(loaded.weights, sampleTensors());
  assert.equal(loaded.optimizer, undefined);
  const withOpt = await loadCheckpoint(dir, { withOptimizer: true });
  assert.deepEqual(Array.from(withOpt.optimizer!['m.embed.weight']!.data as Float32Array), [1, -1]);
  const info = await readCheckpointInfo(dir);
  assert.equal(info.step, 10);
  assert.equal(info.files.weights.name, 'model-10.safetensors');
  assert.equal(info.files.optimizer!.name, 'optimizer-10.safetensors');
  assert.equal(info.files.weights.bytes, fs.statSync(path.join(dir, 'model-10.safetensors')).size);
  assert.equal(info.parameterCount, 12 + 1 + 4 + 3 + 0);
  assert.deepEqual(fs.readdirSync(dir).sort(), ['checkpoint.json', 'model-10.safetensors', 'optimizer-10.safetensors']);

  // A newer save supersedes and removes the old files; saving the same step twice never
  // overwrites a file the live checkpoint.json references.
  await saveCheckpoint(dir, input(20, 2));
  assert.deepEqual(fs.readdirSync(dir).sort(), ['checkpoint.json', 'model-20.safetensors', 'optimizer-20.safetensors']);
  await saveCheckpoint(dir, input(20, 3));
  assert.deepEqual(fs.readdirSync(dir).sort(), [
    'checkpoint.json',
    'model-20-r1.safetensors',
    'optimizer-20-r1.safetensors',
  ]);
  const l3 = await loadCheckpoint(dir);
  assert.equal((l3.weights['embed.weight']!.data as Float32Array)[0], -2.25 * 3);
  // Without an optimizer.
  const { optimizer: _drop, ...noOpt } = input(30);
  await saveCheckpoint(dir, noOpt);
  assert.deepEqual(fs.readdirSync(dir).sort(), ['checkpoint.json', 'model-30.safetensors']);
  assert.equal((await loadCheckpoint(dir, { withOptimizer: true })).optimizer, undefined);
});

test('checkpoint: a crash between writing the weights and checkpoint.json leaves the old one loadable', async () => {
  const dir = tmpDir();
  await saveCheckpoint(dir, input(100));
  // Simulate a save of step 200 killed after its data files were written (one complete, one
  // half-written temp file) but before checkpoint.json was replaced.
  await writeSafetensors(path.join(dir, 'model-200.safetensors'), input(200, 5).weights);
  fs.writeFileSync(path.join(dir, '.optimizer-200.safetensors.12345.deadbeef.tmp'), Buffer.alloc(10));
  fs.writeFileSync(path.join(dir, '.checkpoint.json.12345.cafef00d.tmp'), '{"format": "rediff-chec');
  const loaded = await loadCheckpoint(dir, { withOptimizer: true });
  assert.equal(loaded.state.step, 100);
  assertTensorsEqual(loaded.weights, sampleTensors());
  assert.ok(loaded.optimizer);
  // The next successful save cleans up the leftovers.
  await saveCheckpoint(dir, input(300));
  assert.deepEqual(fs.readdirSync(dir).sort(), [
    'checkpoint.json',
    'model-300.safetensors',
    'optimizer-300.safetensors',
  ]);

  // Killed after checkpoint.json was replaced but before cleanup: the new one loads.
  fs.copyFileSync(path.join(dir, 'model-300.safetensors'), path.join(dir, 'model-250.safetensors'));
  assert.equal((await loadCheckpoint(dir)).state.step, 300);
});

test('checkpoint: clear UserErrors naming the file', async () => {
  const root = tmpDir();
  await rejectsUser(loadCheckpoint(path.join(root, 'nope')), /^checkpoint not found: .*nope$/);
  fs.mkdirSync(path.join(root, 'emptydir'));
  await rejectsUser(
    loadCheckpoint(path.join(root, 'emptydir')),
    /not a rediff checkpoint: .*emptydir \(no checkpoint\.json/,
  );
  const dir = path.join(root, 'c');
  await saveCheckpoint(dir, input(5));
  const manifestPath = path.join(dir, 'checkpoint.json');
  const manifest = fs.readFileSync(manifestPath, 'utf8');

  // Garbled checkpoint.json.
  fs.writeFileSync(manifestPath, manifest.slice(0, 40));
  await rejectsUser(loadCheckpoint(dir), /checkpoint config is not valid JSON: .*checkpoint\.json/);
  await rejectsUser(readCheckpointInfo(dir), /checkpoint\.json/);
  fs.writeFileSync(manifestPath, '{"format": "something-else"}');
  await rejectsUser(loadCheckpoint(dir), /checkpoint\.json: not a rediff checkpoint/);
  fs.writeFileSync(manifestPath, manifest);

  // Truncated weights.
  const weights = path.join(dir, 'model-5.safetensors');
  const good = fs.readFileSync(weights);
  fs.writeFileSync(weights, good.subarray(0, good.length - 16));
  await rejectsUser(loadCheckpoint(dir), /model-5\.safetensors is truncated: \d+ bytes, checkpoint\.json says \d+/);
  await rejectsUser(readCheckpointInfo(dir), /model-5\.safetensors is truncated/);

  // Same size, flipped byte: hash mismatch.
  const flipped = Buffer.from(good);
  flipped[flipped.length - 1]! ^= 0xff;
  fs.writeFileSync(weights, flipped);
  await rejectsUser(loadCheckpoint(dir), /model-5\.safetensors is corrupt: its sha256 does not match/);

  // Missing weights file.
  fs.rmSync(weights);
  await rejectsUser(loadCheckpoint(dir), /checkpoint file missing: .*model-5\.safetensors/);
  fs.writeFileSync(weights, good);
  await loadCheckpoint(dir);

  // Corrupt optimizer only matters when asked for.
  const opt = path.join(dir, 'optimizer-5.safetensors');
  fs.writeFileSync(opt, Buffer.alloc(3));
  await loadCheckpoint(dir);
  await rejectsUser(loadCheckpoint(dir, { withOptimizer: true }), /optimizer-5\.safetensors is truncated/);
});

test('assertConfigMatches lists every differing key', () => {
  assertConfigMatches({ a: 1, b: { c: [1, 2] } }, { b: { c: [1, 2] }, a: 1 }, 'x/checkpoint.json');
  assert.throws(
    () =>
      assertConfigMatches(
        { width: 128, layers: 4, vision: { patch: 8 }, extra: true },
        { width: 64, layers: 4, vision: { patch: 4 } },
        'x/checkpoint.json',
      ),
    (err: unknown) => {
      assert.ok(err instanceof UserError);
      assert.match(err.message, /^x\/checkpoint\.json: config does not match the model: /);
      assert.match(err.message, /extra: expected true, found \(absent\)/);
      assert.match(err.message, /vision\.patch: expected 8, found 4/);
      assert.match(err.message, /width: expected 128, found 64/);
      assert.doesNotMatch(err.message, /layers/);
      return true;
    },
  );
});

test('checkpoint: a process SIGKILLed while saving leaves a loadable checkpoint', async () => {
  const dir = tmpDir();
  const moduleUrl = new URL('../src/checkpoint/checkpoint.js', import.meta.url).href;
  // The child saves 4 MB checkpoints in a loop and reports each completed save.
  const script = `
    const { saveCheckpoint } = await import(${JSON.stringify(moduleUrl)});
    const w = new Float32Array(1 << 20);
    for (let step = 1; ; step++) {
      w.fill(step);
      await saveCheckpoint(${JSON.stringify(dir)}, { config: { n: 1 }, tokenizer: null, state: { step },
        weights: { w: { dtype: 'F32', shape: [w.length], data: w } } });
      process.stdout.write('saved ' + step + '\\n');
    }`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: path.dirname(path.dirname(fileURLToPath(import.meta.url))),
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`child exited early (${code})`)));
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (/saved 3\n/.test(out)) {
        child.removeAllListeners('exit');
        setTimeout(() => {
          child.kill('SIGKILL');
          child.on('exit', () => resolve());
        }, 7);
      }
    });
  });
  const loaded = await loadCheckpoint(dir);
  const step = loaded.state.step as number;
  assert.ok(step >= 3, `step ${step}`);
  const w = loaded.weights.w!.data as Float32Array;
  assert.equal(w.length, 1 << 20);
  assert.ok(
    w.every((v) => v === step),
    'weights belong to the recorded step',
  );
});
