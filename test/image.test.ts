import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { UserError } from '../src/util/errors.js';
import {
  ImageTooLarge,
  decodeImageBuffer,
  denormaliseRgb,
  imageFromRgb,
  loadImage,
  patchify,
} from '../src/data/image.js';
import { pngDeclaring } from './helpers/hostile.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rediff-img-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

async function rejectsUser(p: Promise<unknown>, expected: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof UserError, `expected UserError, got ${String(err)}`);
    assert.match(err.message, expected);
    assert.ok(!err.message.includes('\n'));
    return true;
  });
}

/** A 4x4 RGB test card: pixel (y, x) = (10y + x, 100 + x, 200 - y). */
function card(): Uint8Array {
  const rgb = new Uint8Array(4 * 4 * 3);
  for (let y = 0; y < 4; y++) {
    for (let x = 0; x < 4; x++) rgb.set([10 * y + x, 100 + x, 200 - y], (y * 4 + x) * 3);
  }
  return rgb;
}

test('loadImage: PNG at its own size is exact, normalised to [0, 1], HWC', async () => {
  const rgb = card();
  const file = path.join(dir, 'card.png');
  await sharp(rgb, { raw: { width: 4, height: 4, channels: 3 } })
    .png()
    .toFile(file);
  const img = await loadImage(file, 4);
  assert.equal(img.length, 4 * 4 * 3);
  assert.deepEqual(Array.from(denormaliseRgb(img)), Array.from(rgb));
  assert.ok(Math.abs(img[0]! - 0 / 255) < 1e-7);
  assert.ok(img.every((v) => v >= -1 && v <= 1));
  assert.deepEqual(await imageFromRgb(rgb, 4, 4, 4), img);
});

test('loadImage: JPEG/WebP, alpha flattened on black, grey to RGB, fill resize of non-square', async () => {
  const red = { r: 255, g: 0, b: 0 };
  const jpg = path.join(dir, 'red.jpg');
  await sharp({ create: { width: 20, height: 10, channels: 3, background: red } })
    .jpeg({ quality: 95 })
    .toFile(jpg);
  const a = denormaliseRgb(await loadImage(jpg, 8));
  assert.equal(a.length, 8 * 8 * 3);
  assert.ok(a[0]! > 240 && a[1]! < 15 && a[2]! < 15);

  const webp = path.join(dir, 'half.webp');
  await sharp({ create: { width: 6, height: 6, channels: 4, background: { r: 255, g: 255, b: 255, alpha: 0 } } })
    .webp({ lossless: true })
    .toFile(webp);
  const b = denormaliseRgb(await loadImage(webp, 3));
  assert.ok(
    b.every((v) => v === 0),
    'fully transparent white becomes black',
  );

  const grey = await sharp({ create: { width: 5, height: 5, channels: 3, background: { r: 90, g: 90, b: 90 } } })
    .greyscale()
    .png()
    .toBuffer();
  const g = denormaliseRgb(await decodeImageBuffer(grey, 2, 'upload'));
  assert.deepEqual(Array.from(g), new Array(12).fill(90));

  // 'fill' keeps the whole picture: a 2x1 image (left black, right white) stays split in halves.
  const lr = Uint8Array.of(0, 0, 0, 255, 255, 255);
  const fill = denormaliseRgb(await imageFromRgb(lr, 2, 1, 4));
  assert.ok(fill[0]! < 60 && fill[3 * 3]! > 195, 'left dark, right light in every row');
  assert.ok(fill[3 * 4 * 3]! < 60 && fill[(3 * 4 + 3) * 3]! > 195);
});

