/**
 * The HTTP API over real HTTP: captions (JSON and multipart), every error case, one streamed
 * request read event by event, a full queue, client disconnects, concurrent requests.
 * Models are tiny and randomly initialised: the API does not care about caption quality.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { BENCHMARK_PROMPT } from '../src/benchmark/captioner.js';
import { renderScenePng } from '../src/benchmark/render.js';
import { generateScene } from '../src/benchmark/scene.js';
import { decodeImageBuffer } from '../src/data/image.js';
import { type ImageDecoder, type RediffServer, createServer } from '../src/server/app.js';
import { connect, pngDeclaring, trickle, whenClosed } from './helpers/hostile.js';
import { makeTinyModels } from './helpers/models.js';
import { traceFrames } from '../src/sampling/trace.js';
import { MASK_ID } from '../src/tokenizer/tokenizer.js';
import { Rng } from '../src/util/rng.js';
import { type SseEvent, readSse } from '../src/web/sse.js';

const MAX_UPLOAD = 64 * 1024;

const makeModels = (): ReturnType<typeof makeTinyModels> => makeTinyModels('rediff-server-');

const scenePng = (seed: number): Buffer => renderScenePng(generateScene(new Rng(seed), { seed })).png;

let models: { name: string; dir: string }[];
let fast: RediffServer;
let fastUrl: string;
/** Slow motion (25 ms before every forward pass), one job at a time, one waiting. */
let slow: RediffServer;
let slowUrl: string;

/**
 * Small limits, to meet hostile clients in seconds: one decoder, a queue of 3 places, short
 * timeouts, and a decoder the tests can hold open (`held`).
 */
let guarded: RediffServer;
let guardedUrl: string;
let held: { promise: Promise<void>; open: () => void } | null = null;
let decodesStarted = 0;
const heldDecoder: ImageDecoder = async (...args) => {
  decodesStarted++;
  if (held) await held.promise;
  return decodeImageBuffer(...args);
};
function holdDecodes(): void {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  held = { promise, open };
}
function releaseDecodes(): void {
  held?.open();
  held = null;
}

before(async () => {
  models = await makeModels();
  [fast, slow, guarded] = await Promise.all([
    createServer({ models, maxUploadBytes: MAX_UPLOAD, queueLimit: 16, concurrency: 2 }),
    createServer({ models, maxUploadBytes: MAX_UPLOAD, queueLimit: 1, concurrency: 1, stepDelayMs: 25, web: 'none' }),
    createServer({
      models,
      maxUploadBytes: MAX_UPLOAD,
      queueLimit: 2,
      concurrency: 1,
      decodeConcurrency: 1,
      web: 'none',
      decoder: heldDecoder,
      requestTimeoutMs: 800,
      idleTimeoutMs: 2000,
      keepAliveTimeoutMs: 300,
    }),
  ]);
  fastUrl = await fast.listen(0);
  slowUrl = await slow.listen(0);
  guardedUrl = await guarded.listen(0);
});

after(async () => {
  releaseDecodes();
  await Promise.all([fast?.close(), slow?.close(), guarded?.close()]);
});

