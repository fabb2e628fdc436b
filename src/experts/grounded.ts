/**
 * The grounded expert: reviews a draft caption against the scene graph it describes and
 * answers `right`, or minimal same-length corrections `{org, target}` (the paper's Stage II
 * review). The metrics (../benchmark/metrics.ts) are the judge, and a correct claim is never
 * touched: edits are searched only inside the tokens the metrics blame for a false claim, and
 * around repeats and unreadable spans. The search, greedy and one issue at a time, tries word
 * substitutions, then same-sentence paraphrases, then whole captioner sentences; each step and
 * its acceptance rule: docs/design.md#the-grounded-experts-search. A draft with problems but no
 * fix that helps is answered with an empty pair list (not `right`): there is nothing to train on.
 */
import { benchmarkTokenizer, writeCaption } from '../benchmark/captioner.js';
import {
  BENCHMARK_VOCABULARY,
  NUMBER_WORDS,
  PARSE_COLORS,
  PLACE_PHRASES,
  PLACE_TABLE,
  RELATION_PHRASES,
  RELATION_TABLE,
  SHAPE_PLURAL,
  SIZE_WORDS,
  article,
} from '../benchmark/lexicon.js';
import { type CaptionScore, type ClaimError, evaluateParse, scoreEvaluation } from '../benchmark/metrics.js';
import { type Claim, type Descriptor, type ParseResult, type Span, parseCaption } from '../benchmark/parser.js';
import {
  COLORS,
  PLACES,
  SHAPES,
  type Scene,
  type SceneObject,
  deriveRelations,
  generateScene,
} from '../benchmark/scene.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { joinWords, splitWords } from '../tokenizer/word.js';
import { Rng } from '../util/rng.js';
import { abortReason } from '../util/semaphore.js';
import type { Expert, ReviewAnswer, ReviewRequest, SegmentPair } from './expert.js';
import { filterPairs } from './pairs.js';

// ---------------------------------------------------------------------------------------------
// Public API

export interface GroundedOptions {
  /** Tokenizer the pairs are validated with (filterPairs). Default: the benchmark word tokenizer. */
  tokenizer?: Tokenizer;
  /** Smallest org length in tokens; shorter edits are widened with unchanged neighbours. Default 2. */
  minSegmentTokens?: number;
  /** Accepted search steps per draft (each fixes at least one thing). Default 24. */
  maxSteps?: number;
}

export interface CorrectionReport {
  /** `right`, or the validated pairs (possibly none: flawed, but nothing same-length helps). */
  answer: ReviewAnswer;
  /** The draft with the pairs applied (joinWords display text; the draft's tokens if no pair). */
  corrected: string;
  /** False claims in the draft. */
  falseClaimsBefore: number;
  /** False claims the pairs remove (before - remaining, never negative). */
  fixedErrors: number;
  /** False claims left in the corrected draft. */
  remainingErrors: number;
  /** Chaos = unreadable tokens + immediate repeats + sentences that do not parse completely. */
  chaosBefore: number;
  chaosAfter: number;
}

/**
 * Reviews `draft` against `scene`: the answer the grounded expert gives, the corrected text,
 * and how many false claims the corrections fix. Pure and deterministic.
 */
export function correctDraft(
  scene: Scene,
  draft: string,
  tokenizer?: Tokenizer,
  options: Omit<GroundedOptions, 'tokenizer'> = {},
): CorrectionReport {
  const tok = tokenizer ?? defaultTokenizer();
  const minSeg = Math.max(1, Math.floor(options.minSegmentTokens ?? 2));
  const maxSteps = options.maxSteps ?? 24;
  const orig = splitWords(draft);
  const judge = new Judge(scene);
  const q0 = judge.measure(orig);
  const report = (answer: ReviewAnswer, tokens: readonly string[]): CorrectionReport => {
    const q = judge.measure(tokens);
    return {
      answer,
      corrected: joinWords(tokens),
      falseClaimsBefore: q0.falseClaims,
      fixedErrors: Math.max(0, q0.falseClaims - q.falseClaims),
      remainingErrors: q.falseClaims,
      chaosBefore: chaos(q0),
      chaosAfter: chaos(q),
    };
  };
  if (isClean(q0)) return report({ kind: 'right' }, orig);
  if (orig.length === 0) return report({ kind: 'pairs', pairs: [] }, orig);

  const fixed = search(judge, orig, maxSteps);
  let edits = segmentEdits(orig, fixed, minSeg);
  edits = keepHelpful(judge, orig, edits);
  // The contract, checked as the training pipeline will check it.
  let checked = validated(draft, edits, tok);
  if (checked.length < edits.length) {
    edits = keepHelpful(
      judge,
      orig,
      checked.map((c) => c.edit),
    );
    checked = validated(draft, edits, tok);
  }
  const corrected = applyEdits(
    orig,
    checked.map((c) => c.edit),
  );
  if (checked.length === 0 || badness(judge.measure(corrected)) >= badness(q0))
    return report({ kind: 'pairs', pairs: [] }, orig);
  return report({ kind: 'pairs', pairs: checked.map((c) => c.pair) }, corrected);
}

