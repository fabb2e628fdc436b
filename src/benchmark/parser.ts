/**
 * Caption -> claims, each tied to its token span (tokens = splitWords pieces).
 *
 * The parser is scene-agnostic: it only reads what the text asserts; metrics.ts judges the
 * claims against a scene. It reads every sentence form the captioner writes (listed below) and
 * a little more (adjective order, "big", is/are agreement), so model output that is fine but
 * not verbatim captioner style still counts as readable.
 *
 * Sentence forms (INTRO = "a|an|another|one|two.. [size] [colour] shape(s)", REF = "the [size]
 * [colour] shape", PLACE = a phrase of lexicon.ts, PLACES = PLACE (, PLACE)* and PLACE):
 *   there is|are N shapes|objects [in the image] [on a COLOUR background] .     (total)
 *   the image|picture shows|contains N shapes [on a COLOUR background] .         (total)
 *   in total , there are N shapes [in the image] .                               (total)
 *   N shapes are visible|shown [in the image] [on a COLOUR background] .          (total)
 *   there is|are / you|we can see / the image shows  ITEM (, ITEM)* and ITEM .
 *       ITEM = INTRO [PLACES]  |  INTRO , one PLACE (, one PLACE)* and one PLACE
 *   PLACE , there is|are INTRO .          PLACE is|sits INTRO .
 *   INTRO is|are|sits|sit|can be seen PLACES .
 *   REF is|sits CLAUSE (and CLAUSE)* .    CLAUSE = PLACE | RELATION REF | SIZE | COLOUR
 *   the background is COLOUR .            the rest of the image is empty .
 *
 * Broken text (repetitions, fragments, token soup, a cut-off last sentence) never throws: a
 * sentence that does not parse as a whole is scanned for the longest readable pieces (any
 * sentence form, an ITEM, a REF clause), their claims are kept, and every other token is
 * reported in `unreadable`.
 */
import { splitWords } from '../tokenizer/word.js';
import {
  type ColorWord,
  GENERIC_PLURAL,
  GENERIC_SINGULAR,
  NUMBER_WORDS,
  PARSE_COLORS,
  PLACE_TABLE,
  RELATION_TABLE,
  SHAPE_PLURAL,
  SIZE_WORDS,
} from './lexicon.js';
import { type Place, type Relation, type Shape, type Size, SHAPES } from './scene.js';

/** Half-open token range [start, end). */
export type Span = [number, number];

/** A noun phrase's descriptors: what an object must look like to match it. */
export interface Descriptor {
  size?: Size;
  color?: ColorWord;
  /** Undefined for the generic nouns "shape" and "object". */
  shape?: Shape;
  plural: boolean;
  /** Determiner through noun. */
  span: Span;
  /** Token indices of the words that carry each descriptor. */
  at: { det?: number; size?: number; color?: number; noun: number };
}

/** The subject of a place claim: an introduced mention (index into `claims`) or a definite reference. */
export type Subject = { mention: number } | { ref: Descriptor };

/** "There are five shapes": the scene has exactly `count` objects. */
export interface TotalClaim {
  kind: 'total';
  span: Span;
  count: number;
  /** The number words ("five", "a single"). */
  countSpan: Span;
}
/**
 * An introduced object or group: "two small red circles" (exact: exactly two objects match) or
 * "a small red circle" / "another ..." (one more matching object than already described).
 */
export interface ObjectClaim {
  kind: 'object';
  span: Span;
  count: number;
  exact: boolean;
  desc: Descriptor;
  countSpan: Span;
}
/** "... in the top left": an object matching the subject is at that place. `span` = the place phrase. */
export interface PlaceClaim {
  kind: 'place';
  span: Span;
  place: Place;
  subject: Subject;
}
/** "the red circle is to the left of the blue star". `span` = the relation phrase. */
export interface RelationClaim {
  kind: 'relation';
  span: Span;
  relation: Relation;
  subject: Descriptor;
  object: Descriptor;
}
/** "the circle is red": `span` = the attribute word. */
export interface AttributeClaim {
  kind: 'attribute';
  span: Span;
  subject: Descriptor;
  size?: Size;
  color?: ColorWord;
}
/** "on a black background": `span` = the colour word. */
export interface BackgroundClaim {
  kind: 'background';
  span: Span;
  color: ColorWord;
}
export type Claim = TotalClaim | ObjectClaim | PlaceClaim | RelationClaim | AttributeClaim | BackgroundClaim;
export type ClaimKind = Claim['kind'];

