/**
 * rediff as a library: `import { loadModel } from 'rediff'`. The public surface, re-exported from
 * the modules that implement it; the command line (src/cli) is built on the same pieces.
 */

// Captioning.
export {
  type CaptionOptions,
  type CaptionResult,
  type CaptionStep,
  type DecodedImage,
  type ImageInput,
  type Model,
  captionSampler,
  loadModel,
} from './api/model.js';
export { SHIPPED_MODELS, type ShippedModel, shippedModelDir } from './model/shipped.js';
export {
  CACHE_MODES,
  type CacheMode,
  SAMPLER_NAMES,
  type SamplerName,
  type SamplerOptions,
  type StepTrace,
  sample,
  samplerOptions,
} from './sampling/sampler.js';
export { type Caption, captionImages, stepsForTokensPerStep } from './sampling/caption.js';
export { decodeImageBuffer, imageFromRgb, loadImage } from './data/image.js';

// Tokenizers.
export { EOS_ID, MASK_ID, PAD_ID, type Tokenizer, UNK_ID } from './tokenizer/tokenizer.js';
export { HuggingFaceTokenizer } from './tokenizer/huggingface.js';
export { WordTokenizer } from './tokenizer/word.js';
export { tokenizerFromJSON } from './tokenizer/kinds.js';

// Models, training and data.
export { type ModelConfig, PRESET_NAMES, type PresetName, presetConfig } from './model/config.js';
export { type Params, initParams } from './model/params.js';
export { DiffusionVLM } from './model/model.js';
export { loadModelState, saveModel } from './model/io.js';
export { exportOnnx, shipCheckpoint, writeOnnxExport, type ExportManifest } from './model/export.js';
export { type TrainJob, type TrainResult, type TrainSettings, runTraining } from './training/run.js';
export { MASK_PREDICTION_MIX, type MixOptions } from './training/samples.js';
export type { SpanPair, TrainingRecord } from './data/training-record.js';
export { TRAIN_STAGES, type TrainStage } from './training/stages/plans.js';
export {
  type InMemorySplit,
  benchmarkTrainingRecord,
  generateBenchmarkSplit,
  readBenchmarkSplit,
  readUserData,
} from './data/training-data.js';

// The benchmark and evaluation.
export { BENCHMARK_PROMPT, benchmarkTokenizer } from './benchmark/captioner.js';
export { renderScenePng } from './benchmark/render.js';
export { type EvalRow, type EvalSetting, evaluate } from './evaluation/evaluate.js';
export { evalTable, renderPlain } from './evaluation/table.js';

export { UserError } from './util/errors.js';
