import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { splitWords, WordTokenizer } from '../src/tokenizer/word.js';
import { UserError } from '../src/util/errors.js';
import type { Expert, ReviewAnswer, ReviewRequest } from '../src/experts/expert.js';
import {
  buildReviewMessages,
  chatCompletionsUrl,
  LlmExpert,
  parseRetryAfter,
  pngDataUrl,
  REVIEW_SYSTEM_PROMPT,
} from '../src/experts/llm.js';
import { readAnswerCache, reviewAll } from '../src/experts/cache.js';

import { startServer, withServer } from './helpers/chat-server.js';

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'rediff-experts-'));
}

const WORDS =
  'there is a an the small large red blue green circle square star in top left right bottom and of , . two three';
const tok = new WordTokenizer(splitWords(WORDS));
const PNG = Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3, 250]);

function request(id: string, draft: string): ReviewRequest {
  return {
    id,
    imagePng: PNG,
    question: 'Describe the image.',
    reference: 'A small red circle in the top left.',
    draft,
  };
}

/** Fast settings: everything in a few ms, two attempts at most. */
function fastExpert(baseUrl: string, extra: Partial<ConstructorParameters<typeof LlmExpert>[0]> = {}): LlmExpert {
  return new LlmExpert({
    baseUrl,
    model: 'test-vlm',
    apiKey: 'test-key',
    concurrency: 2,
    timeoutMs: 2000,
    maxRetries: 1,
    backoffMs: 1,
    ...extra,
  });
}

// ---------------------------------------------------------------------------------------------
// Pure helpers

test('llm helpers: URL, Retry-After, data URL, messages', () => {
  assert.equal(chatCompletionsUrl('http://h:1/v1'), 'http://h:1/v1/chat/completions');
  assert.equal(chatCompletionsUrl('http://h:1/v1/'), 'http://h:1/v1/chat/completions');
  assert.equal(chatCompletionsUrl('https://h/v1/chat/completions'), 'https://h/v1/chat/completions');
  assert.throws(() => chatCompletionsUrl('not a url'), UserError);
  assert.throws(() => chatCompletionsUrl('ftp://h/v1'), UserError);
  assert.equal(parseRetryAfter('0'), 0);
  assert.equal(parseRetryAfter('2'), 2000);
  assert.equal(parseRetryAfter(null), undefined);
  assert.equal(parseRetryAfter('Wed, 21 Oct 2015 07:28:05 GMT', Date.parse('Wed, 21 Oct 2015 07:28:00 GMT')), 5000);
  assert.equal(pngDataUrl(PNG), `data:image/png;base64,${Buffer.from(PNG).toString('base64')}`);
  const m = buildReviewMessages(request('a', 'A red circle.'));
  assert.equal(m[0]!.content, REVIEW_SYSTEM_PROMPT);
  assert.match(REVIEW_SYSTEM_PROMPT, /exactly once/);
  assert.match(REVIEW_SYSTEM_PROMPT, /same number of words/);
  assert.match(REVIEW_SYSTEM_PROMPT, /right/);
  const noImage = buildReviewMessages({ ...request('a', 'x'), imagePng: undefined });
  assert.equal((noImage[1]!.content as unknown[]).length, 1);
  // API key from the environment: REDIFF_EXPERT_API_KEY first, then OPENAI_API_KEY, else none.
  const key = (env: Record<string, string>): unknown =>
    (new LlmExpert({ baseUrl: 'http://h/v1', model: 'm', env }) as unknown as { apiKey?: string }).apiKey;
  assert.equal(key({ REDIFF_EXPERT_API_KEY: 'k1', OPENAI_API_KEY: 'k2' }), 'k1');
  assert.equal(key({ OPENAI_API_KEY: 'k2' }), 'k2');
  assert.equal(key({}), undefined);
  assert.throws(() => new LlmExpert({ baseUrl: 'http://h/v1', model: 'm', concurrency: 0 }), UserError);
});

