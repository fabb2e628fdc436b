import { test } from 'node:test';
import assert from 'node:assert/strict';
import { splitWords, WordTokenizer } from '../src/tokenizer/word.js';
import type { Tokenizer } from '../src/tokenizer/tokenizer.js';
import {
  filterPairs,
  findAll,
  isRightAnswer,
  pairsToSpans,
  parseAnswer,
  ReviewStats,
  stripCodeFences,
} from '../src/experts/pairs.js';

const WORDS =
  'a an the there is are one two three small large red blue green yellow circle circles square squares triangle star ' +
  'in on of and to top bottom left right center above below image shows black background , . it';
const tok = new WordTokenizer(splitWords(WORDS));

const DRAFT =
  'There is a small red circle in the top left. A blue square is below the circle, and a large large star is on the ' +
  'right.';

test('parseAnswer: right in any case, with punctuation, quotes, markdown or a fence', () => {
  for (const raw of [
    'right',
    'Right.',
    '  RIGHT!\n',
    '**right**',
    '"right"',
    '`right`',
    '```\nright\n```',
    '<think>The draft says red; it is red.</think>\nright',
  ]) {
    assert.equal(parseAnswer(raw).kind, 'right', raw);
  }
  assert.ok(isRightAnswer('Right'));
  assert.ok(!isRightAnswer('not right'));
  assert.equal(parseAnswer('[]').kind, 'right', 'an empty list means nothing to fix');
  assert.equal(parseAnswer('{"pairs": []}').kind, 'right');
});

test('parseAnswer: plain, fenced, wrapped and prose-wrapped JSON lists', () => {
  const pairs = [{ org: 'small red circle', target: 'small blue circle' }];
  const cases = [
    JSON.stringify(pairs),
    '<think>\ncircle is blue\n</think>\n' + JSON.stringify(pairs),
    '```json\n' + JSON.stringify(pairs, null, 2) + '\n```',
    '```\n' + JSON.stringify(pairs) + '```',
    'Here are the corrections:\n```json\n' + JSON.stringify(pairs) + '\n```\nDone.',
    '```json\n' + JSON.stringify(pairs), // cut-off fence
    JSON.stringify({ pairs }),
    JSON.stringify({ corrections: pairs }),
    JSON.stringify(pairs[0]),
    'Corrections: ' + JSON.stringify(pairs) + ' (that is all)',
  ];
  for (const raw of cases) {
    const a = parseAnswer(raw);
    assert.equal(a.kind, 'pairs', raw);
    if (a.kind === 'pairs') {
      assert.deepEqual(a.pairs, pairs, raw);
      assert.equal(a.raw, raw);
    }
  }
  assert.equal(stripCodeFences('```json\n[1]\n```'), '[1]');
  assert.equal(stripCodeFences(' plain '), 'plain');
});

test('parseAnswer: malformed answers are reported with a reason, never thrown', () => {
  const cases: Array<[string, RegExp]> = [
    ['', /empty/],
    ['```json\n```', /empty/],
    ['[{"org": "a red circle", "target": ', /not JSON/],
    ['The draft looks mostly fine.', /not JSON/],
    ['[{"org": "red circle"}]', /item 1/],
    ['[{"org": "red", "target": "blue"}, 7]', /item 2/],
    ['{"foo": 1}', /object/],
    ['42', /number/],
    ['"wrong"', /string/],
  ];
  for (const [raw, reason] of cases) {
    const a = parseAnswer(raw);
    assert.equal(a.kind, 'malformed', raw);
    if (a.kind === 'malformed') {
      assert.match(a.reason, reason, raw);
      assert.equal(a.raw, raw);
    }
  }
});

test('findAll: every (overlapping) occurrence', () => {
  assert.deepEqual(findAll([1, 2, 1, 2, 1], [1, 2, 1]), [0, 2]);
  assert.deepEqual(findAll([1, 2, 3], []), []);
  assert.deepEqual(findAll([1], [1, 2]), []);
});

