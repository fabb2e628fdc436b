import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { Rng } from '../src/util/rng.js';
import { splitWords } from '../src/tokenizer/word.js';
import { EOS_ID, MASK_ID, PAD_ID } from '../src/tokenizer/tokenizer.js';
import {
  COLORS,
  MAX_JITTER,
  PLACES,
  RADIUS,
  SHAPES,
  type Scene,
  type SceneObject,
  deriveRelations,
  generateScene,
  objectGap,
  placeCell,
} from '../src/benchmark/scene.js';
import { COLOR_RGB, encodePng, renderScene, renderScenePng } from '../src/benchmark/render.js';
import {
  BENCHMARK_PROMPT,
  BENCHMARK_VOCABULARY,
  benchmarkTokenizer,
  canonicalCaption,
  exhaustiveCaption,
  writeCaption,
  writeCaptions,
} from '../src/benchmark/captioner.js';
import { sceneRecord } from '../src/benchmark/dataset.js';
import { parseCaption } from '../src/benchmark/parser.js';
import {
  errorSpans,
  meanCI,
  pairedDifference,
  sceneFacts,
  scoreCaption,
  scoreTokenIds,
  summarize,
} from '../src/benchmark/metrics.js';

function scenes(seed: number, count: number, opts = {}): Scene[] {
  const rng = new Rng(seed);
  return Array.from({ length: count }, (_, i) => generateScene(rng.fork(), { seed: i, ...opts }));
}

/** A hand-made scene: objects as "size color shape@place". */
function sceneOf(specs: string[]): Scene {
  const objects: SceneObject[] = specs.map((s, i) => {
    const [desc, place] = s.split('@') as [string, (typeof PLACES)[number]];
    const [size, color, shape] = desc.split(' ') as [SceneObject['size'], SceneObject['color'], SceneObject['shape']];
    const { row, col } = placeCell(place);
    return { id: `o${i}`, shape, color, size, x: (col + 0.5) / 3, y: (row + 0.5) / 3, place };
  });
  return { id: 'hand', seed: 0, objects, relations: deriveRelations(objects) };
}

// ---------------------------------------------------------------- scenes

test('scenes: seeded, within bounds, one object per place, never overlapping', () => {
  const a = scenes(1, 300);
  const b = scenes(1, 300);
  assert.equal(JSON.stringify(a), JSON.stringify(b));
  const shapes = new Set<string>();
  const colors = new Set<string>();
  for (const s of a) {
    assert.ok(s.objects.length >= 1 && s.objects.length <= 6);
    assert.equal(new Set(s.objects.map((o) => o.place)).size, s.objects.length);
    for (const o of s.objects) {
      shapes.add(o.shape);
      colors.add(o.color);
      const { row, col } = placeCell(o.place);
      // Inside its own cell (bounding circle included).
      const r = RADIUS[o.size];
      assert.ok(o.x - r > col / 3 && o.x + r < (col + 1) / 3, `x of ${JSON.stringify(o)}`);
      assert.ok(o.y - r > row / 3 && o.y + r < (row + 1) / 3, `y of ${JSON.stringify(o)}`);
      assert.ok(Math.abs(o.x - (col + 0.5) / 3) <= MAX_JITTER[o.size] + 1e-4);
    }
    for (let i = 0; i < s.objects.length; i++)
      for (let k = i + 1; k < s.objects.length; k++) assert.ok(objectGap(s.objects[i]!, s.objects[k]!) > 0);
  }
  assert.equal(shapes.size, SHAPES.length);
  assert.equal(colors.size, COLORS.length);
  const custom = scenes(2, 50, { minObjects: 4, maxObjects: 5 });
  assert.ok(custom.every((s) => s.objects.length >= 4 && s.objects.length <= 5));
  assert.throws(() => generateScene(new Rng(1), { minObjects: 3, maxObjects: 2 }), RangeError);
});

