/**
 * The benchmark's scenes as records of a split: scene k of a split, with its captions and
 * hallucination pairs, is a pure function of (split, seed, k). src/data/benchmark-split.ts
 * writes splits to disk and reads them back.
 *
 * Disjoint splits by construction: scene k of a split is generated from the 32-bit seed
 *   block(split) * 2^28 + ((mix(seed) + k) mod 2^28)
 * where block(train) = 0, block(val) = 1, block(test) = 2 (any other name: 3 + hash mod 13).
 * The standard splits therefore never share a scene seed, whatever --seed each was made with,
 * and a scene's id is its seed in hex.
 */
import { Rng } from '../util/rng.js';
import { writeCaptions } from './captioner.js';
import {
  HALLUCINATION_TYPES,
  type HallucinationRecord,
  type HallucinationType,
  injectAnyHallucination,
} from './hallucination.js';
import { renderScenePng } from './render.js';
import {
  COLORS,
  PLACES,
  SHAPES,
  SIZES,
  type Scene,
  type SceneObject,
  deriveRelations,
  generateScene,
} from './scene.js';

export interface BenchmarkRecord {
  id: string;
  /** Relative to the split directory. */
  image: string;
  scene: Scene;
  captions: string[];
  hallucinations: HallucinationRecord[];
}

const KNOWN_BLOCKS: Readonly<Record<string, number>> = { train: 0, val: 1, test: 2 };
const BLOCK_BITS = 28;
/** Scenes per split block: the most a split can hold. */
export const BLOCK_SIZE = 2 ** BLOCK_BITS;

function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

function mix32(x: number): number {
  let z = (x >>> 0) + 0x9e3779b9;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/** The seed block (top 4 bits of every scene seed) of a split name. */
export function splitBlock(split: string): number {
  return KNOWN_BLOCKS[split] ?? 3 + (fnv1a(split) % 13);
}

/** The 32-bit generator seed of scene `index` of a split (see the module comment). */
export function sceneSeed(split: string, seed: number, index: number): number {
  if (!Number.isInteger(index) || index < 0 || index >= BLOCK_SIZE)
    throw new RangeError(`scene index out of range: ${index}`);
  const within = (mix32(seed) + index) % BLOCK_SIZE;
  return (splitBlock(split) * BLOCK_SIZE + within) >>> 0;
}

export const sceneIdOf = (sceneSeedValue: number): string => sceneSeedValue.toString(16).padStart(8, '0');

export interface RecordOptions {
  imageSize?: number;
  captionsPerScene?: number;
  hallucinationsPerScene?: number;
  minObjects?: number;
  maxObjects?: number;
}

/** Scene `index` of a split with its PNG (what a split on disk holds); see sceneRecord. */
export function makeRecord(
  split: string,
  seed: number,
  index: number,
  opts: RecordOptions = {},
): { record: BenchmarkRecord; png: Buffer } {
  const record = sceneRecord(split, seed, index, opts);
  return { record, png: renderScenePng(record.scene, opts.imageSize ?? 64).png };
}

/**
 * Scene `index` of a split: the scene, captions and hallucination pairs, without encoding its
 * PNG (in-memory splits render pixels directly). Independent random streams for scene,
 * captions and hallucinations, so asking for more captions does not change the scene.
 */
export function sceneRecord(split: string, seed: number, index: number, opts: RecordOptions = {}): BenchmarkRecord {
  const s = sceneSeed(split, seed, index);
  const root = new Rng(s);
  const sceneRng = root.fork();
  const captionRng = root.fork();
  const halRng = root.fork();
  const id = sceneIdOf(s);
  const sceneOpts: { id: string; seed: number; minObjects?: number; maxObjects?: number } = { id, seed: s };
  if (opts.minObjects !== undefined) sceneOpts.minObjects = opts.minObjects;
  if (opts.maxObjects !== undefined) sceneOpts.maxObjects = opts.maxObjects;
  const scene = generateScene(sceneRng, sceneOpts);
  const captions = writeCaptions(scene, captionRng, opts.captionsPerScene ?? 3);
  const hallucinations: HallucinationRecord[] = [];
  const h = opts.hallucinationsPerScene ?? 2;
  // Rotate the preferred type so a split covers all six types evenly where they are possible.
  const types = halRng.shuffle([...HALLUCINATION_TYPES]);
  for (let k = 0; k < h && captions.length > 0; k++) {
    const order: HallucinationType[] = [...types.slice(k % types.length), ...types.slice(0, k % types.length)];
    const caption = captions[k % captions.length]!;
    const r = injectFirstOf(scene, caption.tokens, halRng, order);
    if (r) hallucinations.push(r);
  }
  return { id, image: `images/${id}.png`, scene, captions: captions.map((c) => c.text), hallucinations };
}

/** Tries the types in the given order (not shuffled), first success wins. */
function injectFirstOf(
  scene: Scene,
  tokens: readonly string[],
  rng: Rng,
  order: readonly HallucinationType[],
): HallucinationRecord | null {
  for (const t of order) {
    const r = injectAnyHallucination(scene, tokens, rng, [t]);
    if (r) return r;
  }
  return null;
}

const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const inList = <T extends string>(list: readonly T[], v: unknown): v is T =>
  typeof v === 'string' && (list as readonly string[]).includes(v);

/** Validates a scene graph read from disk; returns an error message or null. */
export function sceneProblem(v: unknown): string | null {
  if (!isObj(v)) return 'scene is not an object';
  if (
    typeof v.id !== 'string' ||
    typeof v.seed !== 'number' ||
    !Array.isArray(v.objects) ||
    !Array.isArray(v.relations)
  )
    return 'scene needs id, seed, objects and relations';
  const places = new Set<string>();
  for (const [k, o] of (v.objects as unknown[]).entries()) {
    if (!isObj(o)) return `scene object ${k} is not an object`;
    if (
      typeof o.id !== 'string' ||
      !inList(SHAPES, o.shape) ||
      !inList(COLORS, o.color) ||
      !inList(SIZES, o.size) ||
      !inList(PLACES, o.place)
    )
      return `scene object ${k} has an unknown id, shape, colour, size or place`;
    if (typeof o.x !== 'number' || typeof o.y !== 'number' || !(o.x >= 0 && o.x <= 1 && o.y >= 0 && o.y <= 1))
      return `scene object ${k} has coordinates outside [0, 1]`;
    if (places.has(o.place)) return `scene objects share the place "${o.place}"`;
    places.add(o.place);
  }
  if (JSON.stringify(deriveRelations(v.objects as SceneObject[])) !== JSON.stringify(v.relations))
    return 'scene relations do not match its objects';
  return null;
}