/** The grounded expert: reviews drafts against `req.scene` (a benchmark scene graph). */
export class GroundedExpert implements Expert {
  readonly name: string;
  /** Reviews are CPU-bound and synchronous: one at a time. */
  readonly concurrency = 1;
  private readonly tokenizer: Tokenizer;
  private readonly options: Omit<GroundedOptions, 'tokenizer'>;

  constructor(options: GroundedOptions = {}) {
    this.tokenizer = options.tokenizer ?? defaultTokenizer();
    this.options = {
      ...(options.minSegmentTokens !== undefined ? { minSegmentTokens: options.minSegmentTokens } : {}),
      ...(options.maxSteps !== undefined ? { maxSteps: options.maxSteps } : {}),
    };
    // Settings that change answers are part of the name (a cache written with others is refused);
    // so is the algorithm's version (v2: sentence rewrites), so that old answers are never mixed in.
    const tags: string[] = ['v2'];
    if ((options.minSegmentTokens ?? 2) !== 2) tags.push(`seg${options.minSegmentTokens}`);
    if ((options.maxSteps ?? 24) !== 24) tags.push(`steps${options.maxSteps}`);
    this.name = ['grounded', ...tags].join(':');
  }

  async review(req: ReviewRequest, signal?: AbortSignal): Promise<ReviewAnswer> {
    if (signal?.aborted) throw abortReason(signal);
    const scene = asScene(req.scene);
    if (!scene) return { kind: 'error', reason: 'the grounded expert needs the scene graph (req.scene)' };
    try {
      return correctDraft(scene, req.draft, this.tokenizer, this.options).answer;
    } catch (err) {
      return { kind: 'error', reason: `grounded expert failed: ${(err as Error).message ?? String(err)}` };
    }
  }
}

/** A benchmark scene from untyped JSON (relations derived when missing), or null. */
export function asScene(value: unknown): Scene | null {
  const s = value as Partial<Scene> | null;
  if (!s || typeof s !== 'object' || !Array.isArray(s.objects)) return null;
  const ok = s.objects.every(
    (o: Partial<SceneObject> | null) =>
      !!o &&
      typeof o.id === 'string' &&
      (SHAPES as readonly string[]).includes(o.shape as string) &&
      (COLORS as readonly string[]).includes(o.color as string) &&
      (o.size === 'small' || o.size === 'large') &&
      (PLACES as readonly string[]).includes(o.place as string) &&
      typeof o.x === 'number' &&
      typeof o.y === 'number',
  );
  if (!ok) return null;
  return {
    id: typeof s.id === 'string' ? s.id : '',
    seed: typeof s.seed === 'number' ? s.seed : 0,
    objects: s.objects,
    relations: Array.isArray(s.relations) ? s.relations : deriveRelations(s.objects),
  };
}

let sharedTokenizer: Tokenizer | undefined;
function defaultTokenizer(): Tokenizer {
  return (sharedTokenizer ??= benchmarkTokenizer());
}

// ---------------------------------------------------------------------------------------------
// Judging token sequences

interface Quality {
  tokens: readonly string[];
  parse: ParseResult;
  score: CaptionScore;
  falseClaims: number;
  unreadable: number;
  /** Sentences that do not parse completely (a cut-off last sentence included). */
  broken: number;
  repeats: number;
  claims: number;
  trueClaims: number;
  covered: number;
}

const badness = (q: Quality): number => 4 * q.falseClaims + 2 * q.unreadable + 2 * q.broken + q.repeats;
/** Unreadable tokens plus sentences that do not parse completely. */
const illegible = (q: Quality): number => q.unreadable + q.broken;
const chaos = (q: Quality): number => illegible(q) + q.repeats;
const isClean = (q: Quality): boolean => q.tokens.length > 0 && q.falseClaims === 0 && chaos(q) === 0;

/** Scores token sequences against one scene, memoised. */
class Judge {
  private readonly memo = new Map<string, Quality>();
  constructor(readonly scene: Scene) {}

  measure(tokens: readonly string[]): Quality {
    const key = tokens.join(' ');
    const hit = this.memo.get(key);
    if (hit) return hit;
    const parse = parseCaption(tokens);
    const score = scoreEvaluation(evaluateParse(this.scene, parse));
    let repeats = 0;
    for (let i = 1; i < tokens.length; i++) if (tokens[i] === tokens[i - 1]) repeats++;
    const q: Quality = {
      tokens,
      parse,
      score,
      falseClaims: score.errors.length,
      unreadable: score.unreadableTokens,
      broken: score.sentences - score.completeSentences,
      repeats,
      claims: score.claims,
      trueClaims: score.trueClaims,
      covered: score.coveredFacts.length,
    };
    if (this.memo.size > 50000) this.memo.clear();
    this.memo.set(key, q);
    return q;
  }
}

/** Negative when a is the better caption (see the module comment for the order). */
function compare(a: Quality, aChanged: number, b: Quality, bChanged: number): number {
  return badness(a) - badness(b) || b.trueClaims - a.trueClaims || b.covered - a.covered || aChanged - bChanged;
}

