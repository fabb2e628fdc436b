import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { UserError } from '../src/util/errors.js';
import { makeRecord, sceneSeed, splitBlock } from '../src/benchmark/dataset.js';
import { checkSplitsDisjoint, makeSplit, readSplit } from '../src/data/benchmark-split.js';
import { renderScene, renderScenePng } from '../src/benchmark/render.js';
import { scoreCaption } from '../src/benchmark/metrics.js';
import { loadLlavaJsonl, loadVicritJsonl } from '../src/data/datasets.js';
import { IssueLog, formatIssue, readJsonl } from '../src/data/jsonl.js';
import { readBenchmarkSplit, readUserData } from '../src/data/training-data.js';
import { benchmarkTokenizer } from '../src/benchmark/captioner.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rediff-datasets-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('split seeds: disjoint blocks by construction, injective within a split', () => {
  assert.deepEqual(['train', 'val', 'test'].map(splitBlock), [0, 1, 2]);
  assert.ok(splitBlock('holdout') >= 3 && splitBlock('holdout') < 16);
  const blockOf = (s: number): number => Math.floor(s / 2 ** 28);
  for (const seed of [0, 1, 12345, 0xffffffff]) {
    const seen = new Set<number>();
    for (const split of ['train', 'val', 'test']) {
      for (let i = 0; i < 2000; i++) {
        const s = sceneSeed(split, seed, i);
        assert.equal(blockOf(s), splitBlock(split));
        assert.ok(!seen.has(s));
        seen.add(s);
      }
    }
  }
  // Different seeds per split still cannot collide: the block differs.
  assert.notEqual(blockOf(sceneSeed('train', 1, 0)), blockOf(sceneSeed('val', 2, 0)));
});

test('makeSplit: writes images + data.jsonl, same seed gives the same bytes, reads back', async () => {
  const a = path.join(tmp, 'a', 'train');
  const b = path.join(tmp, 'b', 'train');
  let progress = 0;
  const t0 = performance.now();
  const ra = await makeSplit({ split: 'train', n: 40, seed: 3, out: a, onProgress: (d) => (progress = d) });
  const ms = performance.now() - t0;
  await makeSplit({ split: 'train', n: 40, seed: 3, out: b });
  assert.equal(progress, 40);
  assert.equal(ra.scenes, 40);
  assert.equal(ra.captions, 120);
  assert.ok(ra.hallucinations >= 70);
  assert.ok(ms < 5000, `40 scenes took ${ms} ms`);
  assert.deepEqual(fs.readFileSync(path.join(a, 'data.jsonl')), fs.readFileSync(path.join(b, 'data.jsonl')));
  const imgs = fs.readdirSync(path.join(a, 'images')).sort();
  assert.equal(imgs.length, 40);
  for (const f of imgs)
    assert.deepEqual(fs.readFileSync(path.join(a, 'images', f)), fs.readFileSync(path.join(b, 'images', f)));
  const info = JSON.parse(fs.readFileSync(path.join(a, 'split.json'), 'utf8'));
  assert.equal(info.split, 'train');
  assert.equal(info.n, 40);

  const { records, issues } = await readSplit(a);
  assert.equal(issues.length, 0);
  assert.equal(records.length, 40);
  for (const r of records) {
    assert.ok(fs.existsSync(r.imagePath));
    for (const c of r.captions) assert.equal(scoreCaption(r.scene, c).factuality, 1);
    for (const h of r.hallucinations) assert.ok(scoreCaption(r.scene, h.changed_caption).factuality < 1);
  }
  // Rerunning into an existing split needs overwrite.
  await assert.rejects(makeSplit({ split: 'train', n: 5, seed: 3, out: a }), UserError);
  await makeSplit({ split: 'train', n: 5, seed: 3, out: a, overwrite: true });
  assert.equal(fs.readdirSync(path.join(a, 'images')).length, 5);
  // A record depends only on (split, seed, index): its image is the scene rendered.
  const { record, png } = makeRecord('train', 3, 2);
  assert.deepEqual(png, fs.readFileSync(path.join(b, record.image)));
  assert.equal(renderScene(record.scene).rgb.length, 64 * 64 * 3);
});

