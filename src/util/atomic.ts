import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { UserError } from './errors.js';

/** What writeFileAtomic accepts: text (UTF-8), bytes, or a list of byte chunks written in order. */
export type AtomicData = string | Uint8Array | readonly Uint8Array[];

/** Name of a temporary sibling of `file`; it starts with "." and ends with ".tmp". */
export function tempPathFor(file: string): string {
  const dir = path.dirname(file);
  const base = path.basename(file);
  return path.join(dir, `.${base}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
}

/** True for names made by tempPathFor (leftovers of a process killed while writing). */
export function isTempName(name: string): boolean {
  return /^\..+\.\d+\.[0-9a-f]{8}\.tmp$/.test(name);
}

function chunksOf(data: AtomicData): readonly Uint8Array[] {
  if (typeof data === 'string') return [Buffer.from(data, 'utf8')];
  if (data instanceof Uint8Array) return [data];
  return data;
}

/** fsync a directory so that a rename inside it is durable (best effort: not all platforms allow it). */
async function syncDir(dir: string): Promise<void> {
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(dir, 'r');
    await fh.sync();
  } catch {
    // Directories cannot be opened or fsynced on some platforms (Windows); the rename is still atomic.
  } finally {
    await fh?.close().catch(() => undefined);
  }
}

/**
 * Writes `data` to `file` so that a reader (or a process killed at any moment) sees either the
 * old content or the complete new content, never a partial file: the data goes to a temporary
 * file in the same directory, is fsynced, then renamed over `file`. On any error the temporary
 * file is removed and the error rethrown; `file` is left untouched.
 */
export async function writeFileAtomic(file: string, data: AtomicData): Promise<void> {
  const tmp = tempPathFor(file);
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(tmp, 'wx', 0o644);
    for (const chunk of chunksOf(data)) {
      let off = 0;
      while (off < chunk.byteLength) {
        const { bytesWritten } = await fh.write(chunk, off, chunk.byteLength - off);
        off += bytesWritten;
      }
    }
    await fh.sync();
    await fh.close();
    fh = undefined;
    await fsp.rename(tmp, file);
  } catch (err) {
    await fh?.close().catch(() => undefined);
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  await syncDir(path.dirname(file));
}

/** Synchronous writeFileAtomic, for exit paths where awaiting is not possible. */
export function writeFileAtomicSync(file: string, data: AtomicData): void {
  const tmp = tempPathFor(file);
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, 'wx', 0o644);
    for (const chunk of chunksOf(data)) {
      let off = 0;
      while (off < chunk.byteLength) off += fs.writeSync(fd, chunk, off, chunk.byteLength - off);
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, file);
  } catch (err) {
    if (fd !== undefined) {
      try {
        fs.closeSync(fd);
      } catch {
        /* already failing */
      }
    }
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

/** One short line describing a filesystem error (no stack, no errno number). */
export function describeFsError(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  switch (e?.code) {
    case 'ENOENT':
      return 'not found';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EISDIR':
      return 'is a directory';
    case 'ENOTDIR':
      return 'a parent is not a directory';
    default:
      return e?.code ?? String((err as Error)?.message ?? err).split('\n')[0]!;
  }
}

function parseJsonText(text: string, file: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    const reason = String((err as Error).message)
      .split('\n')[0]!
      .slice(0, 120);
    throw new UserError(`${what} is not valid JSON: ${file} (${reason})`);
  }
}

/**
 * Reads and parses a JSON file. A missing or unreadable file, or text that is not JSON, gives a
 * UserError naming `what` and the file, e.g. "checkpoint config not found: runs/a/checkpoint.json".
 */
export async function readJsonFile(file: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    throw readError(err, file, what);
  }
  return parseJsonText(text, file, what);
}

/** Synchronous readJsonFile. */
export function readJsonFileSync(file: string, what: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw readError(err, file, what);
  }
  return parseJsonText(text, file, what);
}

function readError(err: unknown, file: string, what: string): UserError {
  if ((err as NodeJS.ErrnoException)?.code === 'ENOENT') return new UserError(`${what} not found: ${file}`);
  return new UserError(`cannot read ${what}: ${file} (${describeFsError(err)})`);
}
