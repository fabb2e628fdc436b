/**
 * Exact caption metrics against the scene graph: no judge model, every number is a count.
 *
 * Claims (parser.ts) are judged as follows.
 *  - total "N shapes": true iff the scene has exactly N objects.
 *  - object, exact ("two small red circles", "one ..."): true iff exactly N objects match all
 *    stated descriptors. Singular ("a/an/another small red circle"): true iff a matching object
 *    exists that no earlier mention already described (so describing one circle twice, or a
 *    second circle that is not there, is false). Mentions link to the objects they describe,
 *    preferring objects at the places the mention states.
 *  - place: true iff an object the subject denotes is at that place. A mention's subject is the
 *    objects it linked (or, if the mention is false, every object matching its descriptors); a
 *    definite reference ("the red circle") must match exactly one object.
 *  - relation: both references resolve to exactly one object each and the relation holds under
 *    the margin rule of scene.ts. attribute: the reference resolves and the object has it.
 *  - background: true iff the colour is black.
 * A false claim is blamed on the fewest tokens that make it false (the count word, the colour
 * word that matches no object, the place phrase, the relation phrase...), so a UI can highlight
 * them and an expert can correct exactly those tokens.
 *
 * Scores that cannot be flattered (docs/design.md#metrics):
 *  - the background claim is always true here, so it is left out of factuality and reported
 *    apart (`backgroundClaims`);
 *  - every unreadable span counts as one false claim, so broken text never scores above
 *    readable text;
 *  - coverage is the share of the scene's objects fully described: a true mention naming size,
 *    colour and shape links the object AND a true place claim puts it at its place.
 *
 * Scene facts (stated facts are listed per caption; `factCoverage` is their share), for a scene with n objects:
 *  - `total`: the number of objects (1 fact);
 *  - `object:<id>`: each object's identity with all its attributes; stated iff a true mention
 *    that names size, colour and shape links that object (n facts);
 *  - `place:<id>`: each object's place; stated iff a true place claim puts a subject matching
 *    the object at the object's place (n facts; one object per place, so this is unambiguous);
 *  - `relation:<a>:<b>`: each aligned pair (same row or same column: the pair's only relation,
 *    stored canonically as a left of b / a above b) of two objects that each have a unique
 *    size-colour-shape in the scene; stated iff a true relation claim relates exactly that
 *    pair, in either direction. Diagonal pairs are implied by the places, and a pair involving
 *    one of several identical objects cannot be named by a definite reference ("the small red
 *    circle" would be ambiguous), so neither is a separate fact (claims about them are still
 *    judged true or false).
 */
import { EOS_ID, PAD_ID } from '../tokenizer/tokenizer.js';
import type { ColorWord } from './lexicon.js';
import { PLACE_PHRASES, numberWord } from './lexicon.js';
import {
  type AttributeClaim,
  type BackgroundClaim,
  type Claim,
  type Descriptor,
  type ObjectClaim,
  type PlaceClaim,
  type RelationClaim,
  type TotalClaim,
  type ParseResult,
  type Span,
  parseCaption,
  spanText,
} from './parser.js';
import { type Relation, type Scene, type SceneObject, objectKey, relationHolds } from './scene.js';

export type FactKind = 'total' | 'object' | 'place' | 'relation';
export interface Fact {
  id: string;
  kind: FactKind;
  objects: string[];
}

/** The scene's facts, in a fixed order (see the module comment). */
export function sceneFacts(scene: Scene): Fact[] {
  const facts: Fact[] = [{ id: 'total', kind: 'total', objects: [] }];
  for (const o of scene.objects) facts.push({ id: `object:${o.id}`, kind: 'object', objects: [o.id] });
  for (const o of scene.objects) facts.push({ id: `place:${o.id}`, kind: 'place', objects: [o.id] });
  const keyCount = new Map<string, number>();
  for (const o of scene.objects) keyCount.set(objectKey(o), (keyCount.get(objectKey(o)) ?? 0) + 1);
  const unique = new Set(scene.objects.filter((o) => keyCount.get(objectKey(o)) === 1).map((o) => o.id));
  for (const r of scene.relations) {
    if (r.aligned && unique.has(r.subject) && unique.has(r.object))
      facts.push({
        id: relationFactId(r.subject, r.relation, r.object),
        kind: 'relation',
        objects: [r.subject, r.object],
      });
  }
  return facts;
}