export interface SentenceParse {
  /** Including the terminator, if any. */
  span: Span;
  /** Ends with "." (or "!" / "?"); the last sentence of a cut-off caption does not. */
  terminated: boolean;
  /** The whole sentence, terminator included, is one sentence form. */
  complete: boolean;
}

export interface ParseResult {
  tokens: string[];
  sentences: SentenceParse[];
  claims: Claim[];
  /** Maximal runs of tokens no readable piece covers (terminators of broken sentences excepted). */
  unreadable: Span[];
}

const TERMINATORS = new Set(['.', '!', '?']);
const NUMBER_VALUE = new Map<string, number>(NUMBER_WORDS.map((w, i) => [w, i + 1]));
const SHAPE_SINGULAR = new Set<string>(SHAPES);
const SHAPE_FROM_PLURAL = new Map<string, Shape>(SHAPES.map((s) => [SHAPE_PLURAL[s], s]));
const COLOR_SET = new Set<string>(PARSE_COLORS);
const GENERIC_SG = new Set<string>(GENERIC_SINGULAR);
const GENERIC_PL = new Set<string>(GENERIC_PLURAL);
const PLACE_STARTS = new Set(PLACE_TABLE.map((p) => p.tokens[0]!));

/** A position in one sentence plus the claims read so far; every parse step restores on failure. */
class Cursor {
  constructor(
    readonly t: readonly string[],
    public i: number,
    readonly end: number,
    readonly claims: Claim[],
  ) {}
  peek(k = 0): string | undefined {
    const j = this.i + k;
    return j < this.end ? this.t[j] : undefined;
  }
  eat(...words: string[]): string | null {
    const w = this.peek();
    if (w !== undefined && words.includes(w)) {
      this.i++;
      return w;
    }
    return null;
  }
  eatSeq(words: readonly string[]): boolean {
    for (let k = 0; k < words.length; k++) if (this.peek(k) !== words[k]) return false;
    this.i += words.length;
    return true;
  }
  save(): [number, number] {
    return [this.i, this.claims.length];
  }
  restore([i, n]: [number, number]): void {
    this.i = i;
    this.claims.length = n;
  }
  /** Runs `f`; on a falsy result restores the cursor and claims. */
  attempt<T>(f: () => T | null | false): T | null {
    const s = this.save();
    const r = f();
    if (r === null || r === false) {
      this.restore(s);
      return null;
    }
    return r;
  }
}

// ---- phrases ----

/** [size] [colour] noun (either adjective order), noun agreeing with `plural`. */
function parseDescriptor(c: Cursor, plural: boolean, det?: number): Descriptor | null {
  return c.attempt(() => {
    const start = det ?? c.i;
    const at: Descriptor['at'] = { noun: -1 };
    if (det !== undefined) at.det = det;
    let size: Size | undefined;
    let color: ColorWord | undefined;
    for (let k = 0; k < 2; k++) {
      const w = c.peek();
      if (w !== undefined && size === undefined && w in SIZE_WORDS) {
        size = SIZE_WORDS[w];
        at.size = c.i++;
      } else if (w !== undefined && color === undefined && COLOR_SET.has(w)) {
        color = w as ColorWord;
        at.color = c.i++;
      }
    }
    const noun = c.peek();
    if (noun === undefined) return null;
    let shape: Shape | undefined;
    if (plural ? SHAPE_FROM_PLURAL.has(noun) : SHAPE_SINGULAR.has(noun)) {
      shape = plural ? SHAPE_FROM_PLURAL.get(noun) : (noun as Shape);
    } else if (!(plural ? GENERIC_PL : GENERIC_SG).has(noun)) return null;
    at.noun = c.i++;
    const d: Descriptor = { plural, span: [start, c.i], at };
    if (size !== undefined) d.size = size;
    if (color !== undefined) d.color = color;
    if (shape !== undefined) d.shape = shape;
    return d;
  });
}