function acceptsFact(cur: Quality, next: Quality): boolean {
  return (
    next.falseClaims < cur.falseClaims &&
    next.unreadable <= cur.unreadable &&
    next.broken <= cur.broken &&
    next.repeats <= cur.repeats &&
    next.claims >= cur.claims
  );
}

function acceptsChaos(cur: Quality, next: Quality): boolean {
  return (
    next.falseClaims <= cur.falseClaims &&
    next.repeats <= cur.repeats &&
    illegible(next) < illegible(cur) &&
    next.claims >= cur.claims
  );
}

// ---------------------------------------------------------------------------------------------
// Candidate generation

/**
 * Substitution classes: a word may become another word of a class it belongs to, its own
 * class first; the last class lets an adjective change kind ("the red square" -> "the small
 * square", for a reference that must pick out one object).
 */
const SIZE_LIST = Object.keys(SIZE_WORDS);
const CLASSES: readonly (readonly string[])[] = [
  [...PARSE_COLORS],
  [...SIZE_LIST],
  [...SHAPES],
  SHAPES.map((s) => SHAPE_PLURAL[s]),
  [...NUMBER_WORDS],
  ['a', 'an', 'another'],
  ['left', 'right', 'above', 'below'],
  ['is', 'are'],
  ['sits', 'sit'],
  [...SIZE_LIST, ...PARSE_COLORS],
];
const ALTERNATIVES: ReadonlyMap<string, readonly string[]> = (() => {
  const m = new Map<string, string[]>();
  for (const cls of CLASSES) {
    for (const w of cls) {
      const list = m.get(w) ?? [];
      for (const v of cls) if (v !== w && !list.includes(v)) list.push(v);
      m.set(w, list);
    }
  }
  return m;
})();

/** Words a chaotic token may become: the whole benchmark vocabulary. */
const CHAOS_WORDS: readonly string[] = BENCHMARK_VOCABULARY.filter((w) => w !== 'describe' && w !== 'detail');

const ARTICLES = new Set(['a', 'an']);
const isWord = (w: string | undefined): boolean => w !== undefined && /^[a-z0-9]/.test(w);

/** "a" / "an" before a changed word follow it ("a red" -> "an orange"). */
function agreeArticles(orig: readonly string[], cand: string[], changedFrom: number, changedTo: number): void {
  for (let p = Math.max(0, changedFrom - 1); p < Math.min(cand.length - 1, changedTo); p++) {
    if (ARTICLES.has(cand[p]!) && isWord(cand[p + 1]) && (cand[p + 1] !== orig[p + 1] || cand[p] !== orig[p]))
      cand[p] = article(cand[p + 1]!);
  }
}

/** tokens with [start, start + rep.length) replaced, articles agreed. */
function replaced(tokens: readonly string[], start: number, rep: readonly string[]): string[] {
  const out = [...tokens];
  for (let j = 0; j < rep.length; j++) out[start + j] = rep[j]!;
  agreeArticles(tokens, out, start, start + rep.length);
  return out;
}

/** Every way of changing `k` of `positions` to one of their alternatives. */
function* substitutions(
  tokens: readonly string[],
  positions: readonly number[],
  k: number,
  alts: (i: number) => readonly string[],
): Generator<string[]> {
  const usable = positions.filter((i) => alts(i).length > 0);
  const pick = (from: number, chosen: number[]): Generator<number[]> =>
    (function* () {
      if (chosen.length === k) {
        yield chosen;
        return;
      }
      for (let j = from; j < usable.length; j++) yield* pick(j + 1, [...chosen, usable[j]!]);
    })();
  for (const chosen of pick(0, [])) {
    const fill = function* (n: number, cand: string[]): Generator<string[]> {
      if (n === chosen.length) {
        const out = [...cand];
        agreeArticles(tokens, out, chosen[0]!, chosen[chosen.length - 1]! + 1);
        yield out;
        return;
      }
      const i = chosen[n]!;
      for (const w of alts(i)) {
        cand[i] = w;
        yield* fill(n + 1, cand);
      }
      cand[i] = tokens[i]!;
    };
    yield* fill(0, [...tokens]);
  }
}

const classAlts =
  (tokens: readonly string[]) =>
  (i: number): readonly string[] =>
    ALTERNATIVES.get(tokens[i]!) ?? [];
const range = (a: number, b: number): number[] => Array.from({ length: Math.max(0, b - a) }, (_, k) => a + k);

/** The span covering all of an error's blamed tokens. */
function blameWindow(error: ClaimError): Span {
  const spans = error.blame.length > 0 ? error.blame : [error.span];
  return [Math.min(...spans.map((span) => span[0])), Math.max(...spans.map((span) => span[1]))];
}

function sentenceOf(parse: ParseResult, at: number): Span {
  const sentence = parse.sentences.find((x) => x.span[0] <= at && at < x.span[1]);
  return sentence ? sentence.span : [0, parse.tokens.length];
}

