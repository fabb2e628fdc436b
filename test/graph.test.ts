import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph, type Value } from '../src/graph/graph.js';
import { gradients } from '../src/graph/autodiff.js';
import { serializeGraph } from '../src/graph/onnx.js';
import * as op from '../src/graph/ops.js';
import type { HostTensor } from '../src/graph/runtime.js';
import { CompiledGraph, f32, i64 } from '../src/graph/runtime.js';
import { Rng } from '../src/util/rng.js';
import { gradCheck, randF64 } from './helpers/gradcheck.js';

/** loss = sum(f(x) * R) with a fixed random R, so every output element carries gradient. */
function project(g: Graph, y: Value, seed = 3): Value {
  const rng = new Rng(seed);
  const r = g.constant(
    Array.from({ length: y.size }, () => rng.normal()),
    y.shape,
    'float64',
  );
  return op.sumAll(op.mul(y, r));
}

interface Case {
  name: string;
  shapes: Record<string, number[]>;
  f: (g: Graph, xs: Record<string, Value>) => Value;
  ints?: Record<string, { shape: number[]; values: number[] }>;
  positive?: boolean;
}

const cases: Case[] = [
  { name: 'Add (broadcast)', shapes: { a: [2, 3, 4], b: [4] }, f: (_g, x) => op.add(x.a!, x.b!) },
  { name: 'Sub (broadcast)', shapes: { a: [2, 1, 4], b: [3, 1] }, f: (_g, x) => op.sub(x.a!, x.b!) },
  { name: 'Mul (broadcast)', shapes: { a: [2, 3, 4], b: [2, 1, 4] }, f: (_g, x) => op.mul(x.a!, x.b!) },
  { name: 'Div', shapes: { a: [3, 4], b: [3, 4] }, f: (_g, x) => op.div(x.a!, op.add(op.mul(x.b!, x.b!), 1)) },
  { name: 'Neg/Exp', shapes: { a: [3, 4] }, f: (_g, x) => op.exp(op.neg(x.a!)) },
  { name: 'Log/Sqrt', shapes: { a: [3, 4] }, f: (_g, x) => op.log(op.sqrt(op.add(op.square(x.a!), 1))) },
  { name: 'Tanh', shapes: { a: [3, 4] }, f: (_g, x) => op.tanh(x.a!) },
  { name: 'MatMul (x @ W)', shapes: { a: [2, 3, 4], w: [4, 5] }, f: (_g, x) => op.matmul(x.a!, x.w!) },
  { name: 'MatMul (batched)', shapes: { a: [2, 2, 3, 4], b: [2, 2, 4, 3] }, f: (_g, x) => op.matmul(x.a!, x.b!) },
  { name: 'MatMul (broadcast batch)', shapes: { a: [2, 3, 4], b: [1, 4, 2] }, f: (_g, x) => op.matmul(x.a!, x.b!) },
  {
    name: 'Reshape/Transpose',
    shapes: { a: [2, 3, 4] },
    f: (_g, x) => op.transpose(op.reshape(x.a!, [2, 2, 6]), [2, 0, 1]),
  },
  { name: 'Concat', shapes: { a: [2, 3], b: [2, 2] }, f: (_g, x) => op.concat([x.a!, x.b!, x.a!], 1) },
  { name: 'Slice', shapes: { a: [3, 5] }, f: (_g, x) => op.slice(x.a!, 1, 1, 4) },
  {
    name: 'Split',
    shapes: { a: [2, 6] },
    f: (_g, x) => {
      const [p, , r] = op.split(x.a!, 1, [2, 3, 1]);
      return op.concat([op.mul(p!, 2), r!], 1);
    },
  },
  { name: 'Expand', shapes: { a: [3, 1] }, f: (_g, x) => op.expand(x.a!, [2, 3, 4]) },
  { name: 'ReduceSum', shapes: { a: [2, 3, 4] }, f: (_g, x) => op.reduceSum(x.a!, [1], true) },
  { name: 'ReduceMean', shapes: { a: [2, 3, 4] }, f: (_g, x) => op.reduceMean(x.a!, [0, 2], false) },
  { name: 'Softmax', shapes: { a: [2, 5] }, f: (_g, x) => op.softmax(x.a!) },
  {
    name: 'LayerNorm',
    shapes: { a: [2, 3, 6], gamma: [6], beta: [6] },
    f: (_g, x) => op.layerNorm(x.a!, x.gamma!, x.beta!),
  },
  { name: 'GELU', shapes: { a: [4, 5] }, f: (_g, x) => op.gelu(x.a!) },
  {
    name: 'Where',
    shapes: { a: [3, 4], b: [4] },
    f: (g, x) => op.where(g.constant([1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1], [3, 4], 'bool'), x.a!, x.b!),
  },
  {
    name: 'Gather (embedding)',
    shapes: { table: [5, 3] },
    ints: { ids: { shape: [2, 3], values: [0, 4, 4, 2, 0, 1] } },
    f: (_g, x) => op.gather(x.table!, x.ids!),
  },
];

