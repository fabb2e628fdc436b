/**
 * The qualitative section: baseline against ReDiff captions with their scores, and a
 * refinement trace (the paper's Figure 4) as a per-step Markdown listing and as grid cells for
 * the trace chart.
 */
import type { StepTrace } from '../sampling/sampler.js';
import { traceFrames } from '../sampling/trace.js';
import { EOS_ID, MASK_ID } from '../tokenizer/tokenizer.js';
import type { ExampleJSON, RecordScoreJSON } from './study.js';

/** Response length of the study's model (the trace replays on this many positions at least). */
export const RESPONSE_LENGTH = 96;

const MASK = '·';
const EOS = '⟨eos⟩';

/** Escapes Markdown inline syntax (and table pipes) in a piece of caption text. */
export function escapeMarkdown(s: string): string {
  return s.replace(/[\\`*_~[\]|<>#]/g, (c) => `\\${c}`);
}

function piece(pieces: readonly string[], id: number): string {
  if (id === MASK_ID) return MASK;
  if (id === EOS_ID) return EOS;
  return pieces[id] ?? `#${id}`;
}

function scoreText(s: RecordScoreJSON | undefined): string {
  if (s === undefined) return 'no score';
  const p = (x: number) => (typeof x === 'number' ? `${(100 * x).toFixed(1)}%` : '?');
  return `CAPTURE ${p(s.capture)}, factuality ${p(s.factuality)}, coverage ${p(s.coverage)}`;
}

function errorLines(s: RecordScoreJSON | undefined): string[] {
  const errs = s?.errors ?? [];
  if (errs.length === 0) return [];
  const shown = errs
    .slice(0, 5)
    .map((e) => `"${escapeMarkdown(e.text ?? '?')}"${e.message ? ` (${escapeMarkdown(e.message)})` : ''}`);
  return [`  - false claims: ${shown.join('; ')}${errs.length > 5 ? `; and ${errs.length - 5} more` : ''}`];
}

function sceneText(ex: ExampleJSON): string | undefined {
  const objs = ex.scene?.objects;
  if (!Array.isArray(objs) || objs.length === 0) return undefined;
  return objs.map((o) => `${o.size} ${o.color} ${o.shape} (${o.place})`).join('; ');
}

/** Markdown for the examples: reference, scene, both captions with scores and false claims. */
export function examplesMarkdown(examples: readonly ExampleJSON[]): string {
  const out: string[] = [];
  examples.forEach((ex, i) => {
    out.push(`### Example ${i + 1}: scene ${escapeMarkdown(ex.sceneId)}`, '');
    const scene = sceneText(ex);
    if (scene) out.push(`- scene: ${escapeMarkdown(scene)}`);
    if (ex.reference) out.push(`- reference: ${escapeMarkdown(ex.reference)}`);
    for (const [name, c] of [
      ['Mask-pred baseline, LLaDA sampler', ex.baseline],
      ['ReDiff, refining sampler', ex.rediff],
    ] as const) {
      if (c === undefined) {
        out.push(`- **${name}**: not run`);
        continue;
      }
      out.push(`- **${name}** (${scoreText(c.score)}): ${escapeMarkdown(c.caption)}`, ...errorLines(c.score));
    }
    out.push('');
  });
  return out.join('\n');
}

function refinedCount(ex: ExampleJSON): number {
  return (ex.rediff?.trace ?? []).reduce((s, t) => s + t.refined.length, 0);
}

/** The example whose trace shows the most refinement (the first with a trace on ties), or -1. */
export function pickTraceExample(examples: readonly ExampleJSON[]): number {
  let best = -1;
  examples.forEach((ex, i) => {
    if ((ex.rediff?.trace?.length ?? 0) === 0) return;
    if (best < 0 || refinedCount(ex) > refinedCount(examples[best]!)) best = i;
  });
  return best;
}

function traceLength(trace: readonly StepTrace[]): number {
  let max = 0;
  for (const t of trace) {
    for (const c of t.committed) max = Math.max(max, c.pos + 1);
    for (const r of t.refined) max = Math.max(max, r.pos + 1);
  }
  return Math.max(RESPONSE_LENGTH, max);
}

/** First EOS of a frame, or the length. */
function eosAt(tokens: readonly number[]): number {
  const i = tokens.indexOf(EOS_ID);
  return i < 0 ? tokens.length : i;
}

/**
 * One Markdown list item per step: the response after the step, newly committed tokens in
 * **bold**, refined tokens as ~~old~~ → *new*, masks as "·" (runs of 3 or more as "·×n").
 */
export function traceMarkdown(trace: readonly StepTrace[], pieces: readonly string[]): string[] {
  const frames = traceFrames(trace, traceLength(trace));
  return frames.map((f, k) => {
    const from = new Map(trace[k]!.refined.map((r) => [r.pos, r.from]));
    const end = eosAt(f.tokens);
    const words: string[] = [];
    let masks = 0;
    const flush = () => {
      if (masks >= 3) words.push(`${MASK}×${masks}`);
      else for (let j = 0; j < masks; j++) words.push(MASK);
      masks = 0;
    };
    for (let i = 0; i <= Math.min(end, f.tokens.length - 1); i++) {
      const id = f.tokens[i]!;
      if (id === MASK_ID) {
        masks++;
        continue;
      }
      flush();
      if (id === EOS_ID && !f.committed.has(i) && !f.refined.has(i)) break;
      const w = escapeMarkdown(piece(pieces, id));
      if (f.refined.has(i)) words.push(`~~${escapeMarkdown(piece(pieces, from.get(i)!))}~~ → *${w}*`);
      else if (f.committed.has(i)) words.push(`**${w}**`);
      else words.push(w);
    }
    flush();
    return `- \`step ${String(f.step + 1).padStart(2)}\` ${words.join(' ')}`;
  });
}

export type CellState = 'masked' | 'kept' | 'committed' | 'refined';

export interface TraceCell {
  step: number;
  pos: number;
  token: string;
  state: CellState;
  /** For refined cells, the token it replaced. */
  from?: string;
}

/**
 * Grid cells (steps × positions) for the trace chart: each frame's token at each position up
 * to the last position that ever held a word (the final EOS included), with its state at that
 * step. Positions after a frame's first EOS are left out.
 */
export function traceCells(trace: readonly StepTrace[], pieces: readonly string[]): TraceCell[] {
  const frames = traceFrames(trace, traceLength(trace));
  let last = 0;
  for (const f of frames) {
    const end = eosAt(f.tokens);
    for (let i = 0; i < Math.min(end + 1, f.tokens.length); i++) if (f.tokens[i] !== MASK_ID) last = Math.max(last, i);
  }
  const cells: TraceCell[] = [];
  frames.forEach((f, k) => {
    const from = new Map(trace[k]!.refined.map((r) => [r.pos, r.from]));
    const end = eosAt(f.tokens);
    for (let pos = 0; pos <= Math.min(last, end); pos++) {
      const id = f.tokens[pos]!;
      const state: CellState = f.refined.has(pos)
        ? 'refined'
        : f.committed.has(pos)
          ? 'committed'
          : id === MASK_ID
            ? 'masked'
            : 'kept';
      const cell: TraceCell = { step: f.step + 1, pos, token: id === MASK_ID ? '' : piece(pieces, id), state };
      if (state === 'refined') cell.from = piece(pieces, from.get(pos)!);
      cells.push(cell);
    }
  });
  return cells;
}
