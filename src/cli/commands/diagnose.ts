import type { Command } from 'commander';
import { loadModelState } from '../../model/io.js';
import { measureStage } from '../../training/stages/measure.js';
import { intOption } from '../options.js';
import { resolveCheckpoint } from '../models.js';

/** `rediff diagnose`: does a model look at the image? (docs/diagnosis.md) */
export function registerDiagnose(program: Command): void {
  program
    .command('diagnose')
    .description('does a model look at the image? its vision probe\'s accuracy (if it has one), its caption loss and its binding of colour, shape and size words with the right image against a shuffled one, on validation scenes')
    .option('--checkpoint <dir>', 'model checkpoint (default: the shipped ReDiff model)')
    .option('--scenes <n>', 'validation scenes', intOption('--scenes', 2), 256)
    .action(async (f: { checkpoint?: string; scenes: number }) => {
      const m = await loadModelState(resolveCheckpoint(f.checkpoint, 'rediff'));
      console.log(await measureStage('mask-prediction', m.config, m.params, f.scenes));
    });
}
