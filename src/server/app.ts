/**
 * The HTTP server: the captioning API, the page, and the files the page's in-browser mode
 * needs (each model exported to ONNX, onnxruntime-web's wasm). Model inference runs in a
 * worker thread (pool.ts); this thread only parses, validates, decodes images (sharp works on
 * libuv's thread pool) and streams. Each group of routes is a Fastify plugin of ./routes/:
 *
 *   GET  /                          the page                                      routes/page.ts
 *   GET  /v1/models                 loaded models, samplers, limits, queue        routes/models.ts
 *   GET  /v1/models/:name/tokenizer.json   the model's tokenizer (the page decodes with it)
 *   GET  /v1/models/:name/onnx/:f   vision.onnx, language.onnx, model.json (in-browser mode)
 *   POST /v1/captions               caption an image (JSON or SSE stream)         routes/captions.ts
 *   GET  /ort/:file                 onnxruntime-web's browser files               routes/ort.ts
 */
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import multipart from '@fastify/multipart';
import sharp from 'sharp';
import { decodeImageBuffer } from '../data/image.js';
import { tokenizerFromJSON } from '../tokenizer/kinds.js';
import { UserError } from '../util/errors.js';
import { redactSecrets } from '../util/redact.js';
import { Semaphore } from '../util/semaphore.js';
import { type Asset, loadWebAssets } from './assets.js';
import type { Counters, ImageDecoder, Limits, ServerContext } from './context.js';
import { InferencePool } from './pool.js';
import type { LoadedModelInfo } from './protocol.js';
import { HttpError, type ModelView } from './request.js';
import { captionRoutes } from './routes/captions.js';
import { defaultSamplerFor, modelRoutes } from './routes/models.js';
import { ortRoutes } from './routes/ort.js';
import { pageRoutes } from './routes/page.js';

export type { ImageDecoder } from './context.js';
export { defaultSamplerFor } from './routes/models.js';

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
  /**
   * A connection silent this long in either direction is closed, in ms (Fastify's connectionTimeout). 0 = never.
   * Default 120,000.
   */
  idleTimeoutMs?: number;
  /** An idle keep-alive connection is closed after this long, in ms. Default 5,000. */
  keepAliveTimeoutMs?: number;
  /** Replaces the image decoder (tests hold a decode open with it). */
  decoder?: ImageDecoder;
  /** Fastify request logging. Default false. */
  logger?: boolean;
}

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

export async function createServer(opts: ServerOptions): Promise<RediffServer> {
  checkModelNames(opts.models);
  const limits = limitsOf(opts);
  const decoding = new Semaphore(opts.decodeConcurrency ?? SERVER_DEFAULTS.decodeConcurrency);
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
  const views = modelViews(loaded);
  const ctx: ServerContext = {
    pool,
    loaded,
    views,
    defaultModel: views.has('rediff') ? 'rediff' : loaded[0]!.name,
    limits,
    decoding,
    decode: opts.decoder ?? decodeImageBuffer,
    assets,
    counters: { completed: 0, cancelled: 0, failed: 0, refused: 0 } satisfies Counters,
  };

  const app = Fastify(fastifyOptions(limits, opts.logger ?? false));
  await app.register(multipart, { limits: { fileSize: limits.maxUploadBytes, files: 1 } });
  // Bodies are JSON or multipart only; anything else is a 415.
  app.removeContentTypeParser('text/plain');
  app.setErrorHandler((err: FastifyError, req, reply) => sendError(err, req, reply, limits.maxUploadBytes));
  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send({ error: `not found: ${req.method} ${req.url.split('?')[0]}` }),
  );
  await app.register(pageRoutes, { ctx });
  await app.register(ortRoutes);
  await app.register(modelRoutes, { ctx });
  await app.register(captionRoutes, { ctx });
  app.get('/healthz', async () => ({ ok: true }));

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

function checkModelNames(models: ServerOptions['models']): void {
  if (models.length === 0) throw new UserError('no models to serve');
  const names = new Set<string>();
  for (const m of models) {
    if (!/^[A-Za-z0-9_.-]+$/.test(m.name))
      throw new UserError(`bad model name "${m.name}" (letters, digits, . _ - only)`);
    if (names.has(m.name)) throw new UserError(`model name "${m.name}" given twice`);
    names.add(m.name);
  }
}

function limitsOf(opts: ServerOptions): Limits {
  const maxUploadBytes = opts.maxUploadBytes ?? SERVER_DEFAULTS.maxUploadBytes;
  const limits: Limits = {
    maxUploadBytes,
    // JSON bodies carry the image as base64 (4/3 the size) plus a few fields.
    bodyLimit: Math.ceil((maxUploadBytes * 4) / 3) + 64 * 1024,
    maxPixels: opts.maxPixels ?? SERVER_DEFAULTS.maxPixels,
    requestTimeoutMs: opts.requestTimeoutMs ?? SERVER_DEFAULTS.requestTimeoutMs,
    idleTimeoutMs: opts.idleTimeoutMs ?? SERVER_DEFAULTS.idleTimeoutMs,
    keepAliveTimeoutMs: opts.keepAliveTimeoutMs ?? SERVER_DEFAULTS.keepAliveTimeoutMs,
  };
  const { maxPixels, requestTimeoutMs, idleTimeoutMs, keepAliveTimeoutMs } = limits;
  for (const [k, v] of Object.entries({ maxPixels, requestTimeoutMs, idleTimeoutMs, keepAliveTimeoutMs })) {
    if (!Number.isSafeInteger(v) || v < (k === 'maxPixels' ? 1 : 0))
      throw new RangeError(`${k} must be a whole number >= ${k === 'maxPixels' ? 1 : 0}, got ${v}`);
  }
  return limits;
}

function modelViews(loaded: LoadedModelInfo[]): Map<string, ModelView> {
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
  return views;
}

function fastifyOptions(limits: Limits, logger: boolean) {
  const { requestTimeoutMs } = limits;
  return {
    // Logged request lines and errors go through redactSecrets: a query string or an error
    // message may carry a key.
    logger: logger
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
    bodyLimit: limits.bodyLimit,
    // A client that never finishes sending (slowloris) is cut off, as is a silent connection
    // and an idle keep-alive one: without these, each holds a socket and its buffers forever.
    requestTimeout: requestTimeoutMs,
    connectionTimeout: limits.idleTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
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
  };
}

/** Every error as JSON: ours (HttpError) with their status, Fastify's 4xx explained, anything else a logged 500. */
function sendError(err: FastifyError, req: FastifyRequest, reply: FastifyReply, maxUploadBytes: number) {
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
    const notJson = err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || /JSON/.test(message);
    return reply.code(err.statusCode).send({ error: notJson ? `body is not valid JSON: ${message}` : message });
  }
  req.log.error(err);
  return reply.code(500).send({ error: 'internal error' });
}
