//! The VAE on the GPU: parameter arenas, activation buffers, and the training step as a recorded
//! chain of the engine's kernels (`docs/ARCHITECTURE.md` lists the data flow).
//!
//! A [`StepGraph`] is planned once per batch size: every dispatch, bind group and static uniform
//! is created up front. Running a step writes the 32-byte per-step uniform, records the dispatches
//! into one command encoder (one compute pass, split only around the copies of texture-fed
//! kernels, see `kernels::encode_all`), and submits — no readback, no host copy of images. Losses accumulate on the GPU and are read only when asked ([`GpuVae::read_losses`]).
//!
//! Where it departs from the first design sketch, to cut passes (16 dispatches per training
//! step): the two latent heads are one product into `heads` [B, 2K] (mu | logvar per row), and a
//! training step fuses the BCE into the logits product's epilogue, so it never stores the logits.

use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext, GpuTensor};
use crate::kernels::matmul::{self, Epilogue, ReconEpilogue};
use crate::kernels::reduce::LossSlots;
use crate::kernels::reparam_kl::{EpsSource, kl_partials_len};
use crate::kernels::step::Rule;
use crate::kernels::{
    self, Dispatch, StepParams, StepUniform, add, attention, bias_act, condition, gather, iwae,
    likelihood, reduce, reparam_kl,
};
use crate::model::body::{Body, Op, TensorId};
pub use crate::model::graph::{EpochPlan, Input, StepGraph};
use crate::model::likelihood::Likelihood;
use crate::model::schedule::{KlWeight, Schedule};
use crate::model::{Layer, LayerKind, Objective, ParamLayout, VaeConfig};
use crate::ops::{Act, Layout};
use crate::optim::Optimizer;

/// Activation and activation-gradient buffers, allocated once for the largest batch.
/// Shapes: `x`, `enc[i]`, `heads`, `dheads`, `d_enc[i]` have B rows; `eps, z, dec[i], logits` and
/// their gradients have L·B rows (sample-major: row l·B + b). `enc[i]` is encoder hidden layer i's
/// output (after its activation), `dec[i]` the decoder's, `d_enc[i]`/`d_dec[i]` their gradients.
/// `heads` [B, 2K] is the encoder heads' output, row b = (mu_b, logvar_b), and `dheads` its
/// gradient (see [`Activations::split_heads`]).
#[derive(Clone, Debug)]
pub struct Activations {
    pub x: GpuTensor,
    pub enc: Vec<GpuTensor>,
    pub heads: GpuTensor,
    pub eps: GpuTensor,
    pub z: GpuTensor,
    pub dec: Vec<GpuTensor>,
    pub logits: GpuTensor,
    pub dlogits: GpuTensor,
    pub d_dec: Vec<GpuTensor>,
    pub dz: GpuTensor,
    pub dheads: GpuTensor,
    pub d_enc: Vec<GpuTensor>,
    /// The reconstruction term's partial sums (the likelihood kernel's or the fused epilogue's).
    pub recon_partials: GpuTensor,
    /// A learned-σ Gaussian's partial sums of log σ's gradient.
    pub sigma_partials: GpuTensor,
    /// The IWAE objective's per-row -log p(x | z_r) [L·B], normalised importance weights [L·B]
    /// and per-image objectives `[B]`.
    pub rowloss: GpuTensor,
    pub iwae_weights: GpuTensor,
    pub iwae_obj: GpuTensor,
    pub kl_partials: GpuTensor,
    /// A conditional model's classes of the batch's images, u32 `[B]` (decoder row l·B + b reads
    /// entry b); when decoding codes, one per code.
    pub labels: GpuTensor,
    /// The layers' scratch: the conv layers' GEMM formulation's (one value when there are none),
    /// the GroupNorms' statistics and sums.
    pub scratch: LayerScratch,
    /// A gradient contribution to a tensor read by several nodes, before it is added to the
    /// tensor's gradient (4 values when no tensor is).
    pub grad_scratch: GpuTensor,
}

impl Activations {
    /// Every buffer of a step of `batch` images; the graphs' tensor gradients share buffers
    /// where their lifetimes do not overlap ([`Body::gradient_slots`]) unless `keep_gradients`
    /// gives each its own, so that all can be read after the step.
    fn new(
        ctx: &GpuContext,
        cfg: &VaeConfig,
        layout: &ParamLayout,
        batch: usize,
        keep_gradients: bool,
    ) -> Result<Self> {
        let (d, k, l) = (cfg.input, cfg.latent, cfg.samples);
        let lb = l * batch;
        let z = |name: &str, shape: &[usize]| ctx.zeros(name, shape, DType::F32);
        // One buffer per tensor a side's graph writes, [rows, features] (an image's features in
        // NCHW): a chain's are its hidden layers' outputs.
        let layers = |side: &str, rows: usize, body: &Body| -> Result<Vec<GpuTensor>> {
            (body.widths[1..].iter().enumerate())
                .map(|(i, &w)| z(&format!("{side}{i}"), &[rows, w]))
                .collect()
        };
        // Gradients: one buffer per slot, as large as its largest tensor; a view each.
        let grads = |side: &str, rows: usize, body: &Body| -> Result<Vec<GpuTensor>> {
            if keep_gradients {
                return layers(side, rows, body);
            }
            let (slots, n) = body.gradient_slots();
            let mut len = vec![0; n];
            for (&slot, &w) in slots.iter().zip(&body.widths[1..]) {
                len[slot] = len[slot].max(rows * w);
            }
            let buffers = (len.iter().enumerate())
                .map(|(i, &l)| z(&format!("{side} slot {i}"), &[l]))
                .collect::<Result<Vec<_>>>()?;
            (slots.iter().zip(&body.widths[1..]))
                .map(|(&slot, &w)| buffers[slot].view(0, &[rows, w]))
                .collect()
        };
        // Where a contribution to a tensor read by several nodes is written before it is added.
        let fan_out = |b: &Body, rows: usize| match b.has_fan_out() {
            true => rows * b.widths.iter().max().copied().unwrap_or(1),
            false => 0,
        };
        let scratch_len = fan_out(&layout.enc_body, batch)
            .max(fan_out(&layout.dec_body, lb))
            .max(4);
        Ok(Activations {
            x: z("x", &[batch, d])?,
            enc: layers("h_enc", batch, &layout.enc_body)?,
            heads: z("mu_e | logvar_e", &[batch, 2 * k])?,
            eps: z("eps", &[lb, k])?,
            z: z("z", &[lb, k])?,
            dec: layers("h_dec", lb, &layout.dec_body)?,
            logits: z("logits", &[lb, d])?,
            dlogits: z("dlogits", &[lb, d])?,
            d_dec: grads("dh_dec", lb, &layout.dec_body)?,
            dz: z("dz", &[lb, k])?,
            dheads: z("dmu_e | dlogvar_e", &[batch, 2 * k])?,
            d_enc: grads("dh_enc", batch, &layout.enc_body)?,
            grad_scratch: z("gradient contribution", &[scratch_len])?,
            // Room for the likelihood kernel's partials and for the fused epilogue's.
            recon_partials: z(
                "recon_partials",
                &[likelihood::partials_len(lb * d).max(matmul::recon_partials_capacity(lb, d))],
            )?,
            sigma_partials: z("sigma_partials", &[likelihood::partials_len(lb * d)])?,
            rowloss: z("rowloss", &[lb])?,
            iwae_weights: z("iwae weights", &[lb])?,
            iwae_obj: z("iwae objective", &[batch])?,
            kl_partials: z("kl_partials", &[kl_partials_len(lb * k)])?,
            labels: ctx.zeros("labels", &[lb], DType::U32)?,
            scratch: LayerScratch::new(ctx, layout, batch, lb)?,
        })
    }