/** Same-sentence paraphrase families: any member may replace any other (the judge has the last word). */
const LEADS = (verb: string): string[] => [
  'there ' + verb,
  'you can see',
  'we can see',
  'the image shows',
  'the image contains',
  'the picture shows',
  'the picture contains',
];
const FAMILIES: readonly (readonly string[])[] = [
  LEADS('is'),
  LEADS('are'),
  ['is', 'sits', 'can be seen', ', there is'],
  ['are', 'sit', 'can be seen', ', there are'],
  ...PLACES.map((p) => PLACE_PHRASES[p]),
  ...Object.values(RELATION_PHRASES),
];
const FAMILY_INDEX: ReadonlyMap<string, string[][]> = (() => {
  const m = new Map<string, string[][]>();
  for (const fam of FAMILIES) {
    for (const phrase of fam) {
      const list = m.get(phrase) ?? [];
      for (const alt of fam) if (alt !== phrase && !list.some((l) => l.join(' ') === alt)) list.push(alt.split(' '));
      m.set(phrase, list);
    }
  }
  return m;
})();
const FAMILY_PHRASES: readonly string[][] = [...FAMILY_INDEX.keys()]
  .map((p) => p.split(' '))
  .sort((a, b) => b.length - a.length);

interface Slot {
  start: number;
  length: number;
  alts: string[][];
}

/** Definite-reference variants of a descriptor that resolves to one object: "the [size] [colour] noun". */
function refVariants(scene: Scene, tokens: readonly string[], d: Descriptor): string[][] {
  const m = scene.objects.filter(
    (o) =>
      (d.size === undefined || o.size === d.size) &&
      (d.color === undefined || o.color === d.color) &&
      (d.shape === undefined || o.shape === d.shape),
  );
  if (m.length !== 1 || tokens[d.span[0]] !== 'the') return [];
  const o = m[0]!;
  const noun = tokens[d.at.noun]!;
  const out: string[][] = [];
  for (const size of [false, true])
    for (const color of [false, true]) out.push(['the', ...(size ? [o.size] : []), ...(color ? [o.color] : []), noun]);
  return out.filter((v) => v.join(' ') !== tokens.slice(d.span[0], d.span[1]).join(' '));
}

/**
 * Place or relation fixes whose true phrase has another length: the phrase and one other
 * paraphrase slot of the same sentence that makes up the difference.
 */
function* widenedPhrases(
  scene: Scene,
  tokens: readonly string[],
  parse: ParseResult,
  claim: Claim,
): Generator<string[]> {
  if (claim.kind !== 'place' && claim.kind !== 'relation') return;
  const [claimStart, claimEnd] = claim.span;
  const claimLength = claimEnd - claimStart;
  const table = claim.kind === 'place' ? PLACE_TABLE : RELATION_TABLE;
  const alts = table.map((p) => [...p.tokens]).filter((p) => p.length !== claimLength);
  const [sentenceStart, sentenceEnd] = sentenceOf(parse, claimStart);
  const slots: Slot[] = [];
  const taken = (a: number, b: number): boolean =>
    (a < claimEnd && claimStart < b) || slots.some((x) => a < x.start + x.length && x.start < b);
  if (claim.kind === 'relation') {
    for (const d of [claim.subject, claim.object]) {
      const v = refVariants(scene, tokens, d);
      if (v.length > 0 && !taken(d.span[0], d.span[1]))
        slots.push({ start: d.span[0], length: d.span[1] - d.span[0], alts: v });
    }
  }
  for (let i = sentenceStart; i < sentenceEnd; i++) {
    for (const p of FAMILY_PHRASES) {
      if (i + p.length > sentenceEnd || taken(i, i + p.length) || !p.every((w, k) => tokens[i + k] === w)) continue;
      slots.push({ start: i, length: p.length, alts: FAMILY_INDEX.get(p.join(' '))! });
      break;
    }
  }
  for (const alt of alts) {
    const lengthChange = alt.length - claimLength;
    for (const slot of slots) {
      for (const slotAlt of slot.alts) {
        if (slotAlt.length - slot.length !== -lengthChange) continue;
        const parts: { start: number; length: number; rep: string[] }[] = [
          { start: claimStart, length: claimLength, rep: alt },
          { start: slot.start, length: slot.length, rep: slotAlt },
        ].sort((a, b) => a.start - b.start);
        const out: string[] = [];
        let at = 0;
        for (const p of parts) {
          out.push(...tokens.slice(at, p.start), ...p.rep);
          at = p.start + p.length;
        }
        out.push(...tokens.slice(at));
        agreeArticles(tokens, out, Math.min(claimStart, slot.start), Math.max(claimEnd, slot.start + slot.length));
        yield out;
      }
    }
  }
}