test('scenes: relations follow the grid (margin rule never a close call)', () => {
  for (const s of scenes(3, 200)) {
    const byId = new Map(s.objects.map((o) => [o.id, o]));
    let expected = 0;
    for (let i = 0; i < s.objects.length; i++) {
      for (let k = i + 1; k < s.objects.length; k++) {
        const a = placeCell(s.objects[i]!.place);
        const b = placeCell(s.objects[k]!.place);
        expected += (a.col !== b.col ? 1 : 0) + (a.row !== b.row ? 1 : 0);
      }
    }
    assert.equal(s.relations.length, expected);
    for (const r of s.relations) {
      const a = placeCell(byId.get(r.subject)!.place);
      const b = placeCell(byId.get(r.object)!.place);
      if (r.relation === 'left of') assert.ok(a.col < b.col);
      else assert.ok(a.row < b.row);
      assert.equal(r.aligned, a.col === b.col || a.row === b.row);
    }
  }
});

// ---------------------------------------------------------------- rendering

test('render: deterministic, PNG round-trips, objects drawn in their colour', async () => {
  const [s] = scenes(4, 1, { minObjects: 5, maxObjects: 5 }) as [Scene];
  const a = renderScenePng(s);
  const b = renderScenePng(s);
  assert.deepEqual(a.png, b.png);
  assert.deepEqual(a.rgb, renderScene(s).rgb);
  assert.equal(a.rgb.length, 64 * 64 * 3);
  const decoded = await sharp(a.png).removeAlpha().raw().toBuffer();
  assert.deepEqual(new Uint8Array(decoded), a.rgb);
  assert.deepEqual(new Uint8Array(await sharp(encodePng(a)).removeAlpha().raw().toBuffer()), a.rgb);
  const big = renderScene(s, 128);
  assert.equal(big.width, 128);
  assert.equal(big.rgb.length, 128 * 128 * 3);
  for (const sc of scenes(5, 40)) {
    const img = renderScene(sc);
    for (const o of sc.objects) {
      if (o.shape === 'ring') continue; // hollow centre
      const px = Math.floor(o.x * 64);
      const py = Math.floor(o.y * 64);
      const at = (py * 64 + px) * 3;
      assert.deepEqual([...img.rgb.subarray(at, at + 3)], [...COLOR_RGB[o.color]], `${o.shape} ${o.color}`);
    }
    // Empty cell centres stay black.
    for (const place of PLACES) {
      if (sc.objects.some((o) => o.place === place)) continue;
      const { row, col } = placeCell(place);
      const at = (Math.floor(((row + 0.5) / 3) * 64) * 64 + Math.floor(((col + 0.5) / 3) * 64)) * 3;
      assert.deepEqual([...img.rgb.subarray(at, at + 3)], [0, 0, 0]);
    }
  }
});

// ---------------------------------------------------------------- captions

test('captions: every caption parses completely, is true, fits 95 tokens, in vocabulary', () => {
  const vocab = new Set(BENCHMARK_VOCABULARY);
  const lengths: number[] = [];
  const words: number[] = [];
  const openings = new Set<string>();
  const rng = new Rng(6);
  for (const s of scenes(7, 1000)) {
    const caps = writeCaptions(s, rng.fork(), 3);
    assert.equal(caps.length, 3);
    assert.equal(new Set(caps.map((c) => c.text)).size, 3, 'captions of a scene differ');
    for (const c of caps) {
      assert.deepEqual(splitWords(c.text), c.tokens);
      for (const t of c.tokens) assert.ok(vocab.has(t), `word outside the vocabulary: ${t}`);
      lengths.push(c.tokens.length);
      words.push(c.tokens.filter((t) => /^[a-z]/.test(t)).length);
      const score = scoreCaption(s, c.text);
      assert.equal(score.fluency, 1, c.text);
      assert.equal(score.hasUnreadable, false, c.text);
      assert.equal(score.repeatRate, 0);
      assert.equal(score.factuality, 1, `${c.text}\n${JSON.stringify(score.errors)}`);
      // Coverage equals what the captioner says it mentions, fact for fact.
      assert.deepEqual([...score.coveredFacts].sort(), [...c.facts].sort(), c.text);
      assert.equal(score.factCoverage, c.facts.length / sceneFacts(s).length);
      // Every reference caption describes every object fully and parses: it scores 1.0.
      assert.equal(score.coverage, 1, c.text);
      assert.equal(score.objectFactuality, 1, c.text);
      assert.equal(score.parses, 1, c.text);
      for (const sent of c.text.split('. ')) openings.add(splitWords(sent).slice(0, 2).join(' '));
    }
  }
  const max = Math.max(...lengths);
  assert.ok(max <= 95, `longest caption has ${max} tokens`);
  assert.ok(Math.max(...words) <= 90);
  // Short scenes may fall a little short of 30 words; almost no caption does.
  assert.ok(words.filter((w) => w < 30).length <= lengths.length * 0.01);
  assert.ok(openings.size >= 25, `only ${openings.size} distinct sentence openings`);
});

