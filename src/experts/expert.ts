/**
 * The expert reviser of Stage II (the paper's expert revision): it reads one of the model's own drafts and
 * answers `right`, or a list of same-length segment corrections `{org, target}`.
 *
 * Two implementations: the LLM expert over a chat-completions endpoint (./llm.ts) and the
 * grounded expert that checks drafts against the benchmark's scene graph (./grounded.ts).
 * Both are driven by `reviewAll` (./cache.ts), which caches answers and bounds concurrency;
 * their pairs are checked by `filterPairs` (./pairs.ts) before training.
 */

/** One draft to review. */
export interface ReviewRequest {
  /** Stable key of this draft (the answer cache is keyed by it), e.g. "scene-00042/tps4". */
  id: string;
  /** The image as PNG bytes (the LLM expert sends it as a data URL). */
  imagePng?: Uint8Array;
  /** Or a loader for them, called only when the draft is actually sent (not for cached answers). */
  loadImagePng?: () => Promise<Uint8Array>;
  /** The question / instruction the draft answers, e.g. "Describe the image." */
  question: string;
  /** Ground-truth caption: a reference only; a correct draft may be worded differently. */
  reference: string;
  /** The model's draft caption, as text. */
  draft: string;
  /** The scene graph the image was rendered from (used by the grounded expert; others ignore it). */
  scene?: unknown;
}

/** One correction: `org` is a segment of the draft, `target` its replacement (same token count). */
export interface SegmentPair {
  org: string;
  target: string;
}

/**
 * An expert's answer.
 *  - `right`: the draft needs no change.
 *  - `pairs`: corrections as proposed by the expert, not yet checked (see filterPairs).
 *  - `malformed`: the expert answered, but not in the contract's format; recorded and skipped.
 *  - `error`: no usable answer was obtained (HTTP 4xx, retries exhausted, a failing expert).
 *    Recorded in the cache for the record, but not treated as an answer: a rerun asks again.
 * `raw` is the expert's answer text when there is one (the LLM expert always sets it).
 */
export type ReviewAnswer =
  | { kind: 'right'; raw?: string }
  | { kind: 'pairs'; pairs: SegmentPair[]; raw?: string }
  | { kind: 'malformed'; raw: string; reason: string }
  | { kind: 'error'; reason: string; status?: number; raw?: string };

export type ReviewAnswerKind = ReviewAnswer['kind'];

export interface Expert {
  /**
   * Identifies the expert and its settings that change answers (e.g. "llm:o4-mini",
   * "grounded"). Stored with every cached answer; a cache written by another expert is refused.
   */
  readonly name: string;
  /** Preferred number of reviews in flight (reviewAll's default concurrency). */
  readonly concurrency?: number;
  /**
   * Reviews one draft. Must not throw for a bad or failed answer (return `malformed` or
   * `error`); rejects only when `signal` is aborted.
   */
  review(req: ReviewRequest, signal?: AbortSignal): Promise<ReviewAnswer>;
}

/** True for answers that count as answered (everything except `error`). */
export function isSettled(answer: ReviewAnswer): boolean {
  return answer.kind !== 'error';
}

/** The answer without its raw text (what the cache stores next to the raw text). */
export function withoutRaw(answer: ReviewAnswer): ReviewAnswer {
  switch (answer.kind) {
    case 'right':
      return { kind: 'right' };
    case 'pairs':
      return { kind: 'pairs', pairs: answer.pairs.map((p) => ({ org: p.org, target: p.target })) };
    case 'malformed':
      return answer;
    case 'error':
      return answer.status === undefined
        ? { kind: 'error', reason: answer.reason }
        : { kind: 'error', reason: answer.reason, status: answer.status };
  }
}
