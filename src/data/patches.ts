/** Cutting an image into ViT patches. Pure (no sharp), so the browser page uses it too. */

/** Number of patches of a size x size image cut into patch x patch squares. */
export function numPatches(size: number, patch: number): number {
  return (size / patch) ** 2;
}

/**
 * HWC image [size, size, 3] -> patches [numPatches, patch*patch*3], row-major: patches in
 * reading order (patch rows top to bottom, then patch columns left to right); within a patch,
 * pixel row, then pixel column, then channel.
 */
export function patchify(hwc: Float32Array, size: number, patch: number): Float32Array {
  if (!Number.isInteger(patch) || patch < 1 || size % patch !== 0) {
    throw new RangeError(`patch size ${patch} must divide the image size ${size}`);
  }
  if (hwc.length !== size * size * 3)
    throw new RangeError(`image has ${hwc.length} values, expected ${size}*${size}*3`);
  const g = size / patch;
  const rowLen = patch * 3;
  const out = new Float32Array(hwc.length);
  let o = 0;
  for (let pr = 0; pr < g; pr++) {
    for (let pc = 0; pc < g; pc++) {
      for (let y = 0; y < patch; y++) {
        const src = ((pr * patch + y) * size + pc * patch) * 3;
        out.set(hwc.subarray(src, src + rowLen), o);
        o += rowLen;
      }
    }
  }
  return out;
}