/** Canonical id of a relation: 'right of' and 'below' are turned around. */
export function relationFactId(subject: string, relation: Relation, object: string): string {
  if (relation === 'right of') return `relation:${object}:${subject}`;
  if (relation === 'below') return `relation:${object}:${subject}`;
  return `relation:${subject}:${object}`;
}

export type ErrorReason =
  | 'total'
  | 'count'
  | 'duplicate'
  | 'no-object'
  | 'ambiguous'
  | 'subject'
  | 'place'
  | 'relation'
  | 'attribute'
  | 'background';

export interface Verdict {
  holds: boolean;
  /** Object ids the claim is about (linked mention objects, resolved references). */
  objects: string[];
  reason?: ErrorReason;
  message?: string;
  /** Tokens responsible for a false claim. */
  blame: Span[];
  /** A correct replacement for the blamed tokens, when one is evident. */
  correct?: string;
}

export interface ClaimError {
  /** Index into the parse's claims. */
  claim: number;
  kind: Claim['kind'];
  reason: ErrorReason;
  message: string;
  /** The claim's own span, and the tokens blamed for it (highlight these). */
  span: Span;
  blame: Span[];
  text: string;
  correct?: string;
}

export interface Evaluation {
  parse: ParseResult;
  verdicts: Verdict[];
  /** Fact ids stated correctly. */
  covered: Set<string>;
  facts: Fact[];
  capture: CaptureDetail;
}

export interface PRF {
  precision: number;
  recall: number;
  f1: number;
}
export interface CaptureDetail {
  object: PRF;
  attribute: PRF;
  relation: PRF;
  /** (0.5 F1_obj + 0.5 F1_attr + 0.2 F1_rel) / 1.2 */
  score: number;
}

const matches = (o: SceneObject, d: Descriptor): boolean =>
  (d.size === undefined || o.size === d.size) &&
  (d.color === undefined || o.color === (d.color as ColorWord)) &&
  (d.shape === undefined || o.shape === d.shape);

/**
 * Blame for a descriptor no object matches: the single descriptor word(s) whose removal makes
 * it match something (covered as one contiguous span), else the whole noun phrase.
 */
function descriptorBlame(scene: Scene, d: Descriptor, wantCount?: number): { blame: Span[]; message: string } {
  const words: { key: 'size' | 'color' | 'shape'; at: number }[] = [];
  if (d.size !== undefined && d.at.size !== undefined) words.push({ key: 'size', at: d.at.size });
  if (d.color !== undefined && d.at.color !== undefined) words.push({ key: 'color', at: d.at.color });
  if (d.shape !== undefined) words.push({ key: 'shape', at: d.at.noun });
  const fixes = (exact: boolean) =>
    words.filter(({ key }) => {
      const relaxed: Descriptor = { ...d };
      delete relaxed[key];
      const m = scene.objects.filter((o) => matches(o, relaxed)).length;
      return exact && wantCount !== undefined ? m === wantCount : m > 0;
    });
  let cand = fixes(true);
  if (cand.length === 0) cand = fixes(false);
  const phrase = describe(d);
  if (cand.length === 0) return { blame: [d.span], message: `no ${phrase} in the scene` };
  const lo = Math.min(...cand.map((c) => c.at));
  const hi = Math.max(...cand.map((c) => c.at));
  return { blame: [[lo, hi + 1]], message: `no ${phrase} in the scene (wrong ${cand.map((c) => c.key).join(' or ')})` };
}

