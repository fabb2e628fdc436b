/**
 * Detailed reference captions for a scene: several correct ones per scene, 30-90 words (shorter
 * only when a one- or two-object scene has nothing more to say), at most 95 tokens so a caption
 * plus one EOS fits the default generation length of 96.
 *
 * Variety comes from: the order objects are mentioned in (shuffled, or reading order),
 * grouping identical objects ("two small red circles, one ... and one ...") or not ("a small
 * red circle ... another small red circle ..."), six sentence forms per object or group, lists
 * of several objects in one sentence, optional relation / attribute sentences between objects
 * that have a unique description, synonyms ("big", "in the middle", "upper left corner") and
 * where the count sentence goes. The grammar stays regular (every sentence is one of the forms
 * in parser.ts) so a small model can learn it.
 *
 * Every caption comes with the ids of the scene facts it states (metrics.ts `sceneFacts`), which
 * the tests compare with what the metrics find.
 */
import { WordTokenizer, joinWords } from '../tokenizer/word.js';
import { Rng } from '../util/rng.js';
import {
  GROUNDED_WORDS,
  BENCHMARK_PROMPT,
  BENCHMARK_VOCABULARY,
  PLACE_PHRASES,
  RELATION_PHRASES,
  SHAPE_PLURAL,
  article,
  numberWord,
} from './lexicon.js';
import { relationFactId, sceneFacts } from './metrics.js';
import { type Relation, type Scene, type SceneObject, objectKey, placeIndex } from './scene.js';

export { BENCHMARK_PROMPT, BENCHMARK_VOCABULARY };

/** The word tokenizer over the benchmark vocabulary (special tokens first). */
export function benchmarkTokenizer(): WordTokenizer {
  return new WordTokenizer(BENCHMARK_VOCABULARY);
}

/** The ids of each grounded word group (colour, shape, size, place): the groups of the grounding masks. */
export function groundedWordIds(t: WordTokenizer = benchmarkTokenizer()): number[][] {
  return Object.values(GROUNDED_WORDS).map((words) => words.map((w) => t.encode(w)[0]!));
}

export interface Caption {
  text: string;
  /** splitWords pieces of `text`. */
  tokens: string[];
  /** Ids of the scene facts the caption states (see metrics.ts). */
  facts: string[];
}

export interface CaptionOptions {
  /** Default 95 (96 positions minus one EOS). */
  maxTokens?: number;
  /** Target word range; default 30..90. */
  minWords?: number;
  maxWords?: number;
}

interface Sentence {
  words: string[];
  facts: string[];
  /** Objects whose introduction this sentence contains (relations must come after them). */
  introduces: string[];
  /** Objects this sentence refers to by definite reference. */
  refers: string[];
}

type Descriptor = ('size' | 'color' | 'shape')[];
const REF_OPTIONS: Descriptor[] = [['shape'], ['color', 'shape'], ['size', 'shape'], ['size', 'color', 'shape']];

const isWord = (w: string): boolean => /^[a-z0-9]/.test(w);
const countWords = (ss: readonly Sentence[]): number => ss.reduce((s, x) => s + x.words.filter(isWord).length, 0);
const countTokens = (ss: readonly Sentence[]): number => ss.reduce((s, x) => s + x.words.length + 1, 0);

class Writer {
  private readonly keyCount = new Map<string, number>();
  /** Compact mode: shortest forms, used when a caption would not fit. */
  compact = false;

  constructor(
    readonly scene: Scene,
    readonly rng: Rng,
  ) {
    for (const o of scene.objects) this.keyCount.set(objectKey(o), (this.keyCount.get(objectKey(o)) ?? 0) + 1);
  }

  unique(o: SceneObject): boolean {
    return this.keyCount.get(objectKey(o)) === 1;
  }

  private pick<T>(items: readonly T[]): T {
    return this.rng.choice(items);
  }

  sizeWord(o: SceneObject): string {
    return o.size === 'large' && this.rng.next() < 0.2 ? 'big' : o.size;
  }

  place(o: SceneObject): string[] {
    const phrases = PLACE_PHRASES[o.place];
    if (this.compact) return phrases.reduce((a, b) => (b.split(' ').length < a.split(' ').length ? b : a)).split(' ');
    return this.pick(phrases).split(' ');
  }

  /** "a small red circle" / "another ..." */
  introSingular(o: SceneObject, another: boolean): string[] {
    const size = this.sizeWord(o);
    return [another ? 'another' : article(size), size, o.color, o.shape];
  }

