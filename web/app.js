// @ts-check
// The page: loads the plan, creates the runtime, and runs the training schedule of
// docs/PLAN_FORMAT.md (per-step uniform rules, epochs, test loss, pictures), with a UI.
//
// URL parameters: plan=URL (default plan/), autostart=1, matmul=auto|plan|direct|subgroup|tiled,
// epochs=N (the epochs input's value), steps=N (test mode: exactly N training steps of epoch 1, the batch loss read after every step,
// then pictures; results on window.vaeTest), params=ID (the buffer whose bytes vaeTest.params
// returns; default reference.json's params.buffer).

import {
  createRuntime,
  errText,
  evalDrawsStart,
  evalRngStep,
  loadPlan,
  mulberry32,
  planBase,
  scheduledValues,
} from './runtime.js';

/**
 * The architecture as the native trainer prints it: `784-400-200-10 tanh` (a plan from before
 * layer lists had one number for `hidden` and no activation).
 * @param {{input: number, hidden: number | number[], latent: number, activation?: string, describe?: string}} m
 */
function describeModel(m) {
  if (m.describe) return m.describe;
  const hidden = Array.isArray(m.hidden) ? m.hidden : [m.hidden];
  return `${[m.input, ...hidden, m.latent].join('-')} ${m.activation ?? 'relu'}`;
}

/** @typedef {import('./runtime.js').Plan} Plan @typedef {import('./runtime.js').Runtime} Runtime */

const query = new URLSearchParams(location.search);
const PLAN_URL = query.get('plan') || 'plan/';
const STEPS = query.has('steps') ? Number(query.get('steps')) : null;
const MATMUL = query.get('matmul') || 'auto';
const AUTOSTART = query.get('autostart') === '1';
const EPOCHS = query.has('epochs') ? Number(query.get('epochs')) : null;
/** Steps allowed in flight before the loop waits for the oldest. */
const IN_FLIGHT = 4;

/**
 * What the browser tests read.
 * @type {{done: boolean, error: string|null, losses: number[], params: string|null,
 *   dispatchesPerStep: number|null, adapter: Record<string, any>|null, stepsPerSecond: number|null,
 *   epochDone: number, epochs: Record<string, number>[], matmul: Record<string, string>,
 *   phase: string, log: string[]}}
 */
const vaeTest = {
  done: false,
  error: null,
  losses: [],
  params: null,
  dispatchesPerStep: null,
  adapter: null,
  stepsPerSecond: null,
  epochDone: 0,
  epochs: [],
  matmul: {},
  phase: 'loading',
  log: [],
};
/** @type {any} */ (window).vaeTest = vaeTest;

/** @param {string} id */
function el(id) {
  const e = document.getElementById(id);
  if (!e) throw new Error(`the page has no #${id}`);
  return e;
}
const ui = {
  start: /** @type {HTMLButtonElement} */ (el('start')),
  epochs: /** @type {HTMLInputElement} */ (el('epochs')),
  batch: /** @type {HTMLSelectElement} */ (el('batch')),
  lr: /** @type {HTMLInputElement} */ (el('lr')),
  progress: /** @type {HTMLProgressElement} */ (el('progress')),
  rate: el('rate'),
  log: el('log'),
  error: el('error'),
  adapter: el('adapter'),
  planInfo: el('plan-info'),
  chart: /** @type {HTMLCanvasElement} */ (el('chart')),
  recon: /** @type {HTMLCanvasElement} */ (el('reconstructions')),
  samples: /** @type {HTMLCanvasElement} */ (el('samples')),
  samplesCaption: el('samples-caption'),
};

/** @param {string} line */
function log(line) {
  vaeTest.log.push(line);
  const atEnd = ui.log.scrollTop + ui.log.clientHeight >= ui.log.scrollHeight - 4;
  ui.log.textContent += line + '\n';
  if (atEnd) ui.log.scrollTop = ui.log.scrollHeight;
}

