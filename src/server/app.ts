/**
 * The HTTP server: the captioning API, the page, and the files the page's in-browser mode
 * needs (each model exported to ONNX, onnxruntime-web's wasm). Model inference runs in a
 * worker thread (pool.ts); this thread only parses, validates, decodes images (sharp works on
 * libuv's thread pool) and streams.
 *
 *   GET  /                          the page
 *   GET  /v1/models                 loaded models, samplers, limits, queue
 *   POST /v1/captions               caption an image (JSON or SSE stream)
 *   GET  /v1/models/:name/tokenizer.json   the model's tokenizer (the page decodes with it)
 *   GET  /v1/models/:name/onnx/:f   vision.onnx, language.onnx, model.json (in-browser mode)
 *   GET  /ort/:file                 onnxruntime-web's browser files
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import multipart from '@fastify/multipart';
import sharp from 'sharp';
import { type ImageOptions, ImageTooLarge, decodeImageBuffer } from '../data/image.js';
import { SAMPLER_NAMES, type StepTrace } from '../sampling/sampler.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { tokenizerFromJSON } from '../tokenizer/kinds.js';
import { UserError } from '../util/errors.js';
import { redactSecrets } from '../util/redact.js';
import { Semaphore, abortReason } from '../util/semaphore.js';
import { type Asset, ORT_FILES, loadWebAssets, ortWebDir } from './assets.js';
import { InferencePool, type JobHandle, JobCancelled, JobFailed, type JobResult, type Reservation } from './pool.js';
import type { JobSpec, LoadedModelInfo } from './protocol.js';
import {
  type CaptionRequest,
  HttpError,
  type ModelView,
  readCaptionRequest,
  validateCaptionRequest,
} from './request.js';

export interface ServerOptions {
  /** Models to load, by name (the page shows "baseline" and "rediff"). */
  models: { name: string; dir: string }[];
  /** Largest accepted image upload, in bytes. Default 5 MiB. */
  maxUploadBytes?: number;
  /** Jobs that may wait for the worker; more get 503. Default 8. */
  queueLimit?: number;
  /** Jobs running in the worker at once. Default 2. */
  concurrency?: number;
  /** onnxruntime threads in the worker. */
  threads?: number;
  /** Pause before every forward pass, in ms: slow motion to watch the refinement. Default 0. */
  stepDelayMs?: number;
  /** Where the page comes from (see assets.ts). Default 'auto'. */
  web?: 'auto' | 'build' | 'prebuilt' | 'none';
  /** Largest image accepted, width x height, read from its header before decoding. Default 25,000,000. */
  maxPixels?: number;
  /** Images decoded at once; more wait (holding their place in the queue). Default 2. */
  decodeConcurrency?: number;
  /**
   * Time for a client to send a whole request, headers and body, in ms (Node's requestTimeout);
   * then 408 and the connection is closed. 0 = none. Default 30,000.
   */
  requestTimeoutMs?: number;
  /** A connection silent this long in either direction is closed, in ms (Fastify's connectionTimeout). 0 = never. Default 120,000. */
  idleTimeoutMs?: number;
  /** An idle keep-alive connection is closed after this long, in ms. Default 5,000. */
  keepAliveTimeoutMs?: number;
  /** Replaces the image decoder (tests hold a decode open with it). */
  decoder?: ImageDecoder;
  /** Fastify request logging. Default false. */
  logger?: boolean;
}

export type ImageDecoder = (image: Buffer, size: number, name: string, opts: ImageOptions) => Promise<Float32Array>;

export const SERVER_DEFAULTS = {
  maxUploadBytes: 5 * 1024 * 1024,
  maxPixels: 25_000_000,
  decodeConcurrency: 2,
  requestTimeoutMs: 30_000,
  idleTimeoutMs: 120_000,
  keepAliveTimeoutMs: 5_000,
} as const;

export interface RediffServer {
  app: FastifyInstance;
  pool: InferencePool;
  models: LoadedModelInfo[];
  /** Starts listening (default 127.0.0.1, port 0 = any free port); returns the base URL. */
  listen(port?: number, host?: string): Promise<string>;
  close(): Promise<void>;
}

/** The sampler a model is shown with unless the request names one. */
export function defaultSamplerFor(name: string): string {
  return name === 'baseline' ? 'llada' : 'rediff';
}

