/**
 * The sample mixer: turns a training record (src/data/training-record.ts) into one corrupted
 * training row for the chosen objective and mix.
 */
import { normaliseRgb, patchify } from '../data/image.js';
import type { TrainingRecord } from '../data/training-record.js';
import { patchCellTargets } from '../benchmark/cells.js';
import { type ModelConfig, numPatches } from '../model/config.js';
import { UserError } from '../util/errors.js';
import type { Rng } from '../util/rng.js';
import {
  type CorruptedResponse,
  type NoiseOptions,
  blockCorrectionSample,
  blockMaskResponse,
  corruptResponse,
  padResponse,
  spanCorrectionSample,
} from './corruption.js';
import { type Objective, lossWeights } from './loss.js';
import { MASK_ID } from '../tokenizer/tokenizer.js';

/**
 * Refuses, before any step, records the model cannot take: a prompt longer than its prompt
 * length, or a caption or correction with no room for the EOS (padResponse would stop the run
 * mid-way). Subword tokenizers make this likelier than the benchmark's words.
 */
export function checkRecordLengths(
  c: Pick<ModelConfig, 'promptLength' | 'responseLength'>,
  records: readonly TrainingRecord[],
): void {
  let prompts = 0;
  let longestPrompt = 0;
  let responses = 0;
  let longestResponse = 0;
  for (const r of records) {
    if (r.prompt.length > c.promptLength) prompts++;
    longestPrompt = Math.max(longestPrompt, r.prompt.length);
    for (const ids of [...r.captions, ...r.corrections.flatMap((p) => [p.wrong, p.correct])]) {
      if (ids.length >= c.responseLength) responses++;
      longestResponse = Math.max(longestResponse, ids.length);
    }
  }
  if (prompts > 0)
    throw new UserError(
      `${prompts} training prompt(s) have more tokens than the model's prompt length ${c.promptLength} (the longest ` +
        `${longestPrompt})`,
    );
  if (responses > 0)
    throw new UserError(
      `${responses} training caption(s) have no room for the EOS in the model's ${c.responseLength} response ` +
        `positions (the longest has ${longestResponse} tokens); shorten them`,
    );
}

export interface MixOptions {
  objective: Objective;
  /** q: probability of replacing an unmasked token with a random ordinary token. */
  syntaxNoise: number;
  /** Ablation: q = t while t < 0.1. */
  dynamicSyntaxNoise: boolean;
  /** Share of samples drawn as span corrections (when the record has any). */
  correctionShare: number;
  /**
   * Grounding masks (mask-prediction only): in this share of samples, every token of one
   * randomly chosen word group (say all colour words) is masked as well. A caption names an
   * object's colour several times ("a red circle ... the circle is red"), so random masking
   * nearly always leaves a copy to read; with every mention hidden only the image can answer
   * (docs/design.md#base-pipeline). These tokens carry the sample's usual 1/p weight.
   */
  groundingMask?: { share: number; groups: readonly (readonly number[])[] };
  /**
   * Block masks: in this share of the caption samples, the masks semi-autoregressive decoding in
   * blocks of `blockLength` meets while it writes (corruption.ts blockMaskResponse) instead of
   * uniform ones; a caption that ends inside its first block gets uniform masks.
   */
  blockMask?: { share: number; blockLength: number };
}

export const MASK_PREDICTION_MIX: MixOptions = {
  objective: 'mask-prediction',
  syntaxNoise: 0,
  dynamicSyntaxNoise: false,
  correctionShare: 0,
};

export interface TrainingSample {
  patches: Float32Array;
  prompt: number[];
  corrupted: CorruptedResponse;
  weights: Float32Array;
  /** The vision stage: each patch's cell class. */
  cells?: Uint8Array;
}

export function recordPatches(c: ModelConfig, rgb: Uint8Array): Float32Array {
  return patchify(normaliseRgb(rgb), c.imageSize, c.patchSize);
}

/** A vision-stage sample: the image and what each patch's grid cell holds (no caption). */
export function makeCellSample(c: ModelConfig, record: TrainingRecord): TrainingSample {
  if (!record.cells)
    throw new UserError('the vision stage needs benchmark scenes (their scene graphs say what each cell holds)');
  const empty: CorruptedResponse = { input: [], target: [], types: [], p: 1, t: Number.NaN };
  return {
    patches: recordPatches(c, record.rgb),
    prompt: record.prompt,
    corrupted: empty,
    weights: new Float32Array(0),
    cells: patchCellTargets(record.cells, Math.sqrt(numPatches(c))),
  };
}

export function makeSample(
  c: ModelConfig,
  record: TrainingRecord,
  rng: Rng,
  mix: MixOptions,
  vocab: { firstOrdinaryId: number; vocabSize: number },
): TrainingSample {
  let corrupted: CorruptedResponse;
  if (
    record.corrections.length > 0 &&
    mix.correctionShare > 0 &&
    (record.captions.length === 0 || rng.next() < mix.correctionShare)
  ) {
    const pair = rng.choice(record.corrections);
    const wrong = padResponse(pair.wrong, c.responseLength, 'correction draft');
    const correct = padResponse(pair.correct, c.responseLength, 'correction target');
    // A Stage II draft also in the block context the refining sampler revises it in.
    const keepRest = pair.keepRest === true;
    const bm = mix.blockMask;
    const block =
      keepRest && bm && bm.share > 0 && rng.next() < bm.share
        ? blockCorrectionSample(wrong, correct, pair.spans, rng, bm.blockLength)
        : null;
    corrupted = block ?? spanCorrectionSample(wrong, correct, pair.spans, keepRest);
  } else {
    const clean = padResponse(rng.choice(record.captions), c.responseLength);
    const bm = mix.blockMask;
    const block =
      bm && bm.share > 0 && rng.next() < bm.share
        ? blockMaskResponse(clean, rng, bm.blockLength, { noise: noiseOptions(mix, vocab) })
        : null;
    corrupted = block ?? uniformSample(clean, rng, mix, vocab);
  }
  return {
    patches: recordPatches(c, record.rgb),
    prompt: record.prompt,
    corrupted,
    weights: lossWeights(corrupted, mix.objective),
  };
}

/** The syntax noise of a mix: the revision objective's, none for mask prediction. */
function noiseOptions(mix: MixOptions, vocab: { firstOrdinaryId: number; vocabSize: number }): NoiseOptions {
  return {
    syntaxNoise: mix.objective === 'revision' ? mix.syntaxNoise : 0,
    dynamicSyntaxNoise: mix.objective === 'revision' && mix.dynamicSyntaxNoise,
    ...vocab,
  };
}

/** Uniform masks (with the revision objective's noise), and the grounding masks where the mix asks. */
function uniformSample(
  clean: number[],
  rng: Rng,
  mix: MixOptions,
  vocab: { firstOrdinaryId: number; vocabSize: number },
): CorruptedResponse {
  const corrupted = corruptResponse(clean, rng, noiseOptions(mix, vocab));
  const gm = mix.groundingMask;
  return gm && gm.groups.length > 0 && rng.next() < gm.share
    ? maskGroup(corrupted, new Set(rng.choice(gm.groups)))
    : corrupted;
}

/** `sample` with every token whose target is in `ids` masked as well. */
function maskGroup(sample: CorruptedResponse, ids: ReadonlySet<number>): CorruptedResponse {
  const input = [...sample.input];
  const types = [...sample.types];
  sample.target.forEach((t, i) => {
    if (ids.has(t)) {
      input[i] = MASK_ID;
      types[i] = 'mask';
    }
  });
  return { ...sample, input, types };
}
