import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { generateBenchmarkSplit } from '../src/data/training-data.js';
import { renderScenePng } from '../src/benchmark/render.js';
import { type Received, startServer } from './helpers/chat-server.js';
import { TINY_STAGE1_DIR } from './fixtures/tiny-stage1.js';
import { rediff, rediffWith } from './helpers/cli.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rediff-stage2-llava-'));

/** The user's own data: three JPEGs (128 px) and a LLaVA-style conversations file. */
async function userData(): Promise<{ file: string; images: string[]; prompt: string }> {
  const split = generateBenchmarkSplit('val', 3, 3, 128);
  const prompt = 'describe the image in detail .';
  const images: string[] = [];
  const lines: string[] = [];
  for (const [i, r] of split.records.entries()) {
    const image = path.join(tmp, `photo-${i}.jpg`);
    fs.writeFileSync(image, await sharp(renderScenePng(r.scene, 128).png).jpeg().toBuffer());
    images.push(image);
    lines.push(
      JSON.stringify({
        id: `u${i}`,
        image: path.basename(image),
        conversations: [
          { from: 'human', value: `<image>\n${prompt}` },
          { from: 'gpt', value: r.captions[0] },
        ],
      }),
    );
  }
  const file = path.join(tmp, 'mine.jsonl');
  fs.writeFileSync(file, lines.join('\n') + '\n');
  return { file, images, prompt };
}

/** `rediff train --stage self-correct` from the tiny Stage I model, on your LLaVA-style data file. */
const selfCorrectOn = (file: string): string[] => [
  'train',
  '--stage',
  'self-correct',
  '--init',
  TINY_STAGE1_DIR,
  '--llava',
  file,
];

/** Swaps the draft's first two words when both are plain words (a same-length, unique-enough edit). */
function swapFirstWords(r: Received): string {
  const words = r.draft.split(' ');
  const [a, b] = [words[0]?.toLowerCase(), words[1]?.toLowerCase()];
  if (!a || !b || a === b || !/^[a-z]+$/.test(a) || !/^[a-z]+$/.test(b)) return 'right';
  return JSON.stringify([{ org: `${a} ${b}`, target: `${b} ${a}` }]);
}

test('Stage II on your LLaVA-style data: drafts of your images reviewed by an LLM expert that sees them', async () => {
  const { file, images, prompt } = await userData();
  const server = await startServer((r) => ({ content: swapFirstWords(r) }));
  const out = path.join(tmp, 'stage2');
  try {
    const args = [
      ...selfCorrectOn(file),
      '--expert',
      'llm',
      '--expert-url',
      server.baseUrl,
      '--expert-model',
      'test-model',
      '--rounds',
      '1',
      '--draft-images',
      '3',
      '--draft-tokens-per-step',
      '8',
      '--steps',
      '10',
      '--warmup',
      '2',
      '--batch-size',
      '4',
      '--checkpoint-every',
      '10',
      '--out',
      out,
      '--no-progress',
    ];
    const env = { REDIFF_EXPERT_API_KEY: 'k-test' };
    const res = await rediffWith(env, ...args);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /round 1: 3 drafts/);

    // One request per image, each with the user's image (as PNG, at its own 128 px), the question and the model name.
    assert.equal(server.received.length, 3);
    for (const r of server.received) {
      assert.equal(r.body.model, 'test-model');
      assert.equal(r.headers.authorization, 'Bearer k-test');
      const parts = r.body.messages.find((m) => m.role === 'user')!.content as Array<{
        type: string;
        text?: string;
        image_url?: { url: string };
      }>;
      assert.match(parts.find((p) => p.type === 'text')!.text!, new RegExp(`Question: ${prompt.replace('.', '\\.')}`));
      const url = parts.find((p) => p.type === 'image_url')!.image_url!.url;
      assert.match(url, /^data:image\/png;base64,/);
      const meta = await sharp(Buffer.from(url.split(',')[1]!, 'base64')).metadata();
      assert.deepEqual([meta.format, meta.width, meta.height], ['png', 128, 128]);
    }
    // The drafts name the user's images; the kept pairs were trained on.
    const drafts = fs
      .readFileSync(path.join(out, 'round-1', 'drafts.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { imageId: string });
    assert.deepEqual(drafts.map((d) => d.imageId).sort(), [...images].sort());
    const report = JSON.parse(fs.readFileSync(path.join(out, 'round-1', 'report.json'), 'utf8')) as {
      reviews: { answers: number };
      trainingPairs: number;
    };
    assert.equal(report.reviews.answers, 3);
    assert.ok(report.trainingPairs >= 1, JSON.stringify(report));
    assert.ok(fs.existsSync(path.join(out, 'checkpoint.json')));

    // A rerun asks the expert nothing again.
    assert.equal((await rediffWith(env, ...args)).code, 0);
    assert.equal(server.received.length, 3);
  } finally {
    await server.close();
  }
});

test('Stage II on your own data refuses the grounded expert, which needs scene graphs', async () => {
  const { file } = await userData();
  const r = await rediff(...selfCorrectOn(file), '--out', path.join(tmp, 'x'));
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /^rediff: the grounded expert checks drafts against benchmark scene graphs; with --llava use --expert llm/,
  );
  assert.ok(!fs.existsSync(path.join(tmp, 'x')), 'nothing written');
});

