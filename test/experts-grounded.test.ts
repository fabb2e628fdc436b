import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../src/util/rng.js';
import { joinWords, splitWords } from '../src/tokenizer/word.js';
import type { Tokenizer } from '../src/tokenizer/tokenizer.js';
import { type Scene, deriveRelations, generateScene } from '../src/benchmark/scene.js';
import { benchmarkTokenizer, writeCaption, writeCaptions } from '../src/benchmark/captioner.js';
import { HALLUCINATION_TYPES, type HallucinationType, injectHallucination } from '../src/benchmark/hallucination.js';
import { scoreCaption } from '../src/benchmark/metrics.js';
import { filterPairs } from '../src/experts/pairs.js';
import type { ReviewAnswer, SegmentPair } from '../src/experts/expert.js';
import { GroundedExpert, asScene, correctDraft } from '../src/experts/grounded.js';

const tok = benchmarkTokenizer();

/** Every pair keeps the contract: filterPairs drops nothing, orgs are the draft's tokens, same lengths. */
function assertContract(draft: string, answer: ReviewAnswer, where: string): SegmentPair[] {
  assert.equal(answer.kind, 'pairs', `${where}: ${JSON.stringify(answer)}`);
  const pairs = (answer as { pairs: SegmentPair[] }).pairs;
  const r = filterPairs(draft, pairs, tok);
  assert.deepEqual(r.dropped, [], `${where}: ${JSON.stringify(r.dropped)}`);
  for (const p of pairs) {
    assert.equal(splitWords(p.org).length, splitWords(p.target).length, where);
    assert.ok(splitWords(p.org).length >= 2, `${where}: one-token org ${p.org}`);
  }
  return pairs;
}

// A fixed scene for hand-written drafts: small red circle at the top, large blue star at the
// bottom, large orange square in the bottom left.
const objects: Scene['objects'] = [
  { id: 'o0', shape: 'circle', color: 'red', size: 'small', x: 0.5, y: 0.17, place: 'top' },
  { id: 'o1', shape: 'star', color: 'blue', size: 'large', x: 0.5, y: 0.83, place: 'bottom' },
  { id: 'o2', shape: 'square', color: 'orange', size: 'large', x: 0.17, y: 0.83, place: 'bottom left' },
];
const SCENE: Scene = { id: 'hand', seed: 0, objects, relations: deriveRelations(objects) };
const TAIL = 'A large blue star is at the bottom. A large orange square is in the bottom left.';

test('grounded: planted errors of every type are found and fixed with valid same-length pairs', (t) => {
  const rng = new Rng(2024);
  const made: Record<HallucinationType, number> = { shape: 0, color: 0, size: 0, count: 0, position: 0, relation: 0 };
  const fixed: Record<HallucinationType, number> = { shape: 0, color: 0, size: 0, count: 0, position: 0, relation: 0 };
  const N = 90;
  for (let i = 0; i < N; i++) {
    const scene = generateScene(rng.fork(), { seed: 100 + i });
    const caption = writeCaption(scene, rng.fork());
    for (const type of HALLUCINATION_TYPES) {
      const h = injectHallucination(scene, caption.text, type, rng.fork());
      if (!h) continue;
      made[type]++;
      const r = correctDraft(scene, h.changed_caption, tok);
      const pairs = assertContract(h.changed_caption, r.answer, `${type}: ${h.changed_caption}`);
      assert.ok(pairs.length > 0, `${type}: no pair for ${h.changed_caption}`);
      assert.equal(r.falseClaimsBefore, scoreCaption(scene, h.changed_caption).errors.length);
      // Applying the pairs as the training pipeline does gives the reported correction.
      const kept = filterPairs(h.changed_caption, pairs, tok).kept;
      const ids = tok.encode(h.changed_caption);
      for (const k of kept) ids.splice(k.start, k.targetIds.length, ...k.targetIds);
      assert.equal(tok.decode(ids), r.corrected);
      const after = scoreCaption(scene, r.corrected);
      if (after.factuality === 1 && after.fluency === 1 && r.remainingErrors === 0) fixed[type]++;
      assert.ok(after.errors.length < r.falseClaimsBefore, `${type}: not fewer false claims`);
    }
  }
  const total = HALLUCINATION_TYPES.reduce((s, k) => s + made[k], 0);
  const ok = HALLUCINATION_TYPES.reduce((s, k) => s + fixed[k], 0);
  t.diagnostic(
    `planted errors fixed (factuality 1.0 after): ${ok}/${total} = ${((100 * ok) / total).toFixed(1)}%; by type ` +
      `${JSON.stringify(fixed)} of ${JSON.stringify(made)}`,
  );
  assert.ok(ok >= 0.95 * total, `${ok}/${total}`);
  for (const k of HALLUCINATION_TYPES) {
    assert.ok(made[k] >= 20, `${k}: only ${made[k]} planted`);
    assert.ok(fixed[k] >= 0.95 * made[k], `${k}: ${fixed[k]}/${made[k]}`);
  }
});

