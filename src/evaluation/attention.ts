/**
 * Where a place word looks. With every place word of a reference caption hidden, the model must
 * find the object the sentence names and read its cell: the place word's query has to gather the
 * object's words from the text, then attend to that object's image token. This measures both
 * halves, per layer and head: the attention a hidden place word pays to the named object's image
 * token against the scene's other objects' tokens, and to the object's shape word against the
 * other objects' shape words (docs/design.md#relative-position-bias).
 */
import { benchmarkTokenizer } from '../benchmark/captioner.js';
import { PLACE_WORDS, SHAPE_PLURAL } from '../benchmark/lexicon.js';
import { type Scene, placeIndex } from '../benchmark/scene.js';
import { type ModelConfig, numPatches, sequenceLength } from '../model/config.js';
import { DiffusionVLM } from '../model/model.js';
import type { Params } from '../model/params.js';
import { recordPatches } from '../training/samples.js';
import type { TrainingRecord } from '../data/training-record.js';
import { UserError } from '../util/errors.js';
import { batches, hiddenWordsRow } from '../training/stages/diagnosis.js';

export interface HeadLooks {
  /** Mean attention on the named object's image token, and on each other object's (mean over them). */
  objectImage: number;
  otherImage: number;
  /** Share of place phrases where the named object's token draws more than every other object's. */
  objectWins: number;
  /** Mean attention on the named object's shape word, and on all other objects' shape words together. */
  objectShapeWord: number;
  otherShapeWords: number;
}

export interface PlaceAttention {
  /** [layer][head]. */
  layers: HeadLooks[][];
  /** Place phrases measured (their first word's query). */
  phrases: number;
  scenes: number;
}

/** Sentences that relate or count objects do not name one object; they are left out. */
const NOT_ONE_OBJECT = new Set(['of', 'above', 'below', 'are', 'contains', 'visible', 'shapes', 'objects']);

export interface Phrase {
  row: number;
  /** Response position of the phrase's first place word. */
  at: number;
  object: number;
  /** Response positions of the named object's shape words and of the other objects'. */
  ownShapes: number[];
  otherShapes: number[];
}

/**
 * The place phrases of one caption whose object a shape word in the same sentence names (scenes with distinct shapes
 * only).
 */
export function placePhrases(scene: Scene, words: readonly string[], row: number): Phrase[] {
  const shapeOf = (w: string): number => scene.objects.findIndex((o) => o.shape === w || SHAPE_PLURAL[o.shape] === w);
  const places = new Set(PLACE_WORDS);
  const out: Phrase[] = [];
  let start = 0;
  for (let end = 0; end <= words.length; end++) {
    if (end < words.length && words[end] !== '.') continue;
    const sentence = words.slice(start, end);
    if (!sentence.some((w) => NOT_ONE_OBJECT.has(w))) {
      const shapes = sentence.flatMap((w, i) => (shapeOf(w) >= 0 ? [{ at: start + i, object: shapeOf(w) }] : []));
      sentence.forEach((w, i) => {
        if (!places.has(w) || places.has(sentence[i - 1] ?? '')) return;
        const at = start + i;
        // The nearest shape word names the phrase's object ("a red circle in the top left", "on the left, a red
        // circle").
        const named = shapes.reduce<(typeof shapes)[number] | undefined>(
          (best, s) => (!best || Math.abs(s.at - at) < Math.abs(best.at - at) ? s : best),
          undefined,
        );
        if (!named) return;
        out.push({
          row,
          at,
          object: named.object,
          ownShapes: shapes.filter((s) => s.object === named.object).map((s) => s.at),
          otherShapes: shapes.filter((s) => s.object !== named.object).map((s) => s.at),
        });
      });
    }
    start = end + 1;
  }
  return out;
}

/**
 * Where hidden place words look, on `records`' first reference captions (scenes of 2+ objects with distinct shapes).
 */