test('captions: the same seed gives the same captions; the tokenizer covers them', () => {
  const [s] = scenes(8, 1, { minObjects: 6, maxObjects: 6 }) as [Scene];
  assert.deepEqual(writeCaptions(s, new Rng(3), 4), writeCaptions(s, new Rng(3), 4));
  const tok = benchmarkTokenizer();
  assert.equal(tok.size, BENCHMARK_VOCABULARY.length + 4);
  assert.ok(tok.size < 300);
  const c = writeCaption(s, new Rng(1));
  const ids = tok.encodeStrict(c.text);
  assert.ok(ids.length + 1 <= 96);
  assert.equal(tok.decode(ids), c.text);
  tok.encodeStrict(BENCHMARK_PROMPT);
  // Generated ids: scored up to EOS; a leftover mask is unreadable.
  const padded = [...ids, EOS_ID, ...new Array(96 - ids.length - 1).fill(PAD_ID)];
  assert.deepEqual(scoreTokenIds(s, padded, tok), scoreCaption(s, c.text));
  const masked = [...ids];
  masked[3] = MASK_ID;
  const m = scoreTokenIds(s, masked, tok);
  assert.ok(m.hasUnreadable && m.fluency < 1);
});

test('captions: a caption listing every fact has coverage 1 and CAPTURE 1', () => {
  const rng = new Rng(9);
  for (const s of scenes(10, 200)) {
    const c = exhaustiveCaption(s, rng.fork());
    const score = scoreCaption(s, c.text);
    assert.equal(score.factuality, 1, c.text);
    assert.equal(score.coverage, 1, `${c.text}\n${JSON.stringify(score.coveredFacts)}`);
    assert.equal(score.capture, 1, c.text);
  }
});

// ---------------------------------------------------------------- parser and metrics on hand-made cases

test('metrics: counts, duplicates, places, relations and references are judged exactly', () => {
  const s = sceneOf([
    'small red circle@top left',
    'small red circle@right',
    'large blue star@center',
    'small green ring@bottom',
  ]);
  const good =
    'There are four shapes. Two small red circles are in the top left and on the right. A large blue star is in the ' +
    'center. The star is above the ring. There is a small green ring at the bottom.';
  const g = scoreCaption(s, good);
  assert.equal(g.factuality, 1, JSON.stringify(g.errors));
  assert.equal(g.fluency, 1);
  // facts: total 1 + objects 4 + places 4 + aligned unique pairs (star above ring) 1 = 10, all stated
  assert.equal(g.totalFacts, 10);
  assert.equal(g.coverage, 1);

  const bad =
    'There are five shapes. Three small red circles are in the top left and on the right. A large blue star is in ' +
    'the center. The star is below the ring. The red circle is on the left. There is a small green ring at the ' +
    'bottom. Another small green ring is at the bottom.';
  const b = scoreCaption(s, bad);
  const toks = splitWords(bad);
  const blamed = b.errors.map((e) => `${e.reason}:${e.text}`);
  assert.deepEqual(blamed, [
    'total:five',
    'count:three',
    'relation:below',
    'ambiguous:the red circle',
    'duplicate:another small green ring',
  ]);
  assert.equal(b.errors[0]!.correct, 'four');
  assert.equal(b.errors[1]!.correct, 'two');
  assert.equal(b.errors[2]!.correct, 'above');
  assert.equal(toks[errorSpans(b)[0]![0]], 'five');
  assert.ok(b.factuality < 1 && b.factuality > 0.4);

  // A wrong attribute is blamed on the word that matches nothing.
  const w = scoreCaption(s, 'A large purple star is in the center.');
  assert.equal(w.errors.length, 2); // the mention, and its place (blamed on the same word)
  for (const e of w.errors) assert.equal(e.text, 'purple');
  // A wrong place with a right object is blamed on the place phrase, with a same-length fix.
  const p = scoreCaption(s, 'The blue star is in the top right.');
  assert.equal(p.errors[0]!.text, 'in the top right');
  assert.equal(p.errors[0]!.correct, 'in the center');
  assert.equal(scoreCaption(s, 'The background is red.').errors[0]!.reason, 'background');
});

