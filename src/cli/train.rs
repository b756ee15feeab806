//! Trains the notebook's Bernoulli VAE on MNIST, on the GPU.
//!
//! ```text
//! cargo run --release --example train                     # 5 epochs, the notebook's settings
//! cargo run --release --example train -- --resume runs/X/checkpoint.safetensors
//! cargo run --release --example train -- --help
//! ```
//!
//! Prints what the notebook prints (`[i/469] batch loss` every 100 steps, `Average loss` per
//! epoch), plus the test-set loss, wall time per epoch and the adapter, with a progress bar.
//! Writes into `--out`: `checkpoint.safetensors` (resumable) and `model.safetensors` (PyTorch
//! state_dict) every epoch, `losses.csv`, and the pictures: `reconstructions.png`, `samples.png`,
//! `latent_tsne.png`, `loss.png` (and `manifold.png` with `--latent 2`).
//! Ctrl-C / SIGTERM: the current step finishes, a checkpoint is written, and the run exits with
//! status 130 and the command that resumes it.

use super::out::{note, say};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use super::run_dir::RunDir;

use crate::gpu::GpuContext;
use crate::model::{
    Checkpoint, EpochEnd, EpochStats, Event, GpuDataset, TrainSettings, Trainer, VaeConfig,
};
use crate::viz::LossHistory;
use crate::viz::pictures::{PictureSet, draw_grids, save_grids, write_pictures};
use crate::viz::tensorboard::EventWriter;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser, Debug)]
#[command(
    about = "Train a Bernoulli VAE on MNIST with hand-written WGSL kernels",
    allow_negative_numbers = true
)]
pub struct Args {
    /// Passes over the training set (in all, counting epochs done before a --resume).
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Images per step [default: 128, or the checkpoint's].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Learning rate [default: 0.01, or the checkpoint's].
    #[arg(long)]
    lr: Option<super::Lr>,
    #[command(flatten)]
    optimizer: super::OptimizerArgs,
    #[command(flatten)]
    model: super::ModelArgs,
    /// Seed of initialisation, shuffling and noise [default: 0, or the checkpoint's].
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    data: super::DataArgs,
    #[command(flatten)]
    device: super::DeviceArgs,
    /// Print the batch loss every this many steps (0: never).
    #[arg(long, default_value_t = TrainSettings::default().log_every)]
    log_every: usize,
    /// Output directory [default: runs/<UTC start time, e.g. 2026-12-04T10-31-07>, or the resumed checkpoint's directory].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue from a checkpoint.safetensors (exactly where it stopped).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Fine-tune a diffusers AutoencoderKL folder (config.json and
    /// diffusion_pytorch_model.safetensors, as `save_pretrained` writes it): its weights, a fresh
    /// optimizer, a learned σ starting at 1.
    #[arg(long, conflicts_with = "resume")]
    from_pretrained: Option<PathBuf>,
    /// Replace an earlier run's files in --out (otherwise a folder holding a run is refused).
    #[arg(long)]
    overwrite: bool,
    /// Skip the test-set evaluation after each epoch.
    #[arg(long)]
    no_test: bool,
    /// Also write reconstructions and samples after every epoch (`*_epochN.png`).
    #[arg(long)]
    images_every_epoch: bool,
    /// Skip the t-SNE map (it takes a few seconds on 2 cores).
    #[arg(long)]
    no_tsne: bool,
    /// Write no TensorBoard event files (they hold each epoch's pictures; on a full disk they
    /// give way to the checkpoint anyway).
    #[arg(long)]
    no_tensorboard: bool,
}

super::program_entry_points!();

/// Where a run's time to its first loss went, in seconds: the line the trainer says once after
/// that loss (`first loss 1.21 s after start: data 0.17 s, …`), which `examples/gpu_report.rs`
/// reads back for its cold-start table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FirstLoss {
    pub total: f64,
    pub data: f64,
    pub device: f64,
    /// Building the model's step: pipelines, buffers and the autotune.
    pub planning: f64,
    pub first_steps: f64,
}

impl std::fmt::Display for FirstLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "first loss {:.2} s after start: data {:.2} s, device {:.2} s, planning and autotune \
             {:.2} s, first steps {:.2} s",
            self.total, self.data, self.device, self.planning, self.first_steps
        )
    }
}

impl FirstLoss {
    /// The figures of a line as `Display` writes it; `None` for any other line.
    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.trim().strip_prefix("first loss ")?;
        let v: Vec<f64> = rest
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        let &[total, data, device, planning, first_steps] = v.as_slice() else {
            return None;
        };
        Some(Self {
            total,
            data,
            device,
            planning,
            first_steps,
        })
    }
}

fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let started = std::time::Instant::now();
    if args.epochs == 0 {
        return Err(crate::Error::setting("epochs", "must be at least 1").into());
    }
    let ckpt = load_start(&args)?;
    if let Some(code) = nothing_to_do(&args, ckpt.as_ref()) {
        return Ok(code);
    }
    let (cfg, settings) = model_and_settings(&args, ckpt.as_ref())?;
    // Refuse bad flags before touching data or the GPU.
    cfg.validate()?;
    let opts = args.device.options()?;
    let out = out_dir(&args)?;
    let data = args.data.load(settings.seed, ckpt.as_ref(), Some(&out))?;
    let data_ready = started.elapsed();
    let (cfg, settings) = fit_to_data(&args, cfg, settings, ckpt.as_ref(), &data.train)?;

    // Resuming the folder's own checkpoint continues its run; anything else starts a new one.
    let same_file = |a: &Path, b: &Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y);
    let resuming_here = args
        .resume
        .as_deref()
        .is_some_and(|r| same_file(r, &out.join("checkpoint.safetensors")));
    let _run_dir = RunDir::claim(&out, resuming_here, args.overwrite)?;
    data.cache_in(&out);

    // Ctrl-C / SIGTERM only raise a flag; the loop stops between steps and checkpoints.
    let stop = super::stop_flag()?;
    let ctx = GpuContext::new(&opts)?;
    let device_ready = started.elapsed();
    say!("adapter: {}", ctx.adapter.short());
    say!("output: {}", out.display());
    let planned = plan_trainer(&args, &ctx, &cfg, &settings, ckpt.as_ref(), &data.train);
    let mut trainer = match planned {
        Err(crate::Error::Interrupted(why)) => return Ok(stopped_planning(&why, &stop)),
        Err(e @ crate::Error::AdapterLimit { .. }) => {
            return Err(batch_hint(&ctx, &cfg, &e, settings.batch_size, ckpt.is_some()).into());
        }
        t => t?,
    };
    if interrupted(&stop) {
        return Ok(stopped_planning("before the first step", &stop));
    }
    let test_gpu = if args.no_test {
        None
    } else {
        Some(GpuDataset::upload(&ctx, "test pixels", &data.test)?)
    };
    let planned = started.elapsed();
    say!(
        "model: {} (L = {}), {} parameters, {:.1} MiB on the device; {} train images, batch {}, {}, {} steps/epoch, {} dispatches/step, {} steps/submit",
        cfg.describe(),
        cfg.samples,
        trainer.vae.layout.num_params(),
        (trainer.vae.device_bytes() + trainer.optimizer.device_bytes()) as f64 / (1 << 20) as f64,
        data.train.count,
        trainer.settings.batch_size,
        trainer.settings.optimizer.describe(),
        trainer.steps_per_epoch(),
        trainer.dispatches_per_step(),
        trainer.steps_per_submit
    );
    say!("{}", crate::kernels::matmul::summary(&ctx));

    // The data and the split this run holds out (a resumed run's is the checkpoint's, unless the
    // data changed kind): its checkpoints record them for eval, pictures and later resumes.
    let source = (
        std::path::absolute(args.data.dir())
            .unwrap_or_else(|_| args.data.dir())
            .display()
            .to_string(),
        data.test_fraction,
        data.split_seed,
    );
    let files = RunFiles::open(
        &out,
        &args,
        ckpt.as_ref(),
        resuming_here,
        trainer.epoch,
        source,
    )?;
    let mut session = Session {
        args: &args,
        ctx: &ctx,
        cfg: &cfg,
        stop: &stop,
        test: &data.test,
        train_count: data.train.count,
        test_gpu,
        files,
        // Where the time to the first loss went, said once (the cold start: reading data,
        // starting the device, planning with the autotune, the first steps, whose pipelines
        // some drivers compile at their first dispatch).
        first_loss: Some((started, [data_ready, device_ready, planned])),
        steps_at_start: trainer.vae.train_steps,
        resuming_here,
    };
    let trained = session.train(&mut trainer);
    let Err(e) = trained else {
        return trained;
    };
    match e.downcast_ref() {
        // A stop that reached work between the safe points (the autotune of the pictures' new
        // shapes): what is saved is whole; say so as the other stops do.
        Some(crate::Error::Interrupted(why)) => {
            note!(
                "interrupted after epoch {} ({why}): {}",
                trainer.epoch,
                session.files.saved_note(args.epochs)
            );
            Ok(stopped_status(&stop))
        }
        _ => Err(format!("{e}\n{}", session.files.saved_note(args.epochs)).into()),
    }
}

/// The checkpoint a run starts from: `--resume`'s, or a diffusers folder's (`--from-pretrained`,
/// naming the tensors it ignores), or none.
fn load_start(args: &Args) -> crate::Result<Option<Checkpoint>> {
    Ok(match (&args.resume, &args.from_pretrained) {
        (Some(p), _) => Some(Checkpoint::load(p)?),
        (None, Some(dir)) => {
            let (c, ignored) = Checkpoint::load_diffusers(dir)?;
            if !ignored.is_empty() {
                note!(
                    "{}: {} tensor(s) the AutoencoderKL does not use are ignored: {}",
                    dir.display(),
                    ignored.len(),
                    ignored.join(", ")
                );
            }
            Some(c)
        }
        (None, None) => None,
    })
}

/// A resumed run already where `--epochs` asks: said, nothing run, nothing written.
fn nothing_to_do(args: &Args, ckpt: Option<&Checkpoint>) -> Option<ExitCode> {
    let (c, p) = (ckpt?, args.resume.as_ref()?);
    if c.progress.epoch < args.epochs {
        return None;
    }
    if c.progress.step_in_epoch == 0 {
        // A finished run resumed to where it already is.
        say!(
            "{} has trained {} epoch(s), which --epochs {} asks for: nothing to do. To train \
             further, resume it with a larger --epochs: {}",
            p.display(),
            c.progress.epoch,
            args.epochs,
            super::resume_command("train", p, c.progress.epoch + 5)
        );
    } else {
        // A run stopped inside an epoch that --epochs does not reach.
        let current = c.progress.epoch + 1;
        say!(
            "{} stopped at step {} of epoch {current}, past the {} epoch(s) --epochs {} asks \
             for: nothing to do, nothing written. To finish epoch {current}, resume it with: {}",
            p.display(),
            c.progress.step_in_epoch,
            args.epochs,
            args.epochs,
            super::resume_command("train", p, current)
        );
    }
    Some(ExitCode::SUCCESS)
}

