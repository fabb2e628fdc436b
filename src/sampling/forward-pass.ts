/**
 * One forward pass of the sampler over some rows of its batch: which graph each row needs, how
 * the rows are stacked and padded, and where each row's logits are. Without a cache that is one
 * full pass. With one (Fast-dLLM's block caches) a row at the first step of its block runs the
 * full pass that also keeps every layer's keys and values; a row later in its block runs the
 * cached graph over a window, grouped with the rows whose window has the same length.
 */
import type { CachedRow, KvCache } from '../model/model.js';
import { stackRows } from '../util/rows.js';

/** What the sampler needs from a model: two calls, so tests can drive it with a fake. */
export interface DenoisingModel {
  readonly config: { responseLength: number; vocabSize: number };
  encodeImages(patches: readonly Float32Array[]): Promise<Float32Array>;
  logits(
    imageEmbeds: Float32Array,
    rows: { prompt: readonly number[]; response: ArrayLike<number> }[],
  ): Promise<Float32Array>;
}

/** A model that can also decode with a K/V cache (DiffusionVLM). */
export interface CachingModel extends DenoisingModel {
  logitsKeepingCache(
    imageEmbeds: Float32Array,
    rows: { prompt: readonly number[]; response: ArrayLike<number> }[],
  ): Promise<{ logits: Float32Array; caches: KvCache[] }>;
  logitsFromCache(rows: readonly CachedRow[], windowLength: number, outLength: number): Promise<Float32Array>;
}

export function isCachingModel(m: DenoisingModel): m is CachingModel {
  const c = m as Partial<CachingModel>;
  return typeof c.logitsKeepingCache === 'function' && typeof c.logitsFromCache === 'function';
}

/**
 * Fast-dLLM's block caches, an approximation for a bidirectional model. At a block's first
 * step the full sequence runs once and every layer's keys and values are kept; its later steps
 * recompute only a window and read the rest from the cache:
 * - prefix: the window is the current block and everything after it (the image, the prompt and
 *   the finished blocks come from the cache);
 * - dual: the window is the current block alone (the later, still-masked blocks come from the
 *   cache too).
 */
export const CACHE_MODES = ['none', 'prefix', 'dual'] as const;
export type CacheMode = (typeof CACHE_MODES)[number];

/** A row as a forward pass sees it: its state, its image, its cache. */
export interface PassRow {
  x: readonly number[];
  prompt: readonly number[];
  /** The row's image embeddings (a view into the batch's, which a pass over the whole batch reads in place). */
  embeds: Float32Array;
  block: number;
  cache: KvCache | null;
}

export interface PassShape {
  length: number;
  vocabSize: number;
  blockLength: number;
  blocks: number;
  cache: CacheMode;
  /** Round each call's batch up to a batchBucket size (compaction's shrinking batches). */
  pad: boolean;
}

/** Logits of one row after a forward pass: position i's V logits start at base + (i - first) * V. */
export interface RowLogits {
  data: Float32Array;
  base: number;
  first: number;
}

/**
 * Batch sizes a compacted batch is rounded up to (by repeating a row) so that a shrinking batch
 * compiles a handful of graphs, not one per size; at most a third of a pass is padding.
 */
export function batchBucket(n: number): number {
  let size = 1;
  for (;;) {
    if (size >= n) return size;
    const between = size >= 2 ? Math.floor(size * 1.5) : size + 1;
    if (between >= n) return between;
    size *= 2;
  }
}

const padded = <T>(items: readonly T[], pad: boolean): T[] => {
  const out = [...items];
  if (pad) while (out.length < batchBucket(items.length)) out.push(items[items.length - 1]!);
  return out;
};

/** The window a cached pass recomputes: the current block (dual), or it and every later block (prefix). */
function windowOf(s: PassShape, r: PassRow): { from: number; length: number } {
  const from = Math.min(r.block, s.blocks - 1) * s.blockLength;
  return { from, length: s.cache === 'dual' ? s.blockLength : s.length - from };
}

/**
 * Runs `batch` through the model and returns each row's logits. `firstStepOfBlock` rows get a
 * fresh cache (stored on the row) when a cache is on.
 */
export async function forwardPass<R extends PassRow>(
  model: DenoisingModel,
  s: PassShape,
  batch: readonly R[],
  firstStepOfBlock: (r: R) => boolean,
): Promise<Map<R, RowLogits>> {
  const out = new Map<R, RowLogits>();
  const v = s.vocabSize;
  const request = (r: R) => ({ prompt: r.prompt, response: r.x });
  const stack = (rs: R[]): Float32Array => stackRows(rs.map((r) => r.embeds));
  if (s.cache === 'none') {
    const rs = padded(batch, s.pad);
    const data = await model.logits(stack(rs), rs.map(request));
    batch.forEach((r, i) => out.set(r, { data, base: i * s.length * v, first: 0 }));
    return out;
  }
  const m = model as CachingModel;
  const fresh = batch.filter(firstStepOfBlock);
  if (fresh.length > 0) {
    const rs = padded(fresh, s.pad);
    const { logits, caches } = await m.logitsKeepingCache(stack(rs), rs.map(request));
    fresh.forEach((r, i) => {
      r.cache = caches[i]!;
      out.set(r, { data: logits, base: i * s.length * v, first: 0 });
    });
  }
  // Cached passes, one per window length (the prefix window shrinks block by block).
  const groups = new Map<number, R[]>();
  for (const r of batch) {
    if (firstStepOfBlock(r)) continue;
    const w = windowOf(s, r).length;
    groups.set(w, [...(groups.get(w) ?? []), r]);
  }
  for (const [w, group] of groups) {
    const rs = padded(group, s.pad);
    const rows: CachedRow[] = rs.map((r) => ({ ...request(r), cache: r.cache!, from: windowOf(s, r).from }));
    const data = await m.logitsFromCache(rows, w, s.blockLength);
    group.forEach((r, i) => out.set(r, { data, base: i * s.blockLength * v, first: windowOf(s, r).from }));
  }
  return out;
}
