/**
 * Differentiable ops over the graph IR. Each op computes its static output shape, emits
 * plain ONNX (opset 17) nodes, and tapes a vector-Jacobian product that emits the backward
 * nodes. Composite ops (layerNorm, gelu, softmax, weightedCrossEntropy) have hand-written
 * backward passes with few nodes, because the backward of many small elementwise nodes is
 * where time goes beyond the matmuls.
 */
import { type AttrValue, type DType, Graph, Value, needsGrad } from './graph.js';

type Operand = Value | number;

/** onnxruntime's contrib operators (CPU and WebAssembly kernels). */
const MS_DOMAIN = 'com.microsoft';

function lift(x: Operand, like: Value): Value {
  return typeof x === 'number' ? like.graph.scalar(x, like.dtype) : x;
}

function graphOf(...xs: Operand[]): Graph {
  for (const x of xs) if (x instanceof Value) return x.graph;
  throw new Error('op needs at least one graph value');
}

export function broadcastShapes(a: readonly number[], b: readonly number[]): number[] {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) throw new Error(`cannot broadcast [${a}] with [${b}]`);
    out.push(Math.max(da, db));
  }
  return out;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Sums a broadcast gradient back down to the shape of the operand it flows to. */
export function reduceToShape(g: Value, shape: readonly number[]): Value {
  if (sameShape(g.shape, shape)) return g;
  const lead = g.rank - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < g.rank; i++) {
    if (i < lead || (shape[i - lead] === 1 && g.shape[i] !== 1)) axes.push(i);
  }
  const summed = axes.length > 0 ? reduceSum(g, axes, true) : g;
  return reshape(summed, shape);
}

function accumulateGradFns(out: Value, inputs: Value[], fn: (g: Value) => (Value | null)[]): void {
  out.graph.record({ inputs, outputs: [out], vjp: ([g]) => (g ? fn(g) : inputs.map(() => null)) });
}

// ---------- elementwise binary ----------

function binary(op: 'Add' | 'Sub' | 'Mul' | 'Div', x: Operand, y: Operand): Value {
  const g0 = graphOf(x, y);
  const like = x instanceof Value ? x : (y as Value);
  const a = lift(x, like);
  const b = lift(y, like);
  if (a.dtype !== b.dtype) throw new Error(`${op}: dtype mismatch ${a.dtype} vs ${b.dtype}`);
  const shape = broadcastShapes(a.shape, b.shape);
  const out = g0.emitRaw(op, [a, b], null, a.dtype, shape, {}, needsGrad(a, b));
  accumulateGradFns(out, [a, b], (g) => {
    const ga = a.requiresGrad ? binaryGradA(op, g, a, b, out) : null;
    const gb = b.requiresGrad ? binaryGradB(op, g, a, b, out) : null;
    return [ga && reduceToShape(ga, a.shape), gb && reduceToShape(gb, b.shape)];
  });
  return out;
}

function binaryGradA(op: string, g: Value, _a: Value, b: Value, _out: Value): Value {
  if (op === 'Add' || op === 'Sub') return g;
  if (op === 'Mul') return mul(g, b);
  return div(g, b);
}

function binaryGradB(op: string, g: Value, a: Value, b: Value, out: Value): Value {
  if (op === 'Add') return g;
  if (op === 'Sub') return neg(g);
  if (op === 'Mul') return mul(g, a);
  return neg(div(mul(g, out), b));
}

export const add = (a: Operand, b: Operand): Value => binary('Add', a, b);
export const sub = (a: Operand, b: Operand): Value => binary('Sub', a, b);
export const mul = (a: Operand, b: Operand): Value => binary('Mul', a, b);
export const div = (a: Operand, b: Operand): Value => binary('Div', a, b);

// ---------- elementwise unary ----------

function unary(op: string, x: Value, grad: (g: Value, x: Value, out: Value) => Value): Value {
  const out = x.graph.emitRaw(op, [x], null, x.dtype, x.shape, {}, x.requiresGrad);
  accumulateGradFns(out, [x], (g) => [grad(g, x, out)]);
  return out;
}

