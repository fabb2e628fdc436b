/**
 * Resumable review runs: `reviewAll` asks an expert about many drafts with bounded
 * concurrency and appends every answer to a JSONL cache the moment it arrives, so a crash or
 * Ctrl-C loses nothing and a rerun asks only for the drafts still without an answer.
 *
 * Cache file: one JSON object per line (a later line for the same id overrides an earlier one):
 *   {"id": "...", "expert": "llm:o4-mini", "at": "2025-01-01T00:00:00.000Z",
 *    "draft": "...", "raw": "<answer text or null>", "answer": {"kind": "pairs", "pairs": [...]}}
 * Each line is written with a single append and then fsynced. A last line cut off by a crash
 * is ignored with a warning (and cut from the file before appending). `error` answers are
 * written too, for the record, but do not count as answered: a rerun asks again. An answer
 * cached for a different draft text under the same id is stale and asked again. A cache
 * written by a different expert (name) is refused.
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { describeFsError } from '../util/atomic.js';
import { UserError } from '../util/errors.js';
import { redactDeep, redactSecrets } from '../util/redact.js';
import { abortReason } from '../util/semaphore.js';
import { isSettled, withoutRaw, type Expert, type ReviewAnswer, type ReviewRequest } from './expert.js';
import { filterPairs, ReviewStats } from './pairs.js';

export interface CachedAnswer {
  id: string;
  expert: string;
  /** ISO time the answer arrived. */
  at: string;
  /** The draft the answer is about (a changed draft under the same id makes the answer stale). */
  draft: string;
  /** The expert's answer text, or null (e.g. the grounded expert has none). */
  raw: string | null;
  answer: ReviewAnswer;
}

export interface CacheContents {
  /** Last valid line per id. */
  entries: Map<string, CachedAnswer>;
  /** Lines that could not be read (excluding a truncated last line). */
  badLines: number;
  /** True when the last line was cut off (no final newline and not valid JSON). */
  truncatedTail: boolean;
  /** Byte length of the file up to the end of its last complete line. */
  completeBytes: number;
  /** True when the file ends in a valid line without its newline. */
  missingFinalNewline: boolean;
}

const ANSWER_KINDS = new Set(['right', 'pairs', 'malformed', 'error']);

function asCachedAnswer(v: unknown): CachedAnswer | undefined {
  const o = v as Partial<CachedAnswer> | null;
  if (!o || typeof o !== 'object') return undefined;
  if (typeof o.id !== 'string' || typeof o.expert !== 'string' || typeof o.draft !== 'string') return undefined;
  const a = o.answer as { kind?: unknown; pairs?: unknown } | undefined;
  if (!a || typeof a !== 'object' || !ANSWER_KINDS.has(a.kind as string)) return undefined;
  if (a.kind === 'pairs' && !Array.isArray(a.pairs)) return undefined;
  const raw = typeof o.raw === 'string' ? o.raw : null;
  const answer = { ...(o.answer as ReviewAnswer) };
  if (raw !== null && answer.kind !== 'malformed') answer.raw = raw;
  return { id: o.id, expert: o.expert, at: typeof o.at === 'string' ? o.at : '', draft: o.draft, raw, answer };
}

/** Reads a cache file; a missing file is an empty cache. Never throws on bad lines. */
export async function readAnswerCache(file: string): Promise<CacheContents> {
  let buf: Buffer;
  try {
    buf = await fsp.readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      return { entries: new Map(), badLines: 0, truncatedTail: false, completeBytes: 0, missingFinalNewline: false };
    }
    throw new UserError(`cannot read expert answer cache: ${file} (${describeFsError(err)})`);
  }
  const entries = new Map<string, CachedAnswer>();
  let badLines = 0;
  let truncatedTail = false;
  let missingFinalNewline = false;
  const lastNl = buf.lastIndexOf(0x0a);
  const completeBytes = lastNl + 1;
  const parseLine = (line: string): CachedAnswer | undefined => {
    try {
      return asCachedAnswer(JSON.parse(line));
    } catch {
      return undefined;
    }
  };
  for (const line of buf.subarray(0, completeBytes).toString('utf8').split('\n')) {
    if (line.trim() === '') continue;
    const e = parseLine(line);
    if (e) entries.set(e.id, e);
    else badLines++;
  }
  const tail = buf.subarray(completeBytes).toString('utf8');
  if (tail.trim() !== '') {
    const e = parseLine(tail);
    if (e) {
      entries.set(e.id, e);
      missingFinalNewline = true;
    } else truncatedTail = true;
  }
  return { entries, badLines, truncatedTail, completeBytes, missingFinalNewline };
}

