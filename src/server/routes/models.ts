/**
 * The models: what is loaded, with the samplers and limits (GET /v1/models), each model's
 * tokenizer, and each model exported to ONNX for the page's in-browser mode (made once, on
 * first request).
 */
import type { FastifyPluginAsync } from 'fastify';
import { SAMPLER_NAMES } from '../../sampling/sampler.js';
import { type ServerContext, queueStats } from '../context.js';
import type { LoadedModelInfo } from '../protocol.js';
import { HttpError } from '../request.js';

/** The sampler a model is shown with unless the request names one. */
export function defaultSamplerFor(name: string): string {
  return name === 'baseline' ? 'llada' : 'rediff';
}

export const modelRoutes: FastifyPluginAsync<{ ctx: ServerContext }> = async (app, { ctx }) => {
  app.get('/v1/models', async () => ({
    models: ctx.loaded.map(modelEntry),
    default_model: ctx.defaultModel,
    samplers: SAMPLER_NAMES,
    limits: {
      max_upload_bytes: ctx.limits.maxUploadBytes,
      max_body_bytes: ctx.limits.bodyLimit,
      max_pixels: ctx.limits.maxPixels,
      queue_limit: ctx.pool.queueLimit,
      concurrency: ctx.pool.concurrency,
      decode_concurrency: ctx.decoding.limit,
      request_timeout_ms: ctx.limits.requestTimeoutMs,
      idle_timeout_ms: ctx.limits.idleTimeoutMs,
      keep_alive_timeout_ms: ctx.limits.keepAliveTimeoutMs,
    },
    queue: queueStats(ctx),
  }));

  app.get<{ Params: { name: string } }>('/v1/models/:name/tokenizer.json', async (req) => {
    const m = ctx.loaded.find((x) => x.name === req.params.name);
    if (!m) throw new HttpError(404, `unknown model ${JSON.stringify(req.params.name)}`, 'model');
    return m.tokenizer;
  });

  const exports = new Map<string, Promise<{ vision: Uint8Array; language: Uint8Array; manifest: object }>>();
  app.get<{ Params: { name: string; file: string } }>('/v1/models/:name/onnx/:file', async (req, reply) => {
    const { name, file } = req.params;
    if (!ctx.views.has(name)) throw new HttpError(404, `unknown model ${JSON.stringify(name)}`, 'model');
    if (!['vision.onnx', 'language.onnx', 'model.json'].includes(file))
      throw new HttpError(404, `not found: ${file} (vision.onnx, language.onnx, model.json)`);
    let p = exports.get(name);
    if (!p) {
      p = ctx.pool.exportOnnx(name);
      exports.set(name, p);
      p.catch(() => exports.delete(name));
    }
    const exp = await p;
    reply.header('cache-control', 'no-cache');
    if (file === 'model.json') return reply.type('application/json').send(exp.manifest);
    return reply.type('application/octet-stream').send(Buffer.from(file === 'vision.onnx' ? exp.vision : exp.language));
  });
};

/** One model of GET /v1/models. */
function modelEntry(m: LoadedModelInfo) {
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
}
