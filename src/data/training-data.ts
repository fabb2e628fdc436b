/**
 * Training records from the places data comes from: a benchmark split on disk, benchmark
 * scenes generated in memory (no disk round trip, for quick runs), and user data in
 * LLaVA-style and ViCrit-style JSONL.
 */
import { BENCHMARK_PROMPT } from '../benchmark/captioner.js';
import { type BenchmarkRecord, type RecordOptions, makeRecord, readSplit } from '../benchmark/dataset.js';
import type { HallucinationRecord } from '../benchmark/hallucination.js';
import { renderScene } from '../benchmark/render.js';
import { sceneCells } from '../benchmark/cells.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import type { SpanPair, TrainingRecord } from '../training/samples.js';
import { UserError } from '../util/errors.js';
import { denormaliseRgb, loadImage } from './image.js';
import { type LlavaRecord, type LoadOptions, loadLlavaJsonl, loadVicritJsonl } from './datasets.js';
import type { DataIssue, OnError } from './jsonl.js';

/** A hallucination pair as a same-length span correction over token ids. */
export function hallucinationPair(h: Pick<HallucinationRecord, 'caption' | 'changed_caption' | 'token_start' | 'token_count'>, tokenizer: Tokenizer): SpanPair | null {
  const wrong = tokenizer.encode(h.changed_caption);
  const correct = tokenizer.encode(h.caption);
  // Pairs whose two sides differ in token count are dropped (as the authors' code does).
  if (wrong.length !== correct.length || h.token_count < 1) return null;
  return { wrong, correct, spans: [{ start: h.token_start, length: h.token_count }] };
}

export function benchmarkTrainingRecord(r: Pick<BenchmarkRecord, 'captions' | 'hallucinations' | 'scene'>, rgb: Uint8Array, tokenizer: Tokenizer, prompt = BENCHMARK_PROMPT): TrainingRecord {
  return {
    rgb,
    cells: sceneCells(r.scene),
    prompt: tokenizer.encode(prompt),
    captions: r.captions.map((c) => tokenizer.encode(c)),
    corrections: r.hallucinations.map((h) => hallucinationPair(h, tokenizer)).filter((p): p is SpanPair => p !== null),
  };
}

export interface InMemorySplit {
  records: BenchmarkRecord[];
  rgb: Uint8Array[];
}

/** Generates n benchmark scenes of a split in memory, exactly as `rediff data make` would write them. */
export function generateBenchmarkSplit(split: string, seed: number, n: number, imageSize: number, opts: RecordOptions = {}): InMemorySplit {
  const records: BenchmarkRecord[] = [];
  const rgb: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    const { record } = makeRecord(split, seed, i, { ...opts, imageSize });
    records.push(record);
    rgb.push(renderScene(record.scene, imageSize).rgb);
  }
  return { records, rgb };
}

export async function loadRgb(file: string, size: number): Promise<Uint8Array> {
  return denormaliseRgb(await loadImage(file, size));
}

/** A benchmark split directory written by `rediff data make`. */
export async function readBenchmarkSplit(dir: string, imageSize: number, onError: OnError = 'fail'): Promise<{ split: InMemorySplit; issues: DataIssue[] }> {
  const { records, issues } = await readSplit(dir, { onError });
  if (records.length === 0) throw new UserError(`${dir}: the split has no usable records`);
  const rgb: Uint8Array[] = [];
  for (const r of records) rgb.push(await loadRgb(r.imagePath, imageSize));
  return { split: { records, rgb }, issues };
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
  let llava: LlavaRecord[] = [];
  if (files.llava) {
    const loaded = await loadLlavaJsonl(files.llava, opts);
    issues.push(...loaded.issues);
    llava = loaded.records;
    for (const r of loaded.records) {
      let rec = byImage.get(r.image);
      if (!rec) {
        rec = { rgb: await loadRgb(r.image, imageSize), prompt: tokenizer.encode(r.prompt), captions: [], corrections: [] };
        byImage.set(r.image, rec);
        records.push(rec);
      }
      rec.captions.push(tokenizer.encode(r.caption));
    }
  }
  if (files.vicrit) {
    const loaded = await loadVicritJsonl(files.vicrit, opts);
    issues.push(...loaded.issues);
    for (const p of loaded.records) {
      if (!p.image) {
        issues.push({ file: files.vicrit, line: p.line ?? 0, message: 'hallucination pair names no image; skipped' });
        continue;
      }
      let rec = byImage.get(p.image);
      if (!rec) {
        rec = { rgb: await loadRgb(p.image, imageSize), prompt: tokenizer.encode(BENCHMARK_PROMPT), captions: [], corrections: [] };
        byImage.set(p.image, rec);
        records.push(rec);
      }
      const pair = hallucinationPair(p, tokenizer);
      if (pair) rec.corrections.push(pair);
    }
  }
  return { records, issues, llava, rgbByImage: new Map([...byImage].map(([image, rec]) => [image, rec.rgb])) };
}
