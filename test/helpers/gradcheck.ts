import { Graph, type Value } from '../../src/graph/graph.js';
import { gradients } from '../../src/graph/autodiff.js';
import { serializeGraph } from '../../src/graph/onnx.js';
import { CompiledGraph, type HostTensor } from '../../src/graph/runtime.js';
import { Rng } from '../../src/util/rng.js';

export interface GradCheckResult {
  maxRelError: number;
  checked: number;
}

/**
 * Compares autodiff gradients with central finite differences in float64.
 * `build` declares inputs on a float64 graph and returns a scalar loss; every input with
 * requiresGrad is checked. Small inputs are checked element by element, large ones along
 * random directions.
 */
export async function gradCheck(
  build: (g: Graph) => Value,
  feeds: Record<string, HostTensor>,
  opts: { eps?: number; directions?: number; seed?: number } = {},
): Promise<GradCheckResult> {
  const eps = opts.eps ?? 1e-6;
  const g = new Graph('float64');
  const loss = build(g);
  const params = g.inputs.filter((v) => v.requiresGrad);
  const grads = gradients(loss, params);
  g.output(loss, 'loss');
  grads.forEach((gv, i) => g.output(gv, `grad_${params[i]!.name}`));
  const compiled = await CompiledGraph.create(serializeGraph(g), { threads: 1 });
  const base = await compiled.run(feeds);
  const lossAt = async (name: string, delta: Float64Array): Promise<number> => {
    const t = feeds[name]!;
    const orig = t.data as Float64Array;
    const shifted = new Float64Array(orig.length);
    for (let i = 0; i < orig.length; i++) shifted[i] = orig[i]! + delta[i]!;
    const out = await compiled.run({ ...feeds, [name]: { ...t, data: shifted } }, ['loss']);
    return (out.loss!.data as Float64Array)[0]!;
  };
  const rng = new Rng(opts.seed ?? 7);
  let maxRel = 0;
  let checked = 0;
  for (const p of params) {
    const analytic = base[`grad_${p.name}`]!.data as Float64Array;
    const n = analytic.length;
    const dirs: Float64Array[] = [];
    if (n <= 24) {
      for (let i = 0; i < n; i++) {
        const d = new Float64Array(n);
        d[i] = 1;
        dirs.push(d);
      }
    } else {
      for (let k = 0; k < (opts.directions ?? 6); k++) dirs.push(Float64Array.from({ length: n }, () => rng.normal()));
    }
    for (const d of dirs) {
      const plus = await lossAt(
        p.name,
        d.map((x) => x * eps),
      );
      const minus = await lossAt(
        p.name,
        d.map((x) => -x * eps),
      );
      const numeric = (plus - minus) / (2 * eps);
      let exact = 0;
      for (let i = 0; i < n; i++) exact += analytic[i]! * d[i]!;
      // Central differences of a loss near 1 carry ~1e-16 / eps of roundoff: a gradient that is
      // exactly zero (e.g. a bias the image normalisation centres away) reads as ~1e-11, so
      // relative errors are taken against at least 1e-4.
      const rel = Math.abs(numeric - exact) / Math.max(1e-4, Math.abs(numeric) + Math.abs(exact));
      maxRel = Math.max(maxRel, rel);
      checked++;
    }
  }
  await compiled.release();
  return { maxRelError: maxRel, checked };
}

export function randF64(rng: Rng, shape: number[], scale = 1): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return { dtype: 'float64', shape, data: Float64Array.from({ length: n }, () => rng.normal() * scale) };
}
