//! What each dispatch of the default model's training step costs the first time it runs, against
//! the second: drivers that compile a pipeline's machine code at its first dispatch (lavapipe's
//! llvmpipe) pay the compile there, and a step's cold start is their sum. Plans the step (with the
//! autotune's recorded choices: run the trainer once first), then launches each dispatch twice.
//!
//! ```text
//! MESA_SHADER_CACHE_DISABLE=true cargo run --release --example first_dispatch
//! ```

use std::time::Instant;

use vae_wgpu::data::load_splits;
use vae_wgpu::gpu::GpuContext;
use vae_wgpu::kernels::{self, reparam_kl::EpsSource};
use vae_wgpu::model::{GpuDataset, GpuVae, TrainSettings, VaeConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let ctx = GpuContext::from_env()?;
    println!("adapter: {}", ctx.adapter.short());
    let (train, _) = load_splits(std::path::Path::new("data/mnist"))?;
    let settings = TrainSettings::default();
    let data = GpuDataset::upload(&ctx, "train", &train)?;
    let vae = GpuVae::new(&ctx, VaeConfig::default(), settings.batch_size, 0)?;
    let adam = vae_wgpu::optim::Optimizer::new(&ctx, settings.optimizer, vae.layout.len)?;
    let acc = vae.new_accumulator(&ctx)?;
    let step = vae.plan_step(
        &ctx,
        settings.batch_size,
        data.input(),
        EpsSource::Philox,
        Some(&adam),
        &acc,
    )?;
    println!("planned {:.2} s after start", start.elapsed().as_secs_f64());
    let mut compile = 0.0;
    for (i, d) in step.dispatches().iter().enumerate() {
        let first = kernels::time_launches(&ctx, d, 1)?;
        let second = kernels::time_launches(&ctx, d, 1)?;
        compile += (first - second).max(0.0);
        println!(
            "{i:>2} {:<18} {:>8.1} ms first, {:>6.1} ms second",
            d.desc.entry,
            first * 1e3,
            second * 1e3
        );
    }
    println!("first launches beyond second ones: {compile:.2} s");
    Ok(())
}