    /// Bytes of every buffer (the full allocations this value was made with, each once).
    pub fn bytes(&self) -> u64 {
        let one = [
            &self.x,
            &self.heads,
            &self.eps,
            &self.z,
            &self.logits,
            &self.dlogits,
            &self.dz,
            &self.dheads,
            &self.recon_partials,
            &self.sigma_partials,
            &self.rowloss,
            &self.iwae_weights,
            &self.iwae_obj,
            &self.kl_partials,
            &self.labels,
            &self.grad_scratch,
        ];
        let many = [&self.enc, &self.dec, &self.d_enc, &self.d_dec];
        let mut buffers: Vec<&wgpu::Buffer> = Vec::new();
        let scratch = self.scratch.tensors();
        for t in (one.into_iter().chain(scratch)).chain(many.into_iter().flatten()) {
            if !buffers.contains(&&t.buffer) {
                buffers.push(&t.buffer);
            }
        }
        buffers.iter().map(|b| b.size()).sum()
    }

    /// Split a `[B, 2K]` heads matrix read back (`heads` or `dheads`) into its `[B, K]` mu and
    /// logvar halves.
    pub fn split_heads<T: Copy>(heads: &[T], latent: usize) -> (Vec<T>, Vec<T>) {
        crate::ops::split_heads(heads, latent)
    }

    /// Views of the first `b` rows (and L·b rows) of every buffer.
    pub fn rows(&self, b: usize, samples: usize) -> Result<Activations> {
        self.view_rows(b, samples * b)
    }

    /// Views of the decoder-side buffers (z, dec, logits, ...) with `rows` rows, for decoding
    /// latent codes written into `z`.
    pub fn decoder_rows(&self, rows: usize) -> Result<Activations> {
        let mut a = self.view_rows(rows.min(self.x.shape[0]), rows)?;
        a.labels = self.labels.view(0, &[rows])?;
        Ok(a)
    }

    /// Views with `b` rows on the encoder side and `lb` on the decoder side.
    fn view_rows(&self, b: usize, lb: usize) -> Result<Activations> {
        let v = |t: &GpuTensor, rows: usize| t.view(0, &[rows, t.shape[1]]);
        let all = |ts: &[GpuTensor], rows: usize| -> Result<Vec<GpuTensor>> {
            ts.iter().map(|t| v(t, rows)).collect()
        };
        Ok(Activations {
            x: v(&self.x, b)?,
            enc: all(&self.enc, b)?,
            heads: v(&self.heads, b)?,
            eps: v(&self.eps, lb)?,
            z: v(&self.z, lb)?,
            dec: all(&self.dec, lb)?,
            logits: v(&self.logits, lb)?,
            dlogits: v(&self.dlogits, lb)?,
            d_dec: all(&self.d_dec, lb)?,
            dz: v(&self.dz, lb)?,
            dheads: v(&self.dheads, b)?,
            d_enc: all(&self.d_enc, b)?,
            recon_partials: self.recon_partials.clone(),
            sigma_partials: self.sigma_partials.clone(),
            rowloss: self.rowloss.view(0, &[lb])?,
            iwae_weights: self.iwae_weights.view(0, &[lb])?,
            iwae_obj: self.iwae_obj.view(0, &[b])?,
            kl_partials: self.kl_partials.clone(),
            labels: self.labels.view(0, &[b])?,
            scratch: self.scratch.clone(),
            grad_scratch: self.grad_scratch.clone(),
        })
    }
}

pub use crate::model::layers::{
    LayerScratch, LayerViews, conv_shapes, layer_backward, layer_forward,
};

/// An upsampling's or attention core's input must be a tensor no activation produced (their
/// backwards fuse none; in diffusers' models they read a residual sum or a projection).
fn unactivated_input(body: &Body, t: TensorId, reader: &str) -> Result<()> {
    match body.acts[t] {
        Some(act) if act != Act::Identity => Err(Error::Config(format!(
            "{reader} reads tensor {t}, which {act} produced: its input must be a tensor \
             without an activation"
        ))),
        _ => Ok(()),
    }
}

/// One side's graph with its buffers: tensor 0 is `input`, tensor t ≥ 1 is
/// `outs[t − 1]` with gradient `grads[t − 1]`; the input's gradient is `input_grad` (z's, `dz`) or
/// not wanted (the data).
struct Side<'a> {
    /// `encoder` or `decoder` (names its attention buffers).
    name: &'static str,
    body: &'a Body,
    layers: &'a [Layer],
    input: &'a GpuTensor,
    outs: &'a [GpuTensor],
    grads: &'a [GpuTensor],
    input_grad: Option<&'a GpuTensor>,
}

