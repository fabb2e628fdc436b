/**
 * A checkpoint is a directory:
 *   checkpoint.json              format version, model config, tokenizer, training state, and the
 *                                names, byte sizes and sha256 of the two files below
 *   model-<step>.safetensors     the weights
 *   optimizer-<step>.safetensors optional optimizer state (Adam moments), for --resume
 *
 * Saving is crash-safe. The versioned safetensors files are written first (each atomically),
 * then checkpoint.json is atomically replaced, and only then are superseded versioned files
 * deleted. checkpoint.json is the single commit point: a process killed at any moment leaves
 * either the previous checkpoint or the new one loadable, never a mix. A versioned name that the
 * current checkpoint.json still references is never overwritten (a second save at the same step
 * gets the name model-<step>-r<k>.safetensors).
 */
import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { UserError } from '../util/errors.js';
import { describeFsError, isTempName, readJsonFile, writeFileAtomic } from '../util/atomic.js';
import {
  decodeSafetensors,
  elementCount,
  encodeSafetensors,
  readSafetensorsHeader,
  type DType,
  type NamedTensor,
} from './safetensors.js';

export const CHECKPOINT_FILE = 'checkpoint.json';
export const CHECKPOINT_FORMAT = 'rediff-checkpoint';
export const CHECKPOINT_VERSION = 1;

export interface FileRef {
  /** File name inside the checkpoint directory. */
  name: string;
  bytes: number;
  sha256: string;
}

/** The content of checkpoint.json. */
export interface CheckpointManifest {
  format: typeof CHECKPOINT_FORMAT;
  version: number;
  savedAt: string;
  /** Step used to name the files (state.step when it is a non-negative integer, else 0). */
  step: number;
  config: Record<string, unknown>;
  tokenizer: unknown;
  state: Record<string, unknown>;
  files: { weights: FileRef; optimizer: FileRef | null };
}

export interface SaveCheckpointInput {
  /** Model configuration (any JSON object; compared with assertConfigMatches on load). */
  config: object;
  /** Tokenizer as JSON (e.g. `tokenizer.toJSON()`; an object with toJSON is serialised the same way). */
  tokenizer: unknown;
  /** Training state (any JSON object). `state.step`, when a non-negative integer, names the files. */
  state: object;
  weights: Readonly<Record<string, NamedTensor>>;
  optimizer?: Readonly<Record<string, NamedTensor>>;
}

export interface LoadedCheckpoint {
  config: Record<string, unknown>;
  tokenizer: unknown;
  state: Record<string, unknown>;
  weights: Record<string, NamedTensor>;
  /** Present only when asked for with withOptimizer and the checkpoint has optimizer state. */
  optimizer?: Record<string, NamedTensor>;
}

export interface TensorSummary {
  name: string;
  dtype: DType;
  shape: number[];
}

export interface CheckpointInfo extends Omit<CheckpointManifest, 'format'> {
  dir: string;
  /** Weight tensors, read from the safetensors header only. */
  tensors: TensorSummary[];
  /** Total number of weight elements. */
  parameterCount: number;
}

const VERSIONED = /^(model|optimizer)-\d+(-r\d+)?\.safetensors$/;

function sha256(chunks: readonly Uint8Array[]): string {
  const h = createHash('sha256');
  for (const c of chunks) h.update(c);
  return h.digest('hex');
}

function stepOf(state: object): number {
  const s = (state as { step?: unknown }).step;
  return typeof s === 'number' && Number.isSafeInteger(s) && s >= 0 ? s : 0;
}

/** Round-trips a value through JSON (calls toJSON, drops undefined) and checks it is an object. */
function jsonObject(value: object, what: string): Record<string, unknown> {
  const v: unknown = JSON.parse(JSON.stringify(value));
  if (v === null || typeof v !== 'object' || Array.isArray(v))
    throw new TypeError(`checkpoint ${what} must be a JSON object`);
  return v as Record<string, unknown>;
}

function chooseName(kind: 'model' | 'optimizer', step: number, taken: ReadonlySet<string>): string {
  let name = `${kind}-${step}.safetensors`;
  for (let k = 1; taken.has(name); k++) name = `${kind}-${step}-r${k}.safetensors`;
  return name;
}

/** Reads the current manifest if there is a valid one, for name choice and cleanup (never throws). */
async function currentManifestOrNull(dir: string): Promise<CheckpointManifest | null> {
  try {
    return parseManifest(
      await readJsonFile(path.join(dir, CHECKPOINT_FILE), 'checkpoint config'),
      path.join(dir, CHECKPOINT_FILE),
    );
  } catch {
    return null;
  }
}

/**
 * Saves a checkpoint into `dir` (created if needed), replacing the one there crash-safely.
 * Returns the manifest written to checkpoint.json.
 */