  introPlural(objs: readonly SceneObject[]): string[] {
    const o = objs[0]!;
    return [numberWord(objs.length), this.sizeWord(o), o.color, SHAPE_PLURAL[o.shape]];
  }

  /** A definite reference that matches only `o` (random among the unique ones). */
  ref(o: SceneObject): string[] {
    const opts = REF_OPTIONS.filter(
      (keys) => this.scene.objects.filter((p) => keys.every((k) => p[k] === o[k])).length === 1,
    );
    const keys = this.compact ? opts[0]! : this.pick(opts);
    return ['the', ...keys.map((k) => (k === 'size' ? this.sizeWord(o) : o[k]))];
  }

  refKeys(o: SceneObject): Descriptor[] {
    return REF_OPTIONS.filter(
      (keys) => this.scene.objects.filter((p) => keys.every((k) => p[k] === o[k])).length === 1,
    );
  }

  lead(plural: boolean): string[] {
    const r = this.rng.next();
    if (r < 0.6 || this.compact) return ['there', plural ? 'are' : 'is'];
    if (r < 0.85) return [this.pick(['you', 'we']), 'can', 'see'];
    return ['the', this.pick(['image', 'picture']), this.pick(['shows', 'contains'])];
  }

  list(parts: string[][], prefix: string[] = []): string[] {
    const out: string[] = [];
    parts.forEach((p, i) => {
      if (i > 0) out.push(...(i === parts.length - 1 ? ['and'] : [',']));
      out.push(...prefix, ...p);
    });
    return out;
  }

  totalSentence(atEnd: boolean): Sentence {
    const n = this.scene.objects.length;
    const noun = this.pick(n === 1 ? ['shape', 'object'] : ['shapes', 'objects']);
    const np =
      n === 1
        ? [
            ...this.pick([
              ['only', 'one'],
              ['a', 'single'],
            ]),
            noun,
          ]
        : [numberWord(n), noun];
    const bg = (): string[] => (this.rng.next() < 0.4 && !this.compact ? ['on', 'a', 'black', 'background'] : []);
    const inImage = (): string[] =>
      this.rng.next() < 0.5 && !this.compact ? ['in', 'the', this.pick(['image', 'picture'])] : [];
    let words: string[];
    if (atEnd) words = ['in', 'total', ',', 'there', n === 1 ? 'is' : 'are', ...np];
    else {
      const r = this.compact ? 0 : this.rng.int(3);
      if (r === 0) words = ['there', n === 1 ? 'is' : 'are', ...np, ...inImage()];
      else if (r === 1)
        words = ['the', this.pick(['image', 'picture']), this.pick(['shows', 'contains']), ...np, ...bg()];
      else
        words = [
          ...np,
          n === 1 ? 'is' : 'are',
          this.pick(['visible', 'shown']),
          ...(this.rng.next() < 0.5 ? inImage() : bg()),
        ];
    }
    return { words, facts: ['total'], introduces: [], refers: [] };
  }

  /** One sentence introducing one object with its place. */
  singularSentence(o: SceneObject, another: boolean): Sentence {
    const intro = this.introSingular(o, another);
    const place = this.place(o);
    const form = this.compact ? 0 : this.rng.int(6);
    const words = [
      () => [...intro, this.rng.next() < 0.25 ? 'sits' : 'is', ...place],
      () => [...this.lead(false), ...intro, ...place],
      () => [...place, ',', 'there', 'is', ...intro],
      () => [...place, 'is', ...intro],
      () => [this.pick(['you', 'we']), 'can', 'see', ...intro, ...place],
      () => [...intro, 'can', 'be', 'seen', ...place],
    ][form]!();
    return { words, facts: [`object:${o.id}`, `place:${o.id}`], introduces: [o.id], refers: [] };
  }

  /** One sentence introducing a group of identical objects with their places. */
  pluralSentence(objs: SceneObject[]): Sentence {
    const ordered =
      this.rng.next() < 0.5
        ? [...objs].sort((a, b) => placeIndex(a.place) - placeIndex(b.place))
        : this.rng.shuffle([...objs]);
    const intro = this.introPlural(ordered);
    const places = ordered.map((o) => this.place(o));
    const form = this.compact ? 1 : this.rng.int(4);
    const words = [
      () => [...this.lead(true), ...intro, ',', ...this.list(places, ['one'])],
      () => [...intro, 'are', ...this.list(places)],
      () => [...this.lead(true), ...intro, ...this.list(places)],
      () => [...intro, 'can', 'be', 'seen', ...this.list(places)],
    ][form]!();
    return {
      words,
      facts: objs.flatMap((o) => [`object:${o.id}`, `place:${o.id}`]),
      introduces: objs.map((o) => o.id),
      refers: [],
    };
  }