export const neg = (x: Value): Value => unary('Neg', x, (g) => neg(g));
export const exp = (x: Value): Value => unary('Exp', x, (g, _x, out) => mul(g, out));
export const log = (x: Value): Value => unary('Log', x, (g, xx) => div(g, xx));
export const sqrt = (x: Value): Value => unary('Sqrt', x, (g, _x, out) => div(mul(g, 0.5), out));
export const tanh = (x: Value): Value => unary('Tanh', x, (g, _x, out) => mul(g, sub(1, mul(out, out))));

/** Square, by multiplication (cheaper and exact compared with Pow). */
export const square = (x: Value): Value => mul(x, x);

// ---------- shape ops ----------

export function reshape(x: Value, shape: readonly number[]): Value {
  const known = shape.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
  const resolved = shape.map((d) => (d === -1 ? x.size / known : d));
  if (resolved.reduce((a, b) => a * b, 1) !== x.size || shape.filter((d) => d === -1).length > 1) {
    throw new Error(`reshape: cannot view [${x.shape}] as [${shape}]`);
  }
  if (sameShape(resolved, x.shape)) return x;
  const out = x.graph.emitRaw('Reshape', [x, x.graph.ints(resolved)], null, x.dtype, resolved, {}, x.requiresGrad);
  accumulateGradFns(out, [x], (g) => [reshape(g, x.shape)]);
  return out;
}

export function transpose(x: Value, perm: readonly number[]): Value {
  if (perm.length !== x.rank) throw new Error(`transpose: perm [${perm}] for rank ${x.rank}`);
  const shape = perm.map((p) => x.shape[p]!);
  const out = x.graph.emitRaw('Transpose', [x], null, x.dtype, shape, { perm: [...perm] }, x.requiresGrad);
  const inverse = perm.map((_, i) => perm.indexOf(i));
  accumulateGradFns(out, [x], (g) => [transpose(g, inverse)]);
  return out;
}

/** Swaps the last two axes. */
export function transposeLast2(x: Value): Value {
  const perm = x.shape.map((_, i) => i);
  perm[x.rank - 1] = x.rank - 2;
  perm[x.rank - 2] = x.rank - 1;
  return transpose(x, perm);
}

function normAxis(axis: number, rank: number): number {
  return axis < 0 ? axis + rank : axis;
}

export function concat(xs: Value[], axis: number): Value {
  const first = xs[0]!;
  const ax = normAxis(axis, first.rank);
  const shape = [...first.shape];
  shape[ax] = xs.reduce((s, x) => s + x.shape[ax]!, 0);
  const out = first.graph.emitRaw('Concat', xs, null, first.dtype, shape, { axis: ax }, needsGrad(...xs));
  first.graph.record({
    inputs: xs,
    outputs: [out],
    vjp: ([g]) => {
      if (!g) return xs.map(() => null);
      let offset = 0;
      return xs.map((x) => {
        const start = offset;
        offset += x.shape[ax]!;
        return x.requiresGrad ? slice(g, ax, start, start + x.shape[ax]!) : null;
      });
    },
  });
  return out;
}

/** x[..., start:end, ...] along one axis. */
export function slice(x: Value, axis: number, start: number, end: number): Value {
  const ax = normAxis(axis, x.rank);
  if (start < 0 || end > x.shape[ax]! || start >= end)
    throw new Error(`slice: [${start}, ${end}) out of axis size ${x.shape[ax]}`);
  if (start === 0 && end === x.shape[ax]) return x;
  const shape = [...x.shape];
  shape[ax] = end - start;
  const gr = x.graph;
  const out = gr.emitRaw(
    'Slice',
    [x, gr.ints([start]), gr.ints([end]), gr.ints([ax])],
    null,
    x.dtype,
    shape,
    {},
    x.requiresGrad,
  );
  accumulateGradFns(out, [x], (g) => {
    const pads = new Array<number>(2 * x.rank).fill(0);
    pads[ax] = start;
    pads[x.rank + ax] = x.shape[ax]! - end;
    return [gr.emitRaw('Pad', [g, gr.ints(pads)], null, g.dtype, x.shape)];
  });
  return out;
}