/** INTRO: pushes an object claim and returns its index in c.claims. */
function parseIntro(c: Cursor): number | null {
  return c.attempt(() => {
    const detAt = c.i;
    const det = c.peek();
    if (det === undefined) return null;
    let count: number;
    let exact: boolean;
    if (det === 'a' || det === 'an' || det === 'another') {
      count = 1;
      exact = false;
    } else if (NUMBER_VALUE.has(det)) {
      count = NUMBER_VALUE.get(det)!;
      exact = true;
    } else return null;
    c.i++;
    const desc = parseDescriptor(c, count > 1, detAt);
    if (!desc) return null;
    c.claims.push({ kind: 'object', span: desc.span, count, exact, desc, countSpan: [detAt, detAt + 1] });
    return c.claims.length - 1;
  });
}

/** REF: "the [size] [colour] noun" (singular). */
function parseRef(c: Cursor): Descriptor | null {
  return c.attempt(() => {
    const detAt = c.i;
    if (!c.eat('the')) return null;
    return parseDescriptor(c, false, detAt);
  });
}

function parsePlace(c: Cursor): { place: Place; span: Span } | null {
  if (!PLACE_STARTS.has(c.peek() ?? '')) return null;
  for (const p of PLACE_TABLE) {
    const start = c.i;
    if (c.eatSeq(p.tokens)) return { place: p.place, span: [start, c.i] };
  }
  return null;
}

function parseRelation(c: Cursor): { relation: Relation; span: Span } | null {
  for (const r of RELATION_TABLE) {
    const start = c.i;
    if (c.eatSeq(r.tokens)) return { relation: r.relation, span: [start, c.i] };
  }
  return null;
}

function pushPlace(c: Cursor, subject: Subject): boolean {
  const p = parsePlace(c);
  if (!p) return false;
  c.claims.push({ kind: 'place', span: p.span, place: p.place, subject });
  return true;
}

/** Consumes a list separator ("," / "and" / ", and") only if `next` then parses. */
function separated(c: Cursor, next: () => boolean): boolean {
  return (
    c.attempt(() => {
      const sep = c.eat(',', 'and');
      if (!sep) return false;
      if (sep === ',') c.eat('and');
      return next();
    }) !== null
  );
}

/** PLACES: one or more places for the same subject. */
function parsePlaceList(c: Cursor, subject: Subject): boolean {
  if (!pushPlace(c, subject)) return false;
  while (separated(c, () => pushPlace(c, subject)));
  return true;
}

/** "one PLACE (, one PLACE)* and one PLACE" after a plural intro. */
function parseOneList(c: Cursor, subject: Subject): boolean {
  const one = (): boolean => c.attempt(() => c.eat('one') !== null && pushPlace(c, subject)) !== null;
  if (!one()) return false;
  while (separated(c, one));
  return true;
}

/** ITEM = INTRO [PLACES | , ONE-LIST] */
function parseItem(c: Cursor): boolean {
  const idx = parseIntro(c);
  if (idx === null) return false;
  const subject: Subject = { mention: idx };
  if (!parsePlaceList(c, subject)) {
    c.attempt(() => c.eat(',') !== null && parseOneList(c, subject));
  }
  return true;
}

function parseItemList(c: Cursor): boolean {
  if (!parseItem(c)) return false;
  while (separated(c, () => parseItem(c)));
  return true;
}

/** N shapes | only one shape | a single shape -> total claim. */
function parseCountNP(c: Cursor): boolean {
  return (
    c.attempt(() => {
      const start = c.i;
      let count: number;
      if (c.eatSeq(['only', 'one']) || c.eatSeq(['a', 'single'])) count = 1;
      else {
        const w = c.peek();
        if (w === undefined || !NUMBER_VALUE.has(w)) return false;
        count = NUMBER_VALUE.get(w)!;
        c.i++;
      }
      const countSpan: Span = [start, c.i];
      const noun = c.eat(...(count === 1 ? GENERIC_SINGULAR : GENERIC_PLURAL));
      if (!noun) return false;
      c.claims.push({ kind: 'total', span: [start, c.i], count, countSpan });
      return true;
    }) !== null
  );
}

