/**
 * The main thread's side of inference: one worker thread that owns the models, a bounded
 * queue of jobs in front of it, and per-job event routing. Jobs beyond `queueLimit` waiting
 * are refused (the HTTP layer answers 503 with Retry-After); at most `concurrency` jobs run in
 * the worker at once (their forward passes interleave). Cancelling a waiting job drops it;
 * cancelling a running one stops it at its next forward pass. If the worker dies, its jobs
 * fail and a new worker is started for the next ones.
 */
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { StepTrace } from '../sampling/sampler.js';
import type { FromWorker, JobSpec, LoadedModelInfo, ToWorker, WorkerData } from './protocol.js';

export interface PoolOptions {
  models: { name: string; dir: string }[];
  /** Jobs allowed to wait for the worker (beyond the running ones). Default 8. */
  queueLimit?: number;
  /** Jobs running in the worker at once. Default 2. */
  concurrency?: number;
  /** onnxruntime intra-op threads in the worker (REDIFF_THREADS). Default: inherited / 2. */
  threads?: number;
  /** Pause before every forward pass, in ms (slow motion). Default 0. */
  stepDelayMs?: number;
}

export interface JobEvents {
  onStart?: () => void;
  onStep?: (step: StepTrace, tokens: number[]) => void;
}

export interface JobResult {
  tokens: number[];
  steps: number;
  /** Time in the worker, and from submission to the end (queueing included). */
  computeMs: number;
  totalMs: number;
}

export class JobCancelled extends Error {
  constructor() {
    super('job cancelled');
  }
}

export class JobFailed extends Error {
  constructor(
    message: string,
    /** True when the input was at fault (a 400), false for an internal error. */
    readonly user: boolean,
  ) {
    super(message);
  }
}

export interface JobHandle {
  id: number;
  result: Promise<JobResult>;
  cancel(): void;
}

/**
 * A place in the queue taken before the job exists (while its image is still being decoded),
 * so that decoding counts against the same limit as inference. `submit` (once) turns it into
 * the job; `release` gives it back, and does nothing after `submit`.
 */
export interface Reservation {
  submit(spec: JobSpec, events?: JobEvents): JobHandle;
  release(): void;
}

interface Job {
  id: number;
  spec: JobSpec;
  events: JobEvents;
  submitted: number;
  state: 'waiting' | 'running';
  resolve: (r: JobResult) => void;
  reject: (e: Error) => void;
}

interface PendingExport {
  resolve: (r: { vision: Uint8Array; language: Uint8Array; manifest: object }) => void;
  reject: (e: Error) => void;
}

/**
 * How to start the worker: the file next to this module, with this module's extension, so
 * worker.js from dist/ in production and worker.ts under tsx (tests, `node --import tsx`).
 * Node 20 does not apply `--import` loader hooks inside worker threads, so a .ts worker is
 * started through a small bootstrap that registers tsx's loader in the worker first. The
 * parent's execArgv is passed on either way.
 */
export function workerEntry(): { script: string | URL; eval: boolean; execArgv: string[] } {
  const here = fileURLToPath(import.meta.url);
  const ext = path.extname(here);
  const file = path.join(path.dirname(here), `worker${ext}`);
  const execArgv = [...process.execArgv];
  if (ext !== '.ts') return { script: pathToFileURL(file), eval: false, execArgv };
  const api = import.meta.resolve('tsx/esm/api');
  const target = pathToFileURL(file).href;
  const script =
    `import(${JSON.stringify(api)}).then((tsx) => { tsx.register(); return ` + `import(${JSON.stringify(target)}); });`;
  return { script, eval: true, execArgv };
}

export class InferencePool {
  readonly queueLimit: number;
  readonly concurrency: number;
  private worker: Worker | null = null;
  private ready: Promise<LoadedModelInfo[]> | null = null;
  private readonly waiting: Job[] = [];
  private readonly running = new Map<number, Job>();
  private readonly exports = new Map<number, PendingExport>();
  /** Places reserved for jobs whose image is being decoded. */
  private reserved = 0;
  private nextId = 1;
  private closed = false;
  /** Mean compute time of recent jobs, for Retry-After. */
  private meanJobMs = 1000;
  models: LoadedModelInfo[] = [];

