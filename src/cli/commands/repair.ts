import type { Command } from 'commander';
import { generateBenchmarkSplit, readBenchmarkSplit } from '../../data/training-data.js';
import { measureCorrectionRepair } from '../../evaluation/repair.js';
import { renderPlain } from '../../evaluation/table.js';
import { GroundedExpert } from '../../experts/grounded.js';
import { loadModel, loadModelState } from '../../model/io.js';
import { SAMPLER_NAMES } from '../../sampling/sampler.js';
import { correctedDrafts } from '../../training/self-correction.js';
import { UserError } from '../../util/errors.js';
import { choiceOption, intListOption, intOption } from '../options.js';

interface RepairFlags {
  drafter: string;
  checkpoints?: string;
  data?: string;
  split: string;
  scenes: number;
  dataSeed: number;
  tokensPerStep: number[];
  sampler: string;
}

const pct = (x: number): string => `${(100 * x).toFixed(1)}`;

/**
 * `rediff repair`: what a Stage II round taught, measured on held-out scenes. The drafter
 * captions the scenes, the grounded expert corrects its drafts, and every model makes one
 * refining pass over each draft: how many of the corrected tokens it gets right, the same with
 * every draft paired with another scene's image (how much of that needs the image), and how
 * many of the other tokens it keeps.
 */
export function registerRepair(program: Command): void {
  program
    .command('repair')
    .description(
      "measure how much of a drafter's own mistakes (as the grounded expert corrects them) each model fixes in one " +
        'refining pass, on held-out scenes',
    )
    .requiredOption('--drafter <dir>', 'checkpoint that writes the drafts (e.g. ReDiff-Base)')
    .option('--checkpoints <list>', 'comma-separated checkpoints to measure (default: the drafter itself)')
    .option('--data <dir>', 'a benchmark split written by "rediff data make"')
    .option('--split <name>', 'without --data: generate this split in memory', 'val')
    .option('--scenes <n>', 'without --data: number of scenes generated', intOption('--scenes', 2), 100)
    .option('--data-seed <n>', 'without --data: seed of the generated split', intOption('--data-seed', 0), 0)
    .option(
      '--tokens-per-step <list>',
      'step budgets of the drafts, as tokens per step',
      intListOption('--tokens-per-step'),
      [1, 4, 8],
    )
    .option('--sampler <name>', 'sampler of the drafts', choiceOption('--sampler', SAMPLER_NAMES), 'rediff')
    .action(async (f: RepairFlags) => {
      const checkpoints = f.checkpoints
        ? f.checkpoints
            .split(',')
            .map((s) => s.trim())
            .filter((s) => s !== '')
        : [f.drafter];
      if (checkpoints.length === 0) throw new UserError('--checkpoints is empty');
      const { config } = await loadModelState(f.drafter);
      const split = f.data
        ? (await readBenchmarkSplit(f.data, config.imageSize)).split
        : generateBenchmarkSplit(f.split, f.dataSeed, f.scenes, config.imageSize);
      const n = split.records.length;
      if (n < 2)
        throw new UserError("repair needs at least 2 scenes (the control pairs each draft with another scene's image)");
      const held = await correctedDrafts(f.drafter, split, new GroundedExpert(), {
        draftTokensPerStep: f.tokensPerStep,
        draftSampler: f.sampler,
      });
      console.log(`${held.length} of ${n * f.tokensPerStep.length} drafts by ${f.drafter} have a usable correction`);
      if (held.length === 0) return;
      const cases = held.map((h) => ({ rgb: split.rgb[h.draft.record]!, correction: h.correction }));
      // The control: each draft with the image of the scene half the split away (never its own).
      const shift = Math.floor(n / 2);
      const control = held.map((h) => ({ rgb: split.rgb[(h.draft.record + shift) % n]!, correction: h.correction }));
      const table = [['model', 'corrected tokens', 'fixed %', 'fixed, wrong image %', 'other tokens kept %']];
      for (const dir of checkpoints) {
        const model = await loadModel(dir);
        try {
          const right = await measureCorrectionRepair(model, cases);
          const wrong = await measureCorrectionRepair(model, control);
          table.push([dir, String(right.mistakes), pct(right.fixed), pct(wrong.fixed), pct(right.kept)]);
        } finally {
          await model.dispose();
        }
      }
      console.log(renderPlain(table));
    });
}