  /** Several single objects in one list sentence: "there is A in P, B in Q and C in R". */
  listSentence(items: { o: SceneObject; another: boolean }[]): Sentence {
    const words = [
      ...this.lead(false),
      ...this.list(items.map(({ o, another }) => [...this.introSingular(o, another), ...this.place(o)])),
    ];
    return {
      words,
      facts: items.flatMap(({ o }) => [`object:${o.id}`, `place:${o.id}`]),
      introduces: items.map(({ o }) => o.id),
      refers: [],
    };
  }

  /**
   * Introductions without places, then one reference sentence per object for its place
   * (optionally with a relation): "There is a red circle and a big blue ring. The circle is on
   * the left. ..." Only for objects with a unique description.
   */
  detachedSentences(objs: SceneObject[]): Sentence[] {
    const intro: Sentence = {
      words: [...this.lead(false), ...this.list(objs.map((o) => this.introSingular(o, false)))],
      facts: objs.map((o) => `object:${o.id}`),
      introduces: objs.map((o) => o.id),
      refers: [],
    };
    const rest = objs.map((o) => ({
      words: [...this.ref(o), this.rng.next() < 0.2 ? 'sits' : 'is', ...this.place(o)],
      facts: [`place:${o.id}`],
      introduces: [],
      refers: [o.id],
    }));
    return [intro, ...rest];
  }

  relationSentence(a: SceneObject, clauses: { relation: Relation; b: SceneObject }[]): Sentence {
    const words = [...this.ref(a), 'is'];
    clauses.forEach(({ relation, b }, i) => {
      if (i > 0) words.push('and');
      words.push(...this.pick(RELATION_PHRASES[relation]).split(' '), ...this.ref(b));
    });
    return {
      words,
      facts: clauses.map(({ relation, b }) => relationFactId(a.id, relation, b.id)),
      introduces: [],
      refers: [a.id, ...clauses.map((c) => c.b.id)],
    };
  }

  /** "The circle is large and red." (attributes the reference does not already name). */
  attributeSentence(o: SceneObject): Sentence | null {
    const opts = this.refKeys(o).filter((k) => k.length < 3);
    if (opts.length === 0) return null;
    const keys = this.pick(opts);
    const attrs = (['size', 'color'] as const)
      .filter((k) => !keys.includes(k))
      .map((k) => (k === 'size' ? this.sizeWord(o) : o.color));
    if (this.rng.next() < 0.5) attrs.reverse();
    const words = [
      'the',
      ...keys.map((k) => (k === 'size' ? this.sizeWord(o) : o[k])),
      'is',
      ...this.list(attrs.map((a) => [a])),
    ];
    return { words, facts: [], introduces: [], refers: [o.id] };
  }

  fillerSentence(): Sentence {
    const words =
      this.rng.next() < 0.5
        ? ['the', 'background', 'is', 'black']
        : ['the', 'rest', 'of', 'the', this.pick(['image', 'picture']), 'is', 'empty'];
    return { words, facts: [], introduces: [], refers: [] };
  }
}

/** Aligned pairs with unique descriptions, as (a, relation, b) in a random direction. */
function relationCandidates(w: Writer): { a: SceneObject; relation: Relation; b: SceneObject }[] {
  const byId = new Map(w.scene.objects.map((o) => [o.id, o]));
  const out: { a: SceneObject; relation: Relation; b: SceneObject }[] = [];
  for (const r of w.scene.relations) {
    const a = byId.get(r.subject)!;
    const b = byId.get(r.object)!;
    if (!r.aligned || !w.unique(a) || !w.unique(b)) continue;
    if (w.rng.next() < 0.5) out.push({ a, relation: r.relation, b });
    else out.push({ a: b, relation: r.relation === 'left of' ? 'right of' : 'below', b: a });
  }
  return w.rng.shuffle(out);
}

