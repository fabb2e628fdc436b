/**
 * Benchmark splits on disk:
 *   DIR/images/<id>.png   one rendered scene each
 *   DIR/data.jsonl        {id, image: "images/<id>.png", scene, captions: [...], hallucinations: [...]}
 *   DIR/split.json        how the split was made (split, seed, n, sizes, vocabulary size)
 * data.jsonl is written last and atomically, so a directory with one is a complete split.
 *
 * Scene k of a split is src/benchmark/dataset.ts's sceneRecord, whose seeds keep the standard
 * splits disjoint. makeSplit also reads sibling split directories and refuses to finish if an id
 * collides (which can only happen for two custom split names in the same seed block).
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { BENCHMARK_VOCABULARY, benchmarkTokenizer } from '../benchmark/captioner.js';
import {
  BLOCK_SIZE,
  type BenchmarkRecord,
  type RecordOptions,
  makeRecord,
  sceneProblem,
} from '../benchmark/dataset.js';
import { HALLUCINATION_TYPES, type HallucinationRecord, type HallucinationType } from '../benchmark/hallucination.js';
import type { Scene } from '../benchmark/scene.js';
import type { WordTokenizer } from '../tokenizer/word.js';
import { writeFileAtomic } from '../util/atomic.js';
import { UserError } from '../util/errors.js';
import { checkVicritPair, vocabularyProblem } from './datasets.js';
import { type DataIssue, IssueLog, JsonlWriter, type OnError, readJsonlLines } from './jsonl.js';

export interface SplitInfo {
  format: 'rediff-benchmark';
  version: 1;
  split: string;
  seed: number;
  n: number;
  imageSize: number;
  captionsPerScene: number;
  hallucinationsPerScene: number;
  minObjects: number;
  maxObjects: number;
  vocabularySize: number;
  /** The caption vocabulary (without special tokens), for a tokenizer built from the split. */
  vocabulary: string[];
}

export interface MakeSplitOptions extends RecordOptions {
  split: string;
  n: number;
  seed: number;
  out: string;
  /** Replace an existing split in `out` (its images directory is emptied). Default false. */
  overwrite?: boolean;
  /** Check scene ids against sibling split directories of `out`. Default true. */
  checkSiblings?: boolean;
  onProgress?: (done: number, total: number) => void;
}

export interface MakeSplitResult {
  dir: string;
  info: SplitInfo;
  scenes: number;
  captions: number;
  hallucinations: number;
  hallucinationTypes: Record<HallucinationType, number>;
  /** Wall time, ms. */
  ms: number;
}

function checkInt(name: string, v: unknown, lo: number, hi: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi)
    throw new UserError(`${name} must be an integer in [${lo}, ${hi}], got ${String(v)}`);
  return v;
}

