/**
 * Reverse-mode autodiff at graph-construction time: replays the tape backwards, emitting
 * each op's vector-Jacobian product into the same graph, and sums gradients that reach a
 * value along several paths.
 */
import type { Value } from './graph.js';
import { add, zeros } from './ops.js';

/** Emits d(loss)/d(x) for each x in `wrt`; loss must be a scalar. Unreached params get zeros. */
export function gradients(loss: Value, wrt: readonly Value[]): Value[] {
  const gr = loss.graph;
  if (loss.size !== 1) throw new Error(`gradients: loss must be a scalar, got shape [${loss.shape}]`);
  // Nothing to differentiate (a loss-only graph): no seed, which would be an unused initializer.
  if (wrt.length === 0 || !loss.requiresGrad) return gr.untaped(() => wrt.map((p) => zeros(gr, p.shape, p.dtype)));
  return gr.untaped(() => {
    const grads = new Map<string, Value>();
    grads.set(loss.name, gr.constant([1], loss.shape, loss.dtype));
    for (let i = gr.tape.length - 1; i >= 0; i--) {
      const entry = gr.tape[i]!;
      const gOut = entry.outputs.map((o) => grads.get(o.name) ?? null);
      if (gOut.every((g) => g === null)) continue;
      const gIn = entry.vjp(gOut);
      entry.inputs.forEach((input, k) => {
        const g = gIn[k];
        if (!input || !g || !input.requiresGrad) return;
        const prev = grads.get(input.name);
        grads.set(input.name, prev ? add(prev, g) : g);
      });
    }
    return wrt.map((p) => grads.get(p.name) ?? zeros(gr, p.shape, p.dtype));
  });
}
