/**
 * One optimisation step: feed a batch to the training graph (loss + every gradient in one
 * session.run), then AdamW in TypeScript.
 */
import { serializeGraph } from '../graph/onnx.js';
import { type HostTensor, SessionCache, f32 } from '../graph/runtime.js';
import { FULL_TRAINING, type TrainingGraphOptions, buildTrainingGraph, graphParams } from '../model/architecture.js';
import { type ModelConfig, numPatches, patchDim } from '../model/config.js';
import { MASKED_KEY_BIAS, sequenceFeeds } from '../model/model.js';
import { type Params, paramSpecs } from '../model/params.js';
import type { AdamWState } from '../model/io.js';
import { type AdamWOptions, DEFAULT_ADAMW, adamWStep, newAdamWState } from './optimizer.js';
import type { TrainingSample } from './samples.js';

export interface StepResult {
  loss: number;
  gradNorm: number;
}

/** Training-graph feeds for a batch of samples. The batch mean is folded into the weights. */
export function batchFeeds(
  c: ModelConfig,
  samples: readonly TrainingSample[],
  o: TrainingGraphOptions = FULL_TRAINING,
): Record<string, HostTensor> {
  const b = samples.length;
  const np = numPatches(c);
  const per = np * patchDim(c);
  const patches = new Float32Array(b * per);
  if (o.loss === 'cells') {
    const targets = new BigInt64Array(b * np);
    samples.forEach((s, i) => {
      if (!s.cells) throw new Error('a cells sample needs per-patch targets');
      patches.set(s.patches, i * per);
      for (let j = 0; j < np; j++) targets[i * np + j] = BigInt(s.cells[j]!);
    });
    return {
      patches: f32([b, np, patchDim(c)], patches),
      cell_targets: { dtype: 'int64', shape: [b * np], data: targets },
      cell_weights: f32([b * np], new Float32Array(b * np).fill(1 / (b * np))),
    };
  }
  const targets = new BigInt64Array(b * c.responseLength);
  const weights = new Float32Array(b * c.responseLength);
  samples.forEach((s, i) => {
    patches.set(s.patches, i * per);
    for (let j = 0; j < c.responseLength; j++) {
      targets[i * c.responseLength + j] = BigInt(s.corrupted.target[j]!);
      weights[i * c.responseLength + j] = s.weights[j]! / b;
    }
  });
  const { tokens, bias } = sequenceFeeds(
    c,
    samples.map((s) => ({ prompt: s.prompt, response: s.corrupted.input })),
  );
  if (!o.withImage) {
    // Text only: the image slots are hidden from every query.
    const t = bias.shape[3]!;
    const data = bias.data as Float32Array;
    for (let i = 0; i < b; i++) data.fill(MASKED_KEY_BIAS, i * t, i * t + np);
  }
  return {
    ...(o.withImage ? { patches: f32([b, np, patchDim(c)], patches) } : {}),
    tokens,
    attn_bias: bias,
    targets: { dtype: 'int64', shape: [b * c.responseLength], data: targets },
    weights: f32([b * c.responseLength], weights),
  };
}

/** What a trainer optimises: the graph's loss and trainable parameters, and per-parameter learning-rate multipliers. */
export interface TrainingPlan {
  graph: TrainingGraphOptions;
  /** Multiplier of the learning rate for a parameter (default 1). */
  lrScale?: (name: string) => number;
}

export const FULL_PLAN: TrainingPlan = { graph: FULL_TRAINING };

export class Trainer {
  private readonly sessions = new SessionCache();
  readonly optimizer: AdamWState;
  /** The trainable parameters (the same arrays as in `params`, updated in place). */
  private readonly trainable: Params;
  private readonly read: (name: string) => boolean;

  constructor(
    readonly config: ModelConfig,
    readonly params: Params,
    optimizer?: AdamWState,
    readonly adamw: AdamWOptions = DEFAULT_ADAMW,
    readonly plan: TrainingPlan = FULL_PLAN,
  ) {
    this.optimizer = optimizer ?? newAdamWState(params);
    this.read = graphParams(config, plan.graph);
    this.trainable = new Map([...params].filter(([n]) => this.read(n) && plan.graph.trainable(n)));
    if (this.trainable.size === 0) throw new Error('the training plan trains no parameter');
  }

  /** Loss and gradients of the trainable parameters for a batch, without updating anything. */
  async lossAndGradients(
    samples: readonly TrainingSample[],
  ): Promise<{ loss: number; grads: Map<string, Float32Array> }> {
    const c = this.config;
    const o = this.plan.graph;
    const graph = await this.sessions.get(`train:${samples.length}`, () =>
      serializeGraph(buildTrainingGraph(c, samples.length, 'float32', o)),
    );
    const feeds = batchFeeds(c, samples, o);
    for (const s of paramSpecs(c)) if (this.read(s.name)) feeds[s.name] = f32(s.shape, this.params.get(s.name)!);
    const out = await graph.run(feeds);
    const grads = new Map<string, Float32Array>();
    for (const name of this.trainable.keys()) grads.set(name, out[`grad_${name}`]!.data as Float32Array);
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
    const gradNorm = adamWStep(this.trainable, grads, this.optimizer, lr, this.adamw, this.plan.lrScale);
    return { loss, gradNorm };
  }

  async dispose(): Promise<void> {
    await this.sessions.clear();
  }
}
