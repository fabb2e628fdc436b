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
import { serializeGraph } from '../../graph/onnx.js';
import { SessionCache, f32 } from '../../graph/runtime.js';
import {
  FULL_TRAINING,
  type TrainingGraphOptions,
  buildProbeGraph,
  buildTrainingGraph,
  graphParams,
  probePathParams,
} from '../../model/architecture.js';
import { type ModelConfig, numPatches, patchDim } from '../../model/config.js';
import type { Params } from '../../model/params.js';
import { paramSpecs } from '../../model/params.js';
import { patchCellTargets } from '../../benchmark/cells.js';
import { MASK_PREDICTION_MIX, type TrainingSample, makeSample, recordPatches } from '../samples.js';
import type { TrainingRecord } from '../../data/training-record.js';
import { batchFeeds } from '../trainer.js';
import { padResponse } from '../corruption.js';
import { stepRng } from '../run.js';
import { SPECIAL_TOKENS } from '../../tokenizer/word.js';
import { MASK_ID } from '../../tokenizer/tokenizer.js';
import { DiffusionVLM } from '../../model/model.js';
import { COLORS, SHAPES, SIZES } from '../../benchmark/scene.js';
import { PLACE_WORDS } from '../../benchmark/lexicon.js';
import { benchmarkTokenizer } from '../../benchmark/captioner.js';
import { captionPieces, evaluateParse } from '../../benchmark/metrics.js';
import { parseCaption } from '../../benchmark/parser.js';
import type { Scene } from '../../benchmark/scene.js';
import type { WordTokenizer } from '../../tokenizer/word.js';
import { UserError } from '../../util/errors.js';

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

export function batches<T>(xs: readonly T[], size = BATCH): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += size) out.push(xs.slice(i, i + size));
  return out;
}

/** The per-cell probe's accuracy on `records` (benchmark scenes). */
export async function probeAccuracy(
  c: ModelConfig,
  params: Params,
  records: readonly TrainingRecord[],
): Promise<ProbeAccuracy> {
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
  return {
    cells: cellsRight / cells,
    objects: objectsRight / Math.max(1, objects),
    images: imagesRight / records.length,
    n: records.length,
  };
}

