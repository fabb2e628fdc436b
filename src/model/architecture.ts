/**
 * The model as graphs. One definition serves three uses: the training graph (loss plus all
 * gradients), the vision graph (run once per image) and the language graph (run once per
 * sampling step on cached image embeddings).
 */
import { type FloatDType, Graph, type Value } from '../graph/graph.js';
import * as op from '../graph/ops.js';
import { gradients } from '../graph/autodiff.js';
import {
  cellClasses,
  cellFactorColumns,
  cellFactorMatrix,
  type ModelConfig,
  numPatches,
  patchDim,
  relativeBucket,
  sequenceLength,
  type TransformerConfig,
} from './config.js';
import { paramSpecs } from './params.js';

export type P = Map<string, Value>;

const get = (p: P, name: string): Value => {
  const v = p.get(name);
  if (!v) throw new Error(`unknown parameter ${name}`);
  return v;
};

/** Declares the parameters `filter` selects as graph inputs; `requiresGrad` says which get gradients. */
export function declareParams(
  g: Graph,
  c: ModelConfig,
  requiresGrad: boolean | ((name: string) => boolean),
  filter: (name: string) => boolean,
): P {
  const p: P = new Map();
  const grad = typeof requiresGrad === 'function' ? requiresGrad : () => requiresGrad;
  for (const s of paramSpecs(c)) if (filter(s.name)) p.set(s.name, g.input(s.name, g.floatType, s.shape, grad(s.name)));
  return p;
}

/**
 * A block's keys and values per head, [B, H, N, dh] each. A K/V cache keeps them so, and a cached
 * pass transposes nothing but its own window.
 */
export interface CachedKeys {
  k: Value;
  v: Value;
}

/**
 * A K/V cache over the whole sequence, [B, H, T, dh] each, and where the block's own positions sit
 * in it: `at` [B, H, N, 3] holds the (row, head, sequence position) of each of the block's N
 * positions (windowIndices). The block's fresh keys and values overwrite the cached ones there,
 * so keys stay in sequence order.
 */
export interface KeyCache extends CachedKeys {
  at: Value;
}

/**
 * The relative position bias's bucket of each (query, key) pair of the whole sequence [T, T];
 * with `queries` [B, N], a block's queries sit at those sequence positions (a cached window).
 */
export interface RelativePositions {
  buckets: Value;
  queries?: Value;
}

export interface BlockOptions {
  /** A K/V cache the block's own keys and values are written into; the block attends to all of it. */
  cached?: KeyCache;
  /** Receives this block's own keys and values (to build a cache). */
  keep?: (kv: CachedKeys) => void;
  /** Buckets of the relative position bias (ModelConfig.relativeBias). */
  relative?: RelativePositions;
  /** Receives the attention probabilities [B, H, N, Nk] (for diagnosis). */
  attention?: (probs: Value) => void;
}