/** The sentences that introduce every object (with places), in a random order and grouping. */
function objectSentences(w: Writer): Sentence[] {
  const { rng } = w;
  const groups = new Map<string, SceneObject[]>();
  for (const o of w.scene.objects) groups.set(objectKey(o), [...(groups.get(objectKey(o)) ?? []), o]);
  type Unit = { plural: true; objs: SceneObject[] } | { plural: false; o: SceneObject };
  const units: Unit[] = [];
  for (const objs of groups.values()) {
    if (objs.length > 1 && (w.compact || rng.next() < 0.7)) units.push({ plural: true, objs });
    else for (const o of objs) units.push({ plural: false, o });
  }
  const first = (u: Unit): number =>
    u.plural ? Math.min(...u.objs.map((o) => placeIndex(o.place))) : placeIndex(u.o.place);
  if (rng.next() < 0.3) units.sort((a, b) => first(a) - first(b));
  else rng.shuffle(units);

  const introduced = new Set<string>();
  const another = (o: SceneObject): boolean => {
    const k = objectKey(o);
    const seen = introduced.has(k);
    introduced.add(k);
    return seen;
  };
  const out: Sentence[] = [];
  let i = 0;
  while (i < units.length) {
    const u = units[i]!;
    if (u.plural) {
      introduced.add(objectKey(u.objs[0]!));
      out.push(w.pluralSentence(u.objs));
      i++;
      continue;
    }
    // A run of single objects may share one list sentence, or be introduced detached.
    let run = 1;
    while (i + run < units.length && !units[i + run]!.plural && run < 3) run++;
    const r = rng.next();
    if (run >= 2 && (w.compact || r < 0.3)) {
      const take = w.compact ? run : 2 + rng.int(run - 1);
      const items = units.slice(i, i + take).map((x) => (x as { o: SceneObject }).o);
      out.push(w.listSentence(items.map((o) => ({ o, another: another(o) }))));
      i += take;
    } else if (run >= 2 && r < 0.45) {
      const items = units.slice(i, i + 2).map((x) => (x as { o: SceneObject }).o);
      if (items.every((o) => w.unique(o))) {
        items.forEach((o) => another(o));
        out.push(...w.detachedSentences(items));
        i += 2;
      } else {
        out.push(w.singularSentence(u.o, another(u.o)));
        i++;
      }
    } else {
      out.push(w.singularSentence(u.o, another(u.o)));
      i++;
    }
  }
  return out;
}

/** Inserts a reference sentence after the sentences that introduce the objects it refers to. */
function insertAfterIntroductions(sentences: Sentence[], s: Sentence, rng: Rng): void {
  let earliest = 0;
  sentences.forEach((x, k) => {
    if (x.introduces.some((id) => s.refers.includes(id))) earliest = Math.max(earliest, k + 1);
  });
  sentences.splice(earliest + rng.int(sentences.length - earliest + 1), 0, s);
}

function finish(sentences: readonly Sentence[]): Caption {
  const tokens = sentences.flatMap((s) => [...s.words, '.']);
  return { text: joinWords(tokens), tokens, facts: [...new Set(sentences.flatMap((s) => s.facts))] };
}

function attempt(scene: Scene, rng: Rng, compact: boolean, o: Required<CaptionOptions>): Sentence[] | null {
  const w = new Writer(scene, rng);
  w.compact = compact;
  const body = objectSentences(w);
  const totalAtEnd = !compact && rng.next() < 0.15;
  const sentences = totalAtEnd ? [...body, w.totalSentence(true)] : [w.totalSentence(false), ...body];
  if (countTokens(sentences) > o.maxTokens || countWords(sentences) > o.maxWords) return null;

  // Extras: relations (a random number, more when the caption is short), then attributes and a
  // filler only if still under the word target.
  const fits = (s: Sentence): boolean =>
    countTokens(sentences) + s.words.length + 1 <= o.maxTokens &&
    countWords(sentences) + s.words.filter(isWord).length <= o.maxWords;
  const rels = relationCandidates(w);
  let wanted = compact ? 0 : rng.int(3);
  const used = new Set<string>();
  for (const r of rels) {
    if (wanted <= 0 && countWords(sentences) >= o.minWords) break;
    const key = relationFactId(r.a.id, r.relation, r.b.id);
    if (used.has(key)) continue;
    const clauses = [{ relation: r.relation, b: r.b }];
    // Sometimes a second relation of the same subject in the same sentence.
    const second = rels.find(
      (x) => x.a === r.a && x.b !== r.b && !used.has(relationFactId(x.a.id, x.relation, x.b.id)),
    );
    if (second && rng.next() < 0.35) clauses.push({ relation: second.relation, b: second.b });
    const s = w.relationSentence(r.a, clauses);
    if (!fits(s)) continue;
    for (const c of clauses) used.add(relationFactId(r.a.id, c.relation, c.b.id));
    insertAfterIntroductions(sentences, s, rng);
    wanted--;
  }
  for (const obj of rng.shuffle([...scene.objects])) {
    if (countWords(sentences) >= o.minWords) break;
    const s = w.attributeSentence(obj);
    if (s && fits(s)) insertAfterIntroductions(sentences, s, rng);
  }
  for (let k = 0; k < 2 && countWords(sentences) < o.minWords; k++) {
    const s = w.fillerSentence();
    if (fits(s) && !sentences.some((x) => x.words.join(' ') === s.words.join(' '))) sentences.push(s);
  }
  return sentences;
}