const eatImage = (c: Cursor): boolean =>
  c.attempt(() => c.eat('in') !== null && c.eat('the') !== null && c.eat('image', 'picture') !== null) !== null;

function eatBackground(c: Cursor): boolean {
  return (
    c.attempt(() => {
      if (!c.eatSeq(['on', 'a'])) return false;
      const at = c.i;
      const color = c.eat(...PARSE_COLORS);
      if (!color || !c.eat('background')) return false;
      c.claims.push({ kind: 'background', span: [at, at + 1], color: color as ColorWord });
      return true;
    }) !== null
  );
}

function eatIntroLead(c: Cursor): boolean {
  return (
    c.attempt(
      () =>
        (c.eat('there') !== null && c.eat('is', 'are') !== null) ||
        (c.eat('you', 'we') !== null && c.eatSeq(['can', 'see'])),
    ) !== null ||
    c.attempt(
      () => c.eat('the') !== null && c.eat('image', 'picture') !== null && c.eat('shows', 'contains') !== null,
    ) !== null
  );
}

/** CLAUSE after "REF is": a place, a relation to another REF, or an attribute word. */
function parseClause(c: Cursor, subject: Descriptor): boolean {
  if (pushPlace(c, { ref: subject })) return true;
  const rel = c.attempt(() => {
    const r = parseRelation(c);
    if (!r) return null;
    const object = parseRef(c);
    if (!object) return null;
    c.claims.push({ kind: 'relation', span: r.span, relation: r.relation, subject, object });
    return true;
  });
  if (rel) return true;
  const w = c.peek();
  if (w !== undefined && w in SIZE_WORDS) {
    c.claims.push({ kind: 'attribute', span: [c.i, c.i + 1], subject, size: SIZE_WORDS[w]! });
    c.i++;
    return true;
  }
  if (w !== undefined && COLOR_SET.has(w)) {
    c.claims.push({ kind: 'attribute', span: [c.i, c.i + 1], subject, color: w as ColorWord });
    c.i++;
    return true;
  }
  return false;
}

type Form = (c: Cursor) => boolean;

/** The sentence forms (bodies, without the terminator). */
const FORMS: readonly Form[] = [
  // there is|are N shapes [in the image] [on a COLOUR background]
  (c) =>
    c.eat('there') !== null && c.eat('is', 'are') !== null && parseCountNP(c) && (eatImage(c), eatBackground(c), true),
  // the image shows N shapes [on a COLOUR background]
  (c) =>
    c.eat('the') !== null &&
    c.eat('image', 'picture') !== null &&
    c.eat('shows', 'contains') !== null &&
    parseCountNP(c) &&
    (eatBackground(c), true),
  // in total , there are N shapes [in the image]  |  in total , the image shows N shapes
  (c) =>
    c.eatSeq(['in', 'total', ',']) &&
    ((c.attempt(() => c.eat('there') !== null && c.eat('is', 'are') !== null && parseCountNP(c)) !== null &&
      (eatImage(c), true)) ||
      c.attempt(
        () =>
          c.eat('the') !== null &&
          c.eat('image', 'picture') !== null &&
          c.eat('shows', 'contains') !== null &&
          parseCountNP(c),
      ) !== null),
  // N shapes are visible [in the image] [on a COLOUR background]
  (c) =>
    parseCountNP(c) &&
    c.eat('is', 'are') !== null &&
    c.eat('visible', 'shown') !== null &&
    (eatImage(c), eatBackground(c), true),
  // there are ITEMS
  (c) => eatIntroLead(c) && parseItemList(c),
  // PLACE , there is INTRO
  (c) => {
    const s = c.save();
    const p = parsePlace(c);
    if (!p || !c.eat(',') || !eatIntroLead(c)) return (c.restore(s), false);
    const idx = parseIntro(c);
    if (idx === null) return (c.restore(s), false);
    c.claims.push({ kind: 'place', span: p.span, place: p.place, subject: { mention: idx } });
    return true;
  },
  // PLACE is INTRO
  (c) => {
    const s = c.save();
    const p = parsePlace(c);
    if (!p || !c.eat('is', 'are', 'sits')) return (c.restore(s), false);
    const idx = parseIntro(c);
    if (idx === null) return (c.restore(s), false);
    c.claims.push({ kind: 'place', span: p.span, place: p.place, subject: { mention: idx } });
    return true;
  },
  // INTRO is|can be seen PLACES
  (c) => {
    const idx = parseIntro(c);
    if (idx === null) return false;
    if (!c.eat('is', 'are', 'sits', 'sit') && !c.eatSeq(['can', 'be', 'seen'])) return false;
    return parsePlaceList(c, { mention: idx });
  },
  // REF is CLAUSE (and CLAUSE)*
  (c) => {
    const ref = parseRef(c);
    if (!ref || !c.eat('is', 'sits') || !parseClause(c, ref)) return false;
    while (c.attempt(() => c.eat('and') !== null && parseClause(c, ref)) !== null);
    return true;
  },
  // the background is COLOUR
  (c) => {
    if (!c.eatSeq(['the', 'background', 'is'])) return false;
    const at = c.i;
    const color = c.eat(...PARSE_COLORS);
    if (!color) return false;
    c.claims.push({ kind: 'background', span: [at, at + 1], color: color as ColorWord });
    return true;
  },
  // the rest of the image is empty
  (c) => c.eatSeq(['the', 'rest', 'of', 'the']) && c.eat('image', 'picture') !== null && c.eatSeq(['is', 'empty']),
];