export async function saveCheckpoint(dir: string, input: SaveCheckpointInput): Promise<CheckpointManifest> {
  await fsp.mkdir(dir, { recursive: true });
  const previous = await currentManifestOrNull(dir);
  const taken = new Set<string>();
  if (previous) {
    taken.add(previous.files.weights.name);
    if (previous.files.optimizer) taken.add(previous.files.optimizer.name);
  }
  const step = stepOf(input.state);
  const meta = { format: CHECKPOINT_FORMAT, step: String(step) };

  // 1. The versioned data files, each atomically. checkpoint.json does not reference them yet.
  const writeData = async (
    kind: 'model' | 'optimizer',
    tensors: Readonly<Record<string, NamedTensor>>,
  ): Promise<FileRef> => {
    const chunks = encodeSafetensors(tensors, { ...meta, kind: kind === 'model' ? 'weights' : 'optimizer' });
    const name = chooseName(kind, step, taken);
    taken.add(name);
    await writeFileAtomic(path.join(dir, name), chunks);
    return { name, bytes: chunks.reduce((s, c) => s + c.byteLength, 0), sha256: sha256(chunks) };
  };
  const weights = await writeData('model', input.weights);
  const optimizer = input.optimizer ? await writeData('optimizer', input.optimizer) : null;

  // 2. The commit point.
  const manifest: CheckpointManifest = {
    format: CHECKPOINT_FORMAT,
    version: CHECKPOINT_VERSION,
    savedAt: new Date().toISOString(),
    step,
    config: jsonObject(input.config, 'config'),
    tokenizer: JSON.parse(JSON.stringify(input.tokenizer ?? null)) as unknown,
    state: jsonObject(input.state, 'state'),
    files: { weights, optimizer },
  };
  await writeFileAtomic(path.join(dir, CHECKPOINT_FILE), JSON.stringify(manifest, null, 2) + '\n');

  // 3. Cleanup: superseded versioned files and leftovers of interrupted saves.
  const keep = new Set([weights.name, ...(optimizer ? [optimizer.name] : [])]);
  const entries = await fsp.readdir(dir).catch(() => [] as string[]);
  await Promise.all(
    entries
      .filter((n) => (VERSIONED.test(n) && !keep.has(n)) || isTempName(n))
      .map((n) => fsp.rm(path.join(dir, n), { force: true }).catch(() => undefined)),
  );
  return manifest;
}

function parseFileRef(v: unknown): FileRef | null {
  const r = v as Partial<FileRef> | null;
  if (
    r === null ||
    typeof r !== 'object' ||
    typeof r.name !== 'string' ||
    !VERSIONED.test(r.name) ||
    typeof r.bytes !== 'number' ||
    !Number.isSafeInteger(r.bytes) ||
    r.bytes < 0 ||
    typeof r.sha256 !== 'string' ||
    !/^[0-9a-f]{64}$/.test(r.sha256)
  ) {
    return null;
  }
  return { name: r.name, bytes: r.bytes, sha256: r.sha256 };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Validates the structure of a parsed checkpoint.json. */
function parseManifest(json: unknown, file: string): CheckpointManifest {
  const bad = (what: string): UserError => new UserError(`${file}: ${what}`);
  if (!isObject(json) || json.format !== CHECKPOINT_FORMAT)
    throw bad('not a rediff checkpoint (missing format "rediff-checkpoint")');
  if (typeof json.version !== 'number' || !Number.isInteger(json.version) || json.version < 1)
    throw bad('invalid format version');
  if (json.version > CHECKPOINT_VERSION) {
    throw bad(
      `format version ${json.version} is newer than this rediff supports (${CHECKPOINT_VERSION}); upgrade rediff`,
    );
  }
  if (!isObject(json.config)) throw bad('missing or invalid "config"');
  if (!isObject(json.state)) throw bad('missing or invalid "state"');
  if (!('tokenizer' in json)) throw bad('missing "tokenizer"');
  const files = json.files;
  if (!isObject(files)) throw bad('missing or invalid "files"');
  const weights = parseFileRef(files.weights);
  if (!weights) throw bad('missing or invalid "files.weights"');
  let optimizer: FileRef | null = null;
  if (files.optimizer !== null && files.optimizer !== undefined) {
    optimizer = parseFileRef(files.optimizer);
    if (!optimizer) throw bad('invalid "files.optimizer"');
  }
  return {
    format: CHECKPOINT_FORMAT,
    version: json.version,
    savedAt: typeof json.savedAt === 'string' ? json.savedAt : '',
    step: typeof json.step === 'number' ? json.step : 0,
    config: json.config,
    tokenizer: json.tokenizer,
    state: json.state,
    files: { weights, optimizer },
  };
}

/** Reads and validates `<dir>/checkpoint.json`, with clear errors for a missing directory or file. */
export async function readManifest(dir: string): Promise<CheckpointManifest> {
  let st;
  try {
    st = await fsp.stat(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException)?.code === 'ENOENT') throw new UserError(`checkpoint not found: ${dir}`);
    throw new UserError(`cannot read checkpoint ${dir} (${describeFsError(err)})`);
  }
  if (!st.isDirectory())
    throw new UserError(`not a checkpoint directory: ${dir} (a checkpoint is a directory with ${CHECKPOINT_FILE})`);
  const file = path.join(dir, CHECKPOINT_FILE);
  let json: unknown;
  try {
    json = await readJsonFile(file, 'checkpoint config');
  } catch (err) {
    if (err instanceof UserError && /not found/.test(err.message)) {
      throw new UserError(
        `not a rediff checkpoint: ${dir} (no ${CHECKPOINT_FILE}; an interrupted first save leaves none)`,
      );
    }
    throw err;
  }
  return parseManifest(json, file);
}

