/**
 * ViCrit-style hallucination pairs: a correct caption with exactly one injected factual error.
 *
 * The edit replaces a few tokens by the same number of tokens (a shape, colour or size word, a
 * number word, a place phrase's differing words, "left"/"right" or "above"/"below"), so the
 * wrong span and the correct span align token for token, as Stage I training and the expert's
 * same-length edits need. Every candidate edit is checked with the metrics before it is
 * accepted: the changed caption must still parse completely, at least one claim must become
 * false, and every false claim must be blamed on the edited tokens. So the error is real, it is
 * the only one, and the metrics find it where the record says it is.
 */
import { joinWords } from '../tokenizer/word.js';
import type { Rng } from '../util/rng.js';
import { NUMBER_WORDS, PLACE_PHRASES, SHAPE_PLURAL, article } from './lexicon.js';
import { evaluateParse } from './metrics.js';
import { type Descriptor, type Span, parseCaption, spanText } from './parser.js';
import { COLORS, PLACES, SHAPES, type Scene } from './scene.js';

export const HALLUCINATION_TYPES = ['shape', 'color', 'size', 'count', 'position', 'relation'] as const;
export type HallucinationType = (typeof HALLUCINATION_TYPES)[number];

/** ViCrit-like record; spans are lower-case token text, `token_start` indexes splitWords tokens. */
export interface HallucinationRecord {
  caption: string;
  changed_caption: string;
  span_original: string;
  span_changed: string;
  type: HallucinationType;
  token_start: number;
  token_count: number;
}

interface Edit {
  start: number;
  replacement: string[];
}

const sameLength = (a: string): number => a.split(' ').length;

/** Candidate edits of one type (not yet checked). */
function candidates(tokens: readonly string[], type: HallucinationType): Edit[] {
  const parse = parseCaption(tokens);
  const edits: Edit[] = [];
  const descs = new Map<number, Descriptor>();
  for (const c of parse.claims) {
    const ds =
      c.kind === 'object'
        ? [c.desc]
        : c.kind === 'relation'
          ? [c.subject, c.object]
          : c.kind === 'attribute'
            ? [c.subject]
            : c.kind === 'place' && 'ref' in c.subject
              ? [c.subject.ref]
              : [];
    for (const d of ds) descs.set(d.at.noun, d);
  }
  switch (type) {
    case 'shape':
      for (const d of descs.values()) {
        if (d.shape === undefined) continue;
        for (const s of SHAPES)
          if (s !== d.shape) edits.push({ start: d.at.noun, replacement: [d.plural ? SHAPE_PLURAL[s] : s] });
      }
      break;
    case 'color':
      for (const d of descs.values()) {
        if (d.color === undefined || d.at.color === undefined) continue;
        const det = d.at.det !== undefined && d.at.det === d.at.color - 1 ? tokens[d.at.det] : undefined;
        for (const col of COLORS) {
          if (col === d.color) continue;
          // "a red" -> "an orange": the article changes with the colour, inside the same span.
          if ((det === 'a' || det === 'an') && article(col) !== det)
            edits.push({ start: d.at.det!, replacement: [article(col), col] });
          else edits.push({ start: d.at.color, replacement: [col] });
        }
      }
      break;
    case 'size':
      for (const d of descs.values()) {
        if (d.size === undefined || d.at.size === undefined) continue;
        for (const w of d.size === 'small' ? ['large', 'big'] : ['small'])
          edits.push({ start: d.at.size, replacement: [w] });
      }
      break;
    case 'count':
      for (const c of parse.claims) {
        const n = c.kind === 'object' && c.exact ? c.count : c.kind === 'total' ? c.count : 0;
        const span: Span | null = c.kind === 'object' || c.kind === 'total' ? c.countSpan : null;
        // Plural stays plural (2..9), so the noun and verb still agree.
        if (n < 2 || !span || span[1] - span[0] !== 1) continue;
        for (let k = 2; k <= NUMBER_WORDS.length; k++)
          if (k !== n) edits.push({ start: span[0], replacement: [NUMBER_WORDS[k - 1]!] });
      }
      break;
    case 'position':
      for (const c of parse.claims) {
        if (c.kind !== 'place') continue;
        const len = c.span[1] - c.span[0];
        for (const p of PLACES) {
          if (p === c.place) continue;
          for (const phrase of PLACE_PHRASES[p])
            if (sameLength(phrase) === len) edits.push({ start: c.span[0], replacement: phrase.split(' ') });
        }
      }
      break;
    case 'relation':
      for (const c of parse.claims) {
        if (c.kind !== 'relation') continue;
        for (let i = c.span[0]; i < c.span[1]; i++) {
          const swap = ({ left: 'right', right: 'left', above: 'below', below: 'above' } as Record<string, string>)[
            tokens[i]!
          ];
          if (swap) edits.push({ start: i, replacement: [swap] });
        }
      }
      break;
  }
  return edits;
}