impl Side<'_> {
    fn value(&self, t: TensorId) -> &GpuTensor {
        if t == 0 {
            self.input
        } else {
            &self.outs[t - 1]
        }
    }

    fn grad(&self, t: TensorId) -> Option<&GpuTensor> {
        if t == 0 {
            self.input_grad
        } else {
            Some(&self.grads[t - 1])
        }
    }
}

/// The loss accumulator's contents (sums over the batches since the last reset).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossReadout {
    /// The -ELBO: reconstruction + KL (unweighted).
    pub epoch_total: f64,
    /// The reconstruction term, -log p(x | z).
    pub epoch_recon: f64,
    pub epoch_kl: f64,
    /// The KL times each step's weight: the objective minimised is `epoch_recon` + this.
    pub epoch_kl_weighted: f64,
    pub batch_total: f64,
    pub batch_recon: f64,
    pub batch_kl: f64,
    pub batch_kl_weighted: f64,
    /// The objective minimised (recon + weighted KL, or the IWAE bound), summed.
    pub epoch_objective: f64,
    pub batch_objective: f64,
    pub batches: u64,
    /// Some batch since the last reset had a NaN or infinite loss.
    pub nonfinite: bool,
}

impl LossReadout {
    /// Decode an accumulator's `[LossSlots::LEN]` values.
    pub fn from_slots(v: &[f32]) -> Self {
        let f = |i: usize| v[i] as f64;
        LossReadout {
            epoch_total: f(LossSlots::EPOCH_TOTAL),
            epoch_recon: f(LossSlots::EPOCH_RECON),
            epoch_kl: f(LossSlots::EPOCH_KL),
            epoch_kl_weighted: f(LossSlots::EPOCH_KL_WEIGHTED),
            batch_total: f(LossSlots::BATCH_TOTAL),
            batch_recon: f(LossSlots::BATCH_RECON),
            batch_kl: f(LossSlots::BATCH_KL),
            batch_kl_weighted: f(LossSlots::BATCH_KL_WEIGHTED),
            epoch_objective: f(LossSlots::EPOCH_OBJECTIVE),
            batch_objective: f(LossSlots::BATCH_OBJECTIVE),
            batches: v[LossSlots::BATCHES] as u64,
            nonfinite: v[LossSlots::NONFINITE] != 0.0,
        }
    }
}

/// How evaluation steps number their noise (`rng_step`): `flag | (d & 0x7fff_ffff)`, `d`
/// counting evaluation steps, so an evaluation draw is never a training step's (whose counter is
/// the step, below `flag`); the test pass after epoch `e` starts at `d = e·epoch_stride + 1`, so
/// each epoch's test pass has its own noise, the same whether the run was resumed or not.
/// Exported in the plan (`evaluation`), which the page follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvalDraws {
    pub flag: u32,
    pub epoch_stride: u32,
}

/// The engine's evaluation noise counter.
pub const EVAL_DRAWS: EvalDraws = EvalDraws {
    flag: 0x8000_0000,
    epoch_stride: 1 << 16,
};

impl EvalDraws {
    /// The count before the test pass after epoch `epoch`.
    pub fn start(&self, epoch: usize) -> u32 {
        (epoch as u32).wrapping_mul(self.epoch_stride) & 0x7fff_ffff
    }

    /// The `rng_step` of evaluation draw `d`.
    pub fn rng_step(&self, d: u32) -> u32 {
        self.flag | (d & 0x7fff_ffff)
    }
}

/// The model on the device: its parameters and their gradients, its activation buffers, and the
/// planned passes over them. The optimizer that updates it is a value of its own
/// ([`crate::optim::Optimizer`]), given to [`GpuVae::plan_step`] for a training step.
pub struct GpuVae {
    pub cfg: VaeConfig,
    pub layout: ParamLayout,
    pub params: GpuTensor,
    pub grads: GpuTensor,
    pub acts: Activations,
    pub max_batch: usize,
    pub seed: u64,
    /// Training steps taken so far, t (PyTorch's `state['step']`): keys each step's noise and its
    /// optimizer's factors.
    pub train_steps: u64,
    /// The KL weight's schedule (β and warm-up in steps: the trainer sets the steps from
    /// `cfg.kl_warmup` epochs, which it knows the length of).
    pub kl: KlWeight,
    /// A ring of per-step uniforms: a submit of k steps gives each step its own (see
    /// [`GpuVae::run_steps`]); graphs are planned against one slot of the ring.
    step_uniforms: Vec<StepUniform>,
    /// Where a Gaussian decoder's log σ is: a view of the parameter arena (learned) or a constant
    /// (`--sigma`); `None` for the other likelihoods.
    pub log_sigma: Option<GpuTensor>,
    /// The slot `plan_*` binds (set by [`GpuVae::in_slot`]).
    planning_slot: std::cell::Cell<usize>,
    eval_draws: u32,
}

/// The most steps one submit can carry: the size of the per-step uniform ring.
pub const MAX_STEPS_PER_SUBMIT: usize = 8;

/// Bytes of `rows × cols` f32 values, saturating (a huge request must not wrap to a small one).
fn bytes(rows: u64, cols: usize) -> u64 {
    rows.saturating_mul(cols as u64).saturating_mul(4)
}

impl GpuVae {
    /// The largest buffers a model of `cfg` training on batches of `batch` needs, in bytes, with
    /// their names: checked against the adapter's limits before anything is allocated.
    pub fn largest_buffers(cfg: &VaeConfig, batch: usize) -> Vec<(String, u64)> {
        let rows = (cfg.samples as u64).saturating_mul(batch as u64);
        let layout = ParamLayout::new(cfg);
        // The parameter arena is bound through each layer's views (its own limit is
        // max_buffer_size, GpuContext::upload_arena): its largest tensor must fit one binding.
        let largest_tensor = (layout.specs.iter())
            .max_by_key(|s| s.len())
            .map_or((String::new(), 0), |s| (s.name.clone(), s.len() as u64 * 4));
        let mut v = vec![
            (
                format!("the parameter {}", largest_tensor.0),
                largest_tensor.1,
            ),
            ("logits [L·B, D]".to_string(), bytes(rows, cfg.input)),
            ("x [B, D]".to_string(), bytes(batch as u64, cfg.input)),
        ];
        // Every layer's output (decoder layers have L·B rows).
        for l in layout.layers() {
            v.push((
                format!("the output of {} [L·B, {}]", l.describe(), l.outputs),
                bytes(rows, l.outputs),
            ));
        }
        // (The conv layers' GEMM scratch is not among them: a shape whose scratch exceeds a
        // binding is not a GEMM candidate, and the direct kernel, which needs none, serves it.)
        v
    }