/** Reads a referenced data file and checks its size and sha256 against checkpoint.json. */
async function readVerified(dir: string, ref: FileRef): Promise<Buffer> {
  const file = path.join(dir, ref.name);
  let buf: Buffer;
  try {
    buf = await fsp.readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException)?.code === 'ENOENT')
      throw new UserError(`checkpoint file missing: ${file} (listed in ${CHECKPOINT_FILE})`);
    throw new UserError(`cannot read ${file} (${describeFsError(err)})`);
  }
  if (buf.byteLength !== ref.bytes) {
    const how = buf.byteLength < ref.bytes ? 'truncated' : 'wrong size';
    throw new UserError(`${file} is ${how}: ${buf.byteLength} bytes, ${CHECKPOINT_FILE} says ${ref.bytes}`);
  }
  if (sha256([buf]) !== ref.sha256)
    throw new UserError(`${file} is corrupt: its sha256 does not match ${CHECKPOINT_FILE}`);
  return buf;
}

/**
 * Loads a checkpoint. Verifies each data file's size and sha256 before decoding it; any problem
 * gives a UserError naming the file. The optimizer file is read only with `withOptimizer: true`.
 */
export async function loadCheckpoint(dir: string, opts: { withOptimizer?: boolean } = {}): Promise<LoadedCheckpoint> {
  const m = await readManifest(dir);
  const weights = decodeSafetensors(
    await readVerified(dir, m.files.weights),
    path.join(dir, m.files.weights.name),
  ).tensors;
  const out: LoadedCheckpoint = { config: m.config, tokenizer: m.tokenizer, state: m.state, weights };
  if (opts.withOptimizer && m.files.optimizer) {
    out.optimizer = decodeSafetensors(
      await readVerified(dir, m.files.optimizer),
      path.join(dir, m.files.optimizer.name),
    ).tensors;
  }
  return out;
}

/**
 * Config, state, tokenizer and file sizes without loading the weights: checks that the files
 * exist with the recorded sizes (not their hashes) and reads the weight tensors' header.
 */
export async function readCheckpointInfo(dir: string): Promise<CheckpointInfo> {
  const m = await readManifest(dir);
  for (const ref of [m.files.weights, m.files.optimizer]) {
    if (!ref) continue;
    const file = path.join(dir, ref.name);
    let size: number;
    try {
      size = (await fsp.stat(file)).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException)?.code === 'ENOENT')
        throw new UserError(`checkpoint file missing: ${file} (listed in ${CHECKPOINT_FILE})`);
      throw new UserError(`cannot read ${file} (${describeFsError(err)})`);
    }
    if (size !== ref.bytes) {
      throw new UserError(
        `${file} is ${size < ref.bytes ? 'truncated' : 'wrong size'}: ${size} bytes, ${CHECKPOINT_FILE} says ` +
          `${ref.bytes}`,
      );
    }
  }
  const header = await readSafetensorsHeader(path.join(dir, m.files.weights.name));
  const tensors = Object.entries(header.tensors).map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape }));
  return {
    dir,
    version: m.version,
    savedAt: m.savedAt,
    step: m.step,
    config: m.config,
    tokenizer: m.tokenizer,
    state: m.state,
    files: m.files,
    tensors,
    parameterCount: tensors.reduce((s, t) => s + elementCount(t.shape), 0),
  };
}

function fmt(v: unknown): string {
  if (v === undefined) return '(absent)';
  const s = JSON.stringify(v);
  return s.length > 60 ? s.slice(0, 57) + '...' : s;
}

/** Differences between two JSON values, as dotted key paths ("" for the root). */
export function configDiff(expected: unknown, found: unknown, prefix = ''): string[] {
  if (isObject(expected) && isObject(found)) {
    const keys = [...new Set([...Object.keys(expected), ...Object.keys(found)])].sort();
    return keys.flatMap((k) => configDiff(expected[k], found[k], prefix ? `${prefix}.${k}` : k));
  }
  if (JSON.stringify(expected) === JSON.stringify(found)) return [];
  return [`${prefix || '(root)'}: expected ${fmt(expected)}, found ${fmt(found)}`];
}

/**
 * Throws a UserError naming `file` and listing every differing key (nested keys dotted), e.g.
 * "runs/a/checkpoint.json: config does not match the model: layers: expected 4, found 2; width: ...".
 */
export function assertConfigMatches(expected: object, found: object, file: string): void {
  const diffs = configDiff(JSON.parse(JSON.stringify(expected)), JSON.parse(JSON.stringify(found)));
  if (diffs.length === 0) return;
  const shown = diffs.slice(0, 12).join('; ') + (diffs.length > 12 ? `; and ${diffs.length - 12} more` : '');
  throw new UserError(`${file}: config does not match the model: ${shown}`);
}
