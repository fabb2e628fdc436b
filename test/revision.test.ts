import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ModelConfig } from '../src/model/config.js';
import { DiffusionVLM } from '../src/model/model.js';
import { initParams } from '../src/model/params.js';
import {
  blockCorrectionSample,
  blockMaskResponse,
  corruptResponse,
  type CorruptedResponse,
  spanCorrectionSample,
  type TokenType,
} from '../src/training/corruption.js';
import { lossWeights } from '../src/training/loss.js';
import { batchFeeds, Trainer } from '../src/training/trainer.js';
import { recordPatches, type TrainingSample } from '../src/training/samples.js';
import { WordTokenizer } from '../src/tokenizer/word.js';
import { EOS_ID, MASK_ID } from '../src/tokenizer/tokenizer.js';
import { Rng } from '../src/util/rng.js';

const vocab = { firstOrdinaryId: 4, vocabSize: 40 };

test('corruption produces the intended share of each type and never emits a special token as noise', () => {
  const rng = new Rng(1);
  const clean = Array.from({ length: 100 }, (_, i) => 4 + (i % 36));
  for (const [t, q] of [
    [0.3, 0.1],
    [0.7, 0.05],
    [0.05, 0.2],
  ] as const) {
    const counts: Record<TokenType, number> = { mask: 0, syntax: 0, clean: 0, hallucination: 0, ignore: 0 };
    const n = 400;
    for (let k = 0; k < n; k++) {
      const c = corruptResponse(clean, rng, { syntaxNoise: q, ...vocab }, t);
      c.types.forEach((ty, i) => {
        counts[ty]++;
        if (ty === 'syntax') {
          assert.ok(c.input[i]! >= 4 && c.input[i]! < 40, 'noise is an ordinary token');
          assert.notEqual(c.input[i], clean[i], 'noise differs from the original');
        }
        if (ty === 'mask') assert.equal(c.input[i], MASK_ID);
        if (ty === 'clean') assert.equal(c.input[i], clean[i]);
      });
      assert.deepEqual(c.target, clean);
    }
    const total = n * clean.length;
    const p = (1 - 1e-3) * t + 1e-3;
    // Binomial standard errors are below 0.003 here; 0.015 is a generous tolerance.
    assert.ok(Math.abs(counts.mask / total - p) < 0.015, `mask share ${counts.mask / total} vs ${p}`);
    assert.ok(
      Math.abs(counts.syntax / total - (1 - p) * q) < 0.015,
      `syntax share ${counts.syntax / total} vs ${(1 - p) * q}`,
    );
  }
});

test('dynamic revise ratio: q = t while t < 0.1, none above', () => {
  const rng = new Rng(2);
  const clean = new Array(2000).fill(7);
  const low = corruptResponse(clean, rng, { syntaxNoise: 0.5, dynamicSyntaxNoise: true, ...vocab }, 0.08);
  const share = low.types.filter((t) => t === 'syntax').length / clean.length;
  assert.ok(Math.abs(share - 0.92 * 0.08) < 0.02, `syntax share ${share}`);
  const high = corruptResponse(clean, rng, { syntaxNoise: 0.5, dynamicSyntaxNoise: true, ...vocab }, 0.5);
  assert.equal(high.types.filter((t) => t === 'syntax').length, 0);
});

test('training feeds never touch image or prompt tokens', () => {
  const c: ModelConfig = {
    vocabSize: 40,
    imageSize: 8,
    patchSize: 4,
    vision: { width: 8, layers: 1, heads: 2, ff: 16 },
    lm: { width: 8, layers: 1, heads: 2, ff: 16 },
    promptLength: 4,
    responseLength: 10,
  };
  const rng = new Rng(3);
  const rgb = Uint8Array.from({ length: 8 * 8 * 3 }, () => rng.int(256));
  const sample: TrainingSample[] = [0, 1].map(() => {
    const corrupted = corruptResponse(
      [5, 6, 7, 8, 9, EOS_ID, EOS_ID, EOS_ID, EOS_ID, EOS_ID],
      rng,
      { syntaxNoise: 0.9, ...vocab },
      0.5,
    );
    return {
      patches: recordPatches(c, rgb),
      prompt: [10, 11, 12],
      corrupted,
      weights: lossWeights(corrupted, 'revision'),
    };
  });
  const feeds = batchFeeds(c, sample);
  const tokens = Array.from(feeds.tokens!.data as BigInt64Array, Number);
  for (let b = 0; b < 2; b++) {
    assert.deepEqual(tokens.slice(b * 14, b * 14 + 4), [0, 10, 11, 12]);
    assert.deepEqual(tokens.slice(b * 14 + 4, b * 14 + 14), sample[b]!.corrupted.input);
  }
  assert.deepEqual(feeds.patches!.data, Float32Array.from([...sample[0]!.patches, ...sample[1]!.patches]));
});

