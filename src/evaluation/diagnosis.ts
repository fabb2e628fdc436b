/**
 * Does the model look at the image? Checks that can fail:
 *  - the vision tower's per-cell probe: what share of grid cells (and of whole images) it reads
 *    right, on scenes it never trained on;
 *  - the captioning loss with each image against the same captions with another scene's image
 *    (same masks): a model that uses the image does clearly worse with the wrong one;
 *  - binding: with a reference caption shown whole except its colour (or shape, or size) words,
 *    how often the model names them right, with the right image and with another scene's. A
 *    model that binds words to objects reads them off the image; a blind one is at chance.
 */
import { serializeGraph } from '../graph/onnx.js';
import { SessionCache, f32 } from '../graph/runtime.js';
import { FULL_TRAINING, type TrainingGraphOptions, buildProbeGraph, buildTrainingGraph, graphParams, probePathParams } from '../model/architecture.js';
import { type ModelConfig, numPatches, patchDim } from '../model/config.js';
import type { Params } from '../model/params.js';
import { paramSpecs } from '../model/params.js';
import { patchCellTargets } from '../benchmark/cells.js';
import { MASK_PREDICTION_MIX, type TrainingRecord, type TrainingSample, makeSample, recordPatches } from '../training/samples.js';
import { batchFeeds } from '../training/trainer.js';
import { stepRng } from '../training/run.js';
import { EOS_ID, MASK_ID, SPECIAL_TOKENS } from '../tokenizer/word.js';
import { DiffusionVLM } from '../model/model.js';
import { COLORS, SHAPES, SIZES } from '../benchmark/scene.js';
import { PLACE_WORDS } from '../benchmark/lexicon.js';
import { benchmarkTokenizer } from '../benchmark/captioner.js';
import { UserError } from '../util/errors.js';

export interface ProbeAccuracy {
  /** Share of grid cells whose class (empty, or shape x colour x size) is read right. */
  cells: number;
  /** Share of non-empty cells read right. */
  objects: number;
  /** Share of images with every cell right. */
  images: number;
  n: number;
}

const BATCH = 32;

/** Index of the largest value (the first one on a tie). */
function argmax(xs: Float32Array): number {
  let best = 0;
  for (let v = 1; v < xs.length; v++) if (xs[v]! > xs[best]!) best = v;
  return best;
}

function batches<T>(xs: readonly T[], size = BATCH): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += size) out.push(xs.slice(i, i + size));
  return out;
}

/** The per-cell probe's accuracy on `records` (benchmark scenes). */
export async function probeAccuracy(c: ModelConfig, params: Params, records: readonly TrainingRecord[]): Promise<ProbeAccuracy> {
  if (!c.cellProbe) throw new UserError('this model has no per-cell probe (it was not built from the vision stage)');
  const sessions = new SessionCache();
  const np = numPatches(c);
  const grid = Math.sqrt(np);
  let cells = 0;
  let cellsRight = 0;
  let objects = 0;
  let objectsRight = 0;
  let imagesRight = 0;
  try {
    for (const chunk of batches(records)) {
      const b = chunk.length;
      const graph = await sessions.get(`probe:${b}`, () => serializeGraph(buildProbeGraph(c, b)));
      const patches = new Float32Array(b * np * patchDim(c));
      chunk.forEach((r, i) => patches.set(recordPatches(c, r.rgb), i * np * patchDim(c)));
      const feeds: Record<string, ReturnType<typeof f32>> = { patches: f32([b, np, patchDim(c)], patches) };
      for (const s of paramSpecs(c)) if (probePathParams(s.name)) feeds[s.name] = f32(s.shape, params.get(s.name)!);
      const logits = (await graph.run(feeds)).cell_logits!.data as Float32Array;
      const k = logits.length / (b * np);
      chunk.forEach((r, i) => {
        if (!r.cells) throw new UserError('probe accuracy needs benchmark scenes');
        const want = patchCellTargets(r.cells, grid);
        let all = true;
        for (let j = 0; j < np; j++) {
          const row = logits.subarray((i * np + j) * k, (i * np + j + 1) * k);
          const ok = argmax(row) === want[j];
          cells++;
          if (ok) cellsRight++;
          else all = false;
          if (want[j] !== 0) {
            objects++;
            if (ok) objectsRight++;
          }
        }
        if (all) imagesRight++;
      });
    }
  } finally {
    await sessions.clear();
  }
  return { cells: cellsRight / cells, objects: objectsRight / Math.max(1, objects), images: imagesRight / records.length, n: records.length };
}

/** Mean captioning loss (mask prediction, fixed masks) of a model over records, by a graph that computes no gradient. */
export class CaptionLossMeter {
  private readonly sessions = new SessionCache();
  private readonly read: (name: string) => boolean;
  private readonly graphOptions: TrainingGraphOptions;

  constructor(
    readonly config: ModelConfig,
    readonly params: Params,
    withImage = true,
  ) {
    this.graphOptions = { ...FULL_TRAINING, withImage, trainable: () => false };
    this.read = graphParams(config, this.graphOptions);
  }

  /** The samples the meter scores: one masked caption per record, the same for the same seed. */
  samples(records: readonly TrainingRecord[], seed: number): TrainingSample[] {
    const c = this.config;
    const vocab = { firstOrdinaryId: SPECIAL_TOKENS.length, vocabSize: c.vocabSize };
    return records.map((r, i) => makeSample(c, { ...r, corrections: [] }, stepRng(seed, i), MASK_PREDICTION_MIX, vocab));
  }