function describe(d: Descriptor): string {
  return [d.size, d.color, d.shape ?? 'object'].filter(Boolean).join(' ');
}

/** Unique resolution of a definite reference. */
function resolveRef(scene: Scene, d: Descriptor): { object?: SceneObject; fail?: Verdict } {
  const m = scene.objects.filter((o) => matches(o, d));
  if (m.length === 1) return { object: m[0]! };
  if (m.length === 0) {
    const b = descriptorBlame(scene, d);
    return { fail: { holds: false, objects: [], reason: 'no-object', message: b.message, blame: b.blame } };
  }
  return {
    fail: {
      holds: false,
      objects: m.map((o) => o.id),
      reason: 'ambiguous',
      message: `"the ${describe(d)}" could be any of ${m.length} objects`,
      blame: [d.span],
    },
  };
}

const OPPOSITE: Record<Relation, Relation> = {
  'left of': 'right of',
  'right of': 'left of',
  above: 'below',
  below: 'above',
};

function prf(truePred: number, pred: number, trueFacts: number, facts: number): PRF {
  const precision = pred === 0 ? 1 : truePred / pred;
  const recall = facts === 0 ? 1 : trueFacts / facts;
  const f1 = precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall);
  return { precision, recall, f1 };
}

/** Judges every claim of a parsed caption against the scene; computes coverage and CAPTURE detail. */
export function evaluateParse(scene: Scene, parse: ParseResult): Evaluation {
  const { claims, tokens } = parse;
  const verdicts: Verdict[] = new Array(claims.length);
  const covered = new Set<string>();
  const facts = sceneFacts(scene);
  const factIds = new Set(facts.map((f) => f.id));
  const mentionPlaces = placesByMention(claims);
  const judged = (i: number, v: Verdict): void => {
    verdicts[i] = v;
    for (const key of coveredFacts(claims[i]!, v, factIds)) covered.add(key);
  };

  // Pass 1: totals, mentions (in order: "another" depends on what came before), background.
  const consumed = new Set<string>();
  claims.forEach((c, i) => {
    if (c.kind === 'total') judged(i, judgeTotal(scene, c));
    else if (c.kind === 'background') judged(i, judgeBackground(c));
    else if (c.kind === 'object') judged(i, judgeMention(scene, c, consumed, mentionPlaces.get(i)));
  });
  // Pass 2: claims about subjects (a place claim's subject may be a mention judged in pass 1).
  claims.forEach((c, i) => {
    if (c.kind === 'place') judged(i, judgePlace(scene, tokens, c, claims, verdicts));
    else if (c.kind === 'relation') judged(i, judgeRelation(scene, tokens, c));
    else if (c.kind === 'attribute') judged(i, judgeAttribute(scene, c));
  });

  return {
    parse,
    verdicts,
    covered,
    facts,
    capture: captureDetail(scene, claims, verdicts, mentionPlaces, facts, parse.unreadable.length),
  };
}

/** Places stated for each mention (used to link mentions to the right objects). */
function placesByMention(claims: readonly Claim[]): Map<number, Set<string>> {
  const mentionPlaces = new Map<number, Set<string>>();
  for (const c of claims) {
    if (c.kind === 'place' && 'mention' in c.subject) {
      const set = mentionPlaces.get(c.subject.mention) ?? new Set<string>();
      set.add(c.place);
      mentionPlaces.set(c.subject.mention, set);
    }
  }
  return mentionPlaces;
}

/** The scene facts a claim with this verdict states correctly (coverage's keys). */
function coveredFacts(c: Claim, v: Verdict, factIds: ReadonlySet<string>): string[] {
  if (!v.holds) return [];
  if (c.kind === 'total') return ['total'];
  if (c.kind === 'object') {
    const full = c.desc.size !== undefined && c.desc.color !== undefined && c.desc.shape !== undefined;
    return full ? v.objects.map((id) => `object:${id}`) : [];
  }
  if (c.kind === 'place') return [`place:${v.objects[0]}`];
  if (c.kind === 'relation') {
    const fid = relationFactId(v.objects[0]!, c.relation, v.objects[1]!);
    return factIds.has(fid) ? [fid] : [];
  }
  return [];
}

