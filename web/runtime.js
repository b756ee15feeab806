// @ts-check
// Replays an exported vae-wgpu plan (docs/PLAN_FORMAT.md) with WebGPU. Knows nothing about the
// model: it creates the plan's buffers, shader modules, pipelines and bind groups once, chooses a
// matmul kernel per problem by the native engine's rule, and then runs named graphs (one compute
// pass, one submit each) and reads buffers back asynchronously.

export const PLAN_FORMAT = 'vae-wgpu-plan';
export const PLAN_VERSION = 4;

/**
 * @typedef {{binding: number, buffer: number, offset: number, size: number}} Binding
 * @typedef {{buffer: number, offset: number, u32: number[]}} SetWrite
 * @typedef {{variant: string, shader: string, entry: string, constants: Record<string, number>,
 *   bindings: Binding[], workgroups: number[], requires?: string[], min_subgroup_size?: number,
 *   set?: SetWrite[]}} Candidate
 * @typedef {{label?: string, shader: string, entry: string, constants: Record<string, number>,
 *   bindings: Binding[], workgroups: number[], problem?: string, candidates?: Candidate[]}} Dispatch
 * @typedef {{rows: number, train: boolean, dispatches: Dispatch[]}} Graph
 * @typedef {{blob: string, offset: number, size: number} | {gzip: string, skip: number, size: number} | null} Init
 * @typedef {{id: number, name: string, size: number, usage: string[], init: Init}} BufferDesc
 * @typedef {{buffer: number, len: number, slots: Record<string, number>}} Accumulator
 * @typedef {{buffer: number, offset: number, rows: number, cols: number}} Region
 * @typedef {{rng_flag: number, epoch_stride: number}} EvalDraws
 * @typedef {{rounds: number, target_secs: number, max_reps: number, skip_factor: number,
 *   skip_slack_secs: number, tolerance: number}} AutotuneRule
 * @typedef {{
 *   format: string, version: number,
 *   model: {input: number, hidden: number[], decoder_hidden: number[], latent: number,
 *           samples: number, activation: string, params: number, likelihood: string,
 *           beta: number, kl_warmup: number, objective: string, classes?: number,
 *           class_names?: string[]},
 *   train: {batch: number, epochs: number, optimizer: string, lr: number, beta1: number,
 *     beta2: number, eps: number, weight_decay: number, momentum: number, nesterov: boolean,
 *     lr_schedule: LrSchedule, clip_grad_norm: number | null, seed: number, train_len: number, test_len: number, log_every: number,
 *     steps_per_epoch: number},
 *   image: {width: number, height: number, channels: number},
 *   autotune: AutotuneRule,
 *   limits: Record<string, number>,
 *   shaders: {name: string, source: string, features: string[]}[],
 *   pipelines: {shader: string, entry: string, constants: Record<string, number>}[],
 *   buffers: BufferDesc[],
 *   uniform: {buffer: number, size: number, fields: UniformField[]},
 *   accumulators: Record<string, Accumulator>,
 *   epoch_input: {buffer: number, blob: string, count: number},
 *   evaluation: EvalDraws,
 *   graphs: Record<string, Graph>,
 *   outputs: {reconstruct: {originals: Region, reconstructions: Region},
 *             decode: {z: Region, means: Region, labels?: {buffer: number, offset: number, rows: number}}},
 *   seed?: bigint,
 * }} Plan
 */

/**
 * @typedef {{shape: 'constant' | 'cosine', warmup_steps: number, total_steps: number}} LrSchedule
 * @typedef {{rule: 'const', value: number} | {rule: 'step'}
 *   | {rule: 'lr', lr: number, schedule: LrSchedule}
 *   | {rule: 'lr_over_one_minus_pow', lr: number, base: number, schedule: LrSchedule}
 *   | {rule: 'one_minus_lr_times', lr: number, times: number, schedule: LrSchedule}
 *   | {rule: 'sqrt_one_minus_pow', base: number} | {rule: 'ramp', to: number, steps: number}} Rule
 * @typedef {{name: string, offset: number, type: string, rule: Rule | null}} UniformField
 */

/** f64 x^n as Rust's `powi` computes it (compiler-rt __powidf2: square and multiply), so the
 * schedule's values are the native engine's bit for bit.
 * @param {number} x @param {number} n */
export function powi(x, n) {
  let r = 1;
  let a = x;
  let b = Math.abs(n);
  for (;;) {
    if (b & 1) r *= a;
    b = Math.floor(b / 2);
    if (b === 0) break;
    a *= a;
  }
  return n < 0 ? 1 / r : r;
}

/** The learning rate's factor at training step `t` (1-based), as `LrSchedule::factor` computes
 * it: (s + 1)/N over an N-step warm-up (s = t − 1), then 1, or half a cosine from 1 to 0 at the
 * run's last step. @param {LrSchedule} s @param {number} t */
export function lrFactor(s, t) {
  const k = Math.max(t - 1, 0);
  const n = s.warmup_steps;
  if (k + 1 < n) return (k + 1) / n;
  if (s.shape !== 'cosine') return 1;
  const peak = Math.max(n, 1) - 1;
  const span = Math.max(s.total_steps - 1 - peak, 0);
  if (span === 0) return 1;
  return 0.5 * (1 + Math.cos(Math.PI * Math.min((k - peak) / span, 1)));
}

