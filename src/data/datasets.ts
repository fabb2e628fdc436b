/**
 * Loaders for data users bring:
 *  - LLaVA-style JSONL: {"id", "image": "relative/path.png", "conversations": [{"from": "human",
 *    "value": "<image>\nDescribe the image in detail."}, {"from": "gpt", "value": "caption"}]};
 *  - ViCrit-style JSONL hallucination pairs: {"caption", "changed_caption", "span_original",
 *    "span_changed", "type"?, "image"?}; the field names of the published ViCrit-Train set
 *    (original_caption, solution_original, solution_target, image_path) are accepted too.
 * Problems are reported per line (file:line) and skipped or fatal by `onError` (jsonl.ts). A
 * caption or prompt with words outside the vocabulary (default: the benchmark's) is such a
 * problem: it would otherwise become [UNK] tokens silently (`vocabulary: null` accepts them).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { wordsOutsideVocabulary } from '../tokenizer/kinds.js';
import { splitWords } from '../tokenizer/word.js';
import { benchmarkTokenizer } from '../benchmark/captioner.js';
import { type DataIssue, IssueLog, type OnError, readJsonlLines } from './jsonl.js';

export interface LoadOptions {
  /** Default 'fail'. */
  onError?: OnError;
  /** Image paths are relative to this directory; default the JSONL file's directory. */
  imageRoot?: string;
  /**
   * Captions (and LLaVA prompts) must only use this tokenizer's vocabulary; default the benchmark's; null to skip the
   * check.
   */
  vocabulary?: Tokenizer | null;
  /** Check that every image file exists; default true. */
  checkImages?: boolean;
  /** Longest line, in bytes (jsonl.ts). */
  maxLineBytes?: number;
}

const lineLimit = (opts: LoadOptions): { maxLineBytes?: number } =>
  opts.maxLineBytes !== undefined ? { maxLineBytes: opts.maxLineBytes } : {};

export interface Loaded<T> {
  records: T[];
  /** The problems of skipped lines (empty with onError 'fail'). */
  issues: DataIssue[];
}

let defaultVocabulary: Tokenizer | null = null;
function vocabularyOf(opts: LoadOptions): Tokenizer | null {
  if (opts.vocabulary === null) return null;
  return opts.vocabulary ?? (defaultVocabulary ??= benchmarkTokenizer());
}

/** The words of `text` outside the vocabulary (distinct, in order of appearance). */
export function unknownWords(vocabulary: Tokenizer, text: string): string[] {
  return wordsOutsideVocabulary(vocabulary, text);
}

/** A message for words outside the vocabulary, or null. */
export function vocabularyProblem(vocabulary: Tokenizer | null, text: string, what: string): string | null {
  if (!vocabulary) return null;
  const unknown = unknownWords(vocabulary, text);
  if (unknown.length === 0) return null;
  return `${what} has ${unknown.length} word(s) outside the vocabulary: ${unknown
    .slice(0, 8)
    .map((w) => JSON.stringify(w))
    .join(', ')}${unknown.length > 8 ? ', ...' : ''}`;
}

// ---- LLaVA ----

export interface LlavaRecord {
  id: string;
  /** Absolute (resolved) image path. */
  image: string;
  /** The human turn without the <image> marker. */
  prompt: string;
  caption: string;
  line: number;
}

const HUMAN = new Set(['human', 'user']);
const ASSISTANT = new Set(['gpt', 'assistant']);

/** Reads a LLaVA-style conversations JSONL; one record per (human, gpt) turn pair. */
export async function loadLlavaJsonl(file: string, opts: LoadOptions = {}): Promise<Loaded<LlavaRecord>> {
  const log = new IssueLog(opts.onError ?? 'fail');
  const root = opts.imageRoot ?? path.dirname(file);
  const vocab = vocabularyOf(opts);
  const records: LlavaRecord[] = [];
  for await (const { line, value } of readJsonlLines(file, log, lineLimit(opts))) {
    const v = value as Record<string, unknown>;
    const fail = (m: string): void => log.report(file, line, m);
    if (typeof v.image !== 'string' || v.image === '') {
      fail('missing "image" (a path to the image file)');
      continue;
    }
    if (!Array.isArray(v.conversations)) {
      fail('missing "conversations" (a list of {from, value} turns)');
      continue;
    }
    const turns = v.conversations as unknown[];
    if (
      !turns.every(
        (t) =>
          t !== null &&
          typeof t === 'object' &&
          typeof (t as { from?: unknown }).from === 'string' &&
          typeof (t as { value?: unknown }).value === 'string',
      )
    ) {
      fail('every conversation turn must be {"from": string, "value": string}');
      continue;
    }
    const typed = turns as { from: string; value: string }[];
    const pairs: { prompt: string; caption: string }[] = [];
    for (let k = 0; k + 1 < typed.length; k++) {
      if (HUMAN.has(typed[k]!.from) && ASSISTANT.has(typed[k + 1]!.from)) {
        pairs.push({ prompt: typed[k]!.value.replace(/<image>/g, '').trim(), caption: typed[k + 1]!.value.trim() });
        k++;
      }
    }
    if (pairs.length === 0) {
      fail('no human turn followed by a gpt turn in "conversations"');
      continue;
    }
    const image = path.resolve(root, v.image);
    if (opts.checkImages !== false && !fs.existsSync(image)) {
      fail(`image not found: ${image}`);
      continue;
    }
    const problem = pairs
      .flatMap((p, k) => [
        vocabularyProblem(vocab, p.prompt, pairs.length > 1 ? `prompt ${k + 1}` : 'prompt'),
        vocabularyProblem(vocab, p.caption, pairs.length > 1 ? `caption ${k + 1}` : 'caption'),
      ])
      .find((p) => p !== null);
    if (problem) {
      fail(problem);
      continue;
    }
    const id = typeof v.id === 'string' || typeof v.id === 'number' ? String(v.id) : `line${line}`;
    pairs.forEach((p, k) =>
      records.push({ id: pairs.length > 1 ? `${id}#${k}` : id, image, prompt: p.prompt, caption: p.caption, line }),
    );
  }
  return { records, issues: log.issues };
}