function judgeTotal(scene: Scene, c: TotalClaim): Verdict {
  const n = scene.objects.length;
  if (c.count === n) return { holds: true, objects: [], blame: [] };
  return {
    holds: false,
    objects: [],
    reason: 'total',
    message: `says ${c.count} objects, the scene has ${n}`,
    blame: [c.countSpan],
    correct: numberWord(n),
  };
}

function judgeBackground(c: BackgroundClaim): Verdict {
  if (c.color === 'black') return { holds: true, objects: [], blame: [] };
  return {
    holds: false,
    objects: [],
    reason: 'background',
    message: `the background is black, not ${c.color}`,
    blame: [c.span],
    correct: 'black',
  };
}

/** A place claim: about a mention (judged in pass 1) or a definite reference ("the red circle is ..."). */
function judgePlace(
  scene: Scene,
  tokens: readonly string[],
  c: PlaceClaim,
  claims: readonly Claim[],
  verdicts: readonly Verdict[],
): Verdict {
  let subjects: SceneObject[];
  if ('mention' in c.subject) {
    const m = claims[c.subject.mention] as ObjectClaim;
    const mv = verdicts[c.subject.mention]!;
    subjects = mv.holds
      ? mv.objects.map((id) => scene.objects.find((o) => o.id === id)!)
      : scene.objects.filter((o) => matches(o, m.desc));
    if (subjects.length === 0) {
      const message = `place of an object that is not there (${mv.message})`;
      return { holds: false, objects: [], reason: 'subject', message, blame: mv.blame };
    }
  } else {
    const r = resolveRef(scene, c.subject.ref);
    if (!r.object) return { ...r.fail!, reason: r.fail!.reason === 'ambiguous' ? 'ambiguous' : 'subject' };
    subjects = [r.object];
  }
  const at = subjects.find((o) => o.place === c.place);
  if (at) return { holds: true, objects: [at.id], blame: [] };
  const v: Verdict = {
    holds: false,
    objects: subjects.map((o) => o.id),
    reason: 'place',
    message: `nothing described here is ${spanText(tokens, c.span)} (${subjects.map((o) => o.place).join(', ')})`,
    blame: [c.span],
  };
  if (subjects.length === 1) {
    const len = c.span[1] - c.span[0];
    const alts = PLACE_PHRASES[subjects[0]!.place];
    v.correct = alts.find((p) => p.split(' ').length === len) ?? alts[0]!;
  }
  return v;
}

const MIRRORED: Record<string, string> = { left: 'right', right: 'left', above: 'below', below: 'above' };

function judgeRelation(scene: Scene, tokens: readonly string[], c: RelationClaim): Verdict {
  const a = resolveRef(scene, c.subject);
  if (!a.object) return a.fail!;
  const b = resolveRef(scene, c.object);
  if (!b.object) return b.fail!;
  const ids = [a.object.id, b.object.id];
  if (relationHolds(a.object, c.relation, b.object)) return { holds: true, objects: ids, blame: [] };
  const v: Verdict = {
    holds: false,
    objects: ids,
    reason: 'relation',
    message: `the ${describe(c.subject)} is not ${c.relation} the ${describe(c.object)}`,
    blame: [c.span],
  };
  if (relationHolds(a.object, OPPOSITE[c.relation], b.object))
    v.correct = spanText(tokens, c.span).replace(/left|right|above|below/, (w) => MIRRORED[w]!);
  return v;
}

function judgeAttribute(scene: Scene, c: AttributeClaim): Verdict {
  const r = resolveRef(scene, c.subject);
  if (!r.object) return r.fail!;
  const o = r.object;
  const actual = c.size !== undefined ? o.size : o.color;
  if (c.size !== undefined ? o.size === c.size : o.color === c.color)
    return { holds: true, objects: [o.id], blame: [] };
  return {
    holds: false,
    objects: [o.id],
    reason: 'attribute',
    message: `the ${describe(c.subject)} is ${actual}`,
    blame: [c.span],
    correct: actual,
  };
}

