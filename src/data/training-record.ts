/**
 * What every training stage reads: an image with its captions and same-length corrections
 * (hallucination pairs in Stage I, an expert's corrections of drafts in Stage II).
 */
import type { Scene } from '../benchmark/scene.js';

/** A same-length correction: the whole wrong response, the whole right one, and the spans that differ. */
export interface SpanPair {
  wrong: number[];
  correct: number[];
  spans: { start: number; length: number }[];
  /**
   * Score the tokens outside the spans too, as clean tokens the model must keep (Stage II's keep
   * term, see src/training/self-correction.ts); without it only the spans are in the loss (the paper's Eq. 5).
   */
  keepRest?: boolean;
}

export interface TrainingRecord {
  /** RGB bytes (HWC) at the model's image size; patchified per batch to keep memory low. */
  rgb: Uint8Array;
  prompt: number[];
  /** Correct captions (token ids, unpadded); one is drawn per sample. */
  captions: number[][];
  /** Hallucination pairs (Stage I) or expert corrections of drafts (Stage II). */
  corrections: SpanPair[];
  /** Benchmark scenes only: the class of each 3x3 grid cell (benchmark/cells.ts), for the vision stage. */
  cells?: Uint8Array;
  /** Benchmark scenes only: the scene graph, for the diagnosis's parsed checks. */
  scene?: Scene;
}
