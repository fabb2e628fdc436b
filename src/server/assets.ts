/**
 * The page's static files: index.html and style.css from src/web, and app.js, the page script
 * (src/web/main.ts and what it imports: the sampler, the benchmark scene code, metrics)
 * bundled for the browser with esbuild. `npm run build` writes them to dist/public (see
 * scripts/build-web.mjs); a server running from compiled JavaScript serves that folder, one
 * running from the TypeScript sources (tests, tsx) bundles in memory at start-up.
 *
 * Two Node-only modules are replaced in the browser bundle: @napi-rs/canvas by the browser's
 * own canvas (src/web/shims/canvas.ts), so the benchmark's renderer draws scenes in the page,
 * and the Hugging Face tokenizer adapter by a stub (the page supports word tokenizers).
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** The repository root: two levels above this file in both src/ and dist/. */
export const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const WEB_SOURCE_DIR = path.join(PACKAGE_ROOT, 'src', 'web');
export const WEB_BUILD_DIR = path.join(PACKAGE_ROOT, 'dist', 'public');

export interface Asset {
  body: Buffer;
  type: string;
}

const STATIC_FILES: ReadonlyMap<string, string> = new Map([
  ['index.html', 'text/html; charset=utf-8'],
  ['style.css', 'text/css; charset=utf-8'],
]);

/** Bundles the page script with esbuild (a build-time dependency, imported only here). */
export async function buildWebAssets(opts: { minify?: boolean } = {}): Promise<Map<string, Asset>> {
  let esbuild: typeof import('esbuild');
  try {
    esbuild = await import('esbuild');
  } catch {
    throw new Error(
      'esbuild is not installed, so the page cannot be bundled: run "npm install" (it is a dev dependency) and "npm ' +
        'run build"',
    );
  }
  const shim = (name: string): string => path.join(WEB_SOURCE_DIR, 'shims', name);
  const result = await esbuild.build({
    entryPoints: [path.join(WEB_SOURCE_DIR, 'main.ts')],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    write: false,
    outfile: 'app.js',
    minify: opts.minify ?? false,
    legalComments: 'none',
    logLevel: 'silent',
    plugins: [
      {
        name: 'rediff-browser-shims',
        setup(build) {
          build.onResolve({ filter: /^@napi-rs\/canvas$/ }, () => ({ path: shim('canvas.ts') }));
          build.onResolve({ filter: /\/huggingface\.js$/ }, (a) =>
            a.importer.includes(`${path.sep}tokenizer${path.sep}`) ? { path: shim('huggingface.ts') } : undefined,
          );
        },
      },
    ],
  });
  const assets = new Map<string, Asset>();
  for (const f of result.outputFiles) {
    if (f.path.endsWith('.js'))
      assets.set('app.js', { body: Buffer.from(f.contents), type: 'text/javascript; charset=utf-8' });
  }
  for (const [name, type] of STATIC_FILES) {
    assets.set(name, { body: await fsp.readFile(path.join(WEB_SOURCE_DIR, name)), type });
  }
  return assets;
}

/** Writes the page into `dir` (default dist/public). */
export async function writeWebAssets(dir = WEB_BUILD_DIR): Promise<string[]> {
  const assets = await buildWebAssets({ minify: true });
  await fsp.mkdir(dir, { recursive: true });
  for (const [name, a] of assets) await fsp.writeFile(path.join(dir, name), a.body);
  return [...assets.keys()].map((n) => path.join(dir, n));
}

async function readBuilt(dir: string): Promise<Map<string, Asset>> {
  const assets = new Map<string, Asset>();
  for (const [name, type] of [...STATIC_FILES, ['app.js', 'text/javascript; charset=utf-8'] as const]) {
    assets.set(name, { body: await fsp.readFile(path.join(dir, name)), type });
  }
  return assets;
}

/**
 * The page's files: pre-built ones when running from dist/ and they exist, otherwise bundled
 * now. `source` forces one or the other.
 */
export async function loadWebAssets(source: 'auto' | 'build' | 'prebuilt' = 'auto'): Promise<Map<string, Asset>> {
  const fromSources = fileURLToPath(import.meta.url).endsWith('.ts');
  const prebuilt = fs.existsSync(path.join(WEB_BUILD_DIR, 'app.js'));
  if (source === 'prebuilt' || (source === 'auto' && !fromSources && prebuilt)) return readBuilt(WEB_BUILD_DIR);
  return buildWebAssets();
}

/**
 * onnxruntime-web's browser files the page loads for in-browser mode, by name. A Map, not an
 * object: the name comes from the URL, and a plain object would also "have" `constructor`,
 * `toString`, `__proto__` and the like.
 */
export const ORT_FILES: ReadonlyMap<string, string> = new Map([
  ['ort.wasm.min.mjs', 'text/javascript; charset=utf-8'],
  ['ort-wasm-simd-threaded.mjs', 'text/javascript; charset=utf-8'],
  ['ort-wasm-simd-threaded.wasm', 'application/wasm'],
]);

/** Directory holding onnxruntime-web's dist files, or null when the package is missing. */
export function ortWebDir(): string | null {
  try {
    const require = createRequire(import.meta.url);
    return path.dirname(require.resolve('onnxruntime-web'));
  } catch {
    return null;
  }
}
