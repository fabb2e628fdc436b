/**
 * Standalone ONNX export: the vision graph (patches -> image embeddings) and the language graph
 * (image embeddings, tokens, attention bias -> logits) with the trained weights baked in as
 * initializers, so any ONNX runtime (onnxruntime-web in the page's in-browser mode) can run the
 * model from the two files alone. The inputs keep the names and layouts of DiffusionVLM:
 *   vision.onnx    patches [B, Np, patchDim] float32              -> image_embeds [B, Np, D]
 *   language.onnx  image_embeds [B, Np, D] float32,
 *                  tokens [B, P + L] int64 (left-padded prompt, then the response),
 *                  attn_bias [B, 1, 1, Np + P + L] float32         -> logits [B, L, V]
 * A manifest (model.json) carries what a runtime needs around the graphs: the config, the
 * tokenizer, the prompt and its ids, and how pixel bytes become model inputs (read off
 * normaliseRgb in src/data/image.ts, so a runtime elsewhere follows it if it changes).
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { normaliseRgb } from '../data/image.js';
import type { Graph, TensorData } from '../graph/graph.js';
import { serializeGraph } from '../graph/onnx.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { writeFileAtomic } from '../util/atomic.js';
import { buildLanguageGraph, buildVisionGraph } from './architecture.js';
import { type LoadOptions, loadModelState, saveModel } from './io.js';
import { type ModelConfig, numPatches, patchDim, sequenceLength } from './config.js';
import type { Params } from './params.js';
import { paramSpecs } from './params.js';
import { recordedPath } from '../util/paths.js';

export const EXPORT_FORMAT = 'rediff-onnx-export';

export interface ExportManifest {
  format: typeof EXPORT_FORMAT;
  version: 1;
  config: ModelConfig;
  /** tokenizer.toJSON() */
  tokenizer: object;
  /** The prompt the model was trained with ('' when the checkpoint does not say) and its ids. */
  prompt: string;
  promptIds: number[];
  stage: string | null;
  /** Input value of an RGB byte b in channel c: b * scale[c] + offset[c]. */
  pixels: PixelNormalisation;
  batch: number;
  files: { vision: string; language: string };
  shapes: {
    patches: number[];
    imageEmbeds: number[];
    tokens: number[];
    attnBias: number[];
    logits: number[];
  };
}

export interface PixelNormalisation {
  scale: [number, number, number];
  offset: [number, number, number];
}

/**
 * The per-channel affine map that normaliseRgb applies to bytes, found by probing it (and
 * checked to be affine at every byte value, so a runtime can reproduce it exactly).
 */
export function pixelNormalisation(): PixelNormalisation {
  const probe = (b: number): Float32Array => normaliseRgb(new Uint8Array([b, b, b]));
  const zero = probe(0);
  const one = probe(255);
  const scale: [number, number, number] = [0, 1, 2].map((c) => (one[c]! - zero[c]!) / 255) as [number, number, number];
  const offset: [number, number, number] = [zero[0]!, zero[1]!, zero[2]!];
  for (let b = 0; b < 256; b++) {
    const v = probe(b);
    for (let c = 0; c < 3; c++) {
      if (Math.abs(v[c]! - Math.fround(b * scale[c]! + offset[c]!)) > 1e-6)
        throw new Error('normaliseRgb is not a per-channel affine map; the export cannot describe it');
    }
  }
  return { scale, offset };
}

export interface OnnxExport {
  vision: Uint8Array;
  language: Uint8Array;
  manifest: ExportManifest;
}

export interface ExportableModel {
  config: ModelConfig;
  tokenizer: Tokenizer;
  params: Params;
  meta?: { prompt?: string; stage?: string };
}

/** Bakes exactly the parameters the graph declares as inputs. */
function bakeFor(g: Graph, c: ModelConfig, params: Params): Map<string, TensorData> {
  const wanted = new Set(g.inputs.map((v) => v.name));
  const bake = new Map<string, TensorData>();
  for (const s of paramSpecs(c)) {
    if (!wanted.has(s.name)) continue;
    const data = params.get(s.name);
    if (!data) throw new Error(`export: missing parameter ${s.name}`);
    bake.set(s.name, { kind: 'tensor', dtype: 'float32', shape: [...s.shape], data });
  }
  return bake;
}

/** Serialises the two graphs of a model, weights included, for a fixed batch size (default 1). */
export function exportOnnx(m: ExportableModel, batch = 1): OnnxExport {
  if (!Number.isInteger(batch) || batch < 1)
    throw new RangeError(`export batch must be a positive integer, got ${batch}`);
  const c = m.config;
  const vg = buildVisionGraph(c, batch);
  const lg = buildLanguageGraph(c, batch);
  const vision = serializeGraph(vg, { bake: bakeFor(vg, c, m.params), name: 'rediff-vision' });
  const language = serializeGraph(lg, { bake: bakeFor(lg, c, m.params), name: 'rediff-language' });
  const prompt = m.meta?.prompt ?? '';
  const manifest: ExportManifest = {
    format: EXPORT_FORMAT,
    version: 1,
    config: c,
    tokenizer: m.tokenizer.toJSON(),
    prompt,
    promptIds: prompt ? m.tokenizer.encode(prompt) : [],
    stage: m.meta?.stage ?? null,
    pixels: pixelNormalisation(),
    batch,
    files: { vision: 'vision.onnx', language: 'language.onnx' },
    shapes: {
      patches: [batch, numPatches(c), patchDim(c)],
      imageEmbeds: [batch, numPatches(c), c.lm.width],
      tokens: [batch, c.promptLength + c.responseLength],
      attnBias: [batch, 1, 1, sequenceLength(c)],
      logits: [batch, c.responseLength, c.vocabSize],
    },
  };
  return { vision, language, manifest };
}

/** Writes vision.onnx, language.onnx and model.json into `dir` (created if needed). */
export async function writeOnnxExport(dir: string, exp: OnnxExport): Promise<void> {
  await fsp.mkdir(dir, { recursive: true });
  await writeFileAtomic(path.join(dir, exp.manifest.files.vision), exp.vision);
  await writeFileAtomic(path.join(dir, exp.manifest.files.language), exp.language);
  await writeFileAtomic(path.join(dir, 'model.json'), JSON.stringify(exp.manifest, null, 2) + '\n');
}

/**
 * A checkpoint in shipping form at `out`: weights without optimizer state or training
 * settings, plus the standalone ONNX graphs in `out/onnx`.
 */
export async function shipCheckpoint(
  from: string,
  out: string,
  extraState: Record<string, unknown> = {},
  opts: Pick<LoadOptions, 'tokenizer'> = {},
): Promise<void> {
  const m = await loadModelState(from, opts);
  const { settings: _settings, ...state } = m.state;
  await saveModel(out, {
    config: m.config,
    tokenizer: m.tokenizer,
    params: m.params,
    state: { ...state, ...extraState, exportedFrom: recordedPath(from) },
  });
  const prompt = typeof m.state.prompt === 'string' ? m.state.prompt : undefined;
  const stage = typeof m.state.stage === 'string' ? m.state.stage : undefined;
  await writeOnnxExport(
    path.join(out, 'onnx'),
    exportOnnx({ config: m.config, tokenizer: m.tokenizer, params: m.params, meta: { prompt, stage } }),
  );
}
