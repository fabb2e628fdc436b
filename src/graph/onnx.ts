/** Serialises the graph IR to an ONNX ModelProto (opset 17) with the onnx-proto schema. */
import onnxProto from 'onnx-proto';
import type { AttrValue, DType, Graph, TensorData, Value } from './graph.js';

const { onnx } = onnxProto;
export const OPSET = 17;

const ELEM_TYPE: Record<DType, number> = { float32: 1, int64: 7, bool: 9, float64: 11 };

function tensorProto(name: string, t: TensorData): onnxProto.onnx.ITensorProto {
  const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  return { name, dims: t.shape, dataType: ELEM_TYPE[t.dtype], rawData: bytes };
}

function attribute(name: string, v: AttrValue): onnxProto.onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) throw new Error(`attribute ${name}: use {float: x} for non-integers`);
    return { name, type: T.INT, i: v };
  }
  if (typeof v === 'string') return { name, type: T.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return { name, type: T.INTS, ints: v };
  if ('float' in v) return { name, type: T.FLOAT, f: v.float };
  if ('floats' in v) return { name, type: T.FLOATS, floats: v.floats };
  return { name, type: T.TENSOR, t: tensorProto('', v) };
}

function valueInfo(v: Value): onnxProto.onnx.IValueInfoProto {
  return {
    name: v.name,
    type: { tensorType: { elemType: ELEM_TYPE[v.dtype], shape: { dim: v.shape.map((d) => ({ dimValue: d })) } } },
  };
}

export interface SerializeOptions {
  /** Graph inputs to bake in as initializers (e.g. trained weights for a standalone export). */
  bake?: Map<string, TensorData>;
  name?: string;
}

export function serializeGraph(g: Graph, opts: SerializeOptions = {}): Uint8Array {
  const bake = opts.bake ?? new Map<string, TensorData>();
  const initializer = [...g.initializers.entries()].map(([n, t]) => tensorProto(n, t));
  for (const [n, t] of bake) initializer.push(tensorProto(n, t));
  const model = onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'rediff',
    opsetImport: [
      { domain: '', version: OPSET },
      ...[...new Set(g.nodes.flatMap((n) => (n.domain ? [n.domain] : [])))].map((domain) => ({ domain, version: 1 })),
    ],
    graph: {
      name: opts.name ?? 'rediff',
      node: g.nodes.map((n, i) => ({
        name: `n${i}_${n.op}`,
        opType: n.op,
        domain: n.domain ?? '',
        input: n.inputs,
        output: n.outputs,
        attribute: Object.entries(n.attrs).map(([k, v]) => attribute(k, v)),
      })),
      initializer,
      input: g.inputs.filter((v) => !bake.has(v.name)).map(valueInfo),
      output: g.outputs.map(valueInfo),
    },
  });
  return onnx.ModelProto.encode(model).finish();
}