// ---------------------------------------------------------------------------------------------
// The protocol

test('llm expert: sends model, Authorization and the image data URL; parses a correct answer', async () => {
  const pairs = [{ org: 'red circle', target: 'blue circle' }];
  await withServer(
    () => ({ content: JSON.stringify(pairs) }),
    async (s) => {
      const expert = fastExpert(s.baseUrl, { extraBody: { reasoning_effort: 'low' } });
      assert.equal(expert.name, 'llm:test-vlm');
      const a = await expert.review(request('a', 'There is a red circle in the top left.'));
      assert.deepEqual(a, { kind: 'pairs', pairs, raw: JSON.stringify(pairs) });
      assert.equal(s.received.length, 1);
      const r = s.received[0]!;
      assert.equal(r.body.model, 'test-vlm');
      assert.equal((r.body as unknown as { reasoning_effort: string }).reasoning_effort, 'low');
      assert.equal(r.headers.authorization, 'Bearer test-key');
      assert.equal(r.headers['content-type'], 'application/json');
      assert.equal(r.body.messages[0]!.role, 'system');
      const parts = r.body.messages[1]!.content as Array<{ type: string; text?: string; image_url?: { url: string } }>;
      const image = parts.find((p) => p.type === 'image_url');
      assert.equal(image?.image_url?.url, `data:image/png;base64,${Buffer.from(PNG).toString('base64')}`);
      const text = parts.find((p) => p.type === 'text')!.text!;
      assert.match(text, /Describe the image\./);
      assert.match(text, /A small red circle in the top left\./);
      assert.equal(r.draft, 'There is a red circle in the top left.');
    },
  );
});

