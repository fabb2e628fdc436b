/**
 * The ceiling: a denoiser that is the benchmark captioner's own posterior (docs/design.md#oracle).
 *
 * For each scene of a split it draws `captions` captions from the captioner (Monte-Carlo: the
 * captioner's choices are too many to list; with thousands of draws nearly every caption is
 * distinct), each padded with EOS to the response length. Given a partly decoded response, the
 * prediction at every position is the distribution of that position's token over the drawn
 * captions nearest the response: those that disagree with the fewest decoded tokens (none,
 * while the decoded tokens are consistent with some caption). Driven through `sample()`, it is
 * what a perfect model of the benchmark's captions would do at each step, and a perfect reviser
 * for the refining sampler. Deterministic: scene i's captions come from a seed of the oracle's
 * seed and the scene's id.
 */
import { BENCHMARK_PROMPT, benchmarkTokenizer, writeCaption } from '../benchmark/captioner.js';
import type { InMemorySplit } from '../data/training-data.js';
import { normaliseRgb, patchify } from '../data/image.js';
import type { DenoisingModel } from '../sampling/forward-pass.js';
import { EOS_ID, MASK_ID } from '../tokenizer/tokenizer.js';
import type { WordTokenizer } from '../tokenizer/word.js';
import { UserError } from '../util/errors.js';
import { Rng } from '../util/rng.js';

export interface OracleOptions {
  /** Captions drawn per scene (the Monte-Carlo sample size). */
  captions: number;
  /** Seed of the draws. */
  seed: number;
  /** The response length L (the shipped models' 96). */
  responseLength: number;
}

export const DEFAULT_ORACLE: OracleOptions = { captions: 4000, seed: 0, responseLength: 96 };

/** A log-probability low enough that softmax gives it exactly 0 next to any drawn token. */
const IMPOSSIBLE = -1e4;

/** FNV-1a over the bits of a float array: the key an image is recognised by. */
function imageKey(pixels: Float32Array): string {
  const words = new Uint32Array(pixels.buffer, pixels.byteOffset, pixels.length);
  let a = 0x811c9dc5;
  let b = 0x01000193;
  for (let i = 0; i < words.length; i++) {
    a = Math.imul(a ^ words[i]!, 0x01000193);
    b = Math.imul(b ^ words[i]!, 0x5bd1e995) ^ (b >>> 15);
  }
  return `${(a >>> 0).toString(16)}-${(b >>> 0).toString(16)}-${words.length}`;
}

/** The drawn captions of one scene as token ids, N rows of L, EOS-padded. */
export interface SceneCaptions {
  count: number;
  ids: Uint8Array;
}

export class CaptionerOracle implements DenoisingModel {
  readonly config: { responseLength: number; vocabSize: number; imageSize: number; patchSize: number };
  readonly tokenizer: WordTokenizer = benchmarkTokenizer();
  readonly meta = { prompt: BENCHMARK_PROMPT };
  private readonly sceneOfImage = new Map<string, number>();
  private readonly drawn = new Map<number, SceneCaptions>();

  constructor(
    private readonly split: InMemorySplit,
    readonly options: OracleOptions = DEFAULT_ORACLE,
  ) {
    if (!(Number.isInteger(options.captions) && options.captions >= 1)) {
      throw new UserError(`oracle captions per scene must be a positive integer, got ${options.captions}`);
    }
    if (this.tokenizer.size > 256) throw new RangeError('the oracle stores token ids as bytes');
    const first = split.rgb[0];
    const imageSize = first ? Math.round(Math.sqrt(first.length / 3)) : 1;
    // One patch per image: the oracle reads no pixels, it only recognises them.
    this.config = {
      responseLength: options.responseLength,
      vocabSize: this.tokenizer.size,
      imageSize,
      patchSize: imageSize,
    };
    split.rgb.forEach((rgb, i) => {
      const key = imageKey(patchify(normaliseRgb(rgb), imageSize, imageSize));
      if (!this.sceneOfImage.has(key)) this.sceneOfImage.set(key, i);
    });
  }