    /// Refuse, before any allocation, a model or batch whose buffers or grids exceed the
    /// adapter's limits, naming the layer and the limit.
    pub fn check_fits(ctx: &GpuContext, cfg: &VaeConfig, batch: usize) -> Result<()> {
        for (name, bytes) in Self::largest_buffers(cfg, batch) {
            ctx.check_binding_size(&name, bytes)?;
        }
        let max = ctx.limits().max_compute_workgroups_per_dimension as u64;
        let layout = ParamLayout::new(cfg);
        ctx.check_buffer_size("the parameter arena", layout.len as u64 * 4)?;
        let rows = (cfg.samples as u64).saturating_mul(batch as u64);
        let elementwise = |n: u64| n.div_ceil(256);
        let mut grids = vec![(
            "the logits".to_string(),
            elementwise(rows.saturating_mul(cfg.input as u64)),
        )];
        for l in layout.layers() {
            grids.push((
                l.describe(),
                elementwise(rows.saturating_mul(l.outputs.max(l.inputs) as u64)),
            ));
            if !matches!(l.kind, LayerKind::Linear) {
                // The weight gradient: one workgroup per weight and bias value.
                grids.push((
                    format!("{}'s weight gradient", l.describe()),
                    (l.weight_len() + l.bias_len()) as u64,
                ));
            }
        }
        for (what, groups) in grids {
            if groups > max * max {
                return Err(Error::AdapterLimit {
                    adapter: ctx.adapter.name.clone(),
                    what: format!(
                        "{groups} workgroups for {what} exceed {max}² (max_compute_workgroups_per_dimension)"
                    ),
                });
            }
        }
        Ok(())
    }

    /// A fresh model initialised from `seed` as PyTorch's `nn.Linear` would be.
    pub fn new(ctx: &GpuContext, cfg: VaeConfig, max_batch: usize, seed: u64) -> Result<Self> {
        // Nothing is allocated, on the host either, for a model the adapter cannot hold.
        let layout = Self::checked_layout(ctx, &cfg, max_batch)?;
        let init = layout.init(seed);
        Self::with_layout(ctx, cfg, layout, max_batch, seed, &init)
    }

    /// A model with the given parameter arena (laid out by [`ParamLayout`]).
    pub fn from_params(
        ctx: &GpuContext,
        cfg: VaeConfig,
        max_batch: usize,
        seed: u64,
        params: &[f32],
    ) -> Result<Self> {
        let layout = Self::checked_layout(ctx, &cfg, max_batch)?;
        Self::with_layout(ctx, cfg, layout, max_batch, seed, params)
    }

    /// The layer list of a valid configuration (conv sides that divide, ...) whose buffers and
    /// grids the adapter can hold for batches of `max_batch`.
    fn checked_layout(ctx: &GpuContext, cfg: &VaeConfig, max_batch: usize) -> Result<ParamLayout> {
        cfg.validate()?;
        if max_batch == 0 {
            return Err(Error::setting("batch size", "must be at least 1"));
        }
        Self::check_fits(ctx, cfg, max_batch)?;
        Ok(ParamLayout::new(cfg))
    }

    fn with_layout(
        ctx: &GpuContext,
        cfg: VaeConfig,
        layout: ParamLayout,
        max_batch: usize,
        seed: u64,
        params: &[f32],
    ) -> Result<Self> {
        if params.len() != layout.len {
            return Err(Error::shape(
                "GpuVae::from_params",
                format!(
                    "parameter arena has {} values, layout needs {}",
                    params.len(),
                    layout.len
                ),
            ));
        }
        let n = layout.len;
        let cfg_beta = cfg.beta;
        let params = ctx.upload_arena("params", params)?;
        let log_sigma = match (cfg.likelihood, layout.log_sigma) {
            (_, Some(offset)) => Some(params.view(offset, &[1])?),
            (l, None) if l.is_scaled() => {
                Some(ctx.upload_f32("fixed log sigma", &[1], &[l.fixed_log_scale()])?)
            }
            _ => None,
        };
        Ok(GpuVae {
            params,
            log_sigma,
            grads: ctx.zeros_arena("grads", n)?,
            acts: Activations::new(ctx, &cfg, &layout, max_batch, false)?,
            step_uniforms: (0..MAX_STEPS_PER_SUBMIT)
                .map(|_| StepUniform::new(ctx, &StepParams::with_seed(seed)))
                .collect(),
            planning_slot: std::cell::Cell::new(0),
            cfg,
            layout,
            max_batch,
            seed,
            train_steps: 0,
            kl: KlWeight {
                beta: cfg_beta,
                warmup_steps: 0.0,
            },
            eval_draws: 0,
        })
    }

    /// Give every tensor gradient of the sides' graphs its own buffer (by default they share
    /// buffers where their lifetimes do not overlap, [`Body::gradient_slots`]), so that all of
    /// them can be read after a step, as the parity tests do; plan the step after this.
    pub fn keep_every_gradient(&mut self, ctx: &GpuContext) -> Result<()> {
        self.acts = Activations::new(ctx, &self.cfg, &self.layout, self.max_batch, true)?;
        Ok(())
    }

    /// A layer's views in the parameter and gradient arenas.
    pub fn views(&self, l: &Layer) -> Result<LayerViews> {
        let (w, b) = (l.weight_shape(), [l.bias_len()]);
        let label_cols = match l.labels {
            0 => None,
            c => {
                let shape = [l.outputs, c];
                Some((
                    self.params.view(l.label_weight, &shape)?,
                    self.grads.view(l.label_weight, &shape)?,
                ))
            }
        };
        Ok(LayerViews {
            w: self.params.view(l.weight, &w)?,
            b: self.params.view(l.bias, &b)?,
            dw: self.grads.view(l.weight, &w)?,
            db: self.grads.view(l.bias, &b)?,
            label_cols,
        })
    }

