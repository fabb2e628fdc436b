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
import * as readline from 'node:readline';
import { tempPathFor } from '../util/atomic.js';
import { UserError } from '../util/errors.js';

export type OnError = 'skip' | 'fail';

export interface DataIssue {
  file: string;
  /** 1-based line; 0 for the file as a whole. */
  line: number;
  message: string;
}

export function formatIssue(i: DataIssue): string {
  return i.line > 0 ? `${i.file}:${i.line}: ${i.message}` : `${i.file}: ${i.message}`;
}

/** Collects issues, or throws on the first one when onError is 'fail'. */
export class IssueLog {
  readonly issues: DataIssue[] = [];
  constructor(readonly onError: OnError = 'fail') {
    if (onError !== 'skip' && onError !== 'fail') throw new UserError(`onError must be "skip" or "fail", got ${JSON.stringify(onError)}`);
  }
  report(file: string, line: number, message: string): void {
    const issue = { file, line, message };
    if (this.onError === 'fail') throw new UserError(formatIssue(issue));
    this.issues.push(issue);
  }
}

export interface JsonlLine {
  line: number;
  value: unknown;
}

/**
 * Parsed non-blank lines of a JSONL file, in order. Lines that are not JSON are reported to
 * `log`. A missing or unreadable file is always a UserError; so is a file that is one JSON
 * array (a common mix-up with .json datasets).
 */
export async function* readJsonlLines(file: string, log: IssueLog): AsyncGenerator<JsonlLine> {
  let stream: fs.ReadStream;
  try {
    await fsp.access(file, fs.constants.R_OK);
    stream = fs.createReadStream(file, { encoding: 'utf8' });
  } catch (err) {
    throw new UserError(`${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  const rl = readline.createInterface({ input: stream, crlfDelay: Infinity });
  let line = 0;
  try {
    for await (const raw of rl) {
      line++;
      const text = line === 1 ? raw.replace(/^\uFEFF/, '') : raw;
      if (text.trim() === '') continue;
      if (line === 1 && text.trimStart().startsWith('[')) {
        throw new UserError(`${file}: looks like a JSON array, not JSON Lines (convert with: jq -c '.[]' ${file})`);
      }
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch (err) {
        log.report(file, line, `not valid JSON (${shortJsonError(err)})`);
        continue;
      }
      if (value === null || typeof value !== 'object' || Array.isArray(value)) {
        log.report(file, line, `expected a JSON object, got ${Array.isArray(value) ? 'an array' : JSON.stringify(value)?.slice(0, 30)}`);
        continue;
      }
      yield { line, value };
    }
  } finally {
    rl.close();
    stream.destroy();
  }
}

function shortJsonError(err: unknown): string {
  const m = String((err as Error)?.message ?? err);
  return m.length > 80 ? m.slice(0, 77) + '...' : m;
}

/** All records of a JSONL file (see readJsonlLines). */
export async function readJsonl(file: string, log: IssueLog): Promise<JsonlLine[]> {
  const out: JsonlLine[] = [];
  for await (const l of readJsonlLines(file, log)) out.push(l);
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
