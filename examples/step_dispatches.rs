//! Where a training step spends its time: every dispatch of a model's planned step (Adam, the
//! batch gathered on the device) timed alone, in plan order, then the totals per kernel and the
//! step as one submit. The model is the default one, or as the flags say:
//!
//! ```text
//! cargo run --release --example step_dispatches -- [--hidden 200] [--res-blocks 200,200]
//!     [--conv 32,64] [--latent 16] [--batch 128]
//! cargo run --release --example step_dispatches -- --kl 32,64 [--no-attention] --batch 32 --grouped
//! ```

use std::collections::BTreeMap;
use vae_wgpu::gpu::GpuContext;
use vae_wgpu::kernels::reparam_kl::EpsSource;
use vae_wgpu::kernels::{self, Dispatch};
use vae_wgpu::model::autoencoder_kl::KlConfig;
use vae_wgpu::model::{GpuVae, VaeConfig, gpu::Input};

/// Seconds per run of `seq`: the best of 5 submits of about 50 ms each.
fn time(ctx: &GpuContext, seq: &[&Dispatch]) -> vae_wgpu::Result<f64> {
    kernels::time_sequence(ctx, seq, 0.05)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| -> Option<&str> {
        let i = args.iter().position(|a| a == name)?;
        args.get(i + 1).map(String::as_str)
    };
    let widths = |name: &str| -> Result<Option<Vec<usize>>, String> {
        flag(name)
            .map(|v| {
                (v.split(','))
                    .map(|w| w.trim().parse().map_err(|_| format!("{name}: '{v}'")))
                    .collect()
            })
            .transpose()
    };
    let number = |name: &str, default: usize| -> Result<usize, String> {
        flag(name).map_or(Ok(default), |v| {
            v.parse().map_err(|_| format!("{name}: '{v}'"))
        })
    };
    let batch = number("--batch", 128)?;
    let latent = number("--latent", 10)?;
    let mut cfg = match (widths("--kl")?, widths("--conv")?) {
        // diffusers' AutoencoderKL of these block channels on MNIST's 28x28 (one ResNet per
        // down block, 4 latent channels, 8 groups; --no-attention leaves the mid blocks' out).
        (Some(blocks), _) => {
            let mut kl = KlConfig::new(1, &blocks, 1, 4, 8, 28);
            kl.mid_block_add_attention = !args.iter().any(|a| a == "--no-attention");
            VaeConfig::autoencoder_kl(kl, [1, 28, 28])
        }
        (None, Some(conv)) => {
            let hidden = widths("--hidden")?.unwrap_or_default();
            VaeConfig::convolutional([1, 28, 28], &conv, &hidden, latent)
        }
        (None, None) => VaeConfig::mirrored(784, &widths("--hidden")?.unwrap_or(vec![200]), latent),
    };
    if cfg.kl.is_none() {
        cfg.res_blocks = widths("--res-blocks")?.unwrap_or_default();
    }
    cfg.validate()?;
    let ctx = GpuContext::from_env()?;
    let vae = GpuVae::new(&ctx, cfg.clone(), batch, 0)?;
    let n = 2 * batch;
    let pixels = ctx.upload_u8("pixels", &[n, 784], &vec![7u8; n * 784])?;
    let order: Vec<u32> = (0..n as u32).collect();
    let index = ctx.upload_u32("index", &[n], &order)?;
    let labels = ctx.upload_u32("labels", &[n], &vec![0; n])?;
    let acc = vae.new_accumulator(&ctx)?;
    let adam = vae_wgpu::optim::Optimizer::new(&ctx, Default::default(), vae.layout.len)?;
    let input = Input::Gather {
        pixels: &pixels,
        labels: &labels,
        index: &index,
    };
    let g = vae.plan_step(&ctx, batch, input, EpsSource::Philox, Some(&adam), &acc)?;
    println!(
        "adapter: {}\nmodel: {}, batch {batch}: {} dispatches, each timed alone (ms)",
        ctx.adapter.short(),
        cfg.describe(),
        g.dispatch_count()
    );
    // --grouped: each kernel's dispatches timed as one submit (a step of hundreds of dispatches
    // in minutes instead of hours), then the step.
    if args.iter().any(|a| a == "--grouped") {
        let mut groups: BTreeMap<&str, Vec<&Dispatch>> = BTreeMap::new();
        for d in g.dispatches() {
            groups.entry(d.label).or_default().push(d);
        }
        println!("per kernel, its dispatches as one submit (count, ms):");
        let mut sum = 0.0;
        for (label, ds) in &groups {
            let ms = 1e3 * time(&ctx, ds)?;
            sum += ms;
            println!("  {label:<24} {:3} {ms:8.2}", ds.len());
        }
        let all: Vec<&Dispatch> = g.dispatches().iter().collect();
        println!(
            "sum {sum:.1} ms; the step as one submit {:.1} ms",
            1e3 * time(&ctx, &all)?
        );
        return Ok(());
    }
    let mut total = 0.0;
    let mut per_kernel: BTreeMap<&str, (usize, f64)> = BTreeMap::new();
    for d in g.dispatches() {
        let ms = 1e3 * time(&ctx, &[d])?;
        total += ms;
        let e = per_kernel.entry(d.label).or_default();
        *e = (e.0 + 1, e.1 + ms);
        let constants: Vec<String> = (d.desc.constants.iter())
            .filter(|(_, v)| *v != 0.0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "  {:<24} {ms:7.3}  {} {}",
            d.label,
            d.desc.entry,
            constants.join(",")
        );
    }
    println!("per kernel (count, ms):");
    for (label, (count, ms)) in &per_kernel {
        println!("  {label:<24} {count:3} {ms:8.3}");
    }
    let all: Vec<&Dispatch> = g.dispatches().iter().collect();
    println!(
        "sum {total:.2} ms; the step as one submit {:.2} ms",
        1e3 * time(&ctx, &all)?
    );
    Ok(())
}
