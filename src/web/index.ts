/**
 * rediff in the browser (`import ... from 'rediff/web'`): the sampler over a model exported with
 * `rediff export` (onnx/model.json, vision.onnx, language.onnx), run by onnxruntime-web or any
 * onnxruntime with the same API. Nothing here needs Node; the page (./main.ts) is built on it.
 */
export { OrtDenoisingModel, type OrtLike, type OrtSessionLike, rowInputs } from './ort-model.js';
export { normalisePixels, patchify } from './pixels.js';
export {
  SAMPLER_NAMES,
  type SamplerName,
  type SamplerOptions,
  type StepTrace,
  sample,
  samplerOptions,
} from '../sampling/sampler.js';
export { WordTokenizer } from '../tokenizer/word.js';
export type { ExportManifest, PixelNormalisation } from '../model/export.js';
