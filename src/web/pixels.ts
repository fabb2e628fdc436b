/**
 * Image pixels in the page, laid out as the model expects them (the contract of
 * src/data/image.ts, which needs sharp and so cannot run here): HWC, each byte mapped by the
 * normalisation the model's export records (normaliseRgb's), then cut into patches in
 * reading order.
 */
import type { PixelNormalisation } from '../model/export.js';

/** RGBA bytes (a canvas's ImageData) or RGB bytes -> normalised HWC float32. */
export function normalisePixels(
  bytes: ArrayLike<number>,
  width: number,
  height: number,
  channels: 3 | 4,
  norm: PixelNormalisation,
): Float32Array {
  if (bytes.length !== width * height * channels)
    throw new RangeError(`expected ${width * height * channels} bytes, got ${bytes.length}`);
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

export { patchify } from '../data/patches.js';