/** Show an error (once) and stop. @param {unknown} e */
function showError(e) {
  const msg = errText(e);
  if (vaeTest.error === null) {
    vaeTest.error = msg;
    ui.error.textContent = `error: ${msg}`;
    ui.error.classList.add('shown');
  }
  state.stop = true;
  ui.start.disabled = true;
  vaeTest.phase = 'error';
  vaeTest.done = true;
}
window.addEventListener('error', (ev) => {
  ev.preventDefault();
  showError(ev.error ?? ev.message);
});
window.addEventListener('unhandledrejection', (ev) => {
  ev.preventDefault();
  showError(ev.reason);
});

// ---------------------------------------------------------------------------------------------
// Host arithmetic of the native engine.


/**
 * @type {{plan: Plan|null, rt: Runtime|null, epoch: number, step: number, t: number,
 *   evalDraws: number, running: boolean, pause: boolean, stop: boolean, epochSecs: number,
 *   batchLosses: {x: number, y: number}[], epochLosses: {epoch: number, train: number, test: number|null}[],
 *   seedLo: number, seedHi: number}}
 */
const state = {
  plan: null,
  rt: null,
  epoch: 1,
  step: 0,
  t: 0,
  evalDraws: 0,
  running: false,
  pause: false,
  stop: false,
  epochSecs: 0,
  batchLosses: [],
  epochLosses: [],
  seedLo: 0,
  seedHi: 0,
};

/** The learning rate from the input (the decimal value meant, as the plan's), else the plan's. */
function lr() {
  const plan = /** @type {Plan} */ (state.plan);
  const v = Number(ui.lr.value);
  return Number.isFinite(v) && v > 0 ? v : plan.train.lr;
}

/** Uniform values of training step `t` (1-based over the run) at batch offset `offset`: the
 * plan's per-step rules (the optimizer's factors, the noise counter, the KL weight), evaluated as
 * the native engine evaluates them; the learning-rate input replaces the lr of every rule that has
 * one (the step size, AdamW's decay).
 * @param {number} t @param {number} offset */
function trainValues(t, offset) {
  const plan = /** @type {Plan} */ (state.plan);
  const fields = plan.uniform.fields;
  /** @type {Record<string, import('./runtime.js').Rule>} */
  const rules = {};
  for (const f of fields) {
    if (f.rule && 'lr' in f.rule) rules[f.name] = { ...f.rule, lr: lr() };
  }
  return { ...scheduledValues(fields, t, rules), batch_offset: offset };
}

/** Uniform values of the next evaluation step. @param {number} offset */
function evalValues(offset) {
  state.evalDraws += 1;
  return {
    batch_offset: offset,
    rng_step: evalRngStep(/** @type {Plan} */ (state.plan).evaluation, state.evalDraws),
    seed_lo: state.seedLo,
    seed_hi: state.seedHi,
    step_size: 0,
    bc2_sqrt: 0,
    kl_weight: 1,
    decay: 1,
  };
}

const yieldToBrowser = () => new Promise((r) => setTimeout(r, 0));

// ---------------------------------------------------------------------------------------------
// Setup.