/** A per-step uniform field's value at training step `t` (1-based) by its rule, as
 * `kernels::step::Rule::at` computes it. @param {Rule} rule @param {number} t */
export function ruleValue(rule, t) {
  switch (rule.rule) {
    case 'const':
      return rule.value;
    case 'step':
      return t;
    case 'lr':
      return rule.lr * lrFactor(rule.schedule, t);
    case 'lr_over_one_minus_pow':
      return (rule.lr * lrFactor(rule.schedule, t)) / (1 - powi(rule.base, t));
    case 'one_minus_lr_times':
      return 1 - rule.lr * lrFactor(rule.schedule, t) * rule.times;
    case 'sqrt_one_minus_pow':
      return Math.sqrt(1 - powi(rule.base, t));
    case 'ramp':
      return rule.steps <= 0 ? rule.to : rule.to * Math.min(1, Math.max(t - 1, 0) / rule.steps);
    default:
      throw new Error(`the plan's uniform has a rule this page does not know: ${JSON.stringify(rule)}`);
  }
}

/** The count of evaluation draws before the test pass after epoch `epoch`, by the plan's rule
 * (`model::gpu::EvalDraws::start`). @param {EvalDraws} rule @param {number} epoch */
export function evalDrawsStart(rule, epoch) {
  return Number((BigInt(epoch) * BigInt(rule.epoch_stride)) & 0x7fffffffn);
}

/** The `rng_step` of evaluation draw `d` (`EvalDraws::rng_step`): the plan's flag above every
 * training step's counter. @param {EvalDraws} rule @param {number} d */
export function evalRngStep(rule, d) {
  return (rule.rng_flag + (d & 0x7fffffff)) >>> 0;
}

/** Every scheduled field's value at training step `t`, by name; `rules` replaces a field's rule
 * (the page's learning-rate input). @param {UniformField[]} fields @param {number} t
 * @param {Record<string, Rule>} [rules] */
export function scheduledValues(fields, t, rules = {}) {
  /** @type {Record<string, number>} */
  const v = {};
  for (const f of fields) {
    const rule = rules[f.name] ?? f.rule;
    if (rule) v[f.name] = ruleValue(rule, t);
  }
  return v;
}

/** `base` as an absolute URL ending in '/'. @param {string} base */
export function planBase(base) {
  const u = new URL(base, globalThis.location?.href);
  if (!u.pathname.endsWith('/')) u.pathname += '/';
  return u.href;
}

/**
 * Fetch `url` or throw an Error that says what is missing.
 * @param {string} url @param {string} what
 */
async function fetchOk(url, what) {
  let resp;
  try {
    resp = await fetch(url);
  } catch (e) {
    throw new Error(`cannot fetch ${what} ${url}: ${errText(e)}`);
  }
  if (!resp.ok) {
    const why = resp.status === 404 ? 'is missing' : 'could not be read';
    throw new Error(`${what} ${url} ${why} (HTTP ${resp.status} ${resp.statusText})`);
  }
  return resp;
}

/** @param {unknown} e */
export function errText(e) {
  if (e instanceof Error) return e.message;
  if (e && typeof e === 'object' && 'message' in e) return String(e.message);
  return String(e);
}

/**
 * Fetch and check `plan.json` under `baseUrl`.
 * @param {string} baseUrl the plan directory
 * @returns {Promise<Plan>}
 */
export async function loadPlan(baseUrl) {
  const url = planBase(baseUrl) + 'plan.json';
  const resp = await fetchOk(url, 'plan');
  const text = await resp.text();
  let plan;
  try {
    plan = JSON.parse(text);
  } catch (e) {
    throw new Error(`plan ${url} is not valid JSON: ${errText(e)}`);
  }
  if (!plan || typeof plan !== 'object') throw new Error(`plan ${url} is not a JSON object`);
  if (plan.format !== PLAN_FORMAT) {
    throw new Error(
      `plan ${url} has format ${JSON.stringify(plan.format)}, expected "${PLAN_FORMAT}"`,
    );
  }
  if (plan.version !== PLAN_VERSION) {
    throw new Error(
      `plan ${url} is format version ${JSON.stringify(plan.version)}; this page reads version ` +
        `${PLAN_VERSION} (re-export the plan with this version of vae-wgpu)`,
    );
  }
  for (const k of ['train', 'image', 'limits', 'shaders', 'buffers', 'uniform', 'graphs']) {
    if (!(k in plan)) throw new Error(`plan ${url} has no "${k}"`);
  }
  // The seed is a u64: take its digits from the text, as a JSON number may not hold it exactly.
  const m = /(?<!\\)"seed"\s*:\s*"?(\d+)/.exec(text);
  plan.seed = m ? BigInt(m[1]) : BigInt(plan.train?.seed ?? 0);
  return plan;
}

/** Mulberry32: a small seeded PRNG (uniform in [0, 1)). @param {number} seed */
export function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** FNV-1a (32-bit) of a string's UTF-16 units, as hex. @param {string} s */
function fnv1a(s) {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return (h >>> 0).toString(16).padStart(8, '0');
}