test('filterPairs: keeps unique same-length pairs, drops the rest with their reason', () => {
  const r = filterPairs(
    DRAFT,
    [
      { org: 'small red circle', target: 'small blue circle' }, // kept
      { org: 'Large large star', target: 'large yellow star' }, // kept: case and token-level match
      { org: 'a blue square is', target: 'two blue squares are' }, // kept
      { org: 'blue square', target: 'green squares' }, // overlap with the previous kept pair
      { org: 'the', target: 'a' }, // ambiguous
      { org: 'green triangle', target: 'red triangle' }, // not-found
      { org: 'in the top left', target: 'in the top left' }, // no-change
      { org: 'red circle in', target: 'blue circle in' }, // overlap with the first kept pair
      { org: '  ', target: 'red' }, // empty
      { org: 'on the right', target: 'on the left of it' }, // length-mismatch
    ],
    tok,
  );
  assert.deepEqual(
    r.kept.map((p) => p.org),
    ['small red circle', 'Large large star', 'a blue square is'],
  );
  const reasons = Object.fromEntries(r.dropped.map((d) => [d.org, d.reason]));
  assert.deepEqual(reasons, {
    'blue square': 'overlap',
    the: 'ambiguous',
    'green triangle': 'not-found',
    'in the top left': 'no-change',
    'red circle in': 'overlap',
    '  ': 'empty',
    'on the right': 'length-mismatch',
  });
  // Located on token ids.
  assert.deepEqual(r.draftIds, tok.encode(DRAFT));
  for (const k of r.kept) {
    assert.deepEqual(r.draftIds.slice(k.start, k.start + k.orgIds.length), k.orgIds);
    assert.equal(k.targetIds.length, k.orgIds.length);
  }
});

test('filterPairs: a length mismatch is dropped with its reason', () => {
  const r = filterPairs(DRAFT, [{ org: 'large large star', target: 'large star' }], tok);
  assert.equal(r.kept.length, 0);
  assert.deepEqual(r.dropped, [{ org: 'large large star', target: 'large star', reason: 'length-mismatch' }]);
});

test('filterPairs: punctuation counts as a token', () => {
  const r = filterPairs(DRAFT, [{ org: 'circle, and a', target: 'circle and a' }], tok);
  assert.equal(r.dropped[0]?.reason, 'length-mismatch');
  const r2 = filterPairs(DRAFT, [{ org: 'circle, and a large', target: 'circle, and a small' }], tok);
  assert.equal(r2.kept.length, 1);
});

test('filterPairs: a BPE-like tokenizer whose encoding depends on a leading space', () => {
  // Toy tokenizer: a word after a space gets id 100 + k, at the start of the text 200 + k.
  const vocab = ['red', 'blue', 'circle', 'square', 'a', 'is', 'there'];
  const bpe: Tokenizer = {
    size: 300,
    firstOrdinaryId: 4,
    isSpecial: (id) => id < 4,
    idOf: () => undefined,
    encode: (text) => {
      const out: number[] = [];
      const re = /(\s*)(\S+)/g;
      let m: RegExpExecArray | null;
      let first = true;
      while ((m = re.exec(text))) {
        const k = vocab.indexOf(m[2]!.toLowerCase());
        out.push((m[1]!.length > 0 || !first ? 100 : 200) + (k < 0 ? 99 : k));
        first = false;
      }
      return out;
    },
    decode: () => '',
    pieces: () => [],
    toJSON: () => ({}),
  };
  const draft = 'there is a red circle';
  const r = filterPairs(draft, [{ org: 'red circle', target: 'blue circle' }], bpe);
  assert.equal(r.kept.length, 1, JSON.stringify(r.dropped));
  assert.deepEqual(r.kept[0]!.targetIds, [101, 102]);
  const s = pairsToSpans(r.draftIds, r.kept, bpe);
  assert.deepEqual(s.correct, bpe.encode('there is a blue circle'));
  // Both encodings of "red" are pooled: one at the start, one after a space -> ambiguous.
  const r2 = filterPairs('red is a red circle', [{ org: 'red', target: 'blue' }], bpe);
  assert.equal(r2.dropped[0]?.reason, 'ambiguous');
});

