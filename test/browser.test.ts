/**
 * The page in a real browser (Chromium driven by playwright-core): generate a scene,
 * run both models at 4 tokens per step on the server, see both captions complete with scores
 * and at least one refined token marked, screenshot the page mid-refinement; then the same in
 * the in-browser mode (onnxruntime-web), which must give the same captions.
 *
 * The models are tiny and randomly initialised. Such a model changes its mind about decoded
 * positions as the context fills in, so the refining sampler rewrites tokens at almost every
 * step (hundreds of refinements per caption); with a fixed model seed and scene seed the run is
 * deterministic, so "at least one refinement" is guaranteed, not likely.
 *
 * The browser: $REDIFF_CHROMIUM, else a system Chrome or Chromium, else on Linux x64 the one the
 * @sparticuz/chromium dev dependency ships (test/helpers/browser.ts). Without one the test fails
 * saying so; REDIFF_SKIP_BROWSER=1 skips it on purpose.
 * The screenshot goes to $REDIFF_SCREENSHOT, default <tmpdir>/rediff-page-mid-refinement.png.
 * For the README's screenshot, run it on trained models: REDIFF_SCREENSHOT_MODELS=models (a
 * folder with baseline/ and rediff/ checkpoints) REDIFF_SCREENSHOT=docs/page.png.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as os from 'node:os';
import * as path from 'node:path';
import { makeTinyModels } from './helpers/models.js';
import { createServer } from '../src/server/app.js';
import { findChromium } from './helpers/browser.js';

const skip = process.env.REDIFF_SKIP_BROWSER === '1' ? 'REDIFF_SKIP_BROWSER=1: browser test skipped on purpose' : false;
const SCREENSHOT = process.env.REDIFF_SCREENSHOT ?? path.join(os.tmpdir(), 'rediff-page-mid-refinement.png');

const makeModels = (): ReturnType<typeof makeTinyModels> => makeTinyModels('rediff-browser-');

test('the page captions a generated scene with both models and marks refined tokens', {
  skip,
  timeout: 180_000,
}, async (t) => {
  const found = await findChromium();
  if ('error' in found) assert.fail(found.error);
  t.diagnostic(`browser: ${found.path} (${found.source})`);
  const { chromium } = await import('playwright-core');
  const real = process.env.REDIFF_SCREENSHOT_MODELS;
  const models = real
    ? ['baseline', 'rediff'].map((name) => ({ name, dir: path.join(real, name) }))
    : await makeModels();
  const server = await createServer({ models });
  const url = await server.listen(0);
  const browser = await chromium.launch({
    executablePath: found.path,
    args: [
      '--no-sandbox',
      '--headless',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    await page.goto(`${url}/`);
    await page.waitForSelector('body[data-ready="1"]', { timeout: 30_000 });

    // Generate a scene with the button, then pin its seed so the run is reproducible.
    await page.click('#new-scene');
    assert.match((await page.textContent('#image-label')) ?? '', /benchmark scene/);
    await page.fill('#scene-seed', '12345');
    await page.dispatchEvent('#scene-seed', 'change');
    assert.ok((await page.locator('#scene-objects li').count()) >= 1);

    const runBoth = async (
      mode: 'server' | 'browser',
    ): Promise<Record<string, { refinements: number; steps: number; final: string }>> => {
      await page.check('input[name="tps"][value="4"]');
      await page.check(`input[name="mode"][value="${mode}"]`);
      // Records what the panels show at the moment the header first says "done".
      await page.evaluate(() => {
        const w = window as unknown as { atDone: string[] | null };
        w.atDone = null;
        const status = document.getElementById('status')!;
        const seen = new MutationObserver(() => {
          if (w.atDone === null && status.textContent!.startsWith('done')) {
            w.atDone = Array.from(document.querySelectorAll<HTMLElement>('.panel')).map(
              (p) =>
                `${p.dataset.state} ${p.querySelector('.step-label')!.textContent} final ` +
                `${p.querySelector<HTMLElement>('.final')!.hidden ? 'hidden' : 'shown'}`,
            );
            seen.disconnect();
          }
        });
        seen.observe(status, { childList: true, characterData: true, subtree: true });
      });
      await page.click('#run');
      await page.waitForSelector('body[data-run="done"]', { timeout: 120_000 });
      for (const m of ['baseline', 'rediff']) {
        await page.waitForSelector(`#panel-${m}[data-state="done"]`, { timeout: 1000 });
        await page.waitForSelector(`#panel-${m} .final:not([hidden])`, { timeout: 1000 });
      }
      // "done" only once both panels show their last step and final caption, with one step count
      // everywhere: each panel's label and the slider count the steps taken.
      const atDone = await page.evaluate(() => (window as unknown as { atDone: string[] | null }).atDone);
      const steps = await page.evaluate(() =>
        Array.from(document.querySelectorAll<HTMLElement>('.panel')).map((p) => Number(p.dataset.steps)),
      );
      assert.deepEqual(
        atDone,
        steps.map((n) => `done step ${n} / ${n} (final) final shown`),
        `${mode}: what the panels showed when the header said done`,
      );
      const most = Math.max(...steps);
      assert.equal(await page.textContent('#scrub-label'), `step ${most} / ${most}`);
      assert.equal(await page.getAttribute('#scrubber', 'max'), String(most));
      return page.evaluate(() =>
        Object.fromEntries(
          Array.from(document.querySelectorAll<HTMLElement>('.panel')).map((p) => [
            p.id.replace('panel-', ''),
            {
              refinements: Number(p.dataset.refinements),
              steps: Number(p.dataset.steps),
              final: p.querySelector('.final-text')?.textContent ?? '',
            },
          ]),
        ),
      );
    };

    const onServer = await runBoth('server');
    t.diagnostic(
      `server: baseline ${onServer.baseline!.steps} steps, rediff ${onServer.rediff!.steps} steps with ` +
        `${onServer.rediff!.refinements} refinements`,
    );
    assert.ok(
      onServer.baseline!.steps >= 1 && onServer.baseline!.steps <= 24,
      '96 tokens at 4 per step: at most 24 steps',
    );
    assert.ok(onServer.rediff!.steps >= 1 && onServer.rediff!.steps <= 24);
    assert.ok(onServer.baseline!.final.length > 0 && onServer.rediff!.final.length > 0);
    assert.equal(onServer.baseline!.refinements, 0, 'the LLaDA sampler never rewrites a token');
    assert.ok(onServer.rediff!.refinements > 0, 'the refining sampler rewrote tokens');
    // Scores for the generated scene, for both captions.
    for (const m of ['baseline', 'rediff']) {
      const rows = await page.locator(`#panel-${m} .scores tr`).allTextContents();
      assert.equal(rows.length, 3);
      assert.match(rows.join(' '), /Factuality.*Described.*CAPTURE/);
    }

    // Scrub through the steps: refined tokens are marked where ReDiff rewrote something.
    const steps = Number(await page.getAttribute('#scrubber', 'max'));
    const scrub = (k: number) =>
      page.$eval(
        '#scrubber',
        (e, v) => {
          (e as HTMLInputElement).value = String(v);
          e.dispatchEvent(new Event('input'));
        },
        k,
      );
    let best = { step: 1, marked: 0 };
    for (let k = 1; k <= steps; k++) {
      await scrub(k);
      const marked = await page.locator('#panel-rediff .tok.refined').count();
      if (marked > best.marked) best = { step: k, marked };
      assert.equal(await page.locator('#panel-baseline .tok.refined').count(), 0);
    }
    // The screenshot shows the step with the most rewrites.
    await scrub(best.step);
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    t.diagnostic(`screenshot at step ${best.step} (${best.marked} refined tokens marked): ${SCREENSHOT}`);
    assert.ok(best.marked > 0, 'a refined token is marked at some step');

    // The in-browser mode runs the exported ONNX models with onnxruntime-web and the same sampler.
    const inBrowser = await runBoth('browser');
    assert.equal(inBrowser.baseline!.final, onServer.baseline!.final);
    assert.equal(inBrowser.rediff!.final, onServer.rediff!.final);
    assert.equal(inBrowser.rediff!.refinements, onServer.rediff!.refinements);
    assert.deepEqual(errors, []);

    // A file that is not an image: the old image is cleared, captioning is off and the error
    // stays until a good image is chosen.
    const litPixels = (): Promise<number> =>
      page.$eval('#view', (c) => {
        const d = (c as HTMLCanvasElement)
          .getContext('2d')!
          .getImageData(0, 0, (c as HTMLCanvasElement).width, (c as HTMLCanvasElement).height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i]! + d[i + 1]! + d[i + 2]! > 0) n++;
        return n;
      });
    assert.ok((await litPixels()) > 0, 'the scene is drawn');
    await page.setInputFiles('#upload', {
      name: 'notes.png',
      mimeType: 'image/png',
      buffer: Buffer.from('not an image, just text\n'),
    });
    await page.waitForSelector('#status.error', { timeout: 10_000 });
    assert.match((await page.textContent('#status')) ?? '', /cannot read notes\.png as an image/);
    assert.equal(await page.isDisabled('#run'), true, 'captioning is off without an image');
    assert.match((await page.textContent('#image-label')) ?? '', /^no image/);
    assert.equal(await litPixels(), 0, 'the old image is cleared');
    assert.equal(await page.isHidden('#scene-box'), true);
    await page.check('input[name="tps"][value="8"]');
    assert.match((await page.textContent('#status')) ?? '', /cannot read notes\.png/, 'the error stays');
    await page.click('#new-scene');
    assert.equal(await page.isDisabled('#run'), false, 'a good image turns captioning back on');
    assert.equal(await page.locator('#status.error').count(), 0, 'and clears the error');
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await server.close();
  }
});

test('the browser search: REDIFF_CHROMIUM wins, and one that does not exist is named', async () => {
  assert.deepEqual(await findChromium({ REDIFF_CHROMIUM: process.execPath }), {
    path: process.execPath,
    source: 'REDIFF_CHROMIUM',
  });
  const missing = await findChromium({ REDIFF_CHROMIUM: '/nonexistent/chrome' });
  assert.deepEqual(missing, { error: 'REDIFF_CHROMIUM=/nonexistent/chrome does not exist' });
});
