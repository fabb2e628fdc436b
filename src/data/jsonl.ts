/**
 * JSON Lines reading and writing with line-accurate error reporting.
 *
 * Reading: every problem (a line that is not JSON, a record of the wrong shape, a missing image,
 * a word outside the vocabulary) becomes a DataIssue "file:line: message". With onError 'fail'
 * the first one is a UserError; with 'skip' the record is left out and the issue collected, so
 * a caller can print the warnings. A bad line never reaches a batch half-read.
 * Writing: records go to a temporary sibling file which is renamed into place on close, so a
 * killed run never leaves a truncated data.jsonl behind.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { tempPathFor } from '../util/atomic.js';
import { UserError } from '../util/errors.js';
import { redactSecrets } from '../util/redact.js';

export type OnError = 'skip' | 'fail';

/** Longest JSONL line read by default, in bytes (a longer one is an issue of its own). */
export const DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024;

/**
 * `text` with control characters (C0, DEL, C1, line/paragraph separators, bidi overrides)
 * written as \uXXXX escapes: a binary or hostile line quoted in a message must not move the
 * cursor, recolour or reorder the terminal it is printed on.
 */
export function escapeControl(text: string): string {
  return text.replace(
    /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

export interface DataIssue {
  file: string;
  /** 1-based line; 0 for the file as a whole. */
  line: number;
  message: string;
}

export function formatIssue(i: DataIssue): string {
  const where = escapeControl(i.file);
  return i.line > 0 ? `${where}:${i.line}: ${i.message}` : `${where}: ${i.message}`;
}

/** Collects issues, or throws on the first one when onError is 'fail'. */
export class IssueLog {
  readonly issues: DataIssue[] = [];
  constructor(readonly onError: OnError = 'fail') {
    if (onError !== 'skip' && onError !== 'fail')
      throw new UserError(`onError must be "skip" or "fail", got ${JSON.stringify(onError)}`);
  }
  report(file: string, line: number, message: string): void {
    const issue = { file, line, message: escapeControl(redactSecrets(message)) };
    if (this.onError === 'fail') throw new UserError(formatIssue(issue));
    this.issues.push(issue);
  }
}

export interface JsonlLine {
  line: number;
  value: unknown;
}

/** One line of a file: its text, or its length when it is over the limit (its text is not kept). */
type RawLine = { text: string } | { tooLong: number };

/**
 * The lines of `stream`, split on \n (a \r before it is dropped). A line over `maxBytes` is
 * not accumulated: its bytes are counted and dropped, so a huge line costs no memory (readline
 * would build it as one string and die with an uncaught RangeError past 512 MB).
 */
async function* splitLines(stream: AsyncIterable<Buffer>, maxBytes: number): AsyncGenerator<RawLine> {
  let parts: Buffer[] = [];
  let bytes = 0;
  let tooLong = false;
  const finish = (): RawLine => {
    const out: RawLine = tooLong
      ? { tooLong: bytes }
      : { text: Buffer.concat(parts).toString('utf8').replace(/\r$/, '') };
    parts = [];
    bytes = 0;
    tooLong = false;
    return out;
  };
  for await (const chunk of stream) {
    let pos = 0;
    while (pos < chunk.length) {
      const nl = chunk.indexOf(0x0a, pos);
      const end = nl < 0 ? chunk.length : nl;
      bytes += end - pos;
      if (!tooLong && bytes > maxBytes) {
        tooLong = true;
        parts = [];
      }
      if (!tooLong && end > pos) parts.push(chunk.subarray(pos, end));
      if (nl < 0) break;
      yield finish();
      pos = nl + 1;
    }
  }
  if (bytes > 0 || tooLong) yield finish();
}

export interface ReadJsonlOptions {
  /** Longest line accepted, in bytes; a longer one is reported as an issue. Default DEFAULT_MAX_LINE_BYTES. */
  maxLineBytes?: number;
}

/**
 * Parsed non-blank lines of a JSONL file, in order. Lines that are not JSON, or longer than
 * `maxLineBytes`, are reported to `log`. A missing or unreadable file is always a UserError;
 * so is a file that is one JSON array (a common mix-up with .json datasets).
 */
export async function* readJsonlLines(
  file: string,
  log: IssueLog,
  opts: ReadJsonlOptions = {},
): AsyncGenerator<JsonlLine> {
  const maxBytes = opts.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 1)
    throw new UserError(`the line limit must be a whole number of bytes >= 1, got ${maxBytes}`);
  let stream: fs.ReadStream;
  try {
    await fsp.access(file, fs.constants.R_OK);
    stream = fs.createReadStream(file);
  } catch (err) {
    throw new UserError(`${escapeControl(file)}: cannot read (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  let line = 0;
  try {
    for await (const raw of splitLines(stream as AsyncIterable<Buffer>, maxBytes)) {
      line++;
      if ('tooLong' in raw) {
        log.report(
          file,
          line,
          `line is longer than ${maxBytes} bytes (${raw.tooLong} bytes; the limit is --max-line-bytes)`,
        );
        continue;
      }
      const text = line === 1 ? raw.text.replace(/^\uFEFF/, '') : raw.text;
      if (text.trim() === '') continue;
      if (line === 1 && text.trimStart().startsWith('[')) {
        throw new UserError(
          `${escapeControl(file)}: looks like a JSON array, not JSON Lines (convert with: jq -c '.[]' ` +
            `${escapeControl(file)})`,
        );
      }
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch (err) {
        log.report(file, line, `not valid JSON (${shortJsonError(err)})`);
        continue;
      }
      if (value === null || typeof value !== 'object' || Array.isArray(value)) {
        log.report(
          file,
          line,
          `expected a JSON object, got ${Array.isArray(value) ? 'an array' : JSON.stringify(value)?.slice(0, 30)}`,
        );
        continue;
      }
      yield { line, value };
    }
  } catch (err) {
    if (err instanceof UserError) throw err;
    throw new UserError(
      `${escapeControl(file)}:${line + 1}: cannot read ` +
        `(${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
    );
  } finally {
    stream.destroy();
  }
}

function shortJsonError(err: unknown): string {
  const m = String((err as Error)?.message ?? err);
  return m.length > 80 ? m.slice(0, 77) + '...' : m;
}

/** All records of a JSONL file (see readJsonlLines). */
export async function readJsonl(file: string, log: IssueLog, opts: ReadJsonlOptions = {}): Promise<JsonlLine[]> {
  const out: JsonlLine[] = [];
  for await (const l of readJsonlLines(file, log, opts)) out.push(l);
  return out;
}

/** Streams records to `file` through a temporary sibling; `close()` renames it into place. */
export class JsonlWriter {
  private readonly temp: string;
  private readonly stream: fs.WriteStream;
  private failed: Error | null = null;
  count = 0;

  constructor(readonly file: string) {
    this.temp = tempPathFor(file);
    this.stream = fs.createWriteStream(this.temp, { encoding: 'utf8' });
    this.stream.on('error', (e) => (this.failed = e));
  }

  /** Writes one record; resolves when the stream can take more (back-pressure). */
  async write(record: unknown): Promise<void> {
    if (this.failed) throw this.failed;
    this.count++;
    if (!this.stream.write(JSON.stringify(record) + '\n')) {
      await new Promise<void>((resolve, reject) => {
        const done = (err?: Error): void => {
          this.stream.off('drain', onDrain);
          this.stream.off('error', done);
          if (err) reject(err);
          else resolve();
        };
        const onDrain = (): void => done();
        this.stream.on('drain', onDrain);
        this.stream.on('error', done);
      });
    }
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.stream.once('error', reject);
      this.stream.end(() => resolve());
    });
    if (this.failed) throw this.failed;
    await fsp.rename(this.temp, this.file);
  }

  /** Drops the temporary file (after an error). */
  async abort(): Promise<void> {
    this.stream.destroy();
    await fsp.rm(this.temp, { force: true });
  }
}
