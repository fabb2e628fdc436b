/**
 * POST /v1/captions: read and validate the request, take a place in the queue, decode the image,
 * run the job in the worker, and answer with JSON or stream the steps as Server-Sent Events.
 */
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { ImageTooLarge } from '../../data/image.js';
import type { StepTrace } from '../../sampling/sampler.js';
import type { Tokenizer } from '../../tokenizer/tokenizer.js';
import { UserError } from '../../util/errors.js';
import { abortReason } from '../../util/semaphore.js';
import type { ServerContext } from '../context.js';
import { type JobHandle, JobCancelled, JobFailed, type JobResult, type Reservation } from '../pool.js';
import type { JobSpec } from '../protocol.js';
import {
  type CaptionRequest,
  HttpError,
  type ModelView,
  readCaptionRequest,
  validateCaptionRequest,
} from '../request.js';

export const captionRoutes: FastifyPluginAsync<{ ctx: ServerContext }> = async (app, { ctx }) => {
  app.post('/v1/captions', (req, reply) => caption(ctx, req, reply));
};

/** One caption request on its way to its answer. */
interface Exchange {
  ctx: ServerContext;
  req: FastifyRequest;
  reply: FastifyReply;
  /**
   * Aborted when the client goes away before its answer is complete: whatever the request
   * started (a place in the queue, a decode, a job) is then given up.
   */
  gone: AbortController;
  /** The job, once submitted. */
  handle: JobHandle | null;
}

async function caption(ctx: ServerContext, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const ex: Exchange = { ctx, req, reply, gone: new AbortController(), handle: null };
  // The response's 'close' fires when the connection closes; after a complete answer `writableFinished` is set.
  const onClose = (): void => {
    if (!reply.raw.writableFinished) ex.gone.abort();
  };
  reply.raw.on('close', onClose);
  if (req.raw.socket.destroyed) ex.gone.abort();
  let ticket: Reservation | null = null;
  try {
    const raw = await readCaptionRequest(req, ctx.limits.maxUploadBytes);
    const r = validateCaptionRequest(raw, ctx.views, ctx.defaultModel);
    checkGone(ex);
    // Decoding happens under the same admission control as inference: a place in the queue
    // first (else 503), then a decoder (at most `decodeConcurrency` at once).
    ticket = ctx.pool.reserve();
    if (!ticket) return refuse(ctx);
    const spec = jobSpec(r, await decodeImage(ex, r));
    const admitted = performance.now();
    return r.stream ? await stream(ex, r, ticket, spec, admitted) : await answer(ex, r, ticket, spec);
  } catch (e) {
    // A client that went away gets no answer; count it once, as cancelled.
    if (ex.gone.signal.aborted && !ex.handle) {
      ctx.counters.cancelled++;
      throw new HttpError(499, 'cancelled');
    }
    throw e;
  } finally {
    ticket?.release();
    reply.raw.off('close', onClose);
  }
}

function checkGone(ex: Exchange): void {
  if (ex.gone.signal.aborted) throw new HttpError(499, 'cancelled');
}

/** The request's image as the model's input; bad images are 400, too large ones 413. */
async function decodeImage(ex: Exchange, r: CaptionRequest): Promise<Float32Array> {
  const { ctx, gone } = ex;
  let image: Float32Array;
  try {
    // A decode under way cannot be stopped (it keeps its decoder until it ends, so the
    // bound holds); a client gone meanwhile stops waiting for it at once.
    const decoding = ctx.decoding.use(
      () => ctx.decode(r.image, r.model.config.imageSize, r.imageName, { maxPixels: ctx.limits.maxPixels }),
      gone.signal,
    );
    image = await untilAborted(decoding, gone.signal);
  } catch (e) {
    checkGone(ex);
    if (e instanceof ImageTooLarge) throw new HttpError(413, e.message, 'image');
    if (e instanceof UserError) throw new HttpError(400, e.message, 'image');
    throw e;
  }
  checkGone(ex);
  // The pixels are transferred to the worker: they must own their whole buffer.
  if (image.byteOffset !== 0 || image.buffer.byteLength !== image.byteLength) image = image.slice();
  return image;
}