function postJson(base: string, body: unknown, init: RequestInit = {}): Promise<Response> {
  return fetch(`${base}/v1/captions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    ...init,
  });
}

function postForm(
  base: string,
  image: Uint8Array | null,
  fields: Record<string, string>,
  init: RequestInit = {},
): Promise<Response> {
  const form = new FormData();
  if (image) form.set('image', new Blob([new Uint8Array(image)], { type: 'image/png' }), 'scene.png');
  for (const [k, v] of Object.entries(fields)) form.set(k, v);
  return fetch(`${base}/v1/captions`, { method: 'POST', body: form, ...init });
}

interface Caption {
  model: string;
  sampler: string;
  caption: string;
  tokens: number[];
  steps: number;
  max_steps: number;
  tokens_per_step: number;
  ms: number;
}

async function queue(base: string): Promise<{
  running: number;
  waiting: number;
  decoding: number;
  decode_waiting: number;
  completed: number;
  cancelled: number;
  refused: number;
}> {
  return ((await (await fetch(`${base}/v1/models`)).json()) as { queue: never }).queue;
}

async function waitFor<T>(what: string, fn: () => Promise<T | null | false>, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('captions', () => {
  test('GET /v1/models lists the loaded models, samplers and limits', async () => {
    const res = await fetch(`${fastUrl}/v1/models`);
    assert.equal(res.status, 200);
    const body = (await res.json()) as {
      models: {
        name: string;
        default_sampler: string;
        response_length: number;
        tokens_per_step: number[];
        stage: string;
        prompt: string;
      }[];
      samplers: string[];
      limits: { max_upload_bytes: number };
    };
    assert.deepEqual(
      body.models.map((m) => m.name),
      ['baseline', 'rediff'],
    );
    assert.deepEqual(
      body.models.map((m) => m.default_sampler),
      ['llada', 'rediff'],
    );
    assert.equal(body.models[1]!.stage, 'revision');
    assert.equal(body.models[1]!.prompt, BENCHMARK_PROMPT);
    assert.ok(body.models[0]!.tokens_per_step.includes(8));
    assert.deepEqual(body.samplers, ['llada', 'rediff', 'threshold', 'threshold-rediff']);
    assert.equal(body.limits.max_upload_bytes, MAX_UPLOAD);
  });

  test('GET /v1/models gives model names and sizes, not where the checkpoints live', async () => {
    const text = await (await fetch(`${fastUrl}/v1/models`)).text();
    for (const m of models) {
      assert.ok(!text.includes(m.dir), `${m.dir} in ${text.slice(0, 300)}`);
      assert.ok(!text.includes(path.dirname(m.dir)), 'nor their folder');
    }
    const body = JSON.parse(text) as { models: { name: string; parameters: number; weights_bytes: number }[] };
    for (const m of body.models) {
      assert.ok(m.parameters > 0);
      assert.equal(m.weights_bytes, 4 * m.parameters);
    }
  });

  test('JSON (base64) and multipart uploads give the same caption, with steps and time', async () => {
    const png = scenePng(7);
    const a = await postJson(fastUrl, { image: png.toString('base64'), tokens_per_step: 4 });
    assert.equal(a.status, 200);
    const ja = (await a.json()) as Caption;
    assert.equal(ja.model, 'rediff');
    assert.equal(ja.sampler, 'rediff');
    assert.equal(typeof ja.caption, 'string');
    assert.ok(ja.caption.length > 0);
    assert.equal(ja.max_steps, 24);
    assert.equal(ja.tokens_per_step, 4);
    assert.ok(ja.steps >= 1 && ja.steps <= 24);
    assert.ok(ja.ms > 0);
    assert.equal(ja.tokens.length, 96);
    assert.ok(!ja.tokens.includes(MASK_ID));

    const b = await postForm(fastUrl, png, { tokens_per_step: '4' });
    assert.equal(b.status, 200);
    const jb = (await b.json()) as Caption;
    assert.equal(jb.caption, ja.caption);

    const dataUrl = await postJson(fastUrl, {
      image: `data:image/png;base64,${png.toString('base64')}`,
      steps: 24,
      model: 'rediff',
    });
    assert.equal(((await dataUrl.json()) as Caption).caption, ja.caption);
  });

  test('model, sampler, steps and temperature are honoured', async () => {
    const png = scenePng(8).toString('base64');
    const base = (await (
      await postJson(fastUrl, { image: png, model: 'baseline', tokens_per_step: 8 })
    ).json()) as Caption;
    assert.equal(base.model, 'baseline');
    assert.equal(base.sampler, 'llada');
    assert.equal(base.max_steps, 12);
    const thr = (await (
      await postJson(fastUrl, { image: png, model: 'baseline', sampler: 'threshold', steps: 96 })
    ).json()) as Caption;
    assert.equal(thr.sampler, 'threshold');
    const t1 = (await (await postJson(fastUrl, { image: png, temperature: 1.5, seed: 3 })).json()) as Caption;
    const t2 = (await (await postJson(fastUrl, { image: png, temperature: 1.5, seed: 3 })).json()) as Caption;
    assert.equal(t1.caption, t2.caption, 'same seed, same sample');
  });
});

describe('errors', () => {
  const png = scenePng(9);
  const b64 = png.toString('base64');

  async function expectError(res: Response, status: number, field: string | null, pattern: RegExp): Promise<void> {
    const text = await res.text();
    assert.equal(res.status, status, text);
    const body = JSON.parse(text) as { error: string; field?: string };
    assert.match(body.error, pattern);
    if (field) assert.equal(body.field, field);
  }

  test('an upload over the size limit is 413', async () => {
    const big = new Uint8Array(MAX_UPLOAD + 1000);
    await expectError(await postForm(fastUrl, big, {}), 413, 'image', /too large.*65536 bytes/);
    // A base64 image over the limit but a body under the JSON body limit...
    await expectError(
      await postJson(fastUrl, { image: Buffer.from(big).toString('base64') }),
      413,
      'image',
      /too large/,
    );
    // ... and a body over it.
    await expectError(await postJson(fastUrl, { image: 'A'.repeat(MAX_UPLOAD * 3) }), 413, 'image', /too large/);
  });

  test('an image that does not decode is 400 with a message', async () => {
    await expectError(
      await postForm(fastUrl, new TextEncoder().encode('this is not a picture'), {}),
      400,
      'image',
      /not a readable image: scene\.png/,
    );
    await expectError(
      await postJson(fastUrl, { image: png.subarray(0, 60).toString('base64') }),
      400,
      'image',
      /not a readable image/,
    );
    await expectError(await postJson(fastUrl, { image: 'not base64!' }), 400, 'image', /not valid base64/);
    await expectError(await postJson(fastUrl, { tokens_per_step: 4 }), 400, 'image', /image is missing/);
    await expectError(await postForm(fastUrl, null, { tokens_per_step: '4' }), 400, 'image', /image is missing/);
  });

  test('bad sampler, tokens per step, steps and other fields are 400 naming the field', async () => {
    await expectError(
      await postJson(fastUrl, { image: b64, sampler: 'greedy' }),
      400,
      'sampler',
      /unknown sampler "greedy".*llada, rediff/,
    );
    await expectError(await postForm(fastUrl, png, { sampler: 'greedy' }), 400, 'sampler', /sampler/);
    await expectError(
      await postJson(fastUrl, { image: b64, tokens_per_step: 5 }),
      400,
      'tokens_per_step',
      /tokens_per_step 5 must divide the generation length 96/,
    );
    await expectError(
      await postJson(fastUrl, { image: b64, tokens_per_step: 0 }),
      400,
      'tokens_per_step',
      /tokens_per_step must be a whole number from 1 to 96/,
    );
    await expectError(
      await postForm(fastUrl, png, { tokens_per_step: 'four' }),
      400,
      'tokens_per_step',
      /tokens_per_step/,
    );
    await expectError(
      await postJson(fastUrl, { image: b64, tokens_per_step: 2.5 }),
      400,
      'tokens_per_step',
      /whole number/,
    );
    await expectError(
      await postJson(fastUrl, { image: b64, steps: 97 }),
      400,
      'steps',
      /steps must be a whole number from 1 to 96/,
    );
    await expectError(
      await postJson(fastUrl, { image: b64, steps: 24, tokens_per_step: 4 }),
      400,
      'tokens_per_step',
      /either tokens_per_step or steps/,
    );
    await expectError(await postJson(fastUrl, { image: b64, temperature: -1 }), 400, 'temperature', /temperature/);
    await expectError(
      await postJson(fastUrl, { image: b64, model: 'gpt' }),
      400,
      'model',
      /unknown model "gpt".*baseline, rediff/,
    );
    await expectError(
      await postJson(fastUrl, { image: b64, stream: 'maybe' }),
      400,
      'stream',
      /stream must be true or false/,
    );
    await expectError(
      await postJson(fastUrl, { image: b64, prompt: 'describe the image in detail . describe the image .' }),
      400,
      'prompt',
      /prompt has 10 tokens; model rediff takes at most 8/,
    );
    // Words outside the vocabulary are named, not silently read as [UNK], unless allow_unk.
    await expectError(
      await postJson(fastUrl, { image: b64, prompt: 'Describe the photo in great detail.' }),
      400,
      'prompt',
      new RegExp(
        String.raw`prompt has 2 word\(s\) outside model rediff's vocabulary: ` +
          String.raw`"photo", "great" \(rephrase it, or send allow_unk=true`,
      ),
    );
    await expectError(await postForm(fastUrl, png, { prompt: 'describe the llama' }), 400, 'prompt', /"llama"/);
    await expectError(
      await postJson(fastUrl, { image: b64, prompt: 'describe the llama', allow_unk: 'perhaps' }),
      400,
      'allow_unk',
      /allow_unk must be true or false/,
    );
    const unk = await postJson(fastUrl, {
      image: b64,
      prompt: 'Describe the photo in great detail.',
      allow_unk: true,
      tokens_per_step: 8,
    });
    assert.equal(unk.status, 200, 'allow_unk reads them as [UNK]');
    assert.equal(((await unk.json()) as Caption).tokens.length, 96);
    assert.equal(
      (await postForm(fastUrl, png, { prompt: 'describe the llama', allow_unk: 'true', tokens_per_step: '8' })).status,
      200,
    );
    await expectError(
      await postJson(fastUrl, { image: b64, 'tokens-per-step': 4 }),
      400,
      'tokens-per-step',
      /unknown field "tokens-per-step"/,
    );
  });

  test('a body that is not JSON or multipart is rejected', async () => {
    const bad = await fetch(`${fastUrl}/v1/captions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"image": ',
    });
    assert.equal(bad.status, 400);
    assert.match(((await bad.json()) as { error: string }).error, /JSON/);
    const text = await fetch(`${fastUrl}/v1/captions`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: 'hello',
    });
    assert.equal(text.status, 415);
    const nf = await fetch(`${fastUrl}/v1/nothing`);
    assert.equal(nf.status, 404);
  });

  test('names of Object.prototype members are unknown files and fields, never a 500', async () => {
    for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf', 'isPrototypeOf']) {
      for (const url of [
        `/ort/${name}`,
        `/v1/models/${name}/tokenizer.json`,
        `/v1/models/${name}/onnx/model.json`,
        `/v1/models/rediff/onnx/${name}`,
      ]) {
        const res = await fetch(`${fastUrl}${url}`);
        assert.equal(res.status, 404, `${url}: ${await res.text()}`);
      }
      // @fastify/multipart itself refuses these field names.
      await expectError(await postForm(fastUrl, png, { [name]: '1' }), 400, null, /not allowed as field name/);
      if (name !== '__proto__')
        await expectError(await postJson(fastUrl, { image: b64, [name]: 1 }), 400, name, /unknown field/);
    }
  });
});

describe('streaming, queue and disconnects', () => {
  test('a streamed request: start, one event per step with committed and refined tokens, then done', async () => {
    const png = scenePng(11);
    const plain = (await (
      await postJson(slowUrl, { image: png.toString('base64'), tokens_per_step: 4 })
    ).json()) as Caption;

    const res = await postForm(slowUrl, png, { tokens_per_step: '4', stream: 'true' });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
    const events: (SseEvent & { at: number })[] = [];
    for await (const ev of readSse(res.body!)) events.push({ ...ev, at: performance.now() });

    assert.equal(events[0]!.event, 'start');
    const start = JSON.parse(events[0]!.data) as { model: string; max_steps: number; length: number };
    assert.equal(start.model, 'rediff');
    assert.equal(start.max_steps, 24);
    const steps = events.slice(1, -1);
    const last = events[events.length - 1]!;
    assert.equal(last.event, 'done');
    const done = JSON.parse(last.data) as Caption;
    assert.equal(steps.length, done.steps);
    assert.equal(done.caption, plain.caption, 'streaming does not change the result');

    // Each step's commits fill masks, its refinements rewrite decoded tokens, and replaying
    // them (as the CLI's trace does) reproduces every step's state.
    const parsed = steps.map((ev, i) => {
      assert.equal(ev.event, 'step');
      const d = JSON.parse(ev.data) as {
        step: number;
        committed: { pos: number; token: number; text: string }[];
        refined: { pos: number; from: number; to: number; from_text: string; to_text: string }[];
        tokens: number[];
        caption: string;
      };
      assert.equal(d.step, i + 1);
      assert.ok(d.committed.length >= 1);
      const before =
        i === 0
          ? new Array<number>(start.length).fill(MASK_ID)
          : (JSON.parse(steps[i - 1]!.data) as { tokens: number[] }).tokens;
      for (const c of d.committed) {
        assert.equal(before[c.pos], MASK_ID, 'commits fill masks');
        assert.equal(typeof c.text, 'string');
      }
      for (const r of d.refined) {
        assert.notEqual(r.from, MASK_ID);
        assert.notEqual(r.from, r.to);
        assert.equal(typeof r.to_text, 'string');
      }
      return d;
    });
    const frames = traceFrames(
      parsed.map((d) => ({
        step: d.step - 1,
        committed: d.committed.map(({ pos, token }) => ({ pos, token })),
        refined: d.refined.map(({ pos, from, to }) => ({ pos, from, to })),
      })),
      start.length,
    );
    frames.forEach((f, i) => assert.deepEqual(parsed[i]!.tokens, f.tokens, `state after step ${i + 1}`));
    assert.deepEqual(done.tokens, parsed[parsed.length - 1]!.tokens);
    assert.ok(
      parsed.some((d) => d.refined.length > 0),
      'the refining sampler rewrote tokens',
    );
    // Events arrive as the steps happen (25 ms apart), not in one piece at the end.
    assert.ok(
      last.at - steps[0]!.at >= 10 * (steps.length - 2),
      `events spread over ${Math.round(last.at - steps[0]!.at)} ms`,
    );
  });

  test('a full queue answers 503 with Retry-After', async () => {
    const png = scenePng(12);
    const runningCtl = new AbortController();
    const running = await postForm(
      slowUrl,
      png,
      { tokens_per_step: '1', stream: 'true' },
      { signal: runningCtl.signal },
    );
    const it = readSse(running.body!);
    assert.equal((await it.next()).value?.event, 'start');
    const waiting = postJson(slowUrl, { image: png.toString('base64'), tokens_per_step: 8 });
    await waitFor('a waiting job', async () => (await queue(slowUrl)).waiting === 1);
    const refused = await postJson(slowUrl, { image: png.toString('base64') });
    assert.equal(refused.status, 503);
    const retry = Number(refused.headers.get('retry-after'));
    assert.ok(Number.isInteger(retry) && retry >= 1, `Retry-After ${refused.headers.get('retry-after')}`);
    assert.match(((await refused.json()) as { error: string }).error, /queue is full/);
    // The place in the queue is taken before the image is decoded: an image that would not
    // even decode is refused for the full queue, not decoded first.
    const undecodable = await postJson(slowUrl, { image: png.subarray(0, 100).toString('base64') });
    assert.equal(undecodable.status, 503, await undecodable.text());
    const refusedStream = await postForm(slowUrl, png, { stream: 'true' });
    assert.equal(refusedStream.status, 503);
    await refusedStream.body?.cancel();
    runningCtl.abort();
    assert.equal((await waiting).status, 200, 'the waiting job runs once the first is gone');
  });

  test('a client that disconnects stops its job (streaming and not)', async () => {
    const png = scenePng(13);
    const before = await queue(slowUrl);
    const ctl = new AbortController();
    const res = await postForm(slowUrl, png, { tokens_per_step: '1', stream: 'true' }, { signal: ctl.signal });
    const it = readSse(res.body!);
    assert.equal((await it.next()).value?.event, 'start');
    assert.equal((await it.next()).value?.event, 'step');
    const t0 = performance.now();
    ctl.abort();
    const q = await waitFor('the job to stop', async () => {
      const q = await queue(slowUrl);
      return q.running === 0 && q.cancelled > before.cancelled ? q : null;
    });
    // 96 steps at 25 ms would take 2.4 s; it stopped within a step or two.
    assert.ok(performance.now() - t0 < 1500);
    assert.equal(q.completed, before.completed);

    const ctl2 = new AbortController();
    const pending = postJson(slowUrl, { image: png.toString('base64'), tokens_per_step: 1 }, { signal: ctl2.signal });
    await waitFor('the job to start', async () => (await queue(slowUrl)).running === 1);
    ctl2.abort();
    await assert.rejects(pending);
    await waitFor('the second job to stop', async () => {
      const q2 = await queue(slowUrl);
      return q2.running === 0 && q2.cancelled === q.cancelled + 1;
    });
    assert.equal((await queue(slowUrl)).completed, before.completed);
  });

  test('concurrent requests are all answered, each with its own result, and the event loop stays free', async () => {
    const seeds = [21, 22, 23, 24];
    const jobs = seeds.flatMap((s, i) =>
      (['baseline', 'rediff'] as const).map((model, k) => ({
        seed: s,
        model,
        multipart: (i + k) % 2 === 0,
        stream: i === 1,
      })),
    );
    const run = async (j: (typeof jobs)[number]): Promise<string> => {
      const png = scenePng(j.seed);
      const res = j.multipart
        ? await postForm(fastUrl, png, { model: j.model, tokens_per_step: '2', stream: String(j.stream) })
        : await postJson(fastUrl, {
            image: png.toString('base64'),
            model: j.model,
            tokens_per_step: 2,
            stream: j.stream,
          });
      assert.equal(res.status, 200);
      if (!j.stream) return ((await res.json()) as Caption).caption;
      let caption = '';
      for await (const ev of readSse(res.body!))
        if (ev.event === 'done') caption = (JSON.parse(ev.data) as Caption).caption;
      return caption;
    };
    const health: number[] = [];
    let stop = false;
    const probe = (async () => {
      while (!stop) {
        const t = performance.now();
        assert.equal((await fetch(`${fastUrl}/healthz`)).status, 200);
        health.push(performance.now() - t);
        await new Promise((r) => setTimeout(r, 15));
      }
    })();
    const together = await Promise.all(jobs.map(run));
    stop = true;
    await probe;
    const alone: string[] = [];
    for (const j of jobs) alone.push(await run({ ...j, stream: false }));
    assert.deepEqual(together, alone, 'no result went to the wrong request');
    assert.ok(health.length >= 2);
    assert.ok(Math.max(...health) < 500, `health checks answered in ${health.map(Math.round).join(', ')} ms`);
  });
});

describe('files for the page and the in-browser mode', () => {
  test('the page, its script, onnxruntime-web and the exported models are served', async () => {
    const page = await fetch(`${fastUrl}/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);
    assert.match(await page.text(), /<script type="module" src="\/app.js">/);
    const js = await fetch(`${fastUrl}/app.js`);
    assert.equal(js.status, 200);
    assert.ok((await js.text()).length > 10_000);
    const ort = await fetch(`${fastUrl}/ort/ort-wasm-simd-threaded.wasm`);
    assert.equal(ort.status, 200);
    assert.equal(ort.headers.get('content-type'), 'application/wasm');
    await ort.arrayBuffer();
    assert.equal((await fetch(`${fastUrl}/ort/..%2Fpackage.json`)).status, 404);
    const manifest = (await (await fetch(`${fastUrl}/v1/models/rediff/onnx/model.json`)).json()) as {
      promptIds: number[];
      config: { responseLength: number };
    };
    assert.equal(manifest.config.responseLength, 96);
    assert.ok(manifest.promptIds.length > 0);
    const lang = await fetch(`${fastUrl}/v1/models/rediff/onnx/language.onnx`);
    assert.equal(lang.status, 200);
    assert.ok((await lang.arrayBuffer()).byteLength > 100_000);
    assert.equal((await fetch(`${fastUrl}/v1/models/nope/onnx/vision.onnx`)).status, 404);
    const tok = (await (await fetch(`${fastUrl}/v1/models/baseline/tokenizer.json`)).json()) as { kind: string };
    assert.equal(tok.kind, 'word');
  });
});