/** Fragments the recovery scan also accepts: an ITEM alone, or a REF clause. */
const FRAGMENTS: readonly Form[] = [...FORMS, (c) => parseItem(c)];

/** Runs a form from c.i; returns the end position, or -1 (cursor and claims restored). */
function tryForm(c: Cursor, form: Form): number {
  const s = c.save();
  let ok = false;
  try {
    ok = form(c);
  } catch {
    ok = false; // defensive: a parse step must never take the caller down
  }
  const endPos = c.i;
  if (!ok) {
    c.restore(s);
    return -1;
  }
  return endPos;
}

/** Splits into sentences at terminators; a trailing piece without one is a cut-off sentence. */
function sentenceSpans(tokens: readonly string[]): { span: Span; terminated: boolean }[] {
  const out: { span: Span; terminated: boolean }[] = [];
  let start = 0;
  for (let i = 0; i < tokens.length; i++) {
    if (TERMINATORS.has(tokens[i]!)) {
      out.push({ span: [start, i + 1], terminated: true });
      start = i + 1;
    }
  }
  if (start < tokens.length) out.push({ span: [start, tokens.length], terminated: false });
  return out;
}

function offsetClaim(claim: Claim, base: number): Claim {
  // Place subjects point into the sentence's claim list; make them global.
  if (claim.kind === 'place' && 'mention' in claim.subject)
    return { ...claim, subject: { mention: claim.subject.mention + base } };
  return claim;
}

function mapDescriptor(d: Descriptor, at: (i: number) => number, span: (s: Span) => Span): Descriptor {
  const m: Descriptor = { ...d, span: span(d.span), at: { noun: at(d.at.noun) } };
  if (d.at.det !== undefined) m.at.det = at(d.at.det);
  if (d.at.size !== undefined) m.at.size = at(d.at.size);
  if (d.at.color !== undefined) m.at.color = at(d.at.color);
  return m;
}

/** A claim with all token positions translated (claims read from a reduced token list). */
function mapClaim(c: Claim, at: (i: number) => number): Claim {
  const span = (s: Span): Span => [at(s[0]), at(s[1] - 1) + 1];
  switch (c.kind) {
    case 'total':
      return { ...c, span: span(c.span), countSpan: span(c.countSpan) };
    case 'object':
      return { ...c, span: span(c.span), countSpan: span(c.countSpan), desc: mapDescriptor(c.desc, at, span) };
    case 'place':
      return {
        ...c,
        span: span(c.span),
        subject: 'ref' in c.subject ? { ref: mapDescriptor(c.subject.ref, at, span) } : c.subject,
      };
    case 'relation':
      return {
        ...c,
        span: span(c.span),
        subject: mapDescriptor(c.subject, at, span),
        object: mapDescriptor(c.object, at, span),
      };
    case 'attribute':
      return { ...c, span: span(c.span), subject: mapDescriptor(c.subject, at, span) };
    case 'background':
      return { ...c, span: span(c.span) };
  }
}

