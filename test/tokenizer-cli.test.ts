/**
 * A Hugging Face subword tokenizer from the command line, end to end: `rediff train --tokenizer`
 * trains a tiny model from scratch on LLaVA-style captions with words the benchmark's vocabulary
 * lacks, the checkpoint carries the tokenizer, `generate` captions with it, `export` ships it
 * and the shipped copy captions alike; `--tokenizer` elsewhere is checked against the
 * checkpoint's, and a resumed run must keep its tokenizer.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { BENCHMARK_PROMPT } from '../src/benchmark/captioner.js';
import { generateBenchmarkSplit } from '../src/data/training-data.js';
import { loadModelState } from '../src/model/io.js';
import type { ExportManifest } from '../src/model/export.js';
import { HuggingFaceTokenizer } from '../src/tokenizer/huggingface.js';
import { sameTokenizer } from '../src/tokenizer/file.js';
import { tokenizerFromJSON } from '../src/tokenizer/kinds.js';

const run = promisify(execFile);
const MAIN = path.resolve('src/cli/main.ts');

async function rediff(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', MAIN, ...args], {
      env: { ...process.env, NODE_NO_WARNINGS: '1' },
    });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

function assertCleanFailure(r: { code: number; stderr: string }, pattern: RegExp): void {
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, pattern);
  assert.doesNotMatch(r.stderr, /\n\s+at /, `no stack trace:\n${r.stderr}`);
}

/** A BERT-style WordPiece tokenizer.json: letters and word pieces, so any lower-case word is spelt. */
function wordPieceJson(words: readonly string[]): Record<string, unknown> {
  const letters = [...'abcdefghijklmnopqrstuvwxyz'];
  const specials = ['[PAD]', '[UNK]', '[SEP]', '[MASK]'];
  const tokens = [...specials, '.', ',', ...letters, ...letters.map((l) => `##${l}`), ...words];
  return {
    version: '1.0',
    added_tokens: specials.map((content, id) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, lowercase: true },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: null,
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: {
      type: 'WordPiece',
      unk_token: '[UNK]',
      continuing_subword_prefix: '##',
      max_input_chars_per_word: 100,
      vocab: Object.fromEntries(tokens.map((t, i) => [t, i])),
    },
  };
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rediff-tokenizer-cli-'));
const at = (...p: string[]): string => path.join(tmp, ...p);
const WORDS = ['the', 'image', 'describe', 'detail', 'zebra', 'giraffe', 'red', 'blue', 'near'];
const CAPTIONS = [
  'A zebra stands near a red circle.',
  'A giraffe grazes beside two blue squares, far from the zebra.',
  'Nothing but a striped zebra in the grass.',
];

test('setup: two tokenizer.json files, three images and a LLaVA caption file', async () => {
  fs.mkdirSync(at('tok'));
  fs.writeFileSync(at('tok', 'tokenizer.json'), JSON.stringify(wordPieceJson(WORDS)));
  fs.writeFileSync(at('other.json'), JSON.stringify(wordPieceJson(['another', 'vocabulary'])));
  const split = generateBenchmarkSplit('val', 0, CAPTIONS.length, 64);
  const lines: string[] = [];
  for (const [i, caption] of CAPTIONS.entries()) {
    await sharp(split.rgb[i]!, { raw: { width: 64, height: 64, channels: 3 } })
      .png()
      .toFile(at(`img${i}.png`));
    const conversations = [
      { from: 'human', value: '<image>\nDescribe the image in detail.' },
      { from: 'gpt', value: caption },
    ];
    lines.push(JSON.stringify({ id: String(i), image: `img${i}.png`, conversations }));
  }
  fs.writeFileSync(at('captions.jsonl'), lines.join('\n') + '\n');
});

const train = (...extra: string[]) =>
  rediff(
    'train',
    ...['--preset', 'tiny', '--stage', 'mask-prediction', '--llava', at('captions.jsonl')],
    ...['--steps', '4', '--batch-size', '2', '--warmup', '1', '--checkpoint-every', '4', '--no-progress'],
    ...extra,
  );

test('train --tokenizer trains from scratch on captions the word vocabulary cannot read', async () => {
  // Without it, the benchmark's words refuse the captions.
  assertCleanFailure(await train('--out', at('refused')), /captions\.jsonl:1: .*outside the vocabulary: "zebra"/);
  assertCleanFailure(await train('--out', at('missing'), '--tokenizer', at('nope.json')), /tokenizer not found/);
  assert.equal(fs.existsSync(at('missing')), false, 'nothing written');

  const r = await train('--out', at('ck'), '--tokenizer', at('tok'));
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /done: loss/);
  assert.match(r.stdout, /no benchmark measurement: the model has its own tokenizer/);
  const saved = await loadModelState(at('ck'));
  const tokenizer = await HuggingFaceTokenizer.load(at('tok', 'tokenizer.json'));
  assert.ok(saved.tokenizer instanceof HuggingFaceTokenizer, 'the checkpoint carries the Hugging Face tokenizer');
  assert.ok(sameTokenizer(saved.tokenizer, tokenizer));
  assert.equal(saved.config.vocabSize, tokenizer.size);
  assert.deepEqual(saved.tokenizer.encode('zebra'), tokenizer.encode('zebra'));

  // A resumed run keeps its tokenizer.
  assertCleanFailure(
    await train('--out', at('ck'), '--resume', '--tokenizer', at('other.json')),
    /the run being resumed has another tokenizer/,
  );
});