test('metrics: CAPTURE F1s and coverage of a partial caption', () => {
  const s = sceneOf(['large blue star@left', 'small red circle@center', 'small white square@bottom right']);
  // Objects: 2 predicted (star true, hexagon false) of 3; attributes: star size+colour+place
  // true, hexagon size+colour false -> 3 true of 5 units, 9 facts; no relation facts are
  // stated (star left of circle is an aligned fact) -> relation F1 0.
  // "somewhere" cannot be read: one unreadable span, counted as a third, wrong, object.
  const sc = scoreCaption(s, 'A large blue star is on the left. A small red hexagon is somewhere.');
  const pO = 1 / 3,
    rO = 1 / 3;
  const f1O = (2 * pO * rO) / (pO + rO);
  assert.ok(Math.abs(sc.f1Object - f1O) < 1e-9, String(sc.f1Object));
  const pA = 3 / 5,
    rA = 3 / 9;
  assert.ok(Math.abs(sc.f1Attribute - (2 * pA * rA) / (pA + rA)) < 1e-9, String(sc.f1Attribute));
  assert.equal(sc.f1Relation, 0);
  assert.ok(Math.abs(sc.capture - (0.5 * sc.f1Object + 0.5 * sc.f1Attribute) / 1.2) < 1e-12);
  assert.equal(sc.fluency, 0.5); // "is somewhere" is not a sentence form
  assert.deepEqual(sc.coveredFacts, ['object:o0', 'place:o0']);
  // One of three objects fully described; claims: star (true), its place (true), hexagon
  // (false), plus the unreadable span against them.
  assert.equal(sc.coverage, 1 / 3);
  assert.equal(sc.describedObjects, 1);
  assert.equal(sc.objectFactuality, 2 / 4);
  assert.equal(sc.parses, 0);
});

test('metrics: the always-true background is reported apart and an unreadable span never helps', () => {
  const s = sceneOf(['large blue star@left']);
  const plain = scoreCaption(s, 'There is a large blue star on the left.');
  const withBackground = scoreCaption(s, 'There is a large blue star on the left. The background is black.');
  assert.equal(withBackground.backgroundClaims, 1);
  assert.equal(withBackground.claims, plain.claims);
  assert.equal(withBackground.factuality, plain.factuality);
  const wrong = scoreCaption(s, 'There is a large red star on the left.');
  const wrongPlusBackground = scoreCaption(s, 'There is a large red star on the left. The background is black.');
  assert.equal(
    wrongPlusBackground.factuality,
    wrong.factuality,
    'a true background claim does not dilute a false claim',
  );
  // Breaking the wrong word into unreadable text does not raise any score.
  const broken = scoreCaption(s, 'There is a large star star on the left.');
  assert.ok(broken.hasUnreadable);
  for (const m of ['factuality', 'objectFactuality', 'coverage', 'capture', 'parses'] as const) {
    assert.ok(broken[m] <= plain[m], `${m}: broken ${broken[m]} > readable ${plain[m]}`);
  }
  assert.ok(broken.factuality < 1);
});

// ---------------------------------------------------------------- broken text

