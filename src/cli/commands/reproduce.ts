import * as fs from 'node:fs';
import * as path from 'node:path';
import { type Command, Option } from 'commander';
import { reproduce } from '../../evaluation/reproduce.js';
import { writeReport } from '../../report/report.js';
import { shippedModelDir } from '../models.js';
import { floatOption } from '../options.js';
import { UserError } from '../../util/errors.js';

/**
 * Where the study starts: a given base, else from scratch when asked or for the quick preset (the
 * shipped base is the small model, too slow for a toy study), else the shipped models/base.
 */
export function studyBase(f: { preset: 'quick' | 'full'; base?: string; fromScratch?: boolean }): {
  base?: string;
  fromScratch: boolean;
} {
  if (f.base !== undefined) return { base: f.base, fromScratch: false };
  if (f.fromScratch || f.preset === 'quick') return { fromScratch: true };
  return { base: shippedModelDir('base'), fromScratch: false };
}

/**
 * Where a study and its report go: the report lands in the study's own folder unless --report
 * says otherwise, so a run never overwrites the committed study in reports/.
 */
export function reproducePaths(f: { out: string; report?: string }): { out: string; report: string } {
  return { out: f.out, report: f.report ?? path.join(f.out, 'report') };
}

export function registerReproduce(program: Command): void {
  program
    .command('reproduce')
    .description("run the paper's comparative study from the base model (resumable) and write the report")
    .addOption(
      new Option('--preset <name>', 'quick: minutes, tiny model; full: the committed study, small model')
        .choices(['quick', 'full'])
        .default('full'),
    )
    .addOption(
      new Option(
        '--base <dir>',
        'the base checkpoint every system starts from (default: the shipped models/base; with --preset quick, a tiny ' +
          'base trained first)',
      ).conflicts('fromScratch'),
    )
    .option('--from-scratch', "train the base first with the preset's base pipeline (rediff pretrain), into OUT/base")
    .option(
      '--threshold <x>',
      "confidence threshold of the threshold samplers (default: the preset's: 0.55 full, 0.9 quick); on a finished " +
        'study only the new settings are evaluated',
      floatOption('--threshold', 0, 1, { exclusiveMin: true }),
    )
    .option('--out <dir>', 'study directory (checkpoints, drafts, expert answers, results)', 'runs/study')
    .option(
      '--report <dir>',
      'where the Markdown report, raw JSON and SVG plots go (default: OUT/report; the committed study is in reports/)',
    )
    .option(
      '--notes <file>',
      'Markdown appended to the report as its Discussion (what was tried, what limits the numbers)',
    )
    .option('--no-progress', 'no progress bars')
    .action(
      async (f: {
        preset: 'quick' | 'full';
        base?: string;
        fromScratch?: boolean;
        threshold?: number;
        out: string;
        report?: string;
        notes?: string;
        progress: boolean;
      }) => {
        const where = reproducePaths(f);
        // Read first: a wrong path fails before hours of work, not after.
        const notes = f.notes === undefined ? undefined : readNotes(f.notes);
        await reproduce({
          out: where.out,
          preset: f.preset,
          ...studyBase(f),
          threshold: f.threshold,
          progress: f.progress,
        });
        const { files } = await writeReport(where.out, where.report, notes === undefined ? {} : { notes });
        console.log(`report: ${path.join(where.report, 'README.md')} (${files.length} files)`);
      },
    );
}

function readNotes(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new UserError(
      `--notes: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
}
