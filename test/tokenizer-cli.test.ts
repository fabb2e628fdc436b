/**
 * A Hugging Face subword tokenizer from the command line, end to end: `rediff train --tokenizer`
 * trains a tiny model from scratch on LLaVA-style captions with words the benchmark's vocabulary
 * lacks, the checkpoint carries the tokenizer, `generate` captions with it, `export` ships it
 * and the shipped copy captions alike; `--tokenizer` elsewhere is checked against the
 * checkpoint's, and a resumed run must keep its tokenizer. Four commands run as processes; the
 * rest is checked in this one (each process costs a second or two of start-up).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { BENCHMARK_PROMPT, benchmarkTokenizer } from '../src/benchmark/captioner.js';
import { generateBenchmarkSplit, readUserData } from '../src/data/training-data.js';
import { loadModel } from '../src/api/model.js';
import { type TrainSettings, runTraining } from '../src/training/run.js';
import { loadModelState } from '../src/model/io.js';
import type { ExportManifest } from '../src/model/export.js';
import { HuggingFaceTokenizer } from '../src/tokenizer/huggingface.js';
import { sameTokenizer } from '../src/tokenizer/file.js';
import { tokenizerFromJSON } from '../src/tokenizer/kinds.js';

import { rediff } from './helpers/cli.js';

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

test('train --tokenizer trains from scratch on captions the word vocabulary cannot read', async () => {
  // The benchmark's words refuse the captions.
  await assert.rejects(
    readUserData({ llava: at('captions.jsonl') }, benchmarkTokenizer(), 64),
    /captions\.jsonl:1: .*outside the vocabulary: "zebra"/,
  );
  const r = await rediff(
    ...['train', '--preset', 'tiny', '--stage', 'mask-prediction', '--llava', at('captions.jsonl')],
    ...['--steps', '4', '--batch-size', '2', '--warmup', '1', '--checkpoint-every', '4', '--no-progress'],
    ...['--out', at('ck'), '--tokenizer', at('tok')],
  );
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
  const other = await HuggingFaceTokenizer.load(at('other.json'));
  const { records } = await readUserData({ llava: at('captions.jsonl') }, other, 64);
  const settings = saved.state.settings as TrainSettings;
  await assert.rejects(
    runTraining({
      outDir: at('ck'),
      records,
      initial: { ...saved, tokenizer: other },
      settings,
      resume: true,
      meta: {},
    }),
    /the run being resumed has another tokenizer/,
  );
});

test('generate and export use the checkpoint tokenizer; --tokenizer is checked against it', async () => {
  const generated = await rediff(
    ...['generate', '--checkpoint', at('ck'), '--image', at('img0.png'), '--tokens-per-step', '8', '--json'],
    ...['--tokenizer', at('tok', 'tokenizer.json')],
  );
  assert.equal(generated.code, 0, generated.stderr);
  const caption = JSON.parse(generated.stdout) as { caption: string; steps: number };
  assert.ok(caption.steps >= 1 && caption.steps <= 12, '96 positions at 8 per step');
  await assert.rejects(loadModel(at('ck'), { tokenizer: at('other.json') }), /was trained with another tokenizer/);

  const exported = await rediff('export', '--checkpoint', at('ck'), '--out', at('shipped'), '--tokenizer', at('tok'));
  assert.equal(exported.code, 0, exported.stderr);
  const manifest = JSON.parse(fs.readFileSync(at('shipped', 'onnx', 'model.json'), 'utf8')) as ExportManifest;
  const original = (await loadModelState(at('ck'))).tokenizer;
  assert.ok(sameTokenizer(tokenizerFromJSON(manifest.tokenizer), original), 'the ONNX manifest carries it');
  assert.deepEqual(manifest.promptIds, original.encode(BENCHMARK_PROMPT));
  const shipped = await loadModel(at('shipped'));
  try {
    assert.ok(sameTokenizer(shipped.tokenizer, original));
    const again = await shipped.caption(fs.readFileSync(at('img0.png')), { tokensPerStep: 8 });
    assert.equal(again.text, caption.caption, 'the shipped copy captions alike');
  } finally {
    await shipped.dispose();
  }
});

test('data make --tokenizer reports how the benchmark captions read in its tokens', async () => {
  const r = await rediff(
    ...['data', 'make', '--split', 'val', '--n', '1', '--out', at('split')],
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
