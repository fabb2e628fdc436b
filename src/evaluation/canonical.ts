/**
 * One caption per image, beyond the paper (docs/oracle.md#canonical-captions): the benchmark
 * captioner's greedy decode, the oracle at 1 token per step with the LLaDA sampler. The
 * references give each scene three paraphrases in random styles, so a model of them must hedge
 * between styles at every masked position, and tokens committed together in one step come from
 * different paraphrases. The greedy decode is one caption per scene, always correct (the oracle
 * at 1 token per step writes one of the captioner's own captions), chosen the same way for every
 * scene, so training on it leaves the model one mode per image.
 */
import { BENCHMARK_PROMPT } from '../benchmark/captioner.js';
import { normaliseRgb } from '../data/image.js';
import type { InMemorySplit } from '../data/training-data.js';
import { captionImages } from '../sampling/caption.js';
import { samplerOptions } from '../sampling/sampler.js';
import { CaptionerOracle } from './oracle.js';

export interface CanonicalOptions {
  /** Captions the oracle draws per scene. */
  captions: number;
  responseLength: number;
  onProgress?: (done: number) => void;
}

/** Scenes per oracle: its drawn captions are kept while it lives (captions x L bytes a scene). */
const CHUNK = 256;

/** The canonical caption of every scene of `split`, in order. */
export async function canonicalCaptions(split: InMemorySplit, o: CanonicalOptions): Promise<string[]> {
  const out: string[] = [];
  for (let start = 0; start < split.records.length; start += CHUNK) {
    const chunk = { records: split.records.slice(start, start + CHUNK), rgb: split.rgb.slice(start, start + CHUNK) };
    const oracle = new CaptionerOracle(chunk, { captions: o.captions, seed: 0, responseLength: o.responseLength });
    try {
      const images = chunk.rgb.map((rgb) => normaliseRgb(rgb));
      const prompt = oracle.tokenizer.encode(BENCHMARK_PROMPT);
      const greedy = samplerOptions('llada', { steps: o.responseLength });
      const captions = await captionImages(oracle, images, prompt, greedy, 32, (n) => o.onProgress?.(start + n));
      out.push(...captions.map((c) => c.text));
    } finally {
      await oracle.dispose();
    }
  }
  return out;
}
