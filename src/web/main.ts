/**
 * The page: pick an image (a generated benchmark scene or an upload), caption it with the
 * baseline and ReDiff side by side at 1/2/4/8 tokens per step, and watch both captions build
 * up. Two ways to run the models: on the server (POST /v1/captions, streamed as SSE) or in
 * this browser with onnxruntime-web on the exported ONNX graphs, running the same sampler code
 * (src/sampling/sampler.ts) as the server. Scene generation, rendering and scoring run in the
 * page (the benchmark code, bundled).
 */
import { fillRgba, renderScene } from '../benchmark/render.js';
import { type Scene, generateScene, objectKey } from '../benchmark/scene.js';
import type { ExportManifest, PixelNormalisation } from '../model/export.js';
import { sample, samplerOptions } from '../sampling/sampler.js';
import { WordTokenizer } from '../tokenizer/word.js';
import { Rng } from '../util/rng.js';
import { type OrtLike, OrtDenoisingModel, type OrtSessionLike } from './ort-model.js';
import { type Frame, Panel, type Pieces } from './panel.js';
import { normalisePixels, patchify } from './pixels.js';
import { readSse } from './sse.js';

interface ModelEntry {
  name: string;
  stage: string | null;
  default_sampler: string;
  image_size: number;
  response_length: number;
  onnx: { manifest: string; vision: string; language: string };
}

interface ModelsResponse {
  models: ModelEntry[];
}

type Mode = 'server' | 'browser';

const $ = <T extends HTMLElement>(id: string): T => {
  const e = document.getElementById(id);
  if (!e) throw new Error(`page is missing #${id}`);
  return e as T;
};

const statusEl = $('status');
const view = $<HTMLCanvasElement>('view');
const imageLabel = $('image-label');
const seedInput = $<HTMLInputElement>('scene-seed');
const runButton = $<HTMLButtonElement>('run');
const scrubber = $<HTMLInputElement>('scrubber');
const scrubLabel = $('scrub-label');
const playButton = $<HTMLButtonElement>('play');
const panelsEl = $('panels');

const TITLES: Record<string, [string, string]> = {
  baseline: ['Baseline', 'mask-prediction training · LLaDA sampler'],
  rediff: ['ReDiff', 'revision training · refining sampler'],
};

let models: ModelEntry[] = [];
const panels = new Map<string, Panel>();
const piecesByModel = new Map<string, Pieces>();
const idPieces: Pieces = (ids) => ids.map((i) => `#${i}`);

type Picture = { kind: 'scene'; scene: Scene } | { kind: 'upload'; file: File; bitmap: ImageBitmap };
/** The current image: a generated scene (scorable) or an uploaded file. */
let current: Picture | null = null;
let follow = true;
let runId = 0;
/** The last run whose models have all finished, and the last run announced as done in the header. */
let completedRun = 0;
let announcedRun = 0;
let abort: AbortController | null = null;
/** The header's text between runs (the loaded models). */
let idleStatus = '';

function setStatus(text: string, error = false): void {
  statusEl.textContent = text;
  statusEl.classList.toggle('error', error);
}

function selected(name: string): string {
  return (document.querySelector<HTMLInputElement>(`input[name="${name}"]:checked`)?.value ?? '').trim();
}

// ---------- images ----------

/** Draws RGB bytes (HWC) onto a canvas, opaque. */
function putRgb(ctx: CanvasRenderingContext2D, rgb: Uint8Array, width: number, height: number): void {
  const data = ctx.createImageData(width, height);
  fillRgba(rgb, data.data);
  ctx.putImageData(data, 0, 0);
}

function drawScene(scene: Scene): void {
  const img = renderScene(scene, view.width);
  const ctx = view.getContext('2d')!;
  putRgb(ctx, img.rgb, img.width, img.height);
}

