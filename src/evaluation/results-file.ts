/**
 * A system's results file in a study (OUT/results/<system>.json, written by `rediff reproduce`):
 * one row per evaluated setting, as JSON. src/report/study.ts reads these files back.
 */

export interface EstimateJSON {
  mean: number;
  lo: number;
  hi: number;
  n: number;
}

export interface EvalRowJSON {
  sampler: string;
  tokensPerStep: number | null;
  achievedTokensPerStep: number;
  /** Caption tokens (before the first EOS) per step; absent in studies before it was measured. */
  captionTokensPerStep?: number;
  meanSteps: number;
  seconds: number;
  summary: Partial<Record<string, EstimateJSON>>;
  /** The setting label, when the row keeps it (else "<sampler> <k> tok/step" is assumed). */
  label?: string;
  setting?: { label?: string };
}

export interface SystemResults {
  system: string;
  label?: string;
  checkpoint?: string;
  rows: EvalRowJSON[];
}

/** Label of the setting a row was evaluated with (how its .jsonl records are tagged). */
export function rowLabel(row: EvalRowJSON): string {
  return row.label ?? row.setting?.label ?? `${row.sampler} ${row.tokensPerStep} tok/step`;
}