test('Stage II on a benchmark split on disk (--data), with the grounded expert', async () => {
  const data = path.join(tmp, 'train');
  const out = path.join(tmp, 'stage2-data');
  const made = await rediff('data', 'make', '--split', 'train', '--n', '8', '--out', data, '--no-progress');
  assert.equal(made.code, 0, made.stderr);
  const res = await rediff(
    'train',
    '--stage',
    'self-correct',
    '--init',
    TINY_STAGE1_DIR,
    '--data',
    data,
    '--draft-images',
    '8',
    '--draft-tokens-per-step',
    '4',
    '--steps',
    '5',
    '--warmup',
    '1',
    '--batch-size',
    '4',
    '--checkpoint-every',
    '5',
    '--out',
    out,
    '--no-progress',
  );
  assert.equal(res.code, 0, res.stderr);
  assert.match(res.stdout, /round 1: 8 drafts/);
  const scenes = fs
    .readFileSync(path.join(data, 'data.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => (JSON.parse(l) as { id: string }).id);
  const drafts = fs
    .readFileSync(path.join(out, 'round-1', 'drafts.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { imageId: string });
  assert.equal(drafts.length, 8);
  assert.deepEqual(drafts.map((d) => d.imageId).sort(), [...scenes].sort());
  assert.ok(fs.existsSync(path.join(out, 'checkpoint.json')));
});

test('Stage II stops with one line naming the cause when the expert fails on too many drafts', async () => {
  const { file } = await userData();
  const key = 'sk-wrong-0123456789abcdef';
  const env = { REDIFF_EXPERT_API_KEY: key };
  const common = [
    ...selfCorrectOn(file),
    '--expert',
    'llm',
    '--expert-model',
    'test-model',
    '--rounds',
    '1',
    '--draft-images',
    '3',
    '--draft-tokens-per-step',
    '8',
    '--steps',
    '4',
    '--warmup',
    '1',
    '--batch-size',
    '4',
    '--checkpoint-every',
    '4',
    '--no-progress',
  ];
  const fails = (args: string[]) => rediffWith(env, ...args);

  // A wrong key: every request is a 401 that echoes it.
  const wrongKey = await startServer((r) => ({
    status: 401,
    rawBody: JSON.stringify({ error: { message: `Incorrect API key provided: ${String(r.headers.authorization)}` } }),
  }));
  const out = path.join(tmp, 'stage2-401');
  try {
    const r = await fails([...common, '--expert-url', wrongKey.baseUrl, '--out', out]);
    assert.equal(r.code, 1);
    // One error line (the notes printed when training starts are not errors).
    const lines = r.stderr
      .trim()
      .split('\n')
      .filter((l) => !l.startsWith('note: '));
    assert.equal(lines.length, 1, r.stderr);
    assert.match(
      lines[0]!,
      new RegExp(
        String.raw`^rediff: round 1: the expert llm:test-model failed on 3 of 3 drafts ` +
          String.raw`.*HTTP 401: Incorrect API key provided: Bearer \[REDACTED\].*rerun$`,
      ),
    );
    assert.ok(!r.stderr.includes('0123456789abcdef'));
    assert.ok(!fs.existsSync(path.join(out, 'checkpoint.json')), 'no model written');
    assert.ok(!fs.readFileSync(path.join(out, 'round-1', 'reviews.jsonl'), 'utf8').includes('0123456789abcdef'));
  } finally {
    await wrongKey.close();
  }

  // One failure in three: over a 20% allowance it stops; within the default 50% the rerun
  // asks only the failed draft again and trains.
  const flaky = await startServer((r, n) =>
    n === 1
      ? { status: 400, rawBody: '{"error":{"message":"image could not be processed"}}' }
      : { content: swapFirstWords(r) },
  );
  const out2 = path.join(tmp, 'stage2-flaky');
  try {
    const r = await fails([
      ...common,
      '--expert-url',
      flaky.baseUrl,
      '--expert-concurrency',
      '1',
      '--max-expert-failures',
      '0.2',
      '--out',
      out2,
    ]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr
        .split('\n')
        .filter((l) => !l.startsWith('note: '))
        .join('\n'),
      new RegExp(
        String.raw`^rediff: round 1: the expert llm:test-model failed on 1 of 3 drafts ` +
          String.raw`\(33%; at most 20% allowed.*HTTP 400: image could not be processed`,
      ),
    );
    const ok = await rediffWith(env, ...common, '--expert-url', flaky.baseUrl, '--out', out2);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /round 1: 3 drafts/);
    assert.equal(flaky.received.length, 4, 'only the failed draft was asked again');
    assert.ok(fs.existsSync(path.join(out2, 'checkpoint.json')));
  } finally {
    await flaky.close();
  }
});
