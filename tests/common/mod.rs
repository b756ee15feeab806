//! Shared helpers of the GPU tests: one device per test binary, random inputs, and a comparison
//! that reports the worst element.
#![allow(dead_code)]

use std::sync::OnceLock;

// The programs' helpers run the `vae-wgpu` binary, which the engine alone does not build.
#[cfg(feature = "cli")]
pub mod programs;
pub mod shapes;

use rand::Rng;
use vae_wgpu::gpu::{BackendChoice, ContextOptions, GpuContext, GpuTensor};
use vae_wgpu::kernels::matmul::MatmulVariant;
use vae_wgpu::kernels::reparam_kl::EpsSource;
use vae_wgpu::model::GpuVae;
use vae_wgpu::model::gpu::{Input, StepGraph};
use vae_wgpu::rng::{Between, Philox, domain};

/// f32 unit roundoff.
pub const U: f64 = 1.0 / 16_777_216.0;

/// The test device: `VAE_WGPU_BACKEND` / `VAE_WGPU_ADAPTER` pick it. No adapter is a failure with the
/// install hint, never a skip.
pub fn ctx() -> &'static GpuContext {
    &contexts()[0]
}

/// The test device, then a GL device when one exists and the first is not GL already, so the
/// parity tests cover the GL backend (llvmpipe through EGL on Linux) too. With
/// `VAE_WGPU_REQUIRE_GL=1` (as CI sets it) a missing GL adapter is a failure, not a skip.
pub fn contexts() -> &'static [GpuContext] {
    static CTXS: OnceLock<Vec<GpuContext>> = OnceLock::new();
    CTXS.get_or_init(|| {
        // Before any instance exists: wgpu sets its Vulkan debug messenger's severities from the
        // log level in force then.
        install_validation_log();
        let first = match ContextOptions::from_env().and_then(|o| GpuContext::new(&test_cache(o))) {
            Ok(c) => c,
            Err(e) => panic!("GPU tests need an adapter: {e}"),
        };
        eprintln!("adapter: {}", first.adapter.short());
        let mut v = vec![first];
        if v[0].adapter.backend != wgpu::Backend::Gl {
            let opts = test_cache(ContextOptions { backend: BackendChoice::Gl, ..ContextOptions::default() });
            match GpuContext::new(&opts) {
                Ok(gl) => {
                    eprintln!("also on GL adapter: {}", gl.adapter.short());
                    v.push(gl);
                }
                Err(e) if std::env::var("VAE_WGPU_REQUIRE_GL").is_ok_and(|s| s == "1") => {
                    panic!("VAE_WGPU_REQUIRE_GL=1 but no GL adapter: {e}\nInstall EGL and Mesa: apt-get install -y libegl1 libegl-mesa0 libgl1-mesa-dri")
                }
                Err(e) => eprintln!("note: GL backend not covered here (no GL adapter: {e})"),
            }
        }
        v
    })
}

/// The GL context, when the primary adapter is not GL already and GL is there (with
/// `VAE_WGPU_REQUIRE_GL=1` its absence has already failed [`contexts`]).
pub fn gl_context() -> Option<&'static GpuContext> {
    contexts()
        .iter()
        .skip(1)
        .find(|c| c.adapter.backend == wgpu::Backend::Gl)
}

/// A test that cannot run its check here says so: the reason on stderr and, when
/// `VAE_WGPU_SKIP_LOG` names a file (`scripts/test.sh` sets it), a line there, which the test
/// command counts as skipped, not passed (`N passed, N failed, N skipped`). Where CI has what a
/// test needs, it is required instead (`VAE_WGPU_REQUIRE_GL`, `VAE_WGPU_REQUIRE_SPIRV_VAL`).
pub fn skip(test: &str, reason: &str) {
    eprintln!("SKIPPED {test}: {reason}");
    if let Ok(path) = std::env::var("VAE_WGPU_SKIP_LOG") {
        use std::io::Write;
        let line = format!("{test}: {reason}\n");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            panic!("cannot record the skip of {test} in {path}: {e}");
        }
    }
}

/// The validation layer's messages (`WGPU_VALIDATION=1`): wgpu-hal's Vulkan debug messenger logs
/// each at its severity; warnings and errors are kept here until a test takes them.
static VALIDATION_MESSAGES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

struct ValidationLog;

