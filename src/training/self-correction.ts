/**
 * ReDiff Stage II, online self-correction (the paper's Section 3.3): the model drafts captions of training
 * images at several step budgets, an expert marks and corrects the draft's own mistakes with
 * same-length edits, and the model is trained to make exactly those corrections (loss only on
 * the flagged spans, the draft fed unmasked), mixed with a share of Stage I samples. Rounds
 * repeat this from the new model. Every piece of a round is kept on disk and reused on a
 * rerun: drafts, the expert's answers (a resumable cache), the pairs, the checkpoint.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { BENCHMARK_PROMPT } from '../benchmark/captioner.js';
import { renderScenePng } from '../benchmark/render.js';
import { scoreCaption } from '../benchmark/metrics.js';
import type { Scene } from '../benchmark/scene.js';
import type { LlavaRecord } from '../data/datasets.js';
import { normaliseRgb } from '../data/image.js';
import { JsonlWriter, IssueLog, readJsonl } from '../data/jsonl.js';
import type { InMemorySplit } from '../data/training-data.js';
import { type ReviewAllResult, reviewAll } from '../experts/cache.js';
import type { Expert, ReviewAnswer, ReviewRequest } from '../experts/expert.js';
import { filterPairs, pairsToSpans, ReviewStats } from '../experts/pairs.js';
import { type LoadedModel, loadModel, loadModelState, saveModel } from '../model/io.js';
import { captionImages, stepsForTokensPerStep } from '../sampling/caption.js';
import { samplerOptions } from '../sampling/sampler.js';
import { EOS_ID, type Tokenizer } from '../tokenizer/tokenizer.js';
import { writeFileAtomic } from '../util/atomic.js';
import { UserError } from '../util/errors.js';
import { redactSecrets } from '../util/redact.js';
import { createProgress } from '../util/progress.js';
import type { Rng } from '../util/rng.js';
import { type TrainSettings, runTraining } from './run.js';
import type { SpanPair, TrainingRecord } from '../data/training-record.js';
import { recordedPath } from '../util/paths.js';

export interface SelfCorrectionSettings {
  rounds: number;
  /** Training images drafted per round. */
  draftImages: number;
  /** Step budgets as tokens per step (paper: 128/32/16 steps at L = 128, i.e. 1, 4, 8). */
  draftTokensPerStep: number[];
  draftSampler: string;
  /** Share of Stage I samples mixed into each Stage II batch (the rest are draft corrections). */
  stage1Share: number;
  /**
   * Also score a corrected draft's other tokens, as clean tokens to keep (default true). The
   * paper's Eq. 5 scores only the flagged spans (false): then every scored position of a draft
   * sample asks for a change, and a small model learns to rewrite correct tokens too, which the
   * refining sampler then does at every step (docs/design.md#keep-term-and-block-context).
   */
  keepTerm?: boolean;
  /** Training of each round; `mix` applies to the Stage I samples. */
  train: TrainSettings;
  /** Send each image to the expert (LLM experts need it; the grounded one reads the scene graph). */
  sendImages: boolean;
  /**
   * Largest share of a round's drafts the expert may fail on (an `error` answer: HTTP 401, a dead
   * server, ...) before the run stops with an error; failing on every draft always stops it.
   * Default 0.5.
   */
  maxExpertFailures?: number;
}

/**
 * The one-line error for a round whose expert failed on too many drafts, naming the most common
 * cause; null when the failures are within the allowed share.
 */
export function expertFailure(
  round: number,
  expertName: string,
  answers: readonly (ReviewAnswer | undefined)[],
  maxShare: number,
  cacheFile: string,
): string | null {
  const reasons = new Map<string, number>();
  let failed = 0;
  for (const a of answers) {
    if (a?.kind !== 'error') continue;
    failed++;
    reasons.set(a.reason, (reasons.get(a.reason) ?? 0) + 1);
  }
  const total = answers.length;
  if (failed === 0 || (failed < total && failed <= maxShare * total)) return null;
  const [cause, times] = [...reasons].sort((a, b) => b[1] - a[1])[0]!;
  const share = `${Math.round((100 * failed) / total)}%`;
  return (
    `round ${round}: the expert ${expertName} failed on ${failed} of ${total} drafts (${share}; at most ` +
    `${Math.round(maxShare * 100)}% allowed, --max-expert-failures): ` +
    `${cause}${times < failed ? ` (${times} of them)` : ''}; nothing was trained, the answers are in ${cacheFile}; ` +
    `fix the cause and rerun`
  );
}

