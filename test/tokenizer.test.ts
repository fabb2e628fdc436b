import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { UserError } from '../src/util/errors.js';
import { WordTokenizer } from '../src/tokenizer/word.js';
import { HuggingFaceTokenizer } from '../src/tokenizer/huggingface.js';
import { EOS_ID, MASK_ID, PAD_ID, UNK_ID, type Tokenizer } from '../src/tokenizer/tokenizer.js';
import { tokenizerFromJSON, wordsOutsideVocabulary } from '../src/tokenizer/kinds.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rediff-tok-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

function added(id: number, content: string, special = true): Record<string, unknown> {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special };
}

/**
 * A small WordLevel tokenizer.json as the Python `tokenizers` library writes it. Special tokens
 * deliberately sit at the end of the vocabulary (as in LLaDA's), so the adapter must renumber.
 */
function wordLevelJson(opts: { mask?: string | null; unk?: boolean; pad?: boolean } = {}): Record<string, unknown> {
  const words = ['a', 'red', 'circle', 'left', 'of', 'blue', 'square', '.'];
  const vocab: Record<string, number> = {};
  words.forEach((w, i) => (vocab[w] = i));
  const specials: string[] = [];
  if (opts.unk !== false) specials.push('[UNK]');
  if (opts.pad !== false) specials.push('[PAD]');
  specials.push('</s>');
  if (opts.mask !== null) specials.push(opts.mask ?? '<|mdm_mask|>');
  specials.push('<s>');
  const addedTokens = specials.map((s, k) => {
    vocab[s] = words.length + k;
    return added(words.length + k, s);
  });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: { type: 'Lowercase' },
    pre_tokenizer: { type: 'Whitespace' },
    post_processor: null,
    decoder: null,
    model: { type: 'WordLevel', vocab, ...(opts.unk !== false ? { unk_token: '[UNK]' } : {}) },
  };
}

function userError(pattern: RegExp): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof UserError, `expected UserError, got ${String(err)}`);
    assert.match(err.message, pattern);
    return true;
  };
}

/** Checks the id layout contract every Tokenizer honours. */
function checkLayout(t: Tokenizer, names: { pad: string; mask: string; eos: string; unk: string }): void {
  assert.equal(t.idOf(names.pad), PAD_ID);
  assert.equal(t.idOf(names.mask), MASK_ID);
  assert.equal(t.idOf(names.eos), EOS_ID);
  assert.equal(t.idOf(names.unk), UNK_ID);
  for (const id of [PAD_ID, MASK_ID, EOS_ID, UNK_ID]) assert.ok(t.isSpecial(id));
  assert.ok(!t.isSpecial(t.firstOrdinaryId));
  assert.ok(t.isSpecial(t.firstOrdinaryId - 1));
  assert.ok(t.firstOrdinaryId < t.size);
}

test('WordTokenizer: layout, encode/decode and JSON round-trip', () => {
  const t = new WordTokenizer(['a', 'red', 'circle', 'left', 'of', 'blue', 'square', '.']);
  checkLayout(t, { pad: '[PAD]', mask: '[MASK]', eos: '[EOS]', unk: '[UNK]' });
  const ids = t.encode('A red circle left of a blue square.');
  assert.equal(ids.length, 9);
  assert.ok(ids.every((id) => id >= t.firstOrdinaryId));
  assert.equal(t.decode([...ids, EOS_ID, PAD_ID, ids[0]!]), 'A red circle left of a blue square.');
  assert.equal(t.decode([ids[0]!, MASK_ID, PAD_ID, ids[2]!]), 'A [MASK] circle');
  assert.deepEqual(t.encode('a green circle'), [t.idOf('a'), UNK_ID, t.idOf('circle')]);
  const back = tokenizerFromJSON(JSON.parse(JSON.stringify(t.toJSON())));
  assert.ok(back instanceof WordTokenizer);
  assert.equal(back.size, t.size);
  assert.deepEqual(back.encode('a blue square.'), t.encode('a blue square.'));
  assert.throws(
    () => WordTokenizer.fromJSON({ kind: 'word', vocab: ['x'] }, 'ck'),
    userError(/^ck: vocabulary must start/),
  );
  assert.throws(
    () => tokenizerFromJSON({ kind: 'sentencepiece' }, 'ck'),
    userError(/^ck: unknown tokenizer kind "sentencepiece"/),
  );
});

test('HuggingFaceTokenizer: WordLevel tokenizer.json, renumbered to the rediff layout', () => {
  const t = new HuggingFaceTokenizer(wordLevelJson());
  assert.deepEqual(t.specials, { mask: '<|mdm_mask|>', eos: '</s>', pad: '[PAD]', unk: '[UNK]' });
  checkLayout(t, { pad: '[PAD]', mask: '<|mdm_mask|>', eos: '</s>', unk: '[UNK]' });
  assert.equal(t.size, 13);
  assert.equal(t.firstOrdinaryId, 5, 'PAD MASK EOS UNK + <s>');
  assert.ok(t.isSpecial(t.idOf('<s>')!));
  // Ordinary tokens keep their original order after the specials.
  assert.equal(t.idOf('a'), 5);
  assert.equal(t.hfId(t.idOf('a')!), 0);
  assert.equal(t.fromHfId(11), MASK_ID);

  const ids = t.encode('A red circle left of a blue square.');
  assert.deepEqual(ids, [5, 6, 7, 8, 9, 5, 10, 11, 12]);
  assert.deepEqual(t.pieces(ids.slice(0, 3)), ['a', 'red', 'circle']);
  assert.equal(t.decode([...ids, EOS_ID, 6, 7]), 'a red circle left of a blue square.');
  assert.equal(t.decode([5, PAD_ID, MASK_ID, 7]), 'a <|mdm_mask|> circle');
  assert.deepEqual(t.encode('a GREEN circle'), [5, UNK_ID, 7]);
  assert.deepEqual(t.encode(''), []);
  assert.equal(t.decode([]), '');
  assert.equal(t.decode([EOS_ID, 5]), '');
  // Special-token text in the input is recognised; no BOS/EOS is added by encode.
  assert.deepEqual(t.encode('a <|mdm_mask|> circle'), [5, MASK_ID, 7]);

  const back = tokenizerFromJSON(JSON.parse(JSON.stringify(t.toJSON())));
  assert.ok(back instanceof HuggingFaceTokenizer);
  assert.deepEqual(back.encode('a blue square.'), t.encode('a blue square.'));
  assert.deepEqual(back.specials, t.specials);
});

