//! The training loop: data sets resident on the GPU, a reshuffled index list per epoch, one planned
//! step graph for full batches and one for the epoch's last, smaller batch (as PyTorch's DataLoader
//! without `drop_last`), losses read back only at log points (asynchronously) and epoch ends.

use crate::data::ImageSet;
use crate::error::{Error, Result};
use crate::gpu::readback::AsyncReadback;
use crate::gpu::{GpuContext, GpuTensor};
use crate::kernels::reparam_kl::EpsSource;
use crate::kernels::tuner::Candidate;
use crate::model::checkpoint::{Checkpoint, OptimizerState, Progress};
use crate::model::eval::run_pass;
use crate::model::gpu::{EpochPlan, LossReadout, MAX_STEPS_PER_SUBMIT, StepGraph};
use crate::model::{GpuDataset, GpuVae, VaeConfig};
use crate::optim::{Optimizer, OptimizerConfig};
use crate::rng::{Philox, domain};

/// Run settings besides the model's sizes.
#[derive(Clone, Debug)]
pub struct TrainSettings {
    pub batch_size: usize,
    /// The optimizer, its learning rate and schedule (the schedule's `total_steps` is the run's).
    pub optimizer: OptimizerConfig,
    pub seed: u64,
    /// Print the batch loss every this many steps (0: never).
    pub log_every: usize,
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings {
            batch_size: 128,
            optimizer: OptimizerConfig::default(),
            seed: 0,
            log_every: 100,
        }
    }
}

impl TrainSettings {
    pub fn validate(&self, train_len: usize) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::setting("batch size", "must be at least 1"));
        }
        if self.batch_size > train_len {
            return Err(Error::setting(
                "batch size",
                format!(
                    "{} is larger than the training set ({train_len} images)",
                    self.batch_size
                ),
            ));
        }
        self.optimizer.validate()
    }
}

/// What the loop reports as it goes.
#[derive(Clone, Debug)]
pub enum Event {
    /// A step was submitted (`step` counts from 0 within the epoch).
    Step {
        epoch: usize,
        step: usize,
        steps: usize,
        images: usize,
    },
    /// The loss of the step just taken, per image, read back at a log point.
    BatchLoss {
        epoch: usize,
        step: usize,
        steps: usize,
        loss: f64,
    },
}

/// How a call to [`Trainer::train_epoch`] ended.
#[derive(Clone, Copy, Debug)]
pub enum EpochEnd {
    Completed(EpochStats),
    /// `should_stop` asked to stop before step `step` (0-based) of epoch `epoch` (1-based); the
    /// trainer can be checkpointed and resumed from exactly there.
    Stopped {
        epoch: usize,
        step: usize,
    },
}

/// An epoch's averages, per image (summed over the epoch's batches / data set size).
#[derive(Clone, Copy, Debug)]
pub struct EpochStats {
    pub epoch: usize,
    /// The -ELBO: `recon + kl` (unweighted, whatever the objective).
    pub loss: f64,
    /// The reconstruction term, -log p(x | z).
    pub recon: f64,
    pub kl: f64,
    /// The KL as weighted in the objective minimised (β, warm-up).
    pub kl_weighted: f64,
    /// The objective minimised: `recon + kl_weighted`, or the IWAE bound.
    pub objective: f64,
    pub seconds: f64,
    /// Mean host time to record one step (uniform write, encoding), in µs (0 for evaluation).
    pub host_us_per_step: f64,
}

pub struct Trainer {
    pub vae: GpuVae,
    /// Updates `vae`'s parameters from their gradients, holding its own state.
    pub optimizer: Optimizer,
    pub settings: TrainSettings,
    pub train: GpuDataset,
    acc: GpuTensor,
    /// The epoch's graphs, planned once per uniform slot: a submit carries up to
    /// `steps_per_submit` steps, step j of it on `plans[j]`.
    plans: Vec<EpochPlan>,
    /// Steps recorded into one submit (chosen by measurement, see [`steps_per_submit`]).
    pub steps_per_submit: usize,
    /// Reads the accumulator at log points without stalling the queue.
    loss_reader: AsyncReadback,
    /// Epochs completed.
    pub epoch: usize,
    /// Steps done in the epoch in progress (0 at an epoch boundary).
    pub step_in_epoch: usize,
}