test('grounded: correct captions in other words than the reference are right, every time', (t) => {
  const rng = new Rng(77);
  let n = 0;
  for (let i = 0; i < 220; i++) {
    const scene = generateScene(rng.fork(), { seed: 5000 + i, maxObjects: 1 + (i % 9) });
    const captions = writeCaptions(scene, rng.fork(), 4);
    for (const c of captions) {
      n++;
      const r = correctDraft(scene, c.text, tok);
      assert.deepEqual(r.answer, { kind: 'right' }, c.text);
      assert.equal(r.corrected, c.text);
      assert.equal(r.remainingErrors, 0);
    }
  }
  t.diagnostic(`right on ${n}/${n} correct paraphrases (220 scenes)`);
  assert.ok(n >= 800);
});

test('grounded: an injected repeated word is fixed in a clear majority of drafts', (t) => {
  const rng = new Rng(31);
  const N = 120;
  // (a) Same-length stutter, as parallel decoding makes it: a word overwritten by its predecessor.
  let fixedA = 0;
  let cleanA = 0;
  for (let i = 0; i < N; i++) {
    const scene = generateScene(rng.fork(), { seed: 9000 + i });
    const tokens = [...writeCaption(scene, rng.fork()).tokens];
    let pos = 1 + rng.int(tokens.length - 2);
    for (
      let g = 0;
      g < 100 && (tokens[pos] === tokens[pos - 1] || !/^[a-z]/.test(tokens[pos]!) || !/^[a-z]/.test(tokens[pos - 1]!));
      g++
    )
      pos = 1 + rng.int(tokens.length - 2);
    tokens[pos] = tokens[pos - 1]!;
    const draft = joinWords(tokens);
    const r = correctDraft(scene, draft, tok);
    if (r.answer.kind === 'right') assert.fail(`stutter judged right: ${draft}`);
    const pairs = assertContract(draft, r.answer, draft);
    if (pairs.length > 0) {
      fixedA++;
      assert.ok(r.chaosAfter < r.chaosBefore, draft);
      assert.ok(r.remainingErrors <= r.falseClaimsBefore, draft);
      if (r.chaosAfter === 0 && r.remainingErrors === 0) cleanA++;
    }
  }
  // (b) Inserted stutter (one token too many): fixable only by re-wording a same-length segment.
  const M = 50;
  let fixedB = 0;
  for (let i = 0; i < M; i++) {
    const scene = generateScene(rng.fork(), { seed: 12000 + i });
    const tokens = [...writeCaption(scene, rng.fork()).tokens];
    const pos = 1 + rng.int(tokens.length - 2);
    tokens.splice(pos, 0, tokens[pos - 1]!);
    const draft = joinWords(tokens);
    const r = correctDraft(scene, draft, tok);
    const pairs = assertContract(draft, r.answer, draft);
    if (pairs.length > 0) {
      fixedB++;
      assert.ok(r.chaosAfter < r.chaosBefore && r.remainingErrors === 0, draft);
    }
  }
  t.diagnostic(
    `same-length stutter: fix returned ${fixedA}/${N} (${((100 * fixedA) / N).toFixed(0)}%), fully clean after ` +
      `${cleanA}/${N}; inserted stutter: fix returned ${fixedB}/${M} (${((100 * fixedB) / M).toFixed(0)}%)`,
  );
  assert.ok(fixedA >= 0.8 * N, `same-length stutter fixed ${fixedA}/${N}`);
  assert.ok(fixedB >= 0.6 * M, `inserted stutter fixed ${fixedB}/${M}`);
});