/// The message being logged is an excused one (its detail records are skipped with it).
static SKIPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl log::Log for ValidationLog {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn && m.target().starts_with("wgpu_hal::vulkan")
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            let msg = format!("{} {}: {}", r.level(), r.target(), r.args());
            // wgpu's DEBUG flag (which it needs to route the layer's messages to its log) makes
            // naga record the WGSL source in each SPIR-V module, as source language 10 (WGSL);
            // the 1.3.239 layer's SPIRV-Tools predates that enumerant and rejects every module
            // for it. Only that operand is excused (`tests/shader_targets.rs` runs spirv-val on
            // every module and override set without debug info); every other message fails.
            // wgpu logs a message's queues, command buffers and objects as records of their own,
            // each starting with a tab: they go with the message they follow.
            let detail = r.args().to_string().starts_with('\t');
            if !detail {
                let excused = msg.contains("Invalid source language operand: 10");
                SKIPPING.store(excused, std::sync::atomic::Ordering::Relaxed);
            }
            if SKIPPING.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            VALIDATION_MESSAGES
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(msg);
        }
    }

    fn flush(&self) {}
}

/// Whether the tests run under the backends' validation (wgpu's `WGPU_VALIDATION`).
pub fn validating() -> bool {
    std::env::var("WGPU_VALIDATION").is_ok_and(|v| !v.is_empty() && v != "0")
}

#[allow(dead_code)]
pub fn install_validation_log() {
    if validating() {
        let _ = log::set_logger(&ValidationLog);
        log::set_max_level(log::LevelFilter::Warn);
    }
}

/// The validation messages recorded so far (taken: the next call starts empty).
#[allow(dead_code)]
pub fn take_validation_messages() -> Vec<String> {
    std::mem::take(
        &mut *VALIDATION_MESSAGES
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    )
}

/// Under `WGPU_VALIDATION=1`, fail with every validation warning or error logged since the last
/// check (a missing layer is one: wgpu warns that it cannot find it). Tests run in parallel, so a
/// message is reported by the test that checks next, which ran beside the one that caused it:
/// run one test (`--test-threads=1`) to pin it down.
#[allow(dead_code)]
pub fn assert_no_validation_messages(test: &str) {
    if !validating() {
        return;
    }
    let msgs = take_validation_messages();
    assert!(
        msgs.is_empty(),
        "{test}: the validation layer reported {} message(s):\n{}",
        msgs.len(),
        msgs.join("\n")
    );
}

/// `backend_test!(name, |ctx| { … })`: one test body instantiated per backend, as `name::primary`
/// (the default adapter: Vulkan on Linux) and `name::gl` (GL through EGL), as candle's
/// `test_device!` does: `cargo test --release gl` runs the GL backend alone, and a failing test's
/// name and output say which backend failed.
#[allow(unused_macros)]
macro_rules! backend_test {
    ($name:ident, |$ctx:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn primary() {
                let $ctx: &vae_wgpu::gpu::GpuContext = &crate::common::contexts()[0];
                eprintln!("backend: {}", $ctx.adapter.short());
                $body
                crate::common::assert_no_validation_messages(concat!(stringify!($name), "::primary"));
            }

            #[test]
            fn gl() {
                match crate::common::gl_context() {
                    Some($ctx) => {
                        eprintln!("backend: {}", $ctx.adapter.short());
                        $body
                        crate::common::assert_no_validation_messages(concat!(stringify!($name), "::gl"));
                    }
                    None => crate::common::skip(
                        concat!(module_path!(), "::gl"),
                        "no separate GL adapter here (the primary adapter is GL, or EGL is missing: \
                         VAE_WGPU_REQUIRE_GL=1 makes that a failure)",
                    ),
                }
            }
        }
    };
}

/// The options of [`ctx`] (the environment's adapter, the tests' autotune cache), for a test that
/// opens a context of its own.
pub fn ctx_options() -> ContextOptions {
    test_cache(ContextOptions::from_env().expect("VAE_WGPU_* options"))
}

/// The tests' own autotune cache under the target directory, so which kernels a test runs does
/// not depend on the user's cache (`~/.cache/vae-wgpu`).
fn test_cache(opts: ContextOptions) -> ContextOptions {
    ContextOptions {
        cache_dir: Some(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("autotune-cache")),
        ..opts
    }
}