/** @param {number} n */
const pad4 = (n) => Math.ceil(n / 4) * 4;

/** @param {Record<string, number>} c */
const constantsKey = (c) =>
  JSON.stringify(Object.keys(c ?? {}).sort().map((k) => [k, c[k]]));

/**
 * @typedef {{
 *   matmul?: string,
 *   log?: (msg: string) => void,
 *   onError?: (msg: string) => void,
 *   gpu?: GPU,
 *   tuneCache?: boolean,
 * }} RuntimeOptions
 * `matmul`: `auto` (default: check and time the candidates), `plan` (the exporter's choices, as
 * written in each dispatch), or a variant name (`direct`, `subgroup`, `tiled`) used wherever the
 * problem has it (else `direct`). `tuneCache` (default true): with `auto`, keep the choices in
 * localStorage keyed by adapter and kernel sources, as the native engine keeps its autotune file.
 */

/**
 * Create the device and every GPU object of `plan`; choose the matmul kernels.
 * @param {Plan} plan @param {string} baseUrl @param {RuntimeOptions} [opts]
 */
export async function createRuntime(plan, baseUrl, opts = {}) {
  const base = planBase(baseUrl);
  const log = opts.log ?? (() => {});
  const gpu = opts.gpu ?? (typeof navigator !== 'undefined' ? navigator.gpu : undefined);
  if (!gpu) {
    throw new Error(
      'WebGPU is not available in this browser (navigator.gpu is missing). Use a browser with ' +
        'WebGPU enabled (Chrome/Edge 113+, or Chromium with --enable-unsafe-webgpu), served over ' +
        'https or from localhost.',
    );
  }
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) {
    throw new Error('WebGPU is available, but no GPU adapter was found (requestAdapter returned null).');
  }
  const info = adapter.info ?? (await /** @type {any} */ (adapter).requestAdapterInfo?.()) ?? {};
  const adapterInfo = {
    vendor: info.vendor ?? '',
    architecture: info.architecture ?? '',
    device: info.device ?? '',
    description: info.description ?? '',
    subgroupMinSize: info.subgroupMinSize,
    subgroupMaxSize: info.subgroupMaxSize,
  };

  // Limits: exactly the plan's, refused when the adapter has less.
  /** @type {Record<string, number>} */
  const requiredLimits = {};
  for (const [name, need] of Object.entries(plan.limits ?? {})) {
    const have = /** @type {any} */ (adapter.limits)[name];
    if (typeof have !== 'number') {
      throw new Error(`the plan needs the WebGPU limit ${name} = ${need}, which this browser does not know`);
    }
    if (name.startsWith('min')) {
      // Alignments: smaller is better.
      if (have > need) {
        throw new Error(
          `this GPU adapter cannot run the plan: limit ${name} needs ${need} or less, the adapter's is ${have}`,
        );
      }
    } else if (have < need) {
      throw new Error(
        `this GPU adapter cannot run the plan: limit ${name} needs ${need}, the adapter has ${have} ` +
          `(${adapterInfo.description || adapterInfo.architecture || adapterInfo.vendor || 'unknown adapter'})`,
      );
    }
    requiredLimits[name] = need;
  }

  // Features: every one a plan shader or candidate asks for that the adapter has.
  const wanted = new Set(['subgroups']);
  for (const s of plan.shaders) for (const f of s.features ?? []) wanted.add(f);
  for (const g of Object.values(plan.graphs)) {
    for (const d of g.dispatches) for (const c of d.candidates ?? []) for (const f of c.requires ?? []) wanted.add(f);
  }
  /** @type {GPUFeatureName[]} */
  const requiredFeatures = [];
  for (const f of wanted) if (adapter.features.has(f)) requiredFeatures.push(/** @type {GPUFeatureName} */ (f));
  const device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
  const rt = new Runtime(plan, base, device, adapterInfo, log, opts);
  try {
    await rt.init(opts.matmul ?? 'auto');
  } catch (e) {
    rt.destroy();
    throw e;
  }
  return rt;
}

/** A staging buffer for readbacks. @typedef {{buffer: GPUBuffer, size: number}} Staging */

export class Runtime {
  /**
   * @param {Plan} plan @param {string} base @param {GPUDevice} device
   * @param {Record<string, any>} adapterInfo @param {(msg: string) => void} log
   * @param {RuntimeOptions} opts
   */
  constructor(plan, base, device, adapterInfo, log, opts) {
    this.plan = plan;
    this.base = base;
    this.device = device;
    this.queue = device.queue;
    this.adapterInfo = adapterInfo;
    this.log = log;
    this.features = [...device.features];
    /** @type {Map<number, GPUBuffer>} */
    this.buffers = new Map();
    /** @type {Map<string, Promise<ArrayBuffer>>} */
    this.blobs = new Map();
    /** @type {Map<string, GPUShaderModule>} */
    this.modules = new Map();
    /** @type {Map<string, Promise<GPUComputePipeline>>} */
    this.pipelines = new Map();
    /** @type {Map<string, {pipeline: GPUComputePipeline, bindGroup: GPUBindGroup, workgroups: number[]}[]>} */
    this.graphs = new Map();
    /** problem -> chosen variant @type {Map<string, string>} */
    this.matmulChoices = new Map();
    /** @type {Staging[]} */
    this.stagingFree = [];
    this.uniformBytes = new ArrayBuffer(plan.uniform?.size ?? 32);
    /** @type {string | null} */
    this.lost = null;
    device.lost.then((i) => {
      if (this.destroyed) return;
      this.lost = `the GPU device was lost (${i.reason}): ${i.message}`;
      opts.onError?.(this.lost);
    });
    device.addEventListener('uncapturederror', (ev) => {
      const e = /** @type {GPUUncapturedErrorEvent} */ (ev);
      e.preventDefault();
      opts.onError?.(`WebGPU error: ${e.error.message}`);
    });
    this.destroyed = false;
    this.tuneCache = opts.tuneCache ?? true;
  }

