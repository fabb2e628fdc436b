/**
 * The training stages of the base model, LLaDA-V's recipe at our scale, and what each one
 * optimises. The base is built in order: `vision` (the tower learns to see, our stand-in for
 * SigLIP's pretraining), `language` (the language model learns caption text alone, our
 * stand-in for LLaDA), `align` (the projector alone learns to hand the image to the frozen
 * language model), then `mask-prediction` fine-tunes everything. `revision` (Stage I) and
 * `self-correct` (Stage II) start from a base.
 */
import type { TrainingPlan } from '../trainer.js';

export const TRAIN_STAGES = ['vision', 'language', 'align', 'mask-prediction', 'revision', 'self-correct'] as const;
export type TrainStage = (typeof TRAIN_STAGES)[number];

export const isTrainStage = (s: string): s is TrainStage => (TRAIN_STAGES as readonly string[]).includes(s);

const isVision = (n: string): boolean => n.startsWith('vision.');

/** What stage `stage` optimises; `visionLrScale` slows a pretrained tower down during fine-tuning. */
export function stagePlan(stage: TrainStage, visionLrScale = 1): TrainingPlan {
  switch (stage) {
    case 'vision':
      return { graph: { loss: 'cells', withImage: true, trainable: (n) => isVision(n) || n.startsWith('probe.') } };
    case 'language':
      return { graph: { loss: 'caption', withImage: false, trainable: (n) => n.startsWith('lm.') } };
    case 'align':
      return { graph: { loss: 'caption', withImage: true, trainable: (n) => n.startsWith('projector.') } };
    default:
      return {
        graph: { loss: 'caption', withImage: true, trainable: (n) => !n.startsWith('probe.') },
        ...(visionLrScale !== 1 ? { lrScale: (n: string) => (isVision(n) ? visionLrScale : 1) } : {}),
      };
  }
}
