/**
 * Per-token loss weights. The training graph computes sum_i w_i * CE_i, so each objective
 * of the paper is just a weighting of the typed positions, and the batch mean is a 1/B factor.
 */
import type { CorruptedResponse, TokenType } from './corruption.js';

export type Objective = 'mask-prediction' | 'revision';

/**
 * mask-prediction (LLaDA-V): masked positions weigh 1/p, summed and divided by L.
 * revision (Stage I, the paper's Eq. 4): each type (mask, syntax, clean, hallucination) weighs 1/p divided by
 * its own count; an empty type contributes nothing.
 */
export function lossWeights(sample: CorruptedResponse, objective: Objective): Float32Array {
  const n = sample.types.length;
  const w = new Float32Array(n);
  const invP = 1 / sample.p;
  if (objective === 'mask-prediction') {
    const scored = sample.scored ?? n;
    for (let i = 0; i < n; i++) {
      if (sample.types[i] === 'mask') w[i] = invP / scored;
      else if (sample.types[i] === 'hallucination') w[i] = invP / countOf(sample.types, 'hallucination');
    }
    return w;
  }
  const counts = new Map<TokenType, number>();
  for (const t of sample.types) counts.set(t, (counts.get(t) ?? 0) + 1);
  for (let i = 0; i < n; i++) {
    const t = sample.types[i]!;
    if (t !== 'ignore') w[i] = invP / counts.get(t)!;
  }
  return w;
}

function countOf(types: readonly TokenType[], t: TokenType): number {
  return types.reduce((n, x) => n + (x === t ? 1 : 0), 0);
}
