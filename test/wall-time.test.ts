import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withWallTime } from '../src/util/wall-time.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('withWallTime reports the time so far while a step runs, and the whole at its end, also on failure', async () => {
  const ticks: number[] = [];
  const v = await withWallTime(
    async () => {
      await sleep(120);
      return 7;
    },
    async (s) => void ticks.push(s),
    20,
  );
  assert.equal(v, 7);
  assert.ok(ticks.length >= 3, `ticks while running: ${ticks.length}`);
  assert.ok(
    ticks.every((t, i) => i === 0 || t >= ticks[i - 1]!),
    'time only grows',
  );
  assert.ok(ticks.at(-1)! >= 0.1, `the last tick holds the whole time: ${ticks.at(-1)}`);
  const failed: number[] = [];
  await assert.rejects(
    withWallTime(
      async () => {
        await sleep(30);
        throw new Error('boom');
      },
      async (s) => void failed.push(s),
      1000,
    ),
    /boom/,
  );
  assert.equal(failed.length, 1);
  assert.ok(failed[0]! >= 0.025);
});
