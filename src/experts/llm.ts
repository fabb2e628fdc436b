/**
 * The LLM expert: reviews drafts with a vision-language model behind any OpenAI-compatible
 * chat-completions endpoint (OpenAI, vLLM, llama.cpp server, Ollama, ...). The paper used
 * o4-mini this way (the paper's expert revision). Only node built-ins are used (global fetch).
 *
 * Failure handling, per request:
 *  - 429, 5xx, network errors, timeouts, and a 2xx whose body is not chat-completions JSON are
 *    retried up to `maxRetries` times with exponential backoff (Retry-After honoured);
 *  - other 4xx are not retried: the answer is `error` with the status;
 *  - when the retries run out the answer is `error`;
 *  - an answer that is not `right` nor a JSON list of {org, target} is `malformed`.
 * None of these throw; `review` rejects only when the caller's signal aborts.
 */
import type { Expert, ReviewAnswer, ReviewRequest } from './expert.js';
import { parseAnswer } from './pairs.js';
import { UserError } from '../util/errors.js';
import { redactSecrets, registerSecret, urlWithoutCredentials } from '../util/redact.js';
import { Semaphore, abortReason } from '../util/semaphore.js';

/** The review contract (the paper's expert revision), in our own words. */
export const REVIEW_SYSTEM_PROMPT = [
  'You check image captions written by another model and correct its mistakes with the smallest possible edits.',
  '',
  'For each task you get the image, the question the caption answers, a reference caption written by a person, and ' +
    'the draft caption to check.',
  '',
  'What counts as a mistake:',
  '1. A factual error: something the image contradicts, such as a wrong object, shape, colour, size, number, ' +
    'position or relation between objects. Judge against the image. The reference caption is only a help: a ' +
    'statement that is true of the image but phrased differently from the reference is NOT a mistake, and neither is ' +
    'a detail the draft leaves out.',
  '2. Broken text: repeated words or phrases, garbled fragments, ungrammatical phrasing.',
  '',
  'How to write each correction, as {"org": ..., "target": ...}:',
  '- "org" is a short segment of a few consecutive words from the draft, copied exactly as written there. It must ' +
    'occur exactly once in the draft; if a shorter segment would occur more than once, extend it with a neighbouring ' +
    'word until it is unique.',
  '- "target" replaces "org" and has exactly the same number of words as "org" (every punctuation mark counts as a ' +
    'word, so keep the punctuation as it is). Change only the wrong words and keep the others.',
  '- Corrections must not overlap one another. Prefer several small corrections over one long one.',
  '',
  'How to answer:',
  '- If the draft has no mistake, answer with exactly one word: right',
  '- Otherwise answer with a JSON list of corrections and nothing else: no explanation, no code fence. Example:',
  '[{"org": "two blue squares", "target": "three blue squares"}, {"org": "circle circle above", "target": "small ' +
    'circle above"}]',
].join('\n');

export interface LlmExpertOptions {
  /**
   * Endpoint base, e.g. "https://api.openai.com/v1" or "http://127.0.0.1:8000/v1"; "/chat/completions" is appended
   * unless present.
   */
  baseUrl: string;
  /** Model name sent in the request, e.g. "o4-mini". */
  model: string;
  /**
   * Bearer token. Default: env REDIFF_EXPERT_API_KEY, else OPENAI_API_KEY; none -> no Authorization header (local
   * servers).
   */
  apiKey?: string;
  /** Requests in flight at once, across all callers of this expert. Default 4. */
  concurrency?: number;
  /** Per attempt, from sending the request to reading the whole body. Default 120000. */
  timeoutMs?: number;
  /** Retries after the first attempt. Default 5. */
  maxRetries?: number;
  /** First backoff delay; doubled on every retry (with jitter), capped by maxBackoffMs. Default 1000. */
  backoffMs?: number;
  /** Cap on one wait, Retry-After included. Default 60000. */
  maxBackoffMs?: number;
  /** Sent only when set (reasoning models such as o4-mini reject anything but the default). */
  temperature?: number;
  /** Sent as max_completion_tokens only when set. */
  maxTokens?: number;
  /** Extra fields merged into the request body, e.g. {reasoning_effort: "low"}. */
  extraBody?: Record<string, unknown>;
  /** Replaces REVIEW_SYSTEM_PROMPT. */
  systemPrompt?: string;
  /** Environment to read the API key from. Default process.env. */
  env?: Record<string, string | undefined>;
  /** Random source for the backoff jitter. Default Math.random. */
  random?: () => number;
}

/** A chat-completions message content part. */
export type ContentPart = { type: 'text'; text: string } | { type: 'image_url'; image_url: { url: string } };

export interface ChatMessage {
  role: 'system' | 'user';
  content: string | ContentPart[];
}

