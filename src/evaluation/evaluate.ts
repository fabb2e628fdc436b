/**
 * Evaluation on the grounded benchmark: caption every scene of a split with each sampler
 * setting, score each caption exactly against its scene graph, and summarise with 95%
 * intervals. The sampler is a parameter, so any policy is evaluated with no change here.
 */
import { BENCHMARK_PROMPT } from '../benchmark/captioner.js';
import type { BenchmarkRecord } from '../benchmark/dataset.js';
import { type CaptionScore, type Summary, captionPieces, scoreCaption, summarize } from '../benchmark/metrics.js';
import { normaliseRgb } from '../data/image.js';
import type { InMemorySplit } from '../data/training-data.js';
import { type ImageCaptioner, captionImages } from '../sampling/caption.js';
import type { SamplerOptions } from '../sampling/sampler.js';
import { EOS_ID } from '../tokenizer/tokenizer.js';

export interface EvalSetting {
  label: string;
  sampler: string;
  /** Requested tokens per step (schedule samplers), or null for threshold samplers. */
  tokensPerStep: number | null;
  options: SamplerOptions;
}

export interface CaptionRecord {
  id: string;
  setting: string;
  caption: string;
  steps: number;
  score: Omit<CaptionScore, 'coveredFacts' | 'unreadable'>;
}

export interface EvalRow {
  setting: EvalSetting;
  summary: Summary;
  /**
   * Response positions decoded per forward pass, L / mean steps: the paper's tokens per step
   * for fixed schedules (L / steps), and what a threshold sampler actually achieved.
   */
  achievedTokensPerStep: number;
  /**
   * The same without the EOS fill: caption tokens (before the first EOS) per forward pass. A
   * caption that ends early is not credited with the positions its EOS fills.
   */
  captionTokensPerStep: number;
  meanSteps: number;
  seconds: number;
  records: CaptionRecord[];
}

/** Response positions before the first EOS. */
function captionLength(tokens: readonly number[]): number {
  const end = tokens.indexOf(EOS_ID);
  return end < 0 ? tokens.length : end;
}

export async function evaluate(
  model: ImageCaptioner & { readonly meta?: { prompt?: string } },
  split: InMemorySplit,
  settings: readonly EvalSetting[],
  opts: { batchSize?: number; prompt?: string; onProgress?: (done: number, total: number) => void } = {},
): Promise<EvalRow[]> {
  const images = split.rgb.map((rgb) => normaliseRgb(rgb));
  const prompt = model.tokenizer.encode(opts.prompt ?? model.meta?.prompt ?? BENCHMARK_PROMPT);
  const rows: EvalRow[] = [];
  const total = settings.length * images.length;
  let done = 0;
  for (const setting of settings) {
    const t0 = performance.now();
    const captions = await captionImages(model, images, prompt, setting.options, opts.batchSize ?? 32, (n) =>
      opts.onProgress?.(done + n, total),
    );
    done += images.length;
    const seconds = (performance.now() - t0) / 1000;
    const records: CaptionRecord[] = captions.map((c, i) => {
      const r: BenchmarkRecord = split.records[i]!;
      const {
        coveredFacts: _c,
        unreadable: _u,
        ...score
      } = scoreCaption(r.scene, captionPieces(c.tokens, model.tokenizer));
      return { id: r.id, setting: setting.label, caption: c.text, steps: c.steps, score };
    });
    const steps = captions.reduce((s, c) => s + c.steps, 0);
    const captionTokens = captions.reduce((s, c) => s + captionLength(c.tokens), 0);
    rows.push({
      setting,
      summary: summarize(records.map((r) => ({ ...r.score, coveredFacts: [], unreadable: [] }))),
      achievedTokensPerStep: (model.config.responseLength * captions.length) / Math.max(1, steps),
      captionTokensPerStep: captionTokens / Math.max(1, steps),
      meanSteps: steps / Math.max(1, captions.length),
      seconds,
      records,
    });
  }
  return rows;
}