/// The matmul variants a device runs: direct and tiled everywhere, subgroup (storage- and texture-fed) where the device has
/// subgroups. Lavapipe's Vulkan driver has them, so the subgroup kernels are always covered there
/// (`subgroup_kernels_are_covered_on_lavapipe` fails if that ever changes).
pub fn variants(ctx: &GpuContext) -> Vec<MatmulVariant> {
    // Every tile shape of the tiled kernel: the autotune may choose any of them.
    vae_wgpu::kernels::matmul::select::usable_variants(ctx)
}

/// `[B, 2K]` rows (mu_b, logvar_b): the layout the reparameterisation kernels read.
pub fn join_heads(mu: &[f64], logvar: &[f64], k: usize) -> Vec<f64> {
    mu.chunks_exact(k)
        .zip(logvar.chunks_exact(k))
        .flat_map(|(m, l)| m.iter().chain(l).copied())
        .collect()
}

/// Deterministic uniform values in [lo, hi), rounded to f32 (what the GPU receives) and widened.
pub fn uniform(seed: u32, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    let mut s = Philox::stream(0xC0FFEE, domain::TEST_DATA, seed);
    (0..n)
        .map(|_| s.sample(Between(lo, hi)) as f32 as f64)
        .collect()
}

pub fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Per-element check `|got - want| <= tol[i]`; the failure names the worst element relative to its
/// tolerance, both values, and the max abs / rel error over the tensor.
pub fn assert_close(name: &str, got: &[f32], want: &[f64], tol: impl Fn(usize) -> f64) -> f64 {
    assert_eq!(
        got.len(),
        want.len(),
        "{name}: length {} vs reference {}",
        got.len(),
        want.len()
    );
    let mut worst = (0usize, -1.0f64);
    let (mut max_abs, mut max_rel) = (0.0f64, 0.0f64);
    for i in 0..got.len() {
        let g = got[i] as f64;
        let err = (g - want[i]).abs();
        let ratio = if err.is_nan() {
            f64::INFINITY
        } else {
            err / tol(i).max(f64::MIN_POSITIVE)
        };
        if ratio > worst.1 {
            worst = (i, ratio);
        }
        max_abs = max_abs.max(err);
        if want[i] != 0.0 {
            max_rel = max_rel.max(err / want[i].abs());
        }
    }
    let i = worst.0;
    assert!(
        worst.1 <= 1.0,
        "{name}: element {i}: gpu {} vs cpu {} (|err| {:.3e} > tol {:.3e}); max abs err {max_abs:.3e}, max rel err {max_rel:.3e} over {} elements",
        got[i],
        want[i],
        (got[i] as f64 - want[i]).abs(),
        tol(i),
        got.len()
    );
    eprintln!(
        "{name}: max abs err {max_abs:.3e}, max rel err {max_rel:.3e} ({} elements)",
        got.len()
    );
    max_abs
}

/// Vulkan's (and Metal's) bound on exp's error: (3 + 2|x|) ULP; as a relative error.
pub fn exp_rel_tol(x: f64) -> f64 {
    (3.0 + 2.0 * x.abs()) * 2.0 * U
}

/// An IDX file's bytes: unsigned-byte type, the given dimensions, then `data`.
pub fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

