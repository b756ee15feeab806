//! The notebook's model plans the same training step as before the architecture became a list of
//! layers: the same 16 dispatches, in the same order, with the same kernels, override constants,
//! grids and bindings (buffers named by first appearance, with byte offsets and sizes). The same
//! dispatches on the same adapter give the same numbers bit for bit, so this pins the default
//! run's losses. `tests/fixtures/default_step.txt` was written by this file run against the
//! single-hidden-layer engine (commit 6177430) with `VAE_WGPU_BLESS=1` (its `RELU_MASK` constant
//! written as today's `ACT_GRAD`, the same values for ReLU), and blessed again when the likelihood
//! and the KL weight became settings, after checking that only these changed: the `BCE` constant
//! is `LIKELIHOOD` (1, the Bernoulli, where `BCE` was 1), the loss accumulator has 10 slots (the
//! weighted KL), and `loss_reduce` and `reparam_backward` bind the step uniform (the KL weight,
//! 1 here) — the same kernels, grids and other bindings, and the default run's five epochs gave
//! the same losses to the last printed digit.

mod common;

use vae_wgpu::gpu::{ContextOptions, GpuContext};
use vae_wgpu::model::{GpuVae, VaeConfig};

fn describe() -> String {
    // A fresh tune store: the matmul kernels pinned to direct, and Adam's read path recorded as
    // storage before planning (that engine had no texture reads; both read paths give the same
    // bits, `parity_kernels::adam_matches_pytorch_formula`).
    let cache = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("default-step-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let opts = ContextOptions {
        matmul: Some("direct".into()),
        cache_dir: Some(cache.clone()),
        ..ContextOptions::from_env().unwrap()
    };
    let ctx = GpuContext::new(&opts).unwrap();
    let vae = GpuVae::new(&ctx, VaeConfig::default(), 128, 0).unwrap();
    let arena = vae.layout.len;
    ctx.tune_store
        .record(&format!("adam reads, {arena} parameters"), "storage", "");
    let g = common::plan_train_step(&ctx, &vae);
    let _ = std::fs::remove_dir_all(&cache);
    let mut buffers: Vec<wgpu::Buffer> = Vec::new();
    let mut out = format!("{} dispatches\n", g.dispatch_count());
    for d in g.dispatches() {
        let desc = &d.desc;
        let mut constants: Vec<String> = desc
            .constants
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        constants.sort();
        let bindings: Vec<String> = desc
            .bindings
            .iter()
            .map(|(b, off, size)| {
                let i = buffers.iter().position(|x| x == b).unwrap_or_else(|| {
                    buffers.push(b.clone());
                    buffers.len() - 1
                });
                format!("#{i}@{off}+{size}")
            })
            .collect();
        out.push_str(&format!(
            "{} {} [{}] grid {:?} bind {}\n",
            desc.shader.name,
            desc.entry,
            constants.join(","),
            desc.workgroups,
            bindings.join(" ")
        ));
    }
    out
}

#[test]
fn default_model_plans_the_same_step_as_the_single_layer_engine() {
    let got = describe();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/default_step.txt");
    if std::env::var_os("VAE_WGPU_BLESS").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap();
    assert!(got.starts_with("16 dispatches\n"), "{got}");
    assert_eq!(got, want, "the default training step changed");
}