/// Architecture and settings: flags, else the checkpoint's, else the notebook's.
fn model_and_settings(
    args: &Args,
    ckpt: Option<&Checkpoint>,
) -> Result<(VaeConfig, TrainSettings), Box<dyn std::error::Error>> {
    let s = TrainSettings::default();
    Ok(match ckpt {
        Some(c) => {
            // A diffusers folder holds weights, not the loss they were trained by.
            let fine_tune = args.resume.is_none() && args.from_pretrained.is_some();
            let cfg = args.model.agree_with(c, fine_tune)?;
            let base = c.optimizer.as_ref().map(|o| o.config);
            let settings = TrainSettings {
                batch_size: args.batch_size.unwrap_or(if c.progress.batch_size > 0 {
                    c.progress.batch_size
                } else {
                    s.batch_size
                }),
                // The run's length is set once the data is read.
                optimizer: args.optimizer.config(base.as_ref(), args.lr, 0)?,
                seed: args.seed.unwrap_or(c.progress.seed),
                log_every: args.log_every,
            };
            (cfg, settings)
        }
        None => (
            // The input size follows the images, once they are read.
            args.model.new_model_for(&args.data)?,
            TrainSettings {
                batch_size: args.batch_size.unwrap_or(s.batch_size),
                optimizer: args.optimizer.config(None, args.lr, 0)?,
                seed: args.seed.unwrap_or(s.seed),
                log_every: args.log_every,
            },
        ),
    })
}

/// The run's folder: `--out`, else the resumed checkpoint's, else a new one under `runs/`; never
/// inside the data's folder (the run's pictures would be read back as images of a class).
fn out_dir(args: &Args) -> Result<PathBuf, String> {
    let out = match (&args.out, &args.resume) {
        (Some(o), _) => o.clone(),
        // The checkpoint's folder (`.` for a bare file name in the current folder).
        (None, Some(r)) => r
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
        (None, None) => default_out(std::time::SystemTime::now()),
    };
    let data_dir = args.data.dir();
    if let (Ok(o), Ok(d)) = (std::path::absolute(&out), data_dir.canonicalize()) {
        let o = o.canonicalize().unwrap_or(o);
        if o.starts_with(&d) {
            return Err(format!(
                "--out {} is inside --data-dir {}: the run's pictures would be read as images of \
                 the data; choose an --out outside it",
                out.display(),
                data_dir.display()
            ));
        }
    }
    Ok(out)
}

/// The model and settings for the images read: their shape (an AutoencoderKL takes any size its
/// blocks divide), a conditional model's classes, every size checked before the device starts,
/// and the learning-rate schedule spanning --epochs of this data at this batch size.
fn fit_to_data(
    args: &Args,
    cfg: VaeConfig,
    mut settings: TrainSettings,
    ckpt: Option<&Checkpoint>,
    train: &crate::data::ImageSet,
) -> Result<(VaeConfig, TrainSettings), Box<dyn std::error::Error>> {
    let resizable = cfg.kl.is_some() && train.channels == cfg.kl.as_ref().map_or(0, |k| k.image[0]);
    if ckpt.is_some() && train.dim() != cfg.input && !resizable {
        return Err(format!(
            "the checkpoint's model takes {} inputs, but the images in {} have {} ({} channel(s) of {}x{})",
            cfg.input,
            args.data.dir().display(),
            train.dim(),
            train.channels,
            train.rows,
            train.cols
        )
        .into());
    }
    let cfg = cfg.for_images(train.channels, train.rows, train.cols);
    let ckpt_names = ckpt.map_or(&[][..], |c| &c.progress.class_names[..]);
    let cfg = super::condition_on(
        cfg,
        args.model.conditional,
        ckpt_names,
        train,
        &args.data.dir(),
    )?;
    // Every layer's buffers against the adapter's limits happens in Trainer::new, before any
    // allocation; the sizes themselves are checked here, before the device starts (a new model
    // was checked against an image folder's size before decoding: `new_model_for`).
    cfg.validate().map_err(|e| {
        super::sides_hint(
            &e,
            args.data.folder_image().is_ok_and(|f| f.is_some()),
            ckpt.is_none(),
        )
    })?;
    settings.validate(train.count).map_err(|e| match e {
        // The checkpoint's batch size on other data: not a flag the user gave.
        crate::Error::Setting {
            setting: "batch size",
            problem,
        } if ckpt.is_some() && args.batch_size.is_none() => {
            format!("the checkpoint's batch size {problem}: choose one that fits with --batch-size")
        }
        e => super::setting_message(&e),
    })?;
    settings.optimizer.schedule.total_steps = (args.epochs as u64)
        .checked_mul(train.count.div_ceil(settings.batch_size) as u64)
        .ok_or_else(|| crate::Error::setting("epochs", format!("{} is too many", args.epochs)))?;
    Ok((cfg, settings))
}

/// A stop during planning (a first run's autotune takes seconds) ends the run: nothing trained,
/// nothing written but the folder, which the same command can use again.
fn stopped_planning(why: &str, stop: &AtomicBool) -> ExitCode {
    note!(
        "interrupted while planning the training step ({why}): nothing was trained or \
         written; run the same command again to start"
    );
    stopped_status(stop)
}

