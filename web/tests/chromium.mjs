// Headless Chromium with WebGPU for the page's tests and tools: Debian's chromium (or
// CHROMIUM_PATH) through playwright-core. WebGPU runs on SwiftShader where there is no GPU; the
// last five flags are for a machine without network.
import { chromium } from 'playwright-core';

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