function newScene(seed?: number): void {
  const s = seed ?? Math.floor(Math.random() * 2 ** 32);
  seedInput.value = String(s);
  const scene = generateScene(new Rng(s), { seed: s });
  current = { kind: 'scene', scene };
  drawScene(scene);
  imageLabel.textContent =
    `benchmark scene ${scene.id} · ${scene.objects.length} ` + `object${scene.objects.length === 1 ? '' : 's'}`;
  const list = $('scene-objects');
  list.replaceChildren(
    ...scene.objects.map((o) => {
      const li = document.createElement('li');
      li.textContent = `${objectKey(o)}, ${o.place}`;
      return li;
    }),
  );
  $('scene-box').hidden = false;
  imageChosen();
}

/** A usable image is loaded: captioning is possible again and an old error is cleared. */
function imageChosen(): void {
  runButton.disabled = models.length === 0;
  if (statusEl.classList.contains('error') && document.body.dataset.run !== 'running') setStatus(idleStatus);
}

/**
 * A chosen file is not an image: nothing stays loaded (the old image would otherwise be
 * captioned in its place), captioning is off and the error stays until a good image is chosen.
 */
function clearImage(message: string): void {
  current = null;
  const ctx = view.getContext('2d')!;
  ctx.fillStyle = '#000';
  ctx.fillRect(0, 0, view.width, view.height);
  imageLabel.textContent = 'no image: upload a PNG, JPEG or WebP file, or generate a scene';
  $('scene-box').hidden = true;
  runButton.disabled = true;
  setStatus(message, true);
}

async function useUpload(file: File): Promise<void> {
  let bitmap: ImageBitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    clearImage(`cannot read ${file.name} as an image`);
    return;
  }
  current = { kind: 'upload', file, bitmap };
  const ctx = view.getContext('2d')!;
  ctx.fillStyle = '#000';
  ctx.fillRect(0, 0, view.width, view.height);
  ctx.drawImage(bitmap, 0, 0, view.width, view.height);
  imageLabel.textContent =
    `${file.name} (${bitmap.width}×${bitmap.height}, stretched to a square as the model sees ` + `it)`;
  $('scene-box').hidden = true;
  imageChosen();
}

/** The image at the model's size, normalised HWC (in-browser mode). */
function modelPixels(image: Picture, size: number, norm: PixelNormalisation): Float32Array {
  if (image.kind === 'scene') {
    const img = renderScene(image.scene, size);
    return normalisePixels(img.rgb, size, size, 3, norm);
  }
  const c = document.createElement('canvas');
  c.width = size;
  c.height = size;
  const ctx = c.getContext('2d', { willReadFrequently: true })!;
  ctx.fillStyle = '#000';
  ctx.fillRect(0, 0, size, size);
  ctx.drawImage(image.bitmap, 0, 0, size, size);
  return normalisePixels(ctx.getImageData(0, 0, size, size).data, size, size, 4, norm);
}

/** The image as a file to upload (server mode): a scene as a PNG at the model's size. */
async function uploadBlob(image: Picture, size: number): Promise<{ blob: Blob; name: string }> {
  if (image.kind === 'upload') return { blob: image.file, name: image.file.name };
  const img = renderScene(image.scene, size);
  const c = document.createElement('canvas');
  c.width = size;
  c.height = size;
  const ctx = c.getContext('2d', { willReadFrequently: true })!;
  putRgb(ctx, img.rgb, size, size);
  const blob = await new Promise<Blob | null>((resolve) => c.toBlob(resolve, 'image/png'));
  if (!blob) throw new Error('could not encode the scene as PNG');
  return { blob, name: `scene-${image.scene.id}.png` };
}

// ---------- replay ----------

function maxFrames(): number {
  return Math.max(0, ...[...panels.values()].map((p) => p.frames.length));
}

/**
 * The step total shown under the slider, the same as in the panels: while a model is still
 * running, the most steps it may take; once all are finished, the steps taken.
 */
function stepTotal(): string {
  const all = [...panels.values()];
  if (all.some((p) => p.state === 'running' || p.state === 'loading'))
    return `at most ${Math.max(0, ...all.map((p) => p.maxSteps))}`;
  return String(maxFrames());
}

