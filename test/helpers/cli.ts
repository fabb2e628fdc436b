/** Runs the `rediff` command from source in a child process, as a user would, and keeps what it printed. */
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const MAIN = path.resolve('src/cli/main.ts');

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function rediff(...args: string[]): Promise<CommandResult> {
  return rediffWith({}, ...args);
}

/** The same with extra environment variables (an expert's API key, say). */
export async function rediffWith(env: Record<string, string>, ...args: string[]): Promise<CommandResult> {
  try {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', MAIN, ...args], {
      env: { ...process.env, NODE_NO_WARNINGS: '1', ...env },
    });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}
