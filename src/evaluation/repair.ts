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

export async function measureRepair(model: DiffusionVLM, split: InMemorySplit, noise = 0.1, seed = 0): Promise<RepairResult> {
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
  const embeds = await model.encodeImages(split.rgb.map((x) => recordPatches(c, x)));
  const prompt = tok.encode(model.meta.prompt ?? BENCHMARK_PROMPT);
  const logits = await model.logits(embeds, rows.map((r) => ({ prompt, response: r.noisy })));
  const v = c.vocabSize;
  let injected = 0, repaired = 0, clean = 0, kept = 0, after = 0;
  rows.forEach((r, b) => {
    for (let i = 0; i < r.end; i++) {
      const o = (b * c.responseLength + i) * v;
      let best = 0;
      for (let k = 1; k < v; k++) if (logits[o + k]! > logits[o + best]!) best = k;
      if (best !== r.clean[i]) after++;
      if (r.injected.has(i)) {
        injected++;
        if (best === r.clean[i]) repaired++;
      } else {
        clean++;
        if (best === r.clean[i]) kept++;
      }
    }
  });
  return { injected, repaired: repaired / Math.max(1, injected), cleanKept: kept / Math.max(1, clean), errorsBefore: injected, errorsAfter: after };
}