test('llm expert: right, fenced JSON, malformed JSON and unequal-length pairs, through reviewAll', async () => {
  const answers: Record<string, string> = {
    'There is a small red circle in the top left.': 'Right.',
    'There is a large red circle in the top left.':
      '```json\n[{"org": "large red circle", "target": "small red circle"}]\n```',
    'There is a small blue circle in the top left.': '[{"org": "small blue circle", "target": "small red circle"',
    'There is a small red square in the top left.':
      '[{"org": "red square", "target": "red circle"}, {"org": "in the top left", "target": "in the top left corner ' +
      'of it"}]',
  };
  const drafts = Object.keys(answers);
  await withServer(
    (r) => ({ content: answers[r.draft] ?? 'unexpected' }),
    async (s) => {
      const dir = tmpDir();
      try {
        const requests = drafts.map((d, i) => request(`r${i}`, d));
        const res = await reviewAll(fastExpert(s.baseUrl), requests, {
          cacheFile: path.join(dir, 'answers.jsonl'),
          tokenizer: tok,
          warn: () => {},
        });
        assert.equal(res.asked, 4);
        assert.deepEqual(res.answers.get('r0'), { kind: 'right', raw: 'Right.' });
        assert.deepEqual((res.answers.get('r1') as Extract<ReviewAnswer, { kind: 'pairs' }>).pairs, [
          { org: 'large red circle', target: 'small red circle' },
        ]);
        const bad = res.answers.get('r2')!;
        assert.equal(bad.kind, 'malformed');
        assert.match((bad as { reason: string }).reason, /not JSON/);
        assert.equal(res.answers.get('r3')!.kind, 'pairs');
        const st = res.stats.toJSON();
        assert.equal(st.right, 1);
        assert.equal(st.withPairs, 2);
        assert.equal(st.malformed, 1);
        assert.equal(st.pairsKept, 2);
        assert.equal(st.dropped['length-mismatch'], 1);
        assert.equal(st.draftsWithKeptPairs, 2);
        // Every answer is in the cache, with its raw text, parsed answer and time.
        const cache = await readAnswerCache(path.join(dir, 'answers.jsonl'));
        assert.equal(cache.entries.size, 4);
        const e2 = cache.entries.get('r2')!;
        assert.equal(e2.raw, answers[drafts[2]!]);
        assert.equal(e2.answer.kind, 'malformed');
        assert.equal(e2.expert, 'llm:test-vlm');
        assert.ok(!Number.isNaN(Date.parse(e2.at)));
        assert.deepEqual(cache.entries.get('r1')!.answer, res.answers.get('r1'));
        // A rerun asks nothing (malformed answers count as answered).
        const again = await reviewAll(fastExpert(s.baseUrl), requests, {
          cacheFile: path.join(dir, 'answers.jsonl'),
          tokenizer: tok,
        });
        assert.equal(again.asked, 0);
        assert.equal(again.fromCache, 4);
        assert.deepEqual(again.stats.toJSON(), res.stats.toJSON());
        assert.equal(s.received.length, 4);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});

test('llm expert: 429 then success honours Retry-After; 5xx retried; 400 not retried', async () => {
  // 429 with Retry-After: 0, while the exponential backoff alone would wait 10 s.
  await withServer(
    (_r, n) =>
      n === 1
        ? { status: 429, headers: { 'retry-after': '0' }, rawBody: '{"error":{"message":"slow down"}}' }
        : { content: 'right' },
    async (s) => {
      const t0 = performance.now();
      const a = await fastExpert(s.baseUrl, { backoffMs: 10_000 }).review(request('a', 'x'));
      assert.deepEqual(a, { kind: 'right', raw: 'right' });
      assert.equal(s.received.length, 2);
      assert.ok(performance.now() - t0 < 2000);
    },
  );
  await withServer(
    (_r, n) => (n === 1 ? { status: 503, rawBody: 'upstream down' } : { content: 'right' }),
    async (s) => {
      assert.equal((await fastExpert(s.baseUrl).review(request('a', 'x'))).kind, 'right');
      assert.equal(s.received.length, 2);
    },
  );
  await withServer(
    () => ({ status: 400, rawBody: '{"error":{"message":"image too large"}}' }),
    async (s) => {
      const a = await fastExpert(s.baseUrl, { maxRetries: 3 }).review(request('a', 'x'));
      assert.equal(a.kind, 'error');
      assert.equal((a as { status?: number }).status, 400);
      assert.match((a as { reason: string }).reason, /HTTP 400: image too large/);
      assert.equal(s.received.length, 1, '4xx other than 429 is not retried');
    },
  );
  // 5xx every time: an error after maxRetries + 1 attempts; a 200 without chat JSON likewise.
  await withServer(
    (_r, n) => (n <= 2 ? { status: 500, rawBody: 'boom' } : { rawBody: 'not json' }),
    async (s) => {
      const a = await fastExpert(s.baseUrl).review(request('a', 'x'));
      assert.equal(a.kind, 'error');
      assert.match((a as { reason: string }).reason, /HTTP 500.*2 attempts/);
      const b = await fastExpert(s.baseUrl).review(request('b', 'x'));
      assert.match((b as { reason: string }).reason, /not JSON/);
      assert.equal(s.received.length, 4);
    },
  );
});

test('llm expert: a key echoed by the endpoint, and URL credentials, never reach the answer cache', async () => {
  const key = 'sk-live-0123456789abcdefKEY';
  const dir = tmpDir();
  const cacheFile = path.join(dir, 'reviews.jsonl');
  // An endpoint that echoes the Authorization value in its 401, as some do.
  await withServer(
    (r) => ({
      status: 401,
      rawBody: JSON.stringify({ error: { message: `Incorrect API key provided: ${String(r.headers.authorization)}` } }),
    }),
    async (s) => {
      const expert = fastExpert(s.baseUrl, { apiKey: key });
      const res = await reviewAll(expert, [request('a', 'x'), request('b', 'y')], { cacheFile, warn: () => undefined });
      assert.equal(s.received[0]!.headers.authorization, `Bearer ${key}`, 'the key is sent');
      const a = res.answers.get('a') as { kind: string; status: number; reason: string; raw?: string };
      assert.equal(a.kind, 'error');
      assert.equal(a.status, 401);
      assert.match(a.reason, /HTTP 401: Incorrect API key provided: Bearer \[REDACTED\]/);
      assert.ok(!JSON.stringify(a).includes('0123456789abcdef'));
    },
  );
  // A base URL with user:password@: sent as Basic authorization, never written.
  await withServer(
    () => ({ status: 403, rawBody: '{"error":{"message":"forbidden"}}' }),
    async (s) => {
      const withCreds = s.baseUrl.replace('http://', 'http://alice:pw-s3cr3t-99@');
      const expert = fastExpert(withCreds, { apiKey: undefined, env: {}, model: 'test-vlm' });
      await reviewAll(expert, [request('c', 'z')], { cacheFile: path.join(dir, 'other.jsonl'), warn: () => undefined });
      assert.equal(s.received.length, 1, 'the request was sent');
      assert.equal(
        s.received[0]!.headers.authorization,
        `Basic ${Buffer.from('alice:pw-s3cr3t-99').toString('base64')}`,
      );
      assert.ok(!fs.readFileSync(path.join(dir, 'other.jsonl'), 'utf8').includes('pw-s3cr3t-99'));
    },
  );
  const text = fs.readFileSync(cacheFile, 'utf8');
  assert.equal(text.trim().split('\n').length, 2);
  assert.ok(!text.includes('0123456789abcdef'), text);
  assert.match(text, /\[REDACTED\]/);
  assert.match(text, /"status":401/);
});

test('llm expert: a timeout is retried; a server that is always too slow ends as an error', async () => {
  await withServer(
    (_r, n) => (n === 1 ? { delayMs: 1500, content: 'right' } : { content: 'right' }),
    async (s) => {
      const a = await fastExpert(s.baseUrl, { timeoutMs: 150 }).review(request('a', 'x'));
      assert.equal(a.kind, 'right');
      assert.equal(s.received.length, 2);
    },
  );
  await withServer(
    () => ({ delayMs: 1500, content: 'right' }),
    async (s) => {
      const t0 = performance.now();
      const a = await fastExpert(s.baseUrl, { timeoutMs: 100, maxRetries: 1 }).review(request('a', 'x'));
      assert.equal(a.kind, 'error');
      assert.match((a as { reason: string }).reason, /timeout after 100 ms \(gave up after 2 attempts\)/);
      assert.equal(s.received.length, 2);
      assert.ok(performance.now() - t0 < 1200);
    },
  );
});

test('llm expert: bounded concurrency', async () => {
  let inFlight = 0;
  let maxInFlight = 0;
  await withServer(
    () => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      setTimeout(() => inFlight--, 40);
      return { delayMs: 40, content: 'right' };
    },
    async (s) => {
      // reviewAll would run 8 at once; the expert's own limit (3) holds.
      const requests = Array.from({ length: 9 }, (_, i) => request(`r${i}`, `draft ${i}`));
      const res = await reviewAll(fastExpert(s.baseUrl, { concurrency: 3 }), requests, { concurrency: 8 });
      assert.equal(res.answers.size, 9);
      assert.equal(s.received.length, 9);
      assert.equal(maxInFlight, 3);
    },
  );
});

test('llm expert: a server dying mid-run, then a resumed run re-asks only the unanswered drafts', async () => {
  const dir = tmpDir();
  const cacheFile = path.join(dir, 'sub', 'answers.jsonl');
  const requests = Array.from({ length: 6 }, (_, i) => request(`r${i}`, `There is a red circle number ${i}.`));
  const idOf = (draft: string): string => requests.find((r) => r.draft === draft)!.id;
  try {
    // Server 1 answers three drafts, then shuts down (the third answer closes the connection).
    const s1 = await startServer((_r, n) => {
      if (n === 3) s1.server.close();
      return n === 3 ? { content: 'right', headers: { connection: 'close' } } : { content: 'right' };
    });
    const progress: number[] = [];
    await assert.rejects(
      reviewAll(fastExpert(s1.baseUrl, { concurrency: 1 }), requests, {
        cacheFile,
        concurrency: 1,
        maxConsecutiveErrors: 2,
        onProgress: (p) => progress.push(p.done),
      }),
      (err: unknown) =>
        err instanceof UserError &&
        /failed 2 times in a row.*(ECONNREFUSED|network error).*rerun to resume/.test(err.message),
    );
    await s1.close();
    assert.deepEqual(
      s1.received.map((r) => idOf(r.draft)),
      ['r0', 'r1', 'r2'],
    );
    assert.deepEqual(progress, [0, 1, 2, 3, 4, 5]);
    const after1 = await readAnswerCache(cacheFile);
    assert.deepEqual([...after1.entries.keys()], ['r0', 'r1', 'r2', 'r3', 'r4']);
    assert.equal(after1.entries.get('r3')!.answer.kind, 'error', 'errors are written for the record');

    // Server 2: the rerun asks for r3, r4 (errors) and r5 (never asked), nothing else.
    const s2 = await startServer(() => ({ content: '[{"org": "red circle", "target": "blue circle"}]' }));
    try {
      const res = await reviewAll(fastExpert(s2.baseUrl, { concurrency: 1 }), requests, { cacheFile, concurrency: 1 });
      assert.deepEqual(
        s2.received.map((r) => idOf(r.draft)),
        ['r3', 'r4', 'r5'],
      );
      assert.equal(res.asked, 3);
      assert.equal(res.fromCache, 3);
      assert.deepEqual(
        requests.map((r) => res.answers.get(r.id)!.kind),
        ['right', 'right', 'right', 'pairs', 'pairs', 'pairs'],
      );
      assert.equal(res.stats.right, 3);
      assert.equal(res.stats.errors, 0);
      const lines = fs.readFileSync(cacheFile, 'utf8').trimEnd().split('\n');
      assert.equal(lines.length, 8);
      // A third run has nothing left to ask.
      const res3 = await reviewAll(fastExpert(s2.baseUrl), requests, { cacheFile });
      assert.equal(res3.asked, 0);
      assert.equal(s2.received.length, 3);
    } finally {
      await s2.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------------
// The cache and the runner, with an in-process expert

class FakeExpert implements Expert {
  readonly asked: string[] = [];
  constructor(
    readonly name: string,
    private readonly answer: (req: ReviewRequest) => ReviewAnswer,
    private readonly delayMs = 0,
  ) {}
  async review(req: ReviewRequest, signal?: AbortSignal): Promise<ReviewAnswer> {
    this.asked.push(req.id);
    if (this.delayMs > 0) await delay(this.delayMs, undefined, { signal });
    return this.answer(req);
  }
}

const RIGHT = (): ReviewAnswer => ({ kind: 'right', raw: 'right' });

test('reviewAll: Ctrl-C (abort) loses nothing and a rerun asks only for the rest', async () => {
  const dir = tmpDir();
  const cacheFile = path.join(dir, 'answers.jsonl');
  const requests = Array.from({ length: 10 }, (_, i) => request(`r${i}`, `draft ${i}`));
  try {
    const ctrl = new AbortController();
    const first = new FakeExpert('fake', RIGHT, 15);
    await assert.rejects(
      reviewAll(first, requests, {
        cacheFile,
        concurrency: 2,
        signal: ctrl.signal,
        onProgress: (p) => p.done >= 3 && ctrl.abort(),
      }),
      (err: unknown) => (err as Error).name === 'AbortError',
    );
    const cached = await readAnswerCache(cacheFile);
    assert.ok(cached.entries.size >= 3 && cached.entries.size < 10, String(cached.entries.size));
    assert.ok(first.asked.length < 10);
    const second = new FakeExpert('fake', RIGHT);
    const res = await reviewAll(second, requests, { cacheFile });
    assert.deepEqual(new Set(second.asked), new Set(requests.map((r) => r.id).filter((id) => !cached.entries.has(id))));
    assert.equal(second.asked.length + cached.entries.size, 10);
    assert.equal(res.answers.size, 10);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('reviewAll: a truncated last line is ignored with a warning and cut before appending', async () => {
  const dir = tmpDir();
  const cacheFile = path.join(dir, 'answers.jsonl');
  const requests = Array.from({ length: 3 }, (_, i) => request(`r${i}`, `draft ${i}`));
  try {
    const line = (id: string, draft: string): string =>
      JSON.stringify({
        id,
        expert: 'fake',
        at: '2025-01-01T00:00:00.000Z',
        draft,
        raw: 'right',
        answer: { kind: 'right' },
      });
    fs.writeFileSync(cacheFile, line('r0', 'draft 0') + '\n' + line('r1', 'draft 1').slice(0, 40));
    const warnings: string[] = [];
    const expert = new FakeExpert('fake', RIGHT);
    const res = await reviewAll(expert, requests, { cacheFile, warn: (m) => warnings.push(m) });
    assert.deepEqual(expert.asked, ['r1', 'r2']);
    assert.equal(res.fromCache, 1);
    assert.deepEqual(res.answers.get('r0'), { kind: 'right', raw: 'right' });
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /truncated last line/);
    const after = await readAnswerCache(cacheFile);
    assert.equal(after.truncatedTail, false);
    assert.equal(after.badLines, 0);
    assert.equal(after.entries.size, 3);

    // A last line that is complete but lacks its newline is kept; the next line starts on its own.
    fs.writeFileSync(cacheFile, line('r0', 'draft 0'));
    const e2 = new FakeExpert('fake', RIGHT);
    await reviewAll(e2, requests, { cacheFile, warn: () => {} });
    assert.deepEqual(e2.asked, ['r1', 'r2']);
    assert.equal((await readAnswerCache(cacheFile)).badLines, 0);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("reviewAll: stale drafts are asked again; another expert's cache and duplicate ids are refused", async () => {
  const dir = tmpDir();
  const cacheFile = path.join(dir, 'answers.jsonl');
  try {
    const e1 = new FakeExpert('fake', RIGHT);
    await reviewAll(e1, [request('a', 'draft a'), request('b', 'draft b')], { cacheFile });
    const warnings: string[] = [];
    const e2 = new FakeExpert('fake', RIGHT);
    await reviewAll(e2, [request('a', 'draft a'), request('b', 'a new draft b')], {
      cacheFile,
      warn: (m) => warnings.push(m),
    });
    assert.deepEqual(e2.asked, ['b']);
    assert.match(warnings.join('\n'), /1 cached answer\(s\) are for a different draft/);
    await assert.rejects(
      reviewAll(new FakeExpert('other', RIGHT), [request('a', 'draft a')], { cacheFile }),
      /holds answers from expert "fake", not "other"/,
    );
    await assert.rejects(reviewAll(e1, [request('a', 'x'), request('a', 'y')]), /duplicate id "a"/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('reviewAll: an expert that throws gives an error answer; without a cache file nothing is written', async () => {
  const expert = new FakeExpert('fake', (req) => {
    if (req.id === 'b') throw new Error('scene missing');
    return RIGHT();
  });
  const res = await reviewAll(expert, [request('a', 'x'), request('b', 'y'), request('c', 'z')], { concurrency: 1 });
  assert.equal(res.answers.get('b')!.kind, 'error');
  assert.match((res.answers.get('b') as { reason: string }).reason, /scene missing/);
  assert.equal(res.stats.errors, 1);
  assert.equal(res.stats.right, 2);
});
