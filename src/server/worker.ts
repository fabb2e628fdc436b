/**
 * The inference worker (a worker_threads thread). It loads every model once, owns their
 * onnxruntime sessions, and runs sampling jobs sent by the main thread, reporting each step.
 * A cancelled job stops at its next forward pass. Runs as TypeScript under tsx in tests and as
 * compiled JavaScript from dist/ in production (see pool.ts).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { patchify } from '../data/image.js';
import { exportOnnx } from '../model/export.js';
import { loadModel } from '../model/io.js';
import type { DiffusionVLM } from '../model/model.js';
import { countParams } from '../model/params.js';
import { type DenoisingModel, sample, samplerOptions } from '../sampling/sampler.js';
import { UserError } from '../util/errors.js';
import type { FromWorker, JobSpec, LoadedModelInfo, ToWorker, WorkerData } from './protocol.js';

class Cancelled extends Error {
  constructor() {
    super('cancelled');
  }
}

const port = parentPort;
if (!port) throw new Error('src/server/worker is meant to run in a worker thread');

const post = (msg: FromWorker, transfer: ArrayBuffer[] = []): void => port.postMessage(msg, transfer);
const models = new Map<string, DiffusionVLM>();
const cancelled = new Set<number>();

const data = workerData as WorkerData;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Wraps a model so that a cancelled job fails at its next forward pass (and, in slow motion,
 * waits before each pass).
 */
function cancellable(m: DiffusionVLM, id: number): DenoisingModel {
  const check = async (): Promise<void> => {
    if (data.stepDelayMs > 0) await sleep(data.stepDelayMs);
    if (cancelled.has(id)) throw new Cancelled();
  };
  return {
    config: m.config,
    async encodeImages(p) {
      await check();
      return m.encodeImages(p);
    },
    async logits(e, rows) {
      await check();
      return m.logits(e, rows);
    },
  };
}

async function runJob(id: number, job: JobSpec): Promise<void> {
  const m = models.get(job.model);
  if (!m) throw new UserError(`no model named ${job.model}`);
  const c = m.config;
  const t0 = performance.now();
  const patches = patchify(job.image, c.imageSize, c.patchSize);
  const o = samplerOptions(
    job.sampler.sampler,
    { steps: job.sampler.steps, temperature: job.sampler.temperature, seed: job.sampler.seed },
    job.sampler.threshold,
  );
  if (job.stream) o.onStep = (_row, step, tokens) => post({ type: 'step', id, step, tokens: [...tokens] });
  post({ type: 'started', id });
  const [res] = await sample(cancellable(m, id), [patches], [job.prompt], o);
  post({ type: 'done', id, tokens: res!.tokens, steps: res!.steps, ms: performance.now() - t0 });
}

port.on('message', (msg: ToWorker) => {
  if (msg.type === 'cancel') {
    cancelled.add(msg.id);
    return;
  }
  if (msg.type === 'export') {
    const m = models.get(msg.model);
    try {
      if (!m) throw new UserError(`no model named ${msg.model}`);
      const exp = exportOnnx(m);
      post({ type: 'exported', id: msg.id, vision: exp.vision, language: exp.language, manifest: exp.manifest }, [
        exp.vision.buffer as ArrayBuffer,
        exp.language.buffer as ArrayBuffer,
      ]);
    } catch (e) {
      post({ type: 'failed', id: msg.id, message: (e as Error).message, user: e instanceof UserError });
    }
    return;
  }
  runJob(msg.id, msg.job).then(
    () => cancelled.delete(msg.id),
    (e: unknown) => {
      if (e instanceof Cancelled) post({ type: 'cancelled', id: msg.id });
      else
        post({ type: 'failed', id: msg.id, message: (e as Error)?.message ?? String(e), user: e instanceof UserError });
      cancelled.delete(msg.id);
    },
  );
});

async function boot(): Promise<void> {
  const infos: LoadedModelInfo[] = [];
  for (const { name, dir } of data.models) {
    const m = await loadModel(dir);
    models.set(name, m);
    // Compile both graphs now so the first request does not pay for it.
    const c = m.config;
    const embeds = await m.encodeImages([
      new Float32Array((c.imageSize / c.patchSize) ** 2 * c.patchSize * c.patchSize * 3),
    ]);
    await m.logits(embeds, [{ prompt: [], response: new Array<number>(c.responseLength).fill(1) }]);
    infos.push({
      name,
      dir,
      config: c,
      tokenizer: m.tokenizer.toJSON(),
      prompt: m.meta.prompt ?? null,
      stage: m.meta.stage ?? null,
      parameters: countParams(c),
    });
  }
  post({ type: 'ready', models: infos });
}

boot().catch((e: unknown) => post({ type: 'fatal', message: (e as Error)?.message ?? String(e) }));