/**
 * An image Stage II drafts on: a benchmark scene (with its scene graph, which the grounded
 * expert checks against) or an image of the user's own data (for an LLM expert).
 */
export interface DraftImage {
  /** The benchmark scene id, or the image file's path. */
  id: string;
  /** RGB bytes at the model's image size. */
  rgb: Uint8Array;
  /** The prompt the draft answers (the model is prompted with it; the expert sees it). */
  question: string;
  /** A reference answer, shown to the expert as a reference only. */
  reference: string;
  scene?: Scene;
  /** The original image file, sent to an LLM expert (benchmark scenes are rendered instead). */
  imagePath?: string;
}

/** The benchmark scenes of a split as draft images. */
export function draftImagesFromSplit(split: InMemorySplit): DraftImage[] {
  return split.records.map((r, i) => ({
    id: r.id,
    rgb: split.rgb[i]!,
    question: BENCHMARK_PROMPT,
    reference: r.captions[0] ?? '',
    scene: r.scene,
  }));
}

/**
 * The images of the user's LLaVA-style data (readUserData) as draft images: one per image, its
 * first conversation as question and reference.
 */
export function draftImagesFromLlava(
  records: readonly LlavaRecord[],
  rgbByImage: ReadonlyMap<string, Uint8Array>,
): DraftImage[] {
  const out: DraftImage[] = [];
  const seen = new Set<string>();
  for (const r of records) {
    const rgb = rgbByImage.get(r.image);
    if (seen.has(r.image) || !rgb) continue;
    seen.add(r.image);
    out.push({ id: r.image, rgb, question: r.prompt, reference: r.caption, imagePath: r.image });
  }
  return out;
}

/** The image sent to an LLM expert: the rendered scene, or the user's file as PNG, at most 512 pixels a side. */
async function expertImagePng(img: DraftImage): Promise<Uint8Array> {
  if (img.scene) return renderScenePng(img.scene).png;
  if (!img.imagePath) throw new Error(`draft image ${img.id} has neither a scene nor a file`);
  return sharp(img.imagePath)
    .rotate()
    .resize({ width: 512, height: 512, fit: 'inside', withoutEnlargement: true })
    .png()
    .toBuffer();
}

export interface Draft {
  id: string;
  /** Index of the image in the round's draft images. */
  record: number;
  /** The image's id (benchmark scene id or image path). */
  imageId: string;
  tokensPerStep: number;
  steps: number;
  text: string;
  tokens: number[];
}

export interface RoundReport {
  round: number;
  drafts: number;
  reviews: ReturnType<ReviewStats['toJSON']>;
  /** Drafts that yielded at least one training pair. */
  trainingPairs: number;
  /** Errors in the drafts by kind (factual claims by kind, plus drafts with unreadable spans). */
  draftErrors: Record<string, number>;
  checkpoint: string;
}

export interface SelfCorrectionJob {
  outDir: string;
  /** Checkpoint of the starting model (ReDiff-Base, or a mask-prediction model for "Stage II alone"). */
  init: string;
  /** Training images to draft on (see draftImagesFromSplit, draftImagesFromLlava). */
  images: readonly DraftImage[];
  /** Stage I records mixed in. */
  stage1Records: readonly TrainingRecord[];
  expert: Expert;
  settings: SelfCorrectionSettings;
  progress?: boolean;
}

/** How drafts are written: the sampler and its step budgets. */
export type DraftOptions = Pick<SelfCorrectionSettings, 'draftTokensPerStep' | 'draftSampler'>;