test('revision loss equals a direct computation of the Stage I loss (Eqs. 3-4), including empty types', async () => {
  const c: ModelConfig = {
    vocabSize: 40,
    imageSize: 8,
    patchSize: 4,
    vision: { width: 8, layers: 1, heads: 2, ff: 16 },
    lm: { width: 16, layers: 1, heads: 2, ff: 16 },
    promptLength: 3,
    responseLength: 6,
  };
  const params = initParams(c, 4);
  for (const v of params.values()) for (let i = 0; i < v.length; i++) v[i]! += 0.3 * Math.sin(i * 1.7);
  const rng = new Rng(5);
  const rgb = Uint8Array.from({ length: 8 * 8 * 3 }, () => rng.int(256));
  const hand: CorruptedResponse[] = [
    // mask, syntax and clean all present
    {
      input: [MASK_ID, 9, MASK_ID, 6, 30, EOS_ID],
      target: [5, 6, 7, 8, 9, EOS_ID],
      types: ['mask', 'syntax', 'mask', 'syntax', 'clean', 'clean'],
      p: 0.4,
      t: 0.4,
    },
    // no syntax tokens (an empty type)
    {
      input: [MASK_ID, MASK_ID, MASK_ID, MASK_ID, 12, EOS_ID],
      target: [5, 6, 7, 8, 12, EOS_ID],
      types: ['mask', 'mask', 'mask', 'mask', 'clean', 'clean'],
      p: 0.7,
      t: 0.7,
    },
    // a hallucination sample: loss on the wrong span only
    spanCorrectionSample([5, 6, 20, 21, 9, EOS_ID], [5, 6, 7, 8, 9, EOS_ID], [{ start: 2, length: 2 }]),
  ];
  const samples = hand.map((corrupted) => ({
    patches: recordPatches(c, rgb),
    prompt: [10, 11],
    corrupted,
    weights: lossWeights(corrupted, 'revision'),
  }));
  const trainer = new Trainer(c, params);
  const graphLoss = await trainer.loss(samples);
  await trainer.dispose();

  const model = new DiffusionVLM(c, new WordTokenizer(Array.from({ length: 36 }, (_, i) => `w${i}`)), params);
  const embeds = await model.encodeImages(samples.map((s) => s.patches));
  const logits = await model.logits(
    embeds,
    samples.map((s) => ({ prompt: s.prompt, response: s.corrupted.input })),
  );
  await model.dispose();
  const ce = (b: number, i: number, target: number): number => {
    const row = logits.subarray((b * 6 + i) * 40, (b * 6 + i + 1) * 40);
    const max = Math.max(...row);
    const lse = Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0)) + max;
    return lse - row[target]!;
  };
  let direct = 0;
  hand.forEach((h, b) => {
    for (const type of ['mask', 'syntax', 'clean', 'hallucination'] as const) {
      const idx = h.types.map((t, i) => (t === type ? i : -1)).filter((i) => i >= 0);
      if (idx.length === 0) continue; // an empty type contributes 0
      direct += idx.reduce((s, i) => s + ce(b, i, h.target[i]!) / h.p, 0) / idx.length / hand.length;
    }
  });
  assert.ok(Math.abs(graphLoss - direct) < 1e-4 * Math.abs(direct), `graph ${graphLoss} vs direct ${direct}`);
});

test('span corrections: only the spans are scored (Eq. 5), or with keepRest the other tokens too, types apart', () => {
  const wrong = [5, 6, 20, 21, 9, EOS_ID];
  const right = [5, 6, 7, 8, 9, EOS_ID];
  const spans = [{ start: 2, length: 2 }];
  const only = spanCorrectionSample(wrong, right, spans);
  assert.deepEqual(only.types, ['ignore', 'ignore', 'hallucination', 'hallucination', 'ignore', 'ignore']);
  assert.deepEqual([...lossWeights(only, 'revision')], [0, 0, 0.5, 0.5, 0, 0]);
  const keep = spanCorrectionSample(wrong, right, spans, true);
  assert.deepEqual(keep.input, wrong);
  assert.deepEqual(keep.target, right);
  assert.deepEqual(keep.types, ['clean', 'clean', 'hallucination', 'hallucination', 'clean', 'clean']);
  assert.deepEqual([...lossWeights(keep, 'revision')], [0.25, 0.25, 0.5, 0.5, 0.25, 0.25]);
});