impl Trainer {
    pub fn new(
        ctx: &GpuContext,
        cfg: VaeConfig,
        settings: TrainSettings,
        train: &ImageSet,
    ) -> Result<Self> {
        cfg.validate()?;
        settings.validate(train.count)?;
        if train.dim() != cfg.input {
            return Err(Error::Config(format!(
                "images are {}x{} = {} pixels but the model's input size is {}",
                train.rows,
                train.cols,
                train.dim(),
                cfg.input
            )));
        }
        GpuVae::check_fits(ctx, &cfg, settings.batch_size)?;
        let train_gpu = GpuDataset::upload(ctx, "train pixels", train)?;
        let vae = GpuVae::new(ctx, cfg, settings.batch_size, settings.seed)?;
        let optimizer = Optimizer::new(ctx, settings.optimizer, vae.layout.len)?;
        Self::with_model(ctx, vae, optimizer, settings, train_gpu)
    }

    /// A trainer around an existing model and optimizer (e.g. restored from a checkpoint).
    pub fn with_model(
        ctx: &GpuContext,
        mut vae: GpuVae,
        optimizer: Optimizer,
        settings: TrainSettings,
        train: GpuDataset,
    ) -> Result<Self> {
        let input = train.input();
        let acc = vae.new_accumulator(ctx)?;
        let k = steps_per_submit(ctx, &mut vae, &train, settings.batch_size)?;
        let plans = (0..k)
            .map(|slot| {
                vae.in_slot(slot, |vae| {
                    EpochPlan::new(train.len, settings.batch_size, |rows| {
                        let update = Some(&optimizer);
                        vae.plan_step(ctx, rows, input, EpsSource::Philox, update, &acc)
                    })
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let loss_reader = AsyncReadback::new(ctx, &acc);
        vae.kl = crate::model::KlWeight::of(&vae.cfg, plans[0].steps());
        Ok(Trainer {
            vae,
            optimizer,
            settings,
            train,
            acc,
            plans,
            steps_per_submit: k,
            loss_reader,
            epoch: 0,
            step_in_epoch: 0,
        })
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.plans[0].steps()
    }

    /// Kernel launches per training step.
    pub fn dispatches_per_step(&self) -> usize {
        self.plans[0].dispatch_count()
    }

    /// Train the rest of the current epoch (all of it at an epoch boundary) over this epoch's
    /// shuffle of the training set. `should_stop` is asked before every step; when it says yes the
    /// loop returns [`EpochEnd::Stopped`] with everything in place for [`Trainer::checkpoint`].
    pub fn train_epoch(
        &mut self,
        ctx: &GpuContext,
        on_event: &mut dyn FnMut(Event),
        should_stop: &mut dyn FnMut() -> bool,
    ) -> Result<EpochEnd> {
        let start = std::time::Instant::now();
        let epoch = self.epoch + 1;
        // The shuffle depends only on (seed, epoch), so a resumed epoch sees the same order.
        let perm = Philox::stream(self.settings.seed, domain::SHUFFLE, epoch as u32)
            .permutation(self.train.len);
        ctx.write_u32(&self.train.index, &perm)?;
        if self.step_in_epoch == 0 {
            self.vae.reset_losses(ctx, &self.acc)?;
        }
        let steps = self.steps_per_epoch();
        let b = self.settings.batch_size;
        let (mut host, mut taken) = (std::time::Duration::ZERO, 0usize);
        // Batch losses at log points come back asynchronously (double-buffered), so reading them
        // never drains the queue; each is reported once the device has got there, a step or two
        // later (after later `Step` events). A diverged loss is caught then: the error names the
        // logged step, though a step or two more may have been applied (the checkpoint on disk is
        // the last good one either way).
        let plans = &self.plans;
        let report =
            |done: Vec<(usize, Vec<f32>)>, on_event: &mut dyn FnMut(Event)| -> Result<()> {
                for (step, slots) in done {
                    let r = LossReadout::from_slots(&slots);
                    if r.nonfinite {
                        return Err(Error::Diverged { epoch, step });
                    }
                    on_event(Event::BatchLoss {
                        epoch,
                        step,
                        steps,
                        loss: r.batch_total / plans[0].graph(step).batch as f64,
                    });
                }
                Ok(())
            };
        let log = self.settings.log_every;
        let mut step = self.step_in_epoch;
        while step < steps {
            if should_stop() {
                // Let the submitted steps finish so a checkpoint taken now is consistent.
                report(self.loss_reader.finish(ctx)?, on_event)?;
                ctx.wait_idle("the last steps")?;
                return Ok(EpochEnd::Stopped { epoch, step });
            }
            // Up to k steps in one submit; a log step ends its submit, so the accumulator read
            // after it holds that step's batch loss. `should_stop` is still asked before every step.
            let mut limit = (step + self.steps_per_submit).min(steps);
            if log > 0 {
                limit = limit.min(step.next_multiple_of(log) + 1);
            }
            let mut end = step + 1;
            let mut stop_at = None;
            while end < limit {
                if should_stop() {
                    stop_at = Some(end);
                    break;
                }
                end += 1;
            }
            let chunk: Vec<(&StepGraph, usize)> = (step..end)
                .map(|s| (plans[s - step].graph(s), s * b))
                .collect();
            host += self.vae.run_steps(ctx, &chunk)?;
            for (s, (graph, _)) in (step..end).zip(&chunk) {
                taken += 1;
                self.step_in_epoch = s + 1;
                on_event(Event::Step {
                    epoch,
                    step: s,
                    steps,
                    images: graph.batch,
                });
            }
            let last = end - 1;
            if log > 0 && last.is_multiple_of(log) {
                report(self.loss_reader.request(ctx, &self.acc, last)?, on_event)?;
            }
            report(self.loss_reader.poll(ctx)?, on_event)?;
            if let Some(stop) = stop_at {
                report(self.loss_reader.finish(ctx)?, on_event)?;
                ctx.wait_idle("the last steps")?;
                return Ok(EpochEnd::Stopped { epoch, step: stop });
            }
            step = end;
        }
        report(self.loss_reader.finish(ctx)?, on_event)?;
        let r = self.vae.read_losses(ctx, &self.acc)?;
        if r.nonfinite {
            return Err(Error::Diverged { epoch, step: steps });
        }
        self.epoch = epoch;
        self.step_in_epoch = 0;
        let n = self.train.len as f64;
        Ok(EpochEnd::Completed(EpochStats {
            epoch,
            loss: r.epoch_total / n,
            recon: r.epoch_recon / n,
            kl_weighted: r.epoch_kl_weighted / n,
            objective: r.epoch_objective / n,
            kl: r.epoch_kl / n,
            seconds: start.elapsed().as_secs_f64(),
            host_us_per_step: host.as_secs_f64() * 1e6 / taken.max(1) as f64,
        }))
    }

    /// Everything needed to continue exactly from here: weights, optimizer state, the loss sums of the
    /// epoch in progress, and where in which epoch we are (waits for submitted work). Where the
    /// data came from (its folder, a held-out split) is the caller's to add.
    pub fn checkpoint(&self, ctx: &GpuContext) -> Result<Checkpoint> {
        Ok(Checkpoint {
            cfg: self.vae.cfg.clone(),
            params: ctx.read_f32(&self.vae.params)?,
            optimizer: Some(OptimizerState {
                config: self.optimizer.config,
                steps: self.vae.train_steps,
                state: self.optimizer.read_state(ctx)?,
                loss_accumulator: ctx.read_f32(&self.acc)?,
            }),
            progress: Progress {
                epoch: self.epoch,
                step_in_epoch: self.step_in_epoch,
                seed: self.settings.seed,
                batch_size: self.settings.batch_size,
                train_len: self.train.len,
                image: self.train.image,
                class_names: match self.vae.cfg.is_conditional() {
                    true => self.train.classes.clone(),
                    false => Vec::new(),
                },
                kl_warmup_steps: Some(self.vae.kl.warmup_steps),
                // Where the data came from is the program's to record (`cli::train`).
                ..Progress::default()
            },
            activation_recorded: true,
        })
    }

    /// A trainer that continues from a checkpoint. The checkpoint's sizes are the model's; its
    /// optimizer state (if any) is restored, else the optimizer starts fresh from the saved
    /// weights. A checkpoint of one optimizer resumed with another is refused.
    pub fn resume(
        ctx: &GpuContext,
        ckpt: &Checkpoint,
        settings: TrainSettings,
        train: &ImageSet,
    ) -> Result<Self> {
        let cfg = ckpt.cfg.clone();
        settings.validate(train.count)?;
        if train.dim() != cfg.input {
            return Err(Error::Config(format!(
                "the checkpoint's model takes {} inputs but the images have {} pixels",
                cfg.input,
                train.dim()
            )));
        }
        let p = &ckpt.progress;
        let resumes_mid_epoch = p.step_in_epoch > 0;
        if resumes_mid_epoch {
            // The epoch in progress must go on over the same shuffle in the same batches.
            let stop = |what: String| {
                Err(Error::Config(format!(
                    "the checkpoint stopped mid-epoch (step {} of epoch {}) {what}; resume with \
                     those settings, or from an epoch-end checkpoint",
                    p.step_in_epoch,
                    p.epoch + 1
                )))
            };
            if p.batch_size != settings.batch_size {
                return stop(format!(
                    "with batch size {}, not {} (--batch-size {} resumes it)",
                    p.batch_size, settings.batch_size, p.batch_size
                ));
            }
            if p.seed != settings.seed {
                return stop(format!(
                    "with seed {}, not {} (drop --seed, or pass --seed {})",
                    p.seed, settings.seed, p.seed
                ));
            }
            if p.train_len != 0 && p.train_len != train.count {
                return stop(format!(
                    "on {} training images, but this data set has {}",
                    p.train_len, train.count
                ));
            }
            let steps = train.count.div_ceil(settings.batch_size);
            if p.step_in_epoch >= steps {
                return stop(format!(
                    "but this data set has only {steps} steps per epoch at batch size {}",
                    settings.batch_size
                ));
            }
        }
        if let Some(o) = &ckpt.optimizer
            && o.config.kind != settings.optimizer.kind
        {
            return Err(Error::Config(format!(
                "the checkpoint's run was trained with {}, not {}: its state ({}) is not {}'s. \
                 Resume with --optimizer {}, or start a new run from its weights \
                 (model.safetensors) with --optimizer {}",
                o.config.kind,
                settings.optimizer.kind,
                o.config.state_names().join(", "),
                settings.optimizer.kind,
                o.config.kind,
                settings.optimizer.kind
            )));
        }
        let mut vae =
            GpuVae::from_params(ctx, cfg, settings.batch_size, settings.seed, &ckpt.params)?;
        let optimizer = Optimizer::new(ctx, settings.optimizer, vae.layout.len)?;
        if let Some(o) = &ckpt.optimizer {
            // SGD without momentum keeps nothing: a momentum added on resume starts from zeros.
            if o.state.len() == optimizer.state.len() {
                optimizer.write_state(ctx, &o.state)?;
            }
            vae.train_steps = o.steps;
        }
        let train_gpu = GpuDataset::upload(ctx, "train pixels", train)?;
        let mut t = Self::with_model(ctx, vae, optimizer, settings, train_gpu)?;
        // The warm-up's ramp as the run counted it, whatever this resume's batch size.
        if let Some(s) = ckpt.progress.kl_warmup_steps {
            t.vae.kl.warmup_steps = s;
        }
        t.epoch = ckpt.progress.epoch;
        if resumes_mid_epoch {
            t.step_in_epoch = ckpt.progress.step_in_epoch;
            // The loader checked the accumulator's length; a state_dict has none (sums restart).
            match &ckpt.optimizer {
                Some(o) => ctx.write_f32(&t.acc, &o.loss_accumulator)?,
                None => t.vae.reset_losses(ctx, &t.acc)?,
            }
        }
        Ok(t)
    }

    /// The average loss per image (negative ELBO with one noise draw, as the notebook's test loss)
    /// over a data set, computed on the GPU in batches of the training batch size.
    pub fn evaluate(&mut self, ctx: &GpuContext, data: &GpuDataset) -> Result<EpochStats> {
        self.evaluate_with(ctx, data, None)
    }

    /// As [`Trainer::evaluate`], told its progress now and then; `progress` answering `false`
    /// stops the pass with [`Error::Interrupted`] (a stop asked for during the test pass).
    pub fn evaluate_with(
        &mut self,
        ctx: &GpuContext,
        data: &GpuDataset,
        progress: Option<crate::model::eval::OnProgress<'_>>,
    ) -> Result<EpochStats> {
        let start = std::time::Instant::now();
        // The noise depends on (seed, epoch) alone, so a resumed run prints the same test loss.
        self.vae.start_eval_draws(self.epoch);
        let (r, _) = run_pass(ctx, &mut self.vae, data, false, progress)?;
        let n = data.len as f64;
        Ok(EpochStats {
            epoch: self.epoch,
            loss: r.epoch_total / n,
            recon: r.epoch_recon / n,
            kl_weighted: r.epoch_kl_weighted / n,
            objective: r.epoch_objective / n,
            kl: r.epoch_kl / n,
            seconds: start.elapsed().as_secs_f64(),
            host_us_per_step: 0.0,
        })
    }
}

/// Environment variable that pins the steps recorded per submit (1 to 8); unset, it is measured.
pub const STEPS_PER_SUBMIT_ENV: &str = "VAE_WGPU_STEPS_PER_SUBMIT";

/// How many training steps to record per submit on this device: `VAE_WGPU_STEPS_PER_SUBMIT` if
/// set, else the choice recorded in the tune store for this batch size, else measured now: the
/// model's forward pass (no update: nothing changes) run 16 times in submits of 1, 2, 4 and 8
/// steps, in interleaved rounds keeping each count's best, and the fastest recorded; a forward
/// pass of over 5 ms (the first one run) records 1 at once. One submit
/// costs tens of µs on a real GPU, a noticeable share of a sub-millisecond step; on lavapipe a step
/// takes milliseconds and 1 usually measures as well as any.
pub fn steps_per_submit(
    ctx: &GpuContext,
    vae: &mut GpuVae,
    train: &GpuDataset,
    batch: usize,
) -> Result<usize> {
    if let Ok(v) = std::env::var(STEPS_PER_SUBMIT_ENV)
        && !v.trim().is_empty()
    {
        return match v.trim().parse::<usize>() {
            Ok(k) if (1..=MAX_STEPS_PER_SUBMIT).contains(&k) => Ok(k),
            _ => Err(Error::Config(format!(
                "{STEPS_PER_SUBMIT_ENV}={v}: expected a whole number from 1 to {MAX_STEPS_PER_SUBMIT}"
            ))),
        };
    }
    // The candidates time forward passes on the model; they share it.
    let cell = std::cell::RefCell::new(&mut *vae);
    let key = format!("steps per submit, batch {batch}");
    let k = crate::kernels::tuner::choose(
        ctx,
        &key,
        |v| {
            v.parse::<usize>()
                .ok()
                .filter(|k| (1..=MAX_STEPS_PER_SUBMIT).contains(k))
        },
        || {
            // Forward-only graphs of a full batch in every slot, against a scratch accumulator.
            let input = train.input();
            let mut vae = cell.borrow_mut();
            let acc = vae.new_accumulator(ctx)?;
            let graphs = (0..MAX_STEPS_PER_SUBMIT)
                .map(|slot| {
                    vae.in_slot(slot, |v| {
                        v.plan_step(ctx, batch, input, EpsSource::Philox, None, &acc)
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            // A step past LONG_STEP makes a submit's cost (tens of µs) noise: one step per
            // submit, without the rounds of timed passes (minutes for a large model on a CPU
            // driver).
            const LONG_STEP: f64 = 0.005;
            ctx.wait_idle("steps-per-submit probe")?;
            let t = std::time::Instant::now();
            vae.run_steps(ctx, &[(&graphs[0], 0)])?;
            ctx.wait_idle("steps-per-submit probe")?;
            let one = t.elapsed().as_secs_f64();
            if one > LONG_STEP {
                let once = Candidate {
                    choice: 1,
                    time: Box::new(move |_| Ok(one)),
                };
                return Ok((vec![once], None));
            }
            drop(vae);
            let graphs = std::rc::Rc::new(graphs);
            // Seconds per step of 16 forward steps submitted `k` at a time.
            const STEPS: usize = 16;
            let candidates = [1usize, 2, 4, 8]
                .into_iter()
                .map(|k| {
                    let (cell, graphs, key) = (&cell, graphs.clone(), &key);
                    Candidate {
                        choice: k,
                        time: Box::new(move |_| {
                            let mut vae = cell.borrow_mut();
                            ctx.wait_idle("steps-per-submit probe")?;
                            let t = std::time::Instant::now();
                            for first in (0..STEPS).step_by(k) {
                                // A stop asked for ends the probe at its next submit (a large
                                // batch's forward passes take seconds each), nothing recorded.
                                crate::kernels::tuner::stop_point(ctx, key)?;
                                let chunk: Vec<(&StepGraph, usize)> = (0..k)
                                    .map(|j| (&graphs[j], ((first + j) % 4) * batch))
                                    .collect();
                                vae.run_steps(ctx, &chunk)?;
                            }
                            ctx.wait_idle("steps-per-submit probe")?;
                            Ok(t.elapsed().as_secs_f64() / STEPS as f64)
                        }),
                    }
                })
                .collect();
            Ok((candidates, None))
        },
    )?;
    // Forward-only steps moved only the evaluation noise counter: put it back.
    vae.start_eval_draws(0);
    Ok(k)
}
