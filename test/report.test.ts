import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { writeReport } from '../src/report/report.js';
import { readStudy } from '../src/report/study.js';
import { evaluateTargets } from '../src/report/targets.js';
import { traceMarkdown } from '../src/report/examples.js';
import type { StepTrace } from '../src/sampling/sampler.js';
import { SUMMARY_METRICS } from '../src/benchmark/metrics.js';

/** A row whose CAPTURE is `capture` ±0.02, factuality capture + 0.1, coverage capture − 0.1, parses `parses`. */
function row(sampler: string, tokensPerStep: number, capture: number, parses = 0.5) {
  const summary: Record<string, { mean: number; lo: number; hi: number; n: number }> = {};
  for (const m of SUMMARY_METRICS) summary[m] = { mean: 0.5, lo: 0.48, hi: 0.52, n: 3 };
  summary.capture = { mean: capture, lo: capture - 0.02, hi: capture + 0.02, n: 3 };
  summary.factuality = { mean: capture + 0.1, lo: capture + 0.09, hi: capture + 0.11, n: 3 };
  summary.coverage = { mean: capture - 0.1, lo: capture - 0.13, hi: capture - 0.07, n: 3 };
  summary.parses = { mean: parses, lo: parses - 0.02, hi: parses + 0.02, n: 3 };
  return {
    sampler,
    tokensPerStep,
    achievedTokensPerStep: tokensPerStep,
    captionTokensPerStep: tokensPerStep / 2,
    meanSteps: 96 / tokensPerStep,
    seconds: 1,
    summary,
  };
}

