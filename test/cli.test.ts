import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { benchmarkTokenizer } from '../src/benchmark/captioner.js';
import { presetConfig } from '../src/model/config.js';
import { saveModel } from '../src/model/io.js';
import { initParams } from '../src/model/params.js';

import { rediff } from './helpers/cli.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rediff-cli-'));
const ckpt = path.join(tmp, 'model');
const tokenizer = benchmarkTokenizer();
const config = presetConfig('tiny', tokenizer.size);

test('setup: a tiny checkpoint and a real image', async () => {
  await saveModel(ckpt, {
    config,
    tokenizer,
    params: initParams(config, 0),
    state: { step: 0, prompt: 'describe the image in detail .' },
  });
  const { code } = await rediff(
    'data',
    'make',
    '--split',
    'val',
    '--n',
    '2',
    '--out',
    path.join(tmp, 'val'),
    '--no-progress',
  );
  assert.equal(code, 0);
});

/** One readable line on stderr, no stack trace, non-zero exit. */
function assertCleanFailure(r: { code: number; stderr: string }, pattern: RegExp): void {
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, pattern);
  assert.doesNotMatch(r.stderr, /\n\s+at /, `no stack trace:\n${r.stderr}`);
}

const image = (): string => path.join(tmp, 'val', 'images', fs.readdirSync(path.join(tmp, 'val', 'images'))[0]!);

test('generate captions an image and prints a trace (with a K/V cache)', async () => {
  const r = await rediff(
    'generate',
    '--checkpoint',
    ckpt,
    '--image',
    image(),
    '--tokens-per-step',
    '8',
    '--trace',
    '--no-color',
    '--cache',
    'prefix',
  );
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /step +1: /);
  assert.match(r.stdout, /\.png: /);
});

const failures: [string, string[], RegExp][] = [
  [
    'negative steps',
    ['generate', '--checkpoint', ckpt, '--image', 'x.png', '--steps', '-3'],
    /--steps takes a whole number/,
  ],
  [
    'tokens per step that do not divide L',
    ['generate', '--checkpoint', ckpt, '--image', '__IMAGE__', '--tokens-per-step', '5'],
    /tokens per step 5 .*divides the generation length 96/,
  ],
  [
    'an unknown preset',
    ['train', '--preset', 'huge', '--out', path.join(tmp, 'x')],
    /--preset must be one of tiny, small, base/,
  ],
  [
    'an unknown cache mode',
    ['generate', '--checkpoint', ckpt, '--image', 'x.png', '--cache', 'warm'],
    /--cache must be one of none, prefix, dual, got "warm"/,
  ],
  [
    'an unknown sampler',
    ['generate', '--checkpoint', ckpt, '--image', 'x.png', '--sampler', 'greedy'],
    /--sampler must be one of/,
  ],
  ['a missing checkpoint', ['generate', '--checkpoint', path.join(tmp, 'nope'), '--image', 'x.png'], /nope/],
  [
    'a missing image',
    ['generate', '--checkpoint', ckpt, '--image', path.join(tmp, 'missing.png')],
    /image not found: .*missing\.png/,
  ],
  [
    'a file that is not an image',
    ['generate', '--checkpoint', ckpt, '--image', '__TEXT__'],
    /not a readable image: .*notes\.txt/,
  ],
  ['an unknown flag', ['eval', '--bogus'], /unknown option '--bogus'/],
  [
    'the oracle and a checkpoint',
    ['eval', '--oracle', '--checkpoint', ckpt],
    /give --checkpoint \(and --tokenizer\) or --oracle, not both/,
  ],
  ['the oracle with a cache', ['eval', '--oracle', '--cache', 'dual'], /the oracle decodes without a K\/V cache/],
  [
    'the oracle with no captions',
    ['eval', '--oracle', '--oracle-captions', '0'],
    /--oracle-captions takes a whole number >= 1/,
  ],
  ['repair without a drafter', ['repair'], /required option '--drafter <dir>'/],
  ['repair with a missing drafter', ['repair', '--drafter', path.join(tmp, 'nope')], /checkpoint not found: .*nope/],
  ['a negative request timeout', ['serve', '--request-timeout', '-1'], /--request-timeout takes a number >= 0/],
  ['a zero pixel limit', ['serve', '--max-pixels', '0'], /--max-pixels takes a whole number >= 1/],
  [
    'a zero line limit',
    ['train', '--max-line-bytes', '0', '--out', path.join(tmp, 'x')],
    /--max-line-bytes takes a whole number >= 1/,
  ],
  ['repair on one scene', ['repair', '--drafter', ckpt, '--scenes', '1'], /--scenes takes a whole number >= 2/],
];

for (const [name, args, pattern] of failures) {
  test(`bad input gets one clear line and a non-zero exit: ${name}`, async () => {
    fs.writeFileSync(path.join(tmp, 'notes.txt'), 'hello');
    const resolved = args.map((a) =>
      a === '__IMAGE__' ? image() : a === '__TEXT__' ? path.join(tmp, 'notes.txt') : a,
    );
    assertCleanFailure(await rediff(...resolved), pattern);
  });
}

test('a truncated checkpoint fails with a message naming the file', async () => {
  const broken = path.join(tmp, 'broken');
  fs.cpSync(ckpt, broken, { recursive: true });
  const weights = fs.readdirSync(broken).find((f) => f.startsWith('model-'))!;
  const file = path.join(broken, weights);
  fs.truncateSync(file, Math.floor(fs.statSync(file).size / 2));
  assertCleanFailure(
    await rediff('generate', '--checkpoint', broken, '--image', image()),
    new RegExp(weights.replace('.', '\\.')),
  );
});