for (const c of cases) {
  test(`gradient of ${c.name} matches finite differences`, async () => {
    const rng = new Rng(11);
    const feeds: Record<string, HostTensor> = {};
    for (const [k, s] of Object.entries(c.shapes)) feeds[k] = randF64(rng, s);
    for (const [k, v] of Object.entries(c.ints ?? {})) feeds[k] = i64(v.shape, v.values);
    const res = await gradCheck((g) => {
      const xs: Record<string, Value> = {};
      for (const [k, s] of Object.entries(c.shapes)) xs[k] = g.input(k, 'float64', s, true);
      for (const [k, v] of Object.entries(c.ints ?? {})) xs[k] = g.input(k, 'int64', v.shape);
      return project(g, c.f(g, xs));
    }, feeds);
    assert.ok(res.checked > 0);
    assert.ok(res.maxRelError < 1e-6, `max relative error ${res.maxRelError}`);
  });
}

test('gradient of weighted cross-entropy matches finite differences', async () => {
  const rng = new Rng(5);
  const feeds: Record<string, HostTensor> = {
    logits: randF64(rng, [4, 6]),
    targets: i64([4], [0, 5, 2, 2]),
    weights: { dtype: 'float64', shape: [4], data: Float64Array.from([0.5, 2, 0, 1.25]) },
  };
  const res = await gradCheck((g) => {
    const logits = g.input('logits', 'float64', [4, 6], true);
    const t = g.input('targets', 'int64', [4]);
    const w = g.input('weights', 'float64', [4]);
    return op.weightedCrossEntropy(logits, t, w);
  }, feeds);
  assert.ok(res.maxRelError < 1e-6, `max relative error ${res.maxRelError}`);
});

test('a value used twice accumulates both gradient paths', async () => {
  const rng = new Rng(2);
  const res = await gradCheck(
    (g) => {
      const a = g.input('a', 'float64', [3, 3], true);
      return project(g, op.add(op.matmul(a, a), op.mul(a, a)));
    },
    { a: randF64(rng, [3, 3]) },
  );
  assert.ok(res.maxRelError < 1e-6, `max relative error ${res.maxRelError}`);
});

test('the embedding gradient sums every repeated id exactly on 2 threads (one-hot and large-table paths)', async () => {
  // ScatterND with reduction=add lost updates of repeated ids when ORT ran it on 2 threads.
  for (const { n, v, d } of [
    { n: 3000, v: 94, d: 128 },
    { n: 4200, v: 4096, d: 2 },
  ]) {
    const rng = new Rng(5);
    const ids = Array.from({ length: n }, () => (rng.next() < 0.5 ? 1 : rng.int(v)));
    const up = Float32Array.from({ length: n * d }, () => rng.normal());
    const g = new Graph('float32');
    const table = g.input('table', 'float32', [v, d], true);
    const idv = g.input('ids', 'int64', [n]);
    const upstream = g.input('up', 'float32', [n, d]);
    const loss = op.sumAll(op.mul(op.gather(table, idv), upstream));
    g.output(gradients(loss, [table])[0]!, 'grad');
    const compiled = await CompiledGraph.create(serializeGraph(g), { threads: 2 });
    const want = new Float64Array(v * d);
    for (let i = 0; i < n; i++) for (let k = 0; k < d; k++) want[ids[i]! * d + k] += up[i * d + k]!;
    for (let run = 0; run < 5; run++) {
      const got = (await compiled.run({ table: f32([v, d]), ids: i64([n], ids), up: f32([n, d], up) })).grad!
        .data as Float32Array;
      let worst = 0;
      for (let j = 0; j < v * d; j++) worst = Math.max(worst, Math.abs(got[j]! - want[j]!));
      assert.ok(worst < 1e-3, `table ${v}x${d}, run ${run}: the gradient is off by ${worst}`);
    }
    await compiled.release();
  }
});

test('inference GELU (onnxruntime FastGelu) is the training form x * sigmoid(2u)', async () => {
  const n = 2001;
  const x = Float32Array.from({ length: n }, (_, i) => -8 + (16 * i) / (n - 1));
  const g = new Graph('float32');
  const plain = g.input('x', 'float32', [n]);
  const withGrad = g.input('y', 'float32', [n], true);
  g.output(op.gelu(plain), 'inference');
  g.output(op.gelu(withGrad), 'training');
  assert.ok(
    g.nodes.some((node) => node.op === 'FastGelu'),
    'a GELU without gradient is one FastGelu node',
  );
  const compiled = await CompiledGraph.create(serializeGraph(g));
  const out = await compiled.run({ x: f32([n], x), y: f32([n], x) });
  await compiled.release();
  const a = out.inference!.data as Float32Array;
  const b = out.training!.data as Float32Array;
  let worst = 0;
  for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  assert.ok(worst < 1e-5, `FastGelu and x * sigmoid(2u) differ by ${worst}`);
});
