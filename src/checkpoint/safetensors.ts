/**
 * The safetensors format (https://github.com/huggingface/safetensors): an 8-byte little-endian
 * header length N, N bytes of JSON `{name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?:
 * {string: string}}`, then the raw little-endian tensor data (offsets are relative to its start).
 * The writer pads the header with spaces to a multiple of 8 so every tensor is 8-byte aligned.
 */
import * as fsp from 'node:fs/promises';
import { UserError } from '../util/errors.js';
import { describeFsError, writeFileAtomic } from '../util/atomic.js';

export type DType = 'F32' | 'F64' | 'I32' | 'I64';
export type TensorData = Float32Array | Float64Array | Int32Array | BigInt64Array;

export interface NamedTensor {
  dtype: DType;
  shape: number[];
  data: TensorData;
}

export interface TensorInfo {
  dtype: DType;
  shape: number[];
  /** [begin, end) byte offsets into the data section. */
  dataOffsets: [number, number];
}

export interface SafetensorsHeader {
  tensors: Record<string, TensorInfo>;
  metadata: Record<string, string>;
  /** Byte length of the whole header (8-byte length prefix + JSON). */
  headerBytes: number;
}

export interface SafetensorsContent {
  tensors: Record<string, NamedTensor>;
  metadata: Record<string, string>;
}

const BYTES: Record<DType, number> = { F32: 4, F64: 8, I32: 4, I64: 8 };
const CTOR = {
  F32: Float32Array,
  F64: Float64Array,
  I32: Int32Array,
  I64: BigInt64Array,
} as const;
/** Refuse headers above this size (a corrupt length prefix would otherwise allocate gigabytes). */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export function bytesPerElement(dtype: DType): number {
  return BYTES[dtype];
}

export function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function isDType(x: unknown): x is DType {
  return x === 'F32' || x === 'F64' || x === 'I32' || x === 'I64';
}

function dtypeOfData(data: TensorData): DType {
  if (data instanceof Float32Array) return 'F32';
  if (data instanceof Float64Array) return 'F64';
  if (data instanceof Int32Array) return 'I32';
  if (data instanceof BigInt64Array) return 'I64';
  throw new TypeError('unsupported tensor data type');
}

/** Convenience constructors. */
export const tensor = {
  f32: (shape: number[], data: Float32Array): NamedTensor => ({ dtype: 'F32', shape, data }),
  f64: (shape: number[], data: Float64Array): NamedTensor => ({ dtype: 'F64', shape, data }),
  i32: (shape: number[], data: Int32Array): NamedTensor => ({ dtype: 'I32', shape, data }),
  i64: (shape: number[], data: BigInt64Array): NamedTensor => ({ dtype: 'I64', shape, data }),
};

/** Little-endian bytes of a typed array (a view when the platform is little-endian). */
function leBytes(data: TensorData): Uint8Array {
  if (LITTLE_ENDIAN) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const out = new Uint8Array(data.byteLength);
  const dv = new DataView(out.buffer);
  const n = data.length;
  if (data instanceof Float32Array) for (let i = 0; i < n; i++) dv.setFloat32(i * 4, data[i]!, true);
  else if (data instanceof Float64Array) for (let i = 0; i < n; i++) dv.setFloat64(i * 8, data[i]!, true);
  else if (data instanceof Int32Array) for (let i = 0; i < n; i++) dv.setInt32(i * 4, data[i]!, true);
  else for (let i = 0; i < n; i++) dv.setBigInt64(i * 8, data[i]!, true);
  return out;
}

/**
 * Serialises tensors (in the record's key order) and optional string metadata. Returns the file
 * content as chunks (header, then one view per tensor) so large tensors are not copied.
 * Throws a TypeError/RangeError for inconsistent input (a programming error, not a user one).
 */
