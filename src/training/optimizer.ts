/**
 * AdamW in plain TypeScript loops over Float32Array (a few ms per step at these sizes),
 * with global-norm gradient clipping. Weight decay applies to matrices only, not to
 * biases, LayerNorm gains or position tables.
 */
import type { AdamWState } from '../model/io.js';
import type { Params } from '../model/params.js';

export interface AdamWOptions {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Clip the global gradient norm to this value (0 = no clipping). */
  clipNorm: number;
}

export const DEFAULT_ADAMW: AdamWOptions = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, clipNorm: 1 };

export function decays(name: string): boolean {
  return name.endsWith('.w') && !name.includes('.ln');
}

export function newAdamWState(params: Params): AdamWState {
  const m = new Map<string, Float32Array>();
  const v = new Map<string, Float32Array>();
  for (const [k, p] of params) {
    m.set(k, new Float32Array(p.length));
    v.set(k, new Float32Array(p.length));
  }
  return { step: 0, m, v };
}

export function globalNorm(grads: Map<string, Float32Array>): number {
  let s = 0;
  for (const g of grads.values()) for (let i = 0; i < g.length; i++) s += g[i]! * g[i]!;
  return Math.sqrt(s);
}

/** One AdamW update in place; returns the gradient norm before clipping (non-finite: nothing is updated). */
export function adamWStep(
  params: Params,
  grads: Map<string, Float32Array>,
  state: AdamWState,
  lr: number,
  o: AdamWOptions = DEFAULT_ADAMW,
  /** Per-parameter multiplier of `lr` (e.g. a pretrained vision tower fine-tuned at 0.1x). */
  lrScale?: (name: string) => number,
): number {
  const norm = globalNorm(grads);
  if (!Number.isFinite(norm)) return norm;
  const scale = o.clipNorm > 0 && norm > o.clipNorm ? o.clipNorm / norm : 1;
  state.step++;
  const bc1 = 1 - o.beta1 ** state.step;
  const bc2 = 1 - o.beta2 ** state.step;
  for (const [name, p] of params) {
    const g = grads.get(name);
    if (!g) throw new Error(`no gradient for ${name}`);
    const m = state.m.get(name)!;
    const v = state.v.get(name)!;
    const plr = lrScale ? lr * lrScale(name) : lr;
    const stepSize = plr / bc1;
    const decay = decays(name) ? 1 - plr * o.weightDecay : 1;
    for (let i = 0; i < p.length; i++) {
      const gi = g[i]! * scale;
      const mi = (m[i] = o.beta1 * m[i]! + (1 - o.beta1) * gi);
      const vi = (v[i] = o.beta2 * v[i]! + (1 - o.beta2) * gi * gi);
      p[i] = p[i]! * decay - (stepSize * mi) / (Math.sqrt(vi / bc2) + o.eps);
    }
  }
  return norm;
}
