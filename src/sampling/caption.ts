/** Captioning images end to end: patchify, sample in batches, decode. */
import { patchify } from '../data/image.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { UserError } from '../util/errors.js';
import { type DenoisingModel, type SampleResult, type SamplerOptions, sample } from './sampler.js';

/** What captioning images needs of a model: a denoiser that knows its image layout and tokenizer. */
export interface ImageCaptioner extends DenoisingModel {
  readonly config: DenoisingModel['config'] & { imageSize: number; patchSize: number };
  readonly tokenizer: Tokenizer;
}

export interface Caption extends SampleResult {
  text: string;
}

/** Steps for a requested tokens-per-step rate: L / k, which must be whole. */
export function stepsForTokensPerStep(length: number, tokensPerStep: number): number {
  if (!Number.isInteger(tokensPerStep) || tokensPerStep < 1 || length % tokensPerStep !== 0) {
    throw new UserError(
      `tokens per step ${tokensPerStep} must be a whole number that divides the generation length ${length}`,
    );
  }
  return length / tokensPerStep;
}

/**
 * Captions images given as normalised HWC pixels at the model's image size.
 * Each batch gets its own seed (seed + batch index) so results do not depend on batch order.
 */
export async function captionImages(
  model: ImageCaptioner,
  images: readonly Float32Array[],
  prompt: readonly number[],
  opts: SamplerOptions,
  batchSize = 32,
  onBatch?: (done: number) => void,
): Promise<Caption[]> {
  const c = model.config;
  const out: Caption[] = [];
  for (let start = 0; start < images.length; start += batchSize) {
    const chunk = images.slice(start, start + batchSize);
    const patches = chunk.map((img) => patchify(img, c.imageSize, c.patchSize));
    const res = await sample(
      model,
      patches,
      chunk.map(() => prompt),
      { ...opts, seed: opts.seed + start },
    );
    for (const r of res) out.push({ ...r, text: model.tokenizer.decode(r.tokens) });
    onBatch?.(out.length);
  }
  return out;
}