  /** @param {string} matmul */
  async init(matmul) {
    const t0 = performance.now();
    this.device.pushErrorScope('validation');
    this.device.pushErrorScope('out-of-memory');
    for (const b of this.plan.buffers) {
      let usage = GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
      if (b.usage.includes('storage')) usage |= GPUBufferUsage.STORAGE;
      if (b.usage.includes('uniform')) usage |= GPUBufferUsage.UNIFORM;
      this.buffers.set(
        b.id,
        this.device.createBuffer({ label: b.name, size: Math.max(4, pad4(b.size)), usage }),
      );
    }
    const oom = await this.device.popErrorScope();
    const bad = await this.device.popErrorScope();
    if (oom || bad) {
      throw new Error(`cannot create the plan's buffers: ${(oom ?? bad)?.message}`);
    }
    await Promise.all(this.plan.buffers.map((b) => this.fillInit(b)));
    this.log(`buffers: ${this.plan.buffers.length} created and filled in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    const t1 = performance.now();
    await this.chooseMatmuls(matmul);
    this.log(`pipelines: ${this.pipelines.size} compiled, matmul kernels chosen in ${((performance.now() - t1) / 1000).toFixed(1)} s`);
  }

  /** The bytes of plan file `name` (fetched once). @param {string} name */
  blob(name) {
    let p = this.blobs.get(name);
    if (!p) {
      p = fetchOk(this.base + name, 'plan file').then((r) => r.arrayBuffer());
      this.blobs.set(name, p);
    }
    return p;
  }

  /** @param {BufferDesc} b */
  async fillInit(b) {
    const init = b.init;
    if (!init) return;
    const buf = this.buffer(b.id);
    if ('blob' in init) {
      const data = await this.blob(init.blob);
      if (init.offset + init.size > data.byteLength) {
        throw new Error(`buffer ${b.id} (${b.name}): ${init.blob} has ${data.byteLength} bytes, the plan reads ${init.offset}+${init.size}`);
      }
      this.writeBytes(buf, 0, data, init.offset, init.size);
    } else if ('gzip' in init) {
      const resp = await fetchOk(this.base + init.gzip, 'data file');
      if (!resp.body) throw new Error(`${init.gzip}: empty response`);
      let data;
      try {
        data = await new Response(resp.body.pipeThrough(new DecompressionStream('gzip'))).arrayBuffer();
      } catch (e) {
        throw new Error(`${this.base + init.gzip}: not valid gzip data (${errText(e)})`);
      }
      if (init.skip + init.size > data.byteLength) {
        throw new Error(`${this.base + init.gzip}: inflates to ${data.byteLength} bytes, the plan reads ${init.skip}+${init.size}`);
      }
      this.writeBytes(buf, 0, data, init.skip, init.size);
    } else {
      throw new Error(`buffer ${b.id} (${b.name}): unknown init ${JSON.stringify(init)}`);
    }
  }

  /**
   * Write `size` bytes of `data` from `srcOffset` to `buf` at `dstOffset`, zero-padding to 4.
   * @param {GPUBuffer} buf @param {number} dstOffset @param {ArrayBuffer} data
   * @param {number} srcOffset @param {number} size
   */
  writeBytes(buf, dstOffset, data, srcOffset, size) {
    const whole = size & ~3;
    if (whole > 0) this.queue.writeBuffer(buf, dstOffset, data, srcOffset, whole);
    if (whole < size) {
      const tail = new Uint8Array(4);
      tail.set(new Uint8Array(data, srcOffset + whole, size - whole));
      this.queue.writeBuffer(buf, dstOffset + whole, tail);
    }
  }

  /** @param {number} id */
  buffer(id) {
    const b = this.buffers.get(id);
    if (!b) throw new Error(`the plan refers to buffer ${id}, which it does not list`);
    return b;
  }

  /** @param {string} name */
  async module(name) {
    let m = this.modules.get(name);
    if (m) return m;
    const s = this.plan.shaders.find((x) => x.name === name);
    if (!s) throw new Error(`the plan uses shader "${name}", which it does not list`);
    const missing = (s.features ?? []).filter((f) => !this.device.features.has(f));
    if (missing.length) throw new Error(`shader ${name} needs ${missing.join(', ')}, which this device lacks`);
    this.device.pushErrorScope('validation');
    m = this.device.createShaderModule({ label: name, code: s.source });
    const scope = this.device.popErrorScope();
    const ci = await m.getCompilationInfo();
    const errors = ci.messages.filter((x) => x.type === 'error');
    const err = await scope;
    if (errors.length || err) {
      const text = errors.map((x) => `${name}.wgsl:${x.lineNum}:${x.linePos}: ${x.message}`).join('\n');
      throw new Error(`shader ${name} does not compile:\n${text || err?.message}`);
    }
    this.modules.set(name, m);
    return m;
  }

  /**
   * The pipeline of (shader, entry, constants), created once.
   * @param {{shader: string, entry: string, constants: Record<string, number>}} d
   */
  pipeline(d) {
    const key = `${d.shader}|${d.entry}|${constantsKey(d.constants)}`;
    let p = this.pipelines.get(key);
    if (!p) {
      p = this.module(d.shader).then(async (module) => {
        try {
          return await this.device.createComputePipelineAsync({
            label: `${d.shader}:${d.entry}`,
            layout: 'auto',
            compute: { module, entryPoint: d.entry, constants: d.constants ?? {} },
          });
        } catch (e) {
          throw new Error(`pipeline ${d.shader}:${d.entry} ${constantsKey(d.constants)}: ${errText(e)}`);
        }
      });
      this.pipelines.set(key, p);
    }
    return p;
  }

  /**
   * @param {GPUComputePipeline} pipeline @param {Binding[]} bindings
   * @param {(b: Binding) => GPUBufferBinding} [resource] binding → buffer (default: the plan's)
   */
  bindGroup(pipeline, bindings, resource) {
    return this.device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: bindings.map((b) => ({
        binding: b.binding,
        resource: resource ? resource(b) : { buffer: this.buffer(b.buffer), offset: b.offset, size: b.size },
      })),
    });
  }

  /** @param {Dispatch | Candidate} c */
  usable(c) {
    const sh = this.plan.shaders.find((s) => s.name === c.shader);
    const req = [...(/** @type {Candidate} */ (c).requires ?? []), ...(sh?.features ?? [])];
    // Kernels that broadcast across a fixed number of lanes need subgroups at least that wide
    // (SwiftShader's are 4 lanes); the correctness check against direct would drop them anyway.
    const lanes = /** @type {Candidate} */ (c).min_subgroup_size ?? 0;
    const min = this.adapterInfo.subgroupMinSize;
    const wideEnough = lanes === 0 || (typeof min === 'number' && min >= lanes);
    return wideEnough && req.every((f) => this.device.features.has(f));
  }

  /**
   * Choose a candidate per matmul problem, then build every graph's pipelines and bind groups
   * and apply the chosen candidates' `set` writes.
   * @param {string} mode
   */
  async chooseMatmuls(mode) {
    /** @type {Map<string, Dispatch[]>} */
    const byProblem = new Map();
    for (const g of Object.values(this.plan.graphs)) {
      for (const d of g.dispatches) {
        if (!d.problem || !d.candidates?.length) continue;
        const list = byProblem.get(d.problem) ?? [];
        list.push(d);
        byProblem.set(d.problem, list);
      }
    }
    // Choices of earlier visits on this adapter with these kernels.
    const a = this.adapterInfo;
    const cacheKey = `vae-wgpu-matmul:v1:${a.vendor}|${a.architecture}|${a.device}|${a.description}:` +
      fnv1a(this.plan.shaders.map((x) => x.source).join('\0'));
    /** @type {Record<string, string>} */
    let cached = {};
    if (mode === 'auto' && this.tuneCache) {
      try {
        cached = JSON.parse(globalThis.localStorage?.getItem(cacheKey) ?? '{}') ?? {};
      } catch {
        cached = {};
      }
    }
    let fromCache = 0;
    this.device.pushErrorScope('validation');
    for (const [problem, ds] of byProblem) {
      /** @type {string} */
      let variant;
      const known = cached[problem];
      if (mode === 'auto' && known && ds.every((d) => d.candidates?.some((c) => c.variant === known && this.usable(c)))) {
        variant = known;
        fromCache++;
      } else if (mode === 'auto') {
        variant = await this.tune(problem, ds);
        cached[problem] = variant;
      } else if (mode === 'plan') {
        const own = ds[0].candidates?.find((c) => sameKernel(c, ds[0]));
        variant = own && this.usable(own) ? own.variant : 'direct';
      } else {
        const ok = ds.every((d) => d.candidates?.some((c) => c.variant === mode && this.usable(c)));
        variant = ok ? mode : 'direct';
      }
      this.matmulChoices.set(problem, variant);
    }
    if (mode === 'auto' && this.tuneCache) {
      if (fromCache) this.log(`matmul kernels: ${fromCache} of ${byProblem.size} choices from an earlier visit (localStorage)`);
      try {
        globalThis.localStorage?.setItem(cacheKey, JSON.stringify(cached));
      } catch {
        // storage full or disabled: the choices hold for this visit only
      }
    }
    // Build the graphs.
    /** @type {Promise<void>[]} */
    const jobs = [];
    for (const [name, g] of Object.entries(this.plan.graphs)) {
      const steps = g.dispatches.map((d) => {
        /** @type {Dispatch | Candidate} */
        let k = d;
        if (d.problem && d.candidates?.length) {
          const v = this.matmulChoices.get(d.problem) ?? 'direct';
          const c = d.candidates.find((x) => x.variant === v) ?? d.candidates[0];
          for (const s of c.set ?? []) {
            this.queue.writeBuffer(this.buffer(s.buffer), s.offset, new Uint32Array(s.u32));
          }
          k = c;
        } else if (!this.usable(d)) {
          throw new Error(`dispatch ${d.label ?? d.entry} of graph ${name} needs features this device lacks`);
        }
        return { k, wg: k.workgroups };
      });
      const entries = new Array(steps.length);
      steps.forEach((s, i) =>
        jobs.push(
          this.pipeline(s.k).then((pipeline) => {
            entries[i] = {
              pipeline,
              bindGroup: this.bindGroup(pipeline, s.k.bindings),
              workgroups: [s.wg[0] ?? 1, s.wg[1] ?? 1, s.wg[2] ?? 1],
            };
          }),
        ),
      );
      this.graphs.set(name, entries);
    }
    await Promise.all(jobs);
    const err = await this.device.popErrorScope();
    if (err) throw new Error(`cannot build the plan's graphs: ${err.message}`);
  }

  /**
   * The native engine's rule, as the plan carries it (`plan.autotune`): run every usable
   * candidate on scratch copies of its storage bindings (the same random values for all), once to
   * build and once for a rough time; drop those that disagree with `direct` (`compareOutputs`) or
   * are far behind the fastest (`worthTiming`); time the rest over interleaved rounds
   * (`repsFor` launches each) and keep the fastest (`fastest`).
   * @param {string} problem @param {Dispatch[]} ds the dispatches of this problem
   * @returns {Promise<string>}
   */
  async tune(problem, ds) {
    // A representative: one without grid-dependent `set` writes where there is one.
    const d = ds.find((x) => !x.candidates?.some((c) => c.set?.length)) ?? ds[0];
    const cands = (d.candidates ?? []).filter(
      (c) => this.usable(c) && ds.every((o) => o.candidates?.some((x) => x.variant === c.variant)),
    );
    if (!cands.length || cands[0].variant !== 'direct') return cands[0]?.variant ?? 'direct';
    const isUniform = (/** @type {Binding} */ b) =>
      this.plan.buffers.find((x) => x.id === b.buffer)?.usage.includes('uniform') ?? false;
    /** @type {Map<string, {buf: GPUBuffer, fill: Float32Array<ArrayBuffer>}>} */
    const scratch = new Map();
    const scratchFor = (/** @type {Binding} */ b) => {
      const key = `${b.binding}:${b.size}`;
      let s = scratch.get(key);
      if (!s) {
        const rand = mulberry32(0x9e3779b9 ^ (b.binding * 7919 + b.size));
        const fill = new Float32Array(b.size / 4);
        for (let i = 0; i < fill.length; i++) fill[i] = rand() * 2 - 1;
        const buf = this.device.createBuffer({
          label: `tune ${key}`,
          size: pad4(b.size),
          usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
        });
        s = { buf, fill };
        scratch.set(key, s);
      }
      return s;
    };
    const rule = this.plan.autotune;
    /** @type {{bindings: Binding[], data: Float32Array[], fills: Float32Array[]} | null} */
    let reference = null;
    /** @type {{variant: string, run: (reps: number) => Promise<number>, first: number}[]} */
    const passed = [];
    try {
      for (const c of cands) {
        let pipeline;
        try {
          pipeline = await this.pipeline(c);
        } catch (e) {
          if (c.variant === 'direct') throw e;
          this.log(`matmul ${problem}: the ${c.variant} kernel does not build (${errText(e)}); not using it`);
          continue;
        }
        const storage = c.bindings.filter((b) => !isUniform(b));
        const bg = this.bindGroup(pipeline, c.bindings, (b) =>
          isUniform(b)
            ? { buffer: this.buffer(b.buffer), offset: b.offset, size: b.size }
            : { buffer: scratchFor(b).buf, offset: 0, size: b.size },
        );
        for (const b of storage) this.queue.writeBuffer(scratchFor(b).buf, 0, scratchFor(b).fill);
        const wg = [c.workgroups[0] ?? 1, c.workgroups[1] ?? 1, c.workgroups[2] ?? 1];
        const run = async (/** @type {number} */ reps) => {
          const enc = this.device.createCommandEncoder();
          const pass = enc.beginComputePass();
          pass.setPipeline(pipeline);
          pass.setBindGroup(0, bg);
          for (let i = 0; i < reps; i++) pass.dispatchWorkgroups(wg[0], wg[1], wg[2]);
          pass.end();
          const t = performance.now();
          this.queue.submit([enc.finish()]);
          await this.queue.onSubmittedWorkDone();
          return (performance.now() - t) / 1000;
        };
        // As the native autotune: one run to build, one for a rough time.
        await run(1);
        const first = await run(1);
        const out = await Promise.all(
          storage.map(async (b) => new Float32Array(await this.readBuffer(scratchFor(b).buf, 0, b.size))),
        );
        if (!reference) {
          reference = { bindings: storage, data: out, fills: storage.map((b) => scratchFor(b).fill) };
        } else {
          const lenient = !!(c.set?.length || d.candidates?.[0]?.set?.length);
          const worst = compareOutputs(reference, storage, out, lenient, rule.tolerance);
          if (!worst.ok) {
            this.log(`warning: matmul autotune: the ${c.variant} kernel disagrees with the direct one on ${problem} (max error ${worst.err.toExponential(2)}); not using it`);
            continue;
          }
        }
        passed.push({ variant: c.variant, run, first });
      }
      const timed = worthTiming(passed, rule);
      const best = timed.map(() => Infinity);
      for (let r = 0; r < rule.rounds; r++) {
        for (let i = 0; i < timed.length; i++) {
          const reps = repsFor(timed[i].first, rule);
          best[i] = Math.min(best[i], (await timed[i].run(reps)) / reps);
        }
      }
      return fastest(timed.map((t, i) => ({ variant: t.variant, secs: best[i] }))) ?? 'direct';
    } finally {
      for (const s of scratch.values()) s.buf.destroy();
    }
  }

  /** Dispatches per run of graph `name`. @param {string} name */
  dispatchCount(name) {
    return this.graphs.get(name)?.length ?? 0;
  }

  /**
   * Write the per-step uniform (the only per-step write) and submit graph `name`: one compute
   * pass, one submit, no waiting.
   * @param {string} name @param {Record<string, number>} values uniform fields by name
   */
  runGraph(name, values) {
    const g = this.graphs.get(name);
    if (!g) throw new Error(`the plan has no graph "${name}"`);
    if (this.lost) throw new Error(this.lost);
    const u = this.plan.uniform;
    const view = new DataView(this.uniformBytes);
    for (const f of u.fields) {
      const v = values[f.name] ?? 0;
      if (f.type === 'f32') view.setFloat32(f.offset, v, true);
      else if (f.type === 'i32') view.setInt32(f.offset, v, true);
      else view.setUint32(f.offset, v >>> 0, true);
    }
    this.queue.writeBuffer(this.buffer(u.buffer), 0, this.uniformBytes);
    const enc = this.device.createCommandEncoder({ label: name });
    const pass = enc.beginComputePass({ label: name });
    for (const d of g) {
      pass.setPipeline(d.pipeline);
      pass.setBindGroup(0, d.bindGroup);
      pass.dispatchWorkgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]);
    }
    pass.end();
    this.queue.submit([enc.finish()]);
  }

  /** A promise that resolves when the work submitted so far is done. */
  done() {
    return this.queue.onSubmittedWorkDone();
  }

  /**
   * Copy `size` bytes at `offset` of `buffer` (an id or a GPUBuffer) into a staging buffer from
   * a pool and map it; resolves with the bytes. Never waits for anything but that copy.
   * @param {number | GPUBuffer} buffer @param {number} offset @param {number} size
   * @returns {Promise<ArrayBuffer>}
   */
  async readBuffer(buffer, offset, size) {
    const src = typeof buffer === 'number' ? this.buffer(buffer) : buffer;
    const n = pad4(size);
    const i = this.stagingFree.findIndex((s) => s.size >= n && s.size <= 4 * n + 256);
    const st =
      i >= 0
        ? this.stagingFree.splice(i, 1)[0]
        : {
            size: n,
            buffer: this.device.createBuffer({
              label: 'readback',
              size: n,
              usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
            }),
          };
    const enc = this.device.createCommandEncoder({ label: 'readback' });
    enc.copyBufferToBuffer(src, offset, st.buffer, 0, n);
    this.queue.submit([enc.finish()]);
    try {
      await st.buffer.mapAsync(GPUMapMode.READ, 0, n);
    } catch (e) {
      st.buffer.destroy();
      throw new Error(this.lost ?? `reading a buffer back failed: ${errText(e)}`);
    }
    const out = st.buffer.getMappedRange(0, n).slice(0, size);
    st.buffer.unmap();
    // Keep a few staging buffers of each size for the next reads.
    if (this.stagingFree.length < 16) this.stagingFree.push(st);
    else st.buffer.destroy();
    return out;
  }

  /** Read accumulator `name` (f32 slots). @param {string} name */
  async readAccumulator(name) {
    const a = this.plan.accumulators[name];
    return new Float32Array(await this.readBuffer(a.buffer, 0, a.len * 4));
  }

  /** Zero accumulator `name`. @param {string} name */
  zeroAccumulator(name) {
    const a = this.plan.accumulators[name];
    if (!a) throw new Error(`the plan has no accumulator "${name}"`);
    this.queue.writeBuffer(this.buffer(a.buffer), 0, new Float32Array(a.len));
  }

  /**
   * Write f32 values to a buffer region.
   * @param {number} buffer @param {number} offset @param {Float32Array<ArrayBuffer>} data
   */
  writeF32(buffer, offset, data) {
    this.queue.writeBuffer(this.buffer(buffer), offset, data);
  }

  /**
   * Write u32 values (a conditional model's class labels) to a buffer region.
   * @param {number} buffer @param {number} offset @param {Uint32Array<ArrayBuffer>} data
   */
  writeU32(buffer, offset, data) {
    this.queue.writeBuffer(this.buffer(buffer), offset, data);
  }

  /** How many epochs the exported index lists cover. */
  async epochsAvailable() {
    const e = this.plan.epoch_input;
    return Math.floor((await this.blob(e.blob)).byteLength / (e.count * 4));
  }

  /** Write epoch `e`'s (1-based) index list to the epoch input buffer. @param {number} e */
  async epochInput(e) {
    const ei = this.plan.epoch_input;
    const data = await this.blob(ei.blob);
    const bytes = ei.count * 4;
    const have = Math.floor(data.byteLength / bytes);
    if (!(e >= 1 && e <= have)) {
      throw new Error(`epoch ${e} is beyond the exported index lists (${have} epochs); re-export with more --epochs`);
    }
    this.queue.writeBuffer(this.buffer(ei.buffer), 0, data, (e - 1) * bytes, bytes);
  }

  destroy() {
    this.destroyed = true;
    for (const s of this.stagingFree) s.buffer.destroy();
    this.stagingFree = [];
    this.device.destroy();
  }
}

