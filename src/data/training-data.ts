/**
 * Training records from the places data comes from: a benchmark split on disk, benchmark
 * scenes generated in memory (no disk round trip, for quick runs), and user data in
 * LLaVA-style and ViCrit-style JSONL.
 */
import * as path from 'node:path';
import { BENCHMARK_PROMPT, canonicalCaption } from '../benchmark/captioner.js';
import { type BenchmarkRecord, type RecordOptions, sceneRecord } from '../benchmark/dataset.js';
import type { HallucinationRecord } from '../benchmark/hallucination.js';
import { renderScene } from '../benchmark/render.js';
import type { Scene } from '../benchmark/scene.js';
import { sceneCells } from '../benchmark/cells.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { splitWords } from '../tokenizer/word.js';
import type { SpanPair, TrainingRecord } from './training-record.js';
import { UserError } from '../util/errors.js';
import { readSplit } from './benchmark-split.js';
import { denormaliseRgb, loadImage } from './image.js';
import { type LlavaRecord, type LoadOptions, loadLlavaJsonl, loadVicritJsonl } from './datasets.js';
import { type DataIssue, IssueLog, type OnError } from './jsonl.js';

/** A hallucination pair as a same-length span correction over token ids. */
export function hallucinationPair(
  h: Pick<HallucinationRecord, 'caption' | 'changed_caption' | 'token_start' | 'token_count'>,
  tokenizer: Tokenizer,
): SpanPair | null {
  const wrong = tokenizer.encode(h.changed_caption);
  const correct = tokenizer.encode(h.caption);
  // Pairs whose two sides differ in token count are dropped (as the authors' code does).
  if (wrong.length !== correct.length || h.token_count < 1) return null;
  const wordAligned = tokenizer.pieces(correct).join(' ') === splitWords(h.caption).join(' ');
  const span = wordAligned ? { start: h.token_start, length: h.token_count } : differingSpan(wrong, correct);
  return span ? { wrong, correct, spans: [span] } : null;
}

/**
 * The span where two same-length token sequences differ: the pair's span in a subword
 * tokenizer's tokens (its `token_start` counts words).
 */
function differingSpan(a: readonly number[], b: readonly number[]): { start: number; length: number } | null {
  let start = 0;
  while (start < a.length && a[start] === b[start]) start++;
  if (start === a.length) return null;
  let end = a.length;
  while (end > start && a[end - 1] === b[end - 1]) end--;
  return { start, length: end - start };
}

/** A training record of a benchmark scene: it always carries the scene graph. */
export type BenchmarkTrainingRecord = TrainingRecord & { scene: Scene };

export function benchmarkTrainingRecord(
  r: Pick<BenchmarkRecord, 'captions' | 'hallucinations' | 'scene'>,
  rgb: Uint8Array,
  tokenizer: Tokenizer,
  prompt = BENCHMARK_PROMPT,
): BenchmarkTrainingRecord {
  return {
    rgb,
    cells: sceneCells(r.scene),
    scene: r.scene,
    prompt: tokenizer.encode(prompt),
    captions: r.captions.map((c) => tokenizer.encode(c)),
    corrections: r.hallucinations.map((h) => hallucinationPair(h, tokenizer)).filter((p): p is SpanPair => p !== null),
  };
}

/**
 * A benchmark record with its scene's canonical caption as the only target, the same image and
 * hallucination pairs (beyond the paper: docs/oracle.md#canonical-captions).
 */
export function withCanonicalCaption(r: BenchmarkTrainingRecord, tokenizer: Tokenizer): TrainingRecord {
  return { ...r, captions: [tokenizer.encode(canonicalCaption(r.scene).text)] };
}

export interface InMemorySplit {
  records: BenchmarkRecord[];
  rgb: Uint8Array[];
}

/** Generates n benchmark scenes of a split in memory, exactly as `rediff data make` would write them. */
export function generateBenchmarkSplit(
  split: string,
  seed: number,
  n: number,
  imageSize: number,
  opts: RecordOptions = {},
): InMemorySplit {
  const records: BenchmarkRecord[] = [];
  const rgb: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    const record = sceneRecord(split, seed, i, { ...opts, imageSize });
    records.push(record);
    rgb.push(renderScene(record.scene, imageSize).rgb);
  }
  return { records, rgb };
}

export async function loadRgb(file: string, size: number): Promise<Uint8Array> {
  return denormaliseRgb(await loadImage(file, size));
}