    /// Bytes the model holds on the device: its parameters, their gradients and every activation
    /// and scratch buffer (the optimizer's state is the optimizer's).
    pub fn device_bytes(&self) -> u64 {
        (self.params.len() + self.grads.len()) as u64 * 4 + self.acts.bytes()
    }

    /// A fresh loss accumulator.
    pub fn new_accumulator(&self, ctx: &GpuContext) -> Result<GpuTensor> {
        ctx.zeros("loss accumulator", &[LossSlots::LEN], DType::F32)
    }

    /// Plan one step on `batch` rows: forward and loss (into `acc`), and with an optimizer
    /// (`update`), backward and its update. It reads as the model's math: encoder layers, heads,
    /// reparameterize, decoder layers, loss; then the same layers backward in reverse order; then
    /// the optimizer.
    pub fn plan_step(
        &self,
        ctx: &GpuContext,
        batch: usize,
        input: Input<'_>,
        eps_source: EpsSource,
        update: Option<&Optimizer>,
        acc: &GpuTensor,
    ) -> Result<StepGraph> {
        self.check_batch(batch)?;
        let train = update.is_some();
        let a = self.acts.rows(batch, self.cfg.samples)?;
        let lb = self.cfg.samples * batch;
        let step = self.step_uniform();
        let mut d = Vec::with_capacity(32);

        // ---- forward
        d.extend(self.encoder(ctx, &a, input)?);
        d.push(reparam_kl::reparam_forward(
            ctx,
            &a.heads,
            &a.eps,
            &a.z,
            &a.kl_partials,
            eps_source,
            step,
            self.cfg.logvar(),
        )?);
        d.extend(self.decoder_hidden(ctx, &a)?);
        let out_layer = &self.layout.output;
        // Training on the IWAE bound: each row's -log p first, the importance weights from them,
        // then the likelihood's gradients weighted by them (no fused epilogue).
        let iwae = train && self.cfg.objective == Objective::Iwae;
        let base = d.len();
        let (output, recon_partials, logits_variant) =
            self.output_and_recon(ctx, &a, train, iwae)?;
        d.extend(output);
        let logits_variant = logits_variant.map(|(i, problem)| (base + i, problem));
        let loss_reduce = reduce::loss_reduce_with_params(
            ctx,
            &a.recon_partials,
            recon_partials,
            &a.kl_partials,
            kl_partials_len(lb * self.cfg.latent),
            acc,
            step,
        )?;
        // An exported plan may choose another kernel for the logits product: the loss reduction
        // then adds up that kernel's count of BCE partials (the first word of its uniform).
        if let Some((i, problem)) = logits_variant {
            for c in &mut d[i].candidates {
                let n = matmul::recon_partials_len(ctx, c.variant, problem)? as u32;
                c.set = vec![(loss_reduce.params.clone(), 0, vec![n])];
            }
        }
        d.push(loss_reduce.dispatch);
        if iwae {
            d.push(reduce::objective_reduce(ctx, &a.iwae_obj, batch, acc)?);
        }

        if train {
            // ---- backward: the same layers in reverse, each layer's weight gradient (bias
            // gradient fused) and input gradient (the activation below it fused), from the output
            // layer down to the first encoder layer.
            d.extend(self.backward_body(ctx, &a, &self.decoder_side(&a), out_layer, &a.dlogits)?);
            d.push(reparam_kl::reparam_backward(
                ctx,
                &a.heads,
                &a.eps,
                &a.dz,
                &a.dheads,
                step,
                iwae.then_some(&a.iwae_weights),
                self.cfg.logvar(),
            )?);
            let (enc, heads) = (self.encoder_side(&a), &self.layout.heads);
            d.extend(self.backward_body(ctx, &a, &enc, heads, &a.dheads)?);
        }
        let rules = match update {
            Some(opt) => {
                d.extend(opt.plan(ctx, &self.params, &self.grads, step)?);
                opt.config.rules()
            }
            None => Vec::new(),
        };
        ctx.check_errors()?;
        Ok(StepGraph::new(batch, train, self.planning_slot.get(), d).updating(rules))
    }

    /// The output layer and the reconstruction term on the rows of `a`: in training with a
    /// fusing likelihood, the logits product whose epilogue gives the loss partials and dlogits
    /// (no logits written); else the logits, then the likelihood's kernel (after the IWAE row
    /// losses and weights, when training on that bound), and a learned σ's gradient. Returns the
    /// dispatches, how many loss partials they write, and the fused product's index among them
    /// with its problem (an exported plan may choose another kernel for it).
    #[allow(clippy::type_complexity)]
    fn output_and_recon(
        &self,
        ctx: &GpuContext,
        a: &Activations,
        train: bool,
        iwae: bool,
    ) -> Result<(Vec<Dispatch>, usize, Option<(usize, matmul::Problem)>)> {
        let out_layer = &self.layout.output;
        let output = self.views(out_layer)?;
        let h_last = a.dec.last().unwrap_or(&a.z);
        let mut d = Vec::new();
        let mut logits_variant = None;
        let lik = self.cfg.likelihood;
        let lb = a.logits.shape[0];
        let recon_partials = if train && !iwae && out_layer.kind == LayerKind::Linear && lik.fuses()
        {
            // Training needs no logits: the reconstruction term and dlogits come out of the logits
            // product's epilogue (one dispatch and one pass over [L·B, D] fewer).
            let logits_product = matmul::Problem {
                epilogue: matmul::EpilogueKind {
                    bias: true,
                    recon: Some(lik.name()),
                    ..matmul::EpilogueKind::NONE
                },
                ..matmul::Problem::bare(Layout::NT, lb, self.cfg.input, h_last.shape[1])
            };
            let variant = matmul::variant_for(ctx, logits_product)?;
            d.push(matmul::with_candidates(
                ctx,
                logits_product,
                variant,
                |v| {
                    matmul::matmul_with(
                        ctx,
                        v,
                        Layout::NT,
                        h_last,
                        &output.w,
                        &a.dlogits,
                        Epilogue {
                            bias: Some(&output.b),
                            recon: Some(ReconEpilogue {
                                likelihood: lik,
                                targets: &a.x,
                                partials: &a.recon_partials,
                            }),
                            ..Epilogue::NONE
                        },
                    )
                },
            )?);
            logits_variant = Some((d.len() - 1, logits_product));
            matmul::recon_partials_len(ctx, variant, logits_product)?
        } else {
            d.extend(layer_forward(
                ctx,
                out_layer,
                &output,
                h_last,
                &a.logits,
                Act::Identity,
                Some(&a.labels),
                &a.scratch,
            )?);
            if iwae {
                d.push(likelihood::recon_rows(
                    ctx,
                    lik,
                    &a.logits,
                    &a.x,
                    &a.rowloss,
                    self.log_sigma.as_ref(),
                )?);
                d.push(iwae::iwae_weights(
                    ctx,
                    &a.rowloss,
                    &a.z,
                    &a.eps,
                    &a.heads,
                    &a.iwae_weights,
                    &a.iwae_obj,
                )?);
            }
            // A learned σ's gradient: partial sums, added into its slot of the gradient arena.
            let sigma_grad = train && lik.learns_scale();
            d.push(likelihood::recon_forward_backward(
                ctx,
                lik,
                &a.logits,
                &a.x,
                &a.dlogits,
                &a.recon_partials,
                self.log_sigma.as_ref(),
                sigma_grad.then_some(&a.sigma_partials),
                iwae.then_some(&a.iwae_weights),
            )?);
            let n = likelihood::partials_len(lb * self.cfg.input);
            if let (true, Some(offset)) = (sigma_grad, self.layout.log_sigma) {
                let grad = self.grads.view(offset, &[1])?;
                d.push(reduce::sum_to(ctx, &a.sigma_partials, n, &grad)?);
            }
            n
        };
        Ok((d, recon_partials, logits_variant))
    }