/// The trainer: a checkpoint's, resumed exactly (or a diffusers folder's weights, fine-tuned),
/// said with where it starts; else a new one.
fn plan_trainer(
    args: &Args,
    ctx: &GpuContext,
    cfg: &VaeConfig,
    settings: &TrainSettings,
    ckpt: Option<&Checkpoint>,
    train: &crate::data::ImageSet,
) -> crate::Result<Trainer> {
    let Some(c) = ckpt else {
        return Trainer::new(ctx, cfg.clone(), settings.clone(), train);
    };
    let c = Checkpoint {
        cfg: cfg.clone(),
        params: super::relaid(c, cfg),
        ..c.clone()
    };
    Trainer::resume(ctx, &c, settings.clone(), train).inspect(|t| {
        if c.progress.train_len != 0 && c.progress.train_len != train.count {
            note!(
                "warning: the checkpoint's run trained on {} images, {} has {}: the epochs from \
                 here cover other data",
                c.progress.train_len,
                args.data.dir().display(),
                train.count
            );
        }
        match (&args.resume, &args.from_pretrained) {
            (None, Some(dir)) => say!("fine-tuning {} ({})", dir.display(), cfg.describe()),
            _ => say!(
                "resumed from {} at epoch {}, step {} ({} training steps)",
                args.resume
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                t.epoch + 1,
                t.step_in_epoch,
                t.vae.train_steps
            ),
        }
    })
}

/// The run folder's files as training writes them: the checkpoint and state_dict (and an
/// AutoencoderKL's diffusers folder), `losses.csv`, the TensorBoard events, and which epoch's
/// checkpoint is on disk, so that every failure after training began says what is saved.
struct RunFiles {
    out: PathBuf,
    ckpt_path: PathBuf,
    model_path: PathBuf,
    csv_path: PathBuf,
    cache_path: PathBuf,
    csv_rows: Vec<String>,
    hist: LossHistory,
    events: std::cell::RefCell<TensorBoardLog>,
    events_path: Option<PathBuf>,
    saved_epoch: std::cell::Cell<Option<usize>>,
    /// The data's folder (absolute), its held-out share and the seed that chose it, which every
    /// checkpoint records.
    source: (String, f64, u64),
}

impl RunFiles {
    /// losses.csv tells the truth about the checkpoint: rows past its epoch (written before a
    /// crash that the checkpoint did not survive) go, and model.safetensors is rewritten from
    /// it. TensorBoard's view of the run (`--no-tensorboard`: none): a failure to write it warns
    /// and stops it, nothing else.
    fn open(
        out: &Path,
        args: &Args,
        ckpt: Option<&Checkpoint>,
        resuming_here: bool,
        epoch: usize,
        source: (String, f64, u64),
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let csv_path = out.join("losses.csv");
        let csv_rows = if resuming_here {
            losses_csv_rows(&csv_path, epoch)
        } else {
            Vec::new()
        };
        write_losses_csv(&csv_path, &csv_rows)?;
        let hist = LossHistory {
            epochs: parse_losses_rows(&csv_rows),
            ..LossHistory::default()
        };
        let writer = match args.no_tensorboard {
            true => None,
            false => match EventWriter::create(out) {
                Ok(w) => Some(w),
                Err(e) => {
                    note!("warning: no TensorBoard events for this run: {e}");
                    None
                }
            },
        };
        let files = RunFiles {
            out: out.to_path_buf(),
            ckpt_path: out.join("checkpoint.safetensors"),
            model_path: out.join("model.safetensors"),
            csv_path,
            cache_path: out.join(crate::data::folder::CACHE_FILE),
            csv_rows,
            hist,
            events_path: writer.as_ref().map(|w| w.path().to_path_buf()),
            events: std::cell::RefCell::new(TensorBoardLog(writer)),
            saved_epoch: std::cell::Cell::new(
                ckpt.filter(|_| resuming_here).map(|c| c.progress.epoch),
            ),
            source,
        };
        if let Some(c) = ckpt.filter(|_| resuming_here) {
            c.save_state_dict(&files.model_path)?;
        }
        Ok(files)
    }

    /// The resumable checkpoint and the PyTorch state_dict, both written atomically. The run's
    /// optional files give way to them: on a disk too full for the checkpoint, the decoded-image
    /// cache (which only saves decoding time) is removed, then the TensorBoard events (a view of
    /// what losses.csv and the pictures record), each said, and the checkpoint written again.
    fn save_checkpoint(&self, c: &mut Checkpoint) -> Result<(), String> {
        (
            c.progress.data_dir,
            c.progress.test_fraction,
            c.progress.split_seed,
        ) = self.source.clone();
        let c = &*c;
        // Which file failed matters to the message: the checkpoint may be whole when only the
        // state_dict is not.
        let ckpt_written = std::cell::Cell::new(false);
        let write = || {
            c.save(&self.ckpt_path)?;
            ckpt_written.set(true);
            c.save_state_dict(&self.model_path)?;
            // An AutoencoderKL's folder is also diffusers' model folder.
            match c.cfg.kl {
                Some(_) => c.save_diffusers(&self.out),
                None => Ok(()),
            }
        };
        let mut written = write();
        if let Err(e) = &written
            && out_of_space(e)
            && let Ok(m) = std::fs::metadata(&self.cache_path)
            && std::fs::remove_file(&self.cache_path).is_ok()
        {
            note!(
                "warning: the disk is full: removed the decoded-image cache {} ({:.1} MB; a \
                 later run decodes the images again) to make room for the checkpoint",
                self.cache_path.display(),
                m.len() as f64 / 1e6
            );
            written = write();
        }
        if let Err(e) = &written
            && out_of_space(e)
        {
            // Closed first (an open file keeps its blocks after it is removed); a writer that
            // stopped on a full disk left its file, which goes too.
            drop(self.events.borrow_mut().0.take());
            if let Some(path) = &self.events_path
                && let Ok(m) = std::fs::metadata(path)
            {
                let bytes = m.len();
                if std::fs::remove_file(path).is_ok() {
                    note!(
                        "warning: the disk is full: removed this run's TensorBoard events {} \
                         ({:.1} MB) to make room for the checkpoint; the run goes on without \
                         them (losses.csv and the pictures keep the record)",
                        path.display(),
                        bytes as f64 / 1e6
                    );
                    written = write();
                }
            }
        }
        match written {
            Ok(()) => {
                self.saved_epoch.set(Some(c.progress.epoch));
                Ok(())
            }
            Err(e) if ckpt_written.get() => {
                self.saved_epoch.set(Some(c.progress.epoch));
                Err(format!(
                    "{} of epoch {} (step {}) was not written: {e}",
                    self.model_path.display(),
                    c.progress.epoch,
                    c.progress.step_in_epoch,
                ))
            }
            Err(e) => Err(format!(
                "the checkpoint of epoch {} (step {}) was not written: {e}",
                c.progress.epoch, c.progress.step_in_epoch,
            )),
        }
    }

