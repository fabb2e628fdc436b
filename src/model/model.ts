/**
 * The vision-language diffusion model at run time: config, tokenizer, weights, and the
 * compiled graphs (one per batch size), with the two calls a sampler needs.
 */
import { type HostTensor, SessionCache, f32 } from '../graph/runtime.js';
import { serializeGraph } from '../graph/onnx.js';
import { PAD_ID } from '../tokenizer/word.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { UserError } from '../util/errors.js';
import { buildLanguageGraph, buildVisionGraph } from './architecture.js';
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
export function sequenceFeeds(c: ModelConfig, rows: { prompt: readonly number[]; response: ArrayLike<number> }[]): {
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
    if (row.response.length !== c.responseLength) throw new Error(`response length ${row.response.length} != ${c.responseLength}`);
    for (let j = 0; j < c.promptLength; j++) {
      tokens[i * s + j] = BigInt(prompt[j]!);
      if (prompt[j] === PAD_ID) bias[i * t + np + j] = MASKED_KEY_BIAS;
    }
    for (let j = 0; j < c.responseLength; j++) tokens[i * s + c.promptLength + j] = BigInt(row.response[j]!);
  });
  return {
    tokens: { dtype: 'int64', shape: [b, s], data: tokens },
    bias: { dtype: 'float32', shape: [b, 1, 1, t], data: bias },
  };
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
      if (!p || p.length !== n) throw new UserError(`weights do not match the model: ${s.name} ${p ? `has ${p.length} values, expected ${n}` : 'is missing'}`);
    }
  }

  private paramFeeds(prefixes: string[]): Record<string, HostTensor> {
    const feeds: Record<string, HostTensor> = {};
    for (const s of paramSpecs(this.config)) {
      if (prefixes.some((p) => s.name.startsWith(p))) feeds[s.name] = f32(s.shape, this.params.get(s.name)!);
    }
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
    const out = await graph.run({ patches: f32([b, numPatches(c), patchDim(c)], data), ...this.paramFeeds(['vision.', 'projector.']) });
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
      ...this.paramFeeds(['lm.']),
    });
    return out.logits!.data as Float32Array;
  }

  async dispose(): Promise<void> {
    await this.sessions.clear();
  }
}
