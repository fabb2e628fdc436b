/**
 * The sampler's DenoisingModel over the two exported ONNX graphs (src/model/export.ts), for any
 * onnxruntime flavour with the common API: onnxruntime-web in the page, onnxruntime-node in the
 * tests that check it against the server's model. The sampler (src/sampling/sampler.ts) runs
 * unchanged on top of it, so the page and the server decode with the same code.
 */
import type { ExportManifest } from '../model/export.js';
import type { DenoisingModel } from '../sampling/sampler.js';

/** The parts of an onnxruntime module used here (onnxruntime-web and -node both fit). */
export interface OrtLike {
  Tensor: new (type: 'float32' | 'int64', data: Float32Array | BigInt64Array, dims: readonly number[]) => unknown;
}

export interface OrtSessionLike {
  run(feeds: Record<string, never>): Promise<Record<string, { data: unknown }>>;
}

/** Special ids shared by every rediff tokenizer (src/tokenizer/word.ts). */
const PAD_ID = 0;
/** Additive attention bias for padded prompt keys (MASKED_KEY_BIAS in src/model/model.ts). */
const MASKED_KEY_BIAS = -1e9;

/** Token ids and attention bias of one row, as sequenceFeeds in src/model/model.ts builds them. */
export function rowInputs(
  m: ExportManifest,
  prompt: readonly number[],
  response: ArrayLike<number>,
): { tokens: BigInt64Array; bias: Float32Array } {
  const c = m.config;
  if (prompt.length > c.promptLength)
    throw new Error(`prompt has ${prompt.length} tokens; this model takes at most ${c.promptLength}`);
  if (response.length !== c.responseLength)
    throw new Error(`response length ${response.length} != ${c.responseLength}`);
  const np = m.shapes.patches[1]!;
  const tokens = new BigInt64Array(c.promptLength + c.responseLength);
  const bias = new Float32Array(np + c.promptLength + c.responseLength);
  if (c.imageKeyBias) bias.fill(c.imageKeyBias, 0, np);
  const pad = c.promptLength - prompt.length;
  for (let j = 0; j < c.promptLength; j++) {
    const id = j < pad ? PAD_ID : prompt[j - pad]!;
    tokens[j] = BigInt(id);
    if (id === PAD_ID) bias[np + j] = MASKED_KEY_BIAS;
  }
  for (let j = 0; j < c.responseLength; j++) tokens[c.promptLength + j] = BigInt(response[j]!);
  return { tokens, bias };
}

/** Runs are serialised: one onnxruntime-web instance computes one graph at a time. */
let queue: Promise<unknown> = Promise.resolve();
function serial<T>(fn: () => Promise<T>): Promise<T> {
  const next = queue.then(fn, fn);
  queue = next.catch(() => undefined);
  return next;
}

export class OrtDenoisingModel implements DenoisingModel {
  readonly config: { responseLength: number; vocabSize: number };

  constructor(
    private readonly ort: OrtLike,
    private readonly vision: OrtSessionLike,
    private readonly language: OrtSessionLike,
    readonly manifest: ExportManifest,
    /** Awaited before every forward pass (the page yields a frame so it can repaint). */
    private readonly beforeRun: () => Promise<void> = async () => undefined,
  ) {
    this.config = { responseLength: manifest.config.responseLength, vocabSize: manifest.config.vocabSize };
  }

  private checkBatch(n: number): void {
    if (n !== this.manifest.batch) throw new Error(`this export runs batches of ${this.manifest.batch}, got ${n}`);
  }

  async encodeImages(patches: readonly Float32Array[]): Promise<Float32Array> {
    this.checkBatch(patches.length);
    const shape = this.manifest.shapes.patches;
    const per = shape[1]! * shape[2]!;
    const data = new Float32Array(patches.length * per);
    patches.forEach((p, i) => {
      if (p.length !== per) throw new Error(`image ${i}: ${p.length} patch values, expected ${per}`);
      data.set(p, i * per);
    });
    await this.beforeRun();
    const out = await serial(() => this.vision.run({ patches: new this.ort.Tensor('float32', data, shape) as never }));
    return out.image_embeds!.data as Float32Array;
  }

  async logits(
    imageEmbeds: Float32Array,
    rows: { prompt: readonly number[]; response: ArrayLike<number> }[],
  ): Promise<Float32Array> {
    this.checkBatch(rows.length);
    const sh = this.manifest.shapes;
    const tokens = new BigInt64Array(rows.length * sh.tokens[1]!);
    const bias = new Float32Array(rows.length * sh.attnBias[3]!);
    rows.forEach((r, i) => {
      const x = rowInputs(this.manifest, r.prompt, r.response);
      tokens.set(x.tokens, i * sh.tokens[1]!);
      bias.set(x.bias, i * sh.attnBias[3]!);
    });
    await this.beforeRun();
    const out = await serial(() =>
      this.language.run({
        image_embeds: new this.ort.Tensor('float32', imageEmbeds, sh.imageEmbeds) as never,
        tokens: new this.ort.Tensor('int64', tokens, sh.tokens) as never,
        attn_bias: new this.ort.Tensor('float32', bias, sh.attnBias) as never,
      }),
    );
    return out.logits!.data as Float32Array;
  }
}