/** Pre-LN bidirectional transformer block. `bias` [B,1,1,T] masks padded keys. */
export function block(
  x: Value,
  p: P,
  prefix: string,
  t: TransformerConfig,
  bias: Value | null,
  o: BlockOptions = {},
): Value {
  const [b, n, d] = x.shape as [number, number, number];
  const h = t.heads;
  const dh = d / h;
  const a = op.layerNorm(x, get(p, `${prefix}.ln1.g`), get(p, `${prefix}.ln1.b`));
  const qkv = op.linear(a, get(p, `${prefix}.attn.qkv.w`), get(p, `${prefix}.attn.qkv.b`));
  const [q, k, v] = op.split(qkv, 2, [d, d, d]) as [Value, Value, Value];
  const qh = op.transpose(op.reshape(q, [b, n, h, dh]), [0, 2, 1, 3]);
  let kh = op.transpose(op.reshape(k, [b, n, h, dh]), [0, 2, 1, 3]);
  let vh = op.transpose(op.reshape(v, [b, n, h, dh]), [0, 2, 1, 3]);
  o.keep?.({ k: kh, v: vh });
  if (o.cached) {
    // Inference only: a row's positions are distinct, so plain ScatterND (no reduction) is exact.
    kh = x.graph.emitRaw('ScatterND', [o.cached.k, o.cached.at, kh], null, kh.dtype, o.cached.k.shape);
    vh = x.graph.emitRaw('ScatterND', [o.cached.v, o.cached.at, vh], null, vh.dtype, o.cached.v.shape);
  }
  let scores = op.mul(op.matmul(qh, op.transposeLast2(kh)), 1 / Math.sqrt(dh));
  if (bias) scores = op.add(scores, bias);
  if (o.relative) scores = op.add(scores, relativeBias(get(p, `${prefix}.attn.rel`), o.relative));
  const probs = op.softmax(scores);
  o.attention?.(probs);
  const attn = op.matmul(probs, vh);
  const merged = op.reshape(op.transpose(attn, [0, 2, 1, 3]), [b, n, d]);
  const x1 = op.add(x, op.linear(merged, get(p, `${prefix}.attn.out.w`), get(p, `${prefix}.attn.out.b`)));
  const m = op.layerNorm(x1, get(p, `${prefix}.ln2.g`), get(p, `${prefix}.ln2.b`));
  const ff = op.gelu(op.linear(m, get(p, `${prefix}.mlp.fc.w`), get(p, `${prefix}.mlp.fc.b`)));
  return op.add(x1, op.linear(ff, get(p, `${prefix}.mlp.proj.w`), get(p, `${prefix}.mlp.proj.b`)));
}

/** ScatterND indices [B, H, N, 3]: (row, head, position) for window positions [B, N] (KeyCache.at). */
function windowIndices(positions: Value, heads: number): Value {
  const [b, n] = positions.shape as [number, number];
  const g = positions.graph;
  const rowHead = g.constant(
    Array.from({ length: b * heads * n * 2 }, (_, i) =>
      i % 2 === 0 ? Math.floor(i / (2 * heads * n)) : Math.floor(i / (2 * n)) % heads,
    ),
    [b, heads, n, 2],
    'int64',
  );
  const at = op.expand(op.reshape(positions, [b, 1, n, 1]), [b, heads, n, 1]);
  return op.concat([rowHead, at], 3);
}

/**
 * A layer's learned bias [buckets, H] for every (query, key) pair: [1, H, T, T], or [B, H, N, T] for queries at given
 * positions.
 */
function relativeBias(table: Value, r: RelativePositions): Value {
  const [t, tk] = r.buckets.shape as [number, number];
  const h = table.shape[1]!;
  const perHead = op.transpose(op.gather(table, r.buckets), [2, 0, 1]);
  if (!r.queries) return op.reshape(perHead, [1, h, t, tk]);
  // The queries' rows of every head's [T, T] bias (whole rows are copied, not single values).
  const [b, n] = r.queries.shape as [number, number];
  const rows = table.graph.emitRaw('Gather', [perHead, r.queries], null, table.dtype, [h, b, n, tk], { axis: 1 });
  return op.transpose(rows, [1, 0, 2, 3]);
}

/** Bucket ids [T, T] of every (query, key) pair of the whole sequence. */
function sequenceBuckets(c: ModelConfig, g: Graph): Value {
  const t = sequenceLength(c);
  const ids = Array.from({ length: t * t }, (_, i) => relativeBucket(c, Math.floor(i / t), i % t));
  return g.constant(ids, [t, t], 'int64');
}

/** patches [B, Np, patchDim] -> vision features [B, Np, Dv] (the tower's output, before the projector). */
function visionTower(c: ModelConfig, p: P, patches: Value): Value {
  let x = op.add(op.linear(patches, get(p, 'vision.patch.w'), get(p, 'vision.patch.b')), get(p, 'vision.pos'));
  for (let i = 0; i < c.vision.layers; i++) x = block(x, p, `vision.block${i}`, c.vision, null);
  return op.layerNorm(x, get(p, 'vision.ln.g'), get(p, 'vision.ln.b'));
}