interface Counters {
  completed: number;
  cancelled: number;
  failed: number;
  refused: number;
}

function tokenPiece(tok: Tokenizer, id: number): string {
  return tok.pieces([id])[0] ?? '';
}

/** The SSE `step` payload: 1-based step number, the step's commits and refinements, the running state. */
function stepEvent(view: ModelView, step: StepTrace, tokens: number[]) {
  const tok = view.tokenizer;
  return {
    step: step.step + 1,
    committed: step.committed.map((c) => ({ pos: c.pos, token: c.token, text: tokenPiece(tok, c.token) })),
    refined: step.refined.map((r) => ({
      pos: r.pos,
      from: r.from,
      to: r.to,
      from_text: tokenPiece(tok, r.from),
      to_text: tokenPiece(tok, r.to),
    })),
    tokens,
    caption: tok.decode(tokens),
  };
}

function resultBody(r: CaptionRequest, res: JobResult) {
  return {
    model: r.model.name,
    sampler: r.sampler,
    caption: r.model.tokenizer.decode(res.tokens),
    tokens: res.tokens,
    steps: res.steps,
    max_steps: r.steps,
    tokens_per_step: r.tokensPerStep,
    ms: Math.round(res.totalMs * 10) / 10,
    compute_ms: Math.round(res.computeMs * 10) / 10,
  };
}