/** A confidence-threshold row: no set rate, `achieved` tokens per step (`caption` of them caption tokens). */
function thresholdRow(sampler: string, achieved: number, capture: number, caption = achieved - 0.3) {
  return {
    ...row(sampler, achieved, capture),
    tokensPerStep: null,
    captionTokensPerStep: caption,
    label: `${sampler} @0.9`,
  };
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

/** base, oracle, baseline, stage1 and rediff; stage2-only and the rest not run. */
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
  writeJson(
    path.join(dir, 'results', 'base.json'),
    results('base', [...speeds.map((k, i) => row('llada', k, [0.64, 0.6, 0.52, 0.42][i]!, 0.97))]),
  );
  writeJson(
    path.join(dir, 'results', 'oracle.json'),
    results('oracle', [
      ...speeds.map((k, i) => row('llada', k, [0.9, 0.85, 0.76, 0.65][i]!, 1)),
      ...speeds.map((k, i) => row('rediff', k, [0.9, 0.89, 0.88, 0.8][i]!, 1)),
    ]),
  );
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
    '| Stage II only | refining sampler | not run | not run | not run | not run | not run | not run | not run | not ' +
      'run | not run |',
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

  // The base and the oracle in Tables 2/3, and every row's share of the ceiling.
  assert.equal(
    tableRow(readme, '### CAPTURE-style score', '| Base (LLaDA-V stand-in) | LLaDA sampler'),
    '| Base (LLaDA-V stand-in) | LLaDA sampler | 64.0 ±2.0 | 60.0 ±2.0 | 52.0 ±2.0 | 42.0 ±2.0 |',
  );
  assert.equal(
    tableRow(readme, '### CAPTURE-style score', '| Oracle (perfect model) | refining sampler'),
    '| Oracle (perfect model) | refining sampler | 90.0 ±2.0 | 89.0 ±2.0 | 88.0 ±2.0 | 80.0 ±2.0 |',
  );
  assert.equal(
    tableRow(readme, '### Share of the ceiling', '| ReDiff (Stage I + II)'),
    '| ReDiff (Stage I + II) | refining sampler | 70.0% | 70.8% | 70.5% | 68.8% |',
  );
  assert.equal(
    tableRow(readme, '### Share of the ceiling', '| Mask-pred baseline | LLaDA sampler'),
    '| Mask-pred baseline | LLaDA sampler | 66.7% | 68.2% | 65.8% | 61.5% |',
  );
  assert.doesNotMatch(readme.slice(readme.indexOf('### Share of the ceiling')).split('###')[1]!, /\| Oracle/);
  assert.equal(
    tableRow(readme, '### Tokens per step achieved', '| ReDiff (Stage I + II)'),
    '| ReDiff (Stage I + II) | refining sampler | 1.00 / 0.50 | 2.00 / 1.00 | 4.00 / 2.00 | 8.00 / 4.00 |',
  );

  // Threshold decoding: its own table, not a column of the rate tables.
  assert.equal(
    tableRow(readme, '## Confidence-threshold decoding', '| ReDiff (Stage I + II)'),
    '| ReDiff (Stage I + II) | confidence-threshold refining sampler | threshold-rediff @0.9 | 4.50 | 4.20 | 62.5 ' +
      '±2.0 | 72.5 ±1.0 | 52.5 ±3.0 | 50.0 ±2.0 |',
  );

  // Targets.
  assert.match(
    readme,
    /\*\*\(keep\) MET\*\* — .*62\.00 at 4 and 55\.00 at 8 tok\/step of 63\.00 at 1: 98\.4% and 87\.3% kept/,
  );
  assert.match(
    readme,
    /\*\*\(headline\) MISSED\*\* — .*ReDiff at 4 tok\/step 62\.00 .*the baseline at 1 60\.00 .*the base at 1 64\.00/,
  );
  assert.match(readme, /\*\*\(parses\) MISSED\*\* — .*50\.00 .* at 1 tok\/step, 50\.00 .* at 4/);
  assert.match(readme, /\*\*\(ceiling\) MISSED\*\* — .*the oracle 88\.00 .*: 26\.00 points below/);
  assert.match(
    readme,
    /\*\*\(stages\) NOT EVALUATED\*\* — .*Stage II only \(refining sampler\) at 1 tok\/step, not run/,
  );
  assert.match(
    readme,
    new RegExp(
      String.raw`\*\*\(threshold\) MET\*\* — .*As measured \(threshold-rediff ` +
        String.raw`@0\.9\): 4\.20 caption tok\/step \(4\.50 with the EOS fill\), 62\.50 `,
    ),
  );
  assert.match(readme, /\*\*\(time\) MET\*\* — .*62\.0 minutes of work/);

  // Expert statistics.
  assert.match(
    readme,
    new RegExp(
      String.raw`\| Stage I \+ II \(from ReDiff-Base\) \| 1 \| 40 \| 10 \(25%\) \| 28 \| 1 \| 1 \| ` +
        String.raw`50 \| 44 \| 6: not-found 4 \(67%\), length-mismatch 2 \(33%\) \| 27 \| count 6 \(60%\), ` +
        String.raw`attribute 3 \(30%\), relation 1 \(10%\) \|`,
    ),
  );

  // Examples and the trace.
  assert.match(
    readme,
    new RegExp(
      String.raw`\*\*Mask-pred baseline, LLaDA sampler\*\* \(CAPTURE 20\.0%, ` +
        String.raw`factuality 0\.0%, coverage 0\.0%\): A blue blue circle\.`,
    ),
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
    ['MET', 'MISSED', 'MISSED', 'MISSED', 'NOT EVALUATED', 'MET', 'MET'],
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
  const verdict = async (id: string) => evaluateTargets(await readStudy(dir)).find((t) => t.id === id)!;
  const rediff = path.join(dir, 'results', 'rediff.json');
  const s2 = path.join(dir, 'results', 'stage2-only.json');
  // ReDiff: 0.86 at 1 (parses 95%), 0.84 at 4 (parses 80%), 0.74 at 8; the oracle has 0.88 at 4.
  const rediffRows = (at4: number, parses4: number, at8: number, threshold: ReturnType<typeof thresholdRow>) =>
    results('rediff', [row('rediff', 1, 0.86, 0.95), row('rediff', 4, at4, parses4), row('rediff', 8, at8), threshold]);
  writeJson(rediff, rediffRows(0.84, 0.8, 0.74, thresholdRow('threshold-rediff', 4.5, 0.851, 4.1)));
  writeJson(s2, results('stage2-only', [row('rediff', 1, 0.8), row('rediff', 4, 0.7)]));
  for (const id of ['keep', 'headline', 'parses', 'ceiling', 'stages', 'threshold']) {
    assert.equal((await verdict(id)).verdict, 'MET', id);
  }
  // Each one missed on its own number.
  writeJson(rediff, rediffRows(0.84, 0.8, 0.73, thresholdRow('threshold-rediff', 4.5, 0.851, 4.1)));
  assert.equal((await verdict('keep')).verdict, 'MISSED', '84.9% kept at 8');
  writeJson(rediff, rediffRows(0.82, 0.79, 0.74, thresholdRow('threshold-rediff', 4.5, 0.849, 3.9)));
  assert.equal((await verdict('parses')).verdict, 'MISSED', '79% parse at 4');
  assert.equal((await verdict('ceiling')).verdict, 'MISSED', '6 points below the oracle');
  assert.equal((await verdict('headline')).verdict, 'MET', '0.82 is above the base (0.64) and the baseline (0.60)');
  const t = await verdict('threshold');
  assert.equal(t.verdict, 'MISSED', 'caption rate 3.9 and 1.1 points below');
  assert.match(t.detail, /3\.90 caption tok\/step \(4\.50 with the EOS fill\)/);
  writeJson(s2, results('stage2-only', [row('rediff', 1, 0.8), row('rediff', 4, 0.83)]));
  const stages = await verdict('stages');
  assert.equal(stages.verdict, 'MISSED');
  assert.match(stages.detail, /at 4 tok\/step versus Stage II alone \(83\.00\): below/);
  writeJson(rediff, rediffRows(0.63, 0.8, 0.6, thresholdRow('threshold-rediff', 4.5, 0.851, 4.1)));
  assert.equal((await verdict('headline')).verdict, 'MISSED', '0.63 is below the base at 1 (0.64)');
  // The threshold target reads the study's own threshold when the results also hold an earlier one's rows.
  const info = JSON.parse(fs.readFileSync(path.join(dir, 'study.json'), 'utf8'));
  writeJson(path.join(dir, 'study.json'), { ...info, settings: { threshold: 0.7 } });
  writeJson(
    rediff,
    rediffRows(0.84, 0.8, 0.74, {
      ...thresholdRow('threshold-rediff', 3.2, 0.86, 3),
      label: 'threshold-rediff @0.7',
    }),
  );
  const d = await verdict('threshold');
  assert.equal(d.verdict, 'MISSED');
  assert.match(d.detail, /threshold-rediff @0\.7\): 3\.00 caption tok\/step/);
  // A canonical system is judged at the canonical systems' own threshold.
  writeJson(path.join(dir, 'study.json'), { ...info, settings: { threshold: 0.7, canonicalThreshold: 0.95 } });
  writeJson(
    path.join(dir, 'results', 'rediff-canonical.json'),
    results('rediff-canonical', [
      row('rediff', 1, 0.86),
      { ...thresholdRow('threshold-rediff', 6, 0.8, 5), label: 'threshold-rediff @0.7' },
      { ...thresholdRow('threshold-rediff', 5, 0.855, 4.4), label: 'threshold-rediff @0.95' },
    ]),
  );
  const canonical = evaluateTargets(await readStudy(dir), 'rediff-canonical').find((t) => t.id === 'threshold')!;
  assert.equal(canonical.verdict, 'MET');
  assert.match(canonical.detail, /threshold-rediff @0\.95\): 4\.40 caption tok\/step/);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('writeReport: an empty study reports everything as not run; a missing directory is an error', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rediff-report-empty-'));
  const { files } = await writeReport(dir, path.join(dir, 'out'));
  assert.deepEqual(files.map((f) => path.basename(f)).sort(), ['README.md', 'results.json']);
  const readme = fs.readFileSync(path.join(dir, 'out', 'README.md'), 'utf8');
  assert.match(readme, /study\.json was not found/);
  assert.match(readme, /\| Mask-pred baseline \| LLaDA sampler \| not run \| not run \| not run \| not run \|/);
  assert.equal(
    (readme.match(/NOT EVALUATED/g) ?? []).length,
    17,
    '7 targets, and 5 for each of the two systems on canonical captions',
  );
  assert.match(readme, /The same targets for Stage I, canonical captions \(beyond the paper/);
  assert.match(readme, /The same targets for ReDiff, canonical captions \(beyond the paper/);
  assert.match(readme, /No examples were recorded/);
  await assert.rejects(writeReport(path.join(dir, 'nope'), path.join(dir, 'out2')), /study directory not found/);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('traceMarkdown: committed in bold, refined struck through, masks collapsed', () => {
  const lines = traceMarkdown(TRACE.slice(0, 1), PIECES);
  assert.deepEqual(lines, ['- `step  1` **a** **blue** ·×94']);
});
