/**
 * The study's presets, training mixes, system names and evaluation settings: what
 * `rediff reproduce` runs, apart from how it runs it (./reproduce.ts).
 */
import { stepsForTokensPerStep } from '../sampling/caption.js';
import { samplerOptions } from '../sampling/sampler.js';
import { BLOCK_MIX } from '../training/base-model.js';
import type { TrainSettings } from '../training/run.js';
import type { MixOptions } from '../training/samples.js';
import type { EvalSetting } from './evaluate.js';

export interface StudyPreset {
  /** The base pipeline (`rediff pretrain --preset`) a `fromScratch` study trains first. */
  basePreset: 'quick' | 'full';
  trainScenes: number;
  testScenes: number;
  finetune: Omit<TrainSettings, 'stage' | 'mix'>;
  stage2: Omit<TrainSettings, 'stage' | 'mix'>;
  draftImages: number;
  draftTokensPerStep: number[];
  stage1Share: number;
  tokensPerStep: number[];
  /** Confidence threshold of the `threshold` and `threshold-rediff` evaluations. */
  threshold: number;
  /**
   * The canonical systems are also evaluated at this threshold: a model of one caption per image
   * is far more confident, and the paper systems' threshold commits too much at once for it.
   */
  canonicalThreshold: number;
  /**
   * Captions the oracle draws per scene: the first is the ceiling the report compares with, the
   * others show how it moves with the sample (docs/oracle.md).
   */
  oracleCaptions: number[];
}

const common = { batchSize: 32, minLrRatio: 0.1, weightDecay: 0.01, clipNorm: 1, seed: 0 };

export const STUDY_PRESETS: Record<'quick' | 'full', StudyPreset> = {
  /** Minutes, tiny model: proves the pipeline end to end (used by the test suite). */
  quick: {
    basePreset: 'quick',
    trainScenes: 400,
    testScenes: 12,
    finetune: { ...common, steps: 40, lr: 1e-3, warmupSteps: 5, checkpointEvery: 40 },
    stage2: { ...common, steps: 30, lr: 5e-4, warmupSteps: 5, checkpointEvery: 30 },
    draftImages: 24,
    draftTokensPerStep: [4, 8],
    stage1Share: 0.2,
    tokensPerStep: [1, 2, 4, 8],
    threshold: 0.9,
    canonicalThreshold: 0.9,
    oracleCaptions: [200, 50],
  },
  /**
   * The committed study, from the shipped base (small model): about 2 hours on 2 idle cores.
   * The rates stay below the base's own peak (1e-3) and the pretrained tower keeps the base's
   * 0.1x, so that more training does not first undo what the base learned.
   */
  full: {
    basePreset: 'full',
    trainScenes: 20000,
    testScenes: 200,
    finetune: { ...common, steps: 2000, lr: 3e-4, warmupSteps: 100, checkpointEvery: 500, visionLrScale: 0.1 },
    stage2: { ...common, steps: 1000, lr: 1.5e-4, warmupSteps: 50, checkpointEvery: 250, visionLrScale: 0.1 },
    draftImages: 1000,
    draftTokensPerStep: [1, 4, 8],
    stage1Share: 0.2,
    tokensPerStep: [1, 2, 4, 8],
    // The highest threshold (in steps of 0.05) at which ReDiff's threshold-rediff decoding
    // reached 4 tokens per step on the validation split (docs/design.md#threshold).
    threshold: 0.55,
    // The highest threshold (in steps of 0.05) at which the canonical Stage I pilots (two seeds)
    // wrote at least 4 caption tokens per step within 1 point of their own 1 tok/step score on
    // the validation split (docs/oracle.md#canonical-captions).
    canonicalThreshold: 0.95,
    oracleCaptions: [8000, 2000],
  },
};

/**
 * Every system keeps the base's last recipe: half the caption samples with the masks of block
 * decoding (training/base-model.ts BLOCK_MIX), so that more training does not undo it.
 */
export const BASELINE_MIX: MixOptions = BLOCK_MIX;
export const STAGE1_MIX: MixOptions = {
  objective: 'revision',
  syntaxNoise: 0.05,
  dynamicSyntaxNoise: false,
  correctionShare: 0.25,
  blockMask: BLOCK_MIX.blockMask,
};

/** The Stage I variants of the paper's Table 5 (the default "both" is the stage1 system). */
export const ABLATIONS: Record<string, MixOptions> = {
  'ablation-hallucination-only': { ...STAGE1_MIX, syntaxNoise: 0 },
  'ablation-syntax-only': { ...STAGE1_MIX, correctionShare: 0 },
  'ablation-dynamic': { ...STAGE1_MIX, dynamicSyntaxNoise: true },
};

/** The system id of the oracle with `captions` draws per scene: "oracle" for the preset's first. */
export function oracleSystemId(captions: number, index: number): string {
  return index === 0 ? 'oracle' : `oracle-${captions}`;
}

export const SYSTEM_LABELS: Record<string, string> = {
  base: 'base (LLaDA-V stand-in)',
  oracle: 'oracle (perfect model)',
  baseline: 'mask-pred training',
  stage1: 'ReDiff-Base (Stage I)',
  'stage2-only': 'Stage II only',
  rediff: 'ReDiff (Stage I + II)',
  'rediff-round2': 'ReDiff, 2 rounds',
  'ablation-hallucination-only': 'Stage I, hallucination only',
  'ablation-syntax-only': 'Stage I, syntax only',
  'ablation-dynamic': 'Stage I, dynamic ratio',
  'stage1-canonical': 'Stage I on canonical captions (beyond the paper)',
  'rediff-canonical': 'ReDiff on canonical captions (beyond the paper)',
};

/** The threshold samplers' settings at `threshold`. */
export function thresholdSettings(threshold: number, responseLength: number): EvalSetting[] {
  return ['threshold', 'threshold-rediff'].map((sampler) => ({
    label: `${sampler} @${threshold}`,
    sampler,
    tokensPerStep: null,
    options: samplerOptions(sampler, { steps: responseLength }, threshold),
  }));
}

/** The study's settings: the LLaDA and refining samplers at each rate, then both threshold samplers. */
export function studySettings(
  p: Pick<StudyPreset, 'tokensPerStep' | 'threshold'>,
  responseLength: number,
): EvalSetting[] {
  const settings: EvalSetting[] = [];
  for (const sampler of ['llada', 'rediff']) {
    for (const k of p.tokensPerStep) {
      settings.push({
        label: `${sampler} ${k} tok/step`,
        sampler,
        tokensPerStep: k,
        options: samplerOptions(sampler, { steps: stepsForTokensPerStep(responseLength, k) }),
      });
    }
  }
  return [...settings, ...thresholdSettings(p.threshold, responseLength)];
}
