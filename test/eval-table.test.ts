import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Summary } from '../src/benchmark/metrics.js';
import type { EvalRow } from '../src/evaluation/evaluate.js';
import { TABLE_COLUMNS, evalTable, renderPlain } from '../src/evaluation/table.js';
import { samplerOptions } from '../src/sampling/sampler.js';

const summary = Object.fromEntries(
  TABLE_COLUMNS.map((c) => [c.metric, { mean: 0.5, lo: 0.4, hi: 0.6, n: 10 }]),
) as unknown as Summary;
const row = (label: string, sampler: string, tokensPerStep: number | null, achieved: number): EvalRow => ({
  setting: { label, sampler, tokensPerStep, options: samplerOptions(sampler, { steps: 96 }) },
  summary,
  achievedTokensPerStep: achieved,
  captionTokensPerStep: achieved / 2,
  meanSteps: 96 / achieved,
  seconds: 1,
  records: [],
});

test('rediff eval: requested, achieved and caption tokens per step are separate, clearly named columns', () => {
  const table = evalTable([row('llada 1 tok/step', 'llada', 1, 3.37), row('threshold @0.9', 'threshold', null, 5.5)]);
  const header = table[0]!;
  const requested = header.indexOf('requested tok/step');
  const achieved = header.indexOf('achieved tok/step');
  const caption = header.indexOf('caption tok/step');
  assert.ok(requested > 0 && achieved > 0 && caption > 0, header.join(' | '));
  assert.equal(header.filter((h) => /tok\/step/.test(h)).length, 3, 'no other column is called tokens per step');
  assert.deepEqual([table[1]![requested], table[1]![achieved], table[1]![caption]], ['1', '3.37', '1.69']);
  assert.deepEqual([table[2]![requested], table[2]![achieved]], ['-', '5.50'], 'a threshold sampler requests no rate');
  assert.match(renderPlain(table).split('\n')[0]!, /requested tok\/step +achieved tok\/step/);
});