/** Splits along an axis into pieces of the given sizes (one Split node). */
export function split(x: Value, axis: number, sizes: readonly number[]): Value[] {
  const ax = normAxis(axis, x.rank);
  if (sizes.reduce((a, b) => a + b, 0) !== x.shape[ax])
    throw new Error(`split: sizes [${sizes}] do not add up to ${x.shape[ax]}`);
  const gr = x.graph;
  const outs = gr.emitMulti(
    'Split',
    [x, gr.ints(sizes)],
    sizes.map((s) => {
      const shape = [...x.shape];
      shape[ax] = s;
      return { dtype: x.dtype, shape };
    }),
    { axis: ax },
    x.requiresGrad,
  );
  gr.record({
    inputs: [x],
    outputs: outs,
    vjp: (gs) => [
      concat(
        gs.map((g, i) => g ?? zeros(gr, outs[i]!.shape, x.dtype)),
        ax,
      ),
    ],
  });
  return outs;
}

export function zeros(gr: Graph, shape: readonly number[], dtype: DType = gr.floatType): Value {
  return gr.emitRaw('Expand', [gr.scalar(0, dtype), gr.ints(shape)], null, dtype, shape);
}

export function expand(x: Value, shape: readonly number[]): Value {
  const target = broadcastShapes(x.shape, shape);
  if (sameShape(target, x.shape)) return x;
  const out = x.graph.emitRaw('Expand', [x, x.graph.ints(target)], null, x.dtype, target, {}, x.requiresGrad);
  accumulateGradFns(out, [x], (g) => [reduceToShape(g, x.shape)]);
  return out;
}

// ---------- reductions ----------

function reduce(op: 'ReduceSum' | 'ReduceMean', x: Value, axes: readonly number[], keepdims: boolean): Value {
  const ax = axes.map((a) => normAxis(a, x.rank));
  const keptShape = x.shape.map((d, i) => (ax.includes(i) ? 1 : d));
  const shape = keepdims ? keptShape : x.shape.filter((_, i) => !ax.includes(i));
  const gr = x.graph;
  // Opset 17: ReduceSum takes axes as an input, ReduceMean as an attribute.
  const out =
    op === 'ReduceSum'
      ? gr.emitRaw(op, [x, gr.ints(ax)], null, x.dtype, shape, { keepdims: keepdims ? 1 : 0 }, x.requiresGrad)
      : gr.emitRaw(op, [x], null, x.dtype, shape, { axes: ax, keepdims: keepdims ? 1 : 0 }, x.requiresGrad);
  const count = ax.reduce((n, a) => n * x.shape[a]!, 1);
  accumulateGradFns(out, [x], (g) => {
    const gk = reshape(g, keptShape);
    const scaled = op === 'ReduceMean' ? mul(gk, 1 / count) : gk;
    return [expand(scaled, x.shape)];
  });
  return out;
}

export const reduceSum = (x: Value, axes: readonly number[], keepdims = false): Value =>
  reduce('ReduceSum', x, axes, keepdims);
export const reduceMean = (x: Value, axes: readonly number[], keepdims = false): Value =>
  reduce('ReduceMean', x, axes, keepdims);

/** Sum of every element, as a scalar of shape []. */
export function sumAll(x: Value): Value {
  return reduceSum(
    x,
    x.shape.map((_, i) => i),
    false,
  );
}

// ---------- matmul ----------

