/**
 * The import API's captioner: a model loaded by name (a shipped one) or from a checkpoint
 * directory, whose `caption` takes image file bytes or a decoded image and resolves to the
 * caption with every step of its refinement. The pipeline is the command line's: decode and
 * resize (src/data/image.ts), then captionImages (src/sampling/caption.ts).
 */
import { type ImageOptions, decodeImageBuffer, imageFromRgb } from '../data/image.js';
import type { ModelConfig } from '../model/config.js';
import { loadModel as loadCheckpoint } from '../model/io.js';
import type { DiffusionVLM } from '../model/model.js';
import { type ShippedModel, isShippedModel, shippedModelDir } from '../model/shipped.js';
import { captionImages, stepsForTokensPerStep } from '../sampling/caption.js';
import {
  type CacheMode,
  type SamplerName,
  type SamplerOptions,
  type StepTrace,
  samplerOptions,
  validateSamplerOptions,
} from '../sampling/sampler.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { UserError } from '../util/errors.js';

/** Decoded pixels, RGB or RGBA (a canvas's ImageData fits), row by row. */
export interface DecodedImage {
  data: Uint8Array | Uint8ClampedArray;
  width: number;
  height: number;
  /** Default: what data.length says (3 or 4 bytes per pixel). */
  channels?: 3 | 4;
}

/** A PNG, JPEG or WebP file's bytes, or a decoded image. */
export type ImageInput = Uint8Array | ArrayBuffer | DecodedImage;

export interface CaptionOptions {
  /** Default 'rediff' (refines decoded tokens); 'llada' never revisits one. */
  sampler?: SamplerName;
  /** Tokens decoded per step, dividing the response length (default 4); the threshold samplers ignore it. */
  tokensPerStep?: number;
  /** Confidence threshold of the threshold samplers (default 0.9). */
  threshold?: number;
  /** K/V cache within a block (default 'none'; 'prefix' and 'dual' are faster and approximate). */
  cache?: CacheMode;
  /** 0 (default) takes the most likely token; above 0 samples at this temperature. */
  temperature?: number;
  seed?: number;
  /** Default: the prompt the model was trained with. */
  prompt?: string;
  /** How a non-square image becomes square (default 'fill': stretched, nothing cropped). */
  fit?: ImageOptions['fit'];
  /** Called after every step with the caption so far: for live refinement. */
  onStep?: (step: CaptionStep) => void;
}

/** One step: what it committed and refined, and the caption after it ([MASK] where nothing is decoded yet). */
export interface CaptionStep extends StepTrace {
  text: string;
  tokens: number[];
}

export interface CaptionResult {
  text: string;
  tokens: number[];
  /** Every step, in order (its length is the number of forward passes). */
  steps: CaptionStep[];
}

export interface Model {
  /** The shipped model's name, or the checkpoint directory. */
  readonly name: string;
  readonly dir: string;
  readonly config: ModelConfig;
  readonly tokenizer: Tokenizer;
  /** The prompt the model was trained with ('' when its checkpoint does not say). */
  readonly prompt: string;
  /** The model the training and evaluation entry points take. */
  readonly network: DiffusionVLM;
  caption(image: ImageInput, options?: CaptionOptions): Promise<CaptionResult>;
  /** Frees the onnxruntime sessions. */
  dispose(): Promise<void>;
}

/** A shipped model ('rediff', 'baseline', 'base') or a checkpoint directory. */
export async function loadModel(
  source: ShippedModel | (string & {}),
  opts: { tokenizer?: string } = {},
): Promise<Model> {
  const dir = isShippedModel(source) ? shippedModelDir(source) : source;
  const network = await loadCheckpoint(dir, opts);
  return {
    name: source,
    dir,
    config: network.config,
    tokenizer: network.tokenizer,
    prompt: network.meta.prompt ?? '',
    network,
    caption: (image, options = {}) => caption(network, image, options),
    dispose: () => network.dispose(),
  };
}

/** Sampler options from the API's, checked against the response length. */
export function captionSampler(o: CaptionOptions, length: number): SamplerOptions {
  const name = o.sampler ?? 'rediff';
  const threshold = name.startsWith('threshold');
  const steps = threshold ? length : stepsForTokensPerStep(length, o.tokensPerStep ?? 4);
  const options = samplerOptions(
    name,
    { steps, temperature: o.temperature ?? 0, seed: o.seed ?? 0, cache: o.cache ?? 'none' },
    o.threshold ?? 0.9,
  );
  validateSamplerOptions(options, length);
  return options;
}

async function caption(network: DiffusionVLM, image: ImageInput, o: CaptionOptions): Promise<CaptionResult> {
  const c = network.config;
  const sampler = captionSampler(o, c.responseLength);
  const prompt = network.tokenizer.encode(o.prompt ?? network.meta.prompt ?? '');
  if (prompt.length === 0) throw new UserError('the prompt is empty: the model names none, so pass options.prompt');
  const pixels = await modelPixels(image, c.imageSize, { fit: o.fit ?? 'fill' });
  const steps: CaptionStep[] = [];
  sampler.onStep = (_row, step, tokens) => {
    const s = { ...step, tokens: [...tokens], text: network.tokenizer.decode(tokens) };
    steps.push(s);
    o.onStep?.(s);
  };
  const [result] = await captionImages(network, [pixels], prompt, sampler);
  return { text: result!.text, tokens: result!.tokens, steps };
}

/** The model's input pixels: decoded and resized as the command line does. */
async function modelPixels(image: ImageInput, size: number, opts: ImageOptions): Promise<Float32Array> {
  if (image instanceof ArrayBuffer) return decodeImageBuffer(new Uint8Array(image), size, 'image', opts);
  if (image instanceof Uint8Array) return decodeImageBuffer(image, size, 'image', opts);
  const { data, width, height } = image;
  const channels = image.channels ?? data.length / Math.max(1, width * height);
  if ((channels !== 3 && channels !== 4) || data.length !== width * height * channels)
    throw new UserError(
      `a decoded image of ${width} x ${height} needs 3 or 4 bytes per pixel; got ${data.length} bytes`,
    );
  return imageFromRgb(channels === 3 ? Uint8Array.from(data) : rgbOnBlack(data), width, height, size, opts);
}

/** RGBA -> RGB flattened on black, as decoding a file with transparency does. */
function rgbOnBlack(rgba: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array((rgba.length / 4) * 3);
  for (let p = 0, q = 0; q < out.length; p += 4, q += 3) {
    const a = rgba[p + 3]! / 255;
    for (let k = 0; k < 3; k++) out[q + k] = Math.round(rgba[p + k]! * a);
  }
  return out;
}