/** patches [B, Np, patchDim] -> image embeddings in the language model's width [B, Np, D]. */
function visionAndProjector(c: ModelConfig, p: P, patches: Value): Value {
  const x = visionTower(c, p, patches);
  const h = op.gelu(op.linear(x, get(p, 'projector.fc1.w'), get(p, 'projector.fc1.b')));
  let e = op.linear(h, get(p, 'projector.fc2.w'), get(p, 'projector.fc2.b'));
  if (c.imageNorm) {
    const n = numPatches(c);
    const centre = Array.from({ length: n * n }, (_, i) => (i % (n + 1) === 0 ? 1 : 0) - 1 / n);
    const centred = op.matmul(e.graph.constant(centre, [n, n]), e);
    e = op.layerNorm(
      centred,
      get(p, 'projector.norm.g'),
      e.graph.constant(new Array<number>(c.lm.width).fill(0), [c.lm.width]),
    );
  }
  if (c.imagePlace) e = op.add(e, get(p, 'projector.place'));
  if (c.imageCells) e = op.add(e, cellReading(c, p, x));
  return e;
}

/** The probe head's reading of each cell as factor probabilities, embedded: [B, Np, D] (ModelConfig.imageCells). */
function cellReading(c: ModelConfig, p: P, feats: Value): Value {
  const classes = op.softmax(op.linear(feats, get(p, 'probe.cells.w'), get(p, 'probe.cells.b')));
  const matrix = feats.graph.constant(cellFactorMatrix(c), [cellClasses(c), cellFactorColumns(c)]);
  const factors = op.matmul(classes, matrix);
  return op.linear(factors, get(p, 'projector.cells'));
}

/** Parameters the image path (tower and projector) reads. */
export function imagePathParams(c: ModelConfig): (name: string) => boolean {
  return (n) => n.startsWith('vision.') || n.startsWith('projector.') || (!!c.imageCells && n.startsWith('probe.'));
}

/** Parameters the language model reads. */
export const languageParams = (name: string): boolean => name.startsWith('lm.');

/** Parameters the per-cell probe (the tower and its probe head) reads. */
export const probePathParams = (name: string): boolean => name.startsWith('vision.') || name.startsWith('probe.');

/** Final LayerNorm and head: hidden states [B, N, D] -> logits [B, N, V]. */
function head(c: ModelConfig, p: P, x: Value): Value {
  const h = op.layerNorm(x, get(p, 'lm.ln.g'), get(p, 'lm.ln.b'));
  const logits = op.linear(h, get(p, 'lm.head.w'), get(p, 'lm.head.b'));
  return op.reshape(logits, [x.shape[0]!, x.shape[1]!, c.vocabSize]);
}

/** What a caller may take out of each language-model layer. */
interface LayerTaps {
  /** Each layer's keys and values over the whole sequence (a K/V cache). */
  keep?: (layer: number, kv: CachedKeys) => void;
  /** Each layer's attention probabilities (diagnosis). */
  attention?: (layer: number, probs: Value) => void;
}

/** [image embeddings; prompt + response tokens] -> logits at response positions [B, L, V]. */
function languageModel(c: ModelConfig, p: P, image: Value, tokens: Value, bias: Value, taps: LayerTaps = {}): Value {
  const tok = op.gather(get(p, 'lm.tok'), tokens);
  let x = op.add(op.concat([image, tok], 1), get(p, 'lm.pos'));
  const relative = c.relativeBias ? { buckets: sequenceBuckets(c, bias.graph) } : undefined;
  const { keep, attention } = taps;
  for (let i = 0; i < c.lm.layers; i++) {
    x = block(x, p, `lm.block${i}`, c.lm, bias, {
      relative,
      keep: keep && ((kv) => keep(i, kv)),
      attention: attention && ((a) => attention(i, a)),
    });
  }
  const start = numPatches(c) + c.promptLength;
  return head(c, p, op.slice(x, 1, start, start + c.responseLength));
}

function declareSequenceInputs(g: Graph, c: ModelConfig, batch: number): { tokens: Value; bias: Value } {
  const tokens = g.input('tokens', 'int64', [batch, c.promptLength + c.responseLength]);
  const bias = g.input('attn_bias', g.floatType, [batch, 1, 1, sequenceLength(c)]);
  return { tokens, bias };
}

