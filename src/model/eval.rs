//! Test-set evaluation on the GPU: the negative ELBO with 1 and with N noise draws per image, and
//! the importance-weighted bound on -log p(x) with k samples (Burda et al., 2016), in nats per image.

use std::time::Instant;

use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext};
use crate::kernels::reparam_kl::EpsSource;
use crate::kernels::{iwae, likelihood};
use crate::model::gpu::{EpochPlan, LossReadout};
use crate::model::{GpuDataset, GpuVae, VaeConfig};

/// Seconds of work between two progress reports of a pass (each waits for the device).
const PROGRESS_SECS: f64 = 0.5;

/// Rows of decoder work per batch in evaluation (L·B): bounds activation memory at ~100 MB.
pub const EVAL_ROWS: usize = 12_800;

/// One pass over a data set with the model's L samples per image.
#[derive(Clone, Copy, Debug)]
pub struct PassResult {
    /// Mean over images of the L-sample estimate of -ELBO (the reconstruction term averaged over samples + KL).
    pub neg_elbo: f64,
    /// Mean over images of the importance-weighted bound on -log p(x), when asked for.
    pub iwae_nll: Option<f64>,
    pub seconds: f64,
}

/// The report of [`evaluate`].
#[derive(Clone, Copy, Debug)]
pub struct EvalReport {
    pub images: usize,
    pub neg_elbo_1: PassResult,
    pub elbo_samples: usize,
    pub neg_elbo_n: PassResult,
    pub iwae_samples: usize,
    pub iwae: PassResult,
}

/// Batch size for `samples` draws per image within [`EVAL_ROWS`].
pub fn eval_batch(samples: usize, images: usize) -> usize {
    (EVAL_ROWS / samples.max(1)).clamp(1, images.max(1))
}

/// Run `vae` (its `cfg.samples` draws per image) over `data` in batches of its `max_batch`: the
/// summed losses and, with `with_iwae`, the mean importance-weighted bound. No checks on the values.
/// Told (images done, images in all) now and then during a pass; answering `false` stops it with
/// [`Error::Interrupted`]. Passes waited on this way let the device finish about every half second of work (at most 2% of the pass apart).
pub type OnProgress<'a> = &'a mut dyn FnMut(usize, usize) -> bool;

pub(crate) fn run_pass(
    ctx: &GpuContext,
    vae: &mut GpuVae,
    data: &GpuDataset,
    with_iwae: bool,
    mut progress: Option<OnProgress<'_>>,
) -> Result<(LossReadout, Option<f64>)> {
    let input = data.input();
    let acc = vae.new_accumulator(ctx)?;
    // Per-row and per-image buffers of the IWAE estimate, only when it is asked for.
    let iwae_bufs = if with_iwae {
        let rows = vae.cfg.samples * vae.max_batch;
        Some((
            ctx.zeros("rowloss", &[rows], DType::F32)?,
            ctx.zeros("nll", &[data.len], DType::F32)?,
        ))
    } else {
        None
    };
    let plan = EpochPlan::new(data.len, vae.max_batch.min(data.len), |batch| {
        let mut g = vae.plan_step(ctx, batch, input, EpsSource::Philox, None, &acc)?;
        if let Some((rowloss, nll)) = &iwae_bufs {
            let a = vae.acts.rows(batch, vae.cfg.samples)?;
            g.push(likelihood::recon_rows(
                ctx,
                vae.cfg.likelihood,
                &a.logits,
                &a.x,
                rowloss,
                vae.log_sigma.as_ref(),
            )?);
            g.push(iwae::iwae_estimate(
                ctx,
                rowloss,
                &a.z,
                &a.eps,
                &a.heads,
                nll,
                vae.step_uniform(),
            )?);
        }
        Ok(g)
    })?;
    vae.reset_losses(ctx, &acc)?;
    let steps = plan.steps();
    // Progress is told (and a stop honoured) about every PROGRESS_SECS: after the first step, as
    // many steps as fit in that time at the measured pace, at most 2% of the pass apart. A pass
    // whose steps are slow (an IWAE bound with k = 20 000 samples) reports after each one.
    let most = steps.div_ceil(50).max(1);
    let (mut every, mut since, mut done) = (1usize, Instant::now(), 0usize);
    for step in 0..steps {
        vae.run_step(ctx, plan.graph(step), step * plan.batch)?;
        if let Some(report) = progress.as_mut()
            && (step + 1 - done >= every || step + 1 == steps)
        {
            ctx.wait_idle("an evaluation pass")?;
            let images = ((step + 1) * plan.batch).min(data.len);
            // A stop at the pass's last step leaves the pass whole: its result stands, and the
            // caller stops before the next one.
            if !report(images, data.len) && step + 1 < steps {
                return Err(Error::Interrupted(format!(
                    "after {images} of {} images",
                    data.len
                )));
            }
            let per_step = since.elapsed().as_secs_f64() / (step + 1 - done) as f64;
            every = ((PROGRESS_SECS / per_step.max(1e-6)) as usize).clamp(1, most);
            (since, done) = (Instant::now(), step + 1);
        }
    }
    let r = vae.read_losses(ctx, &acc)?;
    let iwae_nll = match &iwae_bufs {
        Some((_, nll)) => {
            let v = ctx.read_f32(nll)?;
            Some(v.iter().map(|&x| x as f64).sum::<f64>() / data.len as f64)
        }
        None => None,
    };
    Ok((r, iwae_nll))
}