function updateScrubber(): void {
  const n = maxFrames();
  scrubber.max = String(Math.max(1, n));
  scrubber.disabled = n === 0;
  playButton.disabled = n === 0;
  if (follow) scrubber.value = String(Math.max(1, ...[...panels.values()].map((p) => p.shownStep)));
  scrubLabel.textContent = n === 0 ? 'step –' : `step ${scrubber.value} / ${stepTotal()}`;
}

/**
 * Live view: steps are shown one at a time at a steady pace (a small model on the server can
 * finish all its steps faster than the eye can follow), about two seconds per caption.
 */
let ticker: ReturnType<typeof setInterval> | null = null;
let paceMs = 60;

function stopTicker(): void {
  if (ticker) clearInterval(ticker);
  ticker = null;
}

function ensureTicker(): void {
  if (ticker) return;
  ticker = setInterval(() => {
    if (!follow) return stopTicker();
    let behind = false;
    for (const p of panels.values()) {
      if (p.shownStep < p.frames.length) p.show(p.shownStep + 1);
      if (p.shownStep < p.frames.length || p.state === 'running' || p.state === 'loading') behind = true;
    }
    updateScrubber();
    if (!behind) {
      stopTicker();
      announceIfShown();
    }
  }, paceMs);
}

function showStep(n: number): void {
  for (const p of panels.values()) p.show(n);
  scrubLabel.textContent = `step ${n} / ${stepTotal()}`;
}

/**
 * The header says the run is done only once every model has finished and, in the live view,
 * both panels show their last step (the steps are replayed at a readable pace after the
 * models finish).
 */
function announceIfShown(): void {
  if (completedRun !== runId || announcedRun === runId) return;
  if (follow && [...panels.values()].some((p) => p.shownStep < p.frames.length)) return;
  announcedRun = runId;
  const failed = [...panels.values()].filter((p) => p.state === 'error').length;
  setStatus(
    failed
      ? `${failed} model${failed === 1 ? '' : 's'} failed`
      : 'done: drag the slider or press replay to watch the refinement again',
    failed > 0,
  );
  document.body.dataset.run = 'done';
}

scrubber.addEventListener('input', () => {
  follow = false;
  stopTicker();
  showStep(Number(scrubber.value));
  announceIfShown();
});

let playing: ReturnType<typeof setInterval> | null = null;
playButton.addEventListener('click', () => {
  if (playing) clearInterval(playing);
  follow = false;
  let n = 1;
  showStep(n);
  scrubber.value = '1';
  announceIfShown();
  playing = setInterval(() => {
    n++;
    if (n > maxFrames()) {
      clearInterval(playing!);
      playing = null;
      return;
    }
    scrubber.value = String(n);
    showStep(n);
  }, 180);
});

// ---------- running ----------

interface RunHooks {
  start(maxSteps: number, length: number): void;
  step(frame: Frame): void;
  done(tokens: number[], steps: number, ms: number): void;
}

async function runOnServer(
  image: Picture,
  m: ModelEntry,
  tps: number,
  signal: AbortSignal,
  hooks: RunHooks,
): Promise<void> {
  const { blob, name } = await uploadBlob(image, m.image_size);
  const form = new FormData();
  form.set('image', blob, name);
  form.set('model', m.name);
  form.set('tokens_per_step', String(tps));
  form.set('stream', 'true');
  const res = await fetch('/v1/captions', { method: 'POST', body: form, signal });
  if (!res.ok || !res.body) {
    const body = (await res.json().catch(() => null)) as { error?: string } | null;
    throw new Error(body?.error ?? `HTTP ${res.status}`);
  }
  for await (const ev of readSse(res.body)) {
    const d = JSON.parse(ev.data);
    if (ev.event === 'start') hooks.start(d.max_steps, d.length);
    else if (ev.event === 'step') {
      hooks.step({
        step: d.step,
        tokens: d.tokens,
        committed: new Set((d.committed as { pos: number }[]).map((c) => c.pos)),
        refined: new Map((d.refined as { pos: number; from: number }[]).map((r) => [r.pos, r.from])),
      });
    } else if (ev.event === 'done') hooks.done(d.tokens, d.steps, d.ms);
    else if (ev.event === 'error') throw new Error(d.error);
  }
}

