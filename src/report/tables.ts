/**
 * The report's tables (shaped like the paper's Tables 2-6), the issue's targets evaluated from
 * the measured numbers, and the Stage II expert statistics. Pure functions of a Study; every
 * table is string[][] (header first) for renderMarkdown.
 */
import { meanCI } from '../benchmark/metrics.js';
import { formatEstimate } from '../evaluation/table.js';
import type { RoundReport } from '../training/self-correction.js';
import {
  type EstimateJSON,
  type EvalRowJSON,
  type Study,
  STAGE2_RUNS,
  rowLabel,
  samplerName,
  systemName,
} from './study.js';

export type Metric = 'capture' | 'factuality' | 'coverage' | 'parses';
export const METRIC_TITLES: Record<Metric, string> = {
  capture: 'CAPTURE',
  factuality: 'factuality',
  coverage: 'objects described',
  parses: 'parses',
};

/** Cell text for a system that has no results at all. */
export const NOT_RUN = 'not run';
/** Cell text for a setting the system was not evaluated with. */
export const NOT_EVALUATED = '—';

export interface TableRow {
  system: string;
  sampler: string;
  /** Row title; default the system's name. */
  name?: string;
}

export function findRow(study: Study, system: string, sampler: string, tokensPerStep: number): EvalRowJSON | undefined {
  return study.systems.get(system)?.rows.find((r) => r.sampler === sampler && r.tokensPerStep === tokensPerStep);
}

export function estimateOf(
  study: Study,
  system: string,
  sampler: string,
  tokensPerStep: number,
  metric: Metric,
): EstimateJSON | undefined {
  const e = findRow(study, system, sampler, tokensPerStep)?.summary[metric];
  return e !== undefined && Number.isFinite(e.mean) ? e : undefined;
}

function cell(study: Study, row: TableRow, tokensPerStep: number, metric: Metric): string {
  if (!study.systems.has(row.system)) return NOT_RUN;
  const e = estimateOf(study, row.system, row.sampler, tokensPerStep, metric);
  return e === undefined ? NOT_EVALUATED : formatEstimate(e.mean, e.lo, e.hi, true);
}

function rowTitle(study: Study, row: TableRow): string {
  return row.name ?? systemName(row.system, study.systems.get(row.system)?.label);
}

/** Tokens per step evaluated anywhere in the study (ascending); 1, 2, 4, 8 when none is known. */
export function studySpeeds(study: Study): number[] {
  const s = new Set<number>();
  for (const r of study.systems.values())
    for (const row of r.rows)
      if (typeof row.tokensPerStep === 'number' && Number.isFinite(row.tokensPerStep)) s.add(row.tokensPerStep);
  return s.size > 0 ? [...s].sort((a, b) => a - b) : [1, 2, 4, 8];
}

/** Adds, after each system's listed rows, a row for every other sampler that system was evaluated with at set rates. */
export function withOtherSamplers(study: Study, rows: readonly TableRow[]): TableRow[] {
  const out: TableRow[] = [];
  rows.forEach((row, i) => {
    out.push(row);
    if (rows[i + 1]?.system === row.system) return;
    const listed = new Set(rows.filter((r) => r.system === row.system).map((r) => r.sampler));
    const rated = study.systems.get(row.system)?.rows.filter((r) => typeof r.tokensPerStep === 'number') ?? [];
    const extra = [...new Set(rated.map((r) => r.sampler))].filter((s) => !listed.has(s)).sort();
    for (const sampler of extra) out.push({ system: row.system, sampler, name: row.name });
  });
  return out;
}

