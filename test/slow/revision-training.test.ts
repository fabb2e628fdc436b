/**
 * The long form of test/revision-training.test.ts (npm run test:slow, run by .ci/run): at 1,200
 * steps per model, revision training repairs injected errors while keeping nearly every clean
 * token; mask prediction with the same budget rewrites everything and adds errors on net.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { revisionVersusMaskPrediction, showRepair } from '../helpers/stage1.js';

test('Stage I repairs injected errors in held-out captions; mask prediction alone does not (1,200 steps)', async () => {
  const { revision: r, maskOnly: m } = await revisionVersusMaskPrediction(1200, 50);
  // Measured when written (64 held-out captions, ~370 injected errors): revision repaired
  // ~9% and kept ~98% of clean tokens; mask prediction kept only ~58% (it rewrites everything).
  assert.ok(r.repaired >= 0.04, `revision: ${showRepair(r)}`);
  assert.ok(r.cleanKept >= 0.95, `revision: ${showRepair(r)}`);
  assert.ok(m.cleanKept < 0.85, `mask prediction: ${showRepair(m)}`);
  assert.ok(m.errorsAfter > m.errorsBefore, `mask prediction should not repair on net: ${showRepair(m)}`);
});