function judgeMention(scene: Scene, c: ObjectClaim, consumed: Set<string>, places: Set<string> | undefined): Verdict {
  const full = scene.objects.filter((o) => matches(o, c.desc));
  if (c.exact) {
    if (full.length === c.count) {
      for (const o of full) consumed.add(o.id);
      return { holds: true, objects: full.map((o) => o.id), blame: [] };
    }
    if (full.length > 0) {
      const v: Verdict = {
        holds: false,
        objects: [],
        reason: 'count',
        message: `says ${c.count}, the scene has ${full.length} (${describe(c.desc)})`,
        blame: [c.countSpan],
      };
      if (full.length >= 2) v.correct = numberWord(full.length);
      return v;
    }
    const b = descriptorBlame(scene, c.desc, c.count);
    return { holds: false, objects: [], reason: 'no-object', message: b.message, blame: b.blame };
  }
  const free = full.filter((o) => !consumed.has(o.id));
  if (free.length > 0) {
    const pick = free.find((o) => places?.has(o.place)) ?? free[0]!;
    consumed.add(pick.id);
    return { holds: true, objects: [pick.id], blame: [] };
  }
  if (full.length > 0) {
    return {
      holds: false,
      objects: [],
      reason: 'duplicate',
      message: `every ${describe(c.desc)} was already described`,
      blame: [c.desc.span],
    };
  }
  const b = descriptorBlame(scene, c.desc);
  return { holds: false, objects: [], reason: 'no-object', message: b.message, blame: b.blame };
}

/**
 * CAPTURE-style F1s, with the scene graph as the reference and exact matching:
 *  - objects: each mention predicts `count` objects of its shape; they are matched one to one
 *    to scene objects of that shape (precision over predicted objects, recall over objects);
 *  - attributes: (object, size|colour|place, value) units from mentions, place and attribute
 *    claims, deduplicated; recall over the 3n true units of the scene;
 *  - relations: (a, relation, b) units from relation claims, deduplicated; precision = true
 *    units / units, recall over the aligned relation facts;
 *  - an unreadable span counts as one wrongly predicted object, so broken text never raises
 *    the score.
 */