describe('hostile uploads and slow clients', () => {
  const png = scenePng(31);

  test('an image whose header declares too many pixels is refused (413) before it is decoded', async () => {
    // 2 rows of a 16383 x 16383 16-bit RGBA PNG: a few kB that claim 268 M pixels (2 GB decoded).
    const huge = pngDeclaring(16383, 16383);
    assert.ok(huge.length < MAX_UPLOAD);
    const t0 = performance.now();
    const res = await postForm(fastUrl, huge, {});
    const body = (await res.json()) as { error: string; field: string };
    assert.equal(res.status, 413, JSON.stringify(body));
    assert.equal(body.field, 'image');
    assert.match(body.error, /image too large: scene\.png is 16383 x 16383 pixels; at most 25000000/);
    assert.ok(performance.now() - t0 < 2000);
    const limits = ((await (await fetch(`${fastUrl}/v1/models`)).json()) as { limits: { max_pixels: number } }).limits;
    assert.equal(limits.max_pixels, 25_000_000);
  });

  test('decodes run one at a time in their queue place; a client gone while decoding starts no job', async () => {
    const before = await queue(guardedUrl);
    const started = decodesStarted;
    holdDecodes();
    const a = new AbortController();
    const b = new AbortController();
    const ra = postForm(guardedUrl, png, {}, { signal: a.signal }).catch((e: Error) => e);
    await waitFor('A in the decoder', async () => (await queue(guardedUrl)).decoding === 1);
    const rb = postForm(guardedUrl, png, {}, { signal: b.signal }).catch((e: Error) => e);
    const rc = postForm(guardedUrl, png, { tokens_per_step: '8' });
    await waitFor('B and C waiting for the decoder', async () => (await queue(guardedUrl)).decode_waiting === 2);
    assert.equal(decodesStarted - started, 1, 'one decode at a time');
    // Three places (2 waiting + 1 running), all taken by requests still decoding: the next is 503.
    const d = await postForm(guardedUrl, png, {});
    assert.equal(d.status, 503, await d.text());
    assert.ok(Number(d.headers.get('retry-after')) >= 1);

    a.abort(); // while its image is being decoded
    b.abort(); // while it waits for the decoder
    await waitFor('A and B cancelled', async () => (await queue(guardedUrl)).cancelled === before.cancelled + 2);
    releaseDecodes();
    const c = await rc;
    assert.equal(c.status, 200, await c.text());
    assert.ok((await ra) instanceof Error);
    assert.ok((await rb) instanceof Error);
    const q = await queue(guardedUrl);
    assert.equal(q.completed, before.completed + 1, 'only C ran');
    assert.deepEqual([q.running, q.waiting, q.decoding, q.decode_waiting], [0, 0, 0, 0], 'every place given back');
    assert.equal(decodesStarted - started, 2, 'B was never decoded');
    assert.equal((await postJson(guardedUrl, { image: png.toString('base64'), tokens_per_step: 8 })).status, 200);
  });

  test('a client that never finishes sending its request is cut off (408) after the request timeout', async () => {
    const clients = await Promise.all(
      Array.from({ length: 24 }, async (_, i) => {
        const sock = await connect(guardedUrl);
        if (i % 2 === 0) {
          sock.write(
            `POST /v1/captions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ` +
              `100000\r\n\r\n{"image": "`,
          );
        } else {
          const boundary = 'xyz';
          sock.write(
            `POST /v1/captions HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; ` +
              `boundary=${boundary}\r\nContent-Length: 100000\r\n\r\n`,
          );
          sock.write(
            `--${boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: ` +
              `image/png\r\n\r\n`,
          );
          sock.write(png.subarray(0, 200));
        }
        // One byte every 100 ms: never idle, never done.
        trickle(sock, 100);
        return whenClosed(sock, 4000);
      }),
    );
    // Meanwhile an ordinary request is answered.
    assert.equal((await postJson(guardedUrl, { image: png.toString('base64'), tokens_per_step: 8 })).status, 200);
    const closed = await Promise.all(clients);
    for (const c of closed) {
      assert.ok(c, 'closed by the server');
      assert.ok(c.ms >= 600 && c.ms < 3000, `closed after ${Math.round(c.ms)} ms`);
    }
    assert.ok(
      closed.some((c) => /^HTTP\/1\.1 408/.test(c!.data)),
      closed.map((c) => c!.data.slice(0, 20)).join(' | '),
    );
    const q = await queue(guardedUrl);
    assert.deepEqual([q.running, q.waiting, q.decoding, q.decode_waiting], [0, 0, 0, 0]);
  });

  test('a silent connection and an idle keep-alive one are closed', async () => {
    const silent = whenClosed(await connect(guardedUrl), 5000);
    const ka = await connect(guardedUrl);
    const kaClosed = whenClosed(ka, 5000);
    ka.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n');
    const k = await kaClosed;
    assert.ok(k, 'keep-alive connection closed');
    assert.match(k.data, /^HTTP\/1\.1 200/);
    assert.ok(k.ms < 1500, `keep-alive connection closed after ${Math.round(k.ms)} ms`);
    const s = await silent;
    assert.ok(s, 'silent connection closed');
    assert.ok(s.ms < 3000, `silent connection closed after ${Math.round(s.ms)} ms`);
  });
});
