import type { Command } from 'commander';
import { loadModelState } from '../../model/io.js';
import { measureStage, validationRecords } from '../../training/stages/measure.js';
import { formatPlaceAttention, placeAttention } from '../../evaluation/attention.js';
import { intOption } from '../options.js';
import { resolveCheckpoint } from '../models.js';

/** `rediff diagnose`: does a model look at the image? (docs/cli.md#diagnose) */
export function registerDiagnose(program: Command): void {
  program
    .command('diagnose')
    .description(
      "does a model look at the image? its vision probe's accuracy (if it has one), its caption loss and its binding " +
        'of colour, shape and size words with the right image against a shuffled one, on validation scenes',
    )
    .option('--checkpoint <dir>', 'model checkpoint (default: the shipped ReDiff model)')
    .option('--scenes <n>', 'validation scenes', intOption('--scenes', 2), 256)
    .option(
      '--attention',
      "instead: where hidden place words look, per layer and head (the named object's image token and shape word " +
        "against the other objects')",
    )
    .action(async (f: { checkpoint?: string; scenes: number; attention?: boolean }) => {
      const m = await loadModelState(resolveCheckpoint(f.checkpoint, 'rediff'));
      if (!f.attention) {
        console.log(await measureStage('mask-prediction', m.config, m.params, f.scenes));
        return;
      }
      const a = await placeAttention(
        m.config,
        m.params,
        validationRecords(m.config, f.scenes, 0, { minObjects: 2, maxObjects: 6 }),
      );
      console.log(formatPlaceAttention(a));
    });
}
