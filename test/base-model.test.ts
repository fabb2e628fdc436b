/**
 * The base model: its stages train what they say and nothing else, and the checks of
 * `rediff diagnose` fail when the image stops mattering.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { groundedWordIds, benchmarkTokenizer } from '../src/benchmark/captioner.js';
import {
  CELL_CLASSES,
  EMPTY_CELL,
  cellClass,
  cellObject,
  patchCellTargets,
  sceneCells,
} from '../src/benchmark/cells.js';
import { COLORS, SHAPES, SIZES } from '../src/benchmark/scene.js';
import { benchmarkTrainingRecord, generateBenchmarkSplit } from '../src/data/training-data.js';
import { imageReliance, placeClaimsHeld, probeAccuracy, textOnlyLoss } from '../src/training/stages/diagnosis.js';
import { placeAttention, placePhrases } from '../src/evaluation/attention.js';
import type { Scene } from '../src/benchmark/scene.js';
import { presetConfig } from '../src/model/config.js';
import { loadModelState } from '../src/model/io.js';
import { initParams } from '../src/model/params.js';
import { BASE_PRESETS, baseModelDir, trainBaseModel } from '../src/training/base-model.js';
import { shipBase } from '../src/report/ship-base.js';
import { type TrainSettings, runTraining } from '../src/training/run.js';
import { MASK_PREDICTION_MIX } from '../src/training/samples.js';
import type { TrainingRecord } from '../src/data/training-record.js';
import { stagePlan } from '../src/training/stages/plans.js';
import { Trainer } from '../src/training/trainer.js';
import { makeSample } from '../src/training/samples.js';
import { SPECIAL_TOKENS } from '../src/tokenizer/word.js';
import { EOS_ID, MASK_ID } from '../src/tokenizer/tokenizer.js';
import { Rng } from '../src/util/rng.js';

const tokenizer = benchmarkTokenizer();
/** The tiny preset on the grid-aligned image (48 px, 16 px patches: one token per cell). */
const GRID_TINY = presetConfig('tiny', tokenizer.size, { imageSize: 48, patchSize: 16, cellProbe: true });

function records(
  split: string,
  n: number,
  opts: { minObjects?: number; maxObjects?: number } = {},
): { recs: TrainingRecord[]; split: ReturnType<typeof generateBenchmarkSplit> } {
  const s = generateBenchmarkSplit(split, 0, n, GRID_TINY.imageSize, opts);
  return { recs: s.records.map((r, i) => benchmarkTrainingRecord(r, s.rgb[i]!, tokenizer)), split: s };
}

const settings = (stage: string, steps: number, lr: number, batchSize = 16): TrainSettings => ({
  stage,
  steps,
  batchSize,
  lr,
  warmupSteps: Math.min(20, steps - 1),
  minLrRatio: 0.1,
  weightDecay: 0.01,
  clipNorm: 1,
  seed: 0,
  checkpointEvery: steps,
  mix: MASK_PREDICTION_MIX,
});

const tmp = (name: string): string => path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'rediff-base-')), name);

test("cells: each (shape, colour, size) is a class, read back exactly; a patch maps to its centre's cell", () => {
  const seen = new Set<number>();
  for (const shape of SHAPES)
    for (const color of COLORS)
      for (const size of SIZES) {
        const k = cellClass({ shape, color, size });
        assert.ok(k > EMPTY_CELL && k < CELL_CLASSES);
        assert.deepEqual(cellObject(k), { shape, color, size });
        seen.add(k);
      }
  assert.equal(seen.size, CELL_CLASSES - 1);
  const cells = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.deepEqual(patchCellTargets(cells, 3), cells);
  // 4x4 patches: centres at 1/8, 3/8, 5/8, 7/8 fall in cells 0, 1, 1, 2.
  assert.deepEqual([...patchCellTargets(cells, 4).subarray(0, 4)], [1, 2, 2, 3]);
  const { split } = records('val', 5);
  for (const r of split.records) {
    const c = sceneCells(r.scene);
    assert.equal([...c].filter((k) => k !== EMPTY_CELL).length, r.scene.objects.length);
  }
});

