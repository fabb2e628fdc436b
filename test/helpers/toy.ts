import type { ModelConfig } from '../../src/model/config.js';
import type { TrainingRecord } from '../../src/data/training-record.js';
import { Rng } from '../../src/util/rng.js';

/** Random images with random fixed captions: a set a model can memorise. */
export function toyRecords(c: ModelConfig, n: number, seed: number, captionLength: number): TrainingRecord[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => ({
    rgb: Uint8Array.from({ length: c.imageSize * c.imageSize * 3 }, () => rng.int(256)),
    prompt: [4, 5],
    captions: [Array.from({ length: captionLength }, () => 4 + rng.int(c.vocabSize - 4))],
    corrections: [],
  }));
}