function captureDetail(
  scene: Scene,
  claims: readonly Claim[],
  verdicts: readonly Verdict[],
  mentionPlaces: Map<number, Set<string>>,
  facts: readonly Fact[],
  unreadableSpans: number,
): CaptureDetail {
  const byId = new Map(scene.objects.map((o) => [o.id, o]));
  const used = new Set<string>();
  const taken = new Map<number, SceneObject[]>();
  let objPred = 0;
  let objTrue = 0;
  const attrUnits = new Map<string, boolean>();
  let attrUnresolved = 0;
  const relUnits = new Map<string, boolean>();
  let relUnresolved = 0;

  claims.forEach((c, i) => {
    if (c.kind !== 'object') return;
    const linked = new Set(verdicts[i]!.objects);
    const places = mentionPlaces.get(i);
    const pool = scene.objects
      .filter((o) => !used.has(o.id) && (c.desc.shape === undefined || o.shape === c.desc.shape))
      .map((o, k) => ({
        o,
        k,
        score: (linked.has(o.id) ? 4 : 0) + (matches(o, c.desc) ? 2 : 0) + (places?.has(o.place) ? 1 : 0),
      }))
      .sort((p, q) => q.score - p.score || p.k - q.k)
      .slice(0, c.count)
      .map((p) => p.o);
    for (const o of pool) used.add(o.id);
    taken.set(i, pool);
    objPred += c.count;
    objTrue += pool.length;
    const attrs: ['size' | 'color', string][] = [];
    if (c.desc.size !== undefined) attrs.push(['size', c.desc.size]);
    if (c.desc.color !== undefined) attrs.push(['color', c.desc.color]);
    for (const o of pool) for (const [k, v] of attrs) addUnit(attrUnits, `${o.id}|${k}|${v}`, o[k] === v);
    attrUnresolved += (c.count - pool.length) * attrs.length;
  });
  claims.forEach((c, i) => {
    if (c.kind === 'place') {
      let subj: SceneObject[] = [];
      if ('mention' in c.subject) subj = taken.get(c.subject.mention) ?? [];
      else {
        const v = verdicts[i]!;
        if (v.holds || v.reason === 'place') subj = v.objects.map((id) => byId.get(id)!);
      }
      const at = subj.find((o) => o.place === c.place);
      if (at) addUnit(attrUnits, `${at.id}|place|${c.place}`, true);
      else if (subj.length > 0) addUnit(attrUnits, `${subj[0]!.id}|place|${c.place}`, false);
      else attrUnresolved++;
    } else if (c.kind === 'attribute') {
      const v = verdicts[i]!;
      if (v.holds || v.reason === 'attribute')
        addUnit(attrUnits, `${v.objects[0]}|${c.size !== undefined ? 'size' : 'color'}|${c.size ?? c.color}`, v.holds);
      else attrUnresolved++;
    } else if (c.kind === 'relation') {
      const v = verdicts[i]!;
      if (v.holds || v.reason === 'relation')
        addUnit(
          relUnits,
          relationFactId(v.objects[0]!, c.relation, v.objects[1]!) + (v.holds ? '' : `|${c.relation}`),
          v.holds,
        );
      else relUnresolved++;
    }
  });
  const n = scene.objects.length;
  const count = (m: Map<string, boolean>) => [...m.values()].filter(Boolean).length;
  const attrTrue = count(attrUnits);
  const relFacts = facts.filter((f) => f.kind === 'relation').map((f) => f.id);
  const relTrueFacts = relFacts.filter((id) => relUnits.get(id) === true).length;
  const object = prf(objTrue, objPred + unreadableSpans, objTrue, n);
  const attribute = prf(attrTrue, attrUnits.size + attrUnresolved, attrTrue, 3 * n);
  const relation = prf(count(relUnits), relUnits.size + relUnresolved, relTrueFacts, relFacts.length);
  return { object, attribute, relation, score: (0.5 * object.f1 + 0.5 * attribute.f1 + 0.2 * relation.f1) / 1.2 };
}

function addUnit(m: Map<string, boolean>, key: string, holds: boolean): void {
  if (!m.has(key)) m.set(key, holds);
}

// ---- per-caption record ----

export interface CaptionScore {
  /** Token count (splitWords pieces) and words (tokens that are not punctuation). */
  tokens: number;
  words: number;
  /** Claims other than the background (always true here), and how many of them hold. */
  claims: number;
  trueClaims: number;
  /** Background claims, true or not: reported apart, never counted in factuality. */
  backgroundClaims: number;
  /** True claims / (claims + unreadable spans); 0 when there is neither. */
  factuality: number;
  /** The same over claims about objects only (mentions, places, attributes, relations; no totals). */
  objectFactuality: number;
  objectClaims: number;
  trueObjectClaims: number;
  /** Objects fully described (size, colour, shape and place, all true) / objects. */
  coverage: number;
  describedObjects: number;
  objects: number;
  /** Scene facts stated correctly / scene facts (count, identities, places, relations). */
  factCoverage: number;
  coveredFacts: string[];
  totalFacts: number;
  /** CAPTURE-style combination of the F1s below. */
  capture: number;
  f1Object: number;
  f1Attribute: number;
  f1Relation: number;
  /** Share of sentences that parse completely (a cut-off last sentence does not). */
  fluency: number;
  /** 1 when the whole caption parses: at least one sentence, every sentence complete, nothing unreadable. */
  parses: number;
  sentences: number;
  completeSentences: number;
  /** Share of adjacent token pairs that are the same token ("the the"). */
  repeatRate: number;
  unreadableTokens: number;
  hasUnreadable: boolean;
  unreadable: Span[];
  /** The false claims, blamed on token spans. */
  errors: ClaimError[];
}