export function matmul(a: Value, b: Value): Value {
  if (a.rank < 2 || b.rank < 2) throw new Error('matmul needs rank >= 2 operands');
  const m = a.shape[a.rank - 2]!;
  const k = a.shape[a.rank - 1]!;
  const k2 = b.shape[b.rank - 2]!;
  const n = b.shape[b.rank - 1]!;
  if (k !== k2) throw new Error(`matmul: inner dims ${k} vs ${k2} ([${a.shape}] x [${b.shape}])`);
  const batch = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2));
  const gr = a.graph;
  const out = gr.emitRaw('MatMul', [a, b], null, a.dtype, [...batch, m, n], {}, needsGrad(a, b));
  accumulateGradFns(out, [a, b], (g) => {
    if (b.rank === 2 && a.rank >= 2) {
      // x @ W: flatten the batch so both gradients are single GEMMs (no batched matmul + reduce).
      const rows = a.size / k;
      const g2 = reshape(g, [rows, n]);
      const ga = a.requiresGrad
        ? reshape(gr.emitRaw('Gemm', [g2, b], null, g.dtype, [rows, k], { transB: 1 }), a.shape)
        : null;
      const gb = b.requiresGrad
        ? gr.emitRaw('Gemm', [reshape(a, [rows, k]), g2], null, g.dtype, [k, n], { transA: 1 })
        : null;
      return [ga, gb];
    }
    const ga = a.requiresGrad ? reduceToShape(matmul(g, transposeLast2(b)), a.shape) : null;
    const gb = b.requiresGrad ? reduceToShape(matmul(transposeLast2(a), g), b.shape) : null;
    return [ga, gb];
  });
  return out;
}

/** x @ W + bias, the dense layer. */
export function linear(x: Value, w: Value, bias?: Value): Value {
  const y = matmul(x, w);
  return bias ? add(y, bias) : y;
}

// ---------- indexing ----------

/**
 * Above this many one-hot entries (ids x table rows) the embedding gradient is a serial
 * ScatterElements instead of a one-hot matmul, so that a large vocabulary does not allocate
 * an [ids, V] matrix.
 */
const ONE_HOT_LIMIT = 1 << 24;

/** Embedding lookup: table [V, D], ids int64 [...] -> [..., D]. */
export function gather(table: Value, ids: Value): Value {
  if (ids.dtype !== 'int64') throw new Error('gather: ids must be int64');
  const gr = table.graph;
  const shape = [...ids.shape, ...table.shape.slice(1)];
  const out = gr.emitRaw('Gather', [table, ids], null, table.dtype, shape, { axis: 0 }, table.requiresGrad);
  accumulateGradFns(out, [table, ids], (g) => [embeddingGradient(table, ids, g), null]);
  return out;
}

/**
 * The gradient of a table lookup: each row sums the gradients of the ids that read it. Not
 * ScatterND with reduction=add: on more than one thread ORT loses updates of repeated ids
 * (onnxruntime issue 18048; measured: errors of ~60 on sums of ~1,700 values), and an
 * embedding's ids repeat by design. A one-hot matmul is exact, deterministic and multithreaded;
 * ScatterElements (serial) takes over for very large tables.
 */
function embeddingGradient(table: Value, ids: Value, g: Value): Value {
  const gr = table.graph;
  const n = ids.size;
  const v = table.shape[0]!;
  const d = table.size / v;
  const flatIds = gr.emitRaw('Reshape', [ids, gr.ints([n, 1])], null, 'int64', [n, 1]);
  const flatG = reshape(g, [n, d]);
  if (n * v <= ONE_HOT_LIMIT) {
    return reshape(
      gr.emitRaw('Gemm', [oneHot(flatIds, v, table.dtype), flatG], null, table.dtype, [v, d], { transA: 1 }),
      table.shape,
    );
  }
  const idx = gr.emitRaw('Expand', [flatIds, gr.ints([n, d])], null, 'int64', [n, d]);
  const summed = gr.emitRaw(
    'ScatterElements',
    [zeros(gr, [v, d], table.dtype), idx, flatG],
    null,
    table.dtype,
    [v, d],
    { axis: 0, reduction: 'add' },
  );
  return reshape(summed, table.shape);
}

