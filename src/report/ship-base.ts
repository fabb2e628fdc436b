/**
 * Shipping a base that `rediff pretrain` trained (src/training/base-model.ts): evaluate it on the
 * validation split, write it in shipping form (weights, config, tokenizer, standalone ONNX) and
 * put its model card beside it (MODEL.md). The evaluation is kept in OUT/base-evaluation.json and
 * reused while the base it describes (its `finishedAt`) is the same.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { generateBenchmarkSplit } from '../data/training-data.js';
import { type EvalSetting, evaluate } from '../evaluation/evaluate.js';
import { shipCheckpoint } from '../model/export.js';
import { loadModel } from '../model/io.js';
import { countParams } from '../model/params.js';
import { stepsForTokensPerStep } from '../sampling/caption.js';
import { samplerOptions } from '../sampling/sampler.js';
import { splitWords } from '../tokenizer/word.js';
import { BASE_PRESETS, type BaseRunRecord, baseConfig, baseModelDir } from '../training/base-model.js';
import { readJsonFileSync, writeFileAtomic } from '../util/atomic.js';
import { UserError } from '../util/errors.js';
import { type ModelCardInput, modelCard } from './model-card.js';

export interface ShipBaseOptions {
  /** The pipeline's run directory (`rediff pretrain --out`). */
  out: string;
  /** What trainBaseModel returned for `out`. */
  record: BaseRunRecord;
  /** Where the shipped base goes (e.g. models/base). */
  ship: string;
  log?: (line: string) => void;
}

/** The evaluation file: the card's scores and the `finishedAt` of the base they were measured on. */
interface KeptEvaluation {
  base: string;
  evaluation: ModelCardInput['evaluation'];
}

export async function shipBase(opts: ShipBaseOptions): Promise<void> {
  const { record } = opts;
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  if (!record.finishedAt) throw new UserError(`${opts.out}: the base is not finished; run rediff pretrain first`);
  const preset = record.preset as 'quick' | 'full';
  const final = baseModelDir(opts.out, preset);
  const file = path.join(opts.out, 'base-evaluation.json');
  const kept = fs.existsSync(file) ? (readJsonFileSync(file, 'base evaluation') as KeptEvaluation) : null;
  let evaluation = kept?.base === record.finishedAt ? kept.evaluation : null;
  if (!evaluation) {
    log('[base] evaluating on the validation split');
    evaluation = await evaluateBase(final, BASE_PRESETS[preset].evalScenes);
    const next: KeptEvaluation = { base: record.finishedAt, evaluation };
    await writeFileAtomic(file, `${JSON.stringify(next, null, 2)}\n`);
  }
  await shipCheckpoint(final, opts.ship, { stage: 'base' });
  const parameters = countParams(baseConfig(preset));
  await writeFileAtomic(path.join(opts.ship, 'MODEL.md'), modelCard({ record, parameters, evaluation }));
  log(`[base] shipped ${final} -> ${opts.ship}`);
}

/** The base on validation scenes with the LLaDA sampler at 1, 2, 4 and 8 tokens per step (the default decoding). */
async function evaluateBase(dir: string, scenes: number): Promise<ModelCardInput['evaluation']> {
  const model = await loadModel(dir);
  try {
    const L = model.config.responseLength;
    const split = generateBenchmarkSplit('val', 0, scenes, model.config.imageSize);
    const settings: EvalSetting[] = [1, 2, 4, 8].map((k) => ({
      label: `llada ${k} tok/step`,
      sampler: 'llada',
      tokensPerStep: k,
      options: samplerOptions('llada', { steps: stepsForTokensPerStep(L, k) }),
    }));
    const rows = (await evaluate(model, split, settings)).map((r) => ({ ...r, records: [] }));
    const refs = split.records.flatMap((r) => r.captions.map((c) => splitWords(c).length));
    return { split: 'val', scenes, referenceTokens: refs.reduce((a, b) => a + b, 0) / refs.length, rows };
  } finally {
    await model.dispose();
  }
}