    /// What is saved, for the message of a failure after training began.
    fn saved_note(&self, epochs: usize) -> String {
        match self.saved_epoch.get() {
            Some(ep) => format!(
                "{} holds epoch {ep}, intact; resume with: {}",
                self.ckpt_path.display(),
                super::resume_command("train", &self.ckpt_path, epochs)
            ),
            None => "no checkpoint of this run was written".to_string(),
        }
    }

    /// How to draw a finished run's pictures that were not drawn (a stop, a full disk).
    fn draw_later(&self) -> String {
        super::command_line(
            "pictures",
            &format!(
                "--checkpoint {} --out {}",
                super::shell_quote(&self.ckpt_path),
                super::shell_quote(&self.out)
            ),
        )
    }

    /// A completed epoch's row of losses.csv, written after its checkpoint (so the CSV never
    /// claims an epoch the checkpoint lacks), and its point of the loss chart.
    fn record_epoch(&mut self, stats: &EpochStats, test: Option<&EpochStats>) -> crate::Result<()> {
        self.csv_rows.push(format!(
            "{},{:.4},{:.4},{:.4},{},{:.3},{:.4}",
            stats.epoch,
            stats.loss,
            stats.recon,
            stats.kl,
            test.map(|t| format!("{:.4}", t.loss)).unwrap_or_default(),
            stats.seconds,
            stats.objective
        ));
        write_losses_csv(&self.csv_path, &self.csv_rows)?;
        self.hist
            .epochs
            .push((stats.epoch, stats.loss, test.map(|t| t.loss)));
        Ok(())
    }
}

/// A run under way: what the epochs, their stops and the final pictures read and write.
struct Session<'a> {
    args: &'a Args,
    ctx: &'a GpuContext,
    cfg: &'a VaeConfig,
    stop: &'a AtomicBool,
    test: &'a crate::data::ImageSet,
    train_count: usize,
    test_gpu: Option<GpuDataset>,
    files: RunFiles,
    /// The run's start and when the data, the device and the plan were ready, until the first
    /// loss is said.
    first_loss: Option<(std::time::Instant, [std::time::Duration; 3])>,
    steps_at_start: u64,
    resuming_here: bool,
}