/** ids int64 [N, 1] -> one-hot rows [N, classes] of dtype `f`. */
function oneHot(ids: Value, classes: number, f: DType): Value {
  const all = ids.graph.constant(
    Array.from({ length: classes }, (_, i) => i),
    [1, classes],
    'int64',
  );
  return cast(equal(ids, all), f);
}

/** where(cond, a, b), cond bool broadcastable. */
export function where(cond: Value, x: Operand, y: Operand): Value {
  const like = x instanceof Value ? x : (y as Value);
  const a = lift(x, like);
  const b = lift(y, like);
  const shape = broadcastShapes(cond.shape, broadcastShapes(a.shape, b.shape));
  const gr = cond.graph;
  const out = gr.emitRaw('Where', [cond, a, b], null, a.dtype, shape, {}, needsGrad(a, b));
  accumulateGradFns(out, [cond, a, b], (g) => {
    const z = gr.scalar(0, g.dtype);
    return [
      null,
      a.requiresGrad ? reduceToShape(where(cond, g, z), a.shape) : null,
      b.requiresGrad ? reduceToShape(where(cond, z, g), b.shape) : null,
    ];
  });
  return out;
}

export function cast(x: Value, dtype: DType): Value {
  const to = { float32: 1, int64: 7, bool: 9, float64: 11 }[dtype];
  return x.graph.emitRaw('Cast', [x], null, dtype, x.shape, { to });
}

export function equal(a: Value, b: Value): Value {
  return a.graph.emitRaw('Equal', [a, b], null, 'bool', broadcastShapes(a.shape, b.shape));
}

// ---------- composites with hand-written backward ----------

export function softmax(x: Value, axis = -1): Value {
  const ax = normAxis(axis, x.rank);
  const out = x.graph.emitRaw('Softmax', [x], null, x.dtype, x.shape, { axis: ax }, x.requiresGrad);
  accumulateGradFns(out, [x], (g) => {
    const dot = reduceSum(mul(g, out), [ax], true);
    return [mul(out, sub(g, dot))];
  });
  return out;
}

/**
 * LayerNorm over the last axis with a closed-form backward. float32 uses the fused ONNX op
 * (which also returns mean and 1/std); ORT has no float64 kernel with float64 statistics, so
 * float64 graphs (used for exact gradient checks) spell the statistics out.
 */
export function layerNorm(x: Value, gamma: Value, beta: Value, eps = 1e-5): Value {
  const gr = x.graph;
  const stat = [...x.shape.slice(0, -1), 1];
  let y: Value;
  let mean: Value;
  let invStd: Value;
  if (x.dtype === 'float32') {
    [y, mean, invStd] = gr.emitMulti(
      'LayerNormalization',
      [x, gamma, beta],
      [
        { dtype: x.dtype, shape: x.shape },
        { dtype: x.dtype, shape: stat },
        { dtype: x.dtype, shape: stat },
      ],
      { axis: -1, epsilon: { float: eps }, stash_type: 1 },
      needsGrad(x, gamma, beta),
    ) as [Value, Value, Value];
  } else {
    [y, mean, invStd] = gr.untaped(() => {
      const m = reduceMean(x, [-1], true);
      const centred = sub(x, m);
      const inv = div(1, sqrt(add(reduceMean(mul(centred, centred), [-1], true), eps)));
      const out = add(mul(mul(centred, inv), gamma), beta);
      return [out, m, inv];
    });
    y = gr.emitRaw('Identity', [y], null, y.dtype, y.shape, {}, needsGrad(x, gamma, beta));
  }
  const last = x.rank - 1;
  gr.record({
    inputs: [x, gamma, beta],
    outputs: [y],
    vjp: ([g]) => {
      if (!g) return [null, null, null];
      const xhat = mul(sub(x, mean), invStd);
      let gx: Value | null = null;
      if (x.requiresGrad) {
        const gxhat = mul(g, gamma);
        const m1 = reduceMean(gxhat, [last], true);
        const m2 = reduceMean(mul(gxhat, xhat), [last], true);
        gx = mul(invStd, sub(sub(gxhat, m1), mul(xhat, m2)));
      }
      return [
        gx,
        gamma.requiresGrad ? reduceToShape(mul(g, xhat), gamma.shape) : null,
        beta.requiresGrad ? reduceToShape(g, beta.shape) : null,
      ];
    },
  });
  return y;
}