async function main() {
  const base = planBase(PLAN_URL);
  ui.planInfo.textContent = `plan: ${base}`;
  const plan = await loadPlan(base);
  state.plan = plan;
  const tr = plan.train;
  state.seedLo = Number(/** @type {bigint} */ (plan.seed) & 0xffffffffn);
  state.seedHi = Number((/** @type {bigint} */ (plan.seed) >> 32n) & 0xffffffffn);
  ui.planInfo.textContent =
    `plan: ${base} — ${describeModel(plan.model)}, ` +
    `${plan.model.params} parameters; ${tr.train_len} train images, batch ${tr.batch}, ` +
    `${tr.steps_per_epoch} steps/epoch`;
  ui.batch.innerHTML = '';
  const opt = document.createElement('option');
  opt.value = opt.textContent = String(tr.batch);
  ui.batch.append(opt);
  ui.lr.value = String(tr.lr);
  ui.epochs.max = String(tr.epochs);
  ui.epochs.value = String(tr.epochs);

  vaeTest.phase = 'device';
  const rt = await createRuntime(plan, base, {
    matmul: MATMUL,
    log,
    onError: (m) => showError(m),
  });
  state.rt = rt;
  const a = rt.adapterInfo;
  vaeTest.adapter = a;
  vaeTest.dispatchesPerStep = rt.dispatchCount('train');
  const counts = /** @type {Record<string, number>} */ ({});
  for (const [p, v] of rt.matmulChoices) {
    vaeTest.matmul[p] = v;
    counts[v] = (counts[v] ?? 0) + 1;
  }
  const choice = Object.entries(counts).map(([v, n]) => `${v} ${n}`).join(', ');
  ui.adapter.textContent =
    `adapter: ${[a.vendor, a.architecture, a.description].filter(Boolean).join(' / ') || '(no info)'}` +
    ` — features: ${rt.features.filter((f) => f === 'subgroups' || f === 'shader-f16').join(', ') || 'none needed'}` +
    ` — matmul kernels (${MATMUL}): ${choice || 'none'} — ${vaeTest.dispatchesPerStep} dispatches/step`;
  log(`adapter: ${a.vendor} ${a.architecture} ${a.description}`.trim());
  log(`matmul kernels (${MATMUL}): ${choice || 'none'} of ${rt.matmulChoices.size} products`);
  log(`model: ${describeModel(plan.model)} (L = ${plan.model.samples}), ` +
    `${plan.model.params} parameters; ${tr.train_len} train images, batch ${tr.batch}, lr ${tr.lr}, ` +
    `${tr.steps_per_epoch} steps/epoch, ${vaeTest.dispatchesPerStep} dispatches/step`);
  const avail = Math.min(tr.epochs, await rt.epochsAvailable());
  ui.epochs.max = String(avail);
  ui.epochs.value = String(EPOCHS !== null && EPOCHS >= 1 && EPOCHS <= avail ? Math.floor(EPOCHS) : avail);
  for (const x of [ui.start, ui.epochs, ui.lr, ui.batch]) x.disabled = false;
  ui.start.addEventListener('click', onStart);
  vaeTest.phase = 'ready';
  drawChart();
  if (AUTOSTART) onStart();
}

function onStart() {
  if (state.running) {
    state.pause = true;
    ui.start.textContent = 'Pausing…';
    ui.start.disabled = true;
    return;
  }
  state.pause = false;
  state.running = true;
  ui.start.textContent = 'Pause';
  const job = STEPS !== null ? runSteps(STEPS) : train();
  job
    .catch(showError)
    .finally(() => {
      state.running = false;
      if (vaeTest.error !== null) return;
      ui.start.disabled = STEPS !== null;
      const left = state.epoch <= Number(ui.epochs.value);
      ui.start.textContent = state.pause ? 'Resume' : left ? 'Start' : 'Train more';
    });
}

// ---------------------------------------------------------------------------------------------
// Training.

/** Throttle: keep at most IN_FLIGHT steps queued. @param {Promise<undefined>[]} inflight */
async function throttle(inflight) {
  const rt = /** @type {Runtime} */ (state.rt);
  inflight.push(rt.done());
  if (inflight.length > IN_FLIGHT) await inflight.shift();
}

/** @param {Float32Array} acc @param {string} where */
function checkFinite(acc, where) {
  const plan = /** @type {Plan} */ (state.plan);
  if (acc[plan.accumulators.train.slots.nonfinite] !== 0) {
    throw new Error(`training diverged: the loss became NaN or infinite by ${where}. Lower the lr.`);
  }
}

/** The training graph of step `s` of an epoch. @param {number} s */
function trainGraph(s) {
  const tr = /** @type {Plan} */ (state.plan).train;
  return (s + 1) * tr.batch <= tr.train_len ? 'train' : 'train_last';
}

