/**
 * The report's tables (shaped like the paper's Tables 2-6, with the ceiling's share and the
 * rates achieved) and the Stage II expert statistics. Pure functions of a Study; every table is
 * string[][] (header first) for renderMarkdown. The targets are ./targets.ts.
 */
import { type EstimateJSON, type EvalRowJSON, rowLabel } from '../evaluation/results-file.js';
import { formatEstimate } from '../evaluation/table.js';
import type { RoundReport } from '../training/self-correction.js';
import { type Study, STAGE2_RUNS, samplerName, systemName } from './study.js';

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
  { system: 'stage1-canonical', sampler: 'rediff' },
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
