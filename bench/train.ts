/**
 * npm run bench:train — training and inference speed, measured side by side in one run.
 *
 * 1. The reference transformer (vocab 512, width 128, 4 layers, 4 heads, FF 512, batch 32,
 *    sequence 96, pre-LN, GELU, Adam) on our engine, and the same model in PyTorch where
 *    /usr/bin/python3 has torch; prints the ratio of step times.
 * 2. The `small` preset (the full vision-language model): training ms/step and tokens/s, and
 *    the same step in PyTorch (reference_torch.py small).
 * 3. The `small` step while another thread holds one core: ORT's spinning threads against
 *    rediff's default (no spinning) and one thread.
 * 4. Inference: one sampling step (language graph) at batch 1 and 32, and the vision encoder.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { Worker } from 'node:worker_threads';
import { Graph } from '../src/graph/graph.js';
import * as op from '../src/graph/ops.js';
import { gradients } from '../src/graph/autodiff.js';
import { serializeGraph } from '../src/graph/onnx.js';
import { CompiledGraph, type HostTensor, f32, i64 } from '../src/graph/runtime.js';
import { block } from '../src/model/architecture.js';
import { presetConfig, type ModelConfig, numPatches, patchDim } from '../src/model/config.js';
import { DiffusionVLM } from '../src/model/model.js';
import { initParams, blockSpecs, type ParamSpec } from '../src/model/params.js';
import { adamWStep, newAdamWState } from '../src/training/optimizer.js';
import { makeSample, MASK_PREDICTION_MIX } from '../src/training/samples.js';
import { Trainer } from '../src/training/trainer.js';
import { WordTokenizer } from '../src/tokenizer/word.js';
import { Rng } from '../src/util/rng.js';

const STEPS = Number(process.env.BENCH_STEPS ?? 30);
/** Steps timed for the `small` preset (a step costs more than the reference's). */
const SMALL_STEPS = Math.min(STEPS, 20);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function timeSteps(fn: () => Promise<void>, steps = STEPS, warmup = 3): Promise<number> {
  for (let i = 0; i < warmup; i++) await fn();
  const times: number[] = [];
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    await fn();
    times.push(performance.now() - t0);
  }
  return median(times);
}

/** The reference transformer: token + position embeddings, 4 blocks, LN, head, CE on every position. */
async function referenceOurs(): Promise<number> {
  const V = 512,
    D = 128,
    B = 32,
    T = 96;
  const t = { width: D, layers: 4, heads: 4, ff: 512 };
  const specs: ParamSpec[] = [
    { name: 'lm.tok', shape: [V, D], init: 'normal' },
    { name: 'lm.pos', shape: [T, D], init: 'normal' },
    ...Array.from({ length: 4 }, (_, i) => blockSpecs(`lm.block${i}`, t)).flat(),
    { name: 'lm.ln.g', shape: [D], init: 'ones' },
    { name: 'lm.ln.b', shape: [D], init: 'zeros' },
    { name: 'lm.head.w', shape: [D, V], init: 'normal' },
    { name: 'lm.head.b', shape: [V], init: 'zeros' },
  ];
  const g = new Graph('float32');
  const tokens = g.input('tokens', 'int64', [B, T]);
  const targets = g.input('targets', 'int64', [B * T]);
  const weights = g.input('weights', 'float32', [B * T]);
  const p = new Map(specs.map((s) => [s.name, g.input(s.name, 'float32', s.shape, true)]));
  let x = op.add(op.gather(p.get('lm.tok')!, tokens), p.get('lm.pos')!);
  for (let i = 0; i < 4; i++) x = block(x, p, `lm.block${i}`, t, null);
  const logits = op.linear(
    op.layerNorm(x, p.get('lm.ln.g')!, p.get('lm.ln.b')!),
    p.get('lm.head.w')!,
    p.get('lm.head.b')!,
  );
  const loss = op.weightedCrossEntropy(op.reshape(logits, [B * T, V]), targets, weights);
  const names = specs.map((s) => s.name);
  gradients(
    loss,
    names.map((n) => p.get(n)!),
  ).forEach((gv, i) => g.output(gv, `grad_${names[i]}`));
  g.output(loss, 'loss');
  const compiled = await CompiledGraph.create(serializeGraph(g));
  const rng = new Rng(0);
  const params = new Map(
    specs.map((s) => [
      s.name,
      Float32Array.from({ length: s.shape.reduce((a, b) => a * b, 1) }, () =>
        s.init === 'ones' ? 1 : s.init === 'zeros' ? 0 : rng.normal() * 0.02,
      ),
    ]),
  );
  const state = newAdamWState(params);
  const feeds: Record<string, HostTensor> = {
    tokens: i64(
      [B, T],
      Array.from({ length: B * T }, () => rng.int(V)),
    ),
    targets: i64(
      [B * T],
      Array.from({ length: B * T }, () => rng.int(V)),
    ),
    weights: f32([B * T], new Float32Array(B * T).fill(1 / (B * T))),
  };
  return timeSteps(async () => {
    for (const s of specs) feeds[s.name] = f32(s.shape, params.get(s.name)!);
    const out = await compiled.run(feeds);
    const grads = new Map(specs.map((s) => [s.name, out[`grad_${s.name}`]!.data as Float32Array]));
    adamWStep(params, grads, state, 1e-3);
  });
}

