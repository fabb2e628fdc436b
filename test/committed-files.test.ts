import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { recordedPath } from '../src/util/paths.js';

const root = path.resolve(import.meta.dirname, '..');

/** Committed files of these kinds, or null outside a git clone (a packed tarball, say). */
function committed(...patterns: string[]): string[] | null {
  try {
    const out = execFileSync('git', ['ls-files', '-z', '--', ...patterns], { cwd: root, encoding: 'utf8' });
    return out.split('\0').filter((f) => f !== '' && fs.existsSync(path.join(root, f)));
  } catch {
    return null;
  }
}

/**
 * Absolute paths of a machine: this checkout's own location, and anything under the usual
 * roots of home and work directories (system paths such as /usr/bin/chromium are fine).
 */
function machinePaths(text: string): string[] {
  const roots =
    /(?<![\w.:/])(?:\/(?:home|Users|root|work|tmp|mnt|private|var\/folders)\/|[A-Z]:\\Users\\)[^\s"'`)\]]*/g;
  const found = [...text.matchAll(roots)].map((m) => m[0]);
  // The checkout's own location, unless a root above already matched it (a clone under /work, say).
  if (text.includes(root) && !found.some((f) => f.startsWith(root))) found.push(root);
  return found;
}

test('the scan for machine paths finds them, and passes URLs, API routes and system paths', () => {
  assert.deepEqual(machinePaths('"init": "/work/main/runs/study-v4/stage1"'), ['/work/main/runs/study-v4/stage1']);
  assert.deepEqual(machinePaths('from `/home/me/rediff/models/base`'), ['/home/me/rediff/models/base']);
  assert.deepEqual(machinePaths(`at ${path.join(root, 'models')}`).length > 0, true);
  assert.deepEqual(
    machinePaths('http://127.0.0.1:8080/v1/captions, GET /ort/:file, /usr/bin/chromium, runs/study/tmp/x'),
    [],
  );
});

test('committed JSON and Markdown name no absolute path of the machine they were made on', (t) => {
  const files = committed('*.json', '*.md');
  if (files === null) return t.skip('not a git clone');
  assert.ok(files.includes('reports/results.json') && files.includes('models/base/checkpoint.json'));
  const leaks = files.flatMap((f) =>
    machinePaths(fs.readFileSync(path.join(root, f), 'utf8')).map((p) => `${f}: ${p}`),
  );
  assert.deepEqual(leaks, []);
});

/** GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens. */
const anchorOf = (heading: string): string =>
  heading
    .toLowerCase()
    .replace(/[^\p{L}\p{N} _-]/gu, '')
    .replace(/ /g, '-');

test('every docs/PAGE.md#anchor that code and docs cite is a heading of that page', (t) => {
  const files = committed('src/**/*.ts', '*.md');
  if (files === null) return t.skip('not a git clone');
  const cited = files.flatMap((f) =>
    [...fs.readFileSync(path.join(root, f), 'utf8').matchAll(/docs\/([\w-]+\.md)#([\w-]+)/g)].map((m) => ({
      f,
      page: m[1]!,
      anchor: m[2]!,
    })),
  );
  assert.ok(
    cited.some((c) => c.page === 'design.md'),
    'the code cites the design notes',
  );
  const missing = cited.filter(({ page, anchor }) => {
    const file = path.join(root, 'docs', page);
    if (!fs.existsSync(file)) return true;
    const headings = fs.readFileSync(file, 'utf8').match(/^#+ .*$/gm) ?? [];
    return !headings.some((h) => anchorOf(h.replace(/^#+ /, '')) === anchor);
  });
  assert.deepEqual(missing, []);
});

test('no line of the sources, tests, benchmarks or scripts is over 120 characters (Biome keeps strings)', (t) => {
  const files = committed('src/*', 'test/*', 'bench/*', 'scripts/*');
  if (files === null) return t.skip('not a git clone');
  const code = files.filter((f) => /\.(ts|mjs|js|py)$/.test(f));
  assert.ok(code.length > 100);
  const long = code.flatMap((f) =>
    fs
      .readFileSync(path.join(root, f), 'utf8')
      .split('\n')
      .flatMap((line, i) => (line.length > 120 ? [`${f}:${i + 1}: ${line.length} characters`] : [])),
  );
  assert.deepEqual(long, []);
});

test('runs record paths relative to the working directory', () => {
  const cwd = path.join(path.sep, 'somewhere', 'rediff');
  assert.equal(recordedPath(path.join(cwd, 'runs', 'study', 'stage1'), cwd), 'runs/study/stage1');
  assert.equal(recordedPath('models/base', cwd), 'models/base');
  assert.equal(recordedPath(cwd, cwd), '.');
  // Outside the working directory a path would mean nothing elsewhere: its last name only.
  assert.equal(recordedPath(path.join(path.sep, 'elsewhere', 'base'), cwd), 'base');
});