/**
 * Captions the images `indices` with the model in `modelDir`, once per step budget, each image
 * prompted with its own question (images that share a question are batched together).
 */
export async function generateDrafts(
  modelDir: string,
  images: readonly DraftImage[],
  indices: number[],
  s: DraftOptions,
  seed: number,
  progress: boolean,
): Promise<Draft[]> {
  const model = await loadModel(modelDir);
  try {
    const byQuestion = new Map<string, number[]>();
    for (const i of indices) {
      const q = images[i]!.question;
      const group = byQuestion.get(q);
      if (group) group.push(i);
      else byQuestion.set(q, [i]);
    }
    const drafts: Draft[] = [];
    const bar = createProgress('drafts', indices.length * s.draftTokensPerStep.length, { enabled: progress });
    let done = 0;
    for (const k of s.draftTokensPerStep) {
      const opts = samplerOptions(s.draftSampler, {
        steps: stepsForTokensPerStep(model.config.responseLength, k),
        seed,
      });
      for (const [question, group] of byQuestion) {
        const caps = await captionImages(
          model,
          group.map((i) => normaliseRgb(images[i]!.rgb)),
          model.tokenizer.encode(question),
          opts,
          32,
          (n) => bar.update(done + n),
        );
        done += group.length;
        caps.forEach((c, j) => {
          const img = images[group[j]!]!;
          const end = c.tokens.indexOf(EOS_ID);
          drafts.push({
            id: `${img.id}@${k}`,
            record: group[j]!,
            imageId: img.id,
            tokensPerStep: k,
            steps: c.steps,
            text: c.text,
            tokens: end < 0 ? c.tokens : c.tokens.slice(0, end),
          });
        });
      }
    }
    bar.stop();
    return drafts;
  } finally {
    await model.dispose();
  }
}

/**
 * The training target an expert's answer gives for a draft: its kept pairs applied to the
 * draft's own tokens, or null when nothing usable is left (judged right, malformed, no pair
 * locatable, or a draft that fills the whole response and has no EOS to keep).
 */
export function draftCorrection(
  d: Pick<Draft, 'text' | 'tokens'>,
  answer: ReviewAnswer | undefined,
  tokenizer: Tokenizer,
  responseLength: number,
): SpanPair | null {
  if (!answer || answer.kind !== 'pairs') return null;
  const filtered = filterPairs(d.text, answer.pairs, tokenizer);
  if (filtered.kept.length === 0) return null;
  const spans = pairsToSpans(d.tokens, filtered.kept, tokenizer);
  if (spans.spans.length === 0 || d.tokens.length >= responseLength) return null;
  return { wrong: spans.wrong, correct: spans.correct, spans: spans.spans };
}

/** A draft with the correction an expert gave it. */
export interface CorrectedDraft {
  draft: Draft;
  correction: SpanPair;
}

/**
 * Drafts of the benchmark scenes of `split` by the model in `modelDir`, reviewed by `expert`
 * without a cache, keeping those with a usable correction: the model's own typical mistakes on
 * those scenes, with fixes. Used to measure on held-out scenes what a round of Stage II taught.
 */
export async function correctedDrafts(
  modelDir: string,
  split: InMemorySplit,
  expert: Expert,
  opts: DraftOptions,
  seed = 0,
): Promise<CorrectedDraft[]> {
  const images = draftImagesFromSplit(split);
  const drafts = await generateDrafts(
    modelDir,
    images,
    images.map((_, i) => i),
    opts,
    seed,
    false,
  );
  const { tokenizer, config } = await loadModelState(modelDir);
  const out: CorrectedDraft[] = [];
  for (const d of drafts) {
    const answer = await expert.review(reviewRequest(d, images[d.record]!, false));
    const correction = draftCorrection(d, answer, tokenizer, config.responseLength);
    if (correction) out.push({ draft: d, correction });
  }
  return out;
}