/**
 * What a training graph computes:
 *  - `caption`: the captioning loss sum_i w_i CE_i over response positions. With `withImage`
 *    false the language model is trained on text alone (our stand-in for LLaDA's pretraining):
 *    the image slots hold zeros and `attn_bias` hides them.
 *  - `cells`: the vision tower's per-cell probe loss sum_j w_j CE_j (the `vision` stage).
 * Gradients are taken for the `trainable` parameters only; the rest are plain inputs.
 */
export interface TrainingGraphOptions {
  loss: 'caption' | 'cells';
  withImage: boolean;
  trainable: (name: string) => boolean;
}

export const FULL_TRAINING: TrainingGraphOptions = { loss: 'caption', withImage: true, trainable: () => true };

/** Parameters the graph of `o` reads (the others are left out of it). */
export function graphParams(c: ModelConfig, o: TrainingGraphOptions): (name: string) => boolean {
  if (o.loss === 'cells') return probePathParams;
  if (!o.withImage) return languageParams;
  const image = imagePathParams(c);
  return (n) => languageParams(n) || image(n);
}

/**
 * Declares the training inputs on `g` and returns the loss with the parameters it reads.
 * caption: patches (when withImage), tokens, attn_bias, targets [B*L], weights [B*L].
 * cells: patches, cell_targets [B*Np], cell_weights [B*Np].
 */
export function trainingLoss(
  g: Graph,
  c: ModelConfig,
  batch: number,
  o: TrainingGraphOptions = FULL_TRAINING,
): { loss: Value; params: Map<string, Value> } {
  const dtype = g.floatType;
  const np = numPatches(c);
  const read = graphParams(c, o);
  const p = declareParams(g, c, o.trainable, read);
  if (o.loss === 'cells') {
    const patches = g.input('patches', dtype, [batch, np, patchDim(c)]);
    const targets = g.input('cell_targets', 'int64', [batch * np]);
    const weights = g.input('cell_weights', dtype, [batch * np]);
    const feats = visionTower(c, p, patches);
    const logits = op.linear(feats, get(p, 'probe.cells.w'), get(p, 'probe.cells.b'));
    const n = logits.shape[2]!;
    return { loss: op.weightedCrossEntropy(op.reshape(logits, [batch * np, n]), targets, weights), params: p };
  }
  const image = o.withImage
    ? visionAndProjector(c, p, g.input('patches', dtype, [batch, np, patchDim(c)]))
    : op.zeros(g, [batch, np, c.lm.width]);
  const { tokens, bias } = declareSequenceInputs(g, c, batch);
  const targets = g.input('targets', 'int64', [batch * c.responseLength]);
  const weights = g.input('weights', dtype, [batch * c.responseLength]);
  const logits = languageModel(c, p, image, tokens, bias);
  const loss = op.weightedCrossEntropy(op.reshape(logits, [batch * c.responseLength, c.vocabSize]), targets, weights);
  return { loss, params: p };
}

/** Training graph: outputs `loss` and `grad_<param>` for each trainable parameter it reads, in paramSpecs order. */
export function buildTrainingGraph(
  c: ModelConfig,
  batch: number,
  dtype: FloatDType = 'float32',
  o: TrainingGraphOptions = FULL_TRAINING,
): Graph {
  const g = new Graph(dtype);
  const { loss, params } = trainingLoss(g, c, batch, o);
  const names = [...params.keys()].filter((n) => o.trainable(n));
  const grads = gradients(
    loss,
    names.map((n) => params.get(n)!),
  );
  g.output(loss, 'loss');
  grads.forEach((gv, i) => g.output(gv, `grad_${names[i]}`));
  return g;
}

/** Vision graph: patches -> image_embeds [B, Np, D]. */
export function buildVisionGraph(c: ModelConfig, batch: number): Graph {
  const g = new Graph('float32');
  const patches = g.input('patches', 'float32', [batch, numPatches(c), patchDim(c)]);
  const p = declareParams(g, c, false, imagePathParams(c));
  g.output(visionAndProjector(c, p, patches), 'image_embeds');
  return g;
}