/** Scores one caption (text or token pieces) against its scene. */
export function scoreCaption(scene: Scene, caption: string | readonly string[]): CaptionScore {
  return scoreEvaluation(evaluateParse(scene, parseCaption(caption)));
}

/**
 * The caption pieces of generated ids: up to the first EOS, padding dropped, masks and unknown
 * ids kept as "[MASK]" / "[UNK]" pieces (unreadable to the parser, as they should be).
 */
export function captionPieces(
  ids: readonly number[],
  tokenizer: { pieces(ids: readonly number[]): string[] },
): string[] {
  const end = ids.indexOf(EOS_ID);
  return tokenizer.pieces((end < 0 ? ids : ids.slice(0, end)).filter((id) => id !== PAD_ID));
}

/** Scores generated token ids (see captionPieces). */
export function scoreTokenIds(
  scene: Scene,
  ids: readonly number[],
  tokenizer: { pieces(ids: readonly number[]): string[] },
): CaptionScore {
  return scoreCaption(scene, captionPieces(ids, tokenizer));
}

export function scoreEvaluation(ev: Evaluation): CaptionScore {
  const { parse, verdicts } = ev;
  const t = parse.tokens;
  const claimsOf = (keep: (c: Claim) => boolean): { all: number; held: number } => {
    let all = 0;
    let held = 0;
    parse.claims.forEach((c, i) => {
      if (!keep(c)) return;
      all++;
      if (verdicts[i]!.holds) held++;
    });
    return { all, held };
  };
  const judged = claimsOf((c) => c.kind !== 'background');
  const aboutObjects = claimsOf((c) => c.kind !== 'background' && c.kind !== 'total');
  const unreadableSpans = parse.unreadable.length;
  const share = (held: number, all: number): number =>
    all + unreadableSpans === 0 ? 0 : held / (all + unreadableSpans);
  let repeats = 0;
  for (let i = 1; i < t.length; i++) if (t[i] === t[i - 1]) repeats++;
  const unreadableTokens = parse.unreadable.reduce((s, [a, b]) => s + b - a, 0);
  const completeSentences = parse.sentences.filter((s) => s.complete).length;
  const errors: ClaimError[] = [];
  verdicts.forEach((v, i) => {
    if (v.holds) return;
    const c = parse.claims[i]!;
    const e: ClaimError = {
      claim: i,
      kind: c.kind,
      reason: v.reason!,
      message: v.message ?? '',
      span: c.span,
      blame: v.blame,
      text: v.blame.map((s) => spanText(t, s)).join(' / '),
    };
    if (v.correct !== undefined) e.correct = v.correct;
    errors.push(e);
  });
  const coveredFacts = ev.facts.filter((f) => ev.covered.has(f.id)).map((f) => f.id);
  const objectIds = ev.facts.filter((f) => f.kind === 'object').map((f) => f.objects[0]!);
  const described = objectIds.filter((id) => ev.covered.has(`object:${id}`) && ev.covered.has(`place:${id}`)).length;
  return {
    tokens: t.length,
    words: t.filter((w) => /^[a-z0-9]/.test(w)).length,
    claims: judged.all,
    trueClaims: judged.held,
    backgroundClaims: parse.claims.filter((c) => c.kind === 'background').length,
    factuality: share(judged.held, judged.all),
    objectFactuality: share(aboutObjects.held, aboutObjects.all),
    objectClaims: aboutObjects.all,
    trueObjectClaims: aboutObjects.held,
    coverage: objectIds.length === 0 ? 1 : described / objectIds.length,
    describedObjects: described,
    objects: objectIds.length,
    factCoverage: coveredFacts.length / ev.facts.length,
    coveredFacts,
    totalFacts: ev.facts.length,
    capture: ev.capture.score,
    f1Object: ev.capture.object.f1,
    f1Attribute: ev.capture.attribute.f1,
    f1Relation: ev.capture.relation.f1,
    fluency: parse.sentences.length === 0 ? 0 : completeSentences / parse.sentences.length,
    parses: parse.sentences.length > 0 && completeSentences === parse.sentences.length && unreadableSpans === 0 ? 1 : 0,
    sentences: parse.sentences.length,
    completeSentences,
    repeatRate: t.length < 2 ? 0 : repeats / (t.length - 1),
    unreadableTokens,
    hasUnreadable: unreadableSpans > 0,
    unreadable: parse.unreadable,
    errors,
  };
}