/** Rows of the Tables 2/3 analogue: the base (the paper's LLaDA-V row), the systems, the ceiling. */
export const MAIN_ROWS: TableRow[] = [
  { system: 'base', sampler: 'llada' },
  { system: 'baseline', sampler: 'llada' },
  { system: 'baseline', sampler: 'rediff' },
  { system: 'stage1', sampler: 'rediff' },
  { system: 'rediff', sampler: 'rediff' },
  { system: 'rediff-canonical', sampler: 'rediff' },
  { system: 'oracle', sampler: 'llada' },
];
/** The system whose score at a sampler and rate is the ceiling every other is measured against. */
export const CEILING = 'oracle';
/** Table 4 analogue: the stages. */
export const STAGE_ROWS: TableRow[] = [
  { system: 'baseline', sampler: 'llada' },
  { system: 'baseline', sampler: 'rediff' },
  { system: 'stage1', sampler: 'rediff', name: 'Stage I only (ReDiff-Base)' },
  { system: 'stage2-only', sampler: 'rediff', name: 'Stage II only' },
  { system: 'rediff', sampler: 'rediff', name: 'Stage I + II (ReDiff)' },
];
/** Table 5 analogue: Stage I variants. */
export const VARIANT_ROWS: TableRow[] = [
  { system: 'baseline', sampler: 'llada' },
  { system: 'ablation-hallucination-only', sampler: 'rediff', name: 'Revise hallucinations only' },
  { system: 'ablation-syntax-only', sampler: 'rediff', name: 'Revise syntactic noise only' },
  { system: 'ablation-dynamic', sampler: 'rediff', name: 'Dynamic revise ratio' },
  { system: 'stage1', sampler: 'rediff', name: 'Both (ReDiff-Base)' },
];
/** Beyond the paper: the same stages trained on one canonical caption per image. */
export const CANONICAL_ROWS: TableRow[] = [
  { system: 'stage1', sampler: 'rediff', name: 'Stage I (paraphrases)' },
  { system: 'stage1-canonical', sampler: 'rediff', name: 'Stage I (canonical captions)' },
  { system: 'rediff', sampler: 'rediff', name: 'Stage I + II (paraphrases)' },
  { system: 'rediff-canonical', sampler: 'rediff', name: 'Stage I + II (canonical captions)' },
  { system: 'oracle', sampler: 'rediff', name: 'Oracle' },
];
/** Table 6 analogue: Stage II rounds. */
export const ROUND_ROWS: TableRow[] = [
  { system: 'stage1', sampler: 'rediff', name: 'ReDiff-Base' },
  { system: 'rediff', sampler: 'rediff', name: 'Online round 1 (ReDiff)' },
  { system: 'rediff-round2', sampler: 'rediff', name: 'Online round 2' },
];

/** One metric by tokens per step (Tables 2/3): a row per system and sampler. */
export function speedTable(
  study: Study,
  metric: Metric,
  rows: readonly TableRow[],
  speeds: readonly number[],
): string[][] {
  const header = ['system', 'sampler', ...speeds.map((k) => `${k} tok/step`)];
  return [
    header,
    ...rows.map((r) => [rowTitle(study, r), samplerName(r.sampler), ...speeds.map((k) => cell(study, r, k, metric))]),
  ];
}

/** Each row's CAPTURE as a share of the ceiling's at the same sampler and rate, in %. */
export function ceilingShareTable(study: Study, rows: readonly TableRow[], speeds: readonly number[]): string[][] {
  const header = ['system', 'sampler', ...speeds.map((k) => `${k} tok/step`)];
  const share = (r: TableRow, k: number): string => {
    if (!study.systems.has(r.system)) return NOT_RUN;
    const e = estimateOf(study, r.system, r.sampler, k, 'capture');
    const c = estimateOf(study, CEILING, r.sampler, k, 'capture');
    return e === undefined || c === undefined || c.mean <= 0
      ? NOT_EVALUATED
      : `${((100 * e.mean) / c.mean).toFixed(1)}%`;
  };
  return [
    header,
    ...rows
      .filter((r) => r.system !== CEILING)
      .map((r) => [rowTitle(study, r), samplerName(r.sampler), ...speeds.map((k) => share(r, k))]),
  ];
}

/**
 * Rates achieved at each requested rate: positions decoded per step with the EOS fill after the
 * caption counted (L / steps), and caption tokens per step without it.
 */
