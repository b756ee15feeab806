// Your own model and images in the page: the exporter plans any depth and activation on any
// image folder, and the page replays it with no code of its own for layers or colour. Plan
// web/plan-deep: a 768-48-24-6 tanh model on 16x16 RGB pictures (examples/shapes.rs), conditional
// on their three class folders, exported by `npm test`'s pretest:
//   cd .. && cargo run --release --example shapes -- --out web/plan-deep-data --per-class 100 --size 16
//   cargo run --release --example export_web -- --out web/plan-deep --reference-steps 8 \
//     --matmul direct --hidden 48,24 --latent 6 --activation tanh \
//     --beta 2 --kl-warmup 0.5 --conditional --optimizer adamw --lr-schedule cosine --warmup-steps 3 --data-dir web/plan-deep-data --channels 3 --image-size 16 --batch-size 32

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
const PLAN_DIR = join(WEB, 'plan-deep');
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

test('a conditional 768-48-24-6 tanh model on RGB pictures trains and draws in the page as natively', { timeout: 20 * MIN }, async () => {
  const { plan, reference } = readPlanAndReference(PLAN_DIR);
  assert.deepEqual(plan.model.hidden, [48, 24]);
  assert.equal(plan.model.activation, 'tanh');
  assert.equal(plan.model.classes, 3);
  assert.deepEqual(plan.model.class_names, ['bars', 'discs', 'squares']);
  assert.deepEqual(plan.image, { width: 16, height: 16, channels: 3 });
  // 16 dispatches for one hidden layer a side, 3 more per extra layer; conditioning adds the
  // labels' gather and, on each side, the label columns forward and their gradient.
  assert.equal(plan.graphs.train.dispatches.length, 27);

  const { page, errors, close } = await newRecordedPage(browser);
  try {
    const q = new URLSearchParams({ plan: 'plan-deep/', steps: String(reference.steps), matmul: 'direct', autostart: '1' });
    const t0 = performance.now();
    const result = await runStepsMode(page, `${baseUrl}index.html?${q}`, 15 * MIN);
    assert.equal(result.error, null, `the page failed: ${result.error}`);
    assert.equal(result.dispatchesPerStep, 27);
    assertLossesClose(result.losses, reference.batch_losses, 1e-4, (worst) =>
      console.log(
        `deep plan: ${reference.steps} steps in ${((performance.now() - t0) / 1000).toFixed(1)} s, ` +
          `worst relative loss difference ${worst.toExponential(2)}`,
      ),
    );
    // The page describes the model as the native trainer does.
    const logText = (await page.textContent('#log')) ?? '';
    assert.ok(logText.includes('model: 768-48-24-6 tanh'), logText);
    // The samples: one row per class, named.
    const caption = (await page.textContent('#samples-caption')) ?? '';
    assert.ok(caption.includes('one row per class: bars, discs, squares'), caption);
    // The pictures are in colour: originals (top row of the reconstructions) have pixels whose
    // channels differ.
    const coloured = await page.evaluate(() => {
      const c = /** @type {HTMLCanvasElement} */ (document.getElementById('reconstructions'));
      const d = /** @type {CanvasRenderingContext2D} */ (c.getContext('2d')).getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 0; i < d.length; i += 4) {
        if (Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 40) n++;
      }
      return n;
    });
    assert.ok(coloured > 100, `only ${coloured} coloured pixels in the reconstructions`);
    assert.deepEqual(errors, [], 'page or console errors');
  } finally {
    await close();
  }
});