test('HuggingFaceTokenizer: virtual PAD/UNK when the vocabulary has none', () => {
  const t = new HuggingFaceTokenizer(wordLevelJson({ unk: false, pad: false }));
  assert.deepEqual(t.specials, { mask: '<|mdm_mask|>', eos: '</s>', pad: null, unk: null });
  checkLayout(t, { pad: '[PAD]', mask: '<|mdm_mask|>', eos: '</s>', unk: '[UNK]' });
  assert.equal(t.size, 13, '11 real tokens + 2 virtual');
  const ids = t.encode('a green circle');
  assert.deepEqual(ids, [t.idOf('a'), UNK_ID, t.idOf('circle')]);
  assert.equal(t.decode([PAD_ID, ...ids]), 'a [UNK] circle');
  assert.deepEqual(t.pieces([PAD_ID, UNK_ID]), ['[PAD]', '[UNK]']);
  const back = HuggingFaceTokenizer.fromJSON(t.toJSON());
  assert.deepEqual(back.specials, t.specials);
});

test('HuggingFaceTokenizer: special tokens from options and tokenizer_config.json; clear errors', async () => {
  // Custom mask name: not found by default -> UserError naming what was tried.
  assert.throws(
    () => new HuggingFaceTokenizer(wordLevelJson({ mask: '<M>' }), { where: 'my/tokenizer.json' }),
    userError(/^my\/tokenizer\.json: no mask token found \(tried <\|mdm_mask\|> \[MASK\].*\); name it/),
  );
  assert.throws(() => new HuggingFaceTokenizer(wordLevelJson({ mask: null })), userError(/no mask token found/));
  // Named with an option.
  const t = new HuggingFaceTokenizer(wordLevelJson({ mask: '<M>' }), { mask: '<M>' });
  assert.equal(t.idOf('<M>'), MASK_ID);
  // An option naming a token that does not exist.
  assert.throws(
    () => new HuggingFaceTokenizer(wordLevelJson(), { eos: '<|im_end|>' }),
    userError(/the eos token "<\|im_end\|>" is not in the vocabulary/),
  );
  assert.throws(
    () => new HuggingFaceTokenizer(wordLevelJson(), { eos: '<|mdm_mask|>' }),
    userError(/mask and eos tokens must differ/),
  );
  // Not a tokenizer.json at all.
  assert.throws(
    () => new HuggingFaceTokenizer({ hello: 1 }, { where: 'x.json' }),
    userError(/^x\.json: not a Hugging Face tokenizer\.json/),
  );

  // From a directory with tokenizer_config.json naming the tokens (string or {content}).
  const d = path.join(dir, 'hf');
  fs.mkdirSync(d);
  fs.writeFileSync(path.join(d, 'tokenizer.json'), JSON.stringify(wordLevelJson({ mask: '<M>' })));
  fs.writeFileSync(
    path.join(d, 'tokenizer_config.json'),
    JSON.stringify({ mask_token: { content: '<M>' }, eos_token: '<s>' }),
  );
  const loaded = await HuggingFaceTokenizer.load(d);
  assert.deepEqual(loaded.specials, { mask: '<M>', eos: '<s>', pad: '[PAD]', unk: '[UNK]' });
  assert.ok(loaded.isSpecial(loaded.idOf('</s>')!), '</s> is still special, just not the EOS');
  assert.equal((await HuggingFaceTokenizer.load(path.join(d, 'tokenizer.json'), { eos: '</s>' })).specials.eos, '</s>');

  await assert.rejects(
    HuggingFaceTokenizer.load(path.join(dir, 'missing')),
    userError(/^tokenizer not found: .*missing$/),
  );
  const bad = path.join(dir, 'bad');
  fs.mkdirSync(bad);
  fs.writeFileSync(path.join(bad, 'tokenizer.json'), '{"model": ');
  await assert.rejects(HuggingFaceTokenizer.load(bad), userError(/^tokenizer is not valid JSON: .*tokenizer\.json/));
});

test('wordsOutsideVocabulary: the words that would become UNK, for word and Hugging Face tokenizers', () => {
  const w = new WordTokenizer(['a', 'red', 'circle', '.']);
  assert.deepEqual(wordsOutsideVocabulary(w, 'A red zebra, a red zebra and a circle.'), ['zebra', ',', 'and']);
  assert.deepEqual(wordsOutsideVocabulary(w, 'a red circle.'), []);
  const hf = new HuggingFaceTokenizer(wordLevelJson());
  assert.deepEqual(wordsOutsideVocabulary(hf, 'a GREEN circle and a green square.'), ['GREEN', 'and', 'green']);
  assert.deepEqual(wordsOutsideVocabulary(hf, 'a red circle left of a blue square.'), []);
});