export function rateTable(study: Study, rows: readonly TableRow[], speeds: readonly number[]): string[][] {
  const header = ['system', 'sampler', ...speeds.map((k) => `${k} tok/step: with fill / caption`)];
  const rate = (r: TableRow, k: number): string => {
    if (!study.systems.has(r.system)) return NOT_RUN;
    const row = findRow(study, r.system, r.sampler, k);
    if (row === undefined) return NOT_EVALUATED;
    return `${row.achievedTokensPerStep.toFixed(2)} / ${row.captionTokensPerStep?.toFixed(2) ?? NOT_EVALUATED}`;
  };
  return [header, ...rows.map((r) => [rowTitle(study, r), samplerName(r.sampler), ...speeds.map((k) => rate(r, k))])];
}

/** Several metrics at a few speeds (Tables 4-6). */
export function ablationTable(
  study: Study,
  rows: readonly TableRow[],
  metrics: readonly Metric[] = ['capture', 'factuality', 'coverage'],
  speeds: readonly number[] = [1, 4, 8],
): string[][] {
  const header = ['system', 'sampler', ...metrics.flatMap((m) => speeds.map((k) => `${METRIC_TITLES[m]} ${k}`))];
  return [
    header,
    ...rows.map((r) => [
      rowTitle(study, r),
      samplerName(r.sampler),
      ...metrics.flatMap((m) => speeds.map((k) => cell(study, r, k, m))),
    ]),
  ];
}

/** Confidence-threshold decoding: per system, the rate it achieved and what it scored. */
export function thresholdTable(study: Study): string[][] {
  const header = [
    'system',
    'sampler',
    'setting',
    'achieved tok/step',
    'caption tok/step',
    'CAPTURE',
    'factuality',
    'objects described',
    'parses',
  ];
  const body: string[][] = [];
  for (const [id, res] of study.systems) {
    for (const r of res.rows.filter((x) => typeof x.tokensPerStep !== 'number')) {
      const e = (k: string) => {
        const v = r.summary[k];
        return v !== undefined && Number.isFinite(v.mean) ? formatEstimate(v.mean, v.lo, v.hi, true) : NOT_EVALUATED;
      };
      body.push([
        systemName(id, res.label),
        samplerName(r.sampler),
        rowLabel(r),
        r.achievedTokensPerStep.toFixed(2),
        r.captionTokensPerStep?.toFixed(2) ?? NOT_EVALUATED,
        e('capture'),
        e('factuality'),
        e('coverage'),
        e('parses'),
      ]);
    }
  }
  return [header, ...body];
}

// ---------------------------------------------------------------------------------------------
// Targets

export type Verdict = 'MET' | 'MISSED' | 'NOT EVALUATED';

export interface TargetResult {
  id: 'keep' | 'headline' | 'parses' | 'ceiling' | 'stages' | 'threshold' | 'time';
  target: string;
  verdict: Verdict;
  /** One or more sentences with the measured numbers. */
  detail: string;
}

const pct = (x: number): string => (x * 100).toFixed(2);
const est = (e: EstimateJSON): string => `${pct(e.mean)} (95% CI ${pct(e.lo)}–${pct(e.hi)}, n = ${e.n})`;

/** A setting of a system; a threshold setting (tokensPerStep null) may name its row's label. */
type Setting = { system: string; sampler: string; tokensPerStep: number | null; label?: string };

function settingRow(study: Study, s: Setting): EvalRowJSON | undefined {
  return study.systems
    .get(s.system)
    ?.rows.find(
      (r) =>
        r.sampler === s.sampler &&
        (r.tokensPerStep ?? null) === s.tokensPerStep &&
        (s.label === undefined || rowLabel(r) === s.label),
    );
}

function summaryOf(study: Study, s: Setting, key: string): EstimateJSON | undefined {
  const e = settingRow(study, s)?.summary[key];
  return e !== undefined && Number.isFinite(e.mean) ? e : undefined;
}

