//! `tune`: time the matmul kernels of the training step's products on this adapter again, record
//! the choices (replacing the old ones in the autotune cache) and print the table.
//!
//! ```text
//! cargo run --release --example tune            # or: vae-wgpu tune
//! ```

use std::process::ExitCode;

use clap::Parser;

use super::out::say;
use crate::gpu::GpuContext;
use crate::kernels::reparam_kl::EpsSource;
use crate::model::gpu::Input;
use crate::model::{GpuVae, TrainSettings};

#[derive(Parser, Debug)]
#[command(
    about = "Time the matmul kernels of the training step again and print the autotune table",
    allow_negative_numbers = true
)]
pub struct Args {
    /// Images per step.
    #[arg(long, default_value_t = TrainSettings::default().batch_size)]
    batch_size: usize,
    #[command(flatten)]
    model: super::ModelArgs,
    #[command(flatten)]
    device: super::DeviceArgs,
}

super::program_entry_points!();

fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut opts = args.device.options()?;
    opts.retune = true;
    // The model is checked before the device starts or anything is allocated.
    // tune times MNIST's shapes: no --image-size to suggest.
    let mut cfg = args
        .model
        .new_model(super::MNIST_IMAGE)
        .map_err(|e| super::sides_hint(&e, false, true))?;
    if args.model.conditional {
        // MNIST's ten digits (the products' shapes do not depend on the classes).
        cfg.classes = 10;
    }
    cfg.validate().map_err(|e| super::setting_message(&e))?;
    let ctx = GpuContext::new(&opts)?;
    say!("adapter: {}", ctx.adapter.short());
    let vae = GpuVae::new(&ctx, cfg, args.batch_size, 0)?;
    let optimizer = crate::optim::Optimizer::new(&ctx, Default::default(), vae.layout.len)?;
    let acc = vae.new_accumulator(&ctx)?;
    let start = std::time::Instant::now();
    vae.plan_step(
        &ctx,
        args.batch_size,
        Input::Given,
        EpsSource::Philox,
        Some(&optimizer),
        &acc,
    )?;
    say!(
        "tuned the training step's products in {:.1} s (each candidate's best of 5 interleaved rounds, per launch):",
        start.elapsed().as_secs_f64()
    );
    say!("{:<26} {:<9} timings", "problem", "choice");
    for (problem, c) in ctx.tune_store.choices() {
        say!("{problem:<26} {:<9} {}", c.variant, c.timings);
    }
    say!("{}", crate::kernels::matmul::summary(&ctx));
    Ok(ExitCode::SUCCESS)
}
