#!/usr/bin/env node
/**
 * The rediff command line. Every command validates its flags; a UserError prints one line
 * ("rediff: ...") and exits 1, never a stack trace.
 */
import { Command, CommanderError } from 'commander';
import { UserError } from '../util/errors.js';
import { redactSecrets } from '../util/redact.js';
import { registerGenerate } from './commands/generate.js';
import { registerInfo } from './commands/info.js';
import { registerTrain } from './commands/train.js';
import { registerData } from './commands/data.js';
import { registerEval } from './commands/eval.js';
import { registerDemo } from './commands/demo.js';
import { registerServe } from './commands/serve.js';
import { registerReproduce } from './commands/reproduce.js';
import { registerExport } from './commands/export.js';
import { registerRepair } from './commands/repair.js';
import { registerPretrain } from './commands/pretrain.js';
import { registerDiagnose } from './commands/diagnose.js';

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('rediff')
    .description('ReDiff: a masked-diffusion vision-language captioner that refines its own output')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  registerTrain(program);
  registerPretrain(program);
  registerGenerate(program);
  registerEval(program);
  registerRepair(program);
  registerDiagnose(program);
  registerData(program);
  registerInfo(program);
  registerDemo(program);
  registerServe(program);
  registerReproduce(program);
  registerExport(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    if (e instanceof UserError) {
      process.stderr.write(`rediff: ${redactSecrets(e.message)}\n`);
      return 1;
    }
    throw e;
  }
}

main(process.argv).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`rediff: internal error: ${redactSecrets((e as Error)?.stack ?? String(e))}\n`);
    process.exitCode = 70;
  },
);
