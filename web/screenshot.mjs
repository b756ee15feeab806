// The README's picture of the page: one epoch of the exported plan in headless Chromium, then a
// screenshot. Run from web/:   node screenshot.mjs [out.png]     (plan: $VAE_WEB_PLAN or plan-test)
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startBrowserAndServer } from './tests/chromium.mjs';

const WEB = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] || resolve(WEB, '../docs/web.png'));
const plan = process.env.VAE_WEB_PLAN || 'plan-test';
const { browser, baseUrl: url, close } = await startBrowserAndServer(WEB);
const page = await browser.newPage({ viewport: { width: 1280, height: 1500 } });
const q = new URLSearchParams({ plan: `${plan}/`, epochs: '1', matmul: 'auto', autostart: '1' });
const t0 = performance.now();
await page.goto(`${url}index.html?${q}`);
await page.waitForFunction(() => {
  const t = /** @type {any} */ (window).vaeTest;
  return t?.error || t?.epochDone >= 1;
}, null, { timeout: 30 * 60_000, polling: 1000 });
await page.waitForTimeout(1500); // the pictures are drawn after the epoch's line
const r = await page.evaluate(() => /** @type {any} */ (window).vaeTest);
if (r.error) throw new Error(r.error);
await page.screenshot({ path: out, fullPage: true });
console.log(`epoch 1 in ${((performance.now() - t0) / 1000).toFixed(0)} s: ${JSON.stringify(r.epochs)}`);
console.log(`wrote ${out}`);
await close();
