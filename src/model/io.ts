/** Saving and loading models (and training state) as rediff checkpoints. */
import { type LoadedCheckpoint, loadCheckpoint, saveCheckpoint } from '../checkpoint/checkpoint.js';
import type { NamedTensor } from '../checkpoint/safetensors.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { tokenizerFromJSON } from '../tokenizer/kinds.js';
import { checkTokenizerFile } from '../tokenizer/file.js';
import { UserError } from '../util/errors.js';
import { type ModelConfig, validateConfig } from './config.js';
import { DiffusionVLM } from './model.js';
import { type Params, paramSpecs } from './params.js';

export const CONFIG_KIND = 'rediff-diffusion-vlm';

/** AdamW's moments per parameter and its step count: what a checkpoint keeps so that a run can resume exactly. */
export interface AdamWState {
  step: number;
  m: Map<string, Float32Array>;
  v: Map<string, Float32Array>;
}

export function weightsToTensors(c: ModelConfig, params: Params): Record<string, NamedTensor> {
  const out: Record<string, NamedTensor> = {};
  for (const s of paramSpecs(c)) out[s.name] = { dtype: 'F32', shape: s.shape, data: params.get(s.name)! };
  return out;
}

function optimizerToTensors(c: ModelConfig, o: AdamWState): Record<string, NamedTensor> {
  const out: Record<string, NamedTensor> = {};
  for (const s of paramSpecs(c)) {
    out[`m.${s.name}`] = { dtype: 'F32', shape: s.shape, data: o.m.get(s.name)! };
    out[`v.${s.name}`] = { dtype: 'F32', shape: s.shape, data: o.v.get(s.name)! };
  }
  return out;
}

export interface SaveModelInput {
  config: ModelConfig;
  tokenizer: Tokenizer;
  params: Params;
  state: Record<string, unknown>;
  optimizer?: AdamWState;
}

export async function saveModel(dir: string, m: SaveModelInput): Promise<void> {
  await saveCheckpoint(dir, {
    config: { kind: CONFIG_KIND, model: m.config },
    tokenizer: m.tokenizer.toJSON(),
    state: { ...m.state, ...(m.optimizer ? { optimizerStep: m.optimizer.step } : {}) },
    weights: weightsToTensors(m.config, m.params),
    ...(m.optimizer ? { optimizer: optimizerToTensors(m.config, m.optimizer) } : {}),
  });
}

export interface LoadedModel {
  config: ModelConfig;
  tokenizer: Tokenizer;
  params: Params;
  state: Record<string, unknown>;
  optimizer?: AdamWState;
}

/** Reads the model config of a checkpoint and checks it against what this code can build. */
export function modelConfigOf(ck: Pick<LoadedCheckpoint, 'config'>, dir: string): ModelConfig {
  const cfg = ck.config as { kind?: unknown; model?: unknown };
  if (cfg.kind !== CONFIG_KIND || typeof cfg.model !== 'object' || cfg.model === null) {
    throw new UserError(`${dir}: not a rediff model checkpoint (config kind ${JSON.stringify(cfg.kind ?? null)})`);
  }
  const model = cfg.model as ModelConfig;
  try {
    validateConfig(model);
  } catch (e) {
    throw new UserError(`${dir}: ${(e as Error).message}`);
  }
  return model;
}

export interface LoadOptions {
  withOptimizer?: boolean;
  /** A tokenizer.json the checkpoint must have been trained with (`--tokenizer`); it always reads with its own. */
  tokenizer?: string | undefined;
}

export async function loadModelState(dir: string, opts: LoadOptions = {}): Promise<LoadedModel> {
  const ck = await loadCheckpoint(dir, opts);
  const config = modelConfigOf(ck, dir);
  const tokenizer = tokenizerFromJSON(ck.tokenizer, `${dir}: tokenizer`);
  if (tokenizer.size !== config.vocabSize) {
    throw new UserError(`${dir}: tokenizer has ${tokenizer.size} tokens but the model config says ${config.vocabSize}`);
  }
  if (opts.tokenizer !== undefined) await checkTokenizerFile(opts.tokenizer, tokenizer, dir);
  const params: Params = new Map();
  for (const s of paramSpecs(config)) {
    const t = ck.weights[s.name];
    const n = s.shape.reduce((a, b) => a * b, 1);
    if (!t) throw new UserError(`${dir}: weights file lacks ${s.name}; the checkpoint does not match this model code`);
    if (t.dtype !== 'F32' || t.data.length !== n || t.shape.join(',') !== s.shape.join(',')) {
      throw new UserError(
        `${dir}: ${s.name} has shape [${t.shape}] ${t.dtype}, this model code expects [${s.shape}] F32`,
      );
    }
    params.set(s.name, t.data as Float32Array);
  }
  const extra = Object.keys(ck.weights).filter((k) => !params.has(k));
  if (extra.length > 0)
    throw new UserError(
      `${dir}: weights file has tensors this model code does not know: ${extra.slice(0, 5).join(', ')}`,
    );
  let optimizer: AdamWState | undefined;
  if (opts.withOptimizer && ck.optimizer) {
    const m = new Map<string, Float32Array>();
    const v = new Map<string, Float32Array>();
    for (const s of paramSpecs(config)) {
      const mt = ck.optimizer[`m.${s.name}`];
      const vt = ck.optimizer[`v.${s.name}`];
      if (!mt || !vt) throw new UserError(`${dir}: optimizer state lacks ${s.name}`);
      m.set(s.name, mt.data as Float32Array);
      v.set(s.name, vt.data as Float32Array);
    }
    optimizer = { step: Number(ck.state.optimizerStep ?? 0), m, v };
  }
  return { config, tokenizer, params, state: ck.state, ...(optimizer ? { optimizer } : {}) };
}

export async function loadModel(dir: string, opts: Pick<LoadOptions, 'tokenizer'> = {}): Promise<DiffusionVLM> {
  const m = await loadModelState(dir, opts);
  const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
  const meta = { prompt: str(m.state.prompt), stage: str(m.state.stage) };
  return new DiffusionVLM(m.config, m.tokenizer, m.params, meta);
}