  /** Each image's "embedding" is the index of its scene in the split. */
  async encodeImages(patches: readonly Float32Array[]): Promise<Float32Array> {
    return Float32Array.from(patches, (p) => {
      const scene = this.sceneOfImage.get(imageKey(p));
      if (scene === undefined) throw new UserError('the oracle knows only the images of its own split');
      return scene;
    });
  }

  async logits(
    imageEmbeds: Float32Array,
    rows: { prompt: readonly number[]; response: ArrayLike<number> }[],
  ): Promise<Float32Array> {
    const L = this.config.responseLength;
    const V = this.config.vocabSize;
    const out = new Float32Array(rows.length * L * V).fill(IMPOSSIBLE);
    rows.forEach((row, r) => {
      const posterior = this.posterior(imageEmbeds[r]!, row.response);
      for (let i = 0; i < L * V; i++) if (posterior[i]! > 0) out[r * L * V + i] = Math.log(posterior[i]!);
    });
    return out;
  }

  /**
   * The posterior of scene `scene` given a response: [L, V] probabilities, each position's
   * token distribution over the drawn captions nearest the response.
   */
  posterior(scene: number, response: ArrayLike<number>): Float32Array {
    const L = this.config.responseLength;
    const V = this.config.vocabSize;
    const { count, ids } = this.captionsOf(scene);
    const nearest = nearestCaptions(ids, count, L, response);
    const p = new Float32Array(L * V);
    const w = 1 / nearest.length;
    for (const c of nearest) for (let i = 0; i < L; i++) p[i * V + ids[c * L + i]!]! += w;
    return p;
  }

  /** Scene `scene`'s drawn captions (drawn on first use, then kept). */
  captionsOf(scene: number): SceneCaptions {
    const known = this.drawn.get(scene);
    if (known) return known;
    const record = this.split.records[scene];
    if (!record) throw new RangeError(`scene ${scene} is not in the oracle's split`);
    const L = this.config.responseLength;
    const { captions, seed } = this.options;
    const rng = new Rng(Math.imul(seed, 0x9e3779b1) ^ Number.parseInt(record.id.slice(-8), 16));
    const ids = new Uint8Array(captions * L).fill(EOS_ID);
    for (let c = 0; c < captions; c++) {
      const tokens = writeCaption(record.scene, rng, { maxTokens: L - 1 }).tokens;
      tokens.forEach((t, i) => {
        const id = this.tokenizer.idOf(t);
        if (id === undefined) throw new RangeError(`captioner word "${t}" is not in the benchmark vocabulary`);
        ids[c * L + i] = id;
      });
    }
    const drawn = { count: captions, ids };
    this.drawn.set(scene, drawn);
    return drawn;
  }

  /** Scene `scene`'s drawn captions as text (the ones a 1-token-per-step decode can end on). */
  captionTexts(scene: number): Set<string> {
    const { count, ids } = this.captionsOf(scene);
    const L = this.config.responseLength;
    const texts = new Set<string>();
    for (let c = 0; c < count; c++) texts.add(this.tokenizer.decode([...ids.subarray(c * L, (c + 1) * L)]));
    return texts;
  }

  async dispose(): Promise<void> {
    this.drawn.clear();
  }
}

/** Indices of the captions that disagree with the fewest decoded (unmasked) tokens of `response`. */
export function nearestCaptions(ids: Uint8Array, count: number, L: number, response: ArrayLike<number>): number[] {
  const decoded: number[] = [];
  for (let i = 0; i < L; i++) if (response[i] !== MASK_ID) decoded.push(i);
  let best = Number.POSITIVE_INFINITY;
  let nearest: number[] = [];
  for (let c = 0; c < count; c++) {
    const row = c * L;
    let misses = 0;
    for (const i of decoded) {
      if (ids[row + i] !== response[i] && ++misses > best) break;
    }
    if (misses < best) {
      best = misses;
      nearest = [c];
    } else if (misses === best) nearest.push(c);
  }
  return nearest;
}