  /** Mean loss of the samples; `images` (default: each sample's own) replaces the patches. */
  async loss(samples: readonly TrainingSample[]): Promise<number> {
    const c = this.config;
    let total = 0;
    for (const chunk of batches(samples)) {
      const b = chunk.length;
      const graph = await this.sessions.get(`loss:${b}`, () => serializeGraph(buildTrainingGraph(c, b, 'float32', this.graphOptions)));
      const feeds = batchFeeds(c, chunk, this.graphOptions);
      for (const s of paramSpecs(c)) if (this.read(s.name)) feeds[s.name] = f32(s.shape, this.params.get(s.name)!);
      total += (await graph.run(feeds, ['loss'])).loss!.data[0] as number * b;
    }
    return total / samples.length;
  }

  async dispose(): Promise<void> {
    await this.sessions.clear();
  }
}

export interface ImageReliance {
  /** Mean loss with each caption's own image, and with another scene's image (same masks). */
  rightImage: number;
  shuffledImage: number;
  n: number;
}

/**
 * Captioning loss with the right image against a shuffled one: each sample keeps its masks and
 * gets the patches of the record `n/2` places on (a different scene for any n >= 2).
 */
export async function imageReliance(c: ModelConfig, params: Params, records: readonly TrainingRecord[], seed = 1): Promise<ImageReliance> {
  if (records.length < 2) throw new UserError('image reliance needs at least 2 scenes');
  const meter = new CaptionLossMeter(c, params);
  try {
    const right = meter.samples(records, seed);
    const shift = Math.floor(records.length / 2);
    const shuffled = right.map((s, i) => ({ ...s, patches: right[(i + shift) % right.length]!.patches }));
    return { rightImage: await meter.loss(right), shuffledImage: await meter.loss(shuffled), n: records.length };
  } finally {
    await meter.dispose();
  }
}

/** Text-only captioning loss (the image hidden), the language stage's own measure. */
export async function textOnlyLoss(c: ModelConfig, params: Params, records: readonly TrainingRecord[], seed = 1): Promise<number> {
  const meter = new CaptionLossMeter(c, params, false);
  try {
    return await meter.loss(meter.samples(records, seed));
  } finally {
    await meter.dispose();
  }
}

/**
 * The words binding is measured on, by kind. `place` is the other direction: the caption says
 * what each object is, and the model must find where it is.
 */
export const BOUND_ATTRIBUTES = { colour: COLORS, shape: SHAPES, size: SIZES, place: PLACE_WORDS } as const;
export type AttributeKind = keyof typeof BOUND_ATTRIBUTES;

export interface AttributeBinding {
  kind: AttributeKind;
  /** Share of the masked attribute words predicted right (argmax), with the right image and another scene's. */
  rightImage: number;
  shuffledImage: number;
  /** Masked words scored. */
  words: number;
}

/**
 * Binding, teacher-forced: each record's first reference caption is shown whole except the
 * words of one attribute kind, which are masked; the score is the share predicted right. The
 * rest of the caption says where each object is, so only a model that reads the object at that
 * place off the image beats chance (1/8 for colour and shape, 1/2 for size); for place words,
 * what each object is, so only a model that finds that object in the image does.
 */
export async function attributeBinding(c: ModelConfig, params: Params, records: readonly TrainingRecord[]): Promise<AttributeBinding[]> {
  if (records.length < 2) throw new UserError('binding needs at least 2 scenes');
  const tokenizer = benchmarkTokenizer();
  const model = new DiffusionVLM(c, tokenizer, params);
  const shift = Math.floor(records.length / 2);
  try {
    const embeds: Float32Array[] = [];
    for (const chunk of batches(records)) {
      const e = await model.encodeImages(chunk.map((r) => recordPatches(c, r.rgb)));
      const per = e.length / chunk.length;
      chunk.forEach((_, i) => embeds.push(e.slice(i * per, (i + 1) * per)));
    }
    const out: AttributeBinding[] = [];
    for (const [kind, words] of Object.entries(BOUND_ATTRIBUTES) as [AttributeKind, readonly string[]][]) {
      const ids = new Set(words.map((w) => tokenizer.encode(w)[0]!));
      const right = { hits: 0, n: 0 };
      const shuffled = { hits: 0, n: 0 };
      const indices = records.map((_, i) => i);
      for (const chunk of batches(indices)) {
        const rows = chunk.map((i) => {
          const target = [...records[i]!.captions[0]!];
          while (target.length < c.responseLength) target.push(EOS_ID);
          return { prompt: records[i]!.prompt, response: target.map((t) => (ids.has(t) ? MASK_ID : t)), target };
        });
        for (const [tally, image] of [[right, (i: number) => i], [shuffled, (i: number) => (i + shift) % records.length]] as const) {
          const e = new Float32Array(chunk.length * embeds[0]!.length);
          chunk.forEach((i, k) => e.set(embeds[image(i)]!, k * embeds[0]!.length));
          const logits = await model.logits(e, rows);
          rows.forEach((row, k) => row.response.forEach((t, j) => {
            if (t !== MASK_ID) return;
            const at = logits.subarray((k * c.responseLength + j) * c.vocabSize, (k * c.responseLength + j + 1) * c.vocabSize);
            tally.n++;
            if (argmax(at) === row.target[j]) tally.hits++;
          }));
        }
      }
      out.push({ kind, rightImage: right.hits / Math.max(1, right.n), shuffledImage: shuffled.hits / Math.max(1, shuffled.n), words: right.n });
    }
    return out;
  } finally {
    await model.dispose();
  }
}