/** Run epochs until the epochs input (or a pause). */
async function train() {
  const plan = /** @type {Plan} */ (state.plan);
  const rt = /** @type {Runtime} */ (state.rt);
  const tr = plan.train;
  const slots = plan.accumulators.train.slots;
  const steps = tr.steps_per_epoch;
  while (state.epoch <= Number(ui.epochs.value) && !state.stop) {
    const e = state.epoch;
    if (state.step === 0) {
      await rt.epochInput(e);
      rt.zeroAccumulator('train');
      state.epochSecs = 0;
    }
    const t0 = performance.now();
    let lastYield = t0;
    /** @type {Promise<undefined>[]} */
    const inflight = [];
    /** @type {Promise<void>[]} */
    const logs = [];
    let images = state.step * tr.batch;
    for (; state.step < steps; state.step++) {
      if (state.pause || state.stop) break;
      const s = state.step;
      const graph = trainGraph(s);
      state.t += 1;
      rt.runGraph(graph, trainValues(state.t, s * tr.batch));
      const rows = plan.graphs[graph].rows;
      images += rows;
      if (tr.log_every > 0 && s % tr.log_every === 0) {
        logs.push(
          rt.readAccumulator('train').then((acc) => {
            checkFinite(acc, `epoch ${e}, step ${s}`);
            const loss = acc[slots.batch_total] / rows;
            log(`[${s}/${steps}] batch loss: ${loss.toFixed(2)}`);
            state.batchLosses.push({ x: e - 1 + s / steps, y: loss });
            drawChart();
          }),
        );
      }
      await throttle(inflight);
      const now = performance.now();
      const secs = state.epochSecs + (now - t0) / 1000;
      ui.progress.max = tr.train_len;
      ui.progress.value = Math.min(images, tr.train_len);
      ui.rate.textContent = `epoch ${e}/${ui.epochs.value}: ${Math.min(images, tr.train_len)}/${tr.train_len} images, ${(images / Math.max(secs, 1e-9)).toFixed(0)} images/s`;
      if (now - lastYield > 30) {
        await yieldToBrowser();
        lastYield = performance.now();
      }
    }
    await Promise.all(inflight);
    await Promise.all(logs);
    if (state.step < steps) {
      // Paused or stopped: the epoch's clock resumes with it.
      state.epochSecs += (performance.now() - t0) / 1000;
      return;
    }
    const acc = await rt.readAccumulator('train');
    state.epochSecs += (performance.now() - t0) / 1000;
    checkFinite(acc, `epoch ${e}, step ${steps}`);
    const n = tr.train_len;
    const avg = acc[slots.epoch_total] / n;
    const recon = acc[slots.epoch_recon] / n;
    const kl = acc[slots.epoch_kl] / n;
    // The objective minimised, when β or a warm-up weighs the KL (the printed loss is the -ELBO).
    const m = plan.model;
    const objective = acc[slots.epoch_objective] / n;
    const objectiveName =
      m.objective === 'iwae'
        ? `objective IWAE (k = ${m.samples})`
        : m.beta !== 1 || m.kl_warmup > 0
          ? 'objective recon + weighted KL'
          : '';
    const reconName = m.likelihood === 'bernoulli' ? 'BCE' : 'recon';
    const secs = state.epochSecs;
    const test = await evaluate(e);
    log(
      `====> Epoch ${e}  Average loss: ${avg.toFixed(2)}  (${reconName} ${recon.toFixed(2)}, KL ${kl.toFixed(2)}` +
        (objectiveName ? `; ${objectiveName}: ${objective.toFixed(2)})` : ')') +
        `  test loss: ${test.toFixed(2)}  time: ${secs.toFixed(1)} s (${(n / secs).toFixed(0)} images/s)`,
    );
    state.epochLosses.push({ epoch: e, train: avg, test });
    vaeTest.epochs.push({ epoch: e, loss: avg, recon, kl, objective, test, seconds: secs });
    vaeTest.stepsPerSecond = steps / secs;
    drawChart();
    await drawPictures();
    vaeTest.epochDone = e;
    state.epoch += 1;
    state.step = 0;
  }
  if (state.epoch > Number(ui.epochs.value)) {
    vaeTest.done = true;
    vaeTest.phase = 'done';
  }
}

/** The test set's loss per image after epoch `e` (test / test_last graphs, test accumulator).
 * @param {number} e */
