import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type DenoisingModel, batchBucket, sample, samplerOptions, transferSchedule } from '../src/sampling/sampler.js';
import { EOS_ID, MASK_ID } from '../src/tokenizer/tokenizer.js';

const L = 12;
const V = 20;

/** A fake model whose logits come from a function of (row, position, current tokens, call number). */
function fakeModel(
  pick: (pos: number, x: ArrayLike<number>, call: number) => { token: number; conf: number },
): DenoisingModel & { calls: number } {
  const m = {
    calls: 0,
    config: { responseLength: L, vocabSize: V },
    async encodeImages(p: readonly Float32Array[]) {
      return new Float32Array(p.length);
    },
    async logits(_e: Float32Array, rows: { prompt: readonly number[]; response: ArrayLike<number> }[]) {
      const out = new Float32Array(rows.length * L * V).fill(0);
      rows.forEach((r, b) => {
        for (let i = 0; i < L; i++) {
          const { token, conf } = pick(i, r.response, m.calls);
          // Softmax prob of `token` = conf when the other V-1 logits are 0.
          out[(b * L + i) * V + token] = Math.log((conf * (V - 1)) / (1 - conf));
        }
      });
      m.calls++;
      return out;
    },
  };
  return m;
}

const TARGET = [5, 6, 7, 8, 9, 10, 11, 12, 13, EOS_ID, EOS_ID, EOS_ID];
/** Confidence rises with position so the commit order is predictable: right to left. */
const fixed = (pos: number) => ({ token: TARGET[pos]!, conf: 0.5 + pos / 100 });

/** Context-dependent predictions: the token depends on how many positions are still masked. */
const contextual = (pos: number, x: ArrayLike<number>) => {
  let masks = 0;
  for (let i = 0; i < x.length; i++) if (x[i] === MASK_ID) masks++;
  return { token: 4 + ((pos * 7 + masks * 3) % 15), conf: 0.3 + ((pos * 13 + masks) % 17) / 30 };
};

const patches = [new Float32Array(1), new Float32Array(1)];
const prompts = [[4], [4]];

test('transfer schedule splits masks evenly, remainder first', () => {
  assert.deepEqual(transferSchedule(10, 4), [3, 3, 2, 2]);
  assert.deepEqual(transferSchedule(8, 8), [1, 1, 1, 1, 1, 1, 1, 1]);
  assert.equal(
    transferSchedule(96, 24).reduce((a, b) => a + b, 0),
    96,
  );
});

test('LLaDA sampler commits k tokens per step and never changes a committed token', async () => {
  const res = await sample(
    fakeModel(contextual),
    patches,
    prompts,
    samplerOptions('llada', { steps: 4, trace: true, stopAtEos: false }),
  );
  for (const r of res) {
    assert.equal(r.steps, 4);
    assert.deepEqual(
      r.trace!.map((t) => t.committed.length),
      [3, 3, 3, 3],
    );
    assert.ok(r.trace!.every((t) => t.refined.length === 0));
    const final = new Map<number, number>();
    for (const t of r.trace!) for (const c of t.committed) final.set(c.pos, c.token);
    assert.deepEqual(
      [...final.keys()].sort((a, b) => a - b),
      [...Array(L).keys()],
    );
    for (const [pos, tok] of final) assert.equal(r.tokens[pos], tok);
  }
});

test('the refining sampler with refinement switched off is token-for-token the LLaDA sampler', async () => {
  for (const steps of [1, 3, 6, 12]) {
    const a = await sample(fakeModel(contextual), patches, prompts, samplerOptions('llada', { steps, trace: true }));
    const b = await sample(fakeModel(contextual), patches, prompts, {
      ...samplerOptions('rediff', { steps, trace: true }),
      refine: null,
    });
    assert.deepEqual(b, a);
  }
});

test('refinement repairs wrong early commits of a model that then predicts a fixed sequence', async () => {
  // First call: confident garbage everywhere; afterwards the fixed sequence.
  const model = () =>
    fakeModel((pos, _x, call) => (call === 0 ? { token: 4 + ((pos + 3) % 9), conf: 0.9 } : fixed(pos)));
  const llada = await sample(model(), patches, prompts, samplerOptions('llada', { steps: 4, stopAtEos: false }));
  const rediff = await sample(
    model(),
    patches,
    prompts,
    samplerOptions('rediff', { steps: 4, stopAtEos: false, trace: true }),
  );
  assert.notDeepEqual(llada[0]!.tokens, TARGET, 'LLaDA keeps its wrong first commits');
  assert.deepEqual(rediff[0]!.tokens, TARGET);
  assert.ok(rediff[0]!.trace!.some((t) => t.refined.length > 0));
  for (const t of rediff[0]!.trace!) for (const r of t.refined) assert.notEqual(r.from, r.to);
});