export function encodeSafetensors(
  tensors: Readonly<Record<string, NamedTensor>>,
  metadata?: Readonly<Record<string, string>>,
): Uint8Array[] {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new TypeError(`safetensors metadata "${k}" must be a string`);
    }
    header.__metadata__ = { ...metadata };
  }
  const bodies: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    if (name === '__metadata__') throw new RangeError('"__metadata__" cannot be a tensor name');
    if (!isDType(t.dtype)) throw new TypeError(`tensor ${name}: unsupported dtype ${String(t.dtype)}`);
    if (dtypeOfData(t.data) !== t.dtype) {
      throw new TypeError(`tensor ${name}: dtype ${t.dtype} but data is ${t.data.constructor.name}`);
    }
    if (!t.shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new RangeError(`tensor ${name}: bad shape [${t.shape.join(', ')}]`);
    }
    if (elementCount(t.shape) !== t.data.length) {
      throw new RangeError(
        `tensor ${name}: shape [${t.shape.join(', ')}] needs ${elementCount(t.shape)} elements, data has ` +
          `${t.data.length}`,
      );
    }
    const bytes = leBytes(t.data);
    header[name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + bytes.byteLength] };
    bodies.push(bytes);
    offset += bytes.byteLength;
  }
  let json = JSON.stringify(header);
  let jsonBytes = Buffer.from(json, 'utf8');
  const pad = (8 - (jsonBytes.byteLength % 8)) % 8;
  if (pad > 0) {
    json += ' '.repeat(pad);
    jsonBytes = Buffer.from(json, 'utf8');
  }
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(jsonBytes.byteLength));
  return [prefix, jsonBytes, ...bodies];
}

/** encodeSafetensors as one contiguous buffer. */
export function encodeSafetensorsBuffer(
  tensors: Readonly<Record<string, NamedTensor>>,
  metadata?: Readonly<Record<string, string>>,
): Buffer {
  return Buffer.concat(encodeSafetensors(tensors, metadata));
}

/** Parses and validates the header of a safetensors file whose first bytes are `buf`. */
export function parseSafetensorsHeader(buf: Uint8Array, file: string, fileSize = buf.byteLength): SafetensorsHeader {
  const bad = (what: string): UserError => new UserError(`${file}: ${what}`);
  if (fileSize < 8) {
    throw bad(
      fileSize === 0
        ? 'empty file, not a safetensors file'
        : `truncated: ${fileSize} bytes, too short for a safetensors file`,
    );
  }
  if (buf.byteLength < 8) throw bad('truncated header');
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = dv.getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) throw bad(`corrupt: header length ${n} is not plausible`);
  const headerLen = Number(n);
  if (8 + headerLen > fileSize) {
    throw bad(`truncated: header says ${headerLen} header bytes but the file has only ${fileSize} bytes`);
  }
  if (buf.byteLength < 8 + headerLen) throw bad('truncated header');
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(buf.buffer, buf.byteOffset + 8, headerLen).toString('utf8'));
  } catch (err) {
    throw bad(
      `corrupt header: not valid JSON (${String((err as Error).message)
        .split('\n')[0]!
        .slice(0, 100)})`,
    );
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw bad('corrupt header: not a JSON object');

  const dataSize = fileSize - 8 - headerLen;
  const tensors: Record<string, TensorInfo> = {};
  let metadata: Record<string, string> = {};
  const spans: Array<[number, number, string]> = [];
  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (entry === null || typeof entry !== 'object' || Array.isArray(entry))
        throw bad('corrupt header: __metadata__ is not an object');
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== 'string') throw bad(`corrupt header: __metadata__.${k} is not a string`);
      }
      metadata = { ...(entry as Record<string, string>) };
      continue;
    }
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown } | null;
    if (e === null || typeof e !== 'object') throw bad(`corrupt header: entry for tensor ${name} is not an object`);
    if (!isDType(e.dtype)) {
      throw bad(`tensor ${name} has unsupported dtype ${JSON.stringify(e.dtype)} (supported: F32, F64, I32, I64)`);
    }
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw bad(`corrupt header: tensor ${name} has an invalid shape`);
    }
    const offs = e.data_offsets;
    if (
      !Array.isArray(offs) ||
      offs.length !== 2 ||
      !offs.every((o) => Number.isSafeInteger(o) && o >= 0) ||
      offs[0] > offs[1]
    ) {
      throw bad(`corrupt header: tensor ${name} has invalid data_offsets`);
    }
    const [begin, end] = offs as [number, number];
    const shape = e.shape as number[];
    const expected = elementCount(shape) * BYTES[e.dtype];
    if (end - begin !== expected) {
      throw bad(
        `corrupt: tensor ${name} (${e.dtype} [${shape.join(', ')}]) needs ${expected} bytes but its offsets span ` +
          `${end - begin}`,
      );
    }
    if (end > dataSize) {
      throw bad(`truncated: tensor ${name} needs data up to byte ${end} but the file has only ${dataSize} data bytes`);
    }
    tensors[name] = { dtype: e.dtype, shape: [...shape], dataOffsets: [begin, end] };
    spans.push([begin, end, name]);
  }
  spans.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  for (let i = 1; i < spans.length; i++) {
    const prev = spans[i - 1]!;
    const cur = spans[i]!;
    if (cur[0] < prev[1]) throw bad(`corrupt header: tensors ${prev[2]} and ${cur[2]} overlap`);
  }
  return { tensors, metadata, headerBytes: 8 + headerLen };
}