async function evaluate(e) {
  const plan = /** @type {Plan} */ (state.plan);
  const rt = /** @type {Runtime} */ (state.rt);
  const n = plan.train.test_len;
  const rows = plan.graphs.test.rows;
  const steps = Math.ceil(n / rows);
  rt.zeroAccumulator('test');
  // Each epoch's test pass has its own noise: evaluation draws restart by the plan's rule.
  state.evalDraws = evalDrawsStart(plan.evaluation, e);
  /** @type {Promise<undefined>[]} */
  const inflight = [];
  let lastYield = performance.now();
  for (let s = 0; s < steps; s++) {
    const graph = (s + 1) * rows <= n ? 'test' : 'test_last';
    rt.runGraph(graph, evalValues(s * rows));
    await throttle(inflight);
    ui.rate.textContent = `testing: ${Math.min((s + 1) * rows, n)}/${n} images`;
    if (performance.now() - lastYield > 30) {
      await yieldToBrowser();
      lastYield = performance.now();
    }
  }
  const acc = await rt.readAccumulator('test');
  return acc[plan.accumulators.test.slots.epoch_total] / n;
}

/**
 * Test mode: exactly `n` training steps of epoch 1 from the exported state, the batch loss read
 * after every step; then the parameters, the pictures, and `vaeTest.done`.
 * @param {number} n
 */
async function runSteps(n) {
  const plan = /** @type {Plan} */ (state.plan);
  const rt = /** @type {Runtime} */ (state.rt);
  const tr = plan.train;
  if (!(Number.isInteger(n) && n >= 1 && n <= tr.steps_per_epoch)) {
    throw new Error(`?steps=${n}: want an integer from 1 to ${tr.steps_per_epoch} (one epoch)`);
  }
  vaeTest.phase = 'steps';
  const slots = plan.accumulators.train.slots;
  await rt.epochInput(1);
  rt.zeroAccumulator('train');
  const t0 = performance.now();
  /** @type {Promise<undefined>[]} */
  const inflight = [];
  /** @type {Promise<number>[]} */
  const reads = [];
  for (let s = 0; s < n; s++) {
    const graph = trainGraph(s);
    const rows = plan.graphs[graph].rows;
    state.t += 1;
    rt.runGraph(graph, trainValues(state.t, s * tr.batch));
    reads.push(
      rt.readAccumulator('train').then((acc) => {
        const loss = acc[slots.batch_total] / rows;
        log(`[${s}/${tr.steps_per_epoch}] batch loss: ${loss.toFixed(4)}`);
        state.batchLosses.push({ x: s / tr.steps_per_epoch, y: loss });
        return loss;
      }),
    );
    await throttle(inflight);
    ui.progress.max = n;
    ui.progress.value = s + 1;
    ui.rate.textContent = `step ${s + 1}/${n}`;
    await yieldToBrowser();
  }
  vaeTest.losses = await Promise.all(reads);
  await rt.done();
  const secs = (performance.now() - t0) / 1000;
  vaeTest.stepsPerSecond = n / secs;
  ui.rate.textContent = `${n} steps in ${secs.toFixed(1)} s (${(n / secs).toFixed(2)} steps/s, ${((n * tr.batch) / secs).toFixed(0)} images/s)`;
  log(ui.rate.textContent);
  drawChart();

  // The parameters after the steps.
  let pid = query.has('params') ? Number(query.get('params')) : null;
  let size = null;
  if (pid === null) {
    try {
      const r = await fetch(planBase(PLAN_URL) + 'reference.json');
      if (r.ok) {
        const ref = await r.json();
        pid = ref.params?.buffer ?? null;
        size = ref.params?.size ?? null;
      }
    } catch {
      // no reference: fall back to the buffer named params
    }
  }
  if (pid === null) pid = plan.buffers.find((b) => b.name === 'params')?.id ?? null;
  if (pid !== null) {
    const desc = plan.buffers.find((b) => b.id === pid);
    const bytes = await rt.readBuffer(pid, 0, size ?? desc?.size ?? 0);
    vaeTest.params = toBase64(new Uint8Array(bytes));
  }
  vaeTest.phase = 'pictures';
  await drawPictures();
  state.step = n;
  vaeTest.phase = 'done';
  vaeTest.done = true;
}

/** @param {Uint8Array} bytes */
function toBase64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, /** @type {any} */ (bytes.subarray(i, i + 0x8000)));
  }
  return btoa(s);
}

