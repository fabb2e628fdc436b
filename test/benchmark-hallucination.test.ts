import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../src/util/rng.js';
import { splitWords } from '../src/tokenizer/word.js';
import { type Scene, generateScene } from '../src/benchmark/scene.js';
import { BENCHMARK_VOCABULARY, writeCaption } from '../src/benchmark/captioner.js';
import {
  HALLUCINATION_TYPES,
  type HallucinationType,
  injectAnyHallucination,
  injectHallucination,
} from '../src/benchmark/hallucination.js';
import { scoreCaption } from '../src/benchmark/metrics.js';
import { checkVicritPair } from '../src/data/datasets.js';

test('hallucinations: one same-length error of the stated type, always detected at its span', () => {
  const vocab = new Set(BENCHMARK_VOCABULARY);
  const made: Record<HallucinationType, number> = { shape: 0, color: 0, size: 0, count: 0, position: 0, relation: 0 };
  const rng = new Rng(21);
  const N = 150;
  for (let i = 0; i < N; i++) {
    const scene = generateScene(rng.fork(), { seed: i });
    const caption = writeCaption(scene, rng.fork());
    for (const type of HALLUCINATION_TYPES) {
      const h = injectHallucination(scene, caption.text, type, rng.fork());
      if (!h) continue;
      made[type]++;
      assert.equal(h.type, type);
      assert.equal(h.caption, caption.text);
      const a = splitWords(h.caption);
      const b = splitWords(h.changed_caption);
      assert.equal(a.length, b.length);
      // Same token count, and the captions differ exactly inside the span.
      assert.equal(splitWords(h.span_original).length, h.token_count);
      assert.equal(splitWords(h.span_changed).length, h.token_count);
      const span: [number, number] = [h.token_start, h.token_start + h.token_count];
      assert.deepEqual(a.slice(...span), splitWords(h.span_original));
      assert.deepEqual(b.slice(...span), splitWords(h.span_changed));
      for (let k = 0; k < a.length; k++) if (k < span[0] || k >= span[1]) assert.equal(a[k], b[k]);
      for (const t of b) assert.ok(vocab.has(t), t);
      // The loaders read the record back and find the same span.
      const back = checkVicritPair(h as unknown as Record<string, unknown>);
      assert.ok('pair' in back && back.pair.token_start === h.token_start, JSON.stringify(back));
      // Detected: factuality drops, the changed caption still reads fluently, and every wrong
      // claim is blamed on the injected span.
      const score = scoreCaption(scene, h.changed_caption);
      assert.ok(score.factuality < 1, `${type}: ${h.changed_caption}`);
      assert.equal(score.fluency, 1);
      assert.ok(score.errors.length > 0);
      for (const e of score.errors) {
        for (const [s0, s1] of e.blame)
          assert.ok(s0 < span[1] && span[0] < s1, `${type}: blamed "${e.text}" but changed "${h.span_changed}"`);
      }
      assert.ok(score.coverage <= scoreCaption(scene, h.caption).coverage);
    }
  }
  // Attribute and position errors are always possible; counts need a plural, relations a relation sentence.
  for (const t of ['shape', 'color', 'size', 'position'] as const) assert.ok(made[t] >= N * 0.97, `${t}: ${made[t]}`);
  assert.ok(made.count >= N * 0.6, `count: ${made.count}`);
  assert.ok(made.relation >= N * 0.3, `relation: ${made.relation}`);
});

test('hallucinations: deterministic per seed, null when impossible, refuses a wrong caption', () => {
  const scene = generateScene(new Rng(5), { minObjects: 4, maxObjects: 4 });
  const caption = writeCaption(scene, new Rng(6));
  assert.deepEqual(
    injectAnyHallucination(scene, caption.text, new Rng(1)),
    injectAnyHallucination(scene, caption.text, new Rng(1)),
  );
  const single: Scene = {
    id: 'one',
    seed: 0,
    objects: [{ id: 'o0', shape: 'star', color: 'red', size: 'small', x: 0.5, y: 0.5, place: 'center' }],
    relations: [],
  };
  const text = 'There is only one shape. A small red star is in the center.';
  assert.equal(scoreCaption(single, text).factuality, 1);
  assert.equal(injectHallucination(single, text, 'relation', new Rng(1)), null);
  assert.equal(injectHallucination(single, text, 'count', new Rng(1)), null);
  assert.equal(injectHallucination(single, text, 'color', new Rng(1))?.type, 'color');
  assert.throws(() => injectHallucination(scene, 'There are nine shapes.', 'shape', new Rng(1)), RangeError);
});