test('makeSplit: splits are disjoint and colliding siblings are refused', async () => {
  const root = path.join(tmp, 'splits');
  await makeSplit({ split: 'train', n: 30, seed: 1, out: path.join(root, 'train') });
  await makeSplit({ split: 'val', n: 30, seed: 1, out: path.join(root, 'val') });
  await makeSplit({ split: 'test', n: 30, seed: 2, out: path.join(root, 'test') });
  await checkSplitsDisjoint(['train', 'val', 'test'].map((s) => path.join(root, s)));
  // The same split name and seed again in a sibling directory shares every scene.
  await assert.rejects(
    makeSplit({ split: 'train', n: 10, seed: 1, out: path.join(root, 'train-copy') }),
    /shares 10 scene/,
  );
  assert.ok(!fs.existsSync(path.join(root, 'train-copy', 'data.jsonl')), 'no data.jsonl left behind');
  await assert.rejects(makeSplit({ split: 'bad name', n: 1, seed: 1, out: path.join(tmp, 'x') }), UserError);
  await assert.rejects(makeSplit({ split: 'train', n: 0, seed: 1, out: path.join(tmp, 'x') }), UserError);
});

test('readSplit: malformed line, missing image and unknown words are reported with file:line', async () => {
  const dir = path.join(tmp, 'broken');
  await makeSplit({ split: 'val', n: 6, seed: 9, out: dir, checkSiblings: false });
  const file = path.join(dir, 'data.jsonl');
  const lines = fs.readFileSync(file, 'utf8').trimEnd().split('\n');
  const rec2 = JSON.parse(lines[2]!);
  rec2.captions[0] = rec2.captions[0].replace(/\.$/, ' and a purple elephant.');
  lines[2] = JSON.stringify(rec2);
  lines[3] = lines[3]!.slice(0, 50); // cut-off JSON
  const rec4 = JSON.parse(lines[4]!);
  fs.rmSync(path.join(dir, rec4.image));
  lines.splice(1, 0, ''); // a blank line is not an error, but shifts the line numbers
  fs.writeFileSync(file, lines.join('\n') + '\n');
  await assert.rejects(
    readSplit(dir),
    (e: Error) =>
      e instanceof UserError &&
      e.message.startsWith(`${file}:4: caption 1 has 1 word(s) outside the vocabulary: "elephant"`),
  );
  const { records, issues } = await readSplit(dir, { onError: 'skip' });
  assert.equal(records.length, 3);
  assert.deepEqual(
    issues.map((i) => [i.line, i.message.split(' ')[0]]),
    [
      [4, 'caption'],
      [5, 'not'],
      [6, 'image'],
    ],
  );
  // A tampered scene graph is caught too.
  const rec0 = JSON.parse(lines[0]!);
  rec0.scene.objects[0].x = 0.99;
  fs.writeFileSync(file, JSON.stringify(rec0) + '\n');
  const again = await readSplit(dir, { onError: 'skip' });
  assert.equal(again.records.length, 0);
  assert.match(again.issues[0]!.message, /relations do not match|coordinates/);
});