// ---------------------------------------------------------------------------------------------
// Pictures.

/** @param {import('./runtime.js').Region} r */
async function readRegion(r) {
  const rt = /** @type {Runtime} */ (state.rt);
  return new Float32Array(await rt.readBuffer(r.buffer, r.offset, r.rows * r.cols * 4));
}

/**
 * Draw images (rows of `data`, each width*height*channels values in [0, 1], channel-planar as the
 * model sees them) in a grid.
 * @param {HTMLCanvasElement} canvas @param {Float32Array[]} rows grid rows of images
 * @param {number} cols images per grid row
 */
function drawImages(canvas, rows, cols) {
  const img = /** @type {Plan} */ (state.plan).image;
  const w = img.width;
  const h = img.height;
  const ch = img.channels || 1;
  const per = w * h * ch;
  const scale = Math.max(1, Math.floor(Math.min(canvas.width / (cols * w), canvas.height / (rows.length * h))));
  const out = new ImageData(cols * w * scale, rows.length * h * scale);
  for (let gr = 0; gr < rows.length; gr++) {
    const data = rows[gr];
    const count = Math.floor(data.length / per);
    for (let k = 0; k < Math.min(count, cols); k++) {
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          const rgb = [0, 0, 0];
          for (let c = 0; c < 3; c++) {
            const v = data[k * per + Math.min(c, ch - 1) * w * h + y * w + x];
            rgb[c] = Math.round(255 * Math.min(1, Math.max(0, v)));
          }
          for (let dy = 0; dy < scale; dy++) {
            const py = (gr * h + y) * scale + dy;
            for (let dx = 0; dx < scale; dx++) {
              const px = (k * w + x) * scale + dx;
              const o = (py * out.width + px) * 4;
              out.data[o] = rgb[0];
              out.data[o + 1] = rgb[1];
              out.data[o + 2] = rgb[2];
              out.data[o + 3] = 255;
            }
          }
        }
      }
    }
  }
  canvas.width = out.width;
  canvas.height = out.height;
  const ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext('2d', { willReadFrequently: true }));
  ctx.putImageData(out, 0, 0);
}

