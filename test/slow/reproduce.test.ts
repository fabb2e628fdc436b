/**
 * The whole study end to end at toy scale (npm run test:slow, run by .ci/run): every system
 * trained and evaluated, the report written, and a rerun that redoes nothing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { reproduce } from '../../src/evaluation/reproduce.js';
import { writeReport } from '../../src/report/report.js';

test('rediff reproduce --preset quick runs the whole study and writes the report; a rerun redoes nothing', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rediff-reproduce-'));
  const study = path.join(dir, 'study');
  const lines: string[] = [];
  await reproduce({ out: study, preset: 'quick', fromScratch: true, progress: false, log: (l) => lines.push(l) });
  // The base and the oracle (at the preset's two sample sizes) are evaluated like the trained systems.
  const systems = [
    'base',
    'oracle',
    'oracle-50',
    'baseline',
    'stage1',
    'stage2-only',
    'rediff',
    'rediff-round2',
    'ablation-hallucination-only',
    'ablation-syntax-only',
    'ablation-dynamic',
    'stage1-canonical',
    'rediff-canonical',
  ];
  for (const s of systems) {
    const res = JSON.parse(fs.readFileSync(path.join(study, 'results', `${s}.json`), 'utf8')) as {
      rows: { sampler: string; tokensPerStep: number; summary: { capture: { mean: number; n: number } } }[];
    };
    assert.equal(res.rows.length, 10, `${s}: 2 samplers x 4 rates, and 2 threshold samplers`);
    for (const r of res.rows)
      assert.ok(r.summary.capture.n === 12 && r.summary.capture.mean >= 0 && r.summary.capture.mean <= 1);
  }
  const examples = JSON.parse(fs.readFileSync(path.join(study, 'results', 'examples.json'), 'utf8')) as {
    rediff: { trace: unknown[] };
  }[];
  const oracle = JSON.parse(fs.readFileSync(path.join(study, 'results', 'oracle.json'), 'utf8')) as {
    checkpoint: string;
    rows: { label: string; summary: { parses: { mean: number } } }[];
  };
  assert.equal(oracle.checkpoint, 'oracle, 200 captions per scene');
  assert.equal(
    oracle.rows.find((r) => r.label === 'llada 1 tok/step')!.summary.parses.mean,
    1,
    'a perfect model parses',
  );
  assert.equal(examples.length, 3);
  assert.ok(examples[0]!.rediff.trace.length > 0);
  const { files } = await writeReport(study, path.join(dir, 'report'));
  const md = fs.readFileSync(path.join(dir, 'report', 'README.md'), 'utf8');
  assert.match(md, /ReDiff/);
  assert.match(md, /MET|MISSED/);
  assert.ok(files.some((f) => f.endsWith('capture-vs-tokens-per-step.svg')));
  // Rerun: every step is reused, and the study keeps its own finish time.
  const finishedAt = () => JSON.parse(fs.readFileSync(path.join(study, 'study.json'), 'utf8')).finishedAt;
  const finished = finishedAt();
  assert.ok(finished !== undefined);
  const again: string[] = [];
  const t0 = performance.now();
  await reproduce({ out: study, preset: 'quick', fromScratch: true, progress: false, log: (l) => again.push(l) });
  assert.ok(again.filter((l) => l.includes('reused')).length >= 16, again.join('\n'));
  assert.ok(!again.some((l) => l.endsWith(' ...')), `nothing redone:\n${again.join('\n')}`);
  assert.equal(finishedAt(), finished);
  assert.ok(performance.now() - t0 < 30_000);
  // Another threshold: only the two new threshold settings are evaluated, the earlier rows stay.
  const more: string[] = [];
  await reproduce({
    out: study,
    preset: 'quick',
    fromScratch: true,
    threshold: 0.5,
    progress: false,
    log: (l) => more.push(l),
  });
  assert.equal(more.filter((l) => /^\[reproduce\] eval .* \.\.\.$/.test(l)).length, systems.length, more.join('\n'));
  assert.ok(!more.some((l) => /^\[reproduce\] (baseline|stage1) \.\.\.$/.test(l)), 'no training redone');
  const res = JSON.parse(fs.readFileSync(path.join(study, 'results', 'rediff.json'), 'utf8')) as {
    rows: { label: string }[];
  };
  assert.deepEqual(
    res.rows.slice(-4).map((r) => r.label),
    ['threshold @0.9', 'threshold-rediff @0.9', 'threshold @0.5', 'threshold-rediff @0.5'],
  );
  const records = fs
    .readFileSync(path.join(study, 'results', 'rediff.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { setting: string });
  assert.equal(records.length, 12 * 12, '12 settings x 12 test scenes, none repeated');
  // The study cannot switch bases: the shipped base is not the one this study started from.
  const info = JSON.parse(fs.readFileSync(path.join(study, 'study.json'), 'utf8')) as {
    base: { fromScratch: boolean; weights: string };
  };
  assert.equal(info.base.fromScratch, true);
  assert.match(info.base.weights, /^[0-9a-f]{64}$/);
  await assert.rejects(
    reproduce({ out: study, preset: 'quick', base: path.join(study, 'stage1'), progress: false, log: () => undefined }),
    /started from the base at .*holds other weights/,
  );
});