test('loadImage: missing, empty, non-image, directory, truncated, unsupported: a UserError naming it', async () => {
  await rejectsUser(loadImage(path.join(dir, 'nope.png'), 8), /^image not found: .*nope\.png$/);
  const empty = path.join(dir, 'empty.png');
  fs.writeFileSync(empty, '');
  await rejectsUser(loadImage(empty, 8), /^not a readable image: .*empty\.png \(empty file\)$/);
  const txt = path.join(dir, 'notes.txt');
  fs.writeFileSync(txt, 'a red circle left of a blue square\n');
  await rejectsUser(loadImage(txt, 8), /^not a readable image: .*notes\.txt \(.+\)$/);
  await rejectsUser(loadImage(dir, 8), /^not a readable image: .* \(is a directory\)$/);
  const png = await sharp({ create: { width: 16, height: 16, channels: 3, background: 'blue' } })
    .png()
    .toBuffer();
  const cut = path.join(dir, 'cut.png');
  fs.writeFileSync(cut, png.subarray(0, png.length - 30));
  await rejectsUser(loadImage(cut, 8), /^not a readable image: .*cut\.png \(.+\)$/);
  const gif = path.join(dir, 'anim.gif');
  await sharp({ create: { width: 4, height: 4, channels: 3, background: 'blue' } })
    .gif()
    .toFile(gif);
  await rejectsUser(loadImage(gif, 8), /^not a readable image: .*anim\.gif \(unsupported format gif/);
  await rejectsUser(decodeImageBuffer(Buffer.from('xx'), 8, 'upload.bin'), /^not a readable image: upload\.bin \(/);
});

test('decodeImageBuffer: more pixels than maxPixels is refused from the header, before decoding', async () => {
  const huge = pngDeclaring(16383, 16383);
  await assert.rejects(decodeImageBuffer(huge, 8, 'huge.png', { maxPixels: 25_000_000 }), (err: unknown) => {
    assert.ok(err instanceof ImageTooLarge && err instanceof UserError);
    assert.deepEqual([err.width, err.height], [16383, 16383]);
    assert.match(err.message, /^image too large: huge\.png is 16383 x 16383 pixels; at most 25000000 pixels/);
    return true;
  });
  const jpeg = await sharp({ create: { width: 300, height: 200, channels: 3, background: '#204060' } })
    .jpeg()
    .toBuffer();
  await assert.rejects(
    decodeImageBuffer(jpeg, 8, 'wide.jpg', { maxPixels: 300 * 200 - 1 }),
    /image too large: wide\.jpg is 300 x 200 pixels/,
  );
  assert.equal((await decodeImageBuffer(jpeg, 8, 'wide.jpg', { maxPixels: 300 * 200 })).length, 8 * 8 * 3);
});

test('patchify: patch rows, then patch columns; within a patch row, column, channel', () => {
  const size = 4;
  const patch = 2;
  // Value encodes its position: 100*y + 10*x + c.
  const hwc = new Float32Array(size * size * 3);
  for (let y = 0; y < size; y++)
    for (let x = 0; x < size; x++) for (let c = 0; c < 3; c++) hwc[(y * size + x) * 3 + c] = 100 * y + 10 * x + c;
  const p = patchify(hwc, size, patch);
  assert.equal(p.length, hwc.length);
  const dim = patch * patch * 3;
  const patchAt = (i: number): number[] => Array.from(p.subarray(i * dim, (i + 1) * dim));
  // Patch 0: top-left; pixels (0,0) (0,1) (1,0) (1,1).
  assert.deepEqual(patchAt(0), [0, 1, 2, 10, 11, 12, 100, 101, 102, 110, 111, 112]);
  // Patch 1: top-right; pixels (0,2) (0,3) (1,2) (1,3).
  assert.deepEqual(patchAt(1), [20, 21, 22, 30, 31, 32, 120, 121, 122, 130, 131, 132]);
  // Patch 2: bottom-left; pixels (2,0) (2,1) (3,0) (3,1).
  assert.deepEqual(patchAt(2), [200, 201, 202, 210, 211, 212, 300, 301, 302, 310, 311, 312]);
  assert.deepEqual(patchAt(3).slice(0, 3), [220, 221, 222]);
  assert.throws(() => patchify(hwc, size, 3), RangeError);
  assert.throws(() => patchify(hwc.subarray(1), size, 2), RangeError);
});