test('grounded: hand-written drafts (lengths that differ, articles, several errors, nothing to fix)', () => {
  const cases: { draft: string; want?: string; pairs?: SegmentPair[] }[] = [
    // Article follows the colour; org widened to two tokens.
    {
      draft: `There are three shapes. An orange circle is at the top. ${TAIL}`,
      pairs: [{ org: 'an orange', target: 'a red' }],
    },
    // Place phrase of another length: the verb is re-worded so that the segment keeps its length.
    {
      draft: `There are three shapes. A small red circle is in the upper left corner. ${TAIL}`,
      pairs: [{ org: 'is in the upper left corner', target: 'can be seen at the top' }],
    },
    // Relation: a one-word swap.
    {
      draft: `There are three shapes. A small red circle is at the top. ${TAIL} The star is to the left of the square.`,
      pairs: [{ org: 'the left', target: 'the right' }],
    },
    // An inserted "the": a same-length re-wording of the place.
    {
      draft: `There are three shapes. A small red circle is at the the top. ${TAIL}`,
      pairs: [{ org: 'at the the top', target: 'in the top center' }],
    },
    // Several problems at once: count, colour, two stutters.
    {
      draft:
        'There are two shapes. A small green circle is at the top. A large blue star star at the bottom. A large ' +
        'orange square is in in bottom left.',
      want: `There are three shapes. A small red circle is at the top. ${TAIL}`,
    },
  ];
  for (const c of cases) {
    const r = correctDraft(SCENE, c.draft, tok);
    const pairs = assertContract(c.draft, r.answer, c.draft);
    if (c.pairs) assert.deepEqual(pairs, c.pairs, c.draft);
    if (c.want) assert.equal(r.corrected, c.want);
    assert.equal(r.remainingErrors, 0, c.draft);
    assert.equal(r.chaosAfter, 0, c.draft);
    assert.equal(r.fixedErrors, r.falseClaimsBefore);
  }
  // A problem without a same-length fix (cut off): not right, but no pair is invented.
  const cut = `There are three shapes. A small red circle is at the top. ${TAIL.slice(0, -1)}`;
  const r = correctDraft(SCENE, cut, tok);
  assert.deepEqual(r.answer, { kind: 'pairs', pairs: [] }, cut);
  assert.equal(r.corrected, joinWords(splitWords(cut)));
  // Deterministic.
  const d = `There are three shapes. An orange circle is at the top. ${TAIL}`;
  assert.deepEqual(correctDraft(SCENE, d, tok), correctDraft(SCENE, d));
});

test('grounded: sentences beyond word-level repair become true captioner sentences of the same length', () => {
  const head = 'There are three shapes. A small red circle is at the top.';
  for (const draft of [
    `${head} ${TAIL} A small red circle is at the top.`, // described twice: no word swap removes the duplicate
    `${head} A large blue star in in bottom bottom and and a large large square.`, // parallel-decoding chaos
  ]) {
    const r = correctDraft(SCENE, draft, tok);
    const pairs = assertContract(draft, r.answer, draft);
    assert.ok(pairs.length > 0, draft);
    assert.equal(r.remainingErrors, 0, r.corrected);
    assert.equal(r.chaosAfter, 0, r.corrected);
    assert.equal(splitWords(r.corrected).length, splitWords(draft).length);
    // Right sentences stay (at most a word of a neighbour moves, to make up a dropped stutter).
    assert.ok(r.corrected.startsWith('There are three shapes. A small red circle is'), r.corrected);
    const score = scoreCaption(SCENE, r.corrected);
    assert.ok(score.parses && score.trueClaims >= scoreCaption(SCENE, draft).trueClaims, r.corrected);
  }
});