/** Candidate stages for one false claim, smallest edits first. */
function factStages(scene: Scene, q: Quality, error: ClaimError): (() => Iterable<string[]>)[] {
  const t = q.tokens;
  const claim = q.parse.claims[error.claim]!;
  const [a, b] = blameWindow(error);
  const win = range(a, b);
  const stages: (() => Iterable<string[]>)[] = [];
  stages.push(function* () {
    if (error.correct !== undefined && error.blame.length === 1) {
      const rep = splitWords(error.correct);
      if (rep.length === b - a) yield replaced(t, a, rep);
    }
  });
  stages.push(() => substitutions(t, win, 1, classAlts(t)));
  if (error.reason === 'place' || error.reason === 'relation') {
    stages.push(function* () {
      const [start, end] = claim.span;
      const table = claim.kind === 'place' ? PLACE_TABLE : RELATION_TABLE;
      for (const p of table) if (p.tokens.length === end - start) yield replaced(t, start, p.tokens);
    });
  }
  if (win.length <= 6) stages.push(() => substitutions(t, win, 2, classAlts(t)));
  if (error.reason === 'place' || error.reason === 'relation')
    stages.push(() => widenedPhrases(scene, t, q.parse, claim));
  // Wider: the claim's own tokens (and a relation's references), when the blame was too narrow.
  const wide = new Set<number>(range(claim.span[0], claim.span[1]));
  if (claim.kind === 'relation')
    for (const d of [claim.subject, claim.object]) for (const i of range(d.span[0], d.span[1])) wide.add(i);
  if (claim.kind === 'place' && 'ref' in claim.subject)
    for (const i of range(claim.subject.ref.span[0], claim.subject.ref.span[1])) wide.add(i);
  const widePos = [...wide].sort((x, y) => x - y);
  if (widePos.length <= 10) stages.push(() => substitutions(t, widePos, 1, classAlts(t)));
  if (widePos.length <= 6) stages.push(() => substitutions(t, widePos, 2, classAlts(t)));
  if (win.length <= 4) stages.push(() => substitutions(t, win, 3, classAlts(t)));
  return stages;
}

/** Positions a chaos issue may change: the repeat, or an unreadable span and its neighbours. */
function chaosPositions(q: Quality, issue: Span): number[] {
  const [a, b] = issue;
  const [sentenceStart, sentenceEnd] = sentenceOf(q.parse, a);
  // The issue's own tokens first (a repeat: the second copy), so that ties keep the first word.
  const own = range(a, b).slice(0, 6);
  const around = [a - 1, b].filter((i) => i >= sentenceStart && i < sentenceEnd && !own.includes(i));
  return [...own, ...around];
}

// ---------------------------------------------------------------------------------------------
// Plausibility: the parser is lenient (it reads "there we can see ...", "an red", "red small
// circle"), so edited text must also look like the captioner's language. Word classes
// (colour, size, shape, plural shape, number 2-9) keep the table small and complete.

const WORD_CLASS: ReadonlyMap<string, string> = (() => {
  const m = new Map<string, string>();
  for (const c of PARSE_COLORS) m.set(c, 'COLOR');
  for (const z of SIZE_LIST) m.set(z, 'SIZE');
  for (const sh of SHAPES) {
    m.set(sh, 'SHAPE');
    m.set(SHAPE_PLURAL[sh], 'SHAPES');
  }
  for (const n of NUMBER_WORDS.slice(1)) m.set(n, 'NUMBER');
  return m;
})();
const classOf = (w: string): string => WORD_CLASS.get(w) ?? w;

let bigramTable: Set<string> | undefined;
/** Class bigrams of captioner captions (built once, deterministically: ~1,500 scenes of 1-9 objects). */
function bigrams(): Set<string> {
  if (bigramTable) return bigramTable;
  const set = new Set<string>();
  const rng = new Rng(0x6b1d);
  for (let i = 0; i < 1500; i++) {
    const scene = generateScene(rng.fork(), { seed: i, maxObjects: 1 + (i % 9) });
    for (let k = 0; k < 2; k++) {
      const t = ['.', ...writeCaption(scene, rng.fork()).tokens];
      for (let j = 1; j < t.length; j++) set.add(classOf(t[j - 1]!) + ' ' + classOf(t[j]!));
    }
  }
  return (bigramTable = set);
}