type TorchTime = { threads: number; ms_per_step: number; torch: string };

/** PyTorch's step times (1 and 2 threads) for a mode of reference_torch.py, or null without torch. */
function torchReference(mode: 'reference' | 'small'): TorchTime[] | null {
  const py = '/usr/bin/python3';
  if (!fs.existsSync(py)) return null;
  try {
    execFileSync(py, ['-c', 'import torch'], { stdio: 'ignore' });
  } catch {
    return null;
  }
  const out = execFileSync(
    py,
    [new URL('./reference_torch.py', import.meta.url).pathname, String(mode === 'small' ? SMALL_STEPS : STEPS), mode],
    { encoding: 'utf8' },
  );
  return out
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
}

/** One training step of a preset (graph, gradients out, AdamW), batches made beforehand as PyTorch's. */
async function presetTraining(c: ModelConfig, batch: number, steps = SMALL_STEPS): Promise<number> {
  const trainer = new Trainer(c, initParams(c, 1));
  const rng = new Rng(1);
  const record = {
    rgb: Uint8Array.from({ length: c.imageSize * c.imageSize * 3 }, () => rng.int(256)),
    prompt: [4, 5, 6],
    captions: [Array.from({ length: 60 }, () => 4 + rng.int(c.vocabSize - 4))],
    corrections: [],
  };
  const vocab = { firstOrdinaryId: 4, vocabSize: c.vocabSize };
  const batches = Array.from({ length: 4 }, () =>
    Array.from({ length: batch }, () => makeSample(c, record, rng, MASK_PREDICTION_MIX, vocab)),
  );
  let i = 0;
  const ms = await timeSteps(async () => {
    await trainer.step(batches[i++ % batches.length]!, 1e-4);
  }, steps);
  await trainer.dispose();
  return ms;
}