impl Session<'_> {
    /// The epochs up to --epochs, then the pictures; a stop between steps checkpoints and says
    /// how to resume.
    fn train(&mut self, trainer: &mut Trainer) -> Result<ExitCode, Box<dyn std::error::Error>> {
        let total_start = std::time::Instant::now();
        while trainer.epoch < self.args.epochs {
            let stats = match self.epoch(trainer)? {
                Ok(stats) => stats,
                Err(stopped) => return Ok(stopped),
            };
            if let Some(code) = self.end_of_epoch(trainer, &stats)? {
                return Ok(code);
            }
        }
        say!(
            "trained to epoch {} in {:.1} s this run",
            trainer.epoch,
            total_start.elapsed().as_secs_f64()
        );
        say!(
            "checkpoint: {} (resumable), weights: {} (PyTorch state_dict)",
            self.files.ckpt_path.display(),
            self.files.model_path.display()
        );
        self.pictures(trainer)
    }

    /// One epoch's steps with its progress bar and batch-loss lines: its averages, or the exit
    /// status of a stop (checkpointed where anything was trained).
    fn epoch(
        &mut self,
        trainer: &mut Trainer,
    ) -> Result<Result<EpochStats, ExitCode>, Box<dyn std::error::Error>> {
        let steps = trainer.steps_per_epoch();
        let batch = trainer.settings.batch_size;
        let pb = ProgressBar::new((steps * batch).min(self.train_count) as u64);
        pb.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} images  {per_sec}  ETA {eta}",
            )?
            .progress_chars("=> "),
        );
        pb.set_prefix(format!("{}/{}", trainer.epoch + 1, self.args.epochs));
        pb.set_position((trainer.step_in_epoch * batch) as u64);
        let epoch_no = trainer.epoch + 1;
        let (files, first_loss) = (&mut self.files, &mut self.first_loss);
        let mut on_event = |e: Event| match e {
            Event::Step { images, .. } => pb.inc(images as u64),
            Event::BatchLoss { step, loss, .. } => {
                let line = format!("[{step}/{steps}] batch loss: {loss:.2}");
                // TensorBoard's step is the training step (Adam's), counted from 1.
                let global = ((epoch_no - 1) * steps + step + 1) as i64;
                (files.events.borrow_mut()).write(|w| w.scalar("train/batch_loss", global, loss));
                files
                    .hist
                    .steps
                    .push((epoch_no as f64 - 1.0 + step as f64 / steps as f64, loss));
                let split = first_loss.take().map(|(start, [s, d, p])| {
                    let f = start.elapsed();
                    FirstLoss {
                        total: f.as_secs_f64(),
                        data: s.as_secs_f64(),
                        device: (d - s).as_secs_f64(),
                        planning: (p - d).as_secs_f64(),
                        first_steps: (f - p).as_secs_f64(),
                    }
                    .to_string()
                });
                // A hidden bar (output not a terminal) swallows println: print directly then.
                for line in [Some(line), split].into_iter().flatten() {
                    if pb.is_hidden() {
                        say!("{line}")
                    } else {
                        pb.println(line)
                    }
                }
            }
        };
        // A closed stdout (`train | head`) stops the run as an interrupt does.
        let stop = self.stop;
        let mut should_stop = || interrupted(stop);
        let end = trainer.train_epoch(self.ctx, &mut on_event, &mut should_stop);
        pb.finish_and_clear();
        Ok(match end? {
            EpochEnd::Completed(s) => Ok(s),
            EpochEnd::Stopped { epoch, step } => Err(self.stopped_in_epoch(trainer, epoch, step)?),
        })
    }

    /// A stop before step `step` of `epoch`: checkpointed and said, or, with nothing trained in
    /// this run, nothing saved and a new run's folder left as the same command can use again.
    fn stopped_in_epoch(
        &self,
        trainer: &Trainer,
        epoch: usize,
        step: usize,
    ) -> Result<ExitCode, Box<dyn std::error::Error>> {
        let why = if self.stop.load(Ordering::SeqCst) {
            "interrupted"
        } else {
            "stdout was closed"
        };
        if trainer.vae.train_steps == self.steps_at_start {
            if !self.resuming_here {
                let _ = std::fs::remove_file(&self.files.csv_path);
                if let Some(w) = self.files.events.borrow_mut().0.take() {
                    let _ = std::fs::remove_file(w.path());
                }
            }
            match &self.args.resume {
                Some(r) => note!(
                    "{why} before the first step: nothing new was trained\nresume with: {}",
                    super::resume_command("train", r, self.args.epochs)
                ),
                None => note!("{why} before the first step: nothing was trained or written"),
            }
            return Ok(stopped_status(self.stop));
        }
        self.files
            .save_checkpoint(&mut trainer.checkpoint(self.ctx)?)?;
        note!(
            "{why} before step {step} of epoch {epoch}: checkpoint written to {}\nresume with: {}",
            self.files.ckpt_path.display(),
            super::resume_command("train", &self.files.ckpt_path, self.args.epochs)
        );
        Ok(stopped_status(self.stop))
    }

    /// After a completed epoch: its test loss, its line, its checkpoint, its losses.csv row, its
    /// TensorBoard scalars and pictures; the exit status when a stop came during it.
    fn end_of_epoch(
        &mut self,
        trainer: &mut Trainer,
        stats: &EpochStats,
    ) -> Result<Option<ExitCode>, Box<dyn std::error::Error>> {
        let (cfg, stop) = (self.cfg, self.stop);
        // The test pass stops with the run (its epoch is complete and checkpointed below).
        let test_stats = match &self.test_gpu {
            Some(t) => {
                let mut go_on = |_: usize, _: usize| !interrupted(stop);
                match trainer.evaluate_with(self.ctx, t, Some(&mut go_on)) {
                    Ok(s) => Some(s),
                    Err(crate::Error::Interrupted(_)) => None,
                    Err(e) => return Err(e.into()),
                }
            }
            None => None,
        };
        let test_txt = test_stats
            .map(|t| format!("  test loss: {:.2}", t.loss))
            .unwrap_or_default();
        // The -ELBO and its parts, whatever the objective; the objective minimised beside it
        // when β or a warm-up weighs the KL.
        let recon_name = match cfg.likelihood {
            crate::model::Likelihood::Bernoulli => "BCE",
            _ => "recon",
        };
        let objective = stats.objective;
        let objective_txt = if cfg.objective == crate::model::Objective::Iwae {
            format!("; objective IWAE (k = {}): {objective:.2}", cfg.samples)
        } else if cfg.beta != 1.0 || cfg.kl_warmup > 0.0 {
            format!("; objective recon + weighted KL: {objective:.2}")
        } else {
            String::new()
        };
        say!(
            "====> Epoch {}  Average loss: {:.2}  ({recon_name} {:.2}, KL {:.2}{objective_txt}){}  time: {:.1} s ({:.0} images/s, {:.0} µs to record a step)",
            stats.epoch,
            stats.loss,
            stats.recon,
            stats.kl,
            test_txt,
            stats.seconds,
            self.train_count as f64 / stats.seconds,
            stats.host_us_per_step
        );
        // The checkpoint first: losses.csv never claims an epoch the checkpoint lacks.
        let mut c = trainer.checkpoint(self.ctx)?;
        self.files.save_checkpoint(&mut c)?;
        self.files.record_epoch(stats, test_stats.as_ref())?;
        if interrupted(stop) {
            let skipped = if self.test_gpu.is_some() && test_stats.is_none() {
                "test loss and pictures"
            } else {
                "pictures"
            };
            let next = if trainer.epoch >= self.args.epochs {
                format!(
                    "training is complete; draw the pictures with: {}",
                    self.files.draw_later()
                )
            } else {
                format!(
                    "resume with: {}",
                    super::resume_command("train", &self.files.ckpt_path, self.args.epochs)
                )
            };
            note!(
                "interrupted after epoch {}: its checkpoint is written to {}; {skipped} not \
                 drawn\n{next}",
                stats.epoch,
                self.files.ckpt_path.display(),
            );
            return Ok(Some(stopped_status(stop)));
        }
        self.epoch_to_tensorboard(stats, test_stats.as_ref(), &c.params, trainer.settings.seed)?;
        Ok(None)
    }

    /// The epoch's scalars and pictures (test reconstructions, samples), drawn once for the
    /// Images tab and, with --images-every-epoch, the files (optional: a failure to save them
    /// warns).
    fn epoch_to_tensorboard(
        &self,
        stats: &EpochStats,
        test_stats: Option<&EpochStats>,
        params: &[f32],
        seed: u64,
    ) -> crate::Result<()> {
        let e = stats.epoch as i64;
        let mut scalars = vec![
            ("epoch/train_loss", stats.loss),
            ("epoch/train_recon", stats.recon),
            ("epoch/train_kl", stats.kl),
            ("epoch/train_objective", stats.objective),
        ];
        if let Some(t) = test_stats {
            scalars.extend([
                ("epoch/test_loss", t.loss),
                ("epoch/test_recon", t.recon),
                ("epoch/test_kl", t.kl),
            ]);
        }
        let events = &self.files.events;
        for (tag, v) in scalars {
            events.borrow_mut().write(|w| w.scalar(tag, e, v));
        }
        let grids = match events.borrow().0.is_some() || self.args.images_every_epoch {
            true => draw_grids(self.ctx, self.cfg, params, self.test, seed)?,
            false => Vec::new(),
        };
        for (name, png) in &grids {
            let (w, h, ch) = (png.width, png.height, png.channels as u32);
            (events.borrow_mut())
                .write(|wr| wr.image(&format!("pictures/{name}"), e, &png.bytes, w, h, ch));
        }
        events.borrow_mut().write(|w| w.flush());
        if self.args.images_every_epoch
            && let Err(err) = save_grids(&grids, &self.files.out, &format!("_epoch{}", stats.epoch))
        {
            note!("warning: the pictures of epoch {e} were not written: {err}");
        }
        Ok(())
    }

    /// The finished run's pictures: optional outputs, so a failure to write them leaves the run
    /// complete (said, with the command that draws them later).
    fn pictures(&self, trainer: &Trainer) -> Result<ExitCode, Box<dyn std::error::Error>> {
        let params = self.ctx.read_f32(&trainer.vae.params)?;
        let set = PictureSet {
            out_dir: &self.files.out,
            suffix: "",
            tsne: !self.args.no_tsne,
            loss: Some(&self.files.hist),
        };
        let t = std::time::Instant::now();
        let seed = trainer.settings.seed;
        let written = match write_pictures(self.ctx, self.cfg, &params, self.test, seed, &set) {
            Ok(w) => w,
            Err(e @ crate::Error::Interrupted(_)) => return Err(e.into()),
            Err(e) => {
                note!(
                    "warning: the pictures were not written ({e}); training is complete and \
                     saved in {}: draw them later with {}",
                    self.files.ckpt_path.display(),
                    self.files.draw_later()
                );
                return Ok(ExitCode::SUCCESS);
            }
        };
        for p in &written {
            say!("wrote {}", p.display());
        }
        say!("pictures took {:.1} s", t.elapsed().as_secs_f64());
        if interrupted(self.stop) {
            // The pictures are written whole or not at all; the run is complete either way.
            note!(
                "interrupted while the pictures were drawn: training is complete and \
                 checkpointed in {}; {} pictures written",
                self.files.ckpt_path.display(),
                written.len()
            );
            return Ok(stopped_status(self.stop));
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// An adapter limit met while planning, with what truly fits: the largest batch whose buffers and
/// grids the adapter holds (found by bisection on the same arithmetic `GpuVae::check_fits` does);
/// where not even one image fits, the most samples per image that do, or that the model itself
/// must shrink.
fn batch_hint(
    ctx: &GpuContext,
    cfg: &VaeConfig,
    e: &crate::Error,
    batch: usize,
    from_checkpoint: bool,
) -> String {
    let fits = |cfg: &VaeConfig, b: usize| crate::model::GpuVae::check_fits(ctx, cfg, b).is_ok();
    // The largest n in 1..=max with `ok(n)`, given `ok(1)` and not `ok(max)`.
    let largest = |max: usize, ok: &dyn Fn(usize) -> bool| {
        let (mut lo, mut hi) = (1, max);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if ok(mid) { lo = mid } else { hi = mid }
        }
        lo
    };
    let (model, samples_from) = if from_checkpoint {
        ("the checkpoint's model", "from the checkpoint")
    } else {
        ("this model", "from --samples")
    };
    if fits(cfg, batch) {
        // Not a limit the batch moves (the optimizer's arenas, say): nothing to suggest.
        return e.to_string();
    }
    if fits(cfg, 1) {
        let b = largest(batch, &|b| fits(cfg, b));
        let rows = if cfg.samples > 1 {
            format!(
                " ({} samples per image, {samples_from}, make {} rows a step at --batch-size {batch})",
                cfg.samples,
                cfg.samples.saturating_mul(batch)
            )
        } else {
            String::new()
        };
        return format!(
            "{e}\n--batch-size {b} is the largest that fits {model} on this adapter{rows}"
        );
    }
    let one = VaeConfig {
        samples: 1,
        ..cfg.clone()
    };
    if cfg.samples > 1 && fits(&one, 1) {
        let l = largest(cfg.samples, &|l| {
            fits(
                &VaeConfig {
                    samples: l,
                    ..cfg.clone()
                },
                1,
            )
        });
        return format!(
            "{e}\nnot even 1 image a step fits with {} samples per image ({samples_from}): at \
             most --samples {l} does, at --batch-size 1",
            cfg.samples
        );
    }
    let shrink = if from_checkpoint {
        "a smaller model (a new run)"
    } else if cfg.kl.is_some() {
        "narrower --block-out-channels or smaller images"
    } else if cfg.conv.is_some() {
        "narrower --conv layers or smaller images"
    } else {
        "narrower --hidden layers or smaller images"
    };
    format!("{e}\nno batch size fits {model} on this adapter, not even 1 image a step: {shrink}")
}

/// Whether a write failed for want of space (a full disk or quota, a file-size limit).
fn out_of_space(e: &crate::Error) -> bool {
    use std::io::ErrorKind::{FileTooLarge, QuotaExceeded, StorageFull};
    matches!(e, crate::Error::Io { source, .. }
        if matches!(source.kind(), StorageFull | QuotaExceeded | FileTooLarge))
}

/// The run's TensorBoard event file, while it can be written: the first failure warns once and
/// ends it (TensorBoard is a view of the run; the checkpoint and `losses.csv` are the record).
struct TensorBoardLog(Option<EventWriter>);

impl TensorBoardLog {
    fn write(&mut self, f: impl FnOnce(&mut EventWriter) -> crate::Result<()>) {
        if let Some(w) = &mut self.0
            && let Err(e) = f(w)
        {
            note!(
                "warning: TensorBoard events stop here ({}): {e}",
                w.path().display()
            );
            self.0 = None;
        }
    }
}

/// Ctrl-C, SIGTERM or a closed stdout since the run started.
fn interrupted(stop: &AtomicBool) -> bool {
    stop.load(Ordering::SeqCst) || super::out::stdout_closed()
}

/// 130 after Ctrl-C / SIGTERM (as a shell reports SIGINT), 141 after a closed stdout.
fn stopped_status(stop: &AtomicBool) -> ExitCode {
    if stop.load(Ordering::SeqCst) {
        ExitCode::from(130)
    } else {
        ExitCode::from(super::out::EXIT_OUTPUT_CLOSED)
    }
}

/// `runs/2026-12-04T10-31-07` (UTC): readable, sorted by time, and unique (`-2`, `-3`, … when two
/// runs start in the same second).
fn default_out(now: std::time::SystemTime) -> PathBuf {
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let stamp = utc_stamp(secs);
    let mut path = PathBuf::from(format!("runs/{stamp}"));
    let mut n = 2;
    while path.exists() {
        path = PathBuf::from(format!("runs/{stamp}-{n}"));
        n += 1;
    }
    path
}

/// `YYYY-MM-DDTHH-MM-SS` of a Unix time, in UTC (Howard Hinnant's `civil_from_days`).
fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}-{:02}-{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `train_loss` and `test_loss` are the -ELBO (`train_recon + train_kl`); `train_objective` is
/// what training minimised (`train_recon` + the KL weighted by β and the warm-up).
const LOSSES_HEADER: &str =
    "epoch,train_loss,train_recon,train_kl,test_loss,seconds,train_objective";

/// The data rows of an earlier run's losses.csv for epochs up to `epoch` (unreadable rows are
/// dropped: the checkpoint is what matters, the CSV follows it).
fn losses_csv_rows(path: &Path, epoch: usize) -> Vec<String> {
    let Ok(bytes) = crate::files::read_bounded(path, 64 << 20, "losses.csv") else {
        return Vec::new();
    };
    String::from_utf8_lossy(&bytes)
        .lines()
        .skip(1)
        .filter(|l| {
            l.split(',')
                .next()
                .and_then(|e| e.parse::<usize>().ok())
                .is_some_and(|e| e >= 1 && e <= epoch)
        })
        .map(str::to_string)
        .collect()
}

/// Write losses.csv whole, atomically (a full disk leaves the previous version).
fn write_losses_csv(path: &Path, rows: &[String]) -> crate::Result<()> {
    let mut text = format!("{LOSSES_HEADER}\n");
    for r in rows {
        text.push_str(r);
        text.push('\n');
    }
    crate::files::write_atomic(path, text.as_bytes())
}

/// (epoch, train loss, test loss) of losses.csv rows, for the loss chart.
fn parse_losses_rows(rows: &[String]) -> Vec<(usize, f64, Option<f64>)> {
    rows.iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Some((
                f.first()?.parse().ok()?,
                f.get(1)?.parse().ok()?,
                f.get(4).and_then(|v| v.parse().ok()),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn run_folders_are_named_by_their_utc_start() {
        assert_eq!(super::utc_stamp(0), "1970-01-01T00-00-00");
        assert_eq!(super::utc_stamp(951_782_400), "2000-02-29T00-00-00");
        assert_eq!(super::utc_stamp(1_796_379_067), "2026-12-04T10-11-07");
    }

    #[test]
    fn the_first_loss_line_reads_back_as_written() {
        let f = super::FirstLoss {
            total: 1.85,
            data: 0.17,
            device: 0.03,
            planning: 0.21,
            first_steps: 1.44,
        };
        let line = f.to_string();
        assert!(
            line.starts_with("first loss 1.85 s after start: data 0.17 s"),
            "{line}"
        );
        assert_eq!(super::FirstLoss::parse(&format!("  {line}\n")), Some(f));
        assert_eq!(
            super::FirstLoss::parse("[100/469] batch loss: 150.20"),
            None
        );
        assert_eq!(
            super::FirstLoss::parse("first loss 1.85 s after start"),
            None
        );
    }
}
