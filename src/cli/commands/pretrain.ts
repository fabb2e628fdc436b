import { type Command, Option } from 'commander';
import { shipBase } from '../../report/ship-base.js';
import { trainBaseModel } from '../../training/base-model.js';
import { intOption } from '../options.js';

/** `rediff pretrain`: the base model (LLaDA-V's recipe at our scale), resumable stage by stage. */
export function registerPretrain(program: Command): void {
  program
    .command('pretrain')
    .description(
      'train the base model from nothing: the vision tower, a grounding curriculum on one-object scenes, ' +
        'mask-prediction fine-tuning of everything, then a stage on the masks of block decoding (resumable)',
    )
    .addOption(
      new Option('--preset <name>', 'quick: seconds, tiny model; full: the shipped base, small model')
        .choices(['quick', 'full'])
        .default('full'),
    )
    .option('--out <dir>', 'run directory (one checkpoint per stage, base.json)', 'runs/base')
    .option('--ship <dir>', 'then write the base in shipping form with its model card (e.g. models/base)')
    .option('--seed <n>', 'seed of the scenes, the initialisation and the batches', intOption('--seed', 0), 0)
    .option('--no-progress', 'no progress bars')
    .action(async (f: { preset: 'quick' | 'full'; out: string; ship?: string; seed: number; progress: boolean }) => {
      const r = await trainBaseModel({ out: f.out, preset: f.preset, seed: f.seed, progress: f.progress });
      if (f.ship) await shipBase({ out: f.out, record: r, ship: f.ship });
      const total = Object.values(r.timings).reduce((a, b) => a + b, 0);
      console.log(`base model trained in ${(total / 60).toFixed(1)} min of training: ${f.out}`);
    });
}
