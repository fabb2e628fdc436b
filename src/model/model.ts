/**
 * The vision-language diffusion model at run time: config, tokenizer, weights, and the
 * compiled graphs (one per batch size), with the two calls a sampler needs.
 */
import { type HostTensor, SessionCache, f32 } from '../graph/runtime.js';
import { serializeGraph } from '../graph/onnx.js';
import { PAD_ID, type Tokenizer } from '../tokenizer/tokenizer.js';
import { UserError } from '../util/errors.js';
import { stackRows } from '../util/rows.js';
import {
  buildCachedLanguageGraph,
  buildLanguageGraph,
  buildVisionGraph,
  imagePathParams,
  languageParams,
} from './architecture.js';
import { type ModelConfig, numPatches, patchDim, sequenceLength } from './config.js';
import { type Params, paramSpecs } from './params.js';

/** Additive attention bias for a key that must not be attended (padding). */
export const MASKED_KEY_BIAS = -1e9;

/** Left-pads (or rejects) a prompt to the model's prompt length. */
export function padPrompt(c: ModelConfig, prompt: readonly number[]): number[] {
  if (prompt.length > c.promptLength) {
    throw new UserError(`prompt has ${prompt.length} tokens; this model takes at most ${c.promptLength}`);
  }
  return [...new Array<number>(c.promptLength - prompt.length).fill(PAD_ID), ...prompt];
}

/** Token ids and attention bias for a batch of (padded prompt, response) rows. */
export function sequenceFeeds(
  c: ModelConfig,
  rows: readonly { prompt: readonly number[]; response: ArrayLike<number> }[],
): {
  tokens: HostTensor;
  bias: HostTensor;
} {
  const b = rows.length;
  const s = c.promptLength + c.responseLength;
  const t = sequenceLength(c);
  const tokens = new BigInt64Array(b * s);
  const bias = new Float32Array(b * t);
  const np = numPatches(c);
  rows.forEach((row, i) => {
    const prompt = padPrompt(c, row.prompt);
    if (row.response.length !== c.responseLength)
      throw new Error(`response length ${row.response.length} != ${c.responseLength}`);
    for (let j = 0; j < c.promptLength; j++) {
      tokens[i * s + j] = BigInt(prompt[j]!);
      if (prompt[j] === PAD_ID) bias[i * t + np + j] = MASKED_KEY_BIAS;
    }
    for (let j = 0; j < c.responseLength; j++) tokens[i * s + c.promptLength + j] = BigInt(row.response[j]!);
    if (c.imageKeyBias) bias.fill(c.imageKeyBias, i * t, i * t + np);
  });
  return {
    tokens: { dtype: 'int64', shape: [b, s], data: tokens },
    bias: { dtype: 'float32', shape: [b, 1, 1, t], data: bias },
  };
}

/** One row's K/V cache: per layer, keys and values [H, T, dh] over the whole sequence. */
export interface KvCache {
  k: Float32Array[];
  v: Float32Array[];
}

/** A row of a cached pass: recompute response positions [from, from + window length), the rest from `cache`. */
export interface CachedRow {
  prompt: readonly number[];
  response: ArrayLike<number>;
  cache: KvCache;
  from: number;
}

/**
 * Inputs of a cached pass over rows: the window's tokens and positions, the sequence's attention
 * bias, and every layer's cached keys and values [B, H, T, dh], stacked by row (or, when the rows are
 * those of the pass that kept the cache, in order, that pass's outputs as they are).
 */
export function cachedPassFeeds(
  c: ModelConfig,
  rows: readonly CachedRow[],
  windowLength: number,
): Record<string, HostTensor> {
  const b = rows.length;
  const t = sequenceLength(c);
  const d = c.lm.width;
  const h = c.lm.heads;
  const start = numPatches(c) + c.promptLength;
  const tokens = new BigInt64Array(b * windowLength);
  const positions = new BigInt64Array(b * windowLength);
  rows.forEach((r, i) => {
    if (r.from < 0 || r.from + windowLength > c.responseLength)
      throw new Error(`window [${r.from}, ${r.from + windowLength}) outside the response`);
    for (let j = 0; j < windowLength; j++) {
      tokens[i * windowLength + j] = BigInt(r.response[r.from + j]!);
      positions[i * windowLength + j] = BigInt(start + r.from + j);
    }
  });
  const feeds: Record<string, HostTensor> = {
    tokens: { dtype: 'int64', shape: [b, windowLength], data: tokens },
    positions: { dtype: 'int64', shape: [b, windowLength], data: positions },
    attn_bias: sequenceFeeds(c, rows).bias,
  };
  for (let l = 0; l < c.lm.layers; l++) {
    feeds[`cache_k${l}`] = f32([b, h, t, d / h], stackRows(rows.map((r) => r.cache.k[l]!)));
    feeds[`cache_v${l}`] = f32([b, h, t, d / h], stackRows(rows.map((r) => r.cache.v[l]!)));
  }
  return feeds;
}

export class DiffusionVLM {
  private readonly sessions = new SessionCache();

  constructor(
    readonly config: ModelConfig,
    readonly tokenizer: Tokenizer,
    readonly params: Params,
    /** What the checkpoint says about the model: the prompt it was trained with, its stage. */
    readonly meta: { prompt?: string; stage?: string } = {},
  ) {
    for (const s of paramSpecs(config)) {
      const p = params.get(s.name);
      const n = s.shape.reduce((a, b) => a * b, 1);
      if (!p || p.length !== n)
        throw new UserError(
          `weights do not match the model: ${s.name} ${p ? `has ${p.length} values, expected ${n}` : 'is missing'}`,
        );
    }
  }