/// Gzip-compress `bytes`.
pub fn gz(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Step graphs on `b` rows already in `acts.x`, with eps read from `acts.eps`: a training step,
/// and a forward-only step. A training step fuses the BCE into the logits product and never stores
/// the logits; the forward-only step (standalone BCE kernel) shows them, and its loss checks the
/// fused one. Each has its own loss accumulator.
pub struct ReferenceGraphs {
    pub train: StepGraph,
    /// The optimizer the training step updates with (its state on the device).
    pub optimizer: vae_wgpu::optim::Optimizer,
    pub acc: GpuTensor,
    pub forward: StepGraph,
    pub acc_forward: GpuTensor,
}

pub fn reference_graphs(ctx: &GpuContext, gpu: &GpuVae, b: usize) -> ReferenceGraphs {
    reference_graphs_with(ctx, gpu, b, Default::default())
}

/// As [`reference_graphs`], the training step updating with the optimizer `opt`.
pub fn reference_graphs_with(
    ctx: &GpuContext,
    gpu: &GpuVae,
    b: usize,
    opt: vae_wgpu::optim::OptimizerConfig,
) -> ReferenceGraphs {
    let optimizer = vae_wgpu::optim::Optimizer::new(ctx, opt, gpu.layout.len).unwrap();
    let plan = |acc: &GpuTensor, update| {
        gpu.plan_step(ctx, b, Input::Given, EpsSource::Buffer, update, acc)
            .unwrap()
    };
    let acc = gpu.new_accumulator(ctx).unwrap();
    let acc_forward = gpu.new_accumulator(ctx).unwrap();
    ReferenceGraphs {
        train: plan(&acc, Some(&optimizer)),
        forward: plan(&acc_forward, None),
        optimizer,
        acc,
        acc_forward,
    }
}

/// The training step of `vae` at batch 128, planned over 256 synthetic images: the plan that the
/// plan-level tests (`default_step`, `autotune`) inspect, dispatch by dispatch.
pub fn plan_train_step(
    ctx: &GpuContext,
    vae: &vae_wgpu::model::GpuVae,
) -> vae_wgpu::model::gpu::StepGraph {
    let pixels = ctx
        .upload_u8("px", &[256, 784], &vec![7u8; 256 * 784])
        .unwrap();
    let order: Vec<u32> = (0..256).collect();
    let index = ctx.upload_u32("ix", &[256], &order).unwrap();
    let acc = vae.new_accumulator(ctx).unwrap();
    let labels = ctx.upload_u32("labels", &[256], &vec![0; 256]).unwrap();
    let input = vae_wgpu::model::gpu::Input::Gather {
        pixels: &pixels,
        labels: &labels,
        index: &index,
    };
    let adam = vae_wgpu::optim::Optimizer::new(ctx, Default::default(), vae.layout.len).unwrap();
    vae.plan_step(ctx, 128, input, EpsSource::Philox, Some(&adam), &acc)
        .unwrap()
}

/// What the standalone likelihood kernel gave: the loss accumulator's slots (after `loss_reduce`),
/// dlogits, and log σ's gradient (after `sum_to`; 0 unless the likelihood learns σ).
#[allow(dead_code)]
pub struct LikelihoodRun {
    pub acc: Vec<f32>,
    pub dlogits: Vec<f32>,
    pub dlog_sigma: f32,
}

/// `recon_forward_backward` on logits `[rows, d]` (uploaded) against targets `[b, d]` with log σ =
/// `log_sigma`, then `loss_reduce` and `sum_to`, as a training step chains them.
#[allow(dead_code)]
pub fn run_likelihood(
    ctx: &GpuContext,
    lik: vae_wgpu::model::Likelihood,
    logits: &vae_wgpu::gpu::GpuTensor,
    targets: &vae_wgpu::gpu::GpuTensor,
    log_sigma: f32,
) -> LikelihoodRun {
    use vae_wgpu::gpu::DType;
    use vae_wgpu::kernels::{self, StepParams, StepUniform, likelihood, reduce};
    let np = likelihood::partials_len(logits.len());
    let z = |name: &str, n: usize| ctx.zeros(name, &[n], DType::F32).unwrap();
    let gd = ctx.zeros("dlogits", &logits.shape, DType::F32).unwrap();
    let (gp, gsp, gds, gk) = (
        z("partials", np),
        z("sigma partials", np),
        z("dls", 1),
        z("kl", 1),
    );
    let acc = z("acc", reduce::LossSlots::LEN);
    let gls = ctx.upload_f32("log sigma", &[1], &[log_sigma]).unwrap();
    let step = StepUniform::new(ctx, &StepParams::with_seed(0));
    let sigma_partials = lik.learns_scale().then_some(&gsp);
    let d = [
        likelihood::recon_forward_backward(
            ctx,
            lik,
            logits,
            targets,
            &gd,
            &gp,
            Some(&gls),
            sigma_partials,
            None,
        )
        .unwrap(),
        reduce::loss_reduce(ctx, &gp, np, &gk, 1, &acc, &step).unwrap(),
        reduce::sum_to(ctx, &gsp, np, &gds).unwrap(),
    ];
    kernels::run(ctx, &d.iter().collect::<Vec<_>>()).unwrap();
    LikelihoodRun {
        acc: ctx.read_f32(&acc).unwrap(),
        dlogits: ctx.read_f32(&gd).unwrap(),
        dlog_sigma: ctx.read_f32(&gds).unwrap()[0],
    }
}