/**
 * An image named on line `line` of `file`, as RGB bytes; null when it cannot be read and `log`
 * skips (the issue then names file:line), a UserError naming file:line when `log` fails.
 */
async function loadRgbOf(
  image: string,
  size: number,
  file: string,
  line: number,
  log: IssueLog,
): Promise<Uint8Array | null> {
  try {
    return await loadRgb(image, size);
  } catch (e) {
    if (!(e instanceof UserError)) throw e;
    log.report(file, line, e.message);
    return null;
  }
}

/** A benchmark split directory written by `rediff data make`. */
export async function readBenchmarkSplit(
  dir: string,
  imageSize: number,
  onError: OnError = 'fail',
  maxLineBytes?: number,
): Promise<{ split: InMemorySplit; issues: DataIssue[] }> {
  const { records: listed, issues } = await readSplit(dir, {
    onError,
    ...(maxLineBytes !== undefined ? { maxLineBytes } : {}),
  });
  const log = new IssueLog(onError);
  const file = path.join(path.resolve(dir), 'data.jsonl');
  const records: typeof listed = [];
  const rgb: Uint8Array[] = [];
  for (const r of listed) {
    const bytes = await loadRgbOf(r.imagePath, imageSize, file, r.line, log);
    if (!bytes) continue;
    records.push(r);
    rgb.push(bytes);
  }
  if (records.length === 0) throw new UserError(`${dir}: the split has no usable records`);
  return { split: { records, rgb }, issues: [...issues, ...log.issues] };
}

/** Users' own data as training records, with what Stage II drafts on (see draftImagesFromLlava). */
export interface UserData {
  /** One record per image. */
  records: TrainingRecord[];
  /** Skipped lines. */
  issues: DataIssue[];
  /** The LLaVA lines kept, one per (human, gpt) turn pair. */
  llava: LlavaRecord[];
  /** Each image's RGB bytes at the model's size, by resolved path. */
  rgbByImage: ReadonlyMap<string, Uint8Array>;
}

/** LLaVA-style conversations JSONL (+ optional ViCrit pairs), for users' own data. */
export async function readUserData(
  files: { llava?: string; vicrit?: string },
  tokenizer: Tokenizer,
  imageSize: number,
  opts: LoadOptions = {},
): Promise<UserData> {
  const records: TrainingRecord[] = [];
  const issues: DataIssue[] = [];
  const byImage = new Map<string, TrainingRecord>();
  // An image that cannot be read is an issue of every line naming it (file:line), skipped or
  // fatal like any other; it is read only once.
  const log = new IssueLog(opts.onError ?? 'fail');
  const unreadable = new Set<string>();
  const recordFor = async (
    image: string,
    prompt: string,
    file: string,
    line: number,
  ): Promise<TrainingRecord | null> => {
    let rec = byImage.get(image);
    if (rec) return rec;
    const rgb = unreadable.has(image) ? null : await loadRgbOf(image, imageSize, file, line, log);
    if (!rgb) {
      if (unreadable.has(image)) log.report(file, line, `not a readable image: ${image} (see above)`);
      unreadable.add(image);
      return null;
    }
    rec = { rgb, prompt: tokenizer.encode(prompt), captions: [], corrections: [] };
    byImage.set(image, rec);
    records.push(rec);
    return rec;
  };
  const llava: LlavaRecord[] = [];
  if (files.llava) {
    const loaded = await loadLlavaJsonl(files.llava, { vocabulary: tokenizer, ...opts });
    issues.push(...loaded.issues);
    for (const r of loaded.records) {
      const rec = await recordFor(r.image, r.prompt, files.llava, r.line);
      if (!rec) continue;
      llava.push(r);
      rec.captions.push(tokenizer.encode(r.caption));
    }
  }
  if (files.vicrit) {
    const loaded = await loadVicritJsonl(files.vicrit, { vocabulary: tokenizer, ...opts });
    issues.push(...loaded.issues);
    for (const p of loaded.records) {
      if (!p.image) {
        issues.push({ file: files.vicrit, line: p.line ?? 0, message: 'hallucination pair names no image; skipped' });
        continue;
      }
      const rec = await recordFor(p.image, BENCHMARK_PROMPT, files.vicrit, p.line ?? 0);
      if (!rec) continue;
      const pair = hallucinationPair(p, tokenizer);
      if (pair) rec.corrections.push(pair);
    }
  }
  issues.push(...log.issues);
  return { records, issues, llava, rgbByImage: new Map([...byImage].map(([image, rec]) => [image, rec.rgb])) };
}