  constructor(private readonly opts: PoolOptions) {
    this.queueLimit = opts.queueLimit ?? 8;
    this.concurrency = opts.concurrency ?? 2;
    if (!Number.isInteger(this.queueLimit) || this.queueLimit < 0)
      throw new RangeError(`queueLimit must be an integer >= 0, got ${this.queueLimit}`);
    if (!Number.isInteger(this.concurrency) || this.concurrency < 1)
      throw new RangeError(`concurrency must be an integer >= 1, got ${this.concurrency}`);
  }

  /** Starts the worker and waits until every model is loaded. */
  async start(): Promise<LoadedModelInfo[]> {
    this.models = await this.spawn();
    return this.models;
  }

  private spawn(): Promise<LoadedModelInfo[]> {
    const entry = workerEntry();
    const env = { ...process.env, ...(this.opts.threads ? { REDIFF_THREADS: String(this.opts.threads) } : {}) };
    const data: WorkerData = { models: this.opts.models, stepDelayMs: this.opts.stepDelayMs ?? 0 };
    const w = new Worker(entry.script, { eval: entry.eval, workerData: data, execArgv: entry.execArgv, env });
    this.worker = w;
    this.ready = new Promise<LoadedModelInfo[]>((resolve, reject) => {
      const onMessage = (msg: FromWorker): void => {
        if (msg.type === 'ready') resolve(msg.models);
        else if (msg.type === 'fatal') reject(new Error(msg.message));
        else this.route(msg);
      };
      w.on('message', onMessage);
      w.on('error', (e) => {
        reject(e);
        this.workerDied(w, e.message);
      });
      w.on('exit', (code) => {
        reject(new Error(`inference worker exited with code ${code} while loading`));
        this.workerDied(w, `inference worker exited with code ${code}`);
      });
    });
    return this.ready;
  }

  private workerDied(w: Worker, why: string): void {
    if (this.worker !== w) return;
    this.worker = null;
    this.ready = null;
    for (const job of this.running.values()) job.reject(new JobFailed(why, false));
    this.running.clear();
    for (const e of this.exports.values()) e.reject(new Error(why));
    this.exports.clear();
    if (!this.closed && this.waiting.length > 0) {
      this.spawn().then(
        () => this.pump(),
        (e: Error) => this.failWaiting(e.message),
      );
    }
  }

  private failWaiting(why: string): void {
    for (const job of this.waiting.splice(0)) job.reject(new JobFailed(why, false));
  }

  private post(msg: ToWorker, transfer: ArrayBuffer[] = []): void {
    this.worker?.postMessage(msg, transfer);
  }

  private route(msg: FromWorker): void {
    if (msg.type === 'exported') {
      const e = this.exports.get(msg.id);
      this.exports.delete(msg.id);
      e?.resolve({ vision: msg.vision, language: msg.language, manifest: msg.manifest });
      return;
    }
    if (msg.type === 'failed' && this.exports.has(msg.id)) {
      const e = this.exports.get(msg.id)!;
      this.exports.delete(msg.id);
      e.reject(new JobFailed(msg.message, msg.user));
      return;
    }
    if (msg.type === 'ready' || msg.type === 'fatal') return;
    const job = this.running.get(msg.id);
    if (!job) return;
    switch (msg.type) {
      case 'started':
        job.events.onStart?.();
        return;
      case 'step':
        job.events.onStep?.(msg.step, msg.tokens);
        return;
      case 'done': {
        this.running.delete(job.id);
        this.meanJobMs = 0.8 * this.meanJobMs + 0.2 * msg.ms;
        job.resolve({
          tokens: msg.tokens,
          steps: msg.steps,
          computeMs: msg.ms,
          totalMs: performance.now() - job.submitted,
        });
        break;
      }
      case 'cancelled':
        this.running.delete(job.id);
        job.reject(new JobCancelled());
        break;
      case 'failed':
        this.running.delete(job.id);
        job.reject(new JobFailed(msg.message, msg.user));
        break;
    }
    this.pump();
  }

