//! Where a convolution pass spends its time: every pass of the `--conv 32,64 --latent 16` model's
//! four layers (batch 128, or `--batch N`), in the GEMM formulation (and the direct one with
//! `--direct`), each dispatch timed alone (best of
//! 5 submits of several launches) and the whole pass, with the pass's GFLOP/s. The whole step's
//! dispatches: `examples/step_dispatches.rs`. `docs/PERFORMANCE.md`'s
//! per-dispatch table is this program's output.
//!
//! ```text
//! cargo run --release --example conv_passes [-- --batch 128] [--direct]
//! ```

use vae_wgpu::gpu::{DType, GpuContext};
use vae_wgpu::kernels::conv::{
    BiasSide, ConvEpilogue, ConvFormulation, ConvScratch, plan_to_hi, plan_to_lo, plan_weight_grad,
};
use vae_wgpu::kernels::{self, Dispatch};
use vae_wgpu::model::{ParamLayout, VaeConfig};

/// Seconds per run of `seq`: the best of 5 submits of about 50 ms each.
fn time(ctx: &GpuContext, seq: &[&Dispatch]) -> vae_wgpu::Result<f64> {
    kernels::time_sequence(ctx, seq, 0.05)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let batch = match args.iter().position(|a| a == "--batch") {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .filter(|&b: &usize| b > 0)
            .ok_or("--batch takes a positive whole number")?,
        None => 128,
    };
    // The direct kernels take seconds a pass on a CPU driver: timed only when asked.
    let formulations = if args.iter().any(|a| a == "--direct") {
        ConvFormulation::ALL.to_vec()
    } else {
        vec![ConvFormulation::Gemm]
    };
    let ctx = GpuContext::from_env()?;
    println!(
        "adapter: {}; batch {batch}; ms per dispatch, best of 5",
        ctx.adapter.short()
    );
    let cfg = VaeConfig::convolutional([1, 28, 28], &[32, 64], &[], 16);
    let layout = ParamLayout::new(&cfg);
    for l in layout.layers() {
        let Some((s, transposed)) = l.conv_shape(batch) else {
            continue;
        };
        let fill = |n: usize| {
            (0..n)
                .map(|i| (i % 13) as f32 / 13.0 - 0.5)
                .collect::<Vec<_>>()
        };
        let lo = ctx.upload_f32("lo", &[s.lo_len()], &fill(s.lo_len()))?;
        let hi = ctx.upload_f32("hi", &[s.hi_len()], &fill(s.hi_len()))?;
        let w = ctx.upload_f32("w", &[s.weight_len()], &fill(s.weight_len()))?;
        let dw = ctx.zeros("dw", &[s.weight_len()], DType::F32)?;
        let side = if transposed {
            BiasSide::Hi
        } else {
            BiasSide::Lo
        };
        let db_len = if transposed { s.hi[0] } else { s.lo[0] };
        let db = ctx.zeros("db", &[db_len], DType::F32)?;
        let scratch = ConvScratch::new(&ctx, &[s])?;
        let flops = 2.0 * s.macs() as f64;
        println!("\n{}", l.describe());
        for f in formulations.iter().copied() {
            let e = ConvEpilogue::NONE;
            let passes = [
                ("to_lo", plan_to_lo(&ctx, f, &s, &hi, &w, &lo, e, &scratch)?),
                ("to_hi", plan_to_hi(&ctx, f, &s, &lo, &w, &hi, e, &scratch)?),
                (
                    "weight_grad",
                    plan_weight_grad(&ctx, f, &s, &lo, &hi, &dw, Some((&db, side)), &scratch)?,
                ),
            ];
            for (pass, seq) in &passes {
                let all: Vec<&Dispatch> = seq.iter().collect();
                let total = time(&ctx, &all)?;
                let parts = if seq.len() > 1 {
                    let mut parts = Vec::new();
                    for d in seq {
                        parts.push(format!("{} {:.2}", d.label, 1e3 * time(&ctx, &[d])?));
                    }
                    format!(" ({})", parts.join(", "))
                } else {
                    String::new()
                };
                println!(
                    "  {pass:<11} {f:<6} {:7.2} ms {:6.1} GFLOP/s{parts}",
                    1e3 * total,
                    flops / total / 1e9
                );
            }
        }
    }
    Ok(())
}