/** Appends cache lines one at a time, in order, each with one write and (by default) an fsync. */
export class AnswerCacheWriter {
  private tail: Promise<void> = Promise.resolve();
  private closed = false;

  private constructor(
    private readonly fh: fsp.FileHandle,
    readonly file: string,
    private readonly sync: boolean,
  ) {}

  /**
   * Opens `file` for appending (creating it and its directory). `repair` comes from
   * readAnswerCache: a truncated last line is cut off, a missing final newline is added.
   */
  static async open(
    file: string,
    repair?: Pick<CacheContents, 'truncatedTail' | 'completeBytes' | 'missingFinalNewline'>,
    sync = true,
  ): Promise<AnswerCacheWriter> {
    try {
      await fsp.mkdir(path.dirname(path.resolve(file)), { recursive: true });
      if (repair?.truncatedTail) await fsp.truncate(file, repair.completeBytes);
      const fh = await fsp.open(file, 'a');
      const w = new AnswerCacheWriter(fh, file, sync);
      if (repair?.missingFinalNewline && !repair.truncatedTail) await w.writeRaw('\n');
      return w;
    } catch (err) {
      if (err instanceof UserError) throw err;
      throw new UserError(`cannot write expert answer cache: ${file} (${describeFsError(err)})`);
    }
  }

  private async writeRaw(text: string): Promise<void> {
    const bytes = Buffer.from(text, 'utf8');
    let off = 0;
    while (off < bytes.byteLength) {
      const { bytesWritten } = await this.fh.write(bytes, off, bytes.byteLength - off);
      off += bytesWritten;
    }
    if (this.sync) await this.fh.datasync();
  }