const samplesRng = mulberry32(20240601);
/** A standard normal draw (Box–Muller). */
function normal() {
  let u = 0;
  while (u === 0) u = samplesRng();
  const v = samplesRng();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/** Reconstruct 10 test images and decode samples of z ~ N(0, I). */
async function drawPictures() {
  const plan = /** @type {Plan} */ (state.plan);
  const rt = /** @type {Runtime} */ (state.rt);
  const o = plan.outputs;
  if (plan.graphs.reconstruct && o?.reconstruct) {
    rt.runGraph('reconstruct', evalValues(0));
    const [orig, rec] = await Promise.all([readRegion(o.reconstruct.originals), readRegion(o.reconstruct.reconstructions)]);
    const n = Math.min(10, o.reconstruct.originals.rows, o.reconstruct.reconstructions.rows);
    drawImages(ui.recon, [orig, rec], n);
  }
  if (plan.graphs.decode && o?.decode) {
    const z = o.decode.z;
    const rows = o.decode.means.rows;
    const classes = plan.model.classes ?? 0;
    // A conditional model: one row per class (as many as fit), the same codes in every row, so a
    // column keeps its z (the "style") while the class changes.
    const cols = classes > 0 ? Math.max(1, Math.floor(rows / Math.min(classes, rows))) : Math.ceil(Math.sqrt(rows));
    const draws = new Float32Array(z.rows * z.cols);
    for (let i = 0; i < draws.length; i++) draws[i] = normal();
    if (classes > 0 && o.decode.labels) {
      const labels = new Uint32Array(o.decode.labels.rows);
      for (let i = 0; i < labels.length; i++) {
        labels[i] = Math.min(classes - 1, Math.floor(i / cols));
        draws.copyWithin(i * z.cols, (i % cols) * z.cols, (i % cols + 1) * z.cols);
      }
      rt.writeU32(o.decode.labels.buffer, o.decode.labels.offset, labels);
      const names = plan.model.class_names ?? [];
      const shown = Math.min(classes, Math.floor(rows / cols));
      ui.samplesCaption.textContent =
        `decodes of z ~ N(0, I), one row per class: ${names.slice(0, shown).join(', ')}` +
        (shown < classes ? ` (first ${shown} of ${classes})` : '');
    }
    rt.writeF32(z.buffer, z.offset, draws);
    rt.runGraph('decode', evalValues(0));
    const means = await readRegion(o.decode.means);
    const per = o.decode.means.cols;
    /** @type {Float32Array[]} */
    const gridRows = [];
    for (let r = 0; r * cols < rows && (classes === 0 || r < classes); r++) {
      gridRows.push(means.subarray(r * cols * per, Math.min(rows, (r + 1) * cols) * per));
    }
    drawImages(ui.samples, gridRows, cols);
  }
}

/** The loss chart: batch losses at log points and epoch averages. */
function drawChart() {
  const c = ui.chart;
  const ctx = c.getContext('2d');
  if (!ctx) return;
  const W = c.width;
  const H = c.height;
  const pad = { l: 48, r: 12, t: 12, b: 28 };
  ctx.clearRect(0, 0, W, H);
  const fg = getComputedStyle(document.body).color || '#222';
  const pts = state.batchLosses;
  const ys = [...pts.map((p) => p.y), ...state.epochLosses.flatMap((p) => (p.test === null ? [p.train] : [p.train, p.test]))];
  const epochs = Math.max(1, Number(ui.epochs.value) || 1, ...state.epochLosses.map((p) => p.epoch));
  const xMax = STEPS !== null ? Math.max(1e-9, (STEPS - 1) / (state.plan?.train.steps_per_epoch ?? 1)) : epochs;
  let yMin = ys.length ? Math.min(...ys) : 0;
  let yMax = ys.length ? Math.max(...ys) : 1;
  if (yMax - yMin < 1e-6) {
    yMin -= 1;
    yMax += 1;
  }
  const span = yMax - yMin;
  yMin -= 0.05 * span;
  yMax += 0.05 * span;
  const X = (/** @type {number} */ x) => pad.l + (x / xMax) * (W - pad.l - pad.r);
  const Y = (/** @type {number} */ y) => H - pad.b - ((y - yMin) / (yMax - yMin)) * (H - pad.t - pad.b);
  ctx.strokeStyle = fg;
  ctx.fillStyle = fg;
  ctx.globalAlpha = 0.6;
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(pad.l, pad.t);
  ctx.lineTo(pad.l, H - pad.b);
  ctx.lineTo(W - pad.r, H - pad.b);
  ctx.stroke();
  ctx.font = '11px sans-serif';
  ctx.textAlign = 'right';
  for (let i = 0; i <= 4; i++) {
    const y = yMin + ((yMax - yMin) * i) / 4;
    ctx.fillText(y.toFixed(y < 10 ? 2 : 0), pad.l - 4, Y(y) + 4);
  }
  ctx.textAlign = 'center';
  const xt = STEPS !== null ? 'epoch (fraction)' : 'epoch';
  ctx.fillText(xt, (pad.l + W - pad.r) / 2, H - 6);
  if (STEPS === null) for (let e = 0; e <= epochs; e++) ctx.fillText(String(e), X(e), H - pad.b + 12);
  ctx.globalAlpha = 1;
  if (!ys.length) return;
  ctx.strokeStyle = '#3a7bd5';
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  pts.forEach((p, i) => (i ? ctx.lineTo(X(p.x), Y(p.y)) : ctx.moveTo(X(p.x), Y(p.y))));
  ctx.stroke();
  for (const p of state.epochLosses) {
    ctx.fillStyle = '#d55e00';
    ctx.beginPath();
    ctx.arc(X(p.epoch), Y(p.train), 4, 0, 2 * Math.PI);
    ctx.fill();
    if (p.test !== null) {
      ctx.fillStyle = '#009e73';
      ctx.fillRect(X(p.epoch) - 4, Y(p.test) - 4, 8, 8);
    }
  }
}

main().catch(showError);