test('reproduce --notes: a file that cannot be read fails at once, naming it, before any work', async () => {
  const out = path.join(tmp, 'study-notes');
  const notes = path.join(tmp, 'no-such-notes.md');
  assertCleanFailure(
    await rediff('reproduce', '--preset', 'quick', '--out', out, '--notes', notes, '--no-progress'),
    new RegExp(`--notes: cannot read .*no-such-notes\\.md`),
  );
  assert.equal(fs.existsSync(out), false, 'nothing was started');
});

test('info describes a checkpoint', async () => {
  const r = await rediff('info', ckpt);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /parameters\s+[\d,]+/);
});

test('diagnose: the loss with the right and a shuffled image; a model without a probe reports none', async () => {
  const r = await rediff('diagnose', '--checkpoint', ckpt, '--scenes', '4');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /caption loss on 4 val scenes: right image \d+\.\d+, shuffled image \d+\.\d+/);
  assert.doesNotMatch(r.stdout, /vision probe/);
  assertCleanFailure(await rediff('diagnose', '--checkpoint', ckpt, '--scenes', '1'), /--scenes/);
});

test('repair measures the fixture drafter and an untrained model on its own corrected drafts', async () => {
  const fixture = path.resolve('test/fixtures/tiny-stage1');
  const r = await rediff(
    'repair',
    '--drafter',
    fixture,
    '--checkpoints',
    `${fixture},${ckpt}`,
    '--scenes',
    '8',
    '--tokens-per-step',
    '2',
  );
  assert.equal(r.code, 0, r.stderr);
  const usable = Number(/^(\d+) of 8 drafts/m.exec(r.stdout)?.[1]);
  assert.ok(usable >= 4, r.stdout);
  // One row per checkpoint: name, corrected tokens, three percentages.
  const rows = r.stdout
    .trim()
    .split('\n')
    .slice(2)
    .map((l) => l.trim().split(/\s+/));
  assert.equal(rows.length, 2, r.stdout);
  for (const row of rows) {
    assert.ok(Number(row[1]) > 0, r.stdout);
    for (const v of row.slice(2)) assert.ok(Number(v) >= 0 && Number(v) <= 100, r.stdout);
  }
  // The fixture keeps most of its own text; an untrained model rewrites it.
  assert.ok(Number(rows[0]![4]) > Number(rows[1]![4]), r.stdout);
});

test('train --llava: words outside the vocabulary are file:line issues unless --allow-unk; loss told', async () => {
  const dir = path.join(tmp, 'llava');
  fs.mkdirSync(dir, { recursive: true });
  const img = path.join(dir, 'a.png');
  fs.copyFileSync(image(), img);
  const turn = (prompt: string, caption: string) =>
    JSON.stringify({
      image: 'a.png',
      conversations: [
        { from: 'human', value: `<image>\n${prompt}` },
        { from: 'gpt', value: caption },
      ],
    });
  const file = path.join(dir, 'mine.jsonl');
  fs.writeFileSync(
    file,
    [
      turn('Describe the image in detail.', 'There is one shape. A small red circle is in the center.'),
      turn('Describe the image in detail.', 'There is one zebra. A small red circle is in the center.'),
      turn('Describe this photo in detail.', 'There is one shape. A small red circle is in the center.'),
    ].join('\n') + '\n',
  );
  let runs = 0;
  const train = (...extra: string[]) =>
    rediff(
      'train',
      '--preset',
      'tiny',
      '--stage',
      'revision',
      '--llava',
      file,
      '--steps',
      '2',
      '--warmup',
      '1',
      '--batch-size',
      '2',
      '--out',
      path.join(tmp, `unk-run-${++runs}`),
      '--no-progress',
      ...extra,
    );
  assertCleanFailure(
    await train(),
    new RegExp(`${file.replace(/[.]/g, '\\.')}:2: caption has 1 word\\(s\\) outside the vocabulary: "zebra"`),
  );
  const skipped = await train('--on-error', 'skip');
  assert.equal(skipped.code, 0, skipped.stderr);
  assert.match(skipped.stderr, /mine\.jsonl:2: caption .*"zebra" \(skipped\)/);
  assert.match(
    skipped.stderr,
    /mine\.jsonl:3: prompt has 2 word\(s\) outside the vocabulary: "this", "photo" \(skipped\)/,
  );
  const allowed = await train('--allow-unk');
  assert.equal(allowed.code, 0, allowed.stderr);
  assert.doesNotMatch(allowed.stderr, /outside the vocabulary/);
  assert.match(allowed.stderr, /note: the revision loss is, per sample, 1\/p .* follow its trend, not its size/);
});

test('eval --oracle prints a row per setting and writes its records', async () => {
  const out = path.join(tmp, 'oracle.jsonl');
  const r = await rediff(
    'eval',
    '--oracle',
    '--scenes',
    '3',
    '--oracle-captions',
    '50',
    '--tokens-per-step',
    '4',
    '--samplers',
    'llada,rediff',
    '--out',
    out,
    '--no-progress',
  );
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /llada 4 tok\/step/);
  assert.match(r.stdout, /rediff 4 tok\/step/);
  assert.match(r.stdout, /oracle: 50 captions drawn per scene/);
  const records = fs
    .readFileSync(out, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { caption: string });
  assert.equal(records.length, 6);
  assert.ok(records.every((x) => x.caption.length > 0));
});
