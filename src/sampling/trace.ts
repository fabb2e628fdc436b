/**
 * Renders a sampling trace as one line per step: the response after that step, with newly
 * committed tokens and refined (rewritten) tokens marked — in colour on a terminal, with
 * plain markers otherwise: +word+ committed, ~word~ refined, _ still masked.
 */
import { EOS_ID, MASK_ID } from '../tokenizer/tokenizer.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import type { StepTrace } from './sampler.js';

const GREEN = '\x1b[32m';
const YELLOW = '\x1b[33;1m';
const DIM = '\x1b[2m';
const RESET = '\x1b[0m';

export interface TraceFrame {
  step: number;
  tokens: number[];
  committed: Set<number>;
  refined: Set<number>;
}

/** Replays a trace from an all-mask start into one frame per step. */
export function traceFrames(trace: readonly StepTrace[], length: number): TraceFrame[] {
  const x = new Array<number>(length).fill(MASK_ID);
  let eosAt = -1;
  return trace.map((t) => {
    for (const c of t.committed) {
      x[c.pos] = c.token;
      if (c.token === EOS_ID && (eosAt < 0 || c.pos < eosAt)) eosAt = c.pos;
    }
    for (const r of t.refined) x[r.pos] = r.to;
    // As in the sampler: positions after the first EOS committed from a mask are finished.
    if (eosAt >= 0) for (let i = eosAt + 1; i < length; i++) x[i] = EOS_ID;
    return {
      step: t.step,
      tokens: [...x],
      committed: new Set(t.committed.map((c) => c.pos)),
      refined: new Set(t.refined.map((r) => r.pos)),
    };
  });
}

export function renderFrame(f: TraceFrame, tokenizer: Tokenizer, color: boolean): string {
  const words: string[] = [];
  for (let i = 0; i < f.tokens.length; i++) {
    const id = f.tokens[i]!;
    if (id === EOS_ID && !f.committed.has(i) && !f.refined.has(i)) break;
    const w = id === MASK_ID ? '_' : id === EOS_ID ? '<eos>' : tokenizer.pieces([id])[0]!;
    if (f.refined.has(i)) words.push(color ? `${YELLOW}${w}${RESET}` : `~${w}~`);
    else if (f.committed.has(i)) words.push(color ? `${GREEN}${w}${RESET}` : `+${w}+`);
    else words.push(color && id === MASK_ID ? `${DIM}${w}${RESET}` : w);
    if (id === EOS_ID) break;
  }
  return `step ${String(f.step + 1).padStart(3)}: ${words.join(' ')}`;
}

export function renderTrace(
  trace: readonly StepTrace[],
  length: number,
  tokenizer: Tokenizer,
  color: boolean,
): string[] {
  return traceFrames(trace, length).map((f) => renderFrame(f, tokenizer, color));
}
