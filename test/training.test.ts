import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { presetConfig } from '../src/model/config.js';
import { loadModelState } from '../src/model/io.js';
import { initParams } from '../src/model/params.js';
import { type TrainSettings, runTraining } from '../src/training/run.js';
import { MASK_PREDICTION_MIX } from '../src/training/samples.js';
import { WordTokenizer } from '../src/tokenizer/word.js';
import { toyRecords } from './helpers/toy.js';

const tokenizer = new WordTokenizer(Array.from({ length: 36 }, (_, i) => `w${i}`));
const config = presetConfig('tiny', tokenizer.size, { responseLength: 16 });
const records = toyRecords(config, 4, 3, 10);
const settings: TrainSettings = {
  stage: 'mask-prediction',
  steps: 12,
  batchSize: 4,
  lr: 2e-3,
  warmupSteps: 3,
  minLrRatio: 0.1,
  weightDecay: 0.01,
  clipNorm: 1,
  seed: 5,
  checkpointEvery: 6,
  mix: MASK_PREDICTION_MIX,
};
const tmp = (): string => fs.mkdtempSync(path.join(os.tmpdir(), 'rediff-train-'));
const initial = () => ({ config, tokenizer, params: initParams(config, 1) });

test('a resumed run ends with exactly the weights of an uninterrupted one', async () => {
  const full = tmp();
  await runTraining({ outDir: full, records, initial: initial(), settings, resume: false, progress: false });
  const split = tmp();
  await assert.rejects(
    runTraining({
      outDir: split,
      records,
      initial: initial(),
      settings,
      resume: false,
      progress: false,
      onStep: (s) => {
        if (s === 7) throw new Error('killed');
      },
    }),
    /killed/,
  );
  assert.equal((await loadModelState(split)).state.step, 6);
  await runTraining({ outDir: split, records, initial: initial(), settings, resume: true, progress: false });
  const a = await loadModelState(full);
  const b = await loadModelState(split);
  assert.equal(b.state.step, 12);
  for (const [k, v] of a.params) assert.deepEqual(b.params.get(k), v, k);
});

test('the same seed gives the same run twice', async () => {
  const r1 = await runTraining({
    outDir: tmp(),
    records,
    initial: initial(),
    settings: { ...settings, steps: 5 },
    resume: false,
    progress: false,
  });
  const r2 = await runTraining({
    outDir: tmp(),
    records,
    initial: initial(),
    settings: { ...settings, steps: 5 },
    resume: false,
    progress: false,
  });
  for (const [k, v] of r1.params) assert.deepEqual(r2.params.get(k), v, k);
});

test('an existing checkpoint is never overwritten without --resume, and resume checks the settings', async () => {
  const dir = tmp();
  await runTraining({
    outDir: dir,
    records,
    initial: initial(),
    settings: { ...settings, steps: 2 },
    resume: false,
    progress: false,
  });
  await assert.rejects(
    runTraining({ outDir: dir, records, initial: initial(), settings, resume: false, progress: false }),
    /already holds a checkpoint; pass --resume/,
  );
  await assert.rejects(
    runTraining({
      outDir: dir,
      records,
      initial: initial(),
      settings: { ...settings, steps: 2, lr: 1 },
      resume: true,
      progress: false,
    }),
    /settings differ/,
  );
});

test('a diverging run stops with a message and keeps the last good checkpoint', async () => {
  const dir = tmp();
  let calls = 0;
  await assert.rejects(
    runTraining({
      outDir: dir,
      records,
      initial: initial(),
      resume: false,
      progress: false,
      settings: { ...settings, checkpointEvery: 2, lr: 1e38, warmupSteps: 0, clipNorm: 0 },
      onStep: () => {
        calls++;
      },
    }),
    /training stopped: .*(loss became|non-finite)/,
  );
  assert.ok(calls >= 1);
  if (fs.existsSync(path.join(dir, 'checkpoint.json'))) {
    const saved = await loadModelState(dir);
    for (const [k, v] of saved.params) assert.ok(v.every(Number.isFinite), `${k} saved non-finite`);
  }
});

test('without an explicit plan, settings.visionLrScale slows the tower (0 freezes it), in Stage II too', async () => {
  for (const stage of ['mask-prediction', 'self-correct round 1']) {
    const start = initial();
    const res = await runTraining({
      outDir: tmp(),
      records,
      initial: start,
      settings: { ...settings, stage, steps: 3, visionLrScale: 0 },
      resume: false,
      progress: false,
    });
    const moved = (n: string) => res.params.get(n)!.some((x, i) => x !== start.params.get(n)![i]);
    const names = [...res.params.keys()];
    assert.ok(
      names.filter((n) => n.startsWith('vision.')).every((n) => !moved(n)),
      `${stage}: the tower is frozen`,
    );
    assert.ok(names.filter((n) => n.startsWith('lm.block')).some(moved), `${stage}: the language model trains`);
  }
});