test('pairsToSpans: whole org spans by default, changed positions on request', () => {
  const r = filterPairs(
    DRAFT,
    [
      { org: 'large large star', target: 'large yellow star' },
      { org: 'small red circle', target: 'large blue circle' },
    ],
    tok,
  );
  assert.equal(r.kept.length, 2);
  const eos = [2, 2, 2];
  const ids = [...r.draftIds, ...eos]; // EOS padding does not matter
  const s = pairsToSpans(ids, r.kept, tok);
  assert.deepEqual(s.wrong, ids);
  assert.equal(s.correct.length, ids.length);
  assert.equal(
    tok.decode(s.correct),
    'There is a large blue circle in the top left. A blue square is below the circle, and a large yellow star is on ' +
      'the right.',
  );
  const at = (words: string): number => findAll(ids, tok.encode(words))[0]!;
  // Sorted by position, whole org spans.
  assert.deepEqual(s.spans, [
    { start: at('small red circle'), length: 3 },
    { start: at('large large star'), length: 3 },
  ]);
  assert.deepEqual(s.skipped, []);
  // Only the tokens that change, as runs.
  const c = pairsToSpans(ids, r.kept, tok, { spans: 'changed' });
  assert.deepEqual(c.correct, s.correct);
  assert.deepEqual(c.spans, [
    { start: at('small red circle'), length: 2 },
    { start: at('large large star') + 1, length: 1 },
  ]);
  // Plain pairs are located by encoding; unlocatable or overlapping ones are skipped.
  const p = pairsToSpans(
    ids,
    [
      { org: 'blue square', target: 'green square' },
      { org: 'the', target: 'a' },
      { org: 'square is', target: 'circle is' },
    ],
    tok,
  );
  assert.deepEqual(p.spans, [{ start: at('blue square'), length: 2 }]);
  assert.deepEqual(
    p.skipped.map((x) => x.org),
    ['the', 'square is'],
  );
  // Nothing kept: correct equals wrong, no spans.
  const none = pairsToSpans(ids, [], tok);
  assert.deepEqual(none.correct, ids);
  assert.deepEqual(none.spans, []);
});

test('ReviewStats: counts answers, kept pairs and drops by reason', () => {
  const st = new ReviewStats();
  st.recordAnswer({ kind: 'right' });
  st.recordAnswer({ kind: 'right', raw: 'Right.' });
  st.recordAnswer({ kind: 'malformed', raw: 'x', reason: 'not JSON (Unexpected token x)' });
  st.recordAnswer({ kind: 'error', reason: 'HTTP 400' });
  const pairs = [
    { org: 'small red circle', target: 'small blue circle' },
    { org: 'the', target: 'a' },
    { org: 'on the right', target: 'on the left of it' },
  ];
  st.recordAnswer({ kind: 'pairs', pairs });
  st.recordFilter(filterPairs(DRAFT, pairs, tok));
  assert.deepEqual(st.toJSON(), {
    answers: 5,
    right: 2,
    withPairs: 1,
    malformed: 1,
    errors: 1,
    pairsProposed: 3,
    pairsKept: 1,
    draftsWithKeptPairs: 1,
    dropped: { empty: 0, 'not-found': 0, ambiguous: 1, 'length-mismatch': 1, 'no-change': 0, overlap: 0 },
    malformedReasons: { 'not JSON': 1 },
  });
  assert.equal(st.pairsDropped, 2);
  assert.match(
    st.summary(),
    new RegExp(
      String.raw`5 answers: 2 right, 1 with pairs, 1 malformed, 1 errors; ` +
        String.raw`pairs 1 kept, 2 dropped \(ambiguous 1, length-mismatch 1\)`,
    ),
  );
  const merged = new ReviewStats().merge(st).merge(st);
  assert.equal(merged.right, 4);
  assert.equal(merged.dropped.ambiguous, 2);
});
