// Headless Chromium with WebGPU for the page's tests and tools: Debian's chromium (or
// CHROMIUM_PATH) through playwright-core. WebGPU runs on SwiftShader where there is no GPU; the
// last five flags are for a machine without network.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { startServer } from '../serve.mjs';

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const ARGS = [
  '--no-sandbox',
  '--enable-unsafe-webgpu',
  '--enable-features=Vulkan,WebGPU',
  '--use-angle=vulkan',
  '--ignore-gpu-blocklist',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];

/** @returns {Promise<import('playwright-core').Browser>} */
export function launchChromium() {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
}

/**
 * A fresh page in its own context that records page errors and console errors, with an empty
 * same-origin page at `__blank.html` (a secure context, so navigator.gpu exists).
 * @param {import('playwright-core').Browser} browser
 * @returns {Promise<{page: import('playwright-core').Page, errors: string[], close: () => Promise<void>}>}
 */
export async function newRecordedPage(browser) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1400 } });
  const page = await context.newPage();
  /** @type {string[]} */
  const errors = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console.error: ${m.text()} (${m.location().url})`);
  });
  await page.route('**/__blank.html', (r) =>
    r.fulfill({ contentType: 'text/html', body: '<!doctype html><title>blank</title>' }),
  );
  return { page, errors, close: () => context.close() };
}

/**
 * What a browser test file needs: the page's server on `root` (web/) and Chromium, checked to be
 * there. `close()` stops both.
 * @param {string} root
 */
export async function startBrowserAndServer(root) {
  assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM} (apt-get install -y chromium, or set CHROMIUM_PATH)`);
  const { server, url } = await startServer({ port: 0, root, quiet: true });
  const browser = await launchChromium();
  return {
    browser,
    baseUrl: url,
    close: async () => {
      await browser.close();
      server.close();
    },
  };
}

/**
 * Load the page in steps mode (`steps` training steps, then pictures) and wait for it to finish;
 * returns what it left on `window.vaeTest`.
 * @param {import('playwright-core').Page} page @param {string} url @param {number} timeout ms
 */
export async function runStepsMode(page, url, timeout) {
  await page.goto(url);
  await page.waitForFunction(() => /** @type {any} */ (window).vaeTest?.done === true, null, {
    timeout,
    polling: 500,
  });
  return page.evaluate(() => /** @type {any} */ (window).vaeTest);
}

/**
 * The page's batch losses against the native engine's: the worst relative difference (given to
 * `report` first, so a failure still shows it), then every step within `rel`.
 * @param {number[]} got @param {number[]} want @param {number} rel
 * @param {(worst: number, at: number) => void} report
 */
export function assertLossesClose(got, want, rel, report) {
  assert.equal(got.length, want.length);
  let worst = 0;
  let worstAt = -1;
  for (let i = 0; i < want.length; i++) {
    const r = Math.abs(got[i] - want[i]) / Math.abs(want[i]);
    if (!(r <= worst)) {
      worst = r;
      worstAt = i;
    }
  }
  report(worst, worstAt);
  for (let i = 0; i < want.length; i++) {
    const r = Math.abs(got[i] - want[i]) / Math.abs(want[i]);
    assert.ok(r <= rel, `step ${i}: page ${got[i]}, native ${want[i]} (relative difference ${r.toExponential(2)})`);
  }
}

/**
 * An exported plan and the native engine's reference steps in `dir` (npm test's pretest writes
 * them), parsed; a missing file says how to make it.
 * @param {string} dir
 */
export function readPlanAndReference(dir) {
  for (const f of ['plan.json', 'reference.json']) {
    assert.ok(existsSync(join(dir, f)), `missing ${join(dir, f)}: run npm test (its pretest exports it)`);
  }
  return {
    plan: JSON.parse(readFileSync(join(dir, 'plan.json'), 'utf8')),
    reference: JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8')),
  };
}