test('refine-from fraction delays refinement', async () => {
  const model = () => fakeModel((pos, _x, call) => (call === 0 ? { token: 4, conf: 0.9 } : fixed(pos)));
  const late = await sample(model(), patches, prompts, {
    ...samplerOptions('rediff', { steps: 4, trace: true, stopAtEos: false }),
    refine: { fromFraction: 0.75, topFraction: 1 },
  });
  const trace = late[0]!.trace!;
  assert.deepEqual(
    trace.slice(0, 3).map((t) => t.refined.length),
    [0, 0, 0],
  );
  assert.ok(trace[3]!.refined.length > 0);
});

test('stop at EOS fills everything after the first committed EOS and finishes early', async () => {
  const res = await sample(
    fakeModel((pos) => ({ token: pos === 3 ? EOS_ID : 5, conf: pos === 3 ? 0.99 : 0.6 })),
    patches,
    prompts,
    samplerOptions('llada', { steps: 12 }),
  );
  assert.deepEqual(res[0]!.tokens.slice(3), new Array(L - 3).fill(EOS_ID));
  assert.ok(res[0]!.steps <= 4, `finished in ${res[0]!.steps} steps`);
});

test('confidence-threshold decoding commits every confident position at once, at least one', async () => {
  const sure = await sample(
    fakeModel((pos) => ({ token: TARGET[pos]!, conf: 0.95 })),
    patches,
    prompts,
    samplerOptions('threshold', { steps: L }, 0.9),
  );
  assert.equal(sure[0]!.steps, 1);
  assert.deepEqual(sure[0]!.tokens, TARGET);
  const unsure = await sample(
    fakeModel((pos) => ({ token: 5 + (pos % 3), conf: 0.2 })),
    patches,
    prompts,
    samplerOptions('threshold', { steps: L, stopAtEos: false }, 0.9),
  );
  assert.equal(unsure[0]!.steps, L);
});

test('blocks decode left to right', async () => {
  const res = await sample(
    fakeModel(fixed),
    patches,
    prompts,
    samplerOptions('llada', { steps: 4, blockLength: 6, trace: true, stopAtEos: false }),
  );
  const firstHalf = res[0]!.trace!.slice(0, 2).flatMap((t) => t.committed.map((c) => c.pos));
  assert.ok(firstHalf.every((p) => p < 6));
  assert.deepEqual(res[0]!.tokens, TARGET);
});

test('Gumbel-max sampling at temperature > 0 is seeded', async () => {
  const opts = samplerOptions('llada', { steps: 6, temperature: 1, seed: 3 });
  const a = await sample(fakeModel(contextual), patches, prompts, opts);
  const b = await sample(fakeModel(contextual), patches, prompts, opts);
  const c = await sample(fakeModel(contextual), patches, prompts, { ...opts, seed: 4 });
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
});

test('bad sampler settings are rejected with a clear message', async () => {
  assert.throws(() => samplerOptions('nope', { steps: 4 }), /unknown sampler "nope"/);
  await Promise.all([
    assert.rejects(
      sample(fakeModel(fixed), patches, prompts, samplerOptions('llada', { steps: 0 })),
      /steps must be a positive integer/,
    ),
    assert.rejects(sample(fakeModel(fixed), patches, prompts, samplerOptions('llada', { steps: 24 })), /cannot exceed/),
    assert.rejects(
      sample(fakeModel(fixed), patches, prompts, samplerOptions('llada', { steps: 4, blockLength: 5 })),
      /must divide/,
    ),
  ]);
});

test('refinement never moves the EOS boundary, and a refined-in EOS does not end the response', async () => {
  // Call 0 commits a word at position 0 and EOS at position 8 (the two most confident);
  // later calls predict EOS at position 0 (refined in) and a word at position 8.
  const model = fakeModel((pos, _x, call) => {
    if (pos === 8) return { token: call === 0 ? EOS_ID : 5, conf: 0.99 };
    if (pos === 0) return call === 0 ? { token: 4, conf: 0.98 } : { token: EOS_ID, conf: 0.6 };
    return { token: 5 + pos, conf: 0.5 + pos / 100 };
  });
  const res = await sample(model, patches, prompts, samplerOptions('rediff', { steps: 6, trace: true }));
  const tokens = res[0]!.tokens;
  assert.equal(tokens[8], EOS_ID, 'the committed EOS stays');
  assert.deepEqual(tokens.slice(9), [EOS_ID, EOS_ID, EOS_ID]);
  assert.equal(tokens[0], EOS_ID, 'position 0 was refined into EOS');
  assert.ok(
    tokens.slice(1, 8).every((t) => t !== MASK_ID && t !== EOS_ID),
    `positions before the boundary are decoded: ${tokens}`,
  );
  assert.equal(res[0]!.steps, 5, 'a refined-in EOS at position 0 does not finish the row early');
  assert.ok(
    res[0]!.trace!.every((t) => t.refined.every((r) => r.pos < 8)),
    'nothing at or after the boundary is refined',
  );
});