/** Probe graph: patches -> per-cell class logits [B, Np, cellClasses] (is the tower still seeing?). */
export function buildProbeGraph(c: ModelConfig, batch: number): Graph {
  const g = new Graph('float32');
  const patches = g.input('patches', 'float32', [batch, numPatches(c), patchDim(c)]);
  const p = declareParams(g, c, false, probePathParams);
  g.output(op.linear(visionTower(c, p, patches), get(p, 'probe.cells.w'), get(p, 'probe.cells.b')), 'cell_logits');
  return g;
}

/**
 * Language graph: image_embeds, tokens, attn_bias -> logits [B, L, V]. With `withCache`, also
 * every layer's keys and values over the whole sequence, `cache_k<i>` and `cache_v<i>`
 * [B, H, T, dh] (per head, as attention reads them)
 * (the K/V cache a block-decoding sampler refreshes at each block boundary); with
 * `withAttention`, every layer's attention probabilities `attention<i>` [B, H, T, T].
 */
export function buildLanguageGraph(
  c: ModelConfig,
  batch: number,
  o: { withCache?: boolean; withAttention?: boolean } = {},
): Graph {
  const g = new Graph('float32');
  const image = g.input('image_embeds', 'float32', [batch, numPatches(c), c.lm.width]);
  const { tokens, bias } = declareSequenceInputs(g, c, batch);
  const p = declareParams(g, c, false, languageParams);
  const kept: CachedKeys[] = [];
  const taps: LayerTaps = {};
  if (o.withCache) taps.keep = (i, kv) => (kept[i] = kv);
  if (o.withAttention) taps.attention = (i, probs) => g.output(probs, `attention${i}`);
  const logits = languageModel(c, p, image, tokens, bias, taps);
  g.output(logits, 'logits');
  kept.forEach((kv, i) => {
    g.output(kv.k, `cache_k${i}`);
    g.output(kv.v, `cache_v${i}`);
  });
  return g;
}

/**
 * Cached language graph (Fast-dLLM's block cache): recomputes only a window of `windowLength`
 * response positions and takes every other position's keys and values from a cache.
 * Inputs: tokens and positions [B, W] (the window's token ids and sequence positions, which may
 * differ by row); `cache_k<i>`, `cache_v<i>` per layer: the full graph's `withCache`
 * outputs as they are (each layer writes the window's fresh keys and values over the cached ones
 * at its positions); attn_bias [B,1,1,T] as for the full graph. One graph thus serves every window
 * start. Output: logits of the window's first `outLength` positions [B, outLength, V] (the current
 * block; a prefix-cache window recomputes the later blocks only as keys).
 */
export function buildCachedLanguageGraph(
  c: ModelConfig,
  batch: number,
  windowLength: number,
  outLength: number,
): Graph {
  if (!(outLength >= 1 && outLength <= windowLength && windowLength <= c.responseLength)) {
    throw new Error(
      `cached window ${windowLength} / output ${outLength} do not fit the response length ${c.responseLength}`,
    );
  }
  const g = new Graph('float32');
  const t = sequenceLength(c);
  const d = c.lm.width;
  const tokens = g.input('tokens', 'int64', [batch, windowLength]);
  const positions = g.input('positions', 'int64', [batch, windowLength]);
  const bias = g.input('attn_bias', 'float32', [batch, 1, 1, t]);
  const h = c.lm.heads;
  const at = windowIndices(positions, h);
  const cache = Array.from({ length: c.lm.layers }, (_, i) => ({
    k: g.input(`cache_k${i}`, 'float32', [batch, h, t, d / h]),
    v: g.input(`cache_v${i}`, 'float32', [batch, h, t, d / h]),
    at,
  }));
  const relative = c.relativeBias ? { buckets: sequenceBuckets(c, g), queries: positions } : undefined;
  const p = declareParams(g, c, false, languageParams);
  let x = op.add(op.gather(get(p, 'lm.tok'), tokens), op.gather(get(p, 'lm.pos'), positions));
  for (let i = 0; i < c.lm.layers; i++) x = block(x, p, `lm.block${i}`, c.lm, bias, { cached: cache[i]!, relative });
  g.output(head(c, p, op.slice(x, 1, 0, outLength)), 'logits');
  return g;
}
