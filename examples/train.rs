//! Trains the notebook's Bernoulli VAE on MNIST, on the GPU.
//!
//!     cargo run --release --example train                     # 5 epochs, the notebook's settings
//!     cargo run --release --example train -- --help
//!
//! Prints what the notebook prints (`[i/469] batch loss` every 100 steps, `Average loss` per epoch),
//! plus the test-set loss, wall time per epoch and the adapter, with a progress bar.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use vae_wgpu::data::{Mnist, Split};
use vae_wgpu::gpu::{BackendChoice, ContextOptions, GpuContext};
use vae_wgpu::model::{Event, GpuDataset, TrainSettings, Trainer, VaeConfig};
use vae_wgpu::ops::AdamConfig;

#[derive(Parser, Debug)]
#[command(about = "Train a Bernoulli VAE on MNIST with hand-written WGSL kernels")]
struct Args {
    /// Passes over the training set.
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 0.01)]
    lr: f32,
    /// Latent dimensions.
    #[arg(long, default_value_t = 10)]
    latent: usize,
    /// Hidden units of the encoder and decoder.
    #[arg(long, default_value_t = 200)]
    hidden: usize,
    /// Reparameterised samples per observation (AEVB's L).
    #[arg(long, default_value_t = 1)]
    samples: usize,
    /// Seed of initialisation, shuffling and noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Directory with the four MNIST IDX files (.gz or raw).
    #[arg(long, default_value = "data/mnist")]
    data_dir: PathBuf,
    /// auto, vulkan, metal, dx12 or gl (default: $VAE_WGPU_BACKEND, else auto).
    #[arg(long)]
    backend: Option<String>,
    /// Adapter index (see the list_adapters example) or name substring.
    #[arg(long)]
    adapter: Option<String>,
    /// Print the batch loss every this many steps (0: never).
    #[arg(long, default_value_t = 100)]
    log_every: usize,
    /// Output directory (default runs/<unix time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Skip the test-set evaluation after each epoch.
    #[arg(long)]
    no_test: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.epochs == 0 {
        return Err("--epochs must be at least 1".into());
    }
    let cfg = VaeConfig {
        input: 784,
        hidden: args.hidden,
        latent: args.latent,
        samples: args.samples,
    };
    let settings = TrainSettings {
        batch_size: args.batch_size,
        adam: AdamConfig {
            lr: args.lr,
            ..AdamConfig::default()
        },
        seed: args.seed,
        log_every: args.log_every,
    };
    // Refuse bad flags before touching data or the GPU.
    cfg.validate()?;
    let mut opts = ContextOptions::from_env()?;
    if let Some(b) = &args.backend {
        opts.backend = b.parse::<BackendChoice>()?;
    }
    if args.adapter.is_some() {
        opts.adapter = args.adapter.clone();
    }

    let train = Mnist::load(&args.data_dir, Split::Train)?;
    let test = if args.no_test {
        None
    } else {
        Some(Mnist::load(&args.data_dir, Split::Test)?)
    };
    settings.validate(train.count)?;
    let cfg = VaeConfig {
        input: train.dim(),
        ..cfg
    };

    let ctx = GpuContext::new(&opts)?;
    println!("adapter: {}", ctx.adapter.short());
    println!("matmul kernel: {:?}", ctx.matmul_variant);
    let out = args.out.clone().unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        PathBuf::from(format!("runs/{t}"))
    });
    std::fs::create_dir_all(&out)
        .map_err(|e| format!("cannot create output directory {}: {e}", out.display()))?;
    println!("output: {}", out.display());

    let mut trainer = Trainer::new(&ctx, cfg, settings, &train)?;
    let test_gpu = match &test {
        Some(t) => Some(GpuDataset::upload(&ctx, "test pixels", t)?),
        None => None,
    };
    println!(
        "model: {} -> {} -> {} (L = {}), {} parameters; {} train images, batch {}, {} steps/epoch, {} dispatches/step",
        cfg.input,
        cfg.hidden,
        cfg.latent,
        cfg.samples,
        trainer.vae.layout.num_params(),
        train.count,
        args.batch_size,
        trainer.steps_per_epoch(),
        trainer.dispatches_per_step()
    );

    let mut csv = std::fs::File::create(out.join("losses.csv"))?;
    writeln!(csv, "epoch,train_loss,train_bce,train_kl,test_loss,seconds")?;
    let total_start = std::time::Instant::now();
    for _ in 0..args.epochs {
        let steps = trainer.steps_per_epoch();
        let pb = ProgressBar::new(train.count as u64);
        pb.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} images  {per_sec}  ETA {eta}",
            )?
            .progress_chars("=> "),
        );
        pb.set_prefix(format!("{}/{}", trainer.epoch + 1, args.epochs));
        let mut on_event = |e: Event| match e {
            Event::Step { images, .. } => pb.inc(images as u64),
            Event::BatchLoss { step, loss, .. } => {
                let line = format!("[{step}/{steps}] batch loss: {loss:.2}");
                // A hidden bar (output not a terminal) swallows println: print directly then.
                if pb.is_hidden() {
                    println!("{line}")
                } else {
                    pb.println(line)
                }
            }
        };
        let stats = trainer.train_epoch(&ctx, &mut on_event)?;
        pb.finish_and_clear();
        let test_stats = match &test_gpu {
            Some(t) => Some(trainer.evaluate(&ctx, t)?),
            None => None,
        };
        let test_txt = test_stats
            .map(|t| format!("  test loss: {:.2}", t.loss))
            .unwrap_or_default();
        println!(
            "====> Epoch {}  Average loss: {:.2}  (BCE {:.2}, KL {:.2}){}  time: {:.1} s ({:.0} images/s)",
            stats.epoch,
            stats.loss,
            stats.bce,
            stats.kl,
            test_txt,
            stats.seconds,
            train.count as f64 / stats.seconds
        );
        writeln!(
            csv,
            "{},{:.4},{:.4},{:.4},{},{:.3}",
            stats.epoch,
            stats.loss,
            stats.bce,
            stats.kl,
            test_stats
                .map(|t| format!("{:.4}", t.loss))
                .unwrap_or_default(),
            stats.seconds
        )?;
    }
    println!(
        "done: {} epochs in {:.1} s",
        args.epochs,
        total_start.elapsed().as_secs_f64()
    );
    Ok(())
}
