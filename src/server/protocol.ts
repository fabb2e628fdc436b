/**
 * Messages between the server's main thread and its inference worker. The worker owns the
 * models (their onnxruntime sessions); the main thread validates requests, decodes images and
 * forwards jobs. Float32Array payloads are transferred, not copied.
 */
import type { ModelConfig } from '../model/config.js';
import type { StepTrace } from '../sampling/sampler.js';

export interface WorkerData {
  models: { name: string; dir: string }[];
  /** Pause before every forward pass (slow motion for demonstrations and tests). */
  stepDelayMs: number;
}

/** Sampler settings that cross the thread boundary (plain data: no callbacks). */
export interface JobSampler {
  sampler: string;
  steps: number;
  temperature: number;
  seed: number;
  threshold: number;
}

export interface JobSpec {
  model: string;
  /** Normalised HWC pixels at the model's image size. */
  image: Float32Array;
  prompt: number[];
  sampler: JobSampler;
  /** Send a `step` message after every sampling step. */
  stream: boolean;
}

export type ToWorker =
  | { type: 'job'; id: number; job: JobSpec }
  | { type: 'cancel'; id: number }
  | { type: 'export'; id: number; model: string };

export interface LoadedModelInfo {
  name: string;
  dir: string;
  config: ModelConfig;
  tokenizer: object;
  prompt: string | null;
  stage: string | null;
  parameters: number;
}

export type FromWorker =
  | { type: 'ready'; models: LoadedModelInfo[] }
  | { type: 'fatal'; message: string }
  | { type: 'started'; id: number }
  | { type: 'step'; id: number; step: StepTrace; tokens: number[] }
  | { type: 'done'; id: number; tokens: number[]; steps: number; ms: number }
  | { type: 'cancelled'; id: number }
  | { type: 'failed'; id: number; message: string; user: boolean }
  | { type: 'exported'; id: number; vision: Uint8Array; language: Uint8Array; manifest: object };