test('LLaVA loader: conversations format, problems reported per line', async () => {
  const dir = path.join(tmp, 'llava');
  fs.mkdirSync(path.join(dir, 'img'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'img', 'a.png'), 'x');
  const conv = (caption: string) => [
    { from: 'human', value: '<image>\nDescribe the image in detail.' },
    { from: 'gpt', value: caption },
  ];
  const file = path.join(dir, 'train.jsonl');
  fs.writeFileSync(
    file,
    [
      JSON.stringify({
        id: 'ok',
        image: 'img/a.png',
        conversations: conv('There are two shapes. A small red circle is in the center.'),
      }),
      '{"id": "cut", "image": "img/a.png", "conv',
      JSON.stringify({ id: 'noimg', image: 'img/missing.png', conversations: conv('There are two shapes.') }),
      JSON.stringify({ id: 'oov', image: 'img/a.png', conversations: conv('There is a fluffy cat.') }),
      JSON.stringify({ id: 'nogpt', image: 'img/a.png', conversations: [{ from: 'human', value: '<image>' }] }),
      JSON.stringify([1, 2]),
    ].join('\n') + '\n',
  );
  const { records, issues } = await loadLlavaJsonl(file, { onError: 'skip' });
  assert.equal(records.length, 1);
  assert.equal(records[0]!.id, 'ok');
  assert.equal(records[0]!.prompt, 'Describe the image in detail.');
  assert.equal(records[0]!.image, path.join(dir, 'img', 'a.png'));
  assert.deepEqual(
    issues.map((i) => i.line),
    [2, 3, 4, 5, 6],
  );
  assert.match(issues[1]!.message, /image not found/);
  assert.match(issues[2]!.message, /"fluffy", "cat"/);
  await assert.rejects(
    loadLlavaJsonl(file),
    (e: Error) => e instanceof UserError && e.message.startsWith(`${file}:2: not valid JSON`),
  );
  // Without a vocabulary check, the out-of-vocabulary caption is fine.
  const open = await loadLlavaJsonl(file, { onError: 'skip', vocabulary: null });
  assert.equal(open.records.length, 2);
  // A JSON array is not JSON Lines.
  const arr = path.join(dir, 'array.json');
  fs.writeFileSync(arr, '[\n  {"a": 1}\n]\n');
  await assert.rejects(loadLlavaJsonl(arr, { onError: 'skip' }), /JSON array/);
  await assert.rejects(loadLlavaJsonl(path.join(dir, 'nope.jsonl')), /cannot read/);
});