test('block correction samples: earlier blocks drafted, flagged tokens shown and scored, later masked', () => {
  const B = 4;
  // A 10-token draft in a 16-token response: blocks 0 and 1 are wholly text; block 2 holds its end.
  const wrong = [5, 6, 20, 21, 9, 10, 11, 12, 13, 30, EOS_ID, EOS_ID, EOS_ID, EOS_ID, EOS_ID, EOS_ID];
  const right = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, EOS_ID, EOS_ID, EOS_ID, EOS_ID, EOS_ID, EOS_ID];
  const spans = [
    { start: 2, length: 2 },
    { start: 9, length: 1 },
  ];
  const rng = new Rng(7);
  const blocks = new Set<number>();
  let masked = 0;
  for (let n = 0; n < 300; n++) {
    const s = blockCorrectionSample(wrong, right, spans, rng, B)!;
    assert.deepEqual(s.target, right);
    const k = Math.max(...s.types.map((t, i) => (t === 'ignore' ? -1 : Math.floor(i / B))));
    blocks.add(k);
    s.types.forEach((t, i) => {
      const block = Math.floor(i / B);
      if (block > k) assert.ok(t === 'ignore' && s.input[i] === MASK_ID);
      else if (i === 2 || i === 3 || i === 9) assert.ok(t === 'hallucination' && s.input[i] === wrong[i]);
      else if (block < k) assert.ok(t === 'clean' && s.input[i] === wrong[i]);
      else if (t === 'mask') {
        assert.equal(s.input[i], MASK_ID);
        masked++;
      } else assert.ok(t === 'clean' && s.input[i] === wrong[i]);
    });
    assert.equal(s.p, 1);
  }
  assert.deepEqual([...blocks].sort(), [0, 1]);
  assert.ok(masked > 0);
  // A draft that ends inside its first block has no block of text.
  assert.equal(
    blockCorrectionSample([5, EOS_ID, EOS_ID, EOS_ID], [6, EOS_ID, EOS_ID, EOS_ID], [{ start: 0, length: 1 }], rng, B),
    null,
  );
});

test('mask-prediction loss weights: 1/p on masked positions over the response length', () => {
  const c = corruptResponse([5, 6, 7, 8], new Rng(6), { syntaxNoise: 0, ...vocab }, 0.5);
  const w = lossWeights(c, 'mask-prediction');
  c.types.forEach((t, i) => assert.equal(w[i], t === 'mask' ? Math.fround(1 / c.p / 4) : 0));
});

test('block masks: the blocks before k written, block k masked at rate p, later positions masked, not scored', () => {
  // 10 words, then EOS padding to 16: with blocks of 4, blocks 0 and 1 are text, block 2 holds the first EOS.
  const clean = [...Array.from({ length: 10 }, (_, i) => 10 + i), ...new Array<number>(6).fill(EOS_ID)];
  const rng = new Rng(11);
  const seen = new Map<number, number>();
  for (let n = 0; n < 400; n++) {
    const c = blockMaskResponse(clean, rng, 4)!;
    assert.deepEqual(c.target, clean);
    // The block being written is the one before the first unscored position.
    const k = c.types.indexOf('ignore') / 4 - 1;
    assert.ok(
      Number.isInteger(k) && k >= 0,
      `unscored positions start at a block boundary (${c.types.indexOf('ignore')})`,
    );
    seen.set(k, (seen.get(k) ?? 0) + 1);
    c.types.forEach((t, i) => {
      const b = Math.floor(i / 4);
      if (b < k) assert.equal(t, 'clean', 'written prefix');
      else if (b === k) assert.ok(t === 'clean' || t === 'mask');
      else assert.equal(t, 'ignore', 'later blocks');
      assert.equal(c.input[i], t === 'clean' ? clean[i] : MASK_ID);
    });
    const w = lossWeights(c, 'mask-prediction');
    c.types.forEach((t, i) =>
      assert.equal(w[i], t === 'mask' ? Math.fround(1 / c.p / 4) : 0, 'averaged over the block'),
    );
  }
  assert.deepEqual([...seen.keys()].sort(), [0, 1], 'only blocks of text: where to stop is left to uniform masks');
  for (const n of seen.values()) assert.ok(n > 150, `blocks drawn evenly: ${[...seen.values()]}`);
  assert.equal(
    blockMaskResponse([10, 11, 12, ...new Array<number>(13).fill(EOS_ID)], rng, 4),
    null,
    'a caption that ends in its first block',
  );
  assert.throws(() => blockMaskResponse(clean, rng, 5), /block length 5 must divide the response length 16/);
});

test('block masks with the revision objective: written tokens get syntax noise, later positions never do', () => {
  const clean = [...Array.from({ length: 12 }, (_, i) => 10 + i), ...new Array<number>(4).fill(EOS_ID)];
  const rng = new Rng(3);
  let written = 0;
  let noised = 0;
  for (let n = 0; n < 300; n++) {
    const c = blockMaskResponse(clean, rng, 4, { noise: { syntaxNoise: 0.3, ...vocab } })!;
    c.types.forEach((t, i) => {
      if (t === 'clean' || t === 'syntax') written++;
      if (t === 'syntax') {
        noised++;
        assert.ok(c.input[i] !== clean[i] && c.input[i]! >= vocab.firstOrdinaryId, 'noise is a real error');
      }
      if (t === 'ignore') assert.equal(c.input[i], MASK_ID);
    });
    const w = lossWeights(c, 'revision');
    c.types.forEach((t, i) => assert.equal(w[i]! > 0, t !== 'ignore', 'every position but the later ones is scored'));
  }
  assert.ok(Math.abs(noised / written - 0.3) < 0.05, `noise rate ${noised / written}`);
});
