/**
 * The report's tables (shaped like the paper's Tables 2-6), the issue's targets evaluated from
 * the measured numbers, and the Stage II expert statistics. Pure functions of a Study; every
 * table is string[][] (header first) for renderMarkdown.
 */
import { meanCI } from '../benchmark/metrics.js';
import { formatEstimate } from '../evaluation/table.js';
import type { RoundReport } from '../training/self-correction.js';
import { type EstimateJSON, type EvalRowJSON, type Study, STAGE2_RUNS, rowLabel, samplerName, systemName } from './study.js';

export type Metric = 'capture' | 'factuality' | 'coverage';
export const METRIC_TITLES: Record<Metric, string> = { capture: 'CAPTURE', factuality: 'factuality', coverage: 'objects described' };

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

export function estimateOf(study: Study, system: string, sampler: string, tokensPerStep: number, metric: Metric): EstimateJSON | undefined {
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
  for (const r of study.systems.values()) for (const row of r.rows) if (typeof row.tokensPerStep === 'number' && Number.isFinite(row.tokensPerStep)) s.add(row.tokensPerStep);
  return s.size > 0 ? [...s].sort((a, b) => a - b) : [1, 2, 4, 8];
}

/** Adds, after each system's listed rows, a row for every other sampler that system was evaluated with. */
export function withOtherSamplers(study: Study, rows: readonly TableRow[]): TableRow[] {
  const out: TableRow[] = [];
  rows.forEach((row, i) => {
    out.push(row);
    if (rows[i + 1]?.system === row.system) return;
    const listed = new Set(rows.filter((r) => r.system === row.system).map((r) => r.sampler));
    const extra = [...new Set(study.systems.get(row.system)?.rows.map((r) => r.sampler) ?? [])].filter((s) => !listed.has(s)).sort();
    for (const sampler of extra) out.push({ system: row.system, sampler, name: row.name });
  });
  return out;
}

/** Rows of the Tables 2/3 analogue. */
export const MAIN_ROWS: TableRow[] = [
  { system: 'baseline', sampler: 'llada' },
  { system: 'baseline', sampler: 'rediff' },
  { system: 'stage1', sampler: 'rediff' },
  { system: 'rediff', sampler: 'rediff' },
];
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
/** Table 6 analogue: Stage II rounds. */
export const ROUND_ROWS: TableRow[] = [
  { system: 'stage1', sampler: 'rediff', name: 'ReDiff-Base' },
  { system: 'rediff', sampler: 'rediff', name: 'Online round 1 (ReDiff)' },
  { system: 'rediff-round2', sampler: 'rediff', name: 'Online round 2' },
];

/** One metric by tokens per step (Tables 2/3): a row per system and sampler. */
export function speedTable(study: Study, metric: Metric, rows: readonly TableRow[], speeds: readonly number[]): string[][] {
  const header = ['system', 'sampler', ...speeds.map((k) => `${k} tok/step`)];
  return [header, ...rows.map((r) => [rowTitle(study, r), samplerName(r.sampler), ...speeds.map((k) => cell(study, r, k, metric))])];
}

/** Several metrics at a few speeds (Tables 4-6). */
export function ablationTable(study: Study, rows: readonly TableRow[], metrics: readonly Metric[] = ['capture', 'factuality', 'coverage'], speeds: readonly number[] = [1, 4, 8]): string[][] {
  const header = ['system', 'sampler', ...metrics.flatMap((m) => speeds.map((k) => `${METRIC_TITLES[m]} ${k}`))];
  return [header, ...rows.map((r) => [rowTitle(study, r), samplerName(r.sampler), ...metrics.flatMap((m) => speeds.map((k) => cell(study, r, k, m)))])];
}

// ---------------------------------------------------------------------------------------------
// Targets

export type Verdict = 'MET' | 'MISSED' | 'NOT EVALUATED';

export interface TargetResult {
  id: 'a' | 'b' | 'c';
  target: string;
  verdict: Verdict;
  /** One or more sentences with the measured numbers. */
  detail: string;
}

const pct = (x: number): string => (x * 100).toFixed(2);
const est = (e: EstimateJSON): string => `${pct(e.mean)} (95% CI ${pct(e.lo)}–${pct(e.hi)}, n = ${e.n})`;

/**
 * Mean paired difference a − b of a per-caption metric over the test scenes both settings
 * captioned, from the .jsonl records; undefined without records for both.
 */
