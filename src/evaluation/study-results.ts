/**
 * A study's results files: results/<system>.json (one row per evaluated setting) beside
 * results/<system>.jsonl (one record per caption), written so that an interrupted evaluation
 * adds only the settings it lacks; and the report's qualitative examples.
 */
import * as fs from 'node:fs';
import { BENCHMARK_PROMPT } from '../benchmark/captioner.js';
import { scoreCaption } from '../benchmark/metrics.js';
import { normaliseRgb } from '../data/image.js';
import type { InMemorySplit } from '../data/training-data.js';
import { loadModel } from '../model/io.js';
import { type EvalRowJSON, type SystemResults, rowLabel } from './results-file.js';
import { type ImageCaptioner, captionImages, stepsForTokensPerStep } from '../sampling/caption.js';
import { samplerOptions } from '../sampling/sampler.js';
import { readJsonFileSync, writeFileAtomic } from '../util/atomic.js';
import { type EvalSetting, evaluate } from './evaluate.js';
import { SYSTEM_LABELS } from './study-presets.js';

/** The rows of a system's results file (none without the file). */
function resultRows(file: string): EvalRowJSON[] {
  return fs.existsSync(file) ? (readJsonFileSync(file, 'study results') as SystemResults).rows : [];
}

/**
 * The settings a system's results file does not have yet (rows of older studies carry no label: rowLabel names them).
 */
export function missingSettings(file: string, settings: readonly EvalSetting[]): EvalSetting[] {
  const done = new Set(resultRows(file).map(rowLabel));
  return settings.filter((s) => !done.has(s.label));
}

/** What a study evaluates: a trained model, or the oracle. */
export interface StudyModel extends ImageCaptioner {
  readonly meta?: { prompt?: string };
  dispose(): Promise<void>;
}

/**
 * Evaluates `settings` and adds their rows and per-caption records to the system's results.
 * `checkpoint` is what the results name as the system's source: a path relative to the study, or a name.
 */
export async function evaluateSystem(
  open: () => Promise<StudyModel>,
  system: { id: string; checkpoint: string },
  test: InMemorySplit,
  settings: EvalSetting[],
  file: string,
  progress: boolean,
): Promise<void> {
  const model = await open();
  try {
    const rows = await evaluate(model, test, settings, progress ? { onProgress: () => undefined } : {});
    const before = resultRows(file);
    const json = {
      system: system.id,
      label: SYSTEM_LABELS[system.id] ?? system.id,
      checkpoint: system.checkpoint,
      rows: [
        ...before,
        ...rows.map((r) => ({
          sampler: r.setting.sampler,
          tokensPerStep: r.setting.tokensPerStep,
          label: r.setting.label,
          achievedTokensPerStep: r.achievedTokensPerStep,
          captionTokensPerStep: r.captionTokensPerStep,
          meanSteps: r.meanSteps,
          seconds: r.seconds,
          summary: r.summary,
        })),
      ],
    };
    const recordsFile = file.replace(/\.json$/, '.jsonl');
    // Records of these settings left by an interrupted write are replaced, not repeated.
    const labels = new Set(settings.map((x) => x.label));
    const earlier =
      before.length > 0 && fs.existsSync(recordsFile)
        ? fs
            .readFileSync(recordsFile, 'utf8')
            .split('\n')
            .filter((l) => l.trim() !== '' && !labels.has((JSON.parse(l) as { setting: string }).setting))
            .map((l) => l + '\n')
            .join('')
        : '';
    await writeFileAtomic(
      recordsFile,
      earlier + rows.flatMap((r) => r.records.map((rec) => JSON.stringify(rec) + '\n')).join(''),
    );
    await writeFileAtomic(file, JSON.stringify(json, null, 2) + '\n');
  } finally {
    await model.dispose();
  }
}

/**
 * Three test scenes at 4 tokens per step: the baseline (LLaDA sampler) against ReDiff (refining sampler, with its
 * trace).
 */
export async function writeExamples(
  baselineDir: string,
  rediffDir: string,
  test: InMemorySplit,
  file: string,
): Promise<void> {
  const baseline = await loadModel(baselineDir);
  const rediff = await loadModel(rediffDir);
  try {
    const n = Math.min(3, test.records.length);
    const images = test.rgb.slice(0, n).map((x) => normaliseRgb(x));
    const prompt = baseline.tokenizer.encode(BENCHMARK_PROMPT);
    const steps = stepsForTokensPerStep(baseline.config.responseLength, 4);
    const a = await captionImages(baseline, images, prompt, samplerOptions('llada', { steps }));
    const b = await captionImages(rediff, images, prompt, samplerOptions('rediff', { steps, trace: true }));
    const pieces = rediff.tokenizer.pieces(Array.from({ length: rediff.tokenizer.size }, (_, i) => i));
    const examples = test.records.slice(0, n).map((r, i) => ({
      sceneId: r.id,
      scene: r.scene,
      reference: r.captions[0],
      baseline: { caption: a[i]!.text, score: scoreCaption(r.scene, a[i]!.text) },
      rediff: { caption: b[i]!.text, score: scoreCaption(r.scene, b[i]!.text), trace: b[i]!.trace, pieces },
    }));
    await writeFileAtomic(file, JSON.stringify(examples, null, 2) + '\n');
  } finally {
    await baseline.dispose();
    await rediff.dispose();
  }
}
