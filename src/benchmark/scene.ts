/**
 * Procedural scenes: the ground truth of the benchmark.
 *
 * A scene is 1..6 flat coloured shapes on a black canvas. Every object sits in its own cell of
 * a 3x3 grid (the nine "places"), jittered inside the cell but never leaving it, so:
 *  - objects never overlap or touch (each stays inside its cell, see `MAX_JITTER`),
 *  - the absolute place of an object ("in the top left") is exact, not a judgement call,
 *  - pairwise relations follow a margin rule that the grid makes unambiguous (see
 *    `RELATION_MARGIN`).
 * Coordinates are normalised: x from 0 (left edge) to 1 (right edge), y from 0 (top) to 1
 * (bottom); they are rounded to 4 decimals so the JSON scene graph is stable byte for byte.
 */
import type { Rng } from '../util/rng.js';

export const SHAPES = ['circle', 'square', 'triangle', 'star', 'hexagon', 'ring', 'diamond', 'cross'] as const;
export type Shape = (typeof SHAPES)[number];

/** Object colours: distinct hues (plus white and gray) that read well on black. */
export const COLORS = ['red', 'green', 'blue', 'yellow', 'purple', 'orange', 'white', 'gray'] as const;
export type Color = (typeof COLORS)[number];

export const SIZES = ['small', 'large'] as const;
export type Size = (typeof SIZES)[number];

/** The nine places, row by row; index = row * 3 + col. */
export const PLACES = [
  'top left',
  'top',
  'top right',
  'left',
  'center',
  'right',
  'bottom left',
  'bottom',
  'bottom right',
] as const;
export type Place = (typeof PLACES)[number];

export type Relation = 'left of' | 'right of' | 'above' | 'below';

/** Radius (normalised to the image side) of the bounding circle: 64 px -> large ~18.6 px, small ~10.9 px across. */
export const RADIUS: Readonly<Record<Size, number>> = { large: 0.145, small: 0.085 };
/**
 * Largest offset of an object's centre from its cell centre, per axis. Chosen so that
 * radius + jitter < 1/6 (half a cell): objects stay inside their cells, hence never overlap,
 * and centres in the same column differ by at most 2 * 0.06 = 0.12 while centres in different
 * columns differ by at least 1/3 - 0.12 = 0.213.
 */
export const MAX_JITTER: Readonly<Record<Size, number>> = { large: 0.01, small: 0.06 };
/**
 * Margin rule: "A is left of B" is stated iff B.x - A.x >= RELATION_MARGIN (same for above with
 * y). 1/6 lies in the middle of the gap [0.12, 0.213] above, so a relation holds exactly when
 * the two objects are in different grid columns (rows) and is never a close call.
 */
export const RELATION_MARGIN = 1 / 6;

export interface SceneObject {
  id: string;
  shape: Shape;
  color: Color;
  size: Size;
  /** Centre, normalised to [0, 1]; y grows downwards. */
  x: number;
  y: number;
  place: Place;
}

/** Canonical relation of the scene graph: only 'left of' and 'above' are stored (B right of A = A left of B). */
export interface SceneRelation {
  subject: string;
  relation: 'left of' | 'above';
  object: string;
  /**
   * True when this is the pair's only relation (same row or same column). Diagonal pairs have
   * two relations (both true) and are not counted as separate coverage facts; see metrics.ts.
   */
  aligned: boolean;
}

export interface Scene {
  id: string;
  seed: number;
  objects: SceneObject[];
  relations: SceneRelation[];
}

export interface SceneOptions {
  /** Default 1. */
  minObjects?: number;
  /** Default 6; at most 9 (one object per place). */
  maxObjects?: number;
  /** Scene id; default the seed as 8 hex digits. */
  id?: string;
  /** Recorded in the scene; default 0. */
  seed?: number;
}

const round4 = (v: number): number => Math.round(v * 10000) / 10000;

export function placeIndex(place: Place): number {
  return PLACES.indexOf(place);
}

/** Row (0 top .. 2 bottom) and column (0 left .. 2 right) of a place. */
export function placeCell(place: Place): { row: number; col: number } {
  const i = placeIndex(place);
  return { row: Math.floor(i / 3), col: i % 3 };
}