/** Reads tokens[start, end) as one sentence form after dropping immediate repeats, or null. */
function readWithoutRepeats(
  tokens: readonly string[],
  start: number,
  end: number,
): { claims: Claim[]; dropped: number[] } | null {
  const keep: number[] = [];
  const dropped: number[] = [];
  for (let i = start; i < end; i++) (i > start && tokens[i] === tokens[i - 1] ? dropped : keep).push(i);
  if (dropped.length === 0) return null;
  const reduced = keep.map((i) => tokens[i]!);
  for (const form of FORMS) {
    const local: Claim[] = [];
    const c = new Cursor(reduced, 0, reduced.length, local);
    if (tryForm(c, form) === reduced.length)
      return { claims: local.map((cl) => mapClaim(cl, (i) => keep[i]!)), dropped };
  }
  return null;
}

/** Parses a caption (text, or already split token pieces). Never throws. */
export function parseCaption(input: string | readonly string[]): ParseResult {
  const tokens = typeof input === 'string' ? splitWords(input) : [...input];
  const claims: Claim[] = [];
  const sentences: SentenceParse[] = [];
  const unreadable: Span[] = [];
  const markUnreadable = (i: number): void => {
    const last = unreadable[unreadable.length - 1];
    if (last && last[1] === i) last[1] = i + 1;
    else unreadable.push([i, i + 1]);
  };

  for (const { span, terminated } of sentenceSpans(tokens)) {
    const bodyEnd = terminated ? span[1] - 1 : span[1];
    // 1. The whole body as one sentence form.
    let whole: Claim[] | null = null;
    if (bodyEnd > span[0]) {
      for (const form of FORMS) {
        const local: Claim[] = [];
        const c = new Cursor(tokens, span[0], bodyEnd, local);
        if (tryForm(c, form) === bodyEnd) {
          whole = local;
          break;
        }
      }
    }
    if (whole) {
      const base = claims.length;
      for (const cl of whole) claims.push(offsetClaim(cl, base));
      sentences.push({ span, terminated, complete: terminated });
      continue;
    }
    // 2. Recovery: longest readable piece at each position, the rest unreadable.
    sentences.push({ span, terminated, complete: false });
    if (bodyEnd === span[0]) {
      markUnreadable(span[0]); // a bare terminator
      continue;
    }
    // 2a. Stutter ("the the", "left left"), the typical fault of parallel decoding: if the
    // sentence reads as a whole once immediate repeats are dropped, keep its claims (spans
    // mapped back) and report only the repeats as unreadable.
    const destuttered = readWithoutRepeats(tokens, span[0], bodyEnd);
    if (destuttered) {
      const base = claims.length;
      for (const cl of destuttered.claims) claims.push(offsetClaim(cl, base));
      for (const i of destuttered.dropped) markUnreadable(i);
      continue;
    }
    let i = span[0];
    while (i < bodyEnd) {
      let best = -1;
      let bestClaims: Claim[] = [];
      for (const form of FRAGMENTS) {
        const local: Claim[] = [];
        const c = new Cursor(tokens, i, bodyEnd, local);
        const e = tryForm(c, form);
        if (e > best) {
          best = e;
          bestClaims = local;
        }
      }
      if (best > i) {
        const base = claims.length;
        for (const cl of bestClaims) claims.push(offsetClaim(cl, base));
        i = best;
      } else {
        markUnreadable(i);
        i++;
      }
    }
  }
  return { tokens, sentences, claims, unreadable };
}

/** Text of a token range, lower case, punctuation attached: ["top", "left"] -> "top left". */
export function spanText(tokens: readonly string[], span: Span): string {
  let out = '';
  for (let i = span[0]; i < span[1]; i++) {
    const w = tokens[i]!;
    if (out.length > 0 && /^[a-z0-9[]/.test(w)) out += ' ';
    out += w;
  }
  return out;
}
