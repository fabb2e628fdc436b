import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { reproducePaths } from '../src/cli/commands/reproduce.js';

// The study itself (rediff reproduce --preset quick, end to end) is in test/slow/reproduce.test.ts.
test('rediff reproduce writes its report into its own output folder unless --report says otherwise', () => {
  assert.deepEqual(reproducePaths({ out: 'runs/study' }), { out: 'runs/study', report: path.join('runs/study', 'report') });
  assert.deepEqual(reproducePaths({ out: '/tmp/s', report: 'reports' }), { out: '/tmp/s', report: 'reports' });
});