/** One random correct caption for the scene. */
export function writeCaption(scene: Scene, rng: Rng, options: CaptionOptions = {}): Caption {
  const o: Required<CaptionOptions> = {
    maxTokens: options.maxTokens ?? 95,
    minWords: options.minWords ?? 30,
    maxWords: options.maxWords ?? 90,
  };
  // Small scenes can fall short of minWords; a few more tries then keep the wordiest.
  let best: Sentence[] | null = null;
  for (let k = 0; k < 12; k++) {
    const s = attempt(scene, rng, k >= 6, o);
    if (s && countWords(s) >= o.minWords) return finish(s);
    if (s && (!best || countWords(s) > countWords(best))) best = s;
    if (best && k >= 3) break;
  }
  if (best) return finish(best);
  throw new RangeError(
    `cannot caption scene ${scene.id} (${scene.objects.length} objects) within ${o.maxTokens} tokens / ${o.maxWords} ` +
      `words`,
  );
}

/** Every random choice takes its first option (the first of a list, the order as given). */
class FirstChoice extends Rng {
  constructor() {
    super(0);
  }
  override nextUint32(): number {
    return 0;
  }
  override next(): number {
    return 0;
  }
  override shuffle<T>(items: T[]): T[] {
    return items;
  }
}

/**
 * The canonical caption: the one the captioner writes when every choice takes its first option,
 * so one fixed style for every scene (objects in reading order, alone or two to a sentence, the
 * count last). A caption the captioner can write, so as correct as any; as a
 * training target it leaves a model one caption per image instead of a hedge between
 * paraphrases (docs/oracle.md#canonical-captions).
 */
export function canonicalCaption(scene: Scene, options: CaptionOptions = {}): Caption {
  return writeCaption(scene, new FirstChoice(), options);
}

/** `count` distinct captions (fewer only if the scene admits fewer after many tries). */
export function writeCaptions(scene: Scene, rng: Rng, count: number, options: CaptionOptions = {}): Caption[] {
  const out: Caption[] = [];
  const seen = new Set<string>();
  for (let tries = 0; out.length < count && tries < count * 20; tries++) {
    const c = writeCaption(scene, rng, options);
    if (seen.has(c.text)) continue;
    seen.add(c.text);
    out.push(c);
  }
  return out;
}

/**
 * A caption stating every scene fact (count, every object, every place, every relation fact),
 * with no length limit: the coverage = 1 reference.
 */
export function exhaustiveCaption(scene: Scene, rng: Rng): Caption {
  const w = new Writer(scene, rng);
  w.compact = true;
  const sentences: Sentence[] = [w.totalSentence(false)];
  const groups = new Map<string, SceneObject[]>();
  for (const o of scene.objects) groups.set(objectKey(o), [...(groups.get(objectKey(o)) ?? []), o]);
  for (const objs of groups.values())
    sentences.push(objs.length > 1 ? w.pluralSentence(objs) : w.singularSentence(objs[0]!, false));
  const byId = new Map(scene.objects.map((o) => [o.id, o]));
  const want = new Set(
    sceneFacts(scene)
      .filter((f) => f.kind === 'relation')
      .map((f) => f.id),
  );
  for (const r of scene.relations) {
    const id = relationFactId(r.subject, r.relation, r.object);
    if (want.has(id))
      sentences.push(w.relationSentence(byId.get(r.subject)!, [{ relation: r.relation, b: byId.get(r.object)! }]));
  }
  return finish(sentences);
}
