/**
 * How well a model revises a corrupted caption in one pass: inject random-token errors into
 * correct held-out captions, run the model once on the unmasked text, and compare its argmax
 * at every position with the truth. A model that rewrites everything "repairs" errors but
 * breaks clean tokens; the net change in errors is what refinement would do to a draft.
 */
import { BENCHMARK_PROMPT } from '../benchmark/captioner.js';
import type { InMemorySplit } from '../data/training-data.js';
import type { DiffusionVLM } from '../model/model.js';
import { padResponse, randomOrdinaryToken } from '../training/corruption.js';
import { recordPatches } from '../training/samples.js';
import type { SpanPair } from '../data/training-record.js';
import { EOS_ID } from '../tokenizer/tokenizer.js';
import { Rng } from '../util/rng.js';

export interface RepairResult {
  injected: number;
  /** Injected errors the model put back to the true token. */
  repaired: number;
  /** Share of uncorrupted caption tokens the model kept. */
  cleanKept: number;
  errorsBefore: number;
  errorsAfter: number;
}

export async function measureRepair(
  model: DiffusionVLM,
  split: InMemorySplit,
  noise = 0.1,
  seed = 0,
): Promise<RepairResult> {
  const c = model.config;
  const tok = model.tokenizer;
  const rng = new Rng(seed);
  const rows = split.records.map((r) => {
    const clean = padResponse(tok.encode(r.captions[0]!), c.responseLength);
    const noisy = [...clean];
    const injected = new Set<number>();
    const end = clean.indexOf(EOS_ID);
    for (let i = 0; i < end; i++) {
      if (rng.next() < noise) {
        noisy[i] = randomOrdinaryToken(rng, { firstOrdinaryId: tok.firstOrdinaryId, vocabSize: tok.size }, clean[i]!);
        injected.add(i);
      }
    }
    return { clean, noisy, injected, end };
  });
  const predicted = await onePassArgmax(
    model,
    split.rgb.map((rgb, i) => ({ rgb, response: rows[i]!.noisy })),
  );
  let injected = 0,
    repaired = 0,
    clean = 0,
    kept = 0,
    after = 0;
  rows.forEach((r, b) => {
    const best = predicted[b]!;
    for (let i = 0; i < r.end; i++) {
      if (best[i] !== r.clean[i]) after++;
      if (r.injected.has(i)) {
        injected++;
        if (best[i] === r.clean[i]) repaired++;
      } else {
        clean++;
        if (best[i] === r.clean[i]) kept++;
      }
    }
  });
  return {
    injected,
    repaired: repaired / Math.max(1, injected),
    cleanKept: kept / Math.max(1, clean),
    errorsBefore: injected,
    errorsAfter: after,
  };
}

/**
 * The model's argmax at every response position after one pass over an unmasked response
 * (what the refining sampler would write there), in batches of `batch` images. Responses
 * shorter than the generation length are padded with EOS.
 */
export async function onePassArgmax(
  model: DiffusionVLM,
  items: readonly { rgb: Uint8Array; response: readonly number[] }[],
  batch = 32,
): Promise<Int32Array[]> {
  const c = model.config;
  const v = c.vocabSize;
  const prompt = model.tokenizer.encode(model.meta.prompt ?? BENCHMARK_PROMPT);
  const out: Int32Array[] = [];
  for (let s = 0; s < items.length; s += batch) {
    const chunk = items.slice(s, s + batch);
    const embeds = await model.encodeImages(chunk.map((x) => recordPatches(c, x.rgb)));
    const logits = await model.logits(
      embeds,
      chunk.map((x) => ({
        prompt,
        response: x.response.length === c.responseLength ? x.response : padResponse(x.response, c.responseLength),
      })),
    );
    chunk.forEach((_, b) => {
      const best = new Int32Array(c.responseLength);
      for (let i = 0; i < c.responseLength; i++) {
        const o = (b * c.responseLength + i) * v;
        let k = 0;
        for (let j = 1; j < v; j++) if (logits[o + j]! > logits[o + k]!) k = j;
        best[i] = k;
      }
      out.push(best);
    });
  }
  return out;
}

export interface CorrectionRepairResult {
  drafts: number;
  /** Tokens the expert changes (inside its flagged spans, where target differs from draft). */
  mistakes: number;
  /** Share of those tokens the model's one pass sets to the expert's target. */
  fixed: number;
  /** Share of the draft's other tokens (before its EOS) the model leaves unchanged. */
  kept: number;
}

/**
 * How much of a drafter's own mistakes a model corrects in one refining pass: each draft is
 * fed unmasked, and the argmax at every token the expert changes is compared with the
 * expert's target; tokens outside the flagged spans should be kept. Measured on held-out
 * scenes, this says whether a Stage II round taught the model to fix the kind of mistake it
 * makes, rather than the particular drafts it was trained on.
 */
export async function measureCorrectionRepair(
  model: DiffusionVLM,
  cases: readonly { rgb: Uint8Array; correction: SpanPair }[],
): Promise<CorrectionRepairResult> {
  const predicted = await onePassArgmax(
    model,
    cases.map((x) => ({ rgb: x.rgb, response: x.correction.wrong })),
  );
  let mistakes = 0,
    fixed = 0,
    other = 0,
    kept = 0;
  cases.forEach(({ correction: k }, b) => {
    const inSpan = new Uint8Array(k.wrong.length);
    for (const sp of k.spans) inSpan.fill(1, sp.start, sp.start + sp.length);
    for (let i = 0; i < k.wrong.length; i++) {
      if (k.wrong[i] !== k.correct[i]) {
        mistakes++;
        if (predicted[b]![i] === k.correct[i]) fixed++;
      } else if (!inSpan[i]) {
        other++;
        if (predicted[b]![i] === k.wrong[i]) kept++;
      }
    }
  });
  return { drafts: cases.length, mistakes, fixed: fixed / Math.max(1, mistakes), kept: kept / Math.max(1, other) };
}
