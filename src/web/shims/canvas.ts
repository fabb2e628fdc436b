/**
 * Browser stand-in for @napi-rs/canvas, swapped in by the web bundle (src/server/assets.ts) so
 * that src/benchmark/render.ts draws scenes with the page's own canvas (Skia in Chromium too).
 * Only what render.ts uses is provided; PNG encoding is done with canvas.toBlob in the page.
 */
export type SKRSContext2D = CanvasRenderingContext2D;

export function createCanvas(width: number, height: number): HTMLCanvasElement & { encodeSync(format: string): never } {
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  // Software rasterisation, always: Chromium may otherwise move a canvas to GPU (or
  // SwiftShader) raster, whose antialiased edges differ slightly, so the same scene would give
  // slightly different pixels from one run to the next.
  const getContext = canvas.getContext.bind(canvas) as (type: string, options?: object) => RenderingContext | null;
  (canvas as { getContext: unknown }).getContext = (type: string, options?: object) =>
    getContext(type, { willReadFrequently: true, ...options });
  return Object.assign(canvas, {
    encodeSync(): never {
      throw new Error('encodeSync is not available in the browser; use canvas.toBlob');
    },
  });
}
