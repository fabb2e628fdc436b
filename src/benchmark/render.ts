/**
 * Scene -> pixels with @napi-rs/canvas (Skia). Flat colours on black, antialiased edges.
 * Rendering is a pure function of the scene graph and the size, so the same seed gives the same
 * bytes (the PNG encoder writes no timestamp).
 */
import { createCanvas, type SKRSContext2D } from '@napi-rs/canvas';
import { type Color, type Scene, type SceneObject, RADIUS } from './scene.js';

export interface RgbImage {
  width: number;
  height: number;
  /** HWC, 3 bytes per pixel. */
  rgb: Uint8Array;
}

/** sRGB fill of each colour; hues far apart so a small vision encoder can tell them apart. */
export const COLOR_RGB: Readonly<Record<Color, readonly [number, number, number]>> = {
  red: [230, 40, 40],
  green: [40, 190, 60],
  blue: [50, 100, 255],
  yellow: [240, 220, 40],
  purple: [170, 60, 220],
  orange: [255, 140, 20],
  white: [245, 245, 245],
  gray: [128, 128, 128],
};

function polygon(ctx: SKRSContext2D, cx: number, cy: number, points: readonly (readonly [number, number])[]): void {
  ctx.beginPath();
  points.forEach(([px, py], i) => (i === 0 ? ctx.moveTo(cx + px, cy + py) : ctx.lineTo(cx + px, cy + py)));
  ctx.closePath();
  ctx.fill();
}

function regular(n: number, r: number, rotation: number): [number, number][] {
  return Array.from({ length: n }, (_, i) => {
    const a = rotation + (2 * Math.PI * i) / n;
    return [r * Math.cos(a), r * Math.sin(a)];
  });
}

/** Draws one object; every shape fits in the bounding circle of radius RADIUS[size]. */
function drawObject(ctx: SKRSContext2D, o: SceneObject, side: number): void {
  const [r8, g8, b8] = COLOR_RGB[o.color];
  ctx.fillStyle = `rgb(${r8},${g8},${b8})`;
  ctx.strokeStyle = ctx.fillStyle;
  const cx = o.x * side;
  const cy = o.y * side;
  const r = RADIUS[o.size] * side;
  switch (o.shape) {
    case 'circle':
      ctx.beginPath();
      ctx.arc(cx, cy, r * 0.95, 0, 2 * Math.PI);
      ctx.fill();
      break;
    case 'ring': {
      // Thick stroke so the hole stays visible but the ring does not vanish at 11 px.
      const lw = r * 0.4;
      ctx.lineWidth = lw;
      ctx.beginPath();
      ctx.arc(cx, cy, r * 0.95 - lw / 2, 0, 2 * Math.PI);
      ctx.stroke();
      break;
    }
    case 'square': {
      const h = r * 0.78; // half side: the square's corners stay inside the circle (0.78 * sqrt 2 < 1.1 ~ r)
      ctx.fillRect(cx - h, cy - h, 2 * h, 2 * h);
      break;
    }
    case 'triangle': {
      // Pointing up; shifted down so its bounding box is centred on the object centre.
      polygon(ctx, cx, cy + r * 0.2, regular(3, r * 1.05, -Math.PI / 2));
      break;
    }
    case 'star': {
      const pts: [number, number][] = [];
      for (let i = 0; i < 10; i++) {
        const rad = i % 2 === 0 ? r : r * 0.45;
        const a = -Math.PI / 2 + (Math.PI * i) / 5;
        pts.push([rad * Math.cos(a), rad * Math.sin(a) + r * 0.08]);
      }
      polygon(ctx, cx, cy, pts);
      break;
    }
    case 'hexagon':
      polygon(ctx, cx, cy, regular(6, r * 0.95, 0));
      break;
    case 'diamond':
      polygon(ctx, cx, cy, [
        [0, -r],
        [r * 0.65, 0],
        [0, r],
        [-r * 0.65, 0],
      ]);
      break;
    case 'cross': {
      const a = r * 0.85;
      const t = r * 0.3;
      ctx.fillRect(cx - a, cy - t, 2 * a, 2 * t);
      ctx.fillRect(cx - t, cy - a, 2 * t, 2 * a);
      break;
    }
  }
}

function drawScene(scene: Scene, size: number) {
  if (!Number.isInteger(size) || size < 8 || size > 4096)
    throw new RangeError(`render size must be an integer in [8, 4096], got ${size}`);
  const canvas = createCanvas(size, size);
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = 'rgb(0,0,0)';
  ctx.fillRect(0, 0, size, size);
  for (const o of scene.objects) drawObject(ctx, o, size);
  return { canvas, ctx };
}

function toRgb(rgba: Uint8ClampedArray | Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(size * size * 3);
  for (let p = 0, q = 0; p < rgba.length; p += 4, q += 3) {
    out[q] = rgba[p]!;
    out[q + 1] = rgba[p + 1]!;
    out[q + 2] = rgba[p + 2]!;
  }
  return out;
}

/** Renders a scene to RGB bytes (HWC), default 64x64. */
export function renderScene(scene: Scene, size = 64): RgbImage {
  const { ctx } = drawScene(scene, size);
  return { width: size, height: size, rgb: toRgb(ctx.getImageData(0, 0, size, size).data, size) };
}

/** Renders a scene and returns both the RGB bytes and its PNG encoding (one draw). */
export function renderScenePng(scene: Scene, size = 64): RgbImage & { png: Buffer } {
  const { canvas, ctx } = drawScene(scene, size);
  return {
    width: size,
    height: size,
    rgb: toRgb(ctx.getImageData(0, 0, size, size).data, size),
    png: canvas.encodeSync('png'),
  };
}

/** Copies RGB bytes (HWC) into an RGBA pixel buffer (a canvas ImageData's), opaque. */
export function fillRgba(rgb: Uint8Array, rgba: Uint8ClampedArray): void {
  for (let p = 0, q = 0; q < rgb.length; p += 4, q += 3) {
    rgba[p] = rgb[q]!;
    rgba[p + 1] = rgb[q + 1]!;
    rgba[p + 2] = rgb[q + 2]!;
    rgba[p + 3] = 255;
  }
}

/** PNG encoding of RGB bytes (HWC). */
export function encodePng(image: RgbImage): Buffer {
  const { width, height, rgb } = image;
  if (rgb.length !== width * height * 3)
    throw new RangeError(`encodePng: expected ${width * height * 3} bytes, got ${rgb.length}`);
  const canvas = createCanvas(width, height);
  const ctx = canvas.getContext('2d');
  const data = ctx.createImageData(width, height);
  fillRgba(rgb, data.data);
  ctx.putImageData(data, 0, 0);
  return canvas.encodeSync('png');
}
