/**
 * Image pixels in the page, laid out as the model expects them (the contract of
 * src/data/image.ts, which needs sharp and so cannot run here): HWC, each byte mapped by the
 * normalisation the model's export records (normaliseRgb's), then cut into patches in
 * reading order.
 */
import type { PixelNormalisation } from '../model/export.js';

/** RGBA bytes (a canvas's ImageData) or RGB bytes -> normalised HWC float32. */
export function normalisePixels(bytes: ArrayLike<number>, width: number, height: number, channels: 3 | 4, norm: PixelNormalisation): Float32Array {
  if (bytes.length !== width * height * channels) throw new RangeError(`expected ${width * height * channels} bytes, got ${bytes.length}`);
  const out = new Float32Array(width * height * 3);
  const [sr, sg, sb] = norm.scale;
  const [or, og, ob] = norm.offset;
  for (let p = 0, q = 0; q < out.length; p += channels, q += 3) {
    out[q] = bytes[p]! * sr + or;
    out[q + 1] = bytes[p + 1]! * sg + og;
    out[q + 2] = bytes[p + 2]! * sb + ob;
  }
  return out;
}

/** HWC [size, size, 3] -> patches [numPatches, patch*patch*3] (see patchify in src/data/image.ts). */
export function patchify(hwc: Float32Array, size: number, patch: number): Float32Array {
  if (!Number.isInteger(patch) || patch < 1 || size % patch !== 0) throw new RangeError(`patch size ${patch} must divide the image size ${size}`);
  if (hwc.length !== size * size * 3) throw new RangeError(`image has ${hwc.length} values, expected ${size}*${size}*3`);
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
