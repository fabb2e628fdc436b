/**
 * The ceiling issue's targets, evaluated from a study's numbers as measured: one function per
 * target, each needing the settings it names (NOT EVALUATED without them), each saying its
 * numbers and, where per-caption records exist, the paired difference over the same test scenes.
 */
import { meanCI } from '../benchmark/metrics.js';
import { type EstimateJSON, type EvalRowJSON, rowLabel } from '../evaluation/results-file.js';
import { CANONICAL_SYSTEMS, type Study, samplerName, systemName } from './study.js';
import { CEILING, type Metric } from './tables.js';

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

/** The study's wall-time budget (at most 2 hours with nothing else running). */
export const STUDY_BUDGET_SECONDS = 2 * 3600;

/** What every target reads: the study, and the settings of the ReDiff system being judged. */
interface Judging {
  study: Study;
  /** The ReDiff system (the paper's `rediff`, or a variant) with the refining sampler at k tok/step. */
  R: (k: number) => Setting;
  get: (s: Setting, key?: string) => EstimateJSON;
}

interface Target {
  id: TargetResult['id'];
  target: string;
  needs: (j: Judging) => Setting[];
  judge: (j: Judging) => { met: boolean; detail: string };
}

const baseline = (k: number): Setting => ({ system: 'baseline', sampler: 'llada', tokensPerStep: k });
const base = (k: number): Setting => ({ system: 'base', sampler: 'llada', tokensPerStep: k });
const oracle = (k: number): Setting => ({ system: CEILING, sampler: 'rediff', tokensPerStep: k });
const stage1 = (k: number): Setting => ({ system: 'stage1', sampler: 'rediff', tokensPerStep: k });
const stage2Only = (k: number): Setting => ({ system: 'stage2-only', sampler: 'rediff', tokensPerStep: k });

const KEEP: Target = {
  id: 'keep',
  target:
    'ReDiff (refining sampler) keeps at least 97% of its own 1 tok/step CAPTURE at 4 tok/step and at least 85% at 8',
  needs: ({ R }) => [R(1), R(4), R(8)],
  judge: ({ study, R, get }) => {
    const kept = (k: number): number => get(R(k)).mean / get(R(1)).mean;
    return {
      met: kept(4) >= 0.97 && kept(8) >= 0.85,
      detail:
        `As measured: ${pct(get(R(4)).mean)} at 4 and ${pct(get(R(8)).mean)} at 8 tok/step of ` +
        `${pct(get(R(1)).mean)} at 1: ${(100 * kept(4)).toFixed(1)}% and ${(100 * kept(8)).toFixed(1)}% kept.` +
        pairedText(pairedDifference(study, R(4), R(1), 'capture')),
    };
  },
};

const HEADLINE: Target = {
  id: 'headline',
  target: 'ReDiff at 4 tok/step scores at least the mask-pred baseline and the base at 1 tok/step (LLaDA sampler)',
  needs: ({ R }) => [R(4), baseline(1), base(1)],
  judge: ({ study, R, get }) => ({
    met: get(R(4)).mean >= get(baseline(1)).mean && get(R(4)).mean >= get(base(1)).mean,
    detail:
      `As measured: ReDiff at 4 tok/step ${est(get(R(4)))}; the baseline at 1 ${est(get(baseline(1)))}; ` +
      `the base at 1 ${est(get(base(1)))}.` +
      pairedText(pairedDifference(study, R(4), baseline(1), 'capture')).replace(
        'Paired',
        'Against the baseline, paired',
      ) +
      pairedText(pairedDifference(study, R(4), base(1), 'capture')).replace('Paired', 'Against the base, paired'),
  }),
};

const PARSES: Target = {
  id: 'parses',
  target: "At least 95% of ReDiff's captions parse completely at 1 tok/step and at least 80% at 4",
  needs: ({ R }) => [R(1), R(4)],
  judge: ({ study, R }) => {
    const p1 = summaryOf(study, R(1), 'parses');
    const p4 = summaryOf(study, R(4), 'parses');
    return {
      met: p1 !== undefined && p4 !== undefined && p1.mean >= 0.95 && p4.mean >= 0.8,
      detail:
        `As measured, captions that parse, in %: ${p1 ? est(p1) : 'unknown'} at 1 tok/step, ` +
        `${p4 ? est(p4) : 'unknown'} at 4.`,
    };
  },
};

const NEAR_CEILING: Target = {
  id: 'ceiling',
  target: "ReDiff at 4 tok/step is within 5 points of the oracle's CAPTURE with the same sampler",
  needs: ({ R }) => [R(4), oracle(4)],
  judge: ({ study, R, get }) => {
    const gap = get(oracle(4)).mean - get(R(4)).mean;
    return {
      met: gap <= 0.05,
      detail:
        `As measured: ReDiff ${est(get(R(4)))}, the oracle ${est(get(oracle(4)))}: ${pct(gap)} points below.` +
        pairedText(pairedDifference(study, R(4), oracle(4), 'capture')),
    };
  },
};