export async function placeAttention(
  c: ModelConfig,
  params: Params,
  records: readonly TrainingRecord[],
): Promise<PlaceAttention> {
  // An object's image token is its cell's: one token per cell of the scene's 3x3 grid.
  if (numPatches(c) !== 9)
    throw new UserError(`place attention needs one image token per grid cell (9), this model has ${numPatches(c)}`);
  const tokenizer = benchmarkTokenizer();
  const placeIds = new Set(PLACE_WORDS.map((w) => tokenizer.encode(w)[0]!));
  const usable = records.filter((r) => {
    if (!r.scene) throw new UserError('place attention needs benchmark scenes (records with their scene graph)');
    return r.scene.objects.length >= 2 && new Set(r.scene.objects.map((o) => o.shape)).size === r.scene.objects.length;
  });
  if (usable.length === 0)
    throw new UserError('place attention needs scenes of two or more objects of distinct shapes');
  const h = c.lm.heads;
  const t = sequenceLength(c);
  const np = numPatches(c);
  const start = np + c.promptLength;
  const sums = Array.from({ length: c.lm.layers }, () =>
    Array.from({ length: h }, () => ({
      objectImage: 0,
      otherImage: 0,
      objectWins: 0,
      objectShapeWord: 0,
      otherShapeWords: 0,
    })),
  );
  let phrases = 0;
  const model = new DiffusionVLM(c, tokenizer, params);
  try {
    for (const chunk of batches(usable)) {
      const rows = chunk.map((r) => hiddenWordsRow(c, r, placeIds));
      const probs = await model.attention(await model.encodeImages(chunk.map((r) => recordPatches(c, r.rgb))), rows);
      const found = chunk.flatMap((r, k) => placePhrases(r.scene!, tokenizer.pieces(rows[k]!.target), k));
      for (const p of found) {
        const cells = chunk[p.row]!.scene!.objects.map((o) => placeIndex(o.place));
        const own = cells[p.object]!;
        const others = cells.filter((_, j) => j !== p.object);
        probs.forEach((layer, l) => {
          for (let head = 0; head < h; head++) {
            const row = layer.subarray(
              ((p.row * h + head) * t + start + p.at) * t,
              ((p.row * h + head) * t + start + p.at + 1) * t,
            );
            const s = sums[l]![head]!;
            const otherMax = Math.max(...others.map((cell) => row[cell]!));
            s.objectImage += row[own]!;
            s.otherImage += others.reduce((a, cell) => a + row[cell]!, 0) / others.length;
            if (row[own]! > otherMax) s.objectWins++;
            s.objectShapeWord += p.ownShapes.reduce((a, q) => a + row[start + q]!, 0);
            s.otherShapeWords += p.otherShapes.reduce((a, q) => a + row[start + q]!, 0);
          }
        });
      }
      phrases += found.length;
    }
  } finally {
    await model.dispose();
  }
  if (phrases === 0) throw new UserError('no place phrase with a named object in these captions');
  const mean = (x: number): number => x / phrases;
  return {
    layers: sums.map((heads) =>
      heads.map((s) => ({
        objectImage: mean(s.objectImage),
        otherImage: mean(s.otherImage),
        objectWins: mean(s.objectWins),
        objectShapeWord: mean(s.objectShapeWord),
        otherShapeWords: mean(s.otherShapeWords),
      })),
    ),
    phrases,
    scenes: usable.length,
  };
}

/** One line per layer and head. */
export function formatPlaceAttention(a: PlaceAttention): string {
  const f = (x: number): string => x.toFixed(3);
  const lines = [
    `where hidden place words look (${a.phrases} place phrases in ${a.scenes} validation scenes of 2-6 objects with ` +
      `distinct shapes):`,
    'layer head | image token of the named object / of each other object (phrases where the named one draws most) | ' +
      'shape word of the named object / of the others',
  ];
  a.layers.forEach((heads, l) =>
    heads.forEach((x, h) => {
      lines.push(
        `${String(l).padStart(5)} ${String(h).padStart(4)} | ${f(x.objectImage)} / ${f(x.otherImage)} ` +
          `(${(100 * x.objectWins).toFixed(0)}%) | ${f(x.objectShapeWord)} / ${f(x.otherShapeWords)}`,
      );
    }),
  );
  return lines.join('\n');
}
