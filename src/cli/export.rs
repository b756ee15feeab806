//! `export_web`: plan the training step on this machine's adapter and write it as data for the
//! WebGPU page in `web/` (format: `docs/PLAN_FORMAT.md`).

use super::out::say;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::export::{ExportOptions, export_plan};
use crate::gpu::GpuContext;
use crate::model::TrainSettings;

#[derive(Parser, Debug)]
#[command(
    about = "Export the training step as a plan that the WebGPU page in web/ replays",
    allow_negative_numbers = true
)]
pub struct Args {
    /// Directory to write plan.json and its blobs into.
    #[arg(long, default_value = "web/plan")]
    out: PathBuf,
    /// Epochs of shuffled index lists to export (the page trains at most this many).
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Images per step.
    #[arg(long, default_value_t = TrainSettings::default().batch_size)]
    batch_size: usize,
    /// Learning rate (the page can change it: it enters only the per-step uniform).
    #[arg(long, default_value_t = super::Lr(TrainSettings::default().optimizer.lr))]
    lr: super::Lr,
    #[command(flatten)]
    optimizer: super::OptimizerArgs,
    #[command(flatten)]
    model: super::ModelArgs,
    /// Seed of initialisation, shuffling and noise.
    #[arg(long, default_value_t = TrainSettings::default().seed)]
    seed: u64,
    #[command(flatten)]
    data: super::DataArgs,
    /// Batch loss every this many steps in the page.
    #[arg(long, default_value_t = TrainSettings::default().log_every)]
    log_every: usize,
    /// Also run this many training steps natively and write reference.json (for the page's
    /// parity test).
    #[arg(long, default_value_t = 0)]
    reference_steps: usize,
    /// Pin one matmul variant (direct, tiled, subgroup) for the native plan and reference run.
    #[arg(long)]
    matmul: Option<String>,
    #[command(flatten)]
    device: super::DeviceArgs,
}

super::program_entry_points!();

fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut opts = args.device.options()?;
    opts.record_buffers = true;
    if let Some(m) = &args.matmul {
        opts.matmul = Some(
            m.parse::<crate::kernels::matmul::MatmulVariant>()?
                .to_string(),
        );
    }
    // The model's sizes first (the input size an image folder will give), then the images: a
    // bad model or folder is refused before any decoding or GPU work.
    let model = args.model.new_model_for(&args.data)?;
    model.validate().map_err(|e| super::setting_message(&e))?;
    // The page reads and draws pixels in [0, 1]; an AutoencoderKL's are in [−1, 1].
    if model.kl.is_some() {
        return Err(
            "--arch autoencoder-kl: the web page trains the vae family only (it reads \
                    and draws pixels in [0, 1], an AutoencoderKL's are in [−1, 1]); train it \
                    with `vae-wgpu train`"
                .into(),
        );
    }
    let optimizer = args.optimizer.config(None, Some(args.lr), 0)?;
    let data = args.data.load(args.seed, None, None)?;
    let ctx = GpuContext::new(&opts)?;
    say!("adapter: {}", ctx.adapter.short());
    let mut settings = TrainSettings {
        batch_size: args.batch_size,
        seed: args.seed,
        log_every: args.log_every,
        ..TrainSettings::default()
    };
    settings.optimizer = optimizer;
    let t = &data.train;
    let cfg = args
        .model
        .new_model([t.channels, t.rows, t.cols])
        .map_err(|e| {
            super::sides_hint(
                &e,
                args.data.folder_image().is_ok_and(|f| f.is_some()),
                true,
            )
        })?;
    let cfg = super::condition_on(cfg, args.model.conditional, &[], t, &args.data.dir())?;
    let summary = export_plan(
        &ctx,
        &ExportOptions {
            cfg,
            settings,
            epochs: args.epochs,
            train: data.train,
            test: data.test,
            out: args.out.clone(),
            reference_steps: args.reference_steps,
        },
    )?;
    say!(
        "wrote {} ({} buffers, {} dispatches per training step, {:.1} MB)",
        args.out.join("plan.json").display(),
        summary.buffers,
        summary.dispatches_per_step,
        summary.bytes as f64 / 1e6
    );
    if !summary.reference_losses.is_empty() {
        say!(
            "reference: {} native steps, batch losses {:.4} … {:.4}",
            summary.reference_losses.len(),
            summary.reference_losses[0],
            summary.reference_losses[summary.reference_losses.len() - 1]
        );
    }
    Ok(ExitCode::SUCCESS)
}