export function pairedDifference(study: Study, a: { system: string; sampler: string; tokensPerStep: number }, b: { system: string; sampler: string; tokensPerStep: number }, metric: Metric): EstimateJSON | undefined {
  const recs = (s: typeof a) => {
    const row = findRow(study, s.system, s.sampler, s.tokensPerStep);
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
  return ` Paired difference over the same ${d.n} test scenes: ${sign}${pct(d.mean)} points (95% CI ${pct(d.lo)} to ${pct(d.hi)}; ${excludesZero ? 'the interval excludes 0' : 'the interval includes 0'}).`;
}

function missing(study: Study, needs: { system: string; sampler: string; tokensPerStep: number }[]): string | undefined {
  const gaps = needs.filter((n) => estimateOf(study, n.system, n.sampler, n.tokensPerStep, 'capture') === undefined);
  if (gaps.length === 0) return undefined;
  return `Needs ${gaps.map((g) => `${systemName(g.system)} (${samplerName(g.sampler)}) at ${g.tokensPerStep} tok/step${study.systems.has(g.system) ? '' : ', not run'}`).join('; ')}.`;
}

/** The issue's three targets, on CAPTURE, evaluated from the numbers as measured. */
export function evaluateTargets(study: Study): TargetResult[] {
  const out: TargetResult[] = [];
  const R = (tokensPerStep: number) => ({ system: 'rediff', sampler: 'rediff', tokensPerStep });
  const B = (tokensPerStep: number, sampler = 'llada') => ({ system: 'baseline', sampler, tokensPerStep });
  const get = (s: { system: string; sampler: string; tokensPerStep: number }) => estimateOf(study, s.system, s.sampler, s.tokensPerStep, 'capture')!;

  {
    const target = 'ReDiff at 4 tok/step (refining sampler) scores at least the mask-pred baseline at 1 tok/step (LLaDA sampler) on CAPTURE';
    const gap = missing(study, [R(4), B(1)]);
    if (gap !== undefined) out.push({ id: 'a', target, verdict: 'NOT EVALUATED', detail: gap });
    else {
      const r = get(R(4));
      const b = get(B(1));
      out.push({
        id: 'a',
        target,
        verdict: r.mean >= b.mean ? 'MET' : 'MISSED',
        detail: `As measured: ReDiff at 4 tok/step ${est(r)}; baseline at 1 tok/step ${est(b)}.` + pairedText(pairedDifference(study, R(4), B(1), 'capture')),
      });
    }
  }
  {
    const target = 'ReDiff at 8 tok/step keeps at least 90% of its own 1 tok/step CAPTURE';
    const gap = missing(study, [R(8), R(1)]);
    const share = (hi: EstimateJSON, lo: EstimateJSON) => `${((100 * hi.mean) / lo.mean).toFixed(1)}%`;
    const baselineShares = ['llada', 'rediff']
      .filter((s) => estimateOf(study, 'baseline', s, 8, 'capture') !== undefined && estimateOf(study, 'baseline', s, 1, 'capture') !== undefined)
      .map((s) => `with the ${samplerName(s)} ${share(get(B(8, s)), get(B(1, s)))} (${pct(get(B(8, s)).mean)} of ${pct(get(B(1, s)).mean)})`);
    const baselineText = baselineShares.length > 0 ? ` The mask-pred baseline keeps ${baselineShares.join('; ')}.` : ' The baseline share is not available.';
    if (gap !== undefined) out.push({ id: 'b', target, verdict: 'NOT EVALUATED', detail: gap + baselineText });
    else {
      const r8 = get(R(8));
      const r1 = get(R(1));
      const ratio = r1.mean > 0 ? r8.mean / r1.mean : NaN;
      out.push({
        id: 'b',
        target,
        verdict: Number.isFinite(ratio) && ratio >= 0.9 ? 'MET' : 'MISSED',
        detail: `As measured: ReDiff keeps ${share(r8, r1)} (${pct(r8.mean)} at 8 tok/step of ${pct(r1.mean)} at 1 tok/step).` + baselineText,
      });
    }
  }
  {
    const target = 'Stage I + II beats Stage I alone and Stage II alone at 4 tok/step (refining sampler) on CAPTURE';
    const S1 = { system: 'stage1', sampler: 'rediff', tokensPerStep: 4 };
    const S2 = { system: 'stage2-only', sampler: 'rediff', tokensPerStep: 4 };
    const gap = missing(study, [R(4), S1, S2]);
    if (gap !== undefined) out.push({ id: 'c', target, verdict: 'NOT EVALUATED', detail: gap });
    else {
      const r = get(R(4));
      const s1 = get(S1);
      const s2 = get(S2);
      const beaten = [s1.mean < r.mean ? 'Stage I' : undefined, s2.mean < r.mean ? 'Stage II' : undefined].filter(Boolean);
      const p1 = pairedDifference(study, R(4), S1, 'capture');
      const p2 = pairedDifference(study, R(4), S2, 'capture');
      out.push({
        id: 'c',
        target,
        verdict: beaten.length === 2 ? 'MET' : 'MISSED',
        detail:
          `As measured at 4 tok/step: Stage I + II ${est(r)}; Stage I only ${est(s1)}; Stage II only ${est(s2)}. ` +
          (beaten.length === 2 ? 'I + II is above both.' : beaten.length === 1 ? `I + II is above ${beaten[0]} only.` : 'I + II is above neither.') +
          (p1 ? pairedText(p1).replace('Paired difference', 'Versus Stage I, paired difference') : '') +
          (p2 ? pairedText(p2).replace('Paired difference', 'Versus Stage II, paired difference') : ''),
      });
    }
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
  const header = ['run', 'round', 'drafts', 'judged right', 'with pairs', 'malformed', 'expert errors', 'pairs proposed', 'pairs kept', 'pairs dropped', 'drafts trained on', 'error types in the drafts'];
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