/**
 * @param {Dispatch | Candidate} a @param {Dispatch | Candidate} b
 */
function sameKernel(a, b) {
  return (
    a.shader === b.shader &&
    a.entry === b.entry &&
    constantsKey(a.constants) === constantsKey(b.constants) &&
    JSON.stringify(a.workgroups) === JSON.stringify(b.workgroups)
  );
}

/**
 * The candidates the autotune times closely: those whose rough time `first` is within
 * `skip_factor` × the fastest rough time + `skip_slack_secs` (the native rule).
 * @template {{first: number}} T @param {T[]} cands @param {AutotuneRule} rule @returns {T[]}
 */
export function worthTiming(cands, rule) {
  const fastestFirst = Math.min(...cands.map((c) => c.first));
  return cands.filter((c) => c.first <= rule.skip_factor * fastestFirst + rule.skip_slack_secs);
}

/**
 * Launches per timed round for a candidate of rough time `first`: enough for `target_secs`, 1 to
 * `max_reps` (the native rule). @param {number} first @param {AutotuneRule} rule
 */
export function repsFor(first, rule) {
  return Math.min(rule.max_reps, Math.max(1, Math.ceil(rule.target_secs / Math.max(first, 1e-6))));
}

/**
 * The fastest candidate's variant (the first of equals), or null for none.
 * @param {{variant: string, secs: number}[]} timings
 */
