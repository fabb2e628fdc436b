/**
 * onnxruntime-node sessions over serialised graphs. Shapes are static per graph, so callers
 * keep one session per (purpose, batch, length) in a SessionCache.
 */
import * as ort from 'onnxruntime-node';
import type { DType } from './graph.js';

export type HostArray = Float32Array | Float64Array | BigInt64Array | Uint8Array;

export interface HostTensor {
  dtype: DType;
  shape: readonly number[];
  data: HostArray;
}

export interface RuntimeOptions {
  /** Intra-op threads; 2 matches this project's reference machine. */
  threads?: number;
  /**
   * Whether idle intra-op threads spin-wait for work (ORT's default) instead of sleeping.
   * Default: off (REDIFF_SPIN=1 turns it on). Measured on a training step: the same time on an
   * idle machine, and 1.4x faster when another process holds one of the two cores, where
   * spinning threads wait on each other.
   */
  spin?: boolean;
}

export class CompiledGraph {
  private constructor(
    private readonly session: ort.InferenceSession,
    readonly inputNames: readonly string[],
    readonly outputNames: readonly string[],
  ) {}

  static async create(bytes: Uint8Array, opts: RuntimeOptions = {}): Promise<CompiledGraph> {
    const session = await ort.InferenceSession.create(bytes, {
      intraOpNumThreads: opts.threads ?? defaultThreads(),
      interOpNumThreads: 1,
      graphOptimizationLevel: 'all',
      executionMode: 'sequential',
      extra: { session: { intra_op: { allow_spinning: (opts.spin ?? defaultSpin()) ? '1' : '0' } } },
    });
    return new CompiledGraph(session, session.inputNames, session.outputNames);
  }

  /** Runs the graph; feeds are host arrays, outputs come back as host arrays. */
  async run(feeds: Record<string, HostTensor>, outputs?: readonly string[]): Promise<Record<string, HostTensor>> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const name of this.inputNames) {
      const t = feeds[name];
      if (!t) throw new Error(`missing graph input ${name}`);
      ortFeeds[name] = new ort.Tensor(t.dtype === 'bool' ? 'bool' : t.dtype, t.data as never, t.shape as number[]);
    }
    const res = outputs ? await this.session.run(ortFeeds, [...outputs]) : await this.session.run(ortFeeds);
    const out: Record<string, HostTensor> = {};
    for (const [name, t] of Object.entries(res)) {
      out[name] = { dtype: t.type as DType, shape: t.dims as number[], data: t.data as HostArray };
    }
    return out;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

export function defaultThreads(): number {
  const env = Number(process.env.REDIFF_THREADS);
  return Number.isInteger(env) && env > 0 ? env : 2;
}

export function defaultSpin(): boolean {
  return process.env.REDIFF_SPIN === '1';
}

/** Lazily compiled graphs keyed by a shape string; compilation happens once per key. */
export class SessionCache {
  private readonly cache = new Map<string, Promise<CompiledGraph>>();
  /** Time spent building and compiling graphs, so benchmarks can leave it out. */
  compileMs = 0;

  constructor(private readonly opts: RuntimeOptions = {}) {}

  get(key: string, build: () => Uint8Array): Promise<CompiledGraph> {
    let p = this.cache.get(key);
    if (!p) {
      const t0 = performance.now();
      p = CompiledGraph.create(build(), this.opts).then((g) => {
        this.compileMs += performance.now() - t0;
        return g;
      });
      this.cache.set(key, p);
    }
    return p;
  }

  async clear(): Promise<void> {
    const all = [...this.cache.values()];
    this.cache.clear();
    for (const p of all) await (await p).release();
  }
}

export function f32(shape: readonly number[], data?: Float32Array): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return { dtype: 'float32', shape, data: data ?? new Float32Array(n) };
}

export function i64(shape: readonly number[], values: ArrayLike<number>): HostTensor {
  const data = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) data[i] = BigInt(values[i]!);
  return { dtype: 'int64', shape, data };
}
