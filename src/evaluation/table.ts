/** Plain-text and Markdown tables of evaluation rows, each cell a mean with its 95% interval. */
import type { SummaryMetric } from '../benchmark/metrics.js';
import type { EvalRow } from './evaluate.js';

export const TABLE_COLUMNS: { metric: SummaryMetric; title: string; percent: boolean }[] = [
  { metric: 'capture', title: 'CAPTURE', percent: true },
  { metric: 'factuality', title: 'factuality', percent: true },
  { metric: 'objectFactuality', title: 'object claims', percent: true },
  { metric: 'coverage', title: 'described', percent: true },
  { metric: 'parses', title: 'parses', percent: true },
  { metric: 'repeatRate', title: 'repeats', percent: true },
  { metric: 'tokens', title: 'length', percent: false },
];

export function formatEstimate(mean: number, lo: number, hi: number, percent: boolean): string {
  const k = percent ? 100 : 1;
  return `${(mean * k).toFixed(1)} ±${(((hi - lo) / 2) * k).toFixed(1)}`;
}

export function evalTable(rows: readonly EvalRow[]): string[][] {
  // Requested: the setting's schedule (none for threshold samplers). Achieved: L / mean steps
  // taken, higher when decoding stops early at EOS; caption: the same without the EOS fill.
  const header = [
    'setting',
    'requested tok/step',
    'achieved tok/step',
    'caption tok/step',
    ...TABLE_COLUMNS.map((c) => c.title),
    's',
  ];
  const body = rows.map((r) => [
    r.setting.label,
    r.setting.tokensPerStep === null ? '-' : String(r.setting.tokensPerStep),
    r.achievedTokensPerStep.toFixed(2),
    r.captionTokensPerStep.toFixed(2),
    ...TABLE_COLUMNS.map((c) => {
      const e = r.summary[c.metric];
      return formatEstimate(e.mean, e.lo, e.hi, c.percent);
    }),
    r.seconds.toFixed(1),
  ]);
  return [header, ...body];
}

export function renderPlain(table: readonly string[][]): string {
  const widths = table[0]!.map((_, j) => Math.max(...table.map((row) => row[j]!.length)));
  return table
    .map((row) => row.map((cell, j) => (j === 0 ? cell.padEnd(widths[j]!) : cell.padStart(widths[j]!))).join('  '))
    .join('\n');
}

export function renderMarkdown(table: readonly string[][]): string {
  const [header, ...body] = table;
  const line = (cells: readonly string[]): string => `| ${cells.join(' | ')} |`;
  return [line(header!), line(header!.map((_, j) => (j === 0 ? '---' : '---:'))), ...body.map(line)].join('\n');
}
