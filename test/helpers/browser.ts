/**
 * The Chromium the page test drives: $REDIFF_CHROMIUM, else a system Chrome or Chromium, else
 * (Linux x64 only) the headless Chromium that the @sparticuz/chromium dev dependency ships, so a
 * fresh clone needs no system browser. It unpacks itself into <tmpdir>/chromium on first use
 * (about 5 s) and is reused from there.
 */
import * as fs from 'node:fs';

export const SYSTEM_CHROMIUM = [
  '/usr/bin/chromium',
  '/usr/bin/chromium-browser',
  '/usr/bin/google-chrome',
  '/usr/bin/google-chrome-stable',
];

export type FoundChromium = { path: string; source: string } | { error: string };

export async function findChromium(env: NodeJS.ProcessEnv = process.env): Promise<FoundChromium> {
  if (env.REDIFF_CHROMIUM) {
    return fs.existsSync(env.REDIFF_CHROMIUM)
      ? { path: env.REDIFF_CHROMIUM, source: 'REDIFF_CHROMIUM' }
      : { error: `REDIFF_CHROMIUM=${env.REDIFF_CHROMIUM} does not exist` };
  }
  const system = SYSTEM_CHROMIUM.find((p) => fs.existsSync(p));
  if (system) return { path: system, source: 'system' };
  if (process.platform === 'linux' && process.arch === 'x64') {
    const { default: chromium } = await import('@sparticuz/chromium');
    return { path: await chromium.executablePath(), source: '@sparticuz/chromium' };
  }
  return {
    error:
      `no Chromium at ${SYSTEM_CHROMIUM.join(', ')}, and @sparticuz/chromium ships one for Linux x64 only: ` +
      'install Chrome or Chromium, point REDIFF_CHROMIUM at one, or set REDIFF_SKIP_BROWSER=1 to skip this test',
  };
}