/**
 * Mean captioning loss (mask prediction, fixed masks) of a model over records, by a graph that computes no gradient.
 */
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
    return records.map((r, i) =>
      makeSample(c, { ...r, corrections: [] }, stepRng(seed, i), MASK_PREDICTION_MIX, vocab),
    );
  }

  /** Mean loss of the samples; `images` (default: each sample's own) replaces the patches. */
  async loss(samples: readonly TrainingSample[]): Promise<number> {
    const c = this.config;
    let total = 0;
    for (const chunk of batches(samples)) {
      const b = chunk.length;
      const graph = await this.sessions.get(`loss:${b}`, () =>
        serializeGraph(buildTrainingGraph(c, b, 'float32', this.graphOptions)),
      );
      const feeds = batchFeeds(c, chunk, this.graphOptions);
      for (const s of paramSpecs(c)) if (this.read(s.name)) feeds[s.name] = f32(s.shape, this.params.get(s.name)!);
      total += ((await graph.run(feeds, ['loss'])).loss!.data[0] as number) * b;
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
export async function imageReliance(
  c: ModelConfig,
  params: Params,
  records: readonly TrainingRecord[],
  seed = 1,
): Promise<ImageReliance> {
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
export async function textOnlyLoss(
  c: ModelConfig,
  params: Params,
  records: readonly TrainingRecord[],
  seed = 1,
): Promise<number> {
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

/** Image embeddings of each record, in order. */
async function recordEmbeds(
  c: ModelConfig,
  model: DiffusionVLM,
  records: readonly TrainingRecord[],
): Promise<Float32Array[]> {
  const embeds: Float32Array[] = [];
  for (const chunk of batches(records)) {
    const e = await model.encodeImages(chunk.map((r) => recordPatches(c, r.rgb)));
    const per = e.length / chunk.length;
    chunk.forEach((_, i) => embeds.push(e.slice(i * per, (i + 1) * per)));
  }
  return embeds;
}

/** A record's first reference caption, padded with EOS to the response length, with every token in `hidden` masked. */
export function hiddenWordsRow(
  c: ModelConfig,
  record: TrainingRecord,
  hidden: ReadonlySet<number>,
): { prompt: number[]; response: number[]; target: number[] } {
  const target = padResponse(record.captions[0]!, c.responseLength);
  return { prompt: record.prompt, response: target.map((t) => (hidden.has(t) ? MASK_ID : t)), target };
}

/** A reference caption with some words hidden, and the model's guesses put back. */
interface ReadBack {
  /** The reference, padded with EOS to the response length. */
  target: number[];
  /**
   * The reference with every hidden word replaced by the model's argmax, with the right image and with another scene's.
   */
  rightImage: number[];
  shuffledImage: number[];
}

/**
 * Each record's first reference caption with every token in `hidden` masked, read back by the
 * model in one pass (argmax, among `choices` when given), once with the record's own image and
 * once with another scene's (half the records away).
 */
async function readBackHidden(
  model: DiffusionVLM,
  embeds: readonly Float32Array[],
  records: readonly TrainingRecord[],
  hidden: ReadonlySet<number>,
  choices?: readonly number[],
): Promise<ReadBack[]> {
  const c = model.config;
  const shift = Math.floor(records.length / 2);
  const pick = (at: Float32Array): number =>
    choices ? choices.reduce((best, id) => (at[id]! > at[best]! ? id : best), choices[0]!) : argmax(at);
  const out: ReadBack[] = [];
  for (const chunk of batches(records.map((_, i) => i))) {
    const rows = chunk.map((i) => hiddenWordsRow(c, records[i]!, hidden));
    const read: number[][][] = [];
    for (const image of [(i: number) => i, (i: number) => (i + shift) % records.length]) {
      const e = new Float32Array(chunk.length * embeds[0]!.length);
      chunk.forEach((i, k) => e.set(embeds[image(i)]!, k * embeds[0]!.length));
      const logits = await model.logits(e, rows);
      read.push(
        rows.map((row, k) =>
          row.response.map((t, j) =>
            t === MASK_ID
              ? pick(
                  logits.subarray(
                    (k * c.responseLength + j) * c.vocabSize,
                    (k * c.responseLength + j + 1) * c.vocabSize,
                  ),
                )
              : t,
          ),
        ),
      );
    }
    rows.forEach((row, k) => out.push({ target: row.target, rightImage: read[0]![k]!, shuffledImage: read[1]![k]! }));
  }
  return out;
}

/** Runs `read` with the model and every record's image embeddings. */
async function withEmbeddedRecords<T>(
  c: ModelConfig,
  params: Params,
  records: readonly TrainingRecord[],
  read: (model: DiffusionVLM, embeds: Float32Array[]) => Promise<T>,
): Promise<T> {
  if (records.length < 2) throw new UserError('binding needs at least 2 scenes');
  const model = new DiffusionVLM(c, benchmarkTokenizer(), params);
  try {
    return await read(model, await recordEmbeds(c, model, records));
  } finally {
    await model.dispose();
  }
}

/**
 * Binding, teacher-forced: each record's first reference caption is shown whole except the
 * words of one attribute kind, which are masked; the score is the share predicted right. The
 * rest of the caption says where each object is, so only a model that reads the object at that
 * place off the image beats chance (1/8 for colour and shape, 1/2 for size); for place words,
 * what each object is, so only a model that finds that object in the image does.
 */
export async function attributeBinding(
  c: ModelConfig,
  params: Params,
  records: readonly TrainingRecord[],
): Promise<AttributeBinding[]> {
  const tokenizer = benchmarkTokenizer();
  return withEmbeddedRecords(c, params, records, async (model, embeds) => {
    const out: AttributeBinding[] = [];
    for (const [kind, words] of Object.entries(BOUND_ATTRIBUTES) as [AttributeKind, readonly string[]][]) {
      const ids = new Set(words.map((w) => tokenizer.encode(w)[0]!));
      const right = { hits: 0, n: 0 };
      const shuffled = { hits: 0, n: 0 };
      for (const r of await readBackHidden(model, embeds, records, ids)) {
        r.target.forEach((t, j) => {
          if (!ids.has(t)) return;
          right.n++;
          shuffled.n++;
          if (r.rightImage[j] === t) right.hits++;
          if (r.shuffledImage[j] === t) shuffled.hits++;
        });
      }
      out.push({
        kind,
        rightImage: right.hits / Math.max(1, right.n),
        shuffledImage: shuffled.hits / Math.max(1, shuffled.n),
        words: right.n,
      });
    }
    return out;
  });
}

export interface PlaceClaims {
  /**
   * Share of the reference's place claims that still hold once the model has named the places, with the right image and
   * another scene's.
   */
  rightImage: number;
  shuffledImage: number;
  /** Place claims in the references. */
  claims: number;
}

/** Place claims of `ids` (a caption, EOS-padded) about `scene`: how many the caption makes and how many hold. */
export function placeClaimsHeld(
  scene: Scene,
  ids: readonly number[],
  tokenizer: WordTokenizer,
): { claims: number; held: number } {
  const ev = evaluateParse(scene, parseCaption(captionPieces(ids, tokenizer)));
  let claims = 0;
  let held = 0;
  ev.parse.claims.forEach((claim, i) => {
    if (claim.kind !== 'place') return;
    claims++;
    if (ev.verdicts[i]!.holds) held++;
  });
  return { claims, held };
}

/**
 * Where each object is, teacher-forced and proof against synonyms: every place word of a
 * reference caption is hidden ("in the [MASK] [MASK] corner"), the model names them all in one
 * pass (the most likely place word at each), and the caption is parsed and scored. The result
 * is the share of the reference's place claims that still hold. Word-level binding cannot say
 * this: "upper" for "top", or "middle" for "center", is as right as the reference's word.
 */
export async function placeClaims(
  c: ModelConfig,
  params: Params,
  records: readonly TrainingRecord[],
): Promise<PlaceClaims> {
  const tokenizer = benchmarkTokenizer();
  const placeIds = PLACE_WORDS.map((w) => tokenizer.encode(w)[0]!);
  const read = await withEmbeddedRecords(c, params, records, (model, embeds) =>
    readBackHidden(model, embeds, records, new Set(placeIds), placeIds),
  );
  let claims = 0;
  let right = 0;
  let shuffled = 0;
  read.forEach((r, i) => {
    const scene = records[i]!.scene;
    if (!scene) throw new UserError('place claims need benchmark scenes (records with their scene graph)');
    claims += placeClaimsHeld(scene, r.target, tokenizer).claims;
    right += placeClaimsHeld(scene, r.rightImage, tokenizer).held;
    shuffled += placeClaimsHeld(scene, r.shuffledImage, tokenizer).held;
  });
  return { rightImage: right / Math.max(1, claims), shuffledImage: shuffled / Math.max(1, claims), claims };
}
