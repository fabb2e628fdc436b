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
    const rows = [...res.rows].sort(
      (a, b) => a.sampler.localeCompare(b.sampler) || (a.tokensPerStep ?? 0) - (b.tokensPerStep ?? 0),
    );
    for (const row of rows) {
      const e = row.summary[metric];
      if (
        typeof row.tokensPerStep !== 'number' ||
        !Number.isFinite(row.tokensPerStep) ||
        e === undefined ||
        !Number.isFinite(e.mean)
      )
        continue;
      points.push({
        series: seriesName(id, row.sampler, res.label),
        system: id,
        sampler: samplerName(row.sampler),
        tokensPerStep: row.tokensPerStep,
        mean: 100 * e.mean,
        lo: 100 * e.lo,
        hi: 100 * e.hi,
      });
    }
  }
  return points;
}

/**
 * Lines of metric (%) against tokens per step (log2 axis), one per system and sampler, with 95%
 * error bars. Each series is shifted slightly along x so that the bars do not hide each other.
 */
export function qualitySpec(points: readonly QualityPoint[], metricTitle: string): TopLevelSpec {
  const series = [...new Set(points.map((p) => p.series))];
  const speeds = [...new Set(points.map((p) => p.tokensPerStep))].sort((a, b) => a - b);
  const spread = Math.min(0.5, 0.04 * series.length);
  const shift = (s: string) => (series.length < 2 ? 0 : (series.indexOf(s) / (series.length - 1) - 0.5) * spread);
  const values = points.map((p) => ({ ...p, x: p.tokensPerStep * 2 ** shift(p.series) }));
  const lo = Math.min(...speeds) * 2 ** (-spread / 2 - 0.25);
  const hi = Math.max(...speeds) * 2 ** (spread / 2 + 0.25);
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: `${metricTitle} against tokens per step (95% intervals)`, anchor: 'start' },
    width: 460,
    height: 300,
    background: 'white',
    data: { values },
    encoding: {
      x: {
        field: 'x',
        type: 'quantitative',
        title: 'tokens per step',
        scale: { type: 'log', base: 2, domain: [lo, hi], nice: false },
        axis: { values: speeds, format: 'd', grid: false },
      },
      color: {
        field: 'series',
        type: 'nominal',
        sort: series,
        title: 'system, sampler',
        scale: { scheme: 'tableau20' },
        legend: { labelLimit: 0 },
      },
    },
    layer: [
      {
        mark: { type: 'line', point: true },
        encoding: {
          y: { field: 'mean', type: 'quantitative', title: `${metricTitle} (%)`, scale: { zero: false } },
          strokeDash: {
            field: 'sampler',
            type: 'nominal',
            title: 'sampler',
            legend: {
              symbolType: 'stroke',
              symbolStrokeWidth: 2,
              symbolSize: 300,
              encode: { symbols: { update: { stroke: { value: '#444' } } } },
            },
          },
          detail: { field: 'series', type: 'nominal' },
        },
      },
      { mark: { type: 'rule' }, encoding: { y: { field: 'lo', type: 'quantitative' }, y2: { field: 'hi' } } },
    ],
  } as TopLevelSpec;
}

export const TRACE_COLORS: Record<string, string> = {
  masked: '#eeeeee',
  kept: '#c6dbef',
  committed: '#31a354',
  refined: '#e6550d',
};

/** The trace as a grid: a row per step, a column per response position, coloured by what happened. */
export function traceSpec(cells: readonly TraceCell[], title: string): TopLevelSpec {
  const states = Object.keys(TRACE_COLORS);
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, anchor: 'start' },
    width: { step: 40 },
    height: { step: 22 },
    background: 'white',
    data: {
      values: cells.map((c) => ({ ...c, label: c.state === 'refined' ? `${c.from} →\n${c.token}` : c.token })),
    },
    encoding: {
      x: { field: 'pos', type: 'ordinal', title: 'response position', axis: { orient: 'top', labelAngle: 0 } },
      y: { field: 'step', type: 'ordinal', title: 'step' },
    },
    layer: [
      {
        mark: { type: 'rect', stroke: 'white', strokeWidth: 0.5 },
        encoding: {
          color: {
            field: 'state',
            type: 'nominal',
            title: 'token',
            scale: { domain: states, range: states.map((s) => TRACE_COLORS[s]!) },
          },
        },
      },
      {
        transform: [{ filter: "datum.state !== 'refined'" }],
        mark: { type: 'text', fontSize: 8, limit: 39 },
        encoding: {
          text: { field: 'label', type: 'nominal' },
          color: { condition: { test: "datum.state === 'committed'", value: 'white' }, value: 'black' },
        },
      },
      {
        transform: [{ filter: "datum.state === 'refined'" }],
        mark: { type: 'text', fontSize: 8, limit: 39, lineBreak: '\n', lineHeight: 9, dy: -4, color: 'white' },
        encoding: { text: { field: 'label', type: 'nominal' } },
      },
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