/** Applies an edit; returns the new tokens and the minimal differing span (or null if nothing changes). */
function apply(tokens: readonly string[], e: Edit): { tokens: string[]; span: Span } | null {
  const out = [...tokens];
  out.splice(e.start, e.replacement.length, ...e.replacement);
  let a = e.start;
  let b = e.start + e.replacement.length;
  while (a < b && out[a] === tokens[a]) a++;
  while (b > a && out[b - 1] === tokens[b - 1]) b--;
  return a < b ? { tokens: out, span: [a, b] } : null;
}

const overlaps = (x: Span, y: Span): boolean => x[0] < y[1] && y[0] < x[1];

/** Whether the changed tokens make exactly the edited span false (see module comment). */
export function errorIsAt(scene: Scene, tokens: readonly string[], span: Span): boolean {
  const parse = parseCaption(tokens);
  if (parse.unreadable.length > 0 || !parse.sentences.every((s) => s.complete)) return false;
  const ev = evaluateParse(scene, parse);
  const wrong = ev.verdicts.filter((v) => !v.holds);
  return wrong.length > 0 && wrong.every((v) => v.blame.length > 0 && v.blame.every((b) => overlaps(b, span)));
}

/**
 * Injects one error of `type` into a correct caption of `scene`. Returns null when the caption
 * offers no such edit (e.g. no relation sentence, or no plural to miscount).
 * Throws if the input caption is not itself fully readable and true.
 */
export function injectHallucination(
  scene: Scene,
  caption: string | readonly string[],
  type: HallucinationType,
  rng: Rng,
): HallucinationRecord | null {
  const parse = parseCaption(caption);
  const tokens = parse.tokens;
  const ev = evaluateParse(scene, parse);
  if (parse.unreadable.length > 0 || ev.verdicts.some((v) => !v.holds)) {
    throw new RangeError(`injectHallucination needs a correct, readable caption of scene ${scene.id}`);
  }
  for (const e of rng.shuffle(candidates(tokens, type))) {
    const r = apply(tokens, e);
    if (!r || !errorIsAt(scene, r.tokens, r.span)) continue;
    return {
      caption: joinWords(tokens),
      changed_caption: joinWords(r.tokens),
      span_original: spanText(tokens, r.span),
      span_changed: spanText(r.tokens, r.span),
      type,
      token_start: r.span[0],
      token_count: r.span[1] - r.span[0],
    };
  }
  return null;
}

/** One hallucination of a random feasible type (types tried in random order), or null. */
export function injectAnyHallucination(
  scene: Scene,
  caption: string | readonly string[],
  rng: Rng,
  types: readonly HallucinationType[] = HALLUCINATION_TYPES,
): HallucinationRecord | null {
  for (const t of rng.shuffle([...types])) {
    const r = injectHallucination(scene, caption, t, rng);
    if (r) return r;
  }
  return null;
}