/** Writes a split (images, data.jsonl, split.json) to `out`; see the module comment. */
export async function makeSplit(opts: MakeSplitOptions): Promise<MakeSplitResult> {
  const t0 = performance.now();
  if (typeof opts.split !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(opts.split))
    throw new UserError(`split name must be letters, digits, "_" or "-", got ${JSON.stringify(opts.split)}`);
  const n = checkInt('n', opts.n, 1, BLOCK_SIZE);
  const seed = checkInt('seed', opts.seed, 0, 0xffffffff);
  const imageSize = checkInt('image size', opts.imageSize ?? 64, 8, 1024);
  const captionsPerScene = checkInt('captions per scene', opts.captionsPerScene ?? 3, 1, 20);
  const hallucinationsPerScene = checkInt('hallucinations per scene', opts.hallucinationsPerScene ?? 2, 0, 20);
  const minObjects = checkInt('min objects', opts.minObjects ?? 1, 1, 9);
  const maxObjects = checkInt('max objects', opts.maxObjects ?? 6, minObjects, 9);
  const dir = path.resolve(opts.out);
  const dataFile = path.join(dir, 'data.jsonl');
  const imagesDir = path.join(dir, 'images');
  if (fs.existsSync(dataFile) && !opts.overwrite)
    throw new UserError(`${dir} already holds a split (data.jsonl); choose another directory or overwrite it`);
  await fsp.mkdir(dir, { recursive: true }).catch((e: NodeJS.ErrnoException) => {
    throw new UserError(`cannot create ${dir} (${e.code ?? e.message})`);
  });
  if (opts.overwrite) await fsp.rm(imagesDir, { recursive: true, force: true });
  await fsp.mkdir(imagesDir, { recursive: true });

  const info: SplitInfo = {
    format: 'rediff-benchmark',
    version: 1,
    split: opts.split,
    seed,
    n,
    imageSize,
    captionsPerScene,
    hallucinationsPerScene,
    minObjects,
    maxObjects,
    vocabularySize: BENCHMARK_VOCABULARY.length,
    vocabulary: [...BENCHMARK_VOCABULARY],
  };
  const hallucinationTypes = Object.fromEntries(HALLUCINATION_TYPES.map((t) => [t, 0])) as Record<
    HallucinationType,
    number
  >;
  const ids = new Set<string>();
  let captions = 0;
  let hallucinations = 0;
  const writer = new JsonlWriter(dataFile);
  try {
    for (let i = 0; i < n; i++) {
      const { record, png } = makeRecord(opts.split, seed, i, {
        imageSize,
        captionsPerScene,
        hallucinationsPerScene,
        minObjects,
        maxObjects,
      });
      ids.add(record.id);
      fs.writeFileSync(path.join(dir, record.image), png);
      await writer.write(record);
      captions += record.captions.length;
      hallucinations += record.hallucinations.length;
      for (const h of record.hallucinations) hallucinationTypes[h.type]++;
      if (opts.onProgress && ((i + 1) % 100 === 0 || i + 1 === n)) opts.onProgress(i + 1, n);
    }
    if (opts.checkSiblings !== false) await checkAgainstSiblings(dir, opts.split, ids);
    await writer.close();
  } catch (err) {
    await writer.abort();
    throw err;
  }
  await writeFileAtomic(path.join(dir, 'split.json'), JSON.stringify(info, null, 2) + '\n');
  return { dir, info, scenes: n, captions, hallucinations, hallucinationTypes, ms: performance.now() - t0 };
}

/** Scene ids of a split directory's data.jsonl (lines that do not parse are ignored here). */
async function splitIds(dir: string): Promise<Set<string>> {
  const ids = new Set<string>();
  for await (const { value } of readJsonlLines(path.join(dir, 'data.jsonl'), new IssueLog('skip'))) {
    const id = (value as { id?: unknown }).id;
    if (typeof id === 'string') ids.add(id);
  }
  return ids;
}

async function checkAgainstSiblings(dir: string, split: string, ids: Set<string>): Promise<void> {
  const parent = path.dirname(dir);
  let entries: string[] = [];
  try {
    entries = await fsp.readdir(parent);
  } catch {
    return;
  }
  for (const name of entries) {
    const other = path.join(parent, name);
    if (
      other === dir ||
      !fs.existsSync(path.join(other, 'data.jsonl')) ||
      !fs.existsSync(path.join(other, 'split.json'))
    )
      continue;
    const otherIds = await splitIds(other);
    const shared = [...ids].filter((id) => otherIds.has(id));
    if (shared.length > 0) {
      throw new UserError(
        `split "${split}" shares ${shared.length} scene(s) with ${other} (e.g. ${shared[0]}); use another split name ` +
          `or seed`,
      );
    }
  }
}

/** Throws a UserError if any two of the split directories share a scene id. */
export async function checkSplitsDisjoint(dirs: readonly string[]): Promise<void> {
  const seen = new Map<string, string>();
  for (const dir of dirs) {
    for (const id of await splitIds(dir)) {
      const prev = seen.get(id);
      if (prev !== undefined && prev !== dir) throw new UserError(`scene ${id} is in both ${prev} and ${dir}`);
      seen.set(id, dir);
    }
  }
}

