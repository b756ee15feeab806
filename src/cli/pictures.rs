//! Draws a checkpoint's pictures without training: reconstructions, samples, the t-SNE map of the
//! latent codes (and the manifold for a 2-D latent space).
//!
//! ```text
//! cargo run --release --example pictures -- --checkpoint runs/X/model.safetensors --out pics
//! ```

use super::out::say;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::gpu::GpuContext;
use crate::model::Checkpoint;
use crate::viz::pictures::{PictureSet, write_pictures};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    about = "Draw reconstructions, samples and a t-SNE map from a VAE checkpoint",
    allow_negative_numbers = true
)]
pub struct Args {
    #[arg(long)]
    checkpoint: PathBuf,
    /// Where the PNGs go.
    #[arg(long, default_value = ".")]
    out: PathBuf,
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
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Skip the t-SNE map.
    #[arg(long)]
    no_tsne: bool,
    #[command(flatten)]
    device: super::DeviceArgs,
}

super::program_entry_points!();

fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let ckpt = Checkpoint::load(&args.checkpoint)?;
    let (cfg, data) = super::reading_checkpoint(
        &ckpt,
        &args.checkpoint,
        args.activation,
        args.likelihood.clone(),
        &args.data,
    )?;
    let opts = args.device.options()?;
    let test = data
        .load(ckpt.progress.seed, Some(&ckpt), args.checkpoint.parent())?
        .test;
    // A conditional model is evaluated on the true labels: the data's classes must be its own.
    let cfg = super::condition_on(cfg, false, &ckpt.progress.class_names, &test, &data.dir())?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let ctx = GpuContext::new(&opts)?;
    say!("adapter: {}", ctx.adapter.short());
    let set = PictureSet {
        out_dir: &args.out,
        suffix: "",
        tsne: !args.no_tsne,
        loss: None,
    };
    for p in write_pictures(&ctx, &cfg, &ckpt.params, &test, args.seed, &set)? {
        say!("wrote {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
