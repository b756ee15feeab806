//! Draws a checkpoint's pictures without training: reconstructions, samples, the t-SNE map of the
//! latent codes (and the manifold for a 2-D latent space).
//!
//!     cargo run --release --example pictures -- --checkpoint runs/X/model.safetensors --out pics

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vae_wgpu::data::{Mnist, Split};
use vae_wgpu::gpu::{ContextOptions, GpuContext};
use vae_wgpu::model::Checkpoint;
use vae_wgpu::viz::pictures::{PictureSet, write_pictures};

#[derive(Parser, Debug)]
#[command(about = "Draw reconstructions, samples and a t-SNE map from a VAE checkpoint")]
struct Args {
    #[arg(long)]
    checkpoint: PathBuf,
    /// Where the PNGs go.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    #[arg(long, default_value = "data/mnist")]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Skip the t-SNE map.
    #[arg(long)]
    no_tsne: bool,
    #[arg(long)]
    backend: Option<String>,
    #[arg(long)]
    adapter: Option<String>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let ckpt = Checkpoint::load(&args.checkpoint)?;
    let opts =
        ContextOptions::from_env_and_flags(args.backend.as_deref(), args.adapter.as_deref())?;
    let test = Mnist::load(&args.data_dir, Split::Test)?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let ctx = GpuContext::new(&opts)?;
    println!("adapter: {}", ctx.adapter.short());
    let set = PictureSet {
        out_dir: &args.out,
        suffix: "",
        tsne: !args.no_tsne,
        loss: None,
    };
    for p in write_pictures(&ctx, ckpt.cfg, &ckpt.params, &test, args.seed, &set)? {
        println!("wrote {}", p.display());
    }
    Ok(())
}
