/** Where models come from when no --checkpoint is given: the shipped models under models/. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UserError } from '../util/errors.js';

/** The repository root (two levels above this file in both src/ and dist/). */
export const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export function shippedModelDir(name: 'rediff' | 'baseline' | 'base'): string {
  return path.join(PACKAGE_ROOT, 'models', name);
}

export function resolveCheckpoint(given: string | undefined, shipped: 'rediff' | 'baseline'): string {
  if (given) return given;
  const dir = shippedModelDir(shipped);
  if (!fs.existsSync(path.join(dir, 'checkpoint.json'))) {
    throw new UserError(`no --checkpoint given and no shipped model at ${dir}; train one with "rediff train" first`);
  }
  return dir;
}
