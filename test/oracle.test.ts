import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeCaption } from '../src/benchmark/captioner.js';
import { scoreCaption } from '../src/benchmark/metrics.js';
import { generateBenchmarkSplit } from '../src/data/training-data.js';
import { evaluate } from '../src/evaluation/evaluate.js';
import { CaptionerOracle, nearestCaptions } from '../src/evaluation/oracle.js';
import { samplerOptions } from '../src/sampling/sampler.js';
import { EOS_ID, MASK_ID } from '../src/tokenizer/tokenizer.js';
import { Rng } from '../src/util/rng.js';

const L = 96;
const split = generateBenchmarkSplit('val', 0, 6, 32);
const oracle = new CaptionerOracle(split, { captions: 300, seed: 0, responseLength: L });

test('at 1 token per step every oracle caption is one the captioner wrote, and it is perfect', async () => {
  const settings = ['llada', 'rediff'].map((s) => ({
    label: s,
    sampler: s,
    tokensPerStep: 1,
    options: samplerOptions(s, { steps: L }),
  }));
  const rows = await evaluate(oracle, split, settings);
  for (const row of rows) {
    row.records.forEach((r, i) => {
      assert.ok(
        oracle.captionTexts(i).has(r.caption),
        `${row.setting.label}, scene ${i}: "${r.caption}" was not drawn`,
      );
      const score = scoreCaption(split.records[i]!.scene, r.caption);
      assert.equal(score.objectFactuality, 1, r.caption);
      assert.equal(score.coverage, 1, r.caption);
      assert.equal(score.parses, 1, r.caption);
    });
    // Caption tokens per step leave out the EOS fill, which the achieved rate counts.
    assert.ok(row.captionTokensPerStep < row.achievedTokensPerStep);
    assert.ok(row.captionTokensPerStep <= 1 + 1e-9);
  }
});

test("with nothing decoded, the oracle's marginals are the captioner's sample frequencies", () => {
  const scene = split.records[1]!.scene;
  const big = new CaptionerOracle(split, { captions: 4000, seed: 3, responseLength: L });
  const p = big.posterior(1, new Array<number>(L).fill(MASK_ID));
  // An independent draw of the captioner, tallied at a few positions.
  const rng = new Rng(12345);
  const n = 4000;
  const tallies = [0, 1, 5, 12].map(() => new Map<number, number>());
  for (let k = 0; k < n; k++) {
    const tokens = writeCaption(scene, rng).tokens;
    [0, 1, 5, 12].forEach((pos, j) => {
      const id = pos < tokens.length ? big.tokenizer.idOf(tokens[pos]!)! : EOS_ID;
      tallies[j]!.set(id, (tallies[j]!.get(id) ?? 0) + 1);
    });
  }
  const V = big.config.vocabSize;
  [0, 1, 5, 12].forEach((pos, j) => {
    let mass = 0;
    let distance = 0;
    for (let t = 0; t < V; t++) {
      mass += p[pos * V + t]!;
      distance += Math.abs(p[pos * V + t]! - (tallies[j]!.get(t) ?? 0) / n) / 2;
    }
    assert.ok(Math.abs(mass - 1) < 1e-4, `position ${pos} sums to ${mass}`);
    // Two samples of 4,000: total variation of a few hundredths at most.
    assert.ok(distance < 0.05, `position ${pos}: total variation ${distance.toFixed(3)}`);
  });
});

test('a context no caption agrees with gets the nearest captions', () => {
  const { count, ids } = oracle.captionsOf(2);
  const caption = [...ids.subarray(0, L)];
  const x = new Array<number>(L).fill(MASK_ID);
  for (let i = 0; i < 12; i++) x[i] = caption[i]!;
  // A token no drawn caption has at position 4: every caption disagrees there.
  const V = oracle.config.vocabSize;
  const atFour = new Set(Array.from({ length: count }, (_, c) => ids[c * L + 4]!));
  const stranger = [...Array(V).keys()].find((t) => t > EOS_ID && !atFour.has(t))!;
  x[4] = stranger;
  const nearest = nearestCaptions(ids, count, L, x);
  assert.ok(nearest.includes(0), 'the caption the context came from is among the nearest');
  for (const c of nearest) {
    for (let i = 0; i < 12; i++) if (i !== 4) assert.equal(ids[c * L + i], caption[i], `caption ${c} position ${i}`);
  }
  const p = oracle.posterior(2, x);
  assert.equal(p[4 * V + stranger], 0, 'the stranger gets no mass');
  assert.ok(p[4 * V + caption[4]!]! > 0, "the source caption's token gets mass");
  for (let i = 0; i < 12; i++) if (i !== 4) assert.ok(Math.abs(p[i * V + caption[i]!]! - 1) < 1e-6);
});

test('the oracle is deterministic and knows only its own images', async () => {
  const again = new CaptionerOracle(split, { captions: 300, seed: 0, responseLength: L });
  assert.deepEqual(again.captionsOf(3).ids, oracle.captionsOf(3).ids);
  const other = new CaptionerOracle(split, { captions: 300, seed: 1, responseLength: L });
  assert.notDeepEqual(other.captionsOf(3).ids, oracle.captionsOf(3).ids);
  const stranger = generateBenchmarkSplit('test', 0, 1, 32);
  await assert.rejects(
    () =>
      evaluate(oracle, stranger, [
        { label: 'x', sampler: 'llada', tokensPerStep: 1, options: samplerOptions('llada', { steps: L }) },
      ]),
    /only the images of its own split/,
  );
});
