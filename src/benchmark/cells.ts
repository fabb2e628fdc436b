/**
 * Dense supervision for the vision tower: what is in each cell of the scene's 3x3 grid. One
 * class per cell: empty, or one (shape, colour, size) combination. It is our stand-in for the
 * large-scale pretraining that gives LLaDA-V a vision tower (SigLIP) that already sees.
 */
import { COLORS, PLACES, SHAPES, SIZES, type Scene, type SceneObject, placeIndex } from './scene.js';

export const EMPTY_CELL = 0;
/** Empty, plus every shape x colour x size. */
export const CELL_CLASSES = 1 + SHAPES.length * COLORS.length * SIZES.length;

export function cellClass(o: Pick<SceneObject, 'shape' | 'color' | 'size'>): number {
  return 1 + (SHAPES.indexOf(o.shape) * COLORS.length + COLORS.indexOf(o.color)) * SIZES.length + SIZES.indexOf(o.size);
}

/** The number of values of each factor of an object in a cell (ModelConfig.cellFactors). */
export const CELL_FACTORS: readonly number[] = [SHAPES.length, COLORS.length, SIZES.length];

/** The (shape, colour, size) of a non-empty class. */
export function cellObject(cls: number): Pick<SceneObject, 'shape' | 'color' | 'size'> | null {
  if (cls === EMPTY_CELL) return null;
  const k = cls - 1;
  const size = SIZES[k % SIZES.length]!;
  const color = COLORS[Math.floor(k / SIZES.length) % COLORS.length]!;
  const shape = SHAPES[Math.floor(k / (SIZES.length * COLORS.length))]!;
  return { shape, color, size };
}

/** The class of each of the nine cells, in reading order (the order of PLACES). */
export function sceneCells(scene: Pick<Scene, 'objects'>): Uint8Array {
  const cells = new Uint8Array(PLACES.length);
  for (const o of scene.objects) cells[placeIndex(o.place)] = cellClass(o);
  return cells;
}

/**
 * The class each patch of a g x g patch grid is trained to predict: that of the grid cell
 * holding the patch's centre. With g = 3 (48 px in 16 px patches) patches and cells coincide.
 */
export function patchCellTargets(cells: Uint8Array, patchGrid: number): Uint8Array {
  const out = new Uint8Array(patchGrid * patchGrid);
  for (let r = 0; r < patchGrid; r++) {
    for (let c = 0; c < patchGrid; c++) {
      const cr = Math.floor(((r + 0.5) / patchGrid) * 3);
      const cc = Math.floor(((c + 0.5) / patchGrid) * 3);
      out[r * patchGrid + c] = cells[cr * 3 + cc]!;
    }
  }
  return out;
}