test('grounded: orgs are made unique with neighbours; a case-sensitive tokenizer gets the draft spelling', () => {
  // "red" and "red circle" occur twice; only the second mention is wrong.
  const objs: Scene['objects'] = [
    { id: 'a', shape: 'circle', color: 'red', size: 'small', x: 0.17, y: 0.17, place: 'top left' },
    { id: 'b', shape: 'circle', color: 'red', size: 'large', x: 0.83, y: 0.83, place: 'bottom right' },
  ];
  const scene: Scene = { id: 'u', seed: 0, objects: objs, relations: deriveRelations(objs) };
  const draft = 'There are two shapes. A small red circle is in the top left. A large red circle is in the top right.';
  const r = correctDraft(scene, draft, tok);
  const pairs = assertContract(draft, r.answer, draft);
  assert.equal(pairs.length, 1);
  assert.equal(r.remainingErrors, 0);
  assert.equal(splitWords(draft).join(' ').split(pairs[0]!.org).length, 2, 'org occurs once');

  // A whitespace tokenizer that keeps case and attached punctuation: "An orange" must be quoted as written.
  const words = new Map<string, number>();
  const ws: Tokenizer = {
    size: 1000,
    firstOrdinaryId: 4,
    isSpecial: (id) => id < 4,
    idOf: (w) => words.get(w),
    encode: (text) =>
      text
        .split(/\s+/)
        .filter(Boolean)
        .map((w) => words.get(w) ?? (words.set(w, words.size + 4), words.size + 3)),
    decode: () => '',
    pieces: (ids) => ids.map(String),
    toJSON: () => ({}),
  };
  const d2 = `There are three shapes. An orange circle is at the top. ${TAIL}`;
  const r2 = correctDraft(SCENE, d2, ws);
  assert.deepEqual(r2.answer, { kind: 'pairs', pairs: [{ org: 'An orange', target: 'A red' }] });
  assert.deepEqual(filterPairs(d2, (r2.answer as { pairs: SegmentPair[] }).pairs, ws).dropped, []);
});

test('GroundedExpert.review: right, pairs, error without a scene graph, rejects when aborted', async () => {
  const expert = new GroundedExpert();
  assert.equal(expert.name, 'grounded:v2');
  assert.equal(new GroundedExpert({ minSegmentTokens: 1 }).name, 'grounded:v2:seg1');
  const base = { id: 'x', question: 'describe the image in detail .', reference: '' };
  const rightDraft = `There are three shapes. A small red circle is at the top. ${TAIL}`;
  // The scene as it comes out of data.jsonl (plain JSON), relations optional.
  const json = JSON.parse(JSON.stringify({ ...SCENE, relations: undefined })) as unknown;
  assert.ok(asScene(json));
  assert.deepEqual(await expert.review({ ...base, draft: rightDraft, scene: json }), { kind: 'right' });
  const wrong = await expert.review({
    ...base,
    draft: `There are three shapes. A small blue circle is at the top. ${TAIL}`,
    scene: SCENE,
  });
  assert.deepEqual(wrong, { kind: 'pairs', pairs: [{ org: 'small blue', target: 'small red' }] });
  const none = await expert.review({ ...base, draft: rightDraft });
  assert.equal(none.kind, 'error');
  assert.equal(
    (await expert.review({ ...base, draft: rightDraft, scene: { objects: [{ id: 'o', shape: 'blob' }] } })).kind,
    'error',
  );
  const ac = new AbortController();
  ac.abort();
  await assert.rejects(expert.review({ ...base, draft: rightDraft, scene: SCENE }, ac.signal));
  // With one-token segments allowed, the org is just the wrong word.
  const one = await new GroundedExpert({ minSegmentTokens: 1 }).review({
    ...base,
    draft: `There are three shapes. A small green circle is at the top. ${TAIL}`,
    scene: SCENE,
  });
  assert.deepEqual(one, { kind: 'pairs', pairs: [{ org: 'green', target: 'red' }] });
});