// In-browser mode: onnxruntime-web, loaded on first use from the server's /ort/ files.
let ortPromise: Promise<
  OrtLike & {
    InferenceSession: { create(bytes: Uint8Array, o: object): Promise<OrtSessionLike> };
    env: { wasm: Record<string, unknown> };
  }
> | null = null;
const browserModels = new Map<string, Promise<OrtDenoisingModel>>();

function loadOrt() {
  if (!ortPromise) {
    const url = '/ort/ort.wasm.min.mjs';
    ortPromise = import(/* @vite-ignore */ url).then((ort) => {
      ort.env.wasm.wasmPaths = '/ort/';
      ort.env.wasm.numThreads = 1;
      return ort;
    });
    ortPromise.catch(() => (ortPromise = null));
  }
  return ortPromise;
}

/** Lets the page repaint between forward passes (the wasm runs on this thread). */
const yieldFrame = (): Promise<void> =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, 50);
    requestAnimationFrame(() => {
      clearTimeout(t);
      setTimeout(resolve, 0);
    });
  });

function browserModel(m: ModelEntry): Promise<OrtDenoisingModel> {
  let p = browserModels.get(m.name);
  if (!p) {
    p = (async () => {
      const ort = await loadOrt();
      const get = async (url: string): Promise<Response> => {
        const r = await fetch(url);
        if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
        return r;
      };
      const [manifest, vision, language] = await Promise.all([
        get(m.onnx.manifest).then((r) => r.json() as Promise<ExportManifest>),
        get(m.onnx.vision).then((r) => r.arrayBuffer()),
        get(m.onnx.language).then((r) => r.arrayBuffer()),
      ]);
      const opts = { executionProviders: ['wasm'], graphOptimizationLevel: 'all' };
      const vs = await ort.InferenceSession.create(new Uint8Array(vision), opts);
      const ls = await ort.InferenceSession.create(new Uint8Array(language), opts);
      return new OrtDenoisingModel(ort, vs, ls, manifest, yieldFrame);
    })();
    browserModels.set(m.name, p);
    p.catch(() => browserModels.delete(m.name));
  }
  return p;
}

async function runInBrowser(
  image: Picture,
  m: ModelEntry,
  tps: number,
  signal: AbortSignal,
  hooks: RunHooks,
): Promise<void> {
  const model = await browserModel(m);
  const man = model.manifest;
  const c = man.config;
  if (man.promptIds.length === 0) throw new Error('the model does not say which prompt it was trained with');
  const steps = c.responseLength / tps;
  const o = samplerOptions(m.default_sampler, { steps, temperature: 0, seed: 0 });
  o.onStep = (_row, st, tokens) => {
    if (signal.aborted) throw new DOMException('aborted', 'AbortError');
    hooks.step({
      step: st.step + 1,
      tokens: [...tokens],
      committed: new Set(st.committed.map((x) => x.pos)),
      refined: new Map(st.refined.map((r) => [r.pos, r.from])),
    });
  };
  const patches = patchify(modelPixels(image, c.imageSize, man.pixels), c.imageSize, c.patchSize);
  hooks.start(steps, c.responseLength);
  const t0 = performance.now();
  const [res] = await sample(model, [patches], [man.promptIds], o);
  hooks.done(res!.tokens, res!.steps, performance.now() - t0);
}

