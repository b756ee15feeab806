// Steps per second of the page's runtime (headless Chromium; SwiftShader without a GPU) against the
// native engine on this machine's adapter, measured one after the other in one run, with the
// dispatches per step of each. Run from web/ after `npm test` has exported plan-test:
//   node bench.mjs [steps]          (default 60 steps in the page, after its kernel choice)
import { spawnSync } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startBrowserAndServer } from './tests/chromium.mjs';

const WEB = dirname(fileURLToPath(import.meta.url));
const steps = Number(process.argv[2] || 60);
const plan = process.env.VAE_WEB_PLAN || 'plan-test';
const { browser, baseUrl: url, close } = await startBrowserAndServer(WEB);
const page = await browser.newPage();
const q = new URLSearchParams({ plan: `${plan}/`, steps: String(steps), matmul: 'auto', autostart: '1' });
await page.goto(`${url}index.html?${q}`);
await page.waitForFunction(() => /** @type {any} */ (window).vaeTest?.done || /** @type {any} */ (window).vaeTest?.error, null, { timeout: 30 * 60_000, polling: 500 });
const r = await page.evaluate(() => {
  const t = /** @type {any} */ (window).vaeTest;
  return { error: t.error, stepsPerSecond: t.stepsPerSecond, dispatches: t.dispatchesPerStep, adapter: t.adapter, matmul: t.matmul };
});
await close();
if (r.error) throw new Error(r.error);
console.log(`browser: ${r.stepsPerSecond.toFixed(2)} steps/s over ${steps} steps, ${r.dispatches} dispatches/step, adapter ${JSON.stringify(r.adapter)}, kernels ${JSON.stringify(r.matmul)}`);
const native = spawnSync('cargo', ['bench', '--bench', 'training'], {
  cwd: resolve(WEB, '..'), env: { ...process.env, VAE_BENCH_EPOCHS: '0' }, encoding: 'utf8',
});
const out = native.stdout || '';
const adapter = out.match(/^adapter: (.*)$/m)?.[1];
const ms = Number(out.match(/100 steps back to back, 1 per submit: ([\d.]+) ms per step/)?.[1]);
const disp = out.match(/dispatches per training step: (\d+)/)?.[1];
if (!ms) throw new Error(`native benchmark failed:\n${out}\n${native.stderr}`);
console.log(`native: ${(1000 / ms).toFixed(2)} steps/s, ${disp} dispatches/step, adapter ${adapter}`);
console.log(`browser / native: ${(r.stepsPerSecond / (1000 / ms)).toFixed(3)}`);