// ---- ViCrit ----

export interface VicritPair {
  caption: string;
  changed_caption: string;
  span_original: string;
  span_changed: string;
  type?: string;
  /** Where the spans start, in splitWords tokens of both captions; the spans have `token_count` tokens. */
  token_start: number;
  token_count: number;
  /** Resolved image path, when the record names one. */
  image?: string;
  line?: number;
}

function firstString(v: Record<string, unknown>, keys: readonly string[]): string | undefined {
  for (const k of keys) if (typeof v[k] === 'string') return v[k] as string;
  return undefined;
}

const seqEqual = (a: readonly string[], b: readonly string[], from: number, to: number): boolean => {
  for (let i = from; i < to; i++) if (a[i] !== b[i]) return false;
  return true;
};

/**
 * Checks a hallucination pair and locates its span: the captions must be the same outside one
 * span of equal token count, where the original has span_original and the changed caption
 * span_changed. Returns the pair, or a message saying what is wrong.
 */
export function checkVicritPair(value: Record<string, unknown>): { pair: VicritPair } | { error: string } {
  const caption = firstString(value, ['caption', 'original_caption']);
  const changed = firstString(value, ['changed_caption']);
  const spanO = firstString(value, ['span_original', 'solution_original', 'original_span']);
  const spanC = firstString(value, ['span_changed', 'solution_target', 'changed_span']);
  if (caption === undefined || changed === undefined || spanO === undefined || spanC === undefined) {
    return { error: 'needs string fields caption, changed_caption, span_original and span_changed' };
  }
  const capT = splitWords(caption);
  const chT = splitWords(changed);
  const so = splitWords(spanO);
  const sc = splitWords(spanC);
  if (so.length === 0 || sc.length === 0) return { error: 'empty span' };
  if (so.join(' ') === sc.join(' ')) return { error: 'span_original and span_changed are the same' };
  if (so.length !== sc.length)
    return { error: `spans differ in token count (${so.length} vs ${sc.length}); same-length pairs only` };
  if (capT.length !== chT.length)
    return { error: `captions differ in token count (${capT.length} vs ${chT.length}) although the spans do not` };
  const len = so.length;
  const at = (k: number): boolean => {
    if (k < 0 || k + len > capT.length) return false;
    for (let i = 0; i < len; i++) if (capT[k + i] !== so[i] || chT[k + i] !== sc[i]) return false;
    return seqEqual(capT, chT, 0, k) && seqEqual(capT, chT, k + len, capT.length);
  };
  const hint = value.token_start;
  let start = typeof hint === 'number' && Number.isInteger(hint) && at(hint) ? hint : -1;
  for (let k = 0; start < 0 && k + len <= capT.length; k++) if (at(k)) start = k;
  if (start < 0)
    return {
      error: 'span_original / span_changed not found as the only difference between caption and changed_caption',
    };
  const pair: VicritPair = {
    caption,
    changed_caption: changed,
    span_original: spanO,
    span_changed: spanC,
    token_start: start,
    token_count: len,
  };
  if (typeof value.type === 'string') pair.type = value.type;
  return { pair };
}

/** Reads ViCrit-style hallucination pairs. Images are checked only when a record names one. */
export async function loadVicritJsonl(file: string, opts: LoadOptions = {}): Promise<Loaded<VicritPair>> {
  const log = new IssueLog(opts.onError ?? 'fail');
  const root = opts.imageRoot ?? path.dirname(file);
  const vocab = vocabularyOf(opts);
  const records: VicritPair[] = [];
  for await (const { line, value } of readJsonlLines(file, log, lineLimit(opts))) {
    const v = value as Record<string, unknown>;
    const r = checkVicritPair(v);
    if ('error' in r) {
      log.report(file, line, r.error);
      continue;
    }
    const problem =
      vocabularyProblem(vocab, r.pair.caption, 'caption') ??
      vocabularyProblem(vocab, r.pair.changed_caption, 'changed_caption');
    if (problem) {
      log.report(file, line, problem);
      continue;
    }
    const img = firstString(v, ['image', 'image_path']);
    if (img !== undefined) {
      const image = path.resolve(root, img);
      if (opts.checkImages !== false && !fs.existsSync(image)) {
        log.report(file, line, `image not found: ${image}`);
        continue;
      }
      r.pair.image = image;
    }
    records.push({ ...r.pair, line });
  }
  return { records, issues: log.issues };
}