const settingName = (s: Setting): string =>
  `${systemName(s.system)} ` +
  `(${samplerName(s.sampler)})${s.tokensPerStep === null ? '' : ` at ${s.tokensPerStep} tok/step`}`;

function lacking(study: Study, needs: Setting[]): string | undefined {
  const gaps = needs.filter((n) => summaryOf(study, n, 'capture') === undefined);
  if (gaps.length === 0) return undefined;
  return `Needs ${gaps.map((g) => `${settingName(g)}${study.systems.has(g.system) ? '' : ', not run'}`).join('; ')}.`;
}

/**
 * Mean paired difference a − b of a per-caption metric over the test scenes both settings
 * captioned, from the .jsonl records; undefined without records for both.
 */
export function pairedDifference(study: Study, a: Setting, b: Setting, metric: Metric): EstimateJSON | undefined {
  const recs = (s: Setting) => {
    const row = settingRow(study, s);
    return row === undefined ? undefined : study.records.get(s.system)?.get(rowLabel(row));
  };
  const ra = recs(a);
  const rb = recs(b);
  if (ra === undefined || rb === undefined) return undefined;
  const byId = new Map(rb.map((r) => [r.id, r.score[metric]]));
  const diffs: number[] = [];
  for (const r of ra) {
    const v = byId.get(r.id);
    if (typeof v === 'number' && typeof r.score[metric] === 'number') diffs.push(r.score[metric] - v);
  }
  return diffs.length >= 2 ? meanCI(diffs) : undefined;
}

function pairedText(d: EstimateJSON | undefined): string {
  if (d === undefined) return '';
  const sign = d.mean >= 0 ? '+' : '';
  const excludesZero = d.lo > 0 || d.hi < 0;
  return (
    ` Paired difference over the same ${d.n} test scenes: ${sign}${pct(d.mean)} points (95% CI ` +
    `${pct(d.lo)} to ${pct(d.hi)}; ` +
    `${excludesZero ? 'the interval excludes 0' : 'the interval includes 0'}).`
  );
}

/** The study's wall-time budget (issue: at most 2 hours with nothing else running). */
export const STUDY_BUDGET_SECONDS = 2 * 3600;

