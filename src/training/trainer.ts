/**
 * One optimisation step: feed a batch to the training graph (loss + every gradient in one
 * session.run), then AdamW in TypeScript.
 */
import { serializeGraph } from '../graph/onnx.js';
import { type HostTensor, SessionCache, f32 } from '../graph/runtime.js';
import { buildTrainingGraph } from '../model/architecture.js';
import { type ModelConfig, numPatches, patchDim } from '../model/config.js';
import { sequenceFeeds } from '../model/model.js';
import { type Params, paramSpecs } from '../model/params.js';
import { type AdamWOptions, type AdamWState, DEFAULT_ADAMW, adamWStep, newAdamWState } from './optimizer.js';
import type { TrainingSample } from './samples.js';

export interface StepResult {
  loss: number;
  gradNorm: number;
}

/** Training-graph feeds for a batch of samples. The batch mean is folded into the weights. */
export function batchFeeds(c: ModelConfig, samples: readonly TrainingSample[]): Record<string, HostTensor> {
  const b = samples.length;
  const per = numPatches(c) * patchDim(c);
  const patches = new Float32Array(b * per);
  const targets = new BigInt64Array(b * c.responseLength);
  const weights = new Float32Array(b * c.responseLength);
  samples.forEach((s, i) => {
    patches.set(s.patches, i * per);
    for (let j = 0; j < c.responseLength; j++) {
      targets[i * c.responseLength + j] = BigInt(s.corrupted.target[j]!);
      weights[i * c.responseLength + j] = s.weights[j]! / b;
    }
  });
  const { tokens, bias } = sequenceFeeds(c, samples.map((s) => ({ prompt: s.prompt, response: s.corrupted.input })));
  return {
    patches: f32([b, numPatches(c), patchDim(c)], patches),
    tokens,
    attn_bias: bias,
    targets: { dtype: 'int64', shape: [b * c.responseLength], data: targets },
    weights: f32([b * c.responseLength], weights),
  };
}

export class Trainer {
  private readonly sessions = new SessionCache();
  readonly optimizer: AdamWState;

  constructor(
    readonly config: ModelConfig,
    readonly params: Params,
    optimizer?: AdamWState,
    readonly adamw: AdamWOptions = DEFAULT_ADAMW,
  ) {
    this.optimizer = optimizer ?? newAdamWState(params);
  }

  /** Loss and gradients for a batch, without updating anything. */
  async lossAndGradients(samples: readonly TrainingSample[]): Promise<{ loss: number; grads: Map<string, Float32Array> }> {
    const c = this.config;
    const graph = await this.sessions.get(`train:${samples.length}`, () => serializeGraph(buildTrainingGraph(c, samples.length)));
    const feeds = batchFeeds(c, samples);
    for (const s of paramSpecs(c)) feeds[s.name] = f32(s.shape, this.params.get(s.name)!);
    const out = await graph.run(feeds);
    const grads = new Map<string, Float32Array>();
    for (const s of paramSpecs(c)) grads.set(s.name, out[`grad_${s.name}`]!.data as Float32Array);
    return { loss: (out.loss!.data as Float32Array)[0]!, grads };
  }

  /** Loss only (the same graph; gradients are computed and discarded). */
  async loss(samples: readonly TrainingSample[]): Promise<number> {
    return (await this.lossAndGradients(samples)).loss;
  }

  /** One AdamW step at learning rate `lr`. A non-finite loss leaves the weights untouched. */
  async step(samples: readonly TrainingSample[], lr: number): Promise<StepResult> {
    const { loss, grads } = await this.lossAndGradients(samples);
    if (!Number.isFinite(loss)) return { loss, gradNorm: Number.NaN };
    const gradNorm = adamWStep(this.params, grads, this.optimizer, lr, this.adamw);
    return { loss, gradNorm };
  }

  async dispose(): Promise<void> {
    await this.sessions.clear();
  }
}
