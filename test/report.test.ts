import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { writeReport } from '../src/report/report.js';
import { readStudy } from '../src/report/study.js';
import { evaluateTargets } from '../src/report/tables.js';
import { traceMarkdown } from '../src/report/examples.js';
import type { StepTrace } from '../src/sampling/sampler.js';

const METRICS = [
  'factuality',
  'objectFactuality',
  'coverage',
  'factCoverage',
  'capture',
  'f1Object',
  'f1Attribute',
  'f1Relation',
  'fluency',
  'parses',
  'repeatRate',
  'unreadableShare',
  'tokens',
];

/** A row whose CAPTURE is `capture` ±0.02, factuality capture + 0.1, coverage capture − 0.1, parses `parses`. */
function row(sampler: string, tokensPerStep: number, capture: number, parses = 0.5) {
  const summary: Record<string, { mean: number; lo: number; hi: number; n: number }> = {};
  for (const m of METRICS) summary[m] = { mean: 0.5, lo: 0.48, hi: 0.52, n: 3 };
  summary.capture = { mean: capture, lo: capture - 0.02, hi: capture + 0.02, n: 3 };
  summary.factuality = { mean: capture + 0.1, lo: capture + 0.09, hi: capture + 0.11, n: 3 };
  summary.coverage = { mean: capture - 0.1, lo: capture - 0.13, hi: capture - 0.07, n: 3 };
  summary.parses = { mean: parses, lo: parses - 0.02, hi: parses + 0.02, n: 3 };
  return {
    sampler,
    tokensPerStep,
    achievedTokensPerStep: tokensPerStep,
    meanSteps: 96 / tokensPerStep,
    seconds: 1,
    summary,
  };
}

/** A confidence-threshold row: no set rate, `achieved` tokens per step. */
function thresholdRow(sampler: string, achieved: number, capture: number) {
  return { ...row(sampler, achieved, capture), tokensPerStep: null, label: `${sampler} @0.9` };
}

function results(system: string, rows: (ReturnType<typeof row> | ReturnType<typeof thresholdRow>)[]) {
  return { system, label: system, checkpoint: `runs/${system}`, rows };
}

function record(id: string, setting: string, capture: number) {
  return {
    id,
    setting,
    caption: 'A red circle.',
    steps: 24,
    score: { factuality: 1, coverage: 0.5, capture, fluency: 1, repeatRate: 0, hasUnreadable: false, errors: [] },
  };
}

const PIECES = ['<pad>', '[MASK]', '<eos>', '<unk>', 'a', 'red', 'circle', 'blue', '.'];
const TRACE: StepTrace[] = [
  {
    step: 0,
    committed: [
      { pos: 0, token: 4 },
      { pos: 1, token: 7 },
    ],
    refined: [],
  },
  {
    step: 1,
    committed: [
      { pos: 2, token: 6 },
      { pos: 3, token: 8 },
    ],
    refined: [{ pos: 1, from: 7, to: 5 }],
  },
  { step: 2, committed: [{ pos: 4, token: 2 }], refined: [] },
];

function writeJson(file: string, v: unknown): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(v));
}

