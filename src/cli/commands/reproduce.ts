import * as path from 'node:path';
import { type Command, Option } from 'commander';
import { reproduce } from '../../evaluation/reproduce.js';
import { writeReport } from '../../report/report.js';

export function registerReproduce(program: Command): void {
  program
    .command('reproduce')
    .description("run the paper's comparative study from nothing (resumable) and write the report")
    .addOption(new Option('--preset <name>', 'quick: minutes, tiny model; full: the committed study, small model').choices(['quick', 'full']).default('full'))
    .option('--out <dir>', 'study directory (checkpoints, drafts, expert answers, results)', 'runs/study')
    .option('--report <dir>', 'where the Markdown report, raw JSON and SVG plots go', 'reports')
    .option('--no-progress', 'no progress bars')
    .action(async (f: { preset: 'quick' | 'full'; out: string; report: string; progress: boolean }) => {
      await reproduce({ out: f.out, preset: f.preset, progress: f.progress });
      const { files } = await writeReport(f.out, f.report);
      console.log(`report: ${path.join(f.report, 'README.md')} (${files.length} files)`);
    });
}