/** The `small` step while another thread keeps one of the two cores busy, under a runtime setting. */
async function sharedCoreTraining(c: ModelConfig, threads: number, spin: boolean): Promise<number> {
  const saved = { threads: process.env.REDIFF_THREADS, spin: process.env.REDIFF_SPIN };
  process.env.REDIFF_THREADS = String(threads);
  process.env.REDIFF_SPIN = spin ? '1' : '0';
  const busy = new Worker('for (;;) {}', { eval: true });
  try {
    return await presetTraining(c, 32, 10);
  } finally {
    await busy.terminate();
    for (const [k, v] of [
      ['REDIFF_THREADS', saved.threads],
      ['REDIFF_SPIN', saved.spin],
    ] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

async function inference(c: ModelConfig): Promise<{ b1: number; b32: number; vision32: number }> {
  const tok = new WordTokenizer(Array.from({ length: c.vocabSize - 4 }, (_, i) => `w${i}`));
  const model = new DiffusionVLM(c, tok, initParams(c, 2));
  const patches = (b: number) =>
    Array.from({ length: b }, () => new Float32Array(numPatches(c) * patchDim(c)).fill(0.1));
  const rows = (b: number) =>
    Array.from({ length: b }, () => ({ prompt: [4, 5], response: new Array(c.responseLength).fill(1) }));
  const e1 = await model.encodeImages(patches(1));
  const e32 = await model.encodeImages(patches(32));
  const b1 = await timeSteps(async () => void (await model.logits(e1, rows(1))));
  const b32 = await timeSteps(async () => void (await model.logits(e32, rows(32))), 10);
  const vision32 = await timeSteps(async () => void (await model.encodeImages(patches(32))), 10);
  await model.dispose();
  return { b1, b32, vision32 };
}

const line = (s: string): void => console.log(s);
const threadsLabel = `${process.env.REDIFF_THREADS ?? 2} threads${process.env.REDIFF_SPIN === '1' ? ', spinning' : ''}`;
/** Prints PyTorch's times and our ratio to its fastest setting. */
function compare(ours: number, torch: TorchTime[] | null, target?: number): void {
  if (!torch) {
    line('  PyTorch: not available (/usr/bin/python3 with torch; apt-get install python3-torch libopenblas0-pthread)');
    return;
  }
  for (const t of torch)
    line(`  PyTorch ${t.torch} (${t.threads} thread${t.threads > 1 ? 's' : ''}): ${t.ms_per_step.toFixed(1)} ms/step`);
  const best = Math.min(...torch.map((t) => t.ms_per_step));
  line(
    `  ratio rediff / fastest PyTorch: ${(ours / best).toFixed(2)}${target ? ` (target <= ${target.toFixed(2)})` : ''}`,
  );
}

const ours = await referenceOurs();
const torch = torchReference('reference');
line(`reference transformer (V512 D128 L4 H4 FF512, batch 32 x 96 tokens, Adam), median of ${STEPS} steps:`);
line(
  `  rediff (onnxruntime-node, ${threadsLabel}): ${ours.toFixed(1)} ms/step, ` +
    `${Math.round((32 * 96) / (ours / 1000))} tokens/s`,
);
compare(ours, torch, 0.4);
const small = presetConfig('small', 300);
const smallMs = await presetTraining(small, 32);
const smallTorch = torchReference('small');
line(
  `small preset (vocab 300, ${numPatches(small)} image + ${small.promptLength} prompt + ${small.responseLength} ` +
    `response tokens, batch 32, AdamW), median of ${SMALL_STEPS} steps:`,
);
line(
  `  rediff (${threadsLabel}): ${smallMs.toFixed(1)} ms/step, ` +
    `${Math.round((32 * small.responseLength) / (smallMs / 1000))} response tokens/s`,
);
compare(smallMs, smallTorch);
line('small preset, one core kept busy by another thread (median of 10 steps):');
const settings = [
  { label: "2 threads, spinning (onnxruntime's default)", threads: 2, spin: true },
  { label: "2 threads, not spinning (rediff's default)", threads: 2, spin: false },
  { label: '1 thread', threads: 1, spin: false },
];
for (const s of settings) {
  const ms = await sharedCoreTraining(small, s.threads, s.spin);
  line(`  ${s.label}: ${ms.toFixed(1)} ms/step (${(ms / smallMs).toFixed(2)}x the idle step)`);
}
const inf = await inference(small);
line(
  `small preset inference, one sampling step (language graph): batch 1 ${inf.b1.toFixed(2)} ms, batch 32 ` +
    `${inf.b32.toFixed(1)} ms; vision encoder batch 32 ${inf.vision32.toFixed(1)} ms`,
);