const STAGES: Target = {
  id: 'stages',
  target:
    'Stage I + II scores at least Stage I alone and Stage II alone at 1 and at 4 tok/step (refining sampler; Table 4)',
  needs: ({ R }) => [R(1), stage1(1), stage2Only(1), R(4), stage1(4), stage2Only(4)],
  judge: ({ study, R, get }) => {
    const parts: string[] = [];
    let met = true;
    for (const k of [1, 4]) {
      for (const [other, name] of [
        [stage1(k), 'Stage I alone'],
        [stage2Only(k), 'Stage II alone'],
      ] as const) {
        const atLeast = get(R(k)).mean >= get(other).mean;
        met &&= atLeast;
        parts.push(
          `at ${k} tok/step versus ${name} (${pct(get(other).mean)}): ${atLeast ? 'at least' : 'below'}.` +
            pairedText(pairedDifference(study, R(k), other, 'capture')),
        );
      }
    }
    const both = `${est(get(R(1)))} / ${est(get(R(4)))}`;
    return { met, detail: `As measured, Stage I + II at 1 / 4 tok/step: ${both}; ${parts.join(' ')}` };
  },
};

/**
 * The threshold-rediff setting of the study's own threshold (a study may also hold rows of an
 * earlier one); a canonical system's, at the canonical systems' threshold.
 */
function thresholdSetting(j: Judging): Setting {
  const system = j.R(1).system;
  const settings = j.study.info?.settings as { threshold?: number; canonicalThreshold?: number } | undefined;
  const threshold = (CANONICAL_SYSTEMS as readonly string[]).includes(system)
    ? (settings?.canonicalThreshold ?? settings?.threshold)
    : settings?.threshold;
  return {
    system,
    sampler: 'threshold-rediff',
    tokensPerStep: null,
    ...(threshold !== undefined ? { label: `threshold-rediff @${threshold}` } : {}),
  };
}

const THRESHOLD: Target = {
  id: 'threshold',
  target:
    'ReDiff with threshold-rediff decoding writes at least 4 caption tokens per step (the EOS fill ' +
    'not counted), within 1 point of ReDiff at 1 tok/step',
  needs: (j) => [thresholdSetting(j), j.R(1)],
  judge: (j) => {
    const T = thresholdSetting(j);
    const row = settingRow(j.study, T)!;
    const rate = row.captionTokensPerStep;
    const t = j.get(T);
    const r1 = j.get(j.R(1));
    return {
      met: rate !== undefined && rate >= 4 && t.mean >= r1.mean - 0.01,
      detail:
        `As measured (${rowLabel(row)}): ` +
        `${rate === undefined ? 'caption tokens per step not recorded' : `${rate.toFixed(2)} caption tok/step`} ` +
        `(${row.achievedTokensPerStep.toFixed(2)} with the EOS fill), ${est(t)}; ReDiff at 1 tok/step ${est(r1)}.` +
        pairedText(pairedDifference(j.study, T, j.R(1), 'capture')),
    };
  },
};

function timeTarget(study: Study): TargetResult {
  const seconds = study.info?.seconds;
  const target =
    `The whole study runs in at most ${STUDY_BUDGET_SECONDS / 3600} hours on this machine (the base's ` +
    'own training not counted)';
  if (seconds === undefined || !Number.isFinite(seconds) || study.info?.finishedAt === undefined)
    return { id: 'time', target, verdict: 'NOT EVALUATED', detail: 'The study has not finished (no finish time).' };
  return {
    id: 'time',
    target,
    verdict: seconds <= STUDY_BUDGET_SECONDS ? 'MET' : 'MISSED',
    detail:
      `As measured: ${(seconds / 60).toFixed(1)} minutes of work, summed over the study's steps ` +
      '(the time table above).',
  };
}

/**
 * The targets for the ReDiff system `rediff` (refining sampler), on CAPTURE unless named. The
 * paper's ReDiff is also judged on Table 4 and the study on its time; a variant only on its own numbers.
 */
export function evaluateTargets(study: Study, rediff = 'rediff'): TargetResult[] {
  const paper = rediff === 'rediff';
  const j: Judging = {
    study,
    R: (k) => ({ system: rediff, sampler: 'rediff', tokensPerStep: k }),
    get: (s, key = 'capture') => summaryOf(study, s, key)!,
  };
  const targets = paper
    ? [KEEP, HEADLINE, PARSES, NEAR_CEILING, STAGES, THRESHOLD]
    : [KEEP, HEADLINE, PARSES, NEAR_CEILING, THRESHOLD];
  const out = targets.map((t): TargetResult => {
    const gap = lacking(study, t.needs(j));
    if (gap !== undefined) return { id: t.id, target: t.target, verdict: 'NOT EVALUATED', detail: gap };
    const { met, detail } = t.judge(j);
    return { id: t.id, target: t.target, verdict: met ? 'MET' : 'MISSED', detail };
  });
  return paper ? [...out, timeTarget(study)] : out;
}

export function targetLines(targets: readonly TargetResult[]): string[] {
  return targets.map((t) => `- **(${t.id}) ${t.verdict}** — ${t.target}. ${t.detail}`);
}