/** baseline, stage1 and rediff; stage2-only and the rest not run. */
function fakeStudy(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rediff-report-'));
  writeJson(path.join(dir, 'study.json'), {
    preset: 'quick',
    modelPreset: 'tiny',
    startedAt: '2025-01-01T00:00:00Z',
    finishedAt: '2025-01-01T01:02:03Z',
    seconds: 3723,
    timings: { data: 12.5, baseline: 1800, evaluate: 90 },
    base: { dir: 'models/base', fromScratch: false, weights: 'abcdef0123456789' },
    settings: { seed: 1 },
    machine: { cpus: 2, node: 'v20.0.0' },
  });
  const speeds = [1, 2, 4, 8];
  const base = { llada: [0.6, 0.58, 0.5, 0.4], rediff: [0.59, 0.57, 0.52, 0.45] };
  writeJson(
    path.join(dir, 'results', 'baseline.json'),
    results('baseline', [
      ...speeds.map((k, i) => row('llada', k, base.llada[i]!)),
      ...speeds.map((k, i) => row('rediff', k, base.rediff[i]!)),
    ]),
  );
  writeJson(
    path.join(dir, 'results', 'stage1.json'),
    results('stage1', [row('rediff', 1, 0.6), row('rediff', 4, 0.58), row('rediff', 8, 0.5)]),
  );
  const red = [0.63, 0.63, 0.62, 0.55];
  writeJson(
    path.join(dir, 'results', 'rediff.json'),
    results('rediff', [
      ...speeds.map((k, i) => row('rediff', k, red[i]!)),
      thresholdRow('threshold-rediff', 4.5, 0.625),
    ]),
  );
  const ids = ['s1', 's2', 's3'];
  fs.writeFileSync(
    path.join(dir, 'results', 'baseline.jsonl'),
    ids.map((id, i) => JSON.stringify(record(id, 'llada 1 tok/step', 0.6 + (i - 1) * 0.01))).join('\n') + '\n',
  );
  fs.writeFileSync(
    path.join(dir, 'results', 'rediff.jsonl'),
    ids.map((id, i) => JSON.stringify(record(id, 'rediff 8 tok/step', 0.55 + (i - 1) * 0.02))).join('\n') + '\n',
  );
  writeJson(path.join(dir, 'results', 'examples.json'), [
    {
      sceneId: 'scene-7',
      scene: {
        objects: [{ id: 'o1', shape: 'circle', color: 'red', size: 'small', place: 'top left', x: 0.1, y: 0.1 }],
      },
      reference: 'A small red circle.',
      baseline: {
        caption: 'A blue blue circle.',
        score: {
          factuality: 0,
          coverage: 0,
          capture: 0.2,
          errors: [{ text: 'blue circle', message: 'no blue circle in the scene' }],
        },
      },
      rediff: {
        caption: 'A red circle.',
        score: { factuality: 1, coverage: 0.5, capture: 0.7, errors: [] },
        trace: TRACE,
        pieces: PIECES,
      },
    },
  ]);
  writeJson(path.join(dir, 'stage2', 'rounds.json'), [
    {
      round: 1,
      drafts: 40,
      reviews: {
        answers: 40,
        right: 10,
        withPairs: 28,
        malformed: 1,
        errors: 1,
        pairsProposed: 50,
        pairsKept: 44,
        draftsWithKeptPairs: 27,
        dropped: { empty: 0, 'not-found': 4, ambiguous: 0, 'length-mismatch': 2, 'no-change': 0, overlap: 0 },
        malformedReasons: {},
      },
      trainingPairs: 27,
      draftErrors: { count: 6, attribute: 3, relation: 1 },
      checkpoint: 'stage2/round-1',
    },
  ]);
  return dir;
}

function tableRow(readme: string, section: string, startsWith: string): string {
  const body = readme.slice(readme.indexOf(section));
  const line = body.split('\n').find((l) => l.startsWith(startsWith));
  assert.ok(line, `no row "${startsWith}" after "${section}"`);
  return line;
}