    /// The backward of a side's graph and of the layer that reads its last tensor (`last`, the
    /// heads or the output layer, whose output's gradient is `last_dy`): nodes in reverse order,
    /// each passing its output's gradient to its inputs. The first contribution to a tensor's
    /// gradient is written in place, later ones (a tensor read by several nodes) added through
    /// `grad_scratch`; every contribution fuses the backward of the activation that produced the
    /// tensor. The side's input gets a gradient only when `side.input_grad` asks for it.
    fn backward_body(
        &self,
        ctx: &GpuContext,
        a: &Activations,
        side: &Side<'_>,
        last: &Layer,
        last_dy: &GpuTensor,
    ) -> Result<Vec<Dispatch>> {
        let body = side.body;
        let mut written = vec![false; body.widths.len()];
        let mut d = Vec::with_capacity(2 * body.nodes.len() + 2);
        // One contribution to tensor `t`'s gradient, planned by `write` given where it goes (none
        // when `t` gets no gradient): the tensor's gradient, or (a later contribution) the
        // scratch it is then added from.
        type Write<'w> = dyn FnMut(Option<&GpuTensor>, &mut Vec<Dispatch>) -> Result<()> + 'w;
        let contribute = |t: TensorId,
                          d: &mut Vec<Dispatch>,
                          written: &mut [bool],
                          write: &mut Write<'_>|
         -> Result<()> {
            let (target, added) = match side.grad(t) {
                None => (None, None),
                Some(g) if !written[t] => (Some(g.clone()), None),
                Some(g) => (Some(a.grad_scratch.view(0, &g.shape)?), Some(g)),
            };
            write(target.as_ref(), d)?;
            if let (Some(tmp), Some(g)) = (&target, added) {
                d.push(add::grad_act(ctx, tmp, tmp, g, Act::Identity, true)?);
            }
            if target.is_some() {
                written[t] = true;
            }
            Ok(())
        };
        // A layer's backward with its input gradient going into tensor `t`.
        let layer_back = |l: &Layer,
                          dy: &GpuTensor,
                          t: TensorId,
                          d: &mut Vec<Dispatch>,
                          written: &mut [bool]|
         -> Result<()> {
            let v = self.views(l)?;
            let (x, act) = (side.value(t), body.acts[t]);
            let labels = Some(&a.labels);
            contribute(t, d, written, &mut |target, d| {
                let dx = target.map(|g| (g, act));
                d.extend(layer_backward(ctx, l, &v, dy, x, dx, labels, &a.scratch)?);
                Ok(())
            })
        };
        layer_back(last, last_dy, body.output(), &mut d, &mut written)?;
        for (i, node) in body.nodes.iter().enumerate().rev() {
            let dy = &side.grads[i];
            match node.op {
                Op::Layer(j) => {
                    layer_back(&side.layers[j], dy, node.inputs[0], &mut d, &mut written)?
                }
                Op::Add(_) => {
                    for &t in &node.inputs {
                        if let Some(g) = side.grad(t) {
                            let act = body.acts[t].unwrap_or(Act::Identity);
                            let h = side.value(t);
                            d.push(add::grad_act(ctx, dy, h, g, act, written[t])?);
                            written[t] = true;
                        }
                    }
                }
                Op::Attention(image) => {
                    let ins = [0, 1, 2].map(|j| node.inputs[j]);
                    let [q, k, v] = ins.map(|t| side.value(t));
                    // Each input's gradient: its buffer, or (a later contribution) a buffer it
                    // is then added from (the core writes all three at once).
                    let mut targets = Vec::new();
                    let mut adds = Vec::new();
                    for (j, &t) in ins.iter().enumerate() {
                        unactivated_input(body, t, "an attention")?;
                        let g = side.grad(t).ok_or_else(|| {
                            Error::Config("an attention reads the side's input".into())
                        })?;
                        if written[t] || ins[..j].contains(&t) {
                            let tmp =
                                ctx.zeros("attention input gradient", &g.shape, DType::F32)?;
                            adds.push((tmp.clone(), g.clone()));
                            targets.push(tmp);
                        } else {
                            targets.push(g.clone());
                        }
                        written[t] = true;
                    }
                    let probs = a.scratch.attention_probs(side.name, i)?;
                    let s = attention::AttnShape { image };
                    let grads = (&targets[0], &targets[1], &targets[2]);
                    let g = &a.scratch.attn_grad;
                    d.extend(attention::backward(
                        ctx,
                        &s,
                        (q, k, v),
                        &probs,
                        dy,
                        g,
                        grads,
                    )?);
                    for (tmp, g) in adds {
                        d.push(add::grad_act(ctx, &tmp, &tmp, &g, Act::Identity, true)?);
                    }
                }
                Op::Upsample(image) => {
                    let t = node.inputs[0];
                    unactivated_input(body, t, "an upsampling")?;
                    contribute(t, &mut d, &mut written, &mut |target, d| {
                        if let Some(g) = target {
                            d.push(add::upsample_nearest_grad(ctx, dy, g, image)?);
                        }
                        Ok(())
                    })?;
                }
            }
        }
        Ok(d)
    }

