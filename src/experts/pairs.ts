/**
 * Stage II pair extraction and filtering (the paper's draft-refined pairs).
 *
 *  - parseAnswer: an expert's answer text -> `right` | pairs | `malformed` (code fences
 *    stripped, "right" recognised in any case and with punctuation, a JSON list of
 *    {org, target} possibly wrapped in an object).
 *  - filterPairs: keeps pairs whose org and target have the same token count and whose org
 *    occurs exactly once in the draft (matched on token ids), and gives the reason for every
 *    dropped pair.
 *  - pairsToSpans: the draft ids (input, "wrong"), the corrected ids ("correct") and the
 *    spans the refine loss (paper Eq. 5) is taken on.
 *  - ReviewStats: counts of answers by kind and of kept / dropped pairs by reason.
 */
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import type { ReviewAnswer, SegmentPair } from './expert.js';

// ---------------------------------------------------------------------------------------------
// Parsing

/** Removes a Markdown code fence: the content of the first ```lang ... ``` block, else the text. */
export function stripCodeFences(text: string): string {
  const t = text.trim();
  const block = /```[A-Za-z0-9_-]*[ \t]*\r?\n?([\s\S]*?)```/.exec(t);
  if (block) return block[1]!.trim();
  // An opening fence without its closing one (a cut-off answer): drop the fence line.
  const open = /^```[A-Za-z0-9_-]*[ \t]*\r?\n?/.exec(t);
  if (open) return t.slice(open[0].length).trim();
  return t;
}

/** True when the text says the draft is right: "right", "Right.", "**RIGHT**", "\"right\"", ... */
export function isRightAnswer(text: string): boolean {
  return text.toLowerCase().replace(/[^a-z]/g, '') === 'right';
}

function tryJson(text: string): { ok: true; value: unknown } | { ok: false; error: string } {
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (err) {
    return {
      ok: false,
      error: String((err as Error).message)
        .split('\n')[0]!
        .slice(0, 100),
    };
  }
}

/** Keys under which a wrapping object may hold the list, tried in this order. */
const WRAPPER_KEYS = ['pairs', 'corrections', 'edits', 'errors', 'mistakes', 'result', 'results', 'answer', 'output'];

function pairListOf(value: unknown): { list: unknown[] } | { right: true } | { error: string } {
  if (typeof value === 'string')
    return isRightAnswer(value) ? { right: true } : { error: 'a JSON string other than "right"' };
  if (Array.isArray(value)) return { list: value };
  if (value !== null && typeof value === 'object') {
    const obj = value as Record<string, unknown>;
    if ('org' in obj || 'target' in obj) return { list: [obj] };
    for (const k of WRAPPER_KEYS) {
      const v = obj[k];
      if (Array.isArray(v)) return { list: v };
      if (typeof v === 'string' && isRightAnswer(v)) return { right: true };
    }
    const arrays = Object.values(obj).filter((v) => Array.isArray(v));
    if (arrays.length === 1) return { list: arrays[0] as unknown[] };
    return { error: 'a JSON object without a list of {org, target}' };
  }
  return { error: `JSON ${value === null ? 'null' : typeof value}, not a list of {org, target}` };
}

/**
 * Parses an expert's answer text.
 *  - "right" (any case, surrounding punctuation / quotes / Markdown, inside a fence) -> right.
 *  - A JSON list of {org, target} (in a code fence or not; or wrapped in an object such as
 *    {"pairs": [...]}; or a single {org, target} object) -> pairs. If the text is not JSON as a
 *    whole, the part from the first "[" to the last "]" is tried (models sometimes add a line
 *    of prose). An empty list means nothing to correct -> right.
 *  - A leading <think>...</think> block is ignored.
 *  - Anything else -> malformed, with the reason. An item without string org and target makes
 *    the whole answer malformed (the contract was not followed; its other items are suspect).
 */
export function parseAnswer(raw: string): ReviewAnswer {
  // Reasoning models served locally (vLLM, llama.cpp) may prefix their answer with <think>...</think>.
  const text = stripCodeFences(raw.replace(/<think>[\s\S]*?<\/think>/gi, ''));
  if (text.length === 0) return { kind: 'malformed', raw, reason: 'empty answer' };
  if (isRightAnswer(text)) return { kind: 'right', raw };
  let parsed = tryJson(text);
  if (!parsed.ok) {
    const a = text.indexOf('[');
    const b = text.lastIndexOf(']');
    const inner = a >= 0 && b > a ? tryJson(text.slice(a, b + 1)) : undefined;
    if (inner?.ok) parsed = inner;
    else return { kind: 'malformed', raw, reason: `not JSON (${parsed.error})` };
  }
  const got = pairListOf(parsed.value);
  if ('error' in got) return { kind: 'malformed', raw, reason: got.error };
  if ('right' in got) return { kind: 'right', raw };
  if (got.list.length === 0) return { kind: 'right', raw };
  const pairs: SegmentPair[] = [];
  for (let i = 0; i < got.list.length; i++) {
    const item = got.list[i] as { org?: unknown; target?: unknown } | null;
    if (item === null || typeof item !== 'object' || typeof item.org !== 'string' || typeof item.target !== 'string') {
      return { kind: 'malformed', raw, reason: `item ${i + 1} is not {"org": string, "target": string}` };
    }
    pairs.push({ org: item.org, target: item.target });
  }
  return { kind: 'pairs', pairs, raw };
}

// ---------------------------------------------------------------------------------------------
// Filtering

export const DROP_REASONS = ['empty', 'not-found', 'ambiguous', 'length-mismatch', 'no-change', 'overlap'] as const;
/**
 * Why a pair was dropped, checked in this order:
 *  - empty: org or target has no tokens;
 *  - not-found: org's tokens do not occur in the draft;
 *  - ambiguous: they occur more than once;
 *  - length-mismatch: target's token count differs from org's;
 *  - no-change: target's tokens equal org's;
 *  - overlap: org's span overlaps the span of an earlier kept pair (the first one wins).
 */
export type DropReason = (typeof DROP_REASONS)[number];

/** A kept pair, located in the draft: org occupies draft tokens [start, start + orgIds.length). */
export interface KeptPair extends SegmentPair {
  start: number;
  orgIds: number[];
  targetIds: number[];
}

export interface DroppedPair extends SegmentPair {
  reason: DropReason;
}

export interface FilterResult {
  /** The draft's token ids the pairs were located in (tokenizer.encode(draft)). */
  draftIds: number[];
  /** Kept pairs, in the expert's order. */
  kept: KeptPair[];
  dropped: DroppedPair[];
}

/** Start positions of every occurrence of `needle` in `hay` (overlapping occurrences count). */
export function findAll(hay: readonly number[], needle: readonly number[]): number[] {
  const out: number[] = [];
  if (needle.length === 0 || needle.length > hay.length) return out;
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    out.push(i);
  }
  return out;
}

function sameIds(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/**
 * Encodings a segment may have inside a longer text. A word tokenizer gives one; a BPE
 * tokenizer encodes a segment differently at the start of a text than after a space
 * ("red" vs " red"), so both are tried and their occurrences pooled.
 */
function segmentEncodings(text: string, tokenizer: Tokenizer): number[][] {
  const out: number[][] = [];
  for (const variant of [text.trim(), ' ' + text.trim()]) {
    const ids = tokenizer.encode(variant);
    if (ids.length > 0 && !out.some((o) => sameIds(o, ids))) out.push(ids);
  }
  return out;
}

/**
 * Finds org in the draft's ids. Its occurrences under every encoding are pooled; the target is
 * encoded the same way as the org encoding that matched (same leading-space variant).
 */
function locate(
  draftIds: readonly number[],
  p: SegmentPair,
  tokenizer: Tokenizer,
): { start: number; orgIds: number[]; targetIds: number[] } | { reason: 'empty' | 'not-found' | 'ambiguous' } {
  const orgEncodings = segmentEncodings(p.org, tokenizer);
  if (orgEncodings.length === 0 || segmentEncodings(p.target, tokenizer).length === 0) return { reason: 'empty' };
  const hits = new Map<number, number>(); // start -> index of the encoding that matched there
  orgEncodings.forEach((enc, k) => {
    for (const s of findAll(draftIds, enc)) if (!hits.has(s)) hits.set(s, k);
  });
  if (hits.size === 0) return { reason: 'not-found' };
  if (hits.size > 1) return { reason: 'ambiguous' };
  const [start, k] = [...hits.entries()][0]!;
  const targetIds = tokenizer.encode(k === 0 ? p.target.trim() : ' ' + p.target.trim());
  return { start, orgIds: [...orgEncodings[k]!], targetIds };
}

/**
 * Checks an expert's pairs against the draft (the paper's draft-refined pairs), comparing on token ids.
 * The draft is encoded with `tokenizer.encode(draft)`; see DropReason for the checks.
 */
export function filterPairs(draft: string, pairs: readonly SegmentPair[], tokenizer: Tokenizer): FilterResult {
  const draftIds = tokenizer.encode(draft);
  const kept: KeptPair[] = [];
  const dropped: DroppedPair[] = [];
  const taken = new Uint8Array(draftIds.length);
  const drop = (p: SegmentPair, reason: DropReason): void => {
    dropped.push({ org: p.org, target: p.target, reason });
  };
  for (const p of pairs) {
    const loc = locate(draftIds, p, tokenizer);
    if ('reason' in loc) {
      drop(p, loc.reason);
      continue;
    }
    const { start, orgIds, targetIds } = loc;
    if (targetIds.length !== orgIds.length) {
      drop(p, 'length-mismatch');
      continue;
    }
    if (sameIds(orgIds, targetIds)) {
      drop(p, 'no-change');
      continue;
    }
    let overlaps = false;
    for (let i = start; i < start + orgIds.length; i++) if (taken[i]) overlaps = true;
    if (overlaps) {
      drop(p, 'overlap');
      continue;
    }
    taken.fill(1, start, start + orgIds.length);
    kept.push({ org: p.org, target: p.target, start, orgIds, targetIds });
  }
  return { draftIds, kept, dropped };
}

// ---------------------------------------------------------------------------------------------
// Spans for the refine loss

export interface Span {
  start: number;
  length: number;
}

export interface SpanOptions {
  /**
   * Which positions the loss is taken on.
   *  - 'org' (default): every token of each kept org span. The expert flags the whole segment
   *    as wrong (paper Eq. 5: loss on the "mistake" tokens), so the model learns to rewrite the
   *    segment as a unit, including keeping its unchanged words.
   *  - 'changed': only positions whose token actually changes, as maximal contiguous runs.
   */
  spans?: 'org' | 'changed';
}

export interface SpanResult {
  /** The draft's ids (the unmasked input of the refine step). */
  wrong: number[];
  /** The draft with every kept org span replaced by its target ids (same length as wrong). */
  correct: number[];
  /** Sorted, non-overlapping spans where the loss is taken; empty if nothing was applied. */
  spans: Span[];
  /** Pairs that could not be located exactly once in `draftIds`, or that overlap an earlier one. */
  skipped: SegmentPair[];
}

/**
 * Applies kept pairs to the draft's token ids. Each pair's org is located again in `draftIds`
 * (which may differ from `tokenizer.encode(draft)`, e.g. by EOS padding), using the pair's own
 * ids when it is a KeptPair from filterPairs, else by encoding org and target; a pair that is
 * not found exactly once, has unequal lengths or overlaps an earlier applied pair is skipped.
 */
export function pairsToSpans(
  draftIds: readonly number[],
  keptPairs: readonly (SegmentPair | KeptPair)[],
  tokenizer: Tokenizer,
  options: SpanOptions = {},
): SpanResult {
  const wrong = [...draftIds];
  const correct = [...draftIds];
  const taken = new Uint8Array(wrong.length);
  const orgSpans: Span[] = [];
  const skipped: SegmentPair[] = [];
  for (const p of keptPairs) {
    let orgIds: number[];
    let targetIds: number[];
    let start: number | undefined;
    if ('orgIds' in p && 'targetIds' in p) {
      orgIds = p.orgIds;
      targetIds = p.targetIds;
      const hits = findAll(wrong, orgIds);
      if (hits.length === 1) start = hits[0];
    } else {
      const loc = locate(wrong, p, tokenizer);
      if ('reason' in loc) {
        skipped.push({ org: p.org, target: p.target });
        continue;
      }
      ({ start, orgIds, targetIds } = loc);
    }
    if (start === undefined || orgIds.length !== targetIds.length || orgIds.length === 0) {
      skipped.push({ org: p.org, target: p.target });
      continue;
    }
    let overlaps = false;
    for (let i = start; i < start + orgIds.length; i++) if (taken[i]) overlaps = true;
    if (overlaps) {
      skipped.push({ org: p.org, target: p.target });
      continue;
    }
    taken.fill(1, start, start + orgIds.length);
    for (let j = 0; j < targetIds.length; j++) correct[start + j] = targetIds[j]!;
    orgSpans.push({ start, length: orgIds.length });
  }
  orgSpans.sort((a, b) => a.start - b.start);
  let spans: Span[] = orgSpans;
  if (options.spans === 'changed') {
    spans = [];
    for (let i = 0; i < wrong.length; i++) {
      if (wrong[i] === correct[i]) continue;
      const last = spans[spans.length - 1];
      if (last && last.start + last.length === i) last.length++;
      else spans.push({ start: i, length: 1 });
    }
  }
  return { wrong, correct, spans, skipped };
}

// ---------------------------------------------------------------------------------------------
// Statistics

export interface ReviewStatsJSON {
  answers: number;
  right: number;
  withPairs: number;
  malformed: number;
  errors: number;
  pairsProposed: number;
  pairsKept: number;
  draftsWithKeptPairs: number;
  dropped: Record<DropReason, number>;
  malformedReasons: Record<string, number>;
}

function zeroDropped(): Record<DropReason, number> {
  return Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<DropReason, number>;
}

/** Accumulates what the expert said and what the filter kept. */
export class ReviewStats {
  /** Answers recorded (every kind, errors included). */
  answers = 0;
  /** Drafts judged right. */
  right = 0;
  /** Answers that proposed pairs. */
  withPairs = 0;
  malformed = 0;
  errors = 0;
  /** Pairs seen by recordFilter (kept + dropped). */
  pairsProposed = 0;
  pairsKept = 0;
  /** Drafts with at least one kept pair (training samples). */
  draftsWithKeptPairs = 0;
  readonly dropped: Record<DropReason, number> = zeroDropped();
  /** Malformed answers by reason, with numbers and quotes stripped so similar reasons group. */
  readonly malformedReasons: Record<string, number> = {};

  recordAnswer(answer: ReviewAnswer): void {
    this.answers++;
    switch (answer.kind) {
      case 'right':
        this.right++;
        break;
      case 'pairs':
        this.withPairs++;
        break;
      case 'malformed': {
        this.malformed++;
        const key = answer.reason
          .replace(/\(.*\)/, '')
          .replace(/\d+/g, 'N')
          .trim();
        this.malformedReasons[key] = (this.malformedReasons[key] ?? 0) + 1;
        break;
      }
      case 'error':
        this.errors++;
        break;
    }
  }

  recordFilter(result: Pick<FilterResult, 'kept' | 'dropped'>): void {
    this.pairsProposed += result.kept.length + result.dropped.length;
    this.pairsKept += result.kept.length;
    if (result.kept.length > 0) this.draftsWithKeptPairs++;
    for (const d of result.dropped) this.dropped[d.reason]++;
  }

  get pairsDropped(): number {
    return DROP_REASONS.reduce((s, r) => s + this.dropped[r], 0);
  }

  merge(other: ReviewStats): this {
    this.answers += other.answers;
    this.right += other.right;
    this.withPairs += other.withPairs;
    this.malformed += other.malformed;
    this.errors += other.errors;
    this.pairsProposed += other.pairsProposed;
    this.pairsKept += other.pairsKept;
    this.draftsWithKeptPairs += other.draftsWithKeptPairs;
    for (const r of DROP_REASONS) this.dropped[r] += other.dropped[r];
    for (const [k, v] of Object.entries(other.malformedReasons))
      this.malformedReasons[k] = (this.malformedReasons[k] ?? 0) + v;
    return this;
  }

  toJSON(): ReviewStatsJSON {
    return {
      answers: this.answers,
      right: this.right,
      withPairs: this.withPairs,
      malformed: this.malformed,
      errors: this.errors,
      pairsProposed: this.pairsProposed,
      pairsKept: this.pairsKept,
      draftsWithKeptPairs: this.draftsWithKeptPairs,
      dropped: { ...this.dropped },
      malformedReasons: { ...this.malformedReasons },
    };
  }

  /**
   * One line, e.g. "120 answers: 70 right, 45 with pairs, 3 malformed, 2 errors; pairs 80 kept, 12 dropped
   * (length-mismatch 7, not-found 5)".
   */
  summary(): string {
    const drops = DROP_REASONS.filter((r) => this.dropped[r] > 0).map((r) => `${r} ${this.dropped[r]}`);
    return (
      `${this.answers} answers: ${this.right} right, ${this.withPairs} with pairs, ${this.malformed} malformed, ` +
      `${this.errors} errors; ` +
      `pairs ${this.pairsKept} kept, ${this.pairsDropped} dropped` +
      (drops.length > 0 ? ` (${drops.join(', ')})` : '')
    );
  }
}