test('generate and export use the checkpoint tokenizer; --tokenizer is checked against it', async () => {
  const generate = (dir: string, ...extra: string[]) =>
    rediff('generate', '--checkpoint', dir, '--image', at('img0.png'), '--tokens-per-step', '8', '--json', ...extra);
  const first = await generate(at('ck'));
  assert.equal(first.code, 0, first.stderr);
  const caption = JSON.parse(first.stdout) as { caption: string; steps: number };
  assert.equal(typeof caption.caption, 'string');
  assert.ok(caption.steps >= 1 && caption.steps <= 12, '96 positions at 8 per step');
  const checked = await generate(at('ck'), '--tokenizer', at('tok', 'tokenizer.json'));
  assert.equal(checked.stdout, first.stdout, 'the matching tokenizer changes nothing');
  assertCleanFailure(await generate(at('ck'), '--tokenizer', at('other.json')), /was trained with another tokenizer/);

  const exported = await rediff('export', '--checkpoint', at('ck'), '--out', at('shipped'), '--tokenizer', at('tok'));
  assert.equal(exported.code, 0, exported.stderr);
  const manifest = JSON.parse(fs.readFileSync(at('shipped', 'onnx', 'model.json'), 'utf8')) as ExportManifest;
  const original = (await loadModelState(at('ck'))).tokenizer;
  assert.ok(sameTokenizer(tokenizerFromJSON(manifest.tokenizer), original), 'the ONNX manifest carries it');
  assert.deepEqual(manifest.promptIds, original.encode(BENCHMARK_PROMPT));
  assert.ok(sameTokenizer((await loadModelState(at('shipped'))).tokenizer, original));
  assert.equal((await generate(at('shipped'))).stdout, first.stdout, 'the shipped copy captions alike');
});

test('data make --tokenizer reports how the benchmark captions read in its tokens', async () => {
  const r = await rediff(
    ...['data', 'make', '--split', 'val', '--n', '2', '--out', at('split')],
    '--tokenizer',
    at('tok'),
  );
  assert.equal(r.code, 0, r.stderr);
  const report = /tokens: captions (\d+)-(\d+) \(mean [\d.]+\), (\d+) longer than the 95/.exec(r.stdout);
  assert.ok(report, r.stdout);
  // Spelt letter by letter where the vocabulary lacks a word: far longer than in words.
  assert.ok(Number(report[2]) > 95, `the longest caption is ${report[2]} tokens`);
  assert.ok(Number(report[3]) > 0);
});