/**
 * Decodes a whole safetensors file held in memory. `file` names it in error messages: any
 * truncation or inconsistency gives a UserError "<file>: <what is wrong>".
 * Tensors are zero-copy views of `buf` when aligned (always the case for files this module writes).
 */
export function decodeSafetensors(buf: Uint8Array, file: string): SafetensorsContent {
  const header = parseSafetensorsHeader(buf, file);
  const tensors: Record<string, NamedTensor> = {};
  const base = header.headerBytes;
  for (const [name, info] of Object.entries(header.tensors)) {
    const [begin, end] = info.dataOffsets;
    const size = BYTES[info.dtype];
    const byteOffset = buf.byteOffset + base + begin;
    const count = (end - begin) / size;
    const Ctor = CTOR[info.dtype];
    let data: TensorData;
    if (!LITTLE_ENDIAN) {
      const dv = new DataView(buf.buffer, byteOffset, end - begin);
      if (info.dtype === 'F32') data = Float32Array.from({ length: count }, (_, i) => dv.getFloat32(i * 4, true));
      else if (info.dtype === 'F64') data = Float64Array.from({ length: count }, (_, i) => dv.getFloat64(i * 8, true));
      else if (info.dtype === 'I32') data = Int32Array.from({ length: count }, (_, i) => dv.getInt32(i * 4, true));
      else data = BigInt64Array.from({ length: count }, (_, i) => dv.getBigInt64(i * 8, true));
    } else if (byteOffset % size === 0) {
      data = new Ctor(buf.buffer as ArrayBuffer, byteOffset, count);
    } else {
      data = new Ctor(buf.buffer.slice(byteOffset, byteOffset + (end - begin)) as ArrayBuffer);
    }
    tensors[name] = { dtype: info.dtype, shape: [...info.shape], data };
  }
  return { tensors, metadata: header.metadata };
}

async function readWhole(file: string): Promise<Buffer> {
  try {
    return await fsp.readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException)?.code === 'ENOENT') throw new UserError(`safetensors file not found: ${file}`);
    throw new UserError(`cannot read ${file} (${describeFsError(err)})`);
  }
}

/** Reads and validates a safetensors file. */
export async function readSafetensors(file: string): Promise<SafetensorsContent> {
  return decodeSafetensors(await readWhole(file), file);
}

/** Reads only the header (names, dtypes, shapes, metadata) without loading the tensor data. */
export async function readSafetensorsHeader(file: string): Promise<SafetensorsHeader> {
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException)?.code === 'ENOENT') throw new UserError(`safetensors file not found: ${file}`);
    throw new UserError(`cannot read ${file} (${describeFsError(err)})`);
  }
  try {
    const { size } = await fh.stat();
    const prefix = Buffer.alloc(8);
    await fh.read(prefix, 0, Math.min(8, size), 0);
    if (size < 8) return parseSafetensorsHeader(prefix, file, size);
    const n = prefix.readBigUInt64LE(0);
    const want = n > BigInt(MAX_HEADER_BYTES) || 8 + Number(n) > size ? 8 : 8 + Number(n);
    const buf = Buffer.alloc(want);
    await fh.read(buf, 0, want, 0);
    return parseSafetensorsHeader(buf, file, size);
  } finally {
    await fh.close();
  }
}

/** Writes a safetensors file atomically (temp file + fsync + rename). */
export async function writeSafetensors(
  file: string,
  tensors: Readonly<Record<string, NamedTensor>>,
  metadata?: Readonly<Record<string, string>>,
): Promise<void> {
  await writeFileAtomic(file, encodeSafetensors(tensors, metadata));
}