test('writeReport: tables, targets, results.json and SVGs from a small study', async () => {
  const dir = fakeStudy();
  const out = path.join(dir, 'report');
  const { files } = await writeReport(dir, out);
  const names = files.map((f) => path.basename(f)).sort();
  assert.deepEqual(names, [
    'README.md',
    'capture-vs-tokens-per-step.svg',
    'factuality-vs-tokens-per-step.svg',
    'results.json',
    'trace.svg',
  ]);
  const readme = fs.readFileSync(path.join(out, 'README.md'), 'utf8');

  // What was run.
  assert.match(
    readme,
    /preset: `quick`; every system starts from the base at `models\/base` \(weights sha256 abcdef012345\)/,
  );
  assert.match(readme, /total time: \*\*1 h 02 min\*\* on 2 CPU cores/);
  assert.match(readme, /\| baseline \| 30 min 00 s \| 1800\.0 \|/);

  // Tables 2/3: metric by tokens per step, mean ±half-width in %.
  assert.equal(
    tableRow(readme, '### CAPTURE-style score', '| Mask-pred baseline | LLaDA sampler'),
    '| Mask-pred baseline | LLaDA sampler | 60.0 ±2.0 | 58.0 ±2.0 | 50.0 ±2.0 | 40.0 ±2.0 |',
  );
  assert.equal(
    tableRow(readme, '### CAPTURE-style score', '| Mask-pred baseline | refining sampler'),
    '| Mask-pred baseline | refining sampler | 59.0 ±2.0 | 57.0 ±2.0 | 52.0 ±2.0 | 45.0 ±2.0 |',
  );
  assert.equal(
    tableRow(readme, '### CAPTURE-style score', '| ReDiff-Base (Stage I)'),
    '| ReDiff-Base (Stage I) | refining sampler | 60.0 ±2.0 | — | 58.0 ±2.0 | 50.0 ±2.0 |',
  );
  assert.equal(
    tableRow(readme, '### CAPTURE-style score', '| ReDiff (Stage I + II)'),
    '| ReDiff (Stage I + II) | refining sampler | 63.0 ±2.0 | 63.0 ±2.0 | 62.0 ±2.0 | 55.0 ±2.0 |',
  );
  assert.equal(
    tableRow(readme, '### Factuality', '| ReDiff (Stage I + II)'),
    '| ReDiff (Stage I + II) | refining sampler | 73.0 ±1.0 | 73.0 ±1.0 | 72.0 ±1.0 | 65.0 ±1.0 |',
  );
  assert.equal(
    tableRow(readme, '### Objects described', '| ReDiff (Stage I + II)'),
    '| ReDiff (Stage I + II) | refining sampler | 53.0 ±3.0 | 53.0 ±3.0 | 52.0 ±3.0 | 45.0 ±3.0 |',
  );

  // Tables 4-6: missing systems are "not run".
  assert.equal(
    tableRow(readme, '## Training stages', '| Stage II only |'),
    '| Stage II only | refining sampler | not run | not run | not run | not run | not run | not run | not run | not run | not run |',
  );
  assert.match(
    tableRow(readme, '## Training stages', '| Stage I + II (ReDiff)'),
    /^\| Stage I \+ II \(ReDiff\) \| refining sampler \| 63\.0 ±2\.0 \| 62\.0 ±2\.0 \| 55\.0 ±2\.0 \| 73\.0 ±1\.0 \|/,
  );
  assert.match(tableRow(readme, '## Stage I variants', '| Revise hallucinations only'), /\| not run \|$/);
  assert.match(
    tableRow(readme, '## Stage I variants', '| Both (ReDiff-Base)'),
    /^\| Both \(ReDiff-Base\) \| refining sampler \| 60\.0 ±2\.0 \| 58\.0 ±2\.0 \| 50\.0 ±2\.0 \|/,
  );
  assert.match(tableRow(readme, '## Stage II rounds', '| Online round 2'), /\| not run \| not run \|$/);
  assert.match(readme, /\| ReDiff, Stage II round 2 \| `rediff-round2` \| not run \|/);

  // Threshold decoding: its own table, not a column of the rate tables.
  assert.equal(
    tableRow(readme, '## Confidence-threshold decoding', '| ReDiff (Stage I + II)'),
    '| ReDiff (Stage I + II) | confidence-threshold refining sampler | threshold-rediff @0.9 | 4.50 | 62.5 ±2.0 | 72.5 ±1.0 | 52.5 ±3.0 | 50.0 ±2.0 |',
  );

  // Targets.
  assert.match(
    readme,
    /\*\*\(a\) MISSED\*\* — .*As measured: ReDiff at 8 tok\/step 55\.00 .*baseline at 1 tok\/step 60\.00/,
  );
  assert.match(
    readme,
    /\(a\) MISSED.*Paired difference over the same 3 test scenes: -5\.00 points \(95% CI .*; the interval excludes 0\)/,
  );
  assert.match(
    readme,
    /\*\*\(b\) MISSED\*\* — .*ReDiff keeps 87\.3% \(55\.00 at 8 tok\/step of 63\.00 at 1 tok\/step\).*goes from 60\.00 at 1 tok\/step to 40\.00 at 8: it falls\./,
  );
  assert.match(readme, /\*\*\(c\) NOT EVALUATED\*\* — .*Stage II only \(refining sampler\) at 4 tok\/step, not run/);
  assert.match(
    readme,
    /\*\*\(d\) MET\*\* — .*As measured \(threshold-rediff @0\.9\): 4\.50 tok\/step achieved, 62\.50 /,
  );
  assert.match(readme, /\*\*\(time\) MET\*\* — .*62\.0 minutes of work/);

  // Expert statistics.
  assert.match(
    readme,
    /\| Stage I \+ II \(from ReDiff-Base\) \| 1 \| 40 \| 10 \(25%\) \| 28 \| 1 \| 1 \| 50 \| 44 \| 6: not-found 4 \(67%\), length-mismatch 2 \(33%\) \| 27 \| count 6 \(60%\), attribute 3 \(30%\), relation 1 \(10%\) \|/,
  );

  // Examples and the trace.
  assert.match(
    readme,
    /\*\*Mask-pred baseline, LLaDA sampler\*\* \(CAPTURE 20\.0%, factuality 0\.0%, coverage 0\.0%\): A blue blue circle\./,
  );
  assert.match(readme, /false claims: "blue circle" \(no blue circle in the scene\)/);
  assert.match(readme, /- `step  2` a ~~blue~~ → \*red\* \*\*circle\*\* \*\*\.\*\* ·×92/);
  assert.match(readme, /- `step  3` a red circle \. \*\*⟨eos⟩\*\*/);
  assert.match(readme, /!\[[^\]]*\]\(trace\.svg\)/);
  assert.match(readme, /!\[[^\]]*\]\(capture-vs-tokens-per-step\.svg\)/);
  assert.doesNotMatch(readme, /<[a-z]+[ >]/i, 'no HTML in the README');

  // results.json.
  const res = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8'));
  assert.equal(res.study.preset, 'quick');
  assert.equal(res.systems['stage2-only'], null);
  assert.equal(res.systems.rediff.rows.length, 5);
  assert.equal(res.rounds.stage2[0].drafts, 40);
  assert.equal(res.rounds['stage2-only'], null);
  assert.deepEqual(
    res.targets.map((t: { verdict: string }) => t.verdict),
    ['MISSED', 'MISSED', 'NOT EVALUATED', 'MET', 'MET'],
  );
  assert.equal(res.examples[0].rediff.caption, 'A red circle.');

  // SVGs.
  for (const f of ['capture-vs-tokens-per-step.svg', 'factuality-vs-tokens-per-step.svg', 'trace.svg']) {
    const svg = fs.readFileSync(path.join(out, f), 'utf8');
    assert.match(svg, /^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/, f);
    assert.match(svg, /<\/svg>\s*$/, f);
  }
  const capture = fs.readFileSync(path.join(out, 'capture-vs-tokens-per-step.svg'), 'utf8');
  for (const s of [
    'Mask-pred baseline, LLaDA sampler',
    'Mask-pred baseline, refining sampler',
    'ReDiff-Base (Stage I), refining sampler',
    'ReDiff (Stage I + II), refining sampler',
    'CAPTURE (%)',
    'tokens per step',
  ]) {
    assert.ok(capture.includes(s), `capture plot lacks "${s}"`);
  }
  assert.ok(!capture.includes('Stage II only'), 'a system not run has no line');
  const trace = fs.readFileSync(path.join(out, 'trace.svg'), 'utf8');
  for (const s of ['circle', 'blue →', 'refined', 'committed']) assert.ok(trace.includes(s), `trace plot lacks "${s}"`);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('evaluateTargets: each target MET and MISSED on its own numbers', async () => {
  const dir = fakeStudy();
  const s2 = path.join(dir, 'results', 'stage2-only.json');
  const verdict = async (id: string) => evaluateTargets(await readStudy(dir)).find((t) => t.id === id)!;
  // (c): above both stages alone at 4 and at 8, then not above Stage II alone at 8.
  writeJson(s2, results('stage2-only', [row('rediff', 1, 0.61), row('rediff', 4, 0.6), row('rediff', 8, 0.52)]));
  assert.equal((await verdict('c')).verdict, 'MET');
  writeJson(s2, results('stage2-only', [row('rediff', 4, 0.6), row('rediff', 8, 0.56)]));
  const c = await verdict('c');
  assert.equal(c.verdict, 'MISSED');
  assert.match(c.detail, /at 8 tok\/step versus Stage II alone \(56\.00\): not above/);
  // (a) met when ReDiff at 8 reaches the baseline at 1; (b) then hangs on the parse rate alone.
  const rediff = path.join(dir, 'results', 'rediff.json');
  writeJson(
    rediff,
    results('rediff', [
      row('rediff', 1, 0.6),
      row('rediff', 4, 0.59),
      row('rediff', 8, 0.6, 0.89),
      thresholdRow('threshold-rediff', 3.9, 0.6),
    ]),
  );
  assert.equal((await verdict('a')).verdict, 'MET');
  assert.equal((await verdict('b')).verdict, 'MISSED');
  assert.equal((await verdict('d')).verdict, 'MISSED', 'under 4 tok/step achieved');
  writeJson(
    rediff,
    results('rediff', [
      row('rediff', 1, 0.6),
      row('rediff', 4, 0.59),
      row('rediff', 8, 0.58, 0.9),
      thresholdRow('threshold-rediff', 4, 0.585),
    ]),
  );
  assert.equal((await verdict('b')).verdict, 'MET', '96.7% kept, 90% parse, and the baseline falls');
  assert.equal((await verdict('d')).verdict, 'MISSED', '1.5 points below ReDiff at 1 tok/step');
  writeJson(
    rediff,
    results('rediff', [
      row('rediff', 1, 0.6),
      row('rediff', 4, 0.59),
      row('rediff', 8, 0.56, 0.95),
      thresholdRow('threshold-rediff', 4, 0.591),
    ]),
  );
  assert.equal((await verdict('b')).verdict, 'MISSED', '93.3% kept');
  assert.equal((await verdict('d')).verdict, 'MET');
  // (d) reads the study's own threshold when the results also hold an earlier one's rows.
  const info = JSON.parse(fs.readFileSync(path.join(dir, 'study.json'), 'utf8'));
  writeJson(path.join(dir, 'study.json'), { ...info, settings: { threshold: 0.7 } });
  writeJson(
    rediff,
    results('rediff', [
      row('rediff', 1, 0.6),
      row('rediff', 8, 0.56),
      thresholdRow('threshold-rediff', 4.2, 0.6),
      { ...thresholdRow('threshold-rediff', 3, 0.6), label: 'threshold-rediff @0.7' },
    ]),
  );
  const d = await verdict('d');
  assert.equal(d.verdict, 'MISSED');
  assert.match(d.detail, /threshold-rediff @0\.7\): 3\.00 tok\/step achieved/);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('writeReport: an empty study reports everything as not run; a missing directory is an error', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rediff-report-empty-'));
  const { files } = await writeReport(dir, path.join(dir, 'out'));
  assert.deepEqual(files.map((f) => path.basename(f)).sort(), ['README.md', 'results.json']);
  const readme = fs.readFileSync(path.join(dir, 'out', 'README.md'), 'utf8');
  assert.match(readme, /study\.json was not found/);
  assert.match(readme, /\| Mask-pred baseline \| LLaDA sampler \| not run \| not run \| not run \| not run \|/);
  assert.equal((readme.match(/NOT EVALUATED/g) ?? []).length, 5);
  assert.match(readme, /No examples were recorded/);
  await assert.rejects(writeReport(path.join(dir, 'nope'), path.join(dir, 'out2')), /study directory not found/);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('traceMarkdown: committed in bold, refined struck through, masks collapsed', () => {
  const lines = traceMarkdown(TRACE.slice(0, 1), PIECES);
  assert.deepEqual(lines, ['- `step  1` **a** **blue** ·×94']);
});
