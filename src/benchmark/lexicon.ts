/**
 * The benchmark's closed lexicon: every word the captioner, the hallucination injector and the
 * prompt can emit, and the word tables the parser reads. One module so that writer and reader
 * cannot drift apart.
 */
import { type Color, type Place, type Relation, type Shape, type Size, COLORS, PLACES, SHAPES } from './scene.js';

export const SHAPE_PLURAL: Readonly<Record<Shape, string>> = {
  circle: 'circles',
  square: 'squares',
  triangle: 'triangles',
  star: 'stars',
  hexagon: 'hexagons',
  ring: 'rings',
  diamond: 'diamonds',
  cross: 'crosses',
};

/** Number words the parser reads; scenes have at most 9 objects. */
export const NUMBER_WORDS = ['one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine'] as const;
export function numberWord(n: number): string {
  const w = NUMBER_WORDS[n - 1];
  if (w === undefined) throw new RangeError(`no number word for ${n}`);
  return w;
}

/** Size words: 'big' is a synonym of 'large'. */
export const SIZE_WORDS: Readonly<Record<string, Size>> = { small: 'small', large: 'large', big: 'large' };

/**
 * Colour words the parser reads: the object colours plus 'black', the background. A caption
 * that calls an object black is readable and simply false.
 */
export type ColorWord = Color | 'black';
export const PARSE_COLORS: readonly ColorWord[] = [...COLORS, 'black'];

/** Generic nouns ("five shapes", "a single object"). */
export const GENERIC_SINGULAR = ['shape', 'object'] as const;
export const GENERIC_PLURAL = ['shapes', 'objects'] as const;

/**
 * Place phrases. Several per place for variety; token counts repeat across places (3, 4 and 5
 * tokens) so a position error can always be injected as a same-length swap.
 */
export const PLACE_PHRASES: Readonly<Record<Place, readonly string[]>> = {
  'top left': ['in the top left', 'in the top left corner', 'in the upper left corner'],
  top: ['at the top', 'in the top center'],
  'top right': ['in the top right', 'in the top right corner', 'in the upper right corner'],
  left: ['on the left', 'on the left side'],
  center: ['in the center', 'in the middle'],
  right: ['on the right', 'on the right side'],
  'bottom left': ['in the bottom left', 'in the bottom left corner', 'in the lower left corner'],
  bottom: ['at the bottom', 'in the bottom center'],
  'bottom right': ['in the bottom right', 'in the bottom right corner', 'in the lower right corner'],
};

/** The words of place phrases that say where ("top", "left", "middle", ...), not "in the ... corner". */
export const PLACE_WORDS: readonly string[] = [
  ...new Set(Object.values(PLACE_PHRASES).flatMap((ps) => ps.flatMap((p) => p.split(' ')))),
].filter((w) => !['in', 'the', 'at', 'on', 'corner', 'side'].includes(w));

/**
 * The word groups the grounding masks hide, one group at a time: an object's colour, shape or
 * size words, or every place word (only the image says where the objects are).
 */
export const GROUNDED_WORDS: Readonly<Record<'colour' | 'shape' | 'size' | 'place', readonly string[]>> = {
  colour: COLORS,
  shape: [...SHAPES, ...SHAPES.map((s) => SHAPE_PLURAL[s])],
  size: Object.keys(SIZE_WORDS),
  place: PLACE_WORDS,
};

/** All place phrases as token arrays, longest first (the parser takes the longest match). */
export const PLACE_TABLE: readonly { tokens: readonly string[]; place: Place }[] = PLACES.flatMap((place) =>
  PLACE_PHRASES[place].map((p) => ({ tokens: p.split(' '), place })),
).sort((a, b) => b.tokens.length - a.tokens.length);

/** Relation phrases ("to the left of" and the shorter "left of"). */
export const RELATION_PHRASES: Readonly<Record<Relation, readonly string[]>> = {
  'left of': ['to the left of', 'left of'],
  'right of': ['to the right of', 'right of'],
  above: ['above'],
  below: ['below'],
};
export const RELATION_TABLE: readonly { tokens: readonly string[]; relation: Relation }[] = (
  Object.keys(RELATION_PHRASES) as Relation[]
)
  .flatMap((relation) => RELATION_PHRASES[relation].map((p) => ({ tokens: p.split(' '), relation })))
  .sort((a, b) => b.tokens.length - a.tokens.length);

/** The instruction given with every image. */
export const BENCHMARK_PROMPT = 'describe the image in detail .';

/** Function words of the caption grammar (see parser.ts for the sentence forms). */
const FUNCTION_WORDS = [
  'there',
  'is',
  'are',
  'a',
  'an',
  'another',
  'the',
  'in',
  'at',
  'on',
  'of',
  'to',
  'and',
  'image',
  'picture',
  'shows',
  'contains',
  'total',
  'only',
  'single',
  'visible',
  'shown',
  'you',
  'we',
  'can',
  'see',
  'be',
  'seen',
  'sits',
  'sit',
  'background',
  'rest',
  'empty',
  'top',
  'bottom',
  'left',
  'right',
  'upper',
  'lower',
  'center',
  'middle',
  'corner',
  'side',
  'above',
  'below',
  'describe',
  'detail',
];

/**
 * Every word and punctuation mark of the benchmark, in a fixed order (the order defines token
 * ids after the special tokens, so never reorder; append only).
 */
export const BENCHMARK_VOCABULARY: readonly string[] = Object.freeze(
  dedupe([
    '.',
    ',',
    ...NUMBER_WORDS,
    ...FUNCTION_WORDS,
    ...GENERIC_SINGULAR,
    ...GENERIC_PLURAL,
    ...Object.keys(SIZE_WORDS),
    ...PARSE_COLORS,
    ...SHAPES,
    ...SHAPES.map((s) => SHAPE_PLURAL[s]),
  ]),
);

function dedupe(words: string[]): string[] {
  return [...new Set(words)];
}

/** Article for a word: "an orange", "a red". */
export function article(nextWord: string): 'a' | 'an' {
  return /^[aeiou]/.test(nextWord) ? 'an' : 'a';
}