test('stages: each trains only its own parameters', async () => {
  const { recs } = records('train', 8);
  const vocab = { firstOrdinaryId: SPECIAL_TOKENS.length, vocabSize: GRID_TINY.vocabSize };
  const rng = new Rng(1);
  const batch = recs.map((r) => makeSample(GRID_TINY, r, rng, MASK_PREDICTION_MIX, vocab));
  const want: Record<string, (n: string) => boolean> = {
    language: (n) => n.startsWith('lm.'),
    align: (n) => n.startsWith('projector.'),
    'mask-prediction': (n) => !n.startsWith('probe.'),
  };
  for (const [stage, trains] of Object.entries(want)) {
    const params = initParams(GRID_TINY, 3);
    const before = new Map([...params].map(([k, v]) => [k, Float32Array.from(v)]));
    const trainer = new Trainer(GRID_TINY, params, undefined, undefined, stagePlan(stage as 'language'));
    await trainer.step(batch, 1e-2);
    await trainer.dispose();
    for (const [name, v] of params) {
      const changed = v.some((x, i) => x !== before.get(name)![i]);
      assert.equal(changed, trains(name), `${stage}: ${name} ${changed ? 'changed' : 'did not change'}`);
    }
  }
});

test('vision stage: the per-cell probe learns to read unseen scenes', async () => {
  const { recs } = records('train', 1000);
  const out = tmp('vision');
  const res = await runTraining({
    outDir: out,
    records: recs,
    initial: { config: GRID_TINY, tokenizer, params: initParams(GRID_TINY, 0) },
    settings: settings('vision', 600, 3e-3, 32),
    plan: stagePlan('vision'),
    resume: false,
    progress: false,
  });
  const val = records('val', 64).recs;
  const acc = await probeAccuracy(res.config, res.params, val);
  const untrained = await probeAccuracy(GRID_TINY, initParams(GRID_TINY, 0), val);
  assert.ok(acc.cells >= 0.85, `cells read right: ${JSON.stringify(acc)}`);
  assert.ok(acc.objects >= 0.5, `objects read right: ${acc.objects}`);
  assert.ok(untrained.objects < 0.05, `an untrained probe reads ${untrained.objects}`);
});

test('image reliance: text-only training ignores the image; the loss with a shuffled image is reported', async () => {
  const { recs } = records('train', 64);
  const lang = await runTraining({
    outDir: tmp('language'),
    records: recs,
    initial: { config: GRID_TINY, tokenizer, params: initParams(GRID_TINY, 0) },
    settings: settings('language', 30, 3e-3),
    plan: stagePlan('language'),
    resume: false,
    progress: false,
  });
  // The language stage hides the image, so swapping images cannot change its text-only loss...
  const r = await imageReliance(lang.config, lang.params, recs.slice(0, 16));
  assert.ok(Number.isFinite(r.rightImage) && Number.isFinite(r.shuffledImage));
  assert.equal(
    await textOnlyLoss(lang.config, lang.params, recs.slice(0, 16)),
    await textOnlyLoss(
      lang.config,
      lang.params,
      recs.slice(0, 16).map((x, i, a) => ({ ...x, rgb: a[(i + 8) % 16]!.rgb })),
    ),
  );
  // ...and a model that never saw the image does no better with the right one than with another.
  assert.ok(Math.abs(r.shuffledImage - r.rightImage) < 0.05, JSON.stringify(r));
});

test('place claims: a reference keeps all; one place named wrong (not a synonym) loses exactly that one', () => {
  const { split } = records('val', 100, { minObjects: 2, maxObjects: 2 });
  const i = split.records.findIndex(
    (r) => / in the top left(?! corner)/.test(r.captions[0]!) && !r.captions[0]!.includes('top right'),
  );
  assert.ok(i >= 0, 'a two-object scene with one object in the top left');
  const { scene, captions } = split.records[i]!;
  const ids = (text: string) => tokenizer.encode(text);
  const reference = placeClaimsHeld(scene, ids(captions[0]!), tokenizer);
  assert.ok(reference.claims >= 2 && reference.held === reference.claims, JSON.stringify(reference));
  assert.deepEqual(
    placeClaimsHeld(scene, ids(captions[0]!.replace(' in the top left', ' in the upper left corner')), tokenizer),
    reference,
  );
  const wrong = placeClaimsHeld(scene, ids(captions[0]!.replace(' in the top left', ' in the top right')), tokenizer);
  assert.deepEqual(wrong, { claims: reference.claims, held: reference.claims - 1 });
});