/** `data:image/png;base64,...` */
export function pngDataUrl(png: Uint8Array): string {
  return `data:image/png;base64,${Buffer.from(png.buffer, png.byteOffset, png.byteLength).toString('base64')}`;
}

/** The messages sent for one draft: the contract as the system message, then the task (text, then image). */
export function buildReviewMessages(req: ReviewRequest, systemPrompt = REVIEW_SYSTEM_PROMPT): ChatMessage[] {
  const text =
    `Question: ${req.question}\n\nReference caption (a reference only; a correct draft may be phrased ` +
    `differently):\n${req.reference}\n\nDraft caption to check:\n${req.draft}\n\nAnswer "right" or a JSON list of ` +
    `{"org", "target"} corrections.`;
  const content: ContentPart[] = [{ type: 'text', text }];
  if (req.imagePng) content.push({ type: 'image_url', image_url: { url: pngDataUrl(req.imagePng) } });
  return [
    { role: 'system', content: systemPrompt },
    { role: 'user', content },
  ];
}

/** Resolves the chat-completions URL from a base URL. */
export function chatCompletionsUrl(baseUrl: string): string {
  let u: URL;
  try {
    u = new URL(baseUrl);
  } catch {
    throw new UserError(`expert base URL is not a URL: ${JSON.stringify(redactSecrets(baseUrl))}`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:')
    throw new UserError(`expert base URL must be http(s): ${urlWithoutCredentials(baseUrl)}`);
  const trimmed = baseUrl.replace(/\/+$/, '');
  return /\/chat\/completions$/.test(trimmed) ? trimmed : `${trimmed}/chat/completions`;
}

/**
 * A URL's credentials (`user:password@`) as a Basic Authorization value, and the URL without
 * them: fetch refuses URLs with credentials, and they must not end up in any message.
 */
export function splitUrlCredentials(url: string): { url: string; basic?: string } {
  const u = new URL(url);
  if (!u.username && !u.password) return { url };
  const basic = Buffer.from(`${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`).toString('base64');
  u.username = '';
  u.password = '';
  return { url: u.toString(), basic };
}

/** Retry-After (seconds or an HTTP date) in ms, or undefined. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (value === null || value.trim() === '') return undefined;
  const v = value.trim();
  if (/^\d+(\.\d+)?$/.test(v)) return Math.round(Number(v) * 1000);
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(abortReason(signal));
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(abortReason(signal!));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** One attempt's outcome. */
type Attempt =
  | { ok: true; content: string }
  | { ok: false; retry: boolean; reason: string; status?: number; retryAfterMs?: number; raw?: string };

function textOfContent(content: unknown): string | undefined {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    const texts = content.map((p) =>
      p && typeof p === 'object' && typeof (p as { text?: unknown }).text === 'string'
        ? (p as { text: string }).text
        : '',
    );
    return texts.join('');
  }
  return undefined;
}

function errorMessageOf(body: string): string {
  try {
    const j = JSON.parse(body) as { error?: { message?: unknown } | string; message?: unknown };
    const m = typeof j.error === 'string' ? j.error : (j.error?.message ?? j.message);
    if (typeof m === 'string') return m;
  } catch {
    /* not JSON */
  }
  return body;
}

function oneLine(s: string, max = 200): string {
  const t = s.replace(/\s+/g, ' ').trim();
  return t.length > max ? `${t.slice(0, max)}...` : t;
}

export class LlmExpert implements Expert {
  readonly name: string;
  readonly concurrency: number;
  readonly url: string;
  private readonly apiKey: string | undefined;
  private readonly authorization: string | undefined;
  private readonly timeoutMs: number;
  private readonly maxRetries: number;
  private readonly backoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly semaphore: Semaphore;
  private readonly random: () => number;

  constructor(private readonly options: LlmExpertOptions) {
    if (!options.model) throw new UserError('expert model name is empty');
    const { url, basic } = splitUrlCredentials(chatCompletionsUrl(options.baseUrl));
    this.url = url;
    this.name = `llm:${options.model}`;
    const env = options.env ?? process.env;
    this.apiKey = options.apiKey ?? (env.REDIFF_EXPERT_API_KEY || env.OPENAI_API_KEY || undefined);
    // The key (else the URL's credentials) is what we send; it is redacted wherever it shows up.
    this.authorization = this.apiKey ? `Bearer ${this.apiKey}` : basic ? `Basic ${basic}` : undefined;
    registerSecret(this.apiKey);
    registerSecret(basic);
    if (basic) registerSecret(new URL(chatCompletionsUrl(options.baseUrl)).password || undefined);
    const positiveInt = (v: number | undefined, dflt: number, what: string, min: number): number => {
      const x = v ?? dflt;
      if (!Number.isInteger(x) || x < min) throw new UserError(`expert ${what} must be an integer >= ${min}, got ${x}`);
      return x;
    };
    this.concurrency = positiveInt(options.concurrency, 4, 'concurrency', 1);
    this.timeoutMs = positiveInt(options.timeoutMs, 120_000, 'timeout (ms)', 1);
    this.maxRetries = positiveInt(options.maxRetries, 5, 'max retries', 0);
    this.backoffMs = positiveInt(options.backoffMs, 1000, 'backoff (ms)', 0);
    this.maxBackoffMs = positiveInt(options.maxBackoffMs, 60_000, 'max backoff (ms)', 0);
    this.semaphore = new Semaphore(this.concurrency);
    this.random = options.random ?? Math.random;
  }

  /** The JSON body sent for one draft. */
  requestBody(req: ReviewRequest): Record<string, unknown> {
    const o = this.options;
    const body: Record<string, unknown> = { model: o.model, messages: buildReviewMessages(req, o.systemPrompt) };
    if (o.temperature !== undefined) body.temperature = o.temperature;
    if (o.maxTokens !== undefined) body.max_completion_tokens = o.maxTokens;
    return { ...body, ...o.extraBody };
  }

  async review(req: ReviewRequest, signal?: AbortSignal): Promise<ReviewAnswer> {
    if (!req.imagePng && req.loadImagePng) {
      try {
        req = { ...req, imagePng: await req.loadImagePng() };
      } catch (e) {
        return { kind: 'error', reason: redactSecrets(`could not read the image: ${(e as Error).message}`) };
      }
    }
    const body = JSON.stringify(this.requestBody(req));
    await this.semaphore.acquire(signal);
    try {
      let last: Attempt | undefined;
      for (let attempt = 0; attempt <= this.maxRetries; attempt++) {
        if (attempt > 0) {
          const exp = this.backoffMs * 2 ** (attempt - 1);
          const jittered = exp * (0.5 + 0.5 * this.random());
          const wait = last && !last.ok && last.retryAfterMs !== undefined ? last.retryAfterMs : jittered;
          await sleep(Math.min(wait, this.maxBackoffMs), signal);
        }
        last = await this.attempt(body, signal);
        if (last.ok) return parseAnswer(last.content);
        if (!last.retry) break;
      }
      const f = last as Extract<Attempt, { ok: false }>;
      const tries = f.retry ? ` (gave up after ${this.maxRetries + 1} attempts)` : '';
      // Error bodies echo keys ("Incorrect API key provided: Bearer sk-..."): never keep them.
      const answer: ReviewAnswer = { kind: 'error', reason: redactSecrets(`${f.reason}${tries}`) };
      if (f.status !== undefined) answer.status = f.status;
      if (f.raw !== undefined) answer.raw = redactSecrets(f.raw.slice(0, 2000));
      return answer;
    } finally {
      this.semaphore.release();
    }
  }

  /** One HTTP exchange under the per-attempt timeout. Rejects only if `signal` aborts. */
  private async attempt(body: string, signal?: AbortSignal): Promise<Attempt> {
    if (signal?.aborted) throw abortReason(signal);
    const ctrl = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ctrl.abort();
    }, this.timeoutMs);
    const onAbort = (): void => ctrl.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json' };
    if (this.authorization) headers.authorization = this.authorization;
    try {
      const res = await fetch(this.url, { method: 'POST', headers, body, signal: ctrl.signal });
      const text = await res.text();
      if (!res.ok) {
        const retry = res.status === 429 || res.status >= 500;
        const out: Attempt = {
          ok: false,
          retry,
          status: res.status,
          reason: `HTTP ${res.status}: ${oneLine(errorMessageOf(text)) || res.statusText}`,
          raw: text,
        };
        const ra = parseRetryAfter(res.headers.get('retry-after'));
        if (ra !== undefined) out.retryAfterMs = ra;
        return out;
      }
      let json: { choices?: Array<{ message?: { content?: unknown; refusal?: unknown } }> };
      try {
        json = JSON.parse(text);
      } catch {
        return {
          ok: false,
          retry: true,
          status: res.status,
          reason: `response is not JSON: ${oneLine(text, 80)}`,
          raw: text,
        };
      }
      const message = json?.choices?.[0]?.message;
      const content = textOfContent(message?.content);
      if (content === undefined) {
        if (typeof message?.refusal === 'string') return { ok: true, content: message.refusal };
        return {
          ok: false,
          retry: true,
          status: res.status,
          reason: 'response has no choices[0].message.content',
          raw: text,
        };
      }
      return { ok: true, content };
    } catch (err) {
      if (signal?.aborted) throw abortReason(signal);
      if (timedOut) return { ok: false, retry: true, reason: `timeout after ${this.timeoutMs} ms` };
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const detail = cause?.code ?? cause?.message ?? (err as Error).message;
      return { ok: false, retry: true, reason: `network error: ${oneLine(String(detail))}` };
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
  }
}
