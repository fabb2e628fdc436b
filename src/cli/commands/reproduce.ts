import * as path from 'node:path';
import { type Command, Option } from 'commander';
import { reproduce } from '../../evaluation/reproduce.js';
import { writeReport } from '../../report/report.js';

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
    .description("run the paper's comparative study from nothing (resumable) and write the report")
    .addOption(new Option('--preset <name>', 'quick: minutes, tiny model; full: the committed study, small model').choices(['quick', 'full']).default('full'))
    .option('--out <dir>', 'study directory (checkpoints, drafts, expert answers, results)', 'runs/study')
    .option('--report <dir>', 'where the Markdown report, raw JSON and SVG plots go (default: OUT/report; the committed study is in reports/)')
    .option('--no-progress', 'no progress bars')
    .action(async (f: { preset: 'quick' | 'full'; out: string; report?: string; progress: boolean }) => {
      const where = reproducePaths(f);
      await reproduce({ out: where.out, preset: f.preset, progress: f.progress });
      const { files } = await writeReport(where.out, where.report);
      console.log(`report: ${path.join(where.report, 'README.md')} (${files.length} files)`);
    });
}