  /** Appends one entry; resolves once it is on disk. Calls are serialised. */
  append(entry: CachedAnswer): Promise<void> {
    if (this.closed) return Promise.reject(new Error('answer cache is closed'));
    // What the expert said is redacted (an error may echo the key, whatever the expert); the
    // draft is ours and is kept exact, since a rerun compares it.
    const line =
      JSON.stringify({
        id: entry.id,
        expert: entry.expert,
        at: entry.at,
        draft: entry.draft,
        raw: entry.raw === null ? null : redactSecrets(entry.raw),
        answer: redactDeep(withoutRaw(entry.answer)),
      }) + '\n';
    const p = this.tail.then(() => this.writeRaw(line));
    this.tail = p.catch(() => undefined);
    return p.catch((err: unknown) => {
      throw new UserError(`cannot append to expert answer cache: ${this.file} (${describeFsError(err)})`);
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.tail;
    await this.fh.close();
  }
}

export interface ReviewProgress {
  /** Requests with a final answer so far (cached ones included). */
  done: number;
  total: number;
  /** Answers taken from the cache. */
  fromCache: number;
  stats: ReviewStats;
}

export interface ReviewAllOptions {
  /** JSONL answer cache; without it nothing is persisted. */
  cacheFile?: string;
  /** Reviews in flight at once. Default: expert.concurrency, else 4. */
  concurrency?: number;
  /** Called once after the cache is read and after every answer. */
  onProgress?: (p: ReviewProgress) => void;
  /**
   * Aborting stops new requests, cancels those in flight and rejects with the signal's reason (answers written so far
   * stay in the cache).
   */
  signal?: AbortSignal;
  /** When given, every `pairs` answer is run through filterPairs and the stats count kept / dropped pairs. */
  tokenizer?: Tokenizer;
  /**
   * Stop (UserError) after this many `error` answers in a row, e.g. a wrong key or a dead server. 0 = never. Default
   * 10.
   */
  maxConsecutiveErrors?: number;
  /** Warnings (truncated cache line, stale answers). Default: console.warn. */
  warn?: (message: string) => void;
  /** fsync after every line. Default true. */
  sync?: boolean;
}

export interface ReviewAllResult {
  /** One answer per request id; `error` answers included (they are asked again next run). */
  answers: Map<string, ReviewAnswer>;
  stats: ReviewStats;
  /** Requests sent to the expert in this run. */
  asked: number;
  /** Answers taken from the cache. */
  fromCache: number;
}

function isAbort(err: unknown, signal?: AbortSignal): boolean {
  return signal?.aborted === true || (err as { name?: string })?.name === 'AbortError';
}

/**
 * Reviews every request, reusing cached answers, and appends each new answer to the cache as
 * soon as it arrives. See the file comment for the cache's rules.
 */
export async function reviewAll(
  expert: Expert,
  requests: readonly ReviewRequest[],
  options: ReviewAllOptions = {},
): Promise<ReviewAllResult> {
  const warn = options.warn ?? ((m: string) => console.warn(`warning: ${redactSecrets(m)}`));
  const concurrency = options.concurrency ?? expert.concurrency ?? 4;
  if (!Number.isInteger(concurrency) || concurrency < 1)
    throw new UserError(`review concurrency must be an integer >= 1, got ${concurrency}`);
  const signal = options.signal;
  checkUniqueIds(requests);
  const answers = new Answers(options.tokenizer);
  const cached = options.cacheFile
    ? await cachedAnswers(expert, requests, options.cacheFile, answers, warn)
    : { contents: undefined, pending: [...requests], fromCache: 0 };
  const { pending, fromCache } = cached;
  const total = requests.length;
  const progress = (): void =>
    options.onProgress?.({ done: fromCache + answers.fresh, total, fromCache, stats: answers.stats });
  progress();
  if (pending.length === 0) return { answers: answers.byId, stats: answers.stats, asked: 0, fromCache };
  if (signal?.aborted) throw abortReason(signal);

  const writer = options.cacheFile
    ? await AnswerCacheWriter.open(options.cacheFile, cached.contents, options.sync ?? true)
    : undefined;
  const run = new ReviewRun(expert, pending, answers, writer, options.maxConsecutiveErrors ?? 10, signal, progress);
  try {
    await run.start(concurrency);
  } finally {
    await writer?.close();
  }
  if (run.failure !== undefined) throw run.failure;
  if (signal?.aborted) throw abortReason(signal);
  if (run.stopped) {
    const where = options.cacheFile ? `; answers so far are in ${options.cacheFile}, rerun to resume` : '';
    const last = `last: ${run.lastError}`;
    throw new UserError(
      redactSecrets(`expert ${expert.name} failed ${run.consecutiveErrors} times in a row (${last})${where}`),
    );
  }
  return { answers: answers.byId, stats: answers.stats, asked: run.asked, fromCache };
}

function checkUniqueIds(requests: readonly ReviewRequest[]): void {
  const seen = new Set<string>();
  for (const r of requests) {
    if (seen.has(r.id)) throw new UserError(`review requests: duplicate id ${JSON.stringify(r.id)}`);
    seen.add(r.id);
  }
}

/** The answers so far, by request id, with their stats (and the pair filter's, given a tokenizer). */
class Answers {
  readonly byId = new Map<string, ReviewAnswer>();
  readonly stats = new ReviewStats();
  /** Answers recorded from the expert in this run (not from the cache). */
  fresh = 0;
  constructor(private readonly tokenizer: Tokenizer | undefined) {}

  record(req: ReviewRequest, answer: ReviewAnswer): void {
    this.byId.set(req.id, answer);
    this.stats.recordAnswer(answer);
    if (this.tokenizer && answer.kind === 'pairs')
      this.stats.recordFilter(filterPairs(req.draft, answer.pairs, this.tokenizer));
  }
}

/** The settled cached answers to these very drafts are recorded; the other requests are pending. */
async function cachedAnswers(
  expert: Expert,
  requests: readonly ReviewRequest[],
  file: string,
  answers: Answers,
  warn: (message: string) => void,
): Promise<{ contents: CacheContents; pending: ReviewRequest[]; fromCache: number }> {
  const contents = await readAnswerCache(file);
  if (contents.truncatedTail)
    warn(`${file}: ignoring a truncated last line (an interrupted write); it will be asked again`);
  if (contents.badLines > 0) warn(`${file}: ignoring ${contents.badLines} unreadable line(s)`);
  for (const e of contents.entries.values()) {
    if (e.expert !== expert.name) {
      throw new UserError(
        `${file} holds answers from expert "${e.expert}", not "${expert.name}"; use another cache file`,
      );
    }
  }
  const pending: ReviewRequest[] = [];
  let fromCache = 0;
  let stale = 0;
  for (const req of requests) {
    const e = contents.entries.get(req.id);
    if (e && e.draft !== req.draft) stale++;
    if (e && e.draft === req.draft && isSettled(e.answer)) {
      answers.record(req, e.answer);
      fromCache++;
    } else pending.push(req);
  }
  if (stale > 0) warn(`${file}: ${stale} cached answer(s) are for a different draft under the same id; asking again`);
  return { contents, pending, fromCache };
}

/**
 * The pending requests asked of the expert by `concurrency` workers, each answer written to the
 * cache before it counts. Stops at the first failure to write, on abort, or after
 * `maxConsecutiveErrors` error answers in a row.
 */
class ReviewRun {
  private next = 0;
  asked = 0;
  consecutiveErrors = 0;
  lastError = '';
  failure: unknown;
  stopped = false;

  constructor(
    private readonly expert: Expert,
    private readonly pending: readonly ReviewRequest[],
    private readonly answers: Answers,
    private readonly writer: AnswerCacheWriter | undefined,
    private readonly maxConsecutiveErrors: number,
    private readonly signal: AbortSignal | undefined,
    private readonly progress: () => void,
  ) {}

  async start(concurrency: number): Promise<void> {
    const workers = Array.from({ length: Math.min(concurrency, this.pending.length) }, () =>
      this.worker().catch((err: unknown) => {
        this.failure ??= err;
      }),
    );
    await Promise.all(workers);
  }

  private async worker(): Promise<void> {
    while (!this.stopped && this.failure === undefined && !this.signal?.aborted && this.next < this.pending.length) {
      const req = this.pending[this.next++]!;
      this.asked++;
      const answer = await this.ask(req);
      if (answer === null) return;
      try {
        await this.writer?.append({
          id: req.id,
          expert: this.expert.name,
          at: new Date().toISOString(),
          draft: req.draft,
          raw: answer.raw ?? null,
          answer,
        });
      } catch (err) {
        this.failure ??= err;
        return;
      }
      this.answers.record(req, answer);
      this.answers.fresh++;
      if (answer.kind === 'error') {
        this.consecutiveErrors++;
        this.lastError = answer.reason;
        if (this.maxConsecutiveErrors > 0 && this.consecutiveErrors >= this.maxConsecutiveErrors) this.stopped = true;
      } else this.consecutiveErrors = 0;
      this.progress();
    }
  }

  /** The expert's answer; a thrown error is an `error` answer, an abort is null. */
  private async ask(req: ReviewRequest): Promise<ReviewAnswer | null> {
    try {
      return await this.expert.review(req, this.signal);
    } catch (err) {
      if (isAbort(err, this.signal)) return null;
      const message = String((err as Error)?.message ?? err).split('\n')[0];
      return { kind: 'error', reason: redactSecrets(`expert failed: ${message}`) };
    }
  }
}