/// One evaluation pass of `vae` (its `cfg.samples` draws per image) over `data`.
pub fn evaluate_pass(
    ctx: &GpuContext,
    vae: &mut GpuVae,
    data: &GpuDataset,
    with_iwae: bool,
    progress: Option<OnProgress<'_>>,
) -> Result<PassResult> {
    let start = Instant::now();
    let (r, iwae_nll) = run_pass(ctx, vae, data, with_iwae, progress)?;
    let neg_elbo = r.epoch_total / data.len as f64;
    if r.nonfinite || !neg_elbo.is_finite() || iwae_nll.is_some_and(|v| !v.is_finite()) {
        return Err(Error::Config(
            "evaluation produced a NaN or infinite loss: the checkpoint's weights are not usable"
                .into(),
        ));
    }
    Ok(PassResult {
        neg_elbo,
        iwae_nll,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Evaluate weights `params` (laid out for `cfg`) on `data`: -ELBO with 1 and `elbo_samples`
/// draws, and the `iwae_samples`-sample importance-weighted bound. `progress` hears (pass name,
/// images done, images in all) and may stop the evaluation.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    ctx: &GpuContext,
    cfg: &VaeConfig,
    params: &[f32],
    data: &GpuDataset,
    elbo_samples: usize,
    iwae_samples: usize,
    seed: u64,
    progress: &mut dyn FnMut(&str, usize, usize) -> bool,
) -> Result<EvalReport> {
    if elbo_samples == 0 || iwae_samples == 0 {
        return Err(Error::Config(
            "evaluation sample counts must be at least 1".into(),
        ));
    }
    // The passes done so far, for the message of a stop.
    let mut done: Vec<String> = Vec::new();
    let mut pass = |samples: usize, with_iwae: bool, name: &str| -> Result<PassResult> {
        let stopped = |what: String, done: &[String]| {
            let results = match done.is_empty() {
                true => String::new(),
                false => format!(" (done: {})", done.join(", ")),
            };
            Error::Interrupted(format!("evaluation stopped {what}{results}"))
        };
        if !progress(name, 0, data.len) {
            return Err(stopped(format!("before the '{name}' pass"), &done));
        }
        let c = cfg.for_inference(samples);
        let mut vae = GpuVae::from_params(ctx, c, eval_batch(samples, data.len), seed, params)?;
        let r = evaluate_pass(
            ctx,
            &mut vae,
            data,
            with_iwae,
            Some(&mut |d, all| progress(name, d, all)),
        )
        .map_err(|e| match e {
            Error::Interrupted(what) => stopped(format!("in the '{name}' pass {what}"), &done),
            e => e,
        })?;
        let value = r.iwae_nll.unwrap_or(r.neg_elbo);
        done.push(format!("{name} {value:.2}"));
        Ok(r)
    };
    Ok(EvalReport {
        images: data.len,
        neg_elbo_1: pass(1, false, "-ELBO, 1 sample")?,
        elbo_samples,
        neg_elbo_n: pass(elbo_samples, false, "-ELBO, N samples")?,
        iwae_samples,
        iwae: pass(iwae_samples, true, "IWAE bound")?,
    })
}
