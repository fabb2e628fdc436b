/** The model card of the shipped base (models/base/MODEL.md): what it was trained on, how long, its scores. */
import type { EvalRow } from '../evaluation/evaluate.js';
import { evalTable, renderMarkdown } from '../evaluation/table.js';
import type { BaseRunRecord } from '../training/base-model.js';
import type { TrainStage } from '../training/stages/plans.js';
import { formatDuration } from './report.js';

export interface ModelCardInput {
  record: BaseRunRecord;
  parameters: number;
  evaluation: { split: string; scenes: number; referenceTokens: number; rows: EvalRow[] };
}

const OBJECTIVES: Partial<Record<TrainStage, string>> = {
  vision:
    '`vision` pretrains the vision tower with dense supervision from the scene graph (what each 3x3 grid cell holds; ' +
    'our stand-in for SigLIP)',
  language: '`language` trains the language model on caption text alone, the image hidden (our stand-in for LLaDA)',
  align: '`align` trains the projector alone',
  'mask-prediction':
    '`mask-prediction` trains everything on captions (the tower at the stated fraction of the learning rate)',
};

/**
 * What the image tokens carry besides the projected tower features, and the language model's relative bias
 * (r.settings.model).
 */
function architectureNote(r: BaseRunRecord): string {
  const m = r.settings.model ?? {};
  const parts = [
    m.imageNorm ? 'centred over the image and LayerNormed' : null,
    m.imagePlace ? 'a learned embedding of their cell added' : null,
    m.imageCells ? "the probe head's reading of their cell (empty, shape, colour, size) embedded and added" : null,
    m.imageKeyBias
      ? `their attention logits raised by ${m.imageKeyBias.toFixed(2)} (each weighs as ` +
        `${Math.exp(m.imageKeyBias).toFixed(0)} text tokens)`
      : null,
  ].filter((x): x is string => x !== null);
  const tokens = parts.length ? `Image tokens: ${parts.join('; ')}.` : 'Image tokens: the projected tower features.';
  return m.relativeBias
    ? `${tokens} Language model: besides its position rows, a learned bias per head for the offset between two text ` +
        `positions (up to ${m.relativeBias}; started as ALiBi).`
    : tokens;
}

export function modelCard(m: ModelCardInput): string {
  const r = m.record;
  const total = Object.values(r.timings).reduce((a, b) => a + b, 0);
  const stages = r.settings.stages.map((s) => {
    const b = s.budget;
    const scale = b.visionLrScale !== undefined ? `, vision tower at ${b.visionLrScale}x` : '';
    const scenes = s.scenes
      ? `${s.scenes.count.toLocaleString('en-US')} of ${s.scenes.minObjects}-${s.scenes.maxObjects} objects`
      : 'all';
    const masks = s.mix?.groundingMask ? `${s.mix.groundingMask.share * 100}%` : '-';
    const blocks = s.mix?.blockMask
      ? `${s.mix.blockMask.share * 100}% (blocks of ${s.mix.blockMask.blockLength})`
      : '-';
    return (
      `| ${s.name} | \`${s.stage}\` | ${scenes} | ${masks} | ${blocks} | ${b.steps} x ${b.batchSize} | ` +
      `${b.lr}${scale} | ${formatDuration(r.timings[s.name])} |`
    );
  });
  const measured = r.settings.stages.map(
    (s) => `- **${s.name}**: ${(r.measurements[s.name] ?? '(not measured)').split('\n').join('; ')}`,
  );
  return [
    '# rediff base model',
    '',
    'Our stand-in for LLaDA-V: the pretrained masked-diffusion captioner every system of the study starts from.',
    `The \`${r.settings.modelPreset}\` preset, ${m.parameters.toLocaleString('en-US')} parameters (with the vision ` +
      `tower's per-cell probe head). ${architectureNote(r)}`,
    '',
    '## Training',
    '',
    `Produced by \`rediff pretrain --preset ${r.preset}\` (resumable; rerun it to re-create this model) on ` +
      `${r.settings.trainScenes.toLocaleString('en-US')} generated training scenes (benchmark split \`train\`, seed ` +
      `0), on ${r.machine.cpus} CPU cores (Node ${r.machine.node}), ${formatDuration(total)} of training in all.`,
    `Each stage starts from the previous one's weights. ` +
      `${[...new Set(r.settings.stages.map((s) => s.stage))].map((st) => OBJECTIVES[st] ?? `\`${st}\``).join('; ')}. ` +
      `Grounding masks hide every mention of one attribute (colour, shape or size words), or every place word, in ` +
      `that share of samples. Block masks show, in that share of samples, what decoding in blocks meets while it ` +
      `writes: the blocks before one written, that block masked, every later position masked and not scored. ` +
      `\`docs/design.md#base-pipeline\` says why the pipeline is built this way.`,
    '',
    '| stage | objective | training scenes | grounding masks | block masks | steps x batch | peak learning rate | ' +
      'wall time |',
    '| --- | --- | --- | ---: | ---: | ---: | --- | ---: |',
    ...stages,
    '',
    'Measured after each stage on validation scenes:',
    '',
    ...measured,
    '',
    '## Scores',
    '',
    `\`rediff eval --checkpoint models/base --split ${m.evaluation.split} --scenes ${m.evaluation.scenes} --samplers ` +
      `llada --tokens-per-step 1,2,4,8\` (the default decoding: blocks of 32). Each cell: mean ±95% interval ` +
      `half-width, in % (length in tokens; the reference captions average ` +
      `${m.evaluation.referenceTokens.toFixed(1)}).`,
    '',
    renderMarkdown(evalTable(m.evaluation.rows)),
    '',
    'factuality: true claims / (claims + unreadable spans), the always-true background left out; object claims: the ' +
      'same over claims about objects; described: objects whose size, colour, shape and place are all stated ' +
      'correctly; parses: captions that parse completely.',
    '',
  ].join('\n');
}