    /// Gather (optional) → the encoder's hidden layers → the `mu | logvar` heads.
    fn encoder(
        &self,
        ctx: &GpuContext,
        a: &Activations,
        input: Input<'_>,
    ) -> Result<Vec<Dispatch>> {
        let mut d = Vec::with_capacity(2 + a.enc.len());
        if let Input::Gather {
            pixels,
            labels,
            index,
        } = input
        {
            d.push(gather::gather_batch(
                ctx,
                pixels,
                index,
                &a.x,
                self.step_uniform(),
                self.cfg.signed_pixels(),
            )?);
            if self.cfg.is_conditional() {
                d.push(condition::gather_labels(
                    ctx,
                    labels,
                    index,
                    &a.labels,
                    self.step_uniform(),
                )?);
            }
        }
        d.extend(self.forward_body(ctx, a, &self.encoder_side(a))?);
        let x = a.enc.last().unwrap_or(&a.x);
        // Both heads as one Linear H -> 2K: heads = h·[W_mu; W_lv]ᵀ + [b_mu; b_lv].
        let heads = &self.layout.heads;
        d.extend(layer_forward(
            ctx,
            heads,
            &self.views(heads)?,
            x,
            &a.heads,
            Act::Identity,
            Some(&a.labels),
            &a.scratch,
        )?);
        Ok(d)
    }

    /// z → the decoder's hidden layers (the output layer is planned by the caller: fused with the
    /// BCE in training, plain otherwise).
    fn decoder_hidden(&self, ctx: &GpuContext, a: &Activations) -> Result<Vec<Dispatch>> {
        self.forward_body(ctx, a, &self.decoder_side(a))
    }

    /// The encoder's graph with its buffers: from x, which gets no gradient.
    fn encoder_side<'a>(&'a self, a: &'a Activations) -> Side<'a> {
        Side {
            name: "encoder",
            body: &self.layout.enc_body,
            layers: &self.layout.encoder,
            input: &a.x,
            outs: &a.enc,
            grads: &a.d_enc,
            input_grad: None,
        }
    }

    /// The decoder's graph with its buffers: from z, whose gradient is `dz`.
    fn decoder_side<'a>(&'a self, a: &'a Activations) -> Side<'a> {
        Side {
            name: "decoder",
            body: &self.layout.dec_body,
            layers: &self.layout.decoder,
            input: &a.z,
            outs: &a.dec,
            grads: &a.d_dec,
            input_grad: Some(&a.dz),
        }
    }

    /// The forward of a side's graph from `x`: each node writes its tensor (`outs[i]` for node
    /// i, a layer with its activation or a residual sum) from tensors written before it.
    /// `backward_body` is this read in reverse.
    fn forward_body(
        &self,
        ctx: &GpuContext,
        a: &Activations,
        side: &Side<'_>,
    ) -> Result<Vec<Dispatch>> {
        let mut d = Vec::with_capacity(side.body.nodes.len());
        for (i, (node, y)) in side.body.nodes.iter().zip(side.outs).enumerate() {
            match node.op {
                Op::Layer(j) => {
                    let l = &side.layers[j];
                    let v = self.views(l)?;
                    let x = side.value(node.inputs[0]);
                    let labels = Some(&a.labels);
                    d.extend(layer_forward(ctx, l, &v, x, y, l.act, labels, &a.scratch)?);
                }
                Op::Add(act) => {
                    let (p, q) = (side.value(node.inputs[0]), side.value(node.inputs[1]));
                    d.push(add::add_act(ctx, p, q, y, act)?);
                }
                Op::Upsample(image) => {
                    d.push(add::upsample_nearest(
                        ctx,
                        side.value(node.inputs[0]),
                        y,
                        image,
                    )?);
                }
                Op::Attention(image) => {
                    let [q, k, v] = [0, 1, 2].map(|j| side.value(node.inputs[j]));
                    let probs = a.scratch.attention_probs(side.name, i)?;
                    let s = attention::AttnShape { image };
                    d.extend(attention::forward(ctx, &s, (q, k, v), &probs, y)?);
                }
            }
        }
        Ok(d)
    }

    /// Plan the encoder alone on `batch` rows: fills `acts.heads` (mu | logvar).
    pub fn plan_encode(
        &self,
        ctx: &GpuContext,
        batch: usize,
        input: Input<'_>,
    ) -> Result<StepGraph> {
        self.check_batch(batch)?;
        let a = self.acts.rows(batch, self.cfg.samples)?;
        let d = self.encoder(ctx, &a, input)?;
        Ok(StepGraph::new(batch, false, self.planning_slot.get(), d))
    }

    /// Plan the decoder alone on `rows` latent codes written into `acts.z`: leaves the
    /// likelihood's mean in `acts.logits` (`sigmoid(logits)` but for a continuous Bernoulli).
    pub fn plan_decode(&self, ctx: &GpuContext, rows: usize) -> Result<StepGraph> {
        if rows == 0 || rows > self.acts.z.shape[0] {
            return Err(Error::Config(format!(
                "{rows} latent codes do not fit buffers of {} rows",
                self.acts.z.shape[0]
            )));
        }
        let a = self.acts.decoder_rows(rows)?;
        let mut d = self.decoder_hidden(ctx, &a)?;
        let out_layer = &self.layout.output;
        let h_last = a.dec.last().unwrap_or(&a.z);
        // A sigmoid mean is the output layer's fused activation; another, a kernel after it.
        let (act, mean) = self.mean_kernel(ctx, &a.logits)?;
        d.extend(layer_forward(
            ctx,
            out_layer,
            &self.views(out_layer)?,
            h_last,
            &a.logits,
            act,
            Some(&a.labels),
            &a.scratch,
        )?);
        d.extend(mean);
        Ok(StepGraph::new(rows, false, self.planning_slot.get(), d))
    }