/** True when every word pair the candidate changed is one the captioner writes, with a/an agreeing. */
function plausible(orig: readonly string[], cand: readonly string[]): boolean {
  const table = bigrams();
  for (let j = 0; j < cand.length; j++) {
    const prev = j === 0 ? '.' : cand[j - 1]!;
    const prevOrig = j === 0 ? '.' : orig[j - 1]!;
    if (prev === prevOrig && cand[j] === orig[j]) continue;
    if (!table.has(classOf(prev) + ' ' + classOf(cand[j]!))) return false;
    if (ARTICLES.has(prev) && isWord(cand[j]) && prev !== article(cand[j]!)) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Search

const MAX_CANDIDATES_PER_STAGE = 6000;

function changedCount(a: readonly string[], b: readonly string[]): number {
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) n++;
  return n;
}

/** The best accepted candidate of the first stage that has one. */
function bestOf(
  judge: Judge,
  cur: Quality,
  stages: (() => Iterable<string[]>)[],
  accepts: (c: Quality, n: Quality) => boolean,
  prefilter?: (cand: string[]) => boolean,
): Quality | null {
  for (const stage of stages) {
    let best: Quality | null = null;
    let bestChanged = 0;
    let n = 0;
    for (const cand of stage()) {
      if (++n > MAX_CANDIDATES_PER_STAGE) break;
      if (cand.length !== cur.tokens.length) continue;
      const changed = changedCount(cur.tokens, cand);
      if (changed === 0) continue;
      if (!plausible(cur.tokens, cand)) continue;
      if (prefilter && !prefilter(cand)) continue;
      const q = judge.measure(cand);
      if (!accepts(cur, q)) continue;
      if (!best || compare(q, changed, best, bestChanged) < 0) {
        best = q;
        bestChanged = changed;
      }
    }
    if (best) return best;
  }
  return null;
}

type Issue = { kind: 'fact'; error: ClaimError } | { kind: 'chaos'; span: Span };

function issuesOf(q: Quality): Issue[] {
  const out: Issue[] = q.score.errors.map((error) => ({ kind: 'fact', error }) as Issue);
  for (let i = 1; i < q.tokens.length; i++)
    if (q.tokens[i] === q.tokens[i - 1]) out.push({ kind: 'chaos', span: [i, i + 1] });
  for (const u of q.parse.unreadable)
    if (!out.some((x) => x.kind === 'chaos' && x.span[0] >= u[0] && x.span[1] <= u[1]))
      out.push({ kind: 'chaos', span: u });
  return out;
}

function issueKey(q: Quality, issue: Issue): string {
  const [a, b] = issue.kind === 'fact' ? blameWindow(issue.error) : issue.span;
  const [sentenceStart, sentenceEnd] = sentenceOf(q.parse, a);
  const reason = issue.kind === 'fact' ? issue.error.reason : '';
  const text = q.tokens.slice(sentenceStart, Math.max(sentenceEnd, b)).join(' ');
  return `${issue.kind}:${reason}:${a}:${b}:${text}`;
}

/**
 * A token too many (an inserted stutter, "at the the top"): the token deleted and the sentence
 * made up to its length elsewhere, by one inserted word or a paraphrase one token longer
 * ("at the top" -> "in the top center", "there is" -> "you can see"). Nearest places first.
 */
function* deleteAndPad(tokens: readonly string[], issue: Span, region: Span): Generator<string[]> {
  const [regionStart, regionEnd] = region;
  for (const p of range(issue[0], issue[1]).slice(0, 2)) {
    const del = [...tokens.slice(0, p), ...tokens.slice(p + 1)];
    // In `del`, the region is [regionStart, regionEnd - 1).
    const last = regionEnd - 1;
    const at = range(regionStart, last + 1).sort((x, y) => Math.abs(x - p) - Math.abs(y - p) || x - y);
    for (const j of at) for (const w of CHAOS_WORDS) yield [...del.slice(0, j), w, ...del.slice(j)];
    for (let i = regionStart; i < last; i++) {
      for (const ph of FAMILY_PHRASES) {
        if (i + ph.length > last || !ph.every((w, k) => del[i + k] === w)) continue;
        for (const alt of FAMILY_INDEX.get(ph.join(' '))!) {
          if (alt.length === ph.length + 1) yield [...del.slice(0, i), ...alt, ...del.slice(i + ph.length)];
        }
      }
    }
  }
}

/** The sentence holding a chaos issue and its neighbours (where a fix may move tokens). */
function chaosRegion(parse: ParseResult, issue: Span): Span {
  const k = parse.sentences.findIndex((x) => x.span[0] <= issue[0] && issue[0] < x.span[1]);
  if (k < 0) return [0, parse.tokens.length];
  return [
    parse.sentences[Math.max(0, k - 1)]!.span[0],
    parse.sentences[Math.min(parse.sentences.length - 1, k + 1)]!.span[1],
  ];
}

/** Sentence-local readability: unreadable tokens + incomplete sentences of tokens[a, b). */
function localChaos(tokens: readonly string[], a: number, b: number): number {
  const p = parseCaption(tokens.slice(a, b));
  return p.unreadable.reduce((s, [x, y]) => s + y - x, 0) + p.sentences.filter((s) => !s.complete).length;
}

/**
 * Sentences the captioner writes about the scene (from many of its captions), by token count:
 * what a chaotic sentence may be rewritten to when no one-word fix reads. At 4 or 8 tokens per
 * step a draft's sentences are often beyond local repair ("in in bottom bottom and and").
 * Openings ("There are five objects.") only ever replace a caption's first sentence.
 */
interface SentencePool {
  opening: Map<number, string[][]>;
  body: Map<number, string[][]>;
}
function sentencePool(scene: Scene): SentencePool {
  const rng = new Rng(scene.seed ^ 0x5e7c);
  const seen = new Set<string>();
  const pool: SentencePool = { opening: new Map(), body: new Map() };
  for (let k = 0; k < POOL_CAPTIONS; k++) {
    const tokens = writeCaption(scene, rng.fork()).tokens;
    for (let a = 0, i = 0; i < tokens.length; i++) {
      if (tokens[i] !== '.') continue;
      const sentence = tokens.slice(a, i + 1);
      const into = a === 0 ? pool.opening : pool.body;
      a = i + 1;
      const key = `${into === pool.opening}:${sentence.join(' ')}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const list = into.get(sentence.length) ?? [];
      list.push(sentence);
      into.set(sentence.length, list);
    }
  }
  return pool;
}
const POOL_CAPTIONS = 64;

/**
 * The chaotic sentence (alone, or with the next sentence) rewritten to one or two pool
 * sentences of the same total length, those keeping most of its tokens in place first.
 */
function* sentenceRewrites(
  pool: SentencePool,
  tokens: readonly string[],
  parse: ParseResult,
  at: number,
): Generator<string[]> {
  const k = parse.sentences.findIndex((x) => x.span[0] <= at && at < x.span[1]);
  if (k < 0) return;
  const spans: Span[] = [parse.sentences[k]!.span];
  const next = parse.sentences[k + 1];
  if (next) spans.push([parse.sentences[k]!.span[0], next.span[1]]);
  const first = k === 0 ? pool.opening : pool.body;
  const kept = (rep: readonly string[], start: number): number =>
    rep.reduce((n, w, j) => n + (tokens[start + j] === w ? 1 : 0), 0);
  for (const [start, end] of spans) {
    const n = end - start;
    const reps: string[][] = [...(first.get(n) ?? [])];
    for (const [len, heads] of first)
      for (const head of heads)
        for (const tail of pool.body.get(n - len) ?? []) if (head !== tail) reps.push([...head, ...tail]);
    reps.sort((x, y) => kept(y, start) - kept(x, start));
    for (const rep of reps.slice(0, MAX_REWRITES)) yield [...tokens.slice(0, start), ...rep, ...tokens.slice(end)];
  }
}
const MAX_REWRITES = 150;

/** A rewrite loses nothing: no true claim, no covered fact, no new repeat. */
const losesNothing = (cur: Quality, next: Quality): boolean =>
  next.trueClaims >= cur.trueClaims && next.covered >= cur.covered && next.repeats <= cur.repeats;
/** A rewrite for a false claim: removes one, loses nothing, reads no worse. */
const rewriteFixesFact = (cur: Quality, next: Quality): boolean =>
  losesNothing(cur, next) && next.falseClaims < cur.falseClaims && illegible(next) <= illegible(cur);
/** A rewrite for chaos: reads better, loses nothing, adds no false claim. */
const rewriteFixesChaos = (cur: Quality, next: Quality): boolean =>
  losesNothing(cur, next) && next.falseClaims <= cur.falseClaims && illegible(next) < illegible(cur);

/** Greedy repair: fixes issues one at a time until nothing more helps. */
function search(judge: Judge, orig: readonly string[], maxSteps: number): string[] {
  let cur = judge.measure(orig);
  const failed = new Set<string>();
  let pool: SentencePool | undefined;
  const rewrite = (at: number, accepts: (c: Quality, n: Quality) => boolean): Quality | null => {
    pool ??= sentencePool(judge.scene);
    const [t, p] = [cur.tokens, cur.parse];
    return bestOf(judge, cur, [() => sentenceRewrites(pool!, t, p, at)], accepts);
  };
  for (let step = 0; step < maxSteps && !isClean(cur); ) {
    let progressed = false;
    for (const issue of issuesOf(cur)) {
      const key = issueKey(cur, issue);
      if (failed.has(key)) continue;
      let next: Quality | null;
      if (issue.kind === 'fact') {
        next = bestOf(judge, cur, factStages(judge.scene, cur, issue.error), acceptsFact);
        // No word-level fix (an object described twice, a relation between wrong objects).
        next ??= rewrite(blameWindow(issue.error)[0], rewriteFixesFact);
      } else {
        const positions = chaosPositions(cur, issue.span);
        const [ra, rb] = chaosRegion(cur.parse, issue.span);
        const before = localChaos(cur.tokens, ra, rb);
        const t = cur.tokens;
        next = bestOf(
          judge,
          cur,
          [() => substitutions(t, positions, 1, () => CHAOS_WORDS), () => deleteAndPad(t, issue.span, [ra, rb])],
          acceptsChaos,
          (cand) => localChaos(cand, ra, rb) < before,
        );
        next ??= rewrite(issue.span[0], rewriteFixesChaos);
      }
      if (next) {
        cur = next;
        progressed = true;
        step++;
        break;
      }
      failed.add(key);
    }
    if (!progressed) break;
  }
  return [...cur.tokens];
}

// ---------------------------------------------------------------------------------------------
// Pairs

interface Edit {
  start: number;
  org: string[];
  target: string[];
}

function occurrences(hay: readonly string[], needle: readonly string[]): number {
  let n = 0;
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    n++;
  }
  return n;
}

/** Widens [a, b) to at least `min` tokens, preferring a word neighbour on the left. */
function widenToMin(orig: readonly string[], a: number, b: number, min: number): Span {
  while (b - a < min && (a > 0 || b < orig.length)) {
    const leftOk = a > 0 && isWord(orig[a - 1]);
    const rightOk = b < orig.length && isWord(orig[b]);
    if (leftOk) a--;
    else if (rightOk) b++;
    else if (a > 0) a--;
    else b++;
  }
  return [a, b];
}

/** Widens [a, b) with neighbours until its tokens occur once in `orig` (fewest added tokens). */
function widenToUnique(orig: readonly string[], a: number, b: number): Span {
  for (let w = 0; w <= orig.length; w++) {
    const options: Span[] = [];
    for (let l = 0; l <= w; l++) {
      const r = w - l;
      if (a - l >= 0 && b + r <= orig.length) options.push([a - l, b + r]);
    }
    // Balanced first (as many neighbours on each side), then more on the left.
    const imbalance = (x: Span): number => Math.abs(a - x[0] - (x[1] - b));
    options.sort((x, y) => imbalance(x) - imbalance(y) || x[0] - y[0]);
    for (const [x, y] of options) if (occurrences(orig, orig.slice(x, y)) === 1) return [x, y];
  }
  return [0, orig.length];
}

/** Changed runs of `fixed` against `orig` as unique, non-overlapping same-length segments. */
function segmentEdits(orig: readonly string[], fixed: readonly string[], minSeg: number): Edit[] {
  let spans: Span[] = [];
  for (let i = 0; i < orig.length; i++) {
    if (orig[i] === fixed[i]) continue;
    const last = spans[spans.length - 1];
    // Runs one unchanged token apart form one segment ("at the the top" -> "in the top center").
    if (last && last[1] >= i - 1) last[1] = i + 1;
    else spans.push([i, i + 1]);
  }
  for (;;) {
    spans = spans.map(([a, b]) => widenToUnique(orig, ...widenToMin(orig, a, b, minSeg))).sort((x, y) => x[0] - y[0]);
    const merged: Span[] = [];
    let changed = false;
    for (const s of spans) {
      const last = merged[merged.length - 1];
      if (last && s[0] < last[1]) {
        last[1] = Math.max(last[1], s[1]);
        changed = true;
      } else merged.push([s[0], s[1]]);
    }
    spans = merged;
    if (!changed) break;
  }
  return spans.map(([a, b]) => ({ start: a, org: orig.slice(a, b), target: fixed.slice(a, b) }));
}

/**
 * The edits as pairs that filterPairs keeps, in order. Each pair is written as space-joined
 * splitWords tokens; if the tokenizer does not find that in the draft (a case- or
 * spacing-sensitive subword tokenizer), the draft's own text of the segment is tried, with the
 * target spelled alike. Edits with neither form kept are left out.
 */
function validated(draft: string, edits: readonly Edit[], tok: Tokenizer): { edit: Edit; pair: SegmentPair }[] {
  const out: { edit: Edit; pair: SegmentPair }[] = [];
  const offsets = tokenOffsets(draft);
  for (const e of edits) {
    const forms: SegmentPair[] = [{ org: e.org.join(' '), target: e.target.join(' ') }];
    if (offsets) forms.push(surfacePair(draft, offsets, e));
    for (const form of forms) {
      const r = filterPairs(draft, [...out.map((o) => o.pair), form], tok);
      if (r.dropped.length === 0) {
        out.push({ edit: e, pair: form });
        break;
      }
    }
  }
  return out;
}

/** Character ranges of the splitWords tokens in `text`, or null if they cannot be mapped. */
function tokenOffsets(text: string): Span[] | null {
  const lower = text.toLowerCase();
  if (lower.length !== text.length) return null;
  const out: Span[] = [];
  for (const m of lower.matchAll(/[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]/g)) out.push([m.index!, m.index! + m[0].length]);
  return out;
}

/** The segment as written in the draft, and the target written the same way (spacing, capitals). */
function surfacePair(draft: string, offsets: readonly Span[], e: Edit): SegmentPair {
  const span = offsets.slice(e.start, e.start + e.org.length);
  const org = draft.slice(span[0]![0], span[span.length - 1]![1]);
  let target = '';
  e.target.forEach((w, k) => {
    const punct = !isWord(w);
    if (k > 0) {
      const gap = draft.slice(span[k - 1]![1], span[k]![0]);
      target += punct === !isWord(e.org[k]) ? gap : punct ? '' : ' ';
    }
    const orgText = draft.slice(span[k]![0], span[k]![1]);
    const capital =
      k > 0 && /^[.!?]$/.test(e.target[k - 1]!) ? true : w === e.org[k] || k === 0 ? /^[A-Z]/.test(orgText) : false;
    target += capital ? w.charAt(0).toUpperCase() + w.slice(1) : w;
  });
  return { org, target };
}

function applyEdits(orig: readonly string[], edits: readonly Edit[]): string[] {
  const out = [...orig];
  for (const e of edits) for (let j = 0; j < e.target.length; j++) out[e.start + j] = e.target[j]!;
  return out;
}

/**
 * Drops edits that do not help: the caption without the edit must be worse. A pure chaos fix
 * (no false claim fixed) must also leave its sentences parsing completely.
 */
function keepHelpful(judge: Judge, orig: readonly string[], edits: Edit[]): Edit[] {
  let kept = [...edits];
  for (let pass = 0; pass < edits.length + 1; pass++) {
    const all = judge.measure(applyEdits(orig, kept));
    const drop = kept.findIndex((e) => {
      const without = judge.measure(
        applyEdits(
          orig,
          kept.filter((x) => x !== e),
        ),
      );
      if (badness(without) <= badness(all)) return true;
      if (without.falseClaims > all.falseClaims) return false;
      const sentences = all.parse.sentences.filter((s) => s.span[0] < e.start + e.org.length && e.start < s.span[1]);
      return sentences.some((s) => !s.complete);
    });
    if (drop < 0) break;
    kept.splice(drop, 1);
  }
  return kept;
}