test('parser: broken text never throws and scores low on fluency', () => {
  const rng = new Rng(11);
  const pool = [...BENCHMARK_VOCABULARY, '[MASK]', '[UNK]', 'zebra', '!', '?'];
  const ss = scenes(12, 60);
  for (let k = 0; k < 300; k++) {
    const s = ss[k % ss.length]!;
    const soup = Array.from({ length: 1 + rng.int(95) }, () => rng.choice(pool));
    const sc = scoreCaption(s, soup);
    assert.ok(sc.fluency <= 0.5, soup.join(' '));
    for (const [a, b] of [...sc.unreadable, ...sc.errors.flatMap((e) => e.blame)])
      assert.ok(a >= 0 && a < b && b <= soup.length);
  }
  // Mutations of good captions: drop, duplicate and swap tokens.
  for (let k = 0; k < 300; k++) {
    const s = ss[k % ss.length]!;
    const t = [...writeCaption(s, rng.fork()).tokens];
    for (let m = 0; m < 1 + rng.int(6); m++) {
      const i = rng.int(t.length);
      const op = rng.int(3);
      if (op === 0) t.splice(i, 1);
      else if (op === 1) t.splice(i, 0, t[i]!);
      else t[i] = rng.choice(pool);
    }
    const sc = scoreCaption(s, t);
    assert.ok(sc.fluency <= 1 && sc.factuality >= 0 && sc.factuality <= 1);
  }
  assert.doesNotThrow(() => parseCaption(''));
  assert.doesNotThrow(() => parseCaption('.....,,,, ¿¡ 日本 🙂 \u0000'));

  const s = ss[0]!;
  const good = writeCaption(s, new Rng(2));
  // Stutter: every fifth token doubled.
  const stutter = good.tokens.flatMap((t, i) => (i % 5 === 0 ? [t, t] : [t]));
  const st = scoreCaption(s, stutter);
  assert.equal(st.fluency, 0);
  assert.ok(st.repeatRate > 0.1);
  assert.ok(st.hasUnreadable);
  // What it says is still read and still true, but each unreadable span counts against it.
  assert.equal(st.errors.length, 0);
  assert.ok(st.factuality < 1 && st.factuality > 0);
  assert.equal(st.parses, 0);
  // Truncated: the cut-off sentence does not count as complete.
  const cut = good.tokens.slice(0, good.tokens.length - 3);
  const ct = scoreCaption(s, cut);
  assert.ok(ct.fluency < 1);
  assert.equal(ct.sentences, good.tokens.filter((t) => t === '.').length);
  // Token soup scores low everywhere.
  const soup = scoreCaption(s, 'circle the left of two above . star star star red in the');
  assert.equal(soup.fluency, 0);
  assert.ok(soup.unreadableTokens >= 8);
  assert.equal(scoreCaption(s, '').factuality, 0);
});

// ---------------------------------------------------------------- summaries

test('summaries: means with Student-t 95% intervals', () => {
  const e = meanCI([1, 2, 3, 4]);
  assert.equal(e.mean, 2.5);
  const half = (3.182 * Math.sqrt(5 / 3)) / 2;
  assert.ok(Math.abs(e.hi - e.mean - half) < 1e-9);
  assert.deepEqual(meanCI([7]), { mean: 7, lo: 7, hi: 7, n: 1 });
  assert.ok(Number.isNaN(meanCI([]).mean));
  const ss = scenes(13, 30);
  const rng = new Rng(1);
  const good = ss.map((s) => scoreCaption(s, writeCaption(s, rng.fork()).text));
  const bad = ss.map((s) => scoreCaption(s, 'there are there are shapes shapes .'));
  const sum = summarize(good);
  assert.equal(sum.factuality.mean, 1);
  assert.equal(sum.fluency.mean, 1);
  assert.equal(sum.unreadableShare.mean, 0);
  assert.equal(summarize(bad).unreadableShare.mean, 1);
  const d = pairedDifference(good, bad, 'capture');
  assert.ok(d.lo > 0, 'good captions beat broken ones with a CI excluding 0');
});

test('the canonical caption is one fixed style: the same for a scene every time, and perfect', () => {
  const openings = new Set<string>();
  for (const r of Array.from({ length: 60 }, (_, i) => sceneRecord('val', 0, i))) {
    const c = canonicalCaption(r.scene);
    assert.equal(canonicalCaption(r.scene).text, c.text);
    const score = scoreCaption(r.scene, c.text);
    assert.equal(score.objectFactuality, 1, c.text);
    assert.equal(score.coverage, 1, c.text);
    assert.equal(score.parses, 1, c.text);
    // The count comes last, in one form.
    assert.match(c.text, /In total, there (is only one shape|are \w+ shapes)\.( The background is black\.)?$/, c.text);
    openings.add(c.tokens.slice(0, 2).join(' '));
  }
  assert.ok(openings.size <= 4, `openings: ${[...openings].join(' | ')}`);
});