/** fakeModel, also recording how many rows each forward pass ran. */
function countingModel(pick: Parameters<typeof fakeModel>[0]): DenoisingModel & { batches: number[] } {
  const inner = fakeModel(pick);
  const batches: number[] = [];
  return {
    config: inner.config,
    encodeImages: (p) => inner.encodeImages(p),
    logits: (e, rows) => {
      batches.push(rows.length);
      return inner.logits(e, rows);
    },
    batches,
  };
}

/** Row-dependent speed: the prompt's first id says how confident the model is, so rows finish at different steps. */
const rowSpeed = (prompt: number) => (pos: number, x: ArrayLike<number>) => ({
  ...contextual(pos, x),
  conf: prompt === 4 ? 0.95 : 0.3 + pos / 100,
});

test("compaction: finished rows leave the batch; results are token for token lock-step decoding's", async () => {
  // Row 0 is sure of everything (one step per block with threshold decoding), rows 1-4 are not.
  const n = 5;
  const speedPatches = Array.from({ length: n }, () => new Float32Array(1));
  const speedPrompts = Array.from({ length: n }, (_, i) => [i === 0 ? 4 : 5]);
  const model = () => {
    let current: number[] = [];
    const m = countingModel((pos, x) => rowSpeed(current.shift()!)(pos, x));
    const logits = m.logits;
    return {
      ...m,
      logits: (e: Float32Array, rows: { prompt: readonly number[]; response: ArrayLike<number> }[]) => {
        current = [];
        for (const r of rows) for (let i = 0; i < L; i++) current.push(r.prompt[0]!);
        return logits(e, rows);
      },
    };
  };
  for (const name of ['llada', 'rediff', 'threshold', 'threshold-rediff']) {
    const steps = name.startsWith('threshold') ? L : 6;
    const opts = samplerOptions(name, { steps, blockLength: 6, trace: true, stopAtEos: false });
    const lock = model();
    const compact = model();
    const a = await sample(lock, speedPatches, speedPrompts, { ...opts, compaction: false });
    const b = await sample(compact, speedPatches, speedPrompts, opts);
    assert.deepEqual(b, a, name);
    assert.ok(
      lock.batches.every((size) => size === n),
      'lock-step runs every row at every step',
    );
    const rowSteps = a.reduce((s, r) => s + r.steps, 0);
    const compactRows = compact.batches.reduce((s, x) => s + x, 0);
    if (name.startsWith('threshold')) {
      assert.ok(a[0]!.steps < a[1]!.steps, 'row 0 finishes first');
      assert.ok(
        compactRows < lock.batches.length * n,
        `${name}: ${compactRows} rows run with compaction, ${lock.batches.length * n} without`,
      );
    }
    // Padding to a bucket size is at most a third of each pass.
    assert.ok(compactRows <= rowSteps * 1.5, `${name}: ${compactRows} rows run for ${rowSteps} row-steps`);
  }
});

test('a row decodes to the same tokens alone as in a batch, at any temperature', async () => {
  const four = [0, 1, 2, 3].map(() => new Float32Array(1));
  for (const opts of [
    samplerOptions('rediff', { steps: 6, seed: 7 }),
    samplerOptions('llada', { steps: 4, temperature: 1, remasking: 'random', seed: 7 }),
  ]) {
    const batch = await sample(fakeModel(contextual), four, [[4], [4], [4], [4]], opts);
    for (let i = 0; i < 4; i++) {
      const [alone] = await sample(fakeModel(contextual), [four[i]!], [[4]], { ...opts, seed: opts.seed + i });
      assert.deepEqual(alone, batch[i]);
    }
  }
});

test('batch buckets: a shrinking batch compiles few sizes and pads at most a third', () => {
  assert.deepEqual(
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 17, 25, 32, 33].map(batchBucket),
    [1, 2, 3, 4, 6, 6, 8, 8, 12, 12, 16, 24, 32, 32, 48],
  );
  for (let n = 1; n <= 100; n++)
    assert.ok(batchBucket(n) >= n && batchBucket(n) - n <= batchBucket(n) / 3, `bucket of ${n}: ${batchBucket(n)}`);
});

test('a K/V cache needs a model that supports it, and an unknown cache mode is rejected', async () => {
  await assert.rejects(
    sample(fakeModel(fixed), patches, prompts, samplerOptions('llada', { steps: 4, cache: 'dual' })),
    /cannot decode with a K\/V cache/,
  );
  await assert.rejects(
    sample(fakeModel(fixed), patches, prompts, samplerOptions('llada', { steps: 4, cache: 'warm' as never })),
    /unknown cache mode "warm"/,
  );
});