/**
 * A random scene. Draws the object count, then for each object a free cell, a shape, colour and
 * size (independently, so identical objects and groups like "two small red circles" occur), and
 * a jitter inside the cell.
 */
export function generateScene(rng: Rng, options: SceneOptions = {}): Scene {
  const minObjects = options.minObjects ?? 1;
  const maxObjects = options.maxObjects ?? 6;
  if (
    !Number.isInteger(minObjects) ||
    !Number.isInteger(maxObjects) ||
    minObjects < 1 ||
    maxObjects > 9 ||
    minObjects > maxObjects
  ) {
    throw new RangeError(`scene object count must satisfy 1 <= min <= max <= 9, got ${minObjects}..${maxObjects}`);
  }
  const seed = options.seed ?? 0;
  const n = minObjects + rng.int(maxObjects - minObjects + 1);
  const cells = rng.shuffle([0, 1, 2, 3, 4, 5, 6, 7, 8]).slice(0, n);
  const objects: SceneObject[] = cells.map((cell, i) => {
    const shape = rng.choice(SHAPES);
    const color = rng.choice(COLORS);
    const size = rng.choice(SIZES);
    const j = MAX_JITTER[size];
    const row = Math.floor(cell / 3);
    const col = cell % 3;
    const x = round4((col + 0.5) / 3 + (rng.next() * 2 - 1) * j);
    const y = round4((row + 0.5) / 3 + (rng.next() * 2 - 1) * j);
    return { id: `o${i}`, shape, color, size, x, y, place: PLACES[cell]! };
  });
  return {
    id: options.id ?? (seed >>> 0).toString(16).padStart(8, '0'),
    seed,
    objects,
    relations: deriveRelations(objects),
  };
}

/** Whether `relation` holds between a and b under the margin rule (exact, geometric). */
export function relationHolds(a: SceneObject, relation: Relation, b: SceneObject): boolean {
  switch (relation) {
    case 'left of':
      return b.x - a.x >= RELATION_MARGIN;
    case 'right of':
      return a.x - b.x >= RELATION_MARGIN;
    case 'above':
      return b.y - a.y >= RELATION_MARGIN;
    case 'below':
      return a.y - b.y >= RELATION_MARGIN;
  }
}

/** The true relation between a and b along one axis, if any. */
export function horizontalRelation(a: SceneObject, b: SceneObject): 'left of' | 'right of' | null {
  return relationHolds(a, 'left of', b) ? 'left of' : relationHolds(a, 'right of', b) ? 'right of' : null;
}
export function verticalRelation(a: SceneObject, b: SceneObject): 'above' | 'below' | null {
  return relationHolds(a, 'above', b) ? 'above' : relationHolds(a, 'below', b) ? 'below' : null;
}

/** All unambiguous relations, canonical direction ('left of', 'above'), in object order. */
export function deriveRelations(objects: readonly SceneObject[]): SceneRelation[] {
  const out: SceneRelation[] = [];
  for (let i = 0; i < objects.length; i++) {
    for (let k = i + 1; k < objects.length; k++) {
      const a = objects[i]!;
      const b = objects[k]!;
      const h = horizontalRelation(a, b);
      const v = verticalRelation(a, b);
      const aligned = (h === null) !== (v === null);
      if (h)
        out.push(
          h === 'left of'
            ? { subject: a.id, relation: 'left of', object: b.id, aligned }
            : { subject: b.id, relation: 'left of', object: a.id, aligned },
        );
      if (v)
        out.push(
          v === 'above'
            ? { subject: a.id, relation: 'above', object: b.id, aligned }
            : { subject: b.id, relation: 'above', object: a.id, aligned },
        );
    }
  }
  return out;
}

/** Key of an object's full identity: "small red circle". */
export function objectKey(o: Pick<SceneObject, 'size' | 'color' | 'shape'>): string {
  return `${o.size} ${o.color} ${o.shape}`;
}

/** Smallest gap between the bounding circles of two objects (normalised units); > 0 means no overlap. */
export function objectGap(a: SceneObject, b: SceneObject): number {
  return Math.hypot(a.x - b.x, a.y - b.y) - RADIUS[a.size] - RADIUS[b.size];
}