test("place attention: each place phrase tied to its sentence's object (no relations, counts), per head", async () => {
  const scene = {
    id: 's',
    seed: 0,
    relations: [],
    objects: [
      { id: 'a', shape: 'circle', color: 'red', size: 'small', x: 0.17, y: 0.17, place: 'top left' },
      { id: 'b', shape: 'square', color: 'blue', size: 'large', x: 0.83, y: 0.5, place: 'right' },
    ],
  } as Scene;
  const words = tokenizer.pieces(
    tokenizer.encode(
      'There are two shapes. There is a small red circle in the top left and on the right side a large blue square. ' +
        'The circle is left of the square.',
    ),
  );
  const phrases = placePhrases(scene, words, 0);
  assert.deepEqual(
    phrases.map((p) => [words[p.at], p.object, p.ownShapes.length, p.otherShapes.length]),
    [
      ['top', 0, 1, 1],
      ['right', 1, 1, 1],
    ],
  );
  const { recs } = records('val', 24, { minObjects: 2, maxObjects: 4 });
  const a = await placeAttention(GRID_TINY, initParams(GRID_TINY, 1), recs);
  assert.equal(a.layers.length, GRID_TINY.lm.layers);
  assert.ok(
    a.phrases > 0 &&
      a.layers.every(
        (heads) => heads.length === GRID_TINY.lm.heads && heads.every((h) => h.objectImage >= 0 && h.objectImage <= 1),
      ),
  );
});

test("pretrain (quick): stages in order, each measured; a rerun redoes nothing; the shipped base's card", async () => {
  const out = tmp('pretrain');
  const ship = tmp('shipped');
  const lines: string[] = [];
  const rec = await trainBaseModel({ out, preset: 'quick', progress: false, log: (l) => lines.push(l) });
  await shipBase({ out, record: rec, ship, log: (l) => lines.push(l) });
  assert.deepEqual(
    Object.keys(rec.measurements),
    BASE_PRESETS.quick.stages.map((s) => s.name),
  );
  assert.match(rec.measurements.vision!, /vision probe on \d+ val scenes: cells/);
  // The grounding stage is measured on the kind of scenes it trains on.
  assert.match(rec.measurements.ground!, /caption loss on \d+ val scenes of 1-1 objects/);
  assert.match(rec.measurements.ground!, /binding .* named right/);
  assert.match(rec.measurements.base!, /right image .* shuffled image/);
  assert.match(
    rec.measurements.base!,
    /place claims that hold .*: \d+\.\d% vs \d+\.\d% with a shuffled image \(\d+ claims\)/,
  );
  assert.ok(
    lines.some((l) => /generating \d+ training scenes of 1-1 objects/.test(l)),
    'the grounding stage trains on one-object scenes',
  );
  const base = await loadModelState(baseModelDir(out, 'quick'));
  assert.equal(base.state.step, BASE_PRESETS.quick.stages.at(-1)!.budget.steps);
  assert.equal(base.config.cellProbe, true);
  assert.equal(base.config.imagePlace, true, 'the base carries place embeddings from its first stage on');
  assert.equal(base.config.imageCells, true, "and the tower's reading of each cell");
  assert.ok(base.config.imageKeyBias! > 0, 'and image keys weighted up');
  assert.equal(base.config.relativeBias, 16, 'and a relative position bias in the language model');
  const card = fs.readFileSync(path.join(ship, 'MODEL.md'), 'utf8');
  assert.match(card, /rediff pretrain --preset quick/);
  assert.match(card, /llada 8 tok\/step/);
  assert.match(
    card,
    /a learned bias per head for the offset between two text positions \(up to 16; started as ALiBi\)/,
  );
  assert.match(
    card,
    /\| blocks \| `mask-prediction` \| all \| - \| 50% \(blocks of 32\) \|/,
    'the last stage trains on the masks of block decoding',
  );
  assert.ok(fs.existsSync(path.join(ship, 'onnx', 'language.onnx')));
  const again: string[] = [];
  const rec2 = await trainBaseModel({ out, preset: 'quick', progress: false, log: (l) => again.push(l) });
  await shipBase({ out, record: rec2, ship, log: (l) => again.push(l) });
  assert.equal(
    again.filter((l) => l.includes('done earlier, reused')).length,
    BASE_PRESETS.quick.stages.length,
    again.join('\n'),
  );
  assert.ok(!again.some((l) => l.includes('evaluating')), 'the evaluation is reused too');
  // A stage trained again (here the last, its checkpoint gone) makes another base: evaluated again.
  fs.rmSync(baseModelDir(out, 'quick'), { recursive: true });
  const third: string[] = [];
  const rec3 = await trainBaseModel({ out, preset: 'quick', progress: false, log: (l) => third.push(l) });
  await shipBase({ out, record: rec3, ship, log: (l) => third.push(l) });
  assert.ok(
    third.some((l) => l.includes('evaluating')),
    third.join('\n'),
  );
});

