/** Where models come from when no --checkpoint is given: the shipped models under models/. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { UserError } from '../util/errors.js';
import { shippedModelDir } from '../model/shipped.js';

export { shippedModelDir } from '../model/shipped.js';

export function resolveCheckpoint(given: string | undefined, shipped: 'rediff' | 'baseline'): string {
  if (given) return given;
  const dir = shippedModelDir(shipped);
  if (!fs.existsSync(path.join(dir, 'checkpoint.json'))) {
    throw new UserError(`no --checkpoint given and no shipped model at ${dir}; train one with "rediff train" first`);
  }
  return dir;
}
