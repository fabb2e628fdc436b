/**
 * The packed tarball installed by npm itself in an empty project (test/package.test.ts links the
 * dependencies instead): `npm install --prefer-offline` of the tarball, with the allowScripts the
 * README asks of users, then the same TypeScript consumer, and the installed `rediff` command. The dependencies'
 * metadata comes from
 * the registry, their tarballs from npm's cache where `npm ci` left them (about 600 MB unpacked).
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { checkConsumer, packTarball, writeProject } from '../helpers/package.js';

const run = promisify(execFile);
const ROOT = path.resolve('.');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rediff-package-install-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('npm install of the packed tarball in an empty project, then import and caption', {
  timeout: 600_000,
}, async (t) => {
  const { file } = await packTarball(ROOT, tmp);
  const project = path.join(tmp, 'project');
  writeProject(project, file);
  const t0 = performance.now();
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const { stderr } = await run(npm, ['install', '--prefer-offline', '--no-audit', '--no-fund'], {
    cwd: project,
    maxBuffer: 1 << 24,
  });
  t.diagnostic(`npm install: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  assert.doesNotMatch(stderr, /ERR!/);
  assert.ok(fs.existsSync(path.join(project, 'node_modules', 'onnxruntime-node', 'package.json')));
  const got = await checkConsumer(project, ROOT);
  t.diagnostic(`caption: ${got.text}`);
  // The installed command line, on the consumer's scene.png, with the shipped model.
  const png = path.join(project, 'scene.png');
  const cli = await run(path.join(project, 'node_modules', '.bin', 'rediff'), ['generate', '--image', png, '--json']);
  assert.equal((JSON.parse(cli.stdout) as { caption: string }).caption, got.text);
});