function reviewRequest(d: Draft, img: DraftImage, sendImage: boolean): ReviewRequest {
  return {
    id: d.id,
    question: img.question,
    reference: img.reference,
    draft: d.text,
    ...(img.scene ? { scene: img.scene } : {}),
    ...(sendImage ? { loadImagePng: () => expertImagePng(img) } : {}),
  };
}

/** Mistakes in the drafts of benchmark scenes, by kind (factual claims by kind, plus drafts with unreadable spans). */
function countDraftErrors(drafts: readonly Draft[], images: readonly DraftImage[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const d of drafts) {
    const scene = images[d.record]!.scene;
    if (!scene) continue;
    const score = scoreCaption(scene, d.text);
    for (const e of score.errors) out[e.reason] = (out[e.reason] ?? 0) + 1;
    if (score.hasUnreadable) out.unreadable = (out.unreadable ?? 0) + 1;
  }
  return out;
}

/** Runs (or resumes) all rounds; returns one report per round and writes the final model to outDir. */
export async function runSelfCorrection(job: SelfCorrectionJob): Promise<RoundReport[]> {
  const s = job.settings;
  let current = job.init;
  const reports: RoundReport[] = [];
  for (let round = 1; round <= s.rounds; round++) {
    const dir = path.join(job.outDir, `round-${round}`);
    fs.mkdirSync(dir, { recursive: true });
    const drafts = await roundDrafts(job, round, dir, current);
    const model = await loadModelState(current);
    const reviewed = await reviewDrafts(job, round, dir, drafts, model.tokenizer);
    const draftRecords = await draftCorrections(job, dir, drafts, reviewed, model);
    const report: RoundReport = {
      round,
      drafts: drafts.length,
      reviews: reviewed.stats.toJSON(),
      trainingPairs: draftRecords.length,
      draftErrors: countDraftErrors(drafts, job.images),
      checkpoint: recordedPath(path.join(dir, 'model')),
    };
    await writeFileAtomic(path.join(dir, 'report.json'), JSON.stringify(report, null, 2) + '\n');
    current = await trainRound(job, round, dir, model, draftRecords, current);
    reports.push(report);
  }
  // The final model also goes to outDir itself, so `--checkpoint outDir` works like any run.
  const last = await loadModelState(current);
  await saveModel(job.outDir, {
    config: last.config,
    tokenizer: last.tokenizer,
    params: last.params,
    state: { ...last.state, rounds: s.rounds },
  });
  await writeFileAtomic(path.join(job.outDir, 'rounds.json'), JSON.stringify(reports, null, 2) + '\n');
  return reports;
}

/** Step 1: the round's drafts, new images each round cycling through the split (kept in drafts.jsonl). */
async function roundDrafts(job: SelfCorrectionJob, round: number, dir: string, current: string): Promise<Draft[]> {
  const s = job.settings;
  const draftsFile = path.join(dir, 'drafts.jsonl');
  if (fs.existsSync(draftsFile))
    return (await readJsonl(draftsFile, new IssueLog('fail'))).map((l) => l.value as Draft);
  const n = Math.min(s.draftImages, job.images.length);
  const indices = Array.from({ length: n }, (_, i) => ((round - 1) * n + i) % job.images.length);
  const drafts = await generateDrafts(current, job.images, indices, s, s.train.seed + round, job.progress !== false);
  const w = new JsonlWriter(draftsFile);
  for (const d of drafts) await w.write(d);
  await w.close();
  return drafts;
}