/** The issue's targets, on CAPTURE unless named, evaluated from the numbers as measured. */
export function evaluateTargets(study: Study, rediff = 'rediff'): TargetResult[] {
  const out: TargetResult[] = [];
  const paper = rediff === 'rediff';
  const R = (tokensPerStep: number): Setting => ({ system: rediff, sampler: 'rediff', tokensPerStep });
  const B = (tokensPerStep: number): Setting => ({ system: 'baseline', sampler: 'llada', tokensPerStep });
  const get = (s: Setting, key = 'capture') => summaryOf(study, s, key)!;
  const add = (
    id: TargetResult['id'],
    target: string,
    needs: Setting[],
    judge: () => { met: boolean; detail: string },
  ): void => {
    const gap = lacking(study, needs);
    if (gap !== undefined) out.push({ id, target, verdict: 'NOT EVALUATED', detail: gap });
    else {
      const { met, detail } = judge();
      out.push({ id, target, verdict: met ? 'MET' : 'MISSED', detail });
    }
  };

  const S1 = (k: number): Setting => ({ system: 'stage1', sampler: 'rediff', tokensPerStep: k });
  const S2 = (k: number): Setting => ({ system: 'stage2-only', sampler: 'rediff', tokensPerStep: k });
  const Base = (k: number): Setting => ({ system: 'base', sampler: 'llada', tokensPerStep: k });
  const Oracle = (k: number): Setting => ({ system: CEILING, sampler: 'rediff', tokensPerStep: k });
  const kept = (k: number): number => get(R(k)).mean / get(R(1)).mean;

  add(
    'keep',
    'ReDiff (refining sampler) keeps at least 97% of its own 1 tok/step CAPTURE at 4 tok/step and at least 85% at 8',
    [R(1), R(4), R(8)],
    () => ({
      met: kept(4) >= 0.97 && kept(8) >= 0.85,
      detail:
        `As measured: ${pct(get(R(4)).mean)} at 4 and ${pct(get(R(8)).mean)} at 8 tok/step of ` +
        `${pct(get(R(1)).mean)} at 1: ` +
        `${(100 * kept(4)).toFixed(1)}% and ${(100 * kept(8)).toFixed(1)}% kept.` +
        pairedText(pairedDifference(study, R(4), R(1), 'capture')),
    }),
  );

  add(
    'headline',
    'ReDiff at 4 tok/step scores at least the mask-pred baseline and the base at 1 tok/step (LLaDA sampler)',
    [R(4), B(1), Base(1)],
    () => ({
      met: get(R(4)).mean >= get(B(1)).mean && get(R(4)).mean >= get(Base(1)).mean,
      detail:
        `As measured: ReDiff at 4 tok/step ${est(get(R(4)))}; the baseline at 1 ${est(get(B(1)))}; ` +
        `the base at 1 ${est(get(Base(1)))}.` +
        pairedText(pairedDifference(study, R(4), B(1), 'capture')).replace('Paired', 'Against the baseline, paired') +
        pairedText(pairedDifference(study, R(4), Base(1), 'capture')).replace('Paired', 'Against the base, paired'),
    }),
  );

  add(
    'parses',
    "At least 95% of ReDiff's captions parse completely at 1 tok/step and at least 80% at 4",
    [R(1), R(4)],
    () => {
      const p1 = summaryOf(study, R(1), 'parses');
      const p4 = summaryOf(study, R(4), 'parses');
      return {
        met: p1 !== undefined && p4 !== undefined && p1.mean >= 0.95 && p4.mean >= 0.8,
        detail:
          `As measured, captions that parse, in %: ${p1 ? est(p1) : 'unknown'} at 1 tok/step, ` +
          `${p4 ? est(p4) : 'unknown'} at 4.`,
      };
    },
  );

  add(
    'ceiling',
    "ReDiff at 4 tok/step is within 5 points of the oracle's CAPTURE with the same sampler",
    [R(4), Oracle(4)],
    () => {
      const gap = get(Oracle(4)).mean - get(R(4)).mean;
      return {
        met: gap <= 0.05,
        detail:
          `As measured: ReDiff ${est(get(R(4)))}, the oracle ${est(get(Oracle(4)))}: ${pct(gap)} points below.` +
          pairedText(pairedDifference(study, R(4), Oracle(4), 'capture')),
      };
    },
  );

  if (paper)
    add(
      'stages',
      'Stage I + II scores at least Stage I alone and Stage II alone at 1 and at 4 tok/step ' +
        '(refining sampler; Table 4)',
      [R(1), S1(1), S2(1), R(4), S1(4), S2(4)],
      () => {
        const parts: string[] = [];
        let met = true;
        for (const k of [1, 4]) {
          for (const [other, name] of [
            [S1(k), 'Stage I alone'],
            [S2(k), 'Stage II alone'],
          ] as const) {
            const atLeast = get(R(k)).mean >= get(other).mean;
            met &&= atLeast;
            parts.push(
              `at ${k} tok/step versus ${name} (${pct(get(other).mean)}): ${atLeast ? 'at least' : 'below'}.` +
                pairedText(pairedDifference(study, R(k), other, 'capture')),
            );
          }
        }
        return {
          met,
          detail:
            `As measured, Stage I + II at 1 / 4 tok/step: ${est(get(R(1)))} / ${est(get(R(4)))}; ` + parts.join(' '),
        };
      },
    );

  // The study's threshold (a study may also hold rows of an earlier one).
  const threshold = (study.info?.settings as { threshold?: number } | undefined)?.threshold;
  const T: Setting = {
    system: rediff,
    sampler: 'threshold-rediff',
    tokensPerStep: null,
    ...(threshold !== undefined ? { label: `threshold-rediff @${threshold}` } : {}),
  };
  add(
    'threshold',
    'ReDiff with threshold-rediff decoding writes at least 4 caption tokens per step (the EOS fill ' +
      'not counted), within 1 point of ReDiff at 1 tok/step',
    [T, R(1)],
    () => {
      const row = settingRow(study, T)!;
      const rate = row.captionTokensPerStep;
      const t = get(T);
      const r1 = get(R(1));
      const met = rate !== undefined && rate >= 4 && t.mean >= r1.mean - 0.01;
      return {
        met,
        detail:
          `As measured (${rowLabel(row)}): ` +
          `${rate === undefined ? 'caption tokens per step not recorded' : `${rate.toFixed(2)} caption tok/step`} ` +
          `(${row.achievedTokensPerStep.toFixed(2)} with the EOS fill), ${est(t)}; ReDiff at 1 tok/step ${est(r1)}.` +
          pairedText(pairedDifference(study, T, R(1), 'capture')),
      };
    },
  );

  if (!paper) return out;
  const seconds = study.info?.seconds;
  const target =
    `The whole study runs in at most ${STUDY_BUDGET_SECONDS / 3600} hours on this machine (the base's ` +
    `own training not counted)`;
  if (seconds === undefined || !Number.isFinite(seconds) || study.info?.finishedAt === undefined) {
    out.push({
      id: 'time',
      target,
      verdict: 'NOT EVALUATED',
      detail: 'The study has not finished (study.json has no finish time).',
    });
  } else {
    out.push({
      id: 'time',
      target,
      verdict: seconds <= STUDY_BUDGET_SECONDS ? 'MET' : 'MISSED',
      detail:
        `As measured: ${(seconds / 60).toFixed(1)} minutes of work, summed over the study's steps ` +
        `(the time table above).`,
    });
  }
  return out;
}

