import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { reproducePaths, studyBase } from '../src/cli/commands/reproduce.js';
import { shippedModelDir } from '../src/cli/models.js';
import { STUDY_PRESETS, reproduce, studySettings, weightsFingerprint } from '../src/evaluation/reproduce.js';

// The study itself (rediff reproduce --preset quick, end to end) is in test/slow/reproduce.test.ts.
test('rediff reproduce writes its report into its own output folder unless --report says otherwise', () => {
  assert.deepEqual(reproducePaths({ out: 'runs/study' }), {
    out: 'runs/study',
    report: path.join('runs/study', 'report'),
  });
  assert.deepEqual(reproducePaths({ out: '/tmp/s', report: 'reports' }), { out: '/tmp/s', report: 'reports' });
});

test('rediff reproduce starts from the shipped base unless given one; the quick study trains its own tiny base', () => {
  assert.deepEqual(studyBase({ preset: 'full' }), { base: shippedModelDir('base'), fromScratch: false });
  assert.deepEqual(studyBase({ preset: 'full', fromScratch: true }), { fromScratch: true });
  assert.deepEqual(studyBase({ preset: 'quick' }), { fromScratch: true });
  assert.deepEqual(studyBase({ preset: 'quick', base: 'runs/b' }), { base: 'runs/b', fromScratch: false });
});

test('reproduce refuses to start without exactly one base, and a base without weights, naming it', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rediff-study-base-'));
  await assert.rejects(
    reproduce({ out: path.join(dir, 's'), preset: 'quick', progress: false, log: () => undefined }),
    /no base model/,
  );
  await assert.rejects(
    reproduce({
      out: path.join(dir, 's'),
      preset: 'quick',
      base: dir,
      fromScratch: true,
      progress: false,
      log: () => undefined,
    }),
    /not both/,
  );
  await assert.rejects(
    reproduce({
      out: path.join(dir, 's'),
      preset: 'quick',
      base: path.join(dir, 'empty'),
      progress: false,
      log: () => undefined,
    }),
    /no base model at .*empty/,
  );
  assert.ok(!fs.existsSync(path.join(dir, 's')), 'nothing written for a bad base');
  assert.throws(() => weightsFingerprint(dir), /no base model at/);
  fs.writeFileSync(path.join(dir, 'model-5.safetensors'), 'abc');
  const a = weightsFingerprint(dir);
  fs.writeFileSync(path.join(dir, 'model-5.safetensors'), 'abd');
  assert.notEqual(weightsFingerprint(dir), a, 'other weights, other fingerprint');
  fs.rmSync(dir, { recursive: true, force: true });
});

test('the study evaluates LLaDA and refining samplers at every rate, then both threshold samplers', () => {
  const settings = studySettings(STUDY_PRESETS.full, 96);
  assert.deepEqual(
    settings.map((s) => s.label),
    [
      'llada 1 tok/step',
      'llada 2 tok/step',
      'llada 4 tok/step',
      'llada 8 tok/step',
      'rediff 1 tok/step',
      'rediff 2 tok/step',
      'rediff 4 tok/step',
      'rediff 8 tok/step',
      'threshold @0.55',
      'threshold-rediff @0.55',
    ],
  );
  const t = settings.find((s) => s.sampler === 'threshold-rediff')!;
  assert.equal(t.tokensPerStep, null);
  assert.deepEqual(t.options.commit, { kind: 'threshold', threshold: 0.55 });
  assert.ok(t.options.refine !== null, 'threshold-rediff refines');
  assert.equal(settings.find((s) => s.label === 'llada 8 tok/step')!.options.steps, 12);
});