/** Distinct blamed spans of a score, sorted: what a UI highlights. */
export function errorSpans(score: CaptionScore): Span[] {
  const seen = new Map<string, Span>();
  for (const e of score.errors) for (const s of e.blame) seen.set(`${s[0]}:${s[1]}`, s);
  return [...seen.values()].sort((a, b) => a[0] - b[0] || a[1] - b[1]);
}

// ---- summaries ----

export interface Estimate {
  mean: number;
  /** 95% confidence interval of the mean (Student t). */
  lo: number;
  hi: number;
  n: number;
}

export const SUMMARY_METRICS = [
  'factuality',
  'objectFactuality',
  'coverage',
  'factCoverage',
  'capture',
  'f1Object',
  'f1Attribute',
  'f1Relation',
  'fluency',
  'parses',
  'repeatRate',
  'unreadableShare',
  'tokens',
] as const;
export type SummaryMetric = (typeof SUMMARY_METRICS)[number];
export type Summary = Record<SummaryMetric, Estimate>;

const T975 = [
  12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145, 2.131, 2.12, 2.11,
  2.101, 2.093, 2.086, 2.08, 2.074, 2.069, 2.064, 2.06, 2.056, 2.052, 2.048, 2.045, 2.042,
];
/** 97.5% quantile of Student's t (table to 30 degrees of freedom, then 1.96 + 2.4/df, within 0.002). */
export function tQuantile975(df: number): number {
  if (df < 1) return Infinity;
  return df <= 30 ? T975[df - 1]! : 1.96 + 2.4 / df;
}

/** Mean with a 95% confidence interval (t interval; the width is 0 for fewer than 2 values). */
export function meanCI(values: readonly number[]): Estimate {
  const n = values.length;
  if (n === 0) return { mean: NaN, lo: NaN, hi: NaN, n: 0 };
  const mean = values.reduce((s, v) => s + v, 0) / n;
  if (n < 2) return { mean, lo: mean, hi: mean, n };
  const variance = values.reduce((s, v) => s + (v - mean) ** 2, 0) / (n - 1);
  const half = tQuantile975(n - 1) * Math.sqrt(variance / n);
  return { mean, lo: mean - half, hi: mean + half, n };
}

function metricValue(s: CaptionScore, m: SummaryMetric): number {
  return m === 'unreadableShare' ? (s.hasUnreadable ? 1 : 0) : s[m];
}

/** Means with 95% confidence intervals over a set of caption scores. */
export function summarize(scores: readonly CaptionScore[]): Summary {
  const out = {} as Summary;
  for (const m of SUMMARY_METRICS) out[m] = meanCI(scores.map((s) => metricValue(s, m)));
  return out;
}

/**
 * Paired comparison of two systems scored on the same items in the same order: the mean of
 * (a - b) with its 95% interval. An interval excluding 0 is a difference, not noise.
 */
export function pairedDifference(
  a: readonly CaptionScore[],
  b: readonly CaptionScore[],
  metric: SummaryMetric,
): Estimate {
  if (a.length !== b.length) throw new RangeError(`pairedDifference: ${a.length} vs ${b.length} scores`);
  return meanCI(a.map((s, i) => metricValue(s, metric) - metricValue(b[i]!, metric)));
}