export function fastest(timings) {
  let best = null;
  for (const t of timings) if (best === null || t.secs < best.secs) best = t;
  return best?.variant ?? null;
}

/**
 * Compare a candidate's storage bindings after its run with the reference's. Element by element,
 * tolerance `tol` × (1 + max |reference|). With `lenient` (a candidate whose loss partials are laid
 * out by its grid, see `set`), a binding that fails element-wise passes when the sums of the
 * elements each run changed agree.
 * @param {{bindings: Binding[], data: Float32Array[], fills: Float32Array[]}} ref
 * @param {Binding[]} bindings @param {Float32Array[]} out @param {boolean} lenient
 * @param {number} tol
 */
export function compareOutputs(ref, bindings, out, lenient, tol) {
  let err = 0;
  for (let j = 0; j < bindings.length; j++) {
    const r = ref.bindings.findIndex((b) => b.binding === bindings[j].binding);
    if (r < 0) continue;
    const want = ref.data[r];
    const got = out[j];
    const n = Math.min(want.length, got.length);
    let scale = 1;
    for (let i = 0; i < want.length; i++) if (Math.abs(want[i]) + 1 > scale) scale = Math.abs(want[i]) + 1;
    let worst = want.length === got.length ? 0 : Infinity;
    for (let i = 0; i < n && worst !== Infinity; i++) {
      const e = Math.abs(want[i] - got[i]);
      if (Number.isNaN(e)) worst = Infinity;
      else if (e > worst) worst = e;
    }
    if (worst <= tol * scale) {
      err = Math.max(err, worst);
      continue;
    }
    if (lenient) {
      const changedSum = (/** @type {Float32Array} */ v, /** @type {Float32Array} */ fill) => {
        let s = 0;
        let a = 0;
        for (let i = 0; i < v.length; i++) {
          if (v[i] !== fill[i]) {
            s += v[i];
            a += Math.abs(v[i]);
          }
        }
        return [s, a];
      };
      const [s0, a0] = changedSum(want, ref.fills[r]);
      const fill = mulberryFillLike(bindings[j], got.length);
      const [s1] = changedSum(got, fill);
      const e = Math.abs(s0 - s1);
      if (e <= tol * (1 + a0)) {
        err = Math.max(err, e);
        continue;
      }
    }
    return { ok: false, err: worst };
  }
  return { ok: true, err };
}

/** The scratch fill `tune` gives binding `b`. @param {Binding} b @param {number} len */
function mulberryFillLike(b, len) {
  const rand = mulberry32(0x9e3779b9 ^ (b.binding * 7919 + b.size));
  const fill = new Float32Array(len);
  for (let i = 0; i < len; i++) fill[i] = rand() * 2 - 1;
  return fill;
}
