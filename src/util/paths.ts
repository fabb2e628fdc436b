/**
 * Paths as the files a run writes record them (checkpoints, study results, reports): relative
 * to the working directory, with '/' separators, so that the runs and models made in a clone
 * name each other the same way on every machine. A path outside the working directory would
 * mean nothing elsewhere: it is recorded by its last name only.
 */
import * as path from 'node:path';

export function recordedPath(p: string, cwd = process.cwd()): string {
  const absolute = path.resolve(cwd, p);
  const relative = path.relative(cwd, absolute);
  if (relative === '') return '.';
  if (relative === '..' || relative.startsWith(`..${path.sep}`) || path.isAbsolute(relative))
    return path.basename(absolute);
  return relative.split(path.sep).join('/');
}