test("grounding masks: in their share of samples an attribute's words are all masked and weighted", () => {
  const { recs } = records('train', 8, { minObjects: 3, maxObjects: 5 });
  const groups = groundedWordIds(tokenizer);
  const vocab = { firstOrdinaryId: SPECIAL_TOKENS.length, vocabSize: tokenizer.size };
  const mix = { ...MASK_PREDICTION_MIX, groundingMask: { share: 1, groups } };
  for (const [i, r] of recs.entries()) {
    const s = makeSample(GRID_TINY, r, new Rng(i), mix, vocab);
    const t = s.corrupted.target;
    const hidden = groups.filter(
      (g) =>
        t.some((x) => g.includes(x)) &&
        t.every((x, j) => !g.includes(x) || (s.corrupted.input[j] === MASK_ID && s.weights[j]! > 0)),
    );
    assert.ok(hidden.length > 0, `sample ${i}: no attribute group wholly masked`);
  }
  // share 0: the sample is the plain mix's.
  const plain = makeSample(GRID_TINY, recs[0]!, new Rng(5), MASK_PREDICTION_MIX, vocab);
  const none = makeSample(
    GRID_TINY,
    recs[0]!,
    new Rng(5),
    { ...MASK_PREDICTION_MIX, groundingMask: { share: 0, groups } },
    vocab,
  );
  assert.deepEqual(none.corrupted.input, plain.corrupted.input);
});

test('block masks in a mix: the share of samples the sampler would be writing, uniform masks otherwise', () => {
  const { recs } = records('train', 8, { minObjects: 3, maxObjects: 6 });
  const vocab = { firstOrdinaryId: SPECIAL_TOKENS.length, vocabSize: tokenizer.size };
  const L = GRID_TINY.responseLength;
  let blocks = 0;
  let n = 0;
  for (const [i, r] of recs.entries()) {
    for (let j = 0; j < 20; j++, n++) {
      const s = makeSample(
        GRID_TINY,
        r,
        new Rng(100 * i + j),
        { ...MASK_PREDICTION_MIX, blockMask: { share: 0.5, blockLength: 32 } },
        vocab,
      );
      const ignored = s.corrupted.types.indexOf('ignore');
      if (ignored < 0) continue;
      blocks++;
      assert.equal(ignored % 32, 0, 'unscored from a block boundary');
      assert.ok(s.corrupted.types.slice(ignored).every((t) => t === 'ignore') && ignored < L);
      assert.ok(
        s.corrupted.target.slice(0, ignored).every((x) => x !== EOS_ID),
        'the block written holds no EOS',
      );
    }
  }
  assert.ok(blocks > 0.3 * n && blocks < 0.6 * n, `${blocks} of ${n} samples with block masks`);
  // share 0: the sample is the plain mix's.
  const plain = makeSample(GRID_TINY, recs[0]!, new Rng(5), MASK_PREDICTION_MIX, vocab);
  const none = makeSample(
    GRID_TINY,
    recs[0]!,
    new Rng(5),
    { ...MASK_PREDICTION_MIX, blockMask: { share: 0, blockLength: 32 } },
    vocab,
  );
  assert.deepEqual(none.corrupted.input, plain.corrupted.input);
});