test('ViCrit loader: pairs located by span, same-length only, ViCrit-Train field names', async () => {
  const file = path.join(tmp, 'vicrit.jsonl');
  const caption = 'There are two shapes. A small red circle is on the left.';
  fs.writeFileSync(
    file,
    [
      JSON.stringify({
        caption,
        changed_caption: caption.replace('red', 'blue'),
        span_original: 'red',
        span_changed: 'blue',
        type: 'color',
      }),
      JSON.stringify({
        original_caption: caption,
        changed_caption: caption.replace('on the left', 'at the top'),
        solution_original: 'on the left',
        solution_target: 'at the top',
      }),
      JSON.stringify({
        caption,
        changed_caption: caption.replace('small red', 'large'),
        span_original: 'small red',
        span_changed: 'large',
      }),
      JSON.stringify({
        caption,
        changed_caption: caption.replace('red', 'blue'),
        span_original: 'red',
        span_changed: 'green',
      }),
      JSON.stringify({ caption, changed_caption: caption }),
    ].join('\n'),
  );
  const { records, issues } = await loadVicritJsonl(file, { onError: 'skip' });
  assert.equal(records.length, 2);
  assert.equal(records[0]!.token_start, 7);
  assert.equal(records[0]!.type, 'color');
  assert.equal(records[1]!.token_start, 10);
  assert.equal(records[1]!.token_count, 3);
  assert.deepEqual(
    issues.map((i) => i.line),
    [3, 4, 5],
  );
  assert.match(issues[0]!.message, /token count/);
  assert.match(issues[1]!.message, /not found/);
  assert.match(issues[2]!.message, /needs string fields/);
  await assert.rejects(loadVicritJsonl(file), new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:3:`));
});

test('jsonl: IssueLog validates onError; readJsonl skips blank lines and a BOM', async () => {
  assert.throws(() => new IssueLog('ignore' as never), UserError);
  const f = path.join(tmp, 'bom.jsonl');
  fs.writeFileSync(f, '\uFEFF{"a":1}\n\n  \n{"a":2}\n"str"\n');
  const log = new IssueLog('skip');
  const rows = await readJsonl(f, log);
  assert.deepEqual(rows, [
    { line: 1, value: { a: 1 } },
    { line: 4, value: { a: 2 } },
  ]);
  assert.equal(log.issues[0]!.line, 5);
});

test('jsonl: a line over the limit is an issue at file:line (skip or fail); control characters escaped', async () => {
  const f = path.join(tmp, 'long.jsonl');
  const binary = '\u0001\u0002\u001b[31mred\u0000\u007f\u202e';
  fs.writeFileSync(
    f,
    [
      JSON.stringify({ a: 1 }),
      JSON.stringify({ a: 'x'.repeat(5000) }),
      binary,
      JSON.stringify({ a: 4 }),
      '{"a":5}\r',
    ].join('\n'),
  );
  const log = new IssueLog('skip');
  const rows = await readJsonl(f, log, { maxLineBytes: 1024 });
  assert.deepEqual(
    rows.map((r) => r.line),
    [1, 4, 5],
    'the lines around them are read; CRLF and a missing final newline are fine',
  );
  assert.deepEqual(
    log.issues.map((i) => i.line),
    [2, 3],
  );
  assert.match(formatIssue(log.issues[0]!), /long\.jsonl:2: line is longer than 1024 bytes \(5008 bytes/);
  const bad = formatIssue(log.issues[1]!);
  assert.match(bad, /long\.jsonl:3: not valid JSON/);
  assert.doesNotMatch(bad, /[\u0000-\u001f\u007f-\u009f\u202e]/, `raw control characters in ${JSON.stringify(bad)}`);
  assert.match(bad, /\\u001b/);
  await assert.rejects(
    readJsonl(f, new IssueLog('fail'), { maxLineBytes: 1024 }),
    (e: Error) => e instanceof UserError && /long\.jsonl:2: line is longer than 1024 bytes/.test(e.message),
  );
  // The default limit is 64 MiB.
  assert.equal((await readJsonl(f, new IssueLog('skip'))).length, 4);
});

test('an unreadable image named by a data file is an issue at file:line, skipped under onError skip', async () => {
  const tokenizer = benchmarkTokenizer();
  const dir = path.join(tmp, 'unreadable');
  fs.mkdirSync(dir, { recursive: true });
  const good = renderScenePng(makeRecord('train', 0, 0).record.scene, 64).png;
  fs.writeFileSync(path.join(dir, 'good.png'), good);
  fs.writeFileSync(path.join(dir, 'broken.png'), 'not a png at all');
  const conv = [
    { from: 'human', value: '<image>\ndescribe the image in detail .' },
    { from: 'gpt', value: 'There are two shapes.' },
  ];
  const file = path.join(dir, 'mine.jsonl');
  fs.writeFileSync(
    file,
    [
      { id: 'a', image: 'good.png' },
      { id: 'b', image: 'broken.png' },
      { id: 'c', image: 'broken.png' },
    ]
      .map((r) => JSON.stringify({ ...r, conversations: conv }))
      .join('\n') + '\n',
  );
  const data = await readUserData({ llava: file }, tokenizer, 64, { onError: 'skip', vocabulary: null });
  assert.equal(data.records.length, 1);
  assert.deepEqual(
    data.llava.map((r) => r.id),
    ['a'],
  );
  assert.deepEqual(
    data.issues.map((i) => i.line),
    [2, 3],
  );
  assert.match(formatIssue(data.issues[0]!), /mine\.jsonl:2: not a readable image: .*broken\.png/);
  await assert.rejects(
    readUserData({ llava: file }, tokenizer, 64, { onError: 'fail', vocabulary: null }),
    (e: Error) => e instanceof UserError && /mine\.jsonl:2: not a readable image: .*broken\.png/.test(e.message),
  );

  // The same in a benchmark split: the broken image's line is named and skipped.
  const split = path.join(tmp, 'split-unreadable');
  await makeSplit({ split: 'val', n: 3, seed: 0, out: split, checkSiblings: false });
  const victim = fs
    .readFileSync(path.join(split, 'data.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { image: string })[1]!;
  fs.writeFileSync(path.join(split, victim.image), 'garbage');
  const read = await readBenchmarkSplit(split, 64, 'skip');
  assert.equal(read.split.records.length, 2);
  assert.equal(read.issues.length, 1);
  assert.match(formatIssue(read.issues[0]!), /data\.jsonl:2: not a readable image/);
  await assert.rejects(readBenchmarkSplit(split, 64, 'fail'), /data\.jsonl:2: not a readable image/);
});