  private pump(): void {
    if (!this.worker || this.closed) return;
    while (this.running.size < this.concurrency && this.waiting.length > 0) {
      const job = this.waiting.shift()!;
      job.state = 'running';
      this.running.set(job.id, job);
      const image = job.spec.image;
      this.post({ type: 'job', id: job.id, job: job.spec }, [image.buffer as ArrayBuffer]);
    }
  }

  /** Whether a new job would be admitted now. */
  get full(): boolean {
    return this.reserved + this.waiting.length + this.running.size >= this.queueLimit + this.concurrency;
  }

  /** Seconds a refused client should wait: roughly the time to drain what is queued. */
  retryAfterSeconds(): number {
    const ahead = this.reserved + this.waiting.length + this.running.size;
    return Math.max(1, Math.ceil((this.meanJobMs * ahead) / this.concurrency / 1000));
  }

  stats(): { running: number; waiting: number; reserved: number; queueLimit: number; concurrency: number } {
    return {
      running: this.running.size,
      waiting: this.waiting.length,
      reserved: this.reserved,
      queueLimit: this.queueLimit,
      concurrency: this.concurrency,
    };
  }

  /** Takes a place in the queue for a job still to be built; null when the queue is full. */
  reserve(): Reservation | null {
    if (this.closed) throw new Error('inference pool is closed');
    if (this.full) return null;
    this.reserved++;
    let open = true;
    const give = (): boolean => {
      if (!open) return false;
      open = false;
      this.reserved--;
      return true;
    };
    return {
      submit: (spec, events = {}) => {
        if (!give()) throw new Error('reservation already used');
        return this.enqueue(spec, events);
      },
      release: () => {
        give();
      },
    };
  }

  /** Queues a job; null when the queue is full. The image buffer is transferred to the worker. */
  submit(spec: JobSpec, events: JobEvents = {}): JobHandle | null {
    if (this.closed) throw new Error('inference pool is closed');
    if (this.full) return null;
    return this.enqueue(spec, events);
  }

  private enqueue(spec: JobSpec, events: JobEvents): JobHandle {
    if (this.closed) throw new Error('inference pool is closed');
    const id = this.nextId++;
    let job!: Job;
    const result = new Promise<JobResult>((resolve, reject) => {
      job = { id, spec, events, submitted: performance.now(), state: 'waiting', resolve, reject };
    });
    this.waiting.push(job);
    if (!this.worker && !this.ready) {
      this.spawn().then(
        () => this.pump(),
        (e: Error) => this.failWaiting(e.message),
      );
    } else this.pump();
    const cancel = (): void => {
      if (job.state === 'waiting') {
        const i = this.waiting.indexOf(job);
        if (i >= 0) {
          this.waiting.splice(i, 1);
          job.reject(new JobCancelled());
        }
      } else if (this.running.has(id)) this.post({ type: 'cancel', id });
    };
    return { id, result, cancel };
  }

  /** The model's standalone ONNX export (computed in the worker). */
  exportOnnx(model: string): Promise<{ vision: Uint8Array; language: Uint8Array; manifest: object }> {
    return new Promise((resolve, reject) => {
      if (!this.worker) {
        reject(new Error('inference worker is not running'));
        return;
      }
      const id = this.nextId++;
      this.exports.set(id, { resolve, reject });
      this.post({ type: 'export', id, model });
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    this.failWaiting('server is shutting down');
    const w = this.worker;
    this.worker = null;
    for (const job of this.running.values()) job.reject(new JobFailed('server is shutting down', false));
    this.running.clear();
    if (w) await w.terminate();
  }
}
