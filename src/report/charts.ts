/**
 * SVG charts made with Vega-Lite, rendered in Node without a browser: quality against tokens
 * per step (the paper's Figure 1c) and a refinement trace grid (its Figure 4).
 */
import * as vega from 'vega';
import { type TopLevelSpec, compile } from 'vega-lite';
import type { TraceCell } from './examples.js';
import { type Study, SYSTEMS, samplerName, systemName } from './study.js';
import type { Metric } from './tables.js';

export interface QualityPoint {
  series: string;
  system: string;
  sampler: string;
  tokensPerStep: number;
  /** Percent. */
  mean: number;
  lo: number;
  hi: number;
}

/** Name of a chart line: system and sampler. */
export function seriesName(system: string, sampler: string, label?: string): string {
  return `${systemName(system, label)}, ${samplerName(sampler)}`;
}

/** One point per system, sampler and tokens per step with a finite mean, in report order. */
export function qualityPoints(study: Study, metric: Metric): QualityPoint[] {
  const order = (id: string) => {
    const i = SYSTEMS.findIndex((s) => s.id === id);
    return i < 0 ? SYSTEMS.length : i;
  };
  const ids = [...study.systems.keys()].sort((a, b) => order(a) - order(b) || a.localeCompare(b));
  const points: QualityPoint[] = [];
  for (const id of ids) {
    const res = study.systems.get(id)!;
    const rows = [...res.rows].sort((a, b) => a.sampler.localeCompare(b.sampler) || (a.tokensPerStep ?? 0) - (b.tokensPerStep ?? 0));
    for (const row of rows) {
      const e = row.summary[metric];
      if (typeof row.tokensPerStep !== 'number' || !Number.isFinite(row.tokensPerStep) || e === undefined || !Number.isFinite(e.mean)) continue;
      points.push({ series: seriesName(id, row.sampler, res.label), system: id, sampler: samplerName(row.sampler), tokensPerStep: row.tokensPerStep, mean: 100 * e.mean, lo: 100 * e.lo, hi: 100 * e.hi });
    }
  }
  return points;
}

/** Lines of metric (%) against tokens per step, one per system and sampler, with 95% error bars. */
export function qualitySpec(points: readonly QualityPoint[], metricTitle: string): TopLevelSpec {
  const series = [...new Set(points.map((p) => p.series))];
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: `${metricTitle} against tokens per step (95% intervals)`, anchor: 'start' },
    width: 460,
    height: 300,
    background: 'white',
    data: { values: points as unknown as Record<string, unknown>[] },
    encoding: {
      x: { field: 'tokensPerStep', type: 'ordinal', title: 'tokens per step', axis: { labelAngle: 0 } },
      xOffset: { field: 'series', type: 'nominal', sort: series, scale: { paddingInner: 0.1 } },
      color: { field: 'series', type: 'nominal', sort: series, title: 'system, sampler', scale: { scheme: 'tableau20' }, legend: { labelLimit: 0 } },
    },
    layer: [
      {
        mark: { type: 'line', point: true },
        encoding: {
          y: { field: 'mean', type: 'quantitative', title: `${metricTitle} (%)`, scale: { zero: false } },
          strokeDash: { field: 'sampler', type: 'nominal', title: 'sampler' },
        },
      },
      { mark: { type: 'rule' }, encoding: { y: { field: 'lo', type: 'quantitative' }, y2: { field: 'hi' } } },
    ],
  } as TopLevelSpec;
}

export const TRACE_COLORS: Record<string, string> = { masked: '#eeeeee', kept: '#c6dbef', committed: '#31a354', refined: '#e6550d' };

/** The trace as a grid: a row per step, a column per response position, coloured by what happened. */
export function traceSpec(cells: readonly TraceCell[], title: string): TopLevelSpec {
  const states = Object.keys(TRACE_COLORS);
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, anchor: 'start' },
    width: { step: 40 },
    height: { step: 14 },
    background: 'white',
    data: { values: cells.map((c) => ({ ...c, label: c.state === 'refined' ? `${c.from}→${c.token}` : c.token })) },
    encoding: {
      x: { field: 'pos', type: 'ordinal', title: 'response position', axis: { orient: 'top', labelAngle: 0 } },
      y: { field: 'step', type: 'ordinal', title: 'step' },
    },
    layer: [
      {
        mark: { type: 'rect', stroke: 'white', strokeWidth: 0.5 },
        encoding: { color: { field: 'state', type: 'nominal', title: 'token', scale: { domain: states, range: states.map((s) => TRACE_COLORS[s]!) } } },
      },
      { mark: { type: 'text', fontSize: 7, limit: 39 }, encoding: { text: { field: 'label', type: 'nominal' } } },
    ],
  } as TopLevelSpec;
}

/** Compiles a Vega-Lite spec and renders it to an SVG string (no browser, no canvas). */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