function jobSpec(r: CaptionRequest, image: Float32Array): JobSpec {
  return {
    model: r.model.name,
    image,
    prompt: r.prompt,
    sampler: { sampler: r.sampler, steps: r.steps, temperature: r.temperature, seed: r.seed, threshold: r.threshold },
    stream: r.stream,
  };
}

/** Without streaming: the whole caption as one JSON answer. */
async function answer(ex: Exchange, r: CaptionRequest, ticket: Reservation, spec: JobSpec): Promise<unknown> {
  const h = ticket.submit(spec);
  ex.handle = h;
  ex.gone.signal.addEventListener('abort', () => h.cancel(), { once: true });
  try {
    const res = await h.result;
    ex.ctx.counters.completed++;
    return resultBody(r, res);
  } catch (e) {
    return failed(ex.ctx, e);
  }
}

/** Streaming: one SSE event per sampling step, then `done` (or `error`). */
async function stream(
  ex: Exchange,
  r: CaptionRequest,
  ticket: Reservation,
  spec: JobSpec,
  admitted: number,
): Promise<FastifyReply> {
  const { ctx, reply } = ex;
  const h = ticket.submit(spec, {
    onStart: () => sse(reply, 'start', startEvent(r, admitted)),
    onStep: (step, tokens) => sse(reply, 'step', stepEvent(r.model, step, tokens)),
  });
  ex.handle = h;
  reply.hijack();
  reply.raw.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  reply.raw.write(': queued\n\n');
  ex.gone.signal.addEventListener('abort', () => h.cancel(), { once: true });
  // A comment line now and then keeps a stream that waits in the queue (or runs in slow
  // motion) from looking idle to the idle timeout.
  const idle = ctx.limits.idleTimeoutMs;
  const beat = idle > 0 ? setInterval(() => sse(reply, null, null), Math.max(50, Math.floor(idle / 3))) : null;
  try {
    const res = await h.result;
    ctx.counters.completed++;
    sse(reply, 'done', resultBody(r, res));
  } catch (e) {
    if (e instanceof JobCancelled) ctx.counters.cancelled++;
    else ctx.counters.failed++;
    const user = e instanceof JobFailed && e.user;
    sse(reply, 'error', { error: user ? e.message : e instanceof JobCancelled ? 'cancelled' : 'internal error' });
    if (!(e instanceof JobCancelled || e instanceof JobFailed)) ex.req.log.error(e);
  } finally {
    if (beat) clearInterval(beat);
    reply.raw.end();
  }
  return reply;
}

/** Every place in the queue is taken: 503 with Retry-After, nothing decoded. */
function refuse(ctx: ServerContext): never {
  ctx.counters.refused++;
  const s = ctx.pool.retryAfterSeconds();
  const waiting = ctx.pool.stats().waiting + ctx.pool.stats().reserved;
  throw new HttpError(
    503,
    `busy: the generation queue is full (${waiting} waiting); retry in about ${s} s`,
    undefined,
    {
      'retry-after': String(s),
    },
  );
}

function failed(ctx: ServerContext, e: unknown): never {
  if (e instanceof JobCancelled) {
    ctx.counters.cancelled++;
    throw new HttpError(499, 'cancelled');
  }
  ctx.counters.failed++;
  if (e instanceof JobFailed && e.user) throw new HttpError(400, e.message);
  throw e;
}

function tokenPiece(tok: Tokenizer, id: number): string {
  return tok.pieces([id])[0] ?? '';
}

/** The SSE `start` payload: the job left the queue. */
function startEvent(r: CaptionRequest, admitted: number) {
  return {
    model: r.model.name,
    sampler: r.sampler,
    max_steps: r.steps,
    tokens_per_step: r.tokensPerStep,
    length: r.model.config.responseLength,
    queue_ms: Math.round(performance.now() - admitted),
  };
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