  private paramFeeds(read: (name: string) => boolean): Record<string, HostTensor> {
    const feeds: Record<string, HostTensor> = {};
    for (const s of paramSpecs(this.config)) if (read(s.name)) feeds[s.name] = f32(s.shape, this.params.get(s.name)!);
    return feeds;
  }

  /** patches: B images, each [Np * patchDim] -> image embeddings [B * Np * D]. Run once per image. */
  async encodeImages(patches: readonly Float32Array[]): Promise<Float32Array> {
    const c = this.config;
    const b = patches.length;
    const per = numPatches(c) * patchDim(c);
    const data = new Float32Array(b * per);
    patches.forEach((p, i) => {
      if (p.length !== per) throw new Error(`image ${i}: ${p.length} patch values, expected ${per}`);
      data.set(p, i * per);
    });
    const graph = await this.sessions.get(`vision:${b}`, () => serializeGraph(buildVisionGraph(c, b)));
    const out = await graph.run({
      patches: f32([b, numPatches(c), patchDim(c)], data),
      ...this.paramFeeds(imagePathParams(c)),
    });
    return out.image_embeds!.data as Float32Array;
  }

  /** One denoising forward pass: logits [B * L * V] for every response position. */
  async logits(
    imageEmbeds: Float32Array,
    rows: { prompt: readonly number[]; response: ArrayLike<number> }[],
  ): Promise<Float32Array> {
    const c = this.config;
    const b = rows.length;
    const { tokens, bias } = sequenceFeeds(c, rows);
    const graph = await this.sessions.get(`lm:${b}`, () => serializeGraph(buildLanguageGraph(c, b)));
    const out = await graph.run({
      image_embeds: f32([b, numPatches(c), c.lm.width], imageEmbeds),
      tokens,
      attn_bias: bias,
      ...this.paramFeeds(languageParams),
    });
    return out.logits!.data as Float32Array;
  }

  /** The full pass of `logits`, also returning each row's K/V cache (Fast-dLLM's refresh at a block boundary). */
  async logitsKeepingCache(
    imageEmbeds: Float32Array,
    rows: { prompt: readonly number[]; response: ArrayLike<number> }[],
  ): Promise<{ logits: Float32Array; caches: KvCache[] }> {
    const c = this.config;
    const b = rows.length;
    const { tokens, bias } = sequenceFeeds(c, rows);
    const graph = await this.sessions.get(`lm-kv:${b}`, () =>
      serializeGraph(buildLanguageGraph(c, b, { withCache: true })),
    );
    const out = await graph.run({
      image_embeds: f32([b, numPatches(c), c.lm.width], imageEmbeds),
      tokens,
      attn_bias: bias,
      ...this.paramFeeds(languageParams),
    });
    const per = sequenceLength(c) * c.lm.width;
    const layer = (name: string, i: number): Float32Array =>
      (out[name]!.data as Float32Array).subarray(i * per, (i + 1) * per);
    const caches = rows.map((_, i) => ({
      k: Array.from({ length: c.lm.layers }, (_, l) => layer(`cache_k${l}`, i)),
      v: Array.from({ length: c.lm.layers }, (_, l) => layer(`cache_v${l}`, i)),
    }));
    return { logits: out.logits!.data as Float32Array, caches };
  }

  /** Every layer's attention probabilities, each [B, H, T, T] flattened (for diagnosis). */
  async attention(
    imageEmbeds: Float32Array,
    rows: { prompt: readonly number[]; response: ArrayLike<number> }[],
  ): Promise<Float32Array[]> {
    const c = this.config;
    const b = rows.length;
    const { tokens, bias } = sequenceFeeds(c, rows);
    const graph = await this.sessions.get(`lm-attention:${b}`, () =>
      serializeGraph(buildLanguageGraph(c, b, { withAttention: true })),
    );
    const out = await graph.run({
      image_embeds: f32([b, numPatches(c), c.lm.width], imageEmbeds),
      tokens,
      attn_bias: bias,
      ...this.paramFeeds(languageParams),
    });
    return Array.from({ length: c.lm.layers }, (_, l) => out[`attention${l}`]!.data as Float32Array);
  }

  /**
   * A cached pass: recomputes `windowLength` response positions from each row's `from`, reading
   * every other position's keys and values from the row's cache. Logits of the window's first
   * `outLength` positions [B * outLength * V].
   */
  async logitsFromCache(rows: readonly CachedRow[], windowLength: number, outLength: number): Promise<Float32Array> {
    const c = this.config;
    const b = rows.length;
    const key = `lm-cached:${b}:${windowLength}:${outLength}`;
    const graph = await this.sessions.get(key, () =>
      serializeGraph(buildCachedLanguageGraph(c, b, windowLength, outLength)),
    );
    const out = await graph.run({ ...cachedPassFeeds(c, rows, windowLength), ...this.paramFeeds(languageParams) });
    return out.logits!.data as Float32Array;
  }

  /** Seconds spent so far building and compiling graphs (one per purpose and batch size). */
  get compileSeconds(): number {
    return this.sessions.compileMs / 1000;
  }

  async dispose(): Promise<void> {
    await this.sessions.clear();
  }
}