const GELU_C = Math.sqrt(2 / Math.PI);
const GELU_A = 0.044715;

/**
 * GELU, tanh approximation, written as x * sigmoid(2u) with u = c(x + a x^3) (the same
 * function: 0.5(1 + tanh u) = sigmoid(2u)), which takes 6 elementwise passes forward and 7
 * backward instead of 9 and 10; on CPU these passes over [B, T, FF] cost more than the
 * layer's matmuls. Exact in float64 too (unlike Erf, which ORT has only for float32). Where no
 * gradient flows (inference), float32 GELU is onnxruntime's FastGelu kernel, the same function in
 * one pass (in onnxruntime-node and -web alike): decoding 7% faster, equal to the last bits (1 of
 * the study's 16,000 test captions changed, a confidence at its threshold).
 */
export function gelu(x: Value): Value {
  const gr = x.graph;
  const f = x.dtype;
  if (!x.requiresGrad && f === 'float32') return gr.emitRaw('FastGelu', [x], null, f, x.shape, {}, false, MS_DOMAIN);
  const em = (op: string, ins: Value[]): Value => gr.emitRaw(op, ins, null, f, x.shape);
  const x2 = em('Mul', [x, x]);
  // 2u = x (2c + 2ac x^2)
  const twoU = em('Mul', [
    x,
    em('Add', [em('Mul', [x2, gr.scalar(2 * GELU_A * GELU_C, f)]), gr.scalar(2 * GELU_C, f)]),
  ]);
  const s = em('Sigmoid', [twoU]);
  const out = gr.emitRaw('Mul', [x, s], null, f, x.shape, {}, x.requiresGrad);
  accumulateGradFns(out, [x], (g) => {
    // d/dx x s(2u) = s + x s (1 - s) 2u'(x) = s + out (1 - s) (2c + 6ac x^2)
    const slope = add(mul(x2, 6 * GELU_A * GELU_C), 2 * GELU_C);
    return [mul(g, add(mul(mul(out, sub(1, s)), slope), s))];
  });
  return out;
}

/**
 * sum_i w_i * CE(logits_i, target_i): logits [N, V], targets int64 [N], weights [N].
 * One per-token weight input expresses every loss of the paper (1/p factors, per-type
 * normalisation, batch mean) without a new graph.
 */
export function weightedCrossEntropy(logits: Value, targets: Value, weights: Value): Value {
  const [n, v] = logits.shape as [number, number];
  const gr = logits.graph;
  const f = logits.dtype;
  const logp = gr.emitRaw('LogSoftmax', [logits], null, f, [n, v], { axis: 1 });
  const tIdx = gr.emitRaw('Unsqueeze', [targets, gr.ints([1])], null, 'int64', [n, 1]);
  const picked = gr.emitRaw('GatherElements', [logp, tIdx], null, f, [n, 1], { axis: 1 });
  const w2 = reshape(weights, [n, 1]);
  const total = gr.emitRaw(
    'ReduceSum',
    [gr.emitRaw('Mul', [picked, w2], null, f, [n, 1]), gr.ints([0, 1])],
    null,
    f,
    [],
    { keepdims: 0 },
  );
  const out = gr.emitRaw('Neg', [total], null, f, [], {}, logits.requiresGrad);
  accumulateGradFns(out, [logits, targets, weights], (g) => {
    const probs = exp(logp);
    return [mul(mul(sub(probs, oneHot(tIdx, v, f)), w2), g), null, null];
  });
  return out;
}

/** Attribute helper re-exported for model code that emits raw nodes. */
export type { AttrValue };
