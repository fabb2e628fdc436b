/**
 * Stage I against mask prediction, as the revision-training tests run it: two tiny models from
 * the same initialisation, scenes, seed and budget, differing only in the objective, then one
 * refining pass over held-out captions with injected random-token errors (measureRepair).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BENCHMARK_PROMPT, benchmarkTokenizer } from '../../src/benchmark/captioner.js';
import { benchmarkTrainingRecord, generateBenchmarkSplit } from '../../src/data/training-data.js';
import { type RepairResult, measureRepair } from '../../src/evaluation/repair.js';
import { presetConfig } from '../../src/model/config.js';
import { DiffusionVLM } from '../../src/model/model.js';
import { initParams } from '../../src/model/params.js';
import { runTraining } from '../../src/training/run.js';
import { MASK_PREDICTION_MIX, type MixOptions } from '../../src/training/samples.js';

export const STAGE1_TEST_MIX: MixOptions = {
  objective: 'revision',
  syntaxNoise: 0.05,
  dynamicSyntaxNoise: false,
  correctionShare: 0.25,
};

export async function revisionVersusMaskPrediction(
  steps: number,
  warmupSteps: number,
): Promise<{ revision: RepairResult; maskOnly: RepairResult }> {
  const tokenizer = benchmarkTokenizer();
  const config = presetConfig('tiny', tokenizer.size);
  const train = generateBenchmarkSplit('train', 0, 2000, config.imageSize);
  const records = train.records.map((r, i) => benchmarkTrainingRecord(r, train.rgb[i]!, tokenizer));
  const heldOut = generateBenchmarkSplit('val', 0, 64, config.imageSize);
  const measured = async (mix: MixOptions): Promise<RepairResult> => {
    const res = await runTraining({
      outDir: fs.mkdtempSync(path.join(os.tmpdir(), 'rediff-stage1-')),
      records,
      resume: false,
      progress: false,
      initial: { config, tokenizer, params: initParams(config, 0) },
      settings: {
        stage: mix.objective,
        steps,
        batchSize: 32,
        lr: 3e-3,
        warmupSteps,
        minLrRatio: 0.1,
        weightDecay: 0.01,
        clipNorm: 1,
        seed: 0,
        checkpointEvery: steps,
        mix,
      },
    });
    const model = new DiffusionVLM(config, tokenizer, res.params, { prompt: BENCHMARK_PROMPT });
    try {
      return await measureRepair(model, heldOut, 0.1, 1);
    } finally {
      await model.dispose();
    }
  };
  return { revision: await measured(STAGE1_TEST_MIX), maskOnly: await measured(MASK_PREDICTION_MIX) };
}

export const showRepair = (x: RepairResult): string =>
  `repaired ${(100 * x.repaired).toFixed(1)}% of ${x.injected}, kept ${(100 * x.cleanKept).toFixed(1)}% of clean, ` +
  `errors ${x.errorsBefore} -> ${x.errorsAfter}`;