export function targetLines(targets: readonly TargetResult[]): string[] {
  return targets.map((t) => `- **(${t.id}) ${t.verdict}** — ${t.target}. ${t.detail}`);
}

// ---------------------------------------------------------------------------------------------
// Stage II expert statistics

function mix(counts: Record<string, number> | undefined): string {
  const entries = Object.entries(counts ?? {}).filter(([, n]) => n > 0);
  const total = entries.reduce((s, [, n]) => s + n, 0);
  if (total === 0) return 'none';
  return entries
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .map(([k, n]) => `${k} ${n} (${Math.round((100 * n) / total)}%)`)
    .join(', ');
}

/** One row per Stage II run and round: what the expert said and what the filter kept. */
export function expertTable(rounds: ReadonlyMap<string, readonly RoundReport[]>): string[][] {
  const header = [
    'run',
    'round',
    'drafts',
    'judged right',
    'with pairs',
    'malformed',
    'expert errors',
    'pairs proposed',
    'pairs kept',
    'pairs dropped',
    'drafts trained on',
    'error types in the drafts',
  ];
  const body: string[][] = [];
  for (const run of STAGE2_RUNS) {
    for (const r of rounds.get(run.id) ?? []) {
      const v = r.reviews;
      const dropped = Object.values(v?.dropped ?? {}).reduce((s, n) => s + n, 0);
      const drops = mix(v?.dropped as Record<string, number> | undefined);
      body.push([
        run.name,
        String(r.round),
        String(r.drafts),
        v ? `${v.right} (${v.answers > 0 ? Math.round((100 * v.right) / v.answers) : 0}%)` : NOT_EVALUATED,
        v ? String(v.withPairs) : NOT_EVALUATED,
        v ? String(v.malformed) : NOT_EVALUATED,
        v ? String(v.errors) : NOT_EVALUATED,
        v ? String(v.pairsProposed) : NOT_EVALUATED,
        v ? String(v.pairsKept) : NOT_EVALUATED,
        dropped > 0 ? `${dropped}: ${drops}` : '0',
        String(r.trainingPairs),
        mix(r.draftErrors),
      ]);
    }
  }
  return [header, ...body];
}
