/**
 * The measurement printed after each stage, on validation scenes generated in memory: the
 * vision stage's per-cell probe accuracy, the language stage's text-only loss, and for every
 * stage that captions with the image, the loss with the right image against a shuffled one.
 */
import { benchmarkTokenizer } from '../../benchmark/captioner.js';
import { benchmarkTrainingRecord, generateBenchmarkSplit } from '../../data/training-data.js';
import { attributeBinding, imageReliance, placeClaims, probeAccuracy, textOnlyLoss } from './diagnosis.js';
import type { RecordOptions } from '../../benchmark/dataset.js';
import type { ModelConfig } from '../../model/config.js';
import type { Params } from '../../model/params.js';
import type { TrainingRecord } from '../../data/training-record.js';
import type { TrainStage } from './plans.js';

const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;

/**
 * Validation scenes; `scenes` narrows them to a stage's own object counts (the grounding stage's one-object scenes).
 */
export function validationRecords(c: ModelConfig, n: number, seed = 0, scenes: RecordOptions = {}): TrainingRecord[] {
  const split = generateBenchmarkSplit('val', seed, n, c.imageSize, scenes);
  const tokenizer = benchmarkTokenizer();
  return split.records.map((r, i) => benchmarkTrainingRecord(r, split.rgb[i]!, tokenizer));
}

export async function measureStage(
  stage: TrainStage,
  c: ModelConfig,
  params: Params,
  scenes: number,
  objects?: { minObjects: number; maxObjects: number },
): Promise<string> {
  const records = validationRecords(c, scenes, 0, objects ?? {});
  const where = `val scenes${objects ? ` of ${objects.minObjects}-${objects.maxObjects} objects` : ''}`;
  const lines: string[] = [];
  if (c.cellProbe) {
    const a = await probeAccuracy(c, params, records);
    lines.push(
      `vision probe on ${a.n} ${where}: cells ${pct(a.cells)}, objects ${pct(a.objects)}, whole images ` +
        `${pct(a.images)}`,
    );
  }
  if (stage === 'language') {
    lines.push(`text-only caption loss on ${scenes} ${where}: ${(await textOnlyLoss(c, params, records)).toFixed(3)}`);
  } else if (stage !== 'vision') {
    const r = await imageReliance(c, params, records);
    lines.push(
      `caption loss on ${r.n} ${where}: right image ${r.rightImage.toFixed(3)}, shuffled image ` +
        `${r.shuffledImage.toFixed(3)} (the image is worth ${(r.shuffledImage - r.rightImage).toFixed(3)})`,
    );
    const bound = await attributeBinding(c, params, records);
    lines.push(
      `binding (masked ${bound.map((b) => b.kind).join(' / ')} words named right, right image vs shuffled): ` +
        `${bound.map((b) => `${pct(b.rightImage)} vs ${pct(b.shuffledImage)}`).join(' / ')}`,
    );
    const places = await placeClaims(c, params, records);
    lines.push(
      `place claims that hold once every place word is hidden and named by the model: ${pct(places.rightImage)} vs ` +
        `${pct(places.shuffledImage)} with a shuffled image (${places.claims} claims)`,
    );
  }
  return lines.join('\n');
}