/** `p`, or a rejection as soon as `signal` aborts (`p` then runs on, its outcome ignored). */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    p.catch(() => undefined);
    return Promise.reject(abortReason(signal));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(abortReason(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** One SSE event; with a null event, a comment line (a keep-alive). */
function sse(reply: FastifyReply, event: string | null, data: unknown): void {
  if (reply.raw.writableEnded || reply.raw.destroyed) return;
  reply.raw.write(event === null ? ': waiting\n\n' : `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
}

export async function createServer(opts: ServerOptions): Promise<RediffServer> {
  if (opts.models.length === 0) throw new UserError('no models to serve');
  const names = new Set<string>();
  for (const m of opts.models) {
    if (!/^[A-Za-z0-9_.-]+$/.test(m.name))
      throw new UserError(`bad model name "${m.name}" (letters, digits, . _ - only)`);
    if (names.has(m.name)) throw new UserError(`model name "${m.name}" given twice`);
    names.add(m.name);
  }
  const maxUploadBytes = opts.maxUploadBytes ?? SERVER_DEFAULTS.maxUploadBytes;
  const maxPixels = opts.maxPixels ?? SERVER_DEFAULTS.maxPixels;
  const requestTimeoutMs = opts.requestTimeoutMs ?? SERVER_DEFAULTS.requestTimeoutMs;
  const idleTimeoutMs = opts.idleTimeoutMs ?? SERVER_DEFAULTS.idleTimeoutMs;
  const keepAliveTimeoutMs = opts.keepAliveTimeoutMs ?? SERVER_DEFAULTS.keepAliveTimeoutMs;
  for (const [k, v] of Object.entries({ maxPixels, requestTimeoutMs, idleTimeoutMs, keepAliveTimeoutMs })) {
    if (!Number.isSafeInteger(v) || v < (k === 'maxPixels' ? 1 : 0))
      throw new RangeError(`${k} must be a whole number >= ${k === 'maxPixels' ? 1 : 0}, got ${v}`);
  }
  const decoding = new Semaphore(opts.decodeConcurrency ?? SERVER_DEFAULTS.decodeConcurrency);
  const decode = opts.decoder ?? decodeImageBuffer;
  // libvips' operation cache only helps when the same input is processed again, which uploads
  // never are; without it, the memory of a burst of decodes is given back.
  sharp.cache(false);
  const pool = new InferencePool({
    models: opts.models,
    ...(opts.queueLimit !== undefined ? { queueLimit: opts.queueLimit } : {}),
    ...(opts.concurrency !== undefined ? { concurrency: opts.concurrency } : {}),
    ...(opts.threads !== undefined ? { threads: opts.threads } : {}),
    ...(opts.stepDelayMs !== undefined ? { stepDelayMs: opts.stepDelayMs } : {}),
  });
  const [loaded, assets] = await Promise.all([
    pool.start().catch((e: Error) => {
      throw new UserError(`could not load the models: ${e.message}`);
    }),
    opts.web === 'none' ? Promise.resolve(new Map<string, Asset>()) : loadWebAssets(opts.web ?? 'auto'),
  ]).catch(async (e: unknown) => {
    await pool.close();
    throw e;
  });

  const views = new Map<string, ModelView>();
  for (const m of loaded) {
    views.set(m.name, {
      name: m.name,
      config: m.config,
      tokenizer: tokenizerFromJSON(m.tokenizer, `${m.dir}: tokenizer`),
      prompt: m.prompt,
      defaultSampler: defaultSamplerFor(m.name),
    });
  }
  const defaultModel = views.has('rediff') ? 'rediff' : loaded[0]!.name;
  const counters: Counters = { completed: 0, cancelled: 0, failed: 0, refused: 0 };
  const exportCache = new Map<string, Promise<{ vision: Uint8Array; language: Uint8Array; manifest: object }>>();
  const ortDir = ortWebDir();

  const bodyLimit = Math.ceil((maxUploadBytes * 4) / 3) + 64 * 1024;
  const app = Fastify({
    // Logged request lines and errors go through redactSecrets: a query string or an error
    // message may carry a key.
    logger: opts.logger
      ? {
          serializers: {
            req: (r: FastifyRequest) => ({ method: r.method, url: redactSecrets(r.url), remoteAddress: r.ip }),
            err: (e: Error) => ({
              type: e.name,
              message: redactSecrets(e.message),
              stack: redactSecrets(e.stack ?? ''),
            }),
          },
        }
      : false,
    // JSON bodies carry the image as base64 (4/3 the size) plus a few fields.
    bodyLimit,
    // A client that never finishes sending (slowloris) is cut off, as is a silent connection
    // and an idle keep-alive one: without these, each holds a socket and its buffers forever.
    requestTimeout: requestTimeoutMs,
    connectionTimeout: idleTimeoutMs,
    keepAliveTimeout: keepAliveTimeoutMs,
    http: {
      // Node checks request deadlines every connectionsCheckingInterval (30 s by default), so a
      // short timeout needs a shorter interval to take effect on time.
      ...(requestTimeoutMs > 0
        ? {
            headersTimeout: requestTimeoutMs,
            connectionsCheckingInterval: Math.max(100, Math.min(30_000, Math.round(requestTimeoutMs / 4))),
          }
        : {}),
    },
  });
  await app.register(multipart, { limits: { fileSize: maxUploadBytes, files: 1 } });
  // Bodies are JSON or multipart only; anything else is a 415.
  app.removeContentTypeParser('text/plain');

  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, req, reply) => {
    if (err instanceof HttpError) {
      for (const [k, v] of Object.entries(err.headers)) reply.header(k, v);
      return reply
        .code(err.status)
        .send({ error: redactSecrets(err.message), ...(err.field ? { field: err.field } : {}) });
    }
    if (err.statusCode === 413 || err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return reply
        .code(413)
        .send({ error: `upload too large: the image may be at most ${maxUploadBytes} bytes`, field: 'image' });
    }
    if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      return reply.code(415).send({ error: 'send multipart/form-data or application/json' });
    }
    if (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500) {
      const message = redactSecrets(err.message);
      return reply.code(err.statusCode).send({
        error:
          err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || /JSON/.test(message)
            ? `body is not valid JSON: ${message}`
            : message,
      });
    }
    req.log.error(err);
    return reply.code(500).send({ error: 'internal error' });
  });
  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send({ error: `not found: ${req.method} ${req.url.split('?')[0]}` }),
  );

  // ---- the page ----
  const sendAsset = (name: string) => async (_req: FastifyRequest, reply: FastifyReply) => {
    const a = assets.get(name);
    if (!a) return reply.code(404).send({ error: 'the page is not available (server started without it)' });
    return reply.type(a.type).header('cache-control', 'no-cache').send(a.body);
  };
  app.get('/', sendAsset('index.html'));
  app.get('/index.html', sendAsset('index.html'));
  app.get('/app.js', sendAsset('app.js'));
  app.get('/style.css', sendAsset('style.css'));
  app.get<{ Params: { file: string } }>('/ort/:file', async (req, reply) => {
    const type = ORT_FILES.get(req.params.file);
    if (!type || !ortDir) return reply.code(404).send({ error: `not found: /ort/${req.params.file}` });
    const body = await fsp.readFile(path.join(ortDir, req.params.file));
    return reply.type(type).header('cache-control', 'public, max-age=86400').send(body);
  });

  // ---- the API ----
  app.get('/v1/models', async () => ({
    models: loaded.map((m) => {
      const c = m.config;
      const base = `/v1/models/${m.name}/onnx`;
      return {
        // Names and sizes only: where the checkpoint lives on the server is nobody's business.
        name: m.name,
        stage: m.stage,
        parameters: m.parameters,
        weights_bytes: m.parameters * 4, // float32
        prompt: m.prompt,
        default_sampler: defaultSamplerFor(m.name),
        image_size: c.imageSize,
        prompt_length: c.promptLength,
        response_length: c.responseLength,
        vocab_size: c.vocabSize,
        tokens_per_step: Array.from({ length: c.responseLength }, (_, i) => i + 1).filter(
          (k) => c.responseLength % k === 0,
        ),
        onnx: { manifest: `${base}/model.json`, vision: `${base}/vision.onnx`, language: `${base}/language.onnx` },
      };
    }),
    default_model: defaultModel,
    samplers: SAMPLER_NAMES,
    limits: {
      max_upload_bytes: maxUploadBytes,
      max_body_bytes: bodyLimit,
      max_pixels: maxPixels,
      queue_limit: pool.queueLimit,
      concurrency: pool.concurrency,
      decode_concurrency: decoding.limit,
      request_timeout_ms: requestTimeoutMs,
      idle_timeout_ms: idleTimeoutMs,
      keep_alive_timeout_ms: keepAliveTimeoutMs,
    },
    queue: { ...queueStats(), ...counters },
  }));

  app.get<{ Params: { name: string } }>('/v1/models/:name/tokenizer.json', async (req) => {
    const m = loaded.find((x) => x.name === req.params.name);
    if (!m) throw new HttpError(404, `unknown model ${JSON.stringify(req.params.name)}`, 'model');
    return m.tokenizer;
  });

  app.get<{ Params: { name: string; file: string } }>('/v1/models/:name/onnx/:file', async (req, reply) => {
    const { name, file } = req.params;
    if (!views.has(name)) throw new HttpError(404, `unknown model ${JSON.stringify(name)}`, 'model');
    if (!['vision.onnx', 'language.onnx', 'model.json'].includes(file))
      throw new HttpError(404, `not found: ${file} (vision.onnx, language.onnx, model.json)`);
    let p = exportCache.get(name);
    if (!p) {
      p = pool.exportOnnx(name);
      exportCache.set(name, p);
      p.catch(() => exportCache.delete(name));
    }
    const exp = await p;
    reply.header('cache-control', 'no-cache');
    if (file === 'model.json') return reply.type('application/json').send(exp.manifest);
    return reply.type('application/octet-stream').send(Buffer.from(file === 'vision.onnx' ? exp.vision : exp.language));
  });

  app.post('/v1/captions', async (req, reply) => {
    // Aborted when the client goes away before its answer is complete: whatever the request
    // started (a place in the queue, a decode, a job) is then given up. The response's 'close'
    // fires when the connection closes; after a complete answer `writableFinished` is set.
    const gone = new AbortController();
    const onClose = (): void => {
      if (!reply.raw.writableFinished) gone.abort();
    };
    reply.raw.on('close', onClose);
    if (req.raw.socket.destroyed) gone.abort();
    let ticket: Reservation | null = null;
    let handle: JobHandle | null = null;
    try {
      const raw = await readCaptionRequest(req, maxUploadBytes);
      const r = validateCaptionRequest(raw, views, defaultModel);
      checkGone();
      // Decoding happens under the same admission control as inference: a place in the queue
      // first (else 503), then a decoder (at most `decodeConcurrency` at once).
      ticket = pool.reserve();
      if (!ticket) return refuse();
      let image: Float32Array;
      try {
        // A decode under way cannot be stopped (it keeps its decoder until it ends, so the
        // bound holds); a client gone meanwhile stops waiting for it at once.
        image = await untilAborted(
          decoding.use(() => decode(r.image, r.model.config.imageSize, r.imageName, { maxPixels }), gone.signal),
          gone.signal,
        );
      } catch (e) {
        checkGone();
        if (e instanceof ImageTooLarge) throw new HttpError(413, e.message, 'image');
        if (e instanceof UserError) throw new HttpError(400, e.message, 'image');
        throw e;
      }
      checkGone();
      // The pixels are transferred to the worker: they must own their whole buffer.
      if (image.byteOffset !== 0 || image.buffer.byteLength !== image.byteLength) image = image.slice();
      const spec = {
        model: r.model.name,
        image,
        prompt: r.prompt,
        sampler: {
          sampler: r.sampler,
          steps: r.steps,
          temperature: r.temperature,
          seed: r.seed,
          threshold: r.threshold,
        },
        stream: r.stream,
      };
      const admitted = performance.now();
      if (!r.stream) {
        handle = ticket.submit(spec);
        const h = handle;
        gone.signal.addEventListener('abort', () => h.cancel(), { once: true });
        try {
          const res = await h.result;
          counters.completed++;
          return resultBody(r, res);
        } catch (e) {
          return failed(e);
        }
      }
      return await stream(r, ticket, spec, admitted);
    } catch (e) {
      // A client that went away gets no answer; count it once, as cancelled.
      if (gone.signal.aborted && !handle) {
        counters.cancelled++;
        throw new HttpError(499, 'cancelled');
      }
      throw e;
    } finally {
      ticket?.release();
      reply.raw.off('close', onClose);
    }

    function checkGone(): void {
      if (gone.signal.aborted) throw new HttpError(499, 'cancelled');
    }

    // Streaming: one SSE event per sampling step, then `done` (or `error`).
    async function stream(r: CaptionRequest, t: Reservation, spec: JobSpec, admitted: number): Promise<FastifyReply> {
      const h = t.submit(spec, {
        onStart: () => {
          sse(reply, 'start', {
            model: r.model.name,
            sampler: r.sampler,
            max_steps: r.steps,
            tokens_per_step: r.tokensPerStep,
            length: r.model.config.responseLength,
            queue_ms: Math.round(performance.now() - admitted),
          });
        },
        onStep: (step, tokens) => sse(reply, 'step', stepEvent(r.model, step, tokens)),
      });
      handle = h;
      reply.hijack();
      reply.raw.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
      });
      reply.raw.write(': queued\n\n');
      gone.signal.addEventListener('abort', () => h.cancel(), { once: true });
      // A comment line now and then keeps a stream that waits in the queue (or runs in slow
      // motion) from looking idle to the idle timeout.
      const beat =
        idleTimeoutMs > 0
          ? setInterval(() => sse(reply, null, null), Math.max(50, Math.floor(idleTimeoutMs / 3)))
          : null;
      try {
        const res = await h.result;
        counters.completed++;
        sse(reply, 'done', resultBody(r, res));
      } catch (e) {
        if (e instanceof JobCancelled) counters.cancelled++;
        else counters.failed++;
        sse(reply, 'error', {
          error:
            e instanceof JobFailed && e.user ? e.message : e instanceof JobCancelled ? 'cancelled' : 'internal error',
        });
        if (!(e instanceof JobCancelled || e instanceof JobFailed)) req.log.error(e);
      } finally {
        if (beat) clearInterval(beat);
        reply.raw.end();
      }
      return reply;
    }

    function refuse(): never {
      counters.refused++;
      const s = pool.retryAfterSeconds();
      throw new HttpError(
        503,
        `busy: the generation queue is full (${pool.stats().waiting + pool.stats().reserved} waiting); retry in about ${s} s`,
        undefined,
        { 'retry-after': String(s) },
      );
    }
    function failed(e: unknown): never {
      if (e instanceof JobCancelled) {
        counters.cancelled++;
        throw new HttpError(499, 'cancelled');
      }
      counters.failed++;
      if (e instanceof JobFailed && e.user) throw new HttpError(400, e.message);
      throw e;
    }
  });

  app.get('/healthz', async () => ({ ok: true }));

  function queueStats() {
    const { running, waiting, reserved } = pool.stats();
    // `decoding`: images in a decoder now; `decode_waiting`: admitted, waiting for one.
    return { running, waiting, decoding: decoding.active, decode_waiting: Math.max(0, reserved - decoding.active) };
  }

  let listening = false;
  return {
    app,
    pool,
    models: loaded,
    async listen(port = 0, host = '127.0.0.1') {
      const address = await app.listen({ port, host });
      listening = true;
      return address;
    },
    async close() {
      await pool.close();
      if (listening || app.server.listening) await app.close();
      else await app.close().catch(() => undefined);
    },
  };
}
