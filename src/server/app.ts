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
import { decodeImageBuffer } from '../data/image.js';
import { SAMPLER_NAMES, type StepTrace } from '../sampling/sampler.js';
import { type Tokenizer, tokenizerFromJSON } from '../tokenizer/tokenizer.js';
import { UserError } from '../util/errors.js';
import { type Asset, ORT_FILES, loadWebAssets, ortWebDir } from './assets.js';
import { InferencePool, type JobHandle, JobCancelled, JobFailed, type JobResult } from './pool.js';
import type { LoadedModelInfo } from './protocol.js';
import { type CaptionRequest, HttpError, type ModelView, readCaptionRequest, validateCaptionRequest } from './request.js';

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
  /** Fastify request logging. Default false. */
  logger?: boolean;
}

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
    refined: step.refined.map((r) => ({ pos: r.pos, from: r.from, to: r.to, from_text: tokenPiece(tok, r.from), to_text: tokenPiece(tok, r.to) })),
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

function sse(reply: FastifyReply, event: string, data: unknown): void {
  if (reply.raw.writableEnded || reply.raw.destroyed) return;
  reply.raw.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
}

export async function createServer(opts: ServerOptions): Promise<RediffServer> {
  if (opts.models.length === 0) throw new UserError('no models to serve');
  const names = new Set<string>();
  for (const m of opts.models) {
    if (!/^[A-Za-z0-9_.-]+$/.test(m.name)) throw new UserError(`bad model name "${m.name}" (letters, digits, . _ - only)`);
    if (names.has(m.name)) throw new UserError(`model name "${m.name}" given twice`);
    names.add(m.name);
  }
  const maxUploadBytes = opts.maxUploadBytes ?? 5 * 1024 * 1024;
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
    views.set(m.name, { name: m.name, config: m.config, tokenizer: tokenizerFromJSON(m.tokenizer, `${m.dir}: tokenizer`), prompt: m.prompt, defaultSampler: defaultSamplerFor(m.name) });
  }
  const defaultModel = views.has('rediff') ? 'rediff' : loaded[0]!.name;
  const counters: Counters = { completed: 0, cancelled: 0, failed: 0, refused: 0 };
  const exportCache = new Map<string, Promise<{ vision: Uint8Array; language: Uint8Array; manifest: object }>>();
  const ortDir = ortWebDir();

  const app = Fastify({
    logger: opts.logger ?? false,
    // JSON bodies carry the image as base64 (4/3 the size) plus a few fields.
    bodyLimit: Math.ceil((maxUploadBytes * 4) / 3) + 64 * 1024,
  });
  await app.register(multipart, { limits: { fileSize: maxUploadBytes, files: 1 } });
  // Bodies are JSON or multipart only; anything else is a 415.
  app.removeContentTypeParser('text/plain');

  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, req, reply) => {
    if (err instanceof HttpError) {
      for (const [k, v] of Object.entries(err.headers)) reply.header(k, v);
      return reply.code(err.status).send({ error: err.message, ...(err.field ? { field: err.field } : {}) });
    }
    if (err.statusCode === 413 || err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return reply.code(413).send({ error: `upload too large: the image may be at most ${maxUploadBytes} bytes`, field: 'image' });
    }
    if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      return reply.code(415).send({ error: 'send multipart/form-data or application/json' });
    }
    if (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500) {
      return reply.code(err.statusCode).send({ error: err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || /JSON/.test(err.message) ? `body is not valid JSON: ${err.message}` : err.message });
    }
    req.log.error(err);
    return reply.code(500).send({ error: 'internal error' });
  });
  app.setNotFoundHandler((req, reply) => reply.code(404).send({ error: `not found: ${req.method} ${req.url.split('?')[0]}` }));

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
        tokens_per_step: Array.from({ length: c.responseLength }, (_, i) => i + 1).filter((k) => c.responseLength % k === 0),
        onnx: { manifest: `${base}/model.json`, vision: `${base}/vision.onnx`, language: `${base}/language.onnx` },
      };
    }),
    default_model: defaultModel,
    samplers: SAMPLER_NAMES,
    limits: { max_upload_bytes: maxUploadBytes, queue_limit: pool.queueLimit, concurrency: pool.concurrency },
    queue: { ...pool.stats(), ...counters },
  }));

  app.get<{ Params: { name: string } }>('/v1/models/:name/tokenizer.json', async (req) => {
    const m = loaded.find((x) => x.name === req.params.name);
    if (!m) throw new HttpError(404, `unknown model ${JSON.stringify(req.params.name)}`, 'model');
    return m.tokenizer;
  });

  app.get<{ Params: { name: string; file: string } }>('/v1/models/:name/onnx/:file', async (req, reply) => {
    const { name, file } = req.params;
    if (!views.has(name)) throw new HttpError(404, `unknown model ${JSON.stringify(name)}`, 'model');
    if (!['vision.onnx', 'language.onnx', 'model.json'].includes(file)) throw new HttpError(404, `not found: ${file} (vision.onnx, language.onnx, model.json)`);
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
    const raw = await readCaptionRequest(req, maxUploadBytes);
    const r = validateCaptionRequest(raw, views, defaultModel);
    let image: Float32Array;
    try {
      image = await decodeImageBuffer(r.image, r.model.config.imageSize, r.imageName);
    } catch (e) {
      if (e instanceof UserError) throw new HttpError(400, e.message, 'image');
      throw e;
    }
    // The pixels are transferred to the worker: they must own their whole buffer.
    if (image.byteOffset !== 0 || image.buffer.byteLength !== image.byteLength) image = image.slice();
    const spec = {
      model: r.model.name,
      image,
      prompt: r.prompt,
      sampler: { sampler: r.sampler, steps: r.steps, temperature: r.temperature, seed: r.seed, threshold: r.threshold },
      stream: r.stream,
    };
    const admitted = performance.now();
    let handle: JobHandle | null;
    if (!r.stream) {
      handle = pool.submit(spec);
      if (!handle) return refuse();
      const h = handle;
      const onClose = (): void => {
        if (!reply.raw.writableFinished) h.cancel();
      };
      reply.raw.on('close', onClose);
      try {
        const res = await h.result;
        counters.completed++;
        return resultBody(r, res);
      } catch (e) {
        return failed(e);
      } finally {
        reply.raw.off('close', onClose);
      }
    }

    // Streaming: one SSE event per sampling step, then `done` (or `error`).
    handle = pool.submit(spec, {
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
    if (!handle) return refuse();
    const h = handle;
    reply.hijack();
    reply.raw.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    reply.raw.write(': queued\n\n');
    let finished = false;
    reply.raw.on('close', () => {
      if (!finished) h.cancel();
    });
    try {
      const res = await h.result;
      counters.completed++;
      sse(reply, 'done', resultBody(r, res));
    } catch (e) {
      if (e instanceof JobCancelled) counters.cancelled++;
      else counters.failed++;
      sse(reply, 'error', { error: e instanceof JobFailed && e.user ? e.message : e instanceof JobCancelled ? 'cancelled' : 'internal error' });
      if (!(e instanceof JobCancelled || e instanceof JobFailed)) req.log.error(e);
    } finally {
      finished = true;
      reply.raw.end();
    }
    return reply;

    function refuse(): never {
      counters.refused++;
      const s = pool.retryAfterSeconds();
      throw new HttpError(503, `busy: the generation queue is full (${pool.stats().waiting} waiting); retry in about ${s} s`, undefined, { 'retry-after': String(s) });
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
