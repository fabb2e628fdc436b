/**
 * What the route plugins (./routes/) share: the worker pool and the models it loaded, the
 * limits the server was started with, the image decoders and the request counters.
 */
import type { ImageOptions } from '../data/image.js';
import type { Semaphore } from '../util/semaphore.js';
import type { Asset } from './assets.js';
import type { InferencePool } from './pool.js';
import type { LoadedModelInfo } from './protocol.js';
import type { ModelView } from './request.js';

export type ImageDecoder = (image: Buffer, size: number, name: string, opts: ImageOptions) => Promise<Float32Array>;

export interface Counters {
  completed: number;
  cancelled: number;
  failed: number;
  refused: number;
}

export interface Limits {
  maxUploadBytes: number;
  /** The JSON body limit, which follows from maxUploadBytes (base64 is 4/3 the size). */
  bodyLimit: number;
  maxPixels: number;
  requestTimeoutMs: number;
  idleTimeoutMs: number;
  keepAliveTimeoutMs: number;
}

export interface ServerContext {
  pool: InferencePool;
  /** The models as the worker loaded them (names, configs, tokenizers as JSON). */
  loaded: LoadedModelInfo[];
  /** The same models as requests are validated against, by name. */
  views: Map<string, ModelView>;
  /** The model a request gets when it names none. */
  defaultModel: string;
  limits: Limits;
  /** At most `decodeConcurrency` images decoded at once. */
  decoding: Semaphore;
  decode: ImageDecoder;
  /** The page's files (empty when the server runs without the page). */
  assets: Map<string, Asset>;
  counters: Counters;
}

/** The queue as GET /v1/models reports it. */
export function queueStats(ctx: ServerContext) {
  const { running, waiting, reserved } = ctx.pool.stats();
  const decoding = ctx.decoding.active;
  // `decoding`: images in a decoder now; `decode_waiting`: admitted, waiting for one.
  return { running, waiting, decoding, decode_waiting: Math.max(0, reserved - decoding), ...ctx.counters };
}