async function runAll(): Promise<void> {
  // The run keeps the image it started with, whatever is chosen while it runs.
  const image = current;
  if (!image) return;
  abort?.abort();
  const ctl = new AbortController();
  abort = ctl;
  const id = ++runId;
  const tps = Number(selected('tps')) || 4;
  const mode = (selected('mode') || 'server') as Mode;
  const scene = image.kind === 'scene' ? image.scene : null;
  follow = true;
  stopTicker();
  const length = Math.max(1, ...models.map((m) => m.response_length));
  paceMs = Math.max(15, Math.min(80, 2000 / (length / tps)));
  if (playing) {
    clearInterval(playing);
    playing = null;
  }
  for (const [name, p] of panels) p.reset(piecesByModel.get(name) ?? idPieces);
  updateScrubber();
  setStatus(
    `running both models at ${tps} token${tps === 1 ? '' : 's'} per step ` +
      `${mode === 'server' ? 'on the server' : 'in this browser'}…`,
  );
  document.body.dataset.run = 'running';
  const runOne = async (m: ModelEntry): Promise<void> => {
    const panel = panels.get(m.name)!;
    const live = (): boolean => id === runId;
    const hooks: RunHooks = {
      start: (max, length) => live() && panel.start(max, length),
      step: (frame) => {
        if (!live()) return;
        panel.step(frame);
        if (follow) ensureTicker();
      },
      done: (tokens, steps, ms) => {
        if (!live()) return;
        panel.done({ steps, ms, where: mode === 'server' ? 'server' : 'browser' });
        panel.showFinal(tokens, scene);
        if (!follow) panel.show(panel.shownStep);
      },
    };
    try {
      await (mode === 'server'
        ? runOnServer(image, m, tps, ctl.signal, hooks)
        : runInBrowser(image, m, tps, ctl.signal, hooks));
    } catch (e) {
      if (live() && !ctl.signal.aborted) panel.fail((e as Error).message);
    }
  };
  await Promise.all(models.filter((m) => panels.has(m.name)).map(runOne));
  if (id !== runId) return;
  completedRun = id;
  updateScrubber();
  if (follow && [...panels.values()].some((p) => p.shownStep < p.frames.length)) ensureTicker();
  announceIfShown();
}

// ---------- start-up ----------

async function init(): Promise<void> {
  document.querySelector<HTMLButtonElement>('#new-scene')!.addEventListener('click', () => newScene());
  seedInput.addEventListener('change', () => {
    const s = Number(seedInput.value);
    if (Number.isInteger(s) && s >= 0 && s < 2 ** 32) newScene(s);
  });
  $<HTMLInputElement>('upload').addEventListener('change', (e) => {
    const f = (e.target as HTMLInputElement).files?.[0];
    if (f) void useUpload(f);
  });
  runButton.addEventListener('click', () => void runAll());

  let res: ModelsResponse;
  try {
    const r = await fetch('/v1/models');
    res = (await r.json()) as ModelsResponse;
  } catch (e) {
    setStatus(`cannot reach the server: ${(e as Error).message}`, true);
    return;
  }
  const order = (n: string): number => (n === 'baseline' ? 0 : n === 'rediff' ? 1 : 2);
  models = [...res.models].sort((a, b) => order(a.name) - order(b.name));
  for (const m of models) {
    const [title, sub] = TITLES[m.name] ?? [m.name, `${m.stage ?? 'model'} · ${m.default_sampler} sampler`];
    const p = new Panel(m.name, title, sub);
    panels.set(m.name, p);
    panelsEl.append(p.root);
  }
  // Each panel decodes with its model's tokenizer (word tokenizers; others show token ids).
  await Promise.all(
    models.map(async (m) => {
      const r = await fetch(`/v1/models/${m.name}/tokenizer.json`).catch(() => null);
      const json = r && r.ok ? ((await r.json()) as { kind?: string }) : null;
      if (json?.kind === 'word') {
        const wt = WordTokenizer.fromJSON(json);
        piecesByModel.set(m.name, (ids) => wt.pieces(ids));
      }
    }),
  );
  idleStatus = models.map((m) => `${m.name}${m.stage ? ` (${m.stage})` : ''}`).join(' · ');
  setStatus(idleStatus);
  document.body.dataset.ready = '1';
  newScene();
}

void init();