    /// How the logits become the likelihood's mean: the output layer's fused sigmoid (Bernoulli,
    /// Gaussian), no activation and the mean kernel after it (continuous Bernoulli), or nothing
    /// (an AutoencoderKL's Gaussian, whose mean is the output).
    fn mean_kernel(&self, ctx: &GpuContext, logits: &GpuTensor) -> Result<(Act, Option<Dispatch>)> {
        Ok(match self.cfg.likelihood {
            l @ Likelihood::ContinuousBernoulli => (
                Act::Identity,
                Some(likelihood::likelihood_mean(ctx, l, logits)?),
            ),
            // An AutoencoderKL's output is the mean itself.
            l if l.identity_mean() => (Act::Identity, None),
            _ => (Act::Sigmoid, None),
        })
    }

    /// Plan the full forward pass with sampled z (as the notebook's `model(x)`), the loss into
    /// `acc`, and the likelihood's mean left in `acts.logits`.
    pub fn plan_reconstruct(
        &self,
        ctx: &GpuContext,
        batch: usize,
        input: Input<'_>,
        acc: &GpuTensor,
    ) -> Result<StepGraph> {
        let mut g = self.plan_step(ctx, batch, input, EpsSource::Philox, None, acc)?;
        let logits = self.acts.rows(batch, self.cfg.samples)?.logits;
        match self.mean_kernel(ctx, &logits)? {
            (_, Some(mean)) => g.push(mean),
            (act, None) => g.push(bias_act::act_forward(ctx, &logits, None, act)?),
        }
        Ok(g)
    }

    fn check_batch(&self, batch: usize) -> Result<()> {
        if batch == 0 || batch > self.max_batch {
            return Err(Error::Config(format!(
                "a step of {batch} rows does not fit buffers sized for batches of at most {}",
                self.max_batch
            )));
        }
        Ok(())
    }

    /// Record and submit one planned step (does not wait for it to finish); returns the host time
    /// spent recording it. For a training step the step counter t advances and keys the noise and
    /// the optimizer's factors;
    /// evaluation draws use a separate counter range.
    pub fn run_step(
        &mut self,
        ctx: &GpuContext,
        graph: &StepGraph,
        batch_offset: usize,
    ) -> Result<std::time::Duration> {
        self.run_steps(ctx, &[(graph, batch_offset)])
    }

    /// Record several planned steps, in order, into one command encoder and one submit (a real GPU
    /// pays tens of µs per submit). Each step's values go to its graph's own uniform slot, so the
    /// graphs must have been planned in distinct slots ([`GpuVae::in_slot`]); the results are
    /// bit for bit those of one submit per step.
    pub fn run_steps(
        &mut self,
        ctx: &GpuContext,
        steps: &[(&StepGraph, usize)],
    ) -> Result<std::time::Duration> {
        let start = std::time::Instant::now();
        let mut used = [false; MAX_STEPS_PER_SUBMIT];
        for (graph, batch_offset) in steps {
            if std::mem::replace(&mut used[graph.slot], true) {
                return Err(Error::Config(format!(
                    "{} steps in one submit share uniform slot {}: plan each in its own slot",
                    steps.len(),
                    graph.slot
                )));
            }
            let mut sp = StepParams::with_seed(self.seed);
            sp.batch_offset = *batch_offset as u32;
            if graph.train {
                self.train_steps += 1;
                sp =
                    (self.schedule(graph.update_rules())).params(self.train_steps, sp.batch_offset);
            } else {
                sp.rng_step = self.next_eval_rng_step();
            }
            self.step_uniforms[graph.slot].write(ctx, &sp);
        }
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("steps"),
            });
        let refs: Vec<&Dispatch> = steps
            .iter()
            .flat_map(|(g, _)| g.dispatches().iter())
            .collect();
        kernels::encode_all(&mut encoder, &refs);
        let commands = encoder.finish();
        // Host time to record the steps; the submit may wait for the device when it is busy.
        let recorded = start.elapsed();
        ctx.queue.submit([commands]);
        Ok(recorded)
    }

    /// The training run's per-step schedule: the noise counter, the KL weight, and the fields of
    /// the optimizer whose rules are `update` (a training graph's [`StepGraph::update_rules`]).
    pub fn schedule(&self, update: &[(&'static str, Rule)]) -> Schedule {
        Schedule::new(self.kl, self.seed, update)
    }

    /// Plan with `plan` against uniform slot `slot` of the ring (graphs that go into one submit
    /// need distinct slots).
    pub fn in_slot<T>(&self, slot: usize, plan: impl FnOnce(&Self) -> Result<T>) -> Result<T> {
        if slot >= MAX_STEPS_PER_SUBMIT {
            return Err(Error::Config(format!(
                "uniform slot {slot}: the ring has {MAX_STEPS_PER_SUBMIT}"
            )));
        }
        let before = self.planning_slot.replace(slot);
        let r = plan(self);
        self.planning_slot.set(before);
        r
    }

    /// Key the next evaluation draws by `epoch` (each epoch's test pass gets its own noise, the same
    /// whether the run was resumed or not): draw counters restart at `epoch · 2^16`.
    pub fn start_eval_draws(&mut self, epoch: usize) {
        self.eval_draws = EVAL_DRAWS.start(epoch);
    }

    /// The noise counter of the next evaluation step (what `run_steps` writes for it).
    pub fn next_eval_rng_step(&mut self) -> u32 {
        self.eval_draws = self.eval_draws.wrapping_add(1);
        EVAL_DRAWS.rng_step(self.eval_draws)
    }

    /// The per-step uniform that graphs planned now read (slot 0 unless inside
    /// [`GpuVae::in_slot`]).
    pub fn step_uniform(&self) -> &StepUniform {
        &self.step_uniforms[self.planning_slot.get()]
    }

    /// Zero a loss accumulator (queued before the next submit).
    pub fn reset_losses(&self, ctx: &GpuContext, acc: &GpuTensor) -> Result<()> {
        ctx.write_f32(acc, &[0.0; LossSlots::LEN])
    }

    /// Read a loss accumulator back (waits for the submitted steps).
    pub fn read_losses(&self, ctx: &GpuContext, acc: &GpuTensor) -> Result<LossReadout> {
        Ok(LossReadout::from_slots(&ctx.read_f32(acc)?))
    }

    /// The parameter arena, read back.
    pub fn read_params(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        ctx.read_f32(&self.params)
    }
}