// ---- reading a split back ----

export interface ReadSplitOptions {
  /** Default 'fail'. */
  onError?: OnError;
  /** Check that each image exists; default true. */
  checkImages?: boolean;
  /** Default the benchmark tokenizer; null skips the vocabulary check. */
  vocabulary?: WordTokenizer | null;
  /** Longest data.jsonl line, in bytes (jsonl.ts). */
  maxLineBytes?: number;
}

export interface LoadedRecord extends BenchmarkRecord {
  /** Absolute image path. */
  imagePath: string;
  line: number;
}

const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const inList = <T extends string>(list: readonly T[], v: unknown): v is T =>
  typeof v === 'string' && (list as readonly string[]).includes(v);

/** Reads a split written by makeSplit, validating every line (see jsonl.ts for onError). */
export async function readSplit(
  dir: string,
  opts: ReadSplitOptions = {},
): Promise<{ info: SplitInfo | null; records: LoadedRecord[]; issues: DataIssue[] }> {
  const root = path.resolve(dir);
  const file = path.join(root, 'data.jsonl');
  if (!fs.existsSync(file))
    throw new UserError(`${root}: no data.jsonl (not a benchmark split; make one with "rediff data make")`);
  const log = new IssueLog(opts.onError ?? 'fail');
  const vocab = opts.vocabulary === null ? null : (opts.vocabulary ?? benchmarkTokenizer());
  let info: SplitInfo | null = null;
  try {
    info = JSON.parse(fs.readFileSync(path.join(root, 'split.json'), 'utf8')) as SplitInfo;
  } catch {
    info = null;
  }
  const records: LoadedRecord[] = [];
  for await (const { line, value } of readJsonlLines(
    file,
    log,
    opts.maxLineBytes !== undefined ? { maxLineBytes: opts.maxLineBytes } : {},
  )) {
    const v = value as Record<string, unknown>;
    const fail = (m: string): void => log.report(file, line, m);
    if (
      typeof v.id !== 'string' ||
      typeof v.image !== 'string' ||
      !Array.isArray(v.captions) ||
      !v.captions.every((c) => typeof c === 'string') ||
      !Array.isArray(v.hallucinations)
    ) {
      fail('needs id, image, scene, captions (strings) and hallucinations');
      continue;
    }
    const sp = sceneProblem(v.scene);
    if (sp) {
      fail(sp);
      continue;
    }
    const imagePath = path.resolve(root, v.image);
    if (opts.checkImages !== false && !fs.existsSync(imagePath)) {
      fail(`image not found: ${imagePath}`);
      continue;
    }
    const captions = v.captions as string[];
    const problem = captions.map((c, k) => vocabularyProblem(vocab, c, `caption ${k + 1}`)).find((p) => p !== null);
    if (problem) {
      fail(problem);
      continue;
    }
    let bad: string | null = null;
    const hallucinations: HallucinationRecord[] = [];
    for (const [k, h] of (v.hallucinations as unknown[]).entries()) {
      if (!isObj(h) || !inList(HALLUCINATION_TYPES, h.type)) {
        bad = `hallucination ${k + 1} is not a record with a known type`;
        break;
      }
      const r = checkVicritPair(h);
      if ('error' in r) {
        bad = `hallucination ${k + 1}: ${r.error}`;
        break;
      }
      const vp = vocabularyProblem(vocab, r.pair.changed_caption, `hallucination ${k + 1}`);
      if (vp) {
        bad = vp;
        break;
      }
      hallucinations.push({ ...r.pair, type: h.type as HallucinationType });
    }
    if (bad) {
      fail(bad);
      continue;
    }
    records.push({ id: v.id, image: v.image, imagePath, scene: v.scene as Scene, captions, hallucinations, line });
  }
  return { info, records, issues: log.issues };
}