/** Step 2: the expert's review of every draft (resumable cache, reviews.jsonl). */
async function reviewDrafts(
  job: SelfCorrectionJob,
  round: number,
  dir: string,
  drafts: readonly Draft[],
  tokenizer: Tokenizer,
): Promise<ReviewAllResult> {
  const s = job.settings;
  const bar = createProgress(`review (${job.expert.name})`, drafts.length, { enabled: job.progress !== false });
  const cacheFile = path.join(dir, 'reviews.jsonl');
  const requests = drafts.map((d) => reviewRequest(d, job.images[d.record]!, s.sendImages));
  const reviewed = await reviewAll(job.expert, requests, {
    cacheFile,
    tokenizer,
    onProgress: (p) => bar.update(p.done),
  });
  bar.stop();
  // A run whose expert failed (a wrong key, a dead endpoint) must not look like a run whose
  // expert found nothing to correct: too many failures stop it, fewer are a warning.
  const answers = drafts.map((d) => reviewed.answers.get(d.id));
  const tooMany = expertFailure(round, job.expert.name, answers, s.maxExpertFailures ?? 0.5, cacheFile);
  if (tooMany) throw new UserError(redactSecrets(tooMany));
  const failedReviews = answers.filter((a) => a?.kind === 'error').length;
  if (failedReviews > 0)
    process.stderr.write(
      `warning: round ${round}: the expert failed on ${failedReviews} of ${drafts.length} drafts; they are left ` +
        `out (a rerun asks again)\n`,
    );
  return reviewed;
}

/** Step 3: the expert's pairs as span corrections over each draft's own tokens (also written to pairs.jsonl). */
async function draftCorrections(
  job: SelfCorrectionJob,
  dir: string,
  drafts: readonly Draft[],
  reviewed: ReviewAllResult,
  model: LoadedModel,
): Promise<TrainingRecord[]> {
  const { tokenizer } = model;
  const keepRest = job.settings.keepTerm !== false;
  const draftRecords: TrainingRecord[] = [];
  const pairsOut: object[] = [];
  for (const d of drafts) {
    const pair = draftCorrection(d, reviewed.answers.get(d.id), tokenizer, model.config.responseLength);
    if (!pair) continue;
    const img = job.images[d.record]!;
    draftRecords.push({
      rgb: img.rgb,
      prompt: tokenizer.encode(img.question),
      captions: [],
      corrections: [{ ...pair, keepRest }],
    });
    pairsOut.push({
      id: d.id,
      draft: d.text,
      corrected: tokenizer.decode(pair.correct),
      spans: pair.spans,
      image: img.id,
    });
  }
  await writeFileAtomic(path.join(dir, 'pairs.jsonl'), pairsOut.map((p) => JSON.stringify(p) + '\n').join(''));
  return draftRecords;
}

/**
 * Step 4: training on the corrections, mixed with Stage I samples, into round-K/model (resumed
 * when begun, skipped when finished); returns that checkpoint. Without a usable correction the
 * round keeps its starting weights, and its report says so (trainingPairs 0).
 */
async function trainRound(
  job: SelfCorrectionJob,
  round: number,
  dir: string,
  model: LoadedModel,
  draftRecords: TrainingRecord[],
  current: string,
): Promise<string> {
  const s = job.settings;
  const ckpt = path.join(dir, 'model');
  const begun = fs.existsSync(path.join(ckpt, 'checkpoint.json'));
  if (begun && Number((await loadModelState(ckpt)).state.step) >= s.train.steps) return ckpt;
  const { config, tokenizer, params } = model;
  if (draftRecords.length === 0) {
    process.stderr.write(
      `warning: round ${round}: the expert produced no usable correction; the model is kept unchanged\n`,
    );
    const state = {
      step: s.train.steps,
      stage: `self-correct round ${round}`,
      untrained: true,
      prompt: BENCHMARK_PROMPT,
    };
    await saveModel(ckpt, { config, tokenizer, params, state });
    return ckpt;
  }
  const pick = (rng: Rng): TrainingRecord =>
    job.stage1Records.length > 0 && rng.next() < s.stage1Share
      ? job.stage1Records[rng.int(job.stage1Records.length)]!
      : draftRecords[rng.int(draftRecords.length)]!;
  const keepTerm = s.keepTerm !== false;
  await runTraining({
    outDir: ckpt,
    records: [...draftRecords, ...job.stage1Records],
    pick,
    initial: { config, tokenizer, params },
    settings: { ...s.train, stage: `self-correct round ${round}` },
    resume: begun,
    progress: job.progress !== false,
    meta: { prompt: BENCHMARK_PROMPT, init: recordedPath(current), round, stage1Share: s.stage1Share, keepTerm },
  });
  return ckpt;
}
