//! Evaluates a checkpoint on the MNIST test set, on the GPU: the negative ELBO with 1 and with N
//! noise draws per image, and the importance-weighted bound on -log p(x) with k samples.
//!
//! ```text
//! cargo run --release --example eval -- --checkpoint runs/X/checkpoint.safetensors
//! ```

use super::out::{note, say};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::gpu::GpuContext;
use crate::model::eval::evaluate;
use crate::model::{Checkpoint, GpuDataset};
use std::sync::atomic::Ordering;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser, Debug)]
#[command(
    about = "Evaluate a VAE checkpoint on the MNIST test set",
    allow_negative_numbers = true
)]
pub struct Args {
    /// A checkpoint.safetensors or model.safetensors (also one saved from PyTorch).
    #[arg(long)]
    checkpoint: PathBuf,
    #[command(flatten)]
    data: super::DataArgs,
    /// The hidden activation of a bare PyTorch state_dict (relu or tanh); checkpoints written
    /// here record theirs, and a flag that contradicts it is refused.
    #[arg(long)]
    activation: Option<super::HiddenAct>,
    /// The likelihood of a bare PyTorch state_dict, which cannot say whether it is a Bernoulli or
    /// a continuous Bernoulli (checkpoints written here record theirs; a contradicting flag is
    /// refused).
    #[arg(long)]
    likelihood: Option<String>,
    /// Noise draws per image for the N-sample ELBO.
    #[arg(long, default_value_t = 10)]
    elbo_samples: usize,
    /// Importance samples per image for the bound on -log p(x).
    #[arg(long, default_value_t = 100)]
    iw_samples: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    device: super::DeviceArgs,
}

super::program_entry_points!();

fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if args.elbo_samples == 0 || args.iw_samples == 0 {
        return Err("--elbo-samples and --iw-samples must be at least 1".into());
    }
    // Sample counts are rows of a pass: bounded as the model's --samples is, named by their flag.
    for (flag, k) in [
        ("--elbo-samples", args.elbo_samples),
        ("--iw-samples", args.iw_samples),
    ] {
        if k > crate::model::config::MAX_SIZE {
            return Err(format!(
                "{flag} {k} is absurdly large (max {})",
                crate::model::config::MAX_SIZE
            )
            .into());
        }
    }
    let ckpt = Checkpoint::load(&args.checkpoint)?;
    let (cfg, data) = super::reading_checkpoint(
        &ckpt,
        &args.checkpoint,
        args.activation,
        args.likelihood.clone(),
        &args.data,
    )?;
    let opts = args.device.options()?;
    // The test split the checkpoint's run held out (an image folder is split with its seed).
    let test = data
        .load(ckpt.progress.seed, Some(&ckpt), args.checkpoint.parent())?
        .test;
    if test.dim() != cfg.input {
        return Err(format!(
            "test images have {} values ({} channel(s) of {}x{}), the checkpoint's model takes {}: \
             point --data-dir at the data it was trained on",
            test.dim(),
            test.channels,
            test.rows,
            test.cols,
            cfg.input
        )
        .into());
    }
    // A conditional model is evaluated on the true labels: the data's classes must be its own.
    let cfg = super::condition_on(cfg, false, &ckpt.progress.class_names, &test, &data.dir())?;
    // Ctrl-C / SIGTERM stop the evaluation at its next progress point.
    let stop = super::stop_flag()?;
    let ctx = GpuContext::new(&opts)?;
    say!("adapter: {}", ctx.adapter.short());
    // One image's samples are evaluated at once (its k rows share one log-sum-exp): refuse a k
    // whose rows the adapter cannot hold, with the largest that fits, before any work.
    for (flag, k) in [
        ("--elbo-samples", args.elbo_samples),
        ("--iw-samples", args.iw_samples),
    ] {
        let fits = |k: usize| crate::model::GpuVae::check_fits(&ctx, &cfg.for_inference(k), 1);
        if let Err(e) = fits(k) {
            let (mut lo, mut hi) = (0usize, k);
            while lo + 1 < hi {
                let mid = lo + (hi - lo) / 2;
                if fits(mid).is_ok() {
                    lo = mid
                } else {
                    hi = mid
                }
            }
            return Err(format!(
                "{flag} {k}: one image's {k} samples are evaluated at once, and {e}; at most {lo} \
                 fit this adapter"
            )
            .into());
        }
    }
    say!(
        "model: {} from {} (epoch {})",
        cfg.describe(),
        args.checkpoint.display(),
        ckpt.progress.epoch
    );
    let data = GpuDataset::upload(&ctx, "test pixels", &test)?;
    // A bar with an ETA shows how far each pass is (an IWAE bound with many samples can take an
    // hour).
    let pb = ProgressBar::new(test.count as u64);
    pb.set_style(
        ProgressStyle::with_template("{prefix:<18} [{bar:30}] {pos}/{len} images  ETA {eta}")?
            .progress_chars("=> "),
    );
    let mut progress = |name: &str, done: usize, all: usize| {
        if pb.prefix() != name {
            pb.set_prefix(name.to_string());
            pb.reset();
            pb.set_length(all as u64);
        }
        pb.set_position(done as u64);
        !stop.load(Ordering::SeqCst)
    };
    let r = evaluate(
        &ctx,
        &cfg,
        &ckpt.params,
        &data,
        args.elbo_samples,
        args.iw_samples,
        args.seed,
        &mut progress,
    );
    pb.finish_and_clear();
    let r = match r {
        Err(crate::Error::Interrupted(what)) => {
            note!("interrupted: {what}; nothing was written");
            return Ok(ExitCode::from(130));
        }
        other => other?,
    };
    say!("test set: {} images, nats per image", r.images);
    say!(
        "  -ELBO, 1 sample:              {:8.2}   ({:.1} s)",
        r.neg_elbo_1.neg_elbo,
        r.neg_elbo_1.seconds
    );
    say!(
        "  -ELBO, {:>3} samples:          {:8.2}   ({:.1} s)",
        r.elbo_samples,
        r.neg_elbo_n.neg_elbo,
        r.neg_elbo_n.seconds
    );
    // A conditional model's bound is on the images given their true labels.
    let nll = if cfg.is_conditional() {
        "-log p(x|y)"
    } else {
        "-log p(x)  "
    };
    say!(
        "  {nll} ≤ IWAE, k = {:>3}: {:8.2}   ({:.1} s)",
        r.iwae_samples,
        r.iwae.iwae_nll.unwrap_or(f64::NAN),
        r.iwae.seconds
    );
    Ok(ExitCode::SUCCESS)
}
