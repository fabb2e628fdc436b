/** Parameter shapes and initialisation for the vision-language model. */
import { Rng } from '../util/rng.js';
import {
  cellClasses,
  cellFactorColumns,
  type ModelConfig,
  numPatches,
  patchDim,
  relativeBuckets,
  sequenceLength,
  type TransformerConfig,
} from './config.js';

/**
 * normal: N(0, 0.02); unit: N(0, 1); residual: N(0, 0.02 / sqrt(2 * layers)); distance: the
 * relative position bias's ALiBi start (minus a per-head slope times the distance).
 */
export type InitKind = 'normal' | 'unit' | 'zeros' | 'ones' | 'residual' | 'distance';

export interface ParamSpec {
  name: string;
  shape: number[];
  init: InitKind;
}

export type Params = Map<string, Float32Array>;

export function blockSpecs(prefix: string, t: TransformerConfig): ParamSpec[] {
  const d = t.width;
  return [
    { name: `${prefix}.ln1.g`, shape: [d], init: 'ones' },
    { name: `${prefix}.ln1.b`, shape: [d], init: 'zeros' },
    { name: `${prefix}.attn.qkv.w`, shape: [d, 3 * d], init: 'normal' },
    { name: `${prefix}.attn.qkv.b`, shape: [3 * d], init: 'zeros' },
    { name: `${prefix}.attn.out.w`, shape: [d, d], init: 'residual' },
    { name: `${prefix}.attn.out.b`, shape: [d], init: 'zeros' },
    { name: `${prefix}.ln2.g`, shape: [d], init: 'ones' },
    { name: `${prefix}.ln2.b`, shape: [d], init: 'zeros' },
    { name: `${prefix}.mlp.fc.w`, shape: [d, t.ff], init: 'normal' },
    { name: `${prefix}.mlp.fc.b`, shape: [t.ff], init: 'zeros' },
    { name: `${prefix}.mlp.proj.w`, shape: [t.ff, d], init: 'residual' },
    { name: `${prefix}.mlp.proj.b`, shape: [d], init: 'zeros' },
  ];
}

/** Every parameter of the model, in a fixed order (the order of gradient outputs). */
export function paramSpecs(c: ModelConfig): ParamSpec[] {
  const dv = c.vision.width;
  const d = c.lm.width;
  const specs: ParamSpec[] = [
    { name: 'vision.patch.w', shape: [patchDim(c), dv], init: 'normal' },
    { name: 'vision.patch.b', shape: [dv], init: 'zeros' },
    { name: 'vision.pos', shape: [numPatches(c), dv], init: 'normal' },
  ];
  for (let i = 0; i < c.vision.layers; i++) specs.push(...blockSpecs(`vision.block${i}`, c.vision));
  specs.push(
    { name: 'vision.ln.g', shape: [dv], init: 'ones' },
    { name: 'vision.ln.b', shape: [dv], init: 'zeros' },
    { name: 'projector.fc1.w', shape: [dv, d], init: 'normal' },
    { name: 'projector.fc1.b', shape: [d], init: 'zeros' },
    { name: 'projector.fc2.w', shape: [d, d], init: 'normal' },
    { name: 'projector.fc2.b', shape: [d], init: 'zeros' },
  );
  if (c.imageNorm) specs.push({ name: 'projector.norm.g', shape: [d], init: 'ones' });
  if (c.imagePlace) specs.push({ name: 'projector.place', shape: [numPatches(c), d], init: 'unit' });
  if (c.imageCells) specs.push({ name: 'projector.cells', shape: [cellFactorColumns(c), d], init: 'unit' });
  specs.push(
    { name: 'lm.tok', shape: [c.vocabSize, d], init: 'normal' },
    { name: 'lm.pos', shape: [sequenceLength(c), d], init: 'normal' },
  );
  if (c.cellProbe) specs.push(...probeSpecs(c));
  for (let i = 0; i < c.lm.layers; i++) {
    specs.push(...blockSpecs(`lm.block${i}`, c.lm));
    if (c.relativeBias)
      specs.push({ name: `lm.block${i}.attn.rel`, shape: [relativeBuckets(c), c.lm.heads], init: 'distance' });
  }
  specs.push(
    { name: 'lm.ln.g', shape: [d], init: 'ones' },
    { name: 'lm.ln.b', shape: [d], init: 'zeros' },
    { name: 'lm.head.w', shape: [d, c.vocabSize], init: 'normal' },
    { name: 'lm.head.b', shape: [c.vocabSize], init: 'zeros' },
  );
  return specs;
}

/** The per-cell probe head on the vision tower (see ModelConfig.cellProbe). */
export function probeSpecs(c: ModelConfig): ParamSpec[] {
  return [
    { name: 'probe.cells.w', shape: [c.vision.width, cellClasses(c)], init: 'normal' },
    { name: 'probe.cells.b', shape: [cellClasses(c)], init: 'zeros' },
  ];
}

export function countParams(c: ModelConfig): number {
  return paramSpecs(c).reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
}

/** GPT-2 style init: N(0, 0.02), residual projections scaled by 1/sqrt(2 * layers). */
export function initParams(c: ModelConfig, seed: number): Params {
  const rng = new Rng(seed);
  const params: Params = new Map();
  const depth = c.vision.layers + c.lm.layers;
  for (const s of paramSpecs(c)) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    const std = s.init === 'residual' ? 0.02 / Math.sqrt(2 * depth) : s.init === 'unit' ? 1 : 0.02;
    if (s.init === 'ones') data.fill(1);
    else if (s.init === 'distance') data.set(distancePenalty(c));
    else if (s.init !== 'zeros') for (let i = 0; i < n; i++) data[i] = rng.normal() * std;
    params.set(s.name, data);
  }
  return params;
}

/**
 * ALiBi's bias as the relative bias's starting point: head k of H (from 1) adds -2^(-8k/H) per
 * position of distance between two text tokens (up to the largest offset), nothing for pairs with
 * an image token. Some heads thus start local, as a sentence's grammar is, and the rest nearly flat.
 */
export function distancePenalty(c: ModelConfig): Float32Array {
  const r = c.relativeBias ?? 0;
  const h = c.lm.heads;
  const out = new Float32Array(relativeBuckets(c) * h);
  for (let b = 0; b <= 2 * r; b++)
    for (let k = 0; k < h; k++) out[b * h + k] = Math.abs(b - r) * -(2 ** ((-8 * (k + 1)) / h)) || 0;
  return out;
}
