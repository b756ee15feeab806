// A convolutional model in the page: the exporter plans the `--conv` layers (direct or GEMM
// formulation, as measured natively) and the page replays them with no code of its own for
// convolutions. Plan web/plan-conv: `--conv 4,8 --latent 6 --likelihood gaussian --objective iwae
// --samples 2` (a learned σ: the standalone likelihood kernel and log σ's gradient; the IWAE
// objective: per-row log-likelihoods, importance weights, the weighted backward) on the 16x16 RGB
// pictures of web/plan-deep-data, exported by `npm test`'s pretest:
//   cargo run --release --example export_web -- --out web/plan-conv --reference-steps 8 \
//     --matmul direct --conv 4,8 --latent 6 --likelihood gaussian --objective iwae --samples 2 \
//     --data-dir web/plan-deep-data --channels 3 --image-size 16 --batch-size 32

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  assertLossesClose,
  newRecordedPage,
  readPlanAndReference,
  runStepsMode,
  startBrowserAndServer,
} from './chromium.mjs';

const WEB = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const PLAN_DIR = join(WEB, 'plan-conv');
const MIN = 60_000;

/** @type {import('playwright-core').Browser} */
let browser;
let baseUrl = '';
/** @type {() => Promise<void>} */
let stop;

before(async () => {
  ({ browser, baseUrl, close: stop } = await startBrowserAndServer(WEB));
});

after(async () => {
  await stop?.();
});

test('a conv model on RGB pictures trains in the page as natively', { timeout: 20 * MIN }, async () => {
  const { plan, reference } = readPlanAndReference(PLAN_DIR);
  assert.deepEqual(plan.model.conv, [4, 8]);
  assert.deepEqual(plan.image, { width: 16, height: 16, channels: 3 });
  const dispatches = plan.graphs.train.dispatches;
  // The conv layers are in the plan: their kernels come from the conv module.
  assert.ok(dispatches.some((/** @type {{shader: string}} */ d) => d.shader === 'conv'), 'no conv dispatch in the plan');
  assert.equal(plan.model.likelihood, 'gaussian');
  assert.ok(dispatches.some((/** @type {{entry: string}} */ d) => d.entry === 'sum_to'), 'no log σ gradient in the plan');
  assert.equal(plan.model.objective, 'iwae');
  assert.ok(dispatches.some((/** @type {{entry: string}} */ d) => d.entry === 'iwae_weights'), 'no IWAE weights in the plan');

  const { page, errors, close } = await newRecordedPage(browser);
  try {
    const q = new URLSearchParams({ plan: 'plan-conv/', steps: String(reference.steps), matmul: 'direct', autostart: '1' });
    const t0 = performance.now();
    const result = await runStepsMode(page, `${baseUrl}index.html?${q}`, 15 * MIN);
    assert.equal(result.error, null, `the page failed: ${result.error}`);
    assert.equal(result.dispatchesPerStep, dispatches.length);
    assertLossesClose(result.losses, reference.batch_losses, 1e-4, (worst) =>
      console.log(
        `conv plan: ${reference.steps} steps in ${((performance.now() - t0) / 1000).toFixed(1)} s, ` +
          `worst relative loss difference ${worst.toExponential(2)}`,
      ),
    );
    const logText = (await page.textContent('#log')) ?? '';
    assert.ok(logText.includes('model: 3x16x16-c4-c8-6 relu'), logText);
    assert.deepEqual(errors, [], 'page or console errors');
  } finally {
    await close();
  }
});
