/**
 * A static-shape graph IR that mirrors ONNX and records a tape for reverse-mode autodiff.
 *
 * Every op (src/graph/ops.ts) emits ONNX nodes into a Graph and, when one of its inputs
 * needs a gradient, pushes a tape entry whose `vjp` emits the backward nodes into the same
 * graph. `gradients()` (src/graph/autodiff.ts) replays the tape in reverse, so one ONNX
 * model computes the loss and every parameter gradient in a single session.run.
 */

export type DType = 'float32' | 'float64' | 'int64' | 'bool';
export type FloatDType = 'float32' | 'float64';

export type AttrValue = number | number[] | string | { float: number } | { floats: number[] } | TensorData;

/** Constant tensor data embedded in the graph (an ONNX initializer). */
export interface TensorData {
  kind: 'tensor';
  dtype: DType;
  shape: number[];
  data: Float32Array | Float64Array | BigInt64Array | Uint8Array;
}

export interface NodeSpec {
  op: string;
  inputs: string[];
  outputs: string[];
  attrs: Record<string, AttrValue>;
  domain?: string;
}

export interface TapeEntry {
  inputs: (Value | null)[];
  outputs: Value[];
  /** Given the gradients of the outputs (null where none flows), emits and returns input gradients. */
  vjp: (gradOutputs: (Value | null)[]) => (Value | null)[];
}

export class Value {
  constructor(
    readonly graph: Graph,
    readonly name: string,
    readonly dtype: DType,
    readonly shape: readonly number[],
    /** True when a gradient must flow back through this value. */
    readonly requiresGrad: boolean,
  ) {}

  get rank(): number {
    return this.shape.length;
  }

  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }
}

export class Graph {
  readonly nodes: NodeSpec[] = [];
  readonly inputs: Value[] = [];
  readonly outputs: Value[] = [];
  readonly initializers = new Map<string, TensorData>();
  readonly tape: TapeEntry[] = [];
  /** Off while the backward pass emits nodes: backward nodes are never themselves taped. */
  recording = true;
  private counter = 0;
  private readonly constCache = new Map<string, Value>();

  constructor(readonly floatType: FloatDType = 'float32') {}

  fresh(prefix: string): string {
    return `${prefix}_${this.counter++}`;
  }

  /** A graph input. Parameters are inputs with requiresGrad, so weights are fed per run. */
  input(name: string, dtype: DType, shape: readonly number[], requiresGrad = false): Value {
    if (this.inputs.some((v) => v.name === name)) throw new Error(`duplicate graph input ${name}`);
    const v = new Value(this, name, dtype, [...shape], requiresGrad);
    this.inputs.push(v);
    return v;
  }

  output(v: Value, name?: string): Value {
    if (name && name !== v.name) {
      const out = this.emitRaw('Identity', [v], name, v.dtype, v.shape);
      this.outputs.push(out);
      return out;
    }
    this.outputs.push(v);
    return v;
  }

  /** A constant, deduplicated by content so repeated scalars do not bloat the graph. */
  constant(
    values: number[] | Float32Array | Float64Array,
    shape: readonly number[],
    dtype: DType = this.floatType,
  ): Value {
    const arr = Array.from(values as ArrayLike<number>);
    const key = `${dtype}|${shape.join(',')}|${arr.length <= 64 ? arr.join(',') : this.fresh('big')}`;
    const cached = this.constCache.get(key);
    if (cached) return cached;
    let data: TensorData['data'];
    if (dtype === 'float32') data = Float32Array.from(arr);
    else if (dtype === 'float64') data = Float64Array.from(arr);
    else if (dtype === 'int64') data = BigInt64Array.from(arr.map((x) => BigInt(x)));
    else data = Uint8Array.from(arr);
    const name = this.fresh('const');
    this.initializers.set(name, { kind: 'tensor', dtype, shape: [...shape], data });
    const v = new Value(this, name, dtype, [...shape], false);
    this.constCache.set(key, v);
    return v;
  }

  scalar(x: number, dtype: DType = this.floatType): Value {
    return this.constant([x], [], dtype);
  }

  ints(xs: readonly number[]): Value {
    return this.constant([...xs], [xs.length], 'int64');
  }

  /** Emits one node with a single output of known dtype and shape. */
  emitRaw(
    op: string,
    inputs: (Value | null)[],
    outName: string | null,
    dtype: DType,
    shape: readonly number[],
    attrs: Record<string, AttrValue> = {},
    requiresGrad = false,
    domain?: string,
  ): Value {
    const name = outName ?? this.fresh(op.toLowerCase());
    this.nodes.push({
      op,
      inputs: inputs.map((v) => (v ? v.name : '')),
      outputs: [name],
      attrs,
      ...(domain ? { domain } : {}),
    });
    return new Value(this, name, dtype, [...shape], requiresGrad && this.recording);
  }

  /** Emits one node with several outputs. */
  emitMulti(
    op: string,
    inputs: (Value | null)[],
    outs: { dtype: DType; shape: readonly number[] }[],
    attrs: Record<string, AttrValue> = {},
    requiresGrad = false,
  ): Value[] {
    const values = outs.map(
      (o) => new Value(this, this.fresh(op.toLowerCase()), o.dtype, [...o.shape], requiresGrad && this.recording),
    );
    this.nodes.push({ op, inputs: inputs.map((v) => (v ? v.name : '')), outputs: values.map((v) => v.name), attrs });
    return values;
  }

  record(entry: TapeEntry): void {
    if (this.recording && entry.outputs.some((o) => o.requiresGrad)) this.tape.push(entry);
  }

  /** Runs `fn` with taping off (used by the backward pass). */
  untaped<T>(fn: () => T): T {
    const prev = this.recording;
    this.recording = false;
    try {
      return fn();
    } finally {
      this.recording = prev;
    }
  }
}

export function needsGrad(...vs: (Value | null | undefined)[]): boolean {
  return vs.some((v) => v?.requiresGrad === true);
}
