//! The VAE on the GPU: parameter arenas, activation buffers, and the training step as a recorded
//! chain of the engine's kernels (`docs/ARCHITECTURE.md` lists the data flow).
//!
//! A [`StepGraph`] is planned once per batch size: every dispatch, bind group and static uniform
//! is created up front. Running a step writes the 32-byte per-step uniform, records the dispatches
//! into one compute pass of one command encoder, and submits — no readback, no host copy of
//! images. Losses accumulate on the GPU and are read only when asked ([`GpuVae::read_losses`]).
//!
//! Where it departs from the first design sketch, to cut passes (16 dispatches per training
//! step): the two latent heads are one product into `heads` [B, 2K] (mu | logvar per row), and a
//! training step fuses the BCE into the logits product's epilogue, so it never stores the logits.

use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext, GpuTensor};
use crate::kernels::matmul::{self, BceEpilogue, Epilogue, matmul};
use crate::kernels::reduce::LossSlots;
use crate::kernels::reparam_kl::{EpsSource, kl_partials_len};
use crate::kernels::{
    self, Dispatch, StepParams, StepUniform, adam, bce, bias_act, gather, reduce, reparam_kl,
};
use crate::model::params::idx;
use crate::model::{ParamLayout, VaeConfig};
use crate::ops::{Act, AdamConfig, Layout};

/// Activation and activation-gradient buffers, allocated once for the largest batch.
/// Shapes: `x, h_enc, heads, dheads, dh_enc` have B rows; `eps, z, h_dec, logits` and their
/// gradients have L·B rows (sample-major: row l·B + b). `heads` [B, 2K] is the encoder heads'
/// output, row b = (mu_b, logvar_b), and `dheads` its gradient (see [`Activations::split_heads`]).
#[derive(Clone, Debug)]
pub struct Activations {
    pub x: GpuTensor,
    pub h_enc: GpuTensor,
    pub heads: GpuTensor,
    pub eps: GpuTensor,
    pub z: GpuTensor,
    pub h_dec: GpuTensor,
    pub logits: GpuTensor,
    pub dlogits: GpuTensor,
    pub dh_dec: GpuTensor,
    pub dz: GpuTensor,
    pub dheads: GpuTensor,
    pub dh_enc: GpuTensor,
    pub bce_partials: GpuTensor,
    pub kl_partials: GpuTensor,
}

impl Activations {
    fn new(ctx: &GpuContext, cfg: &VaeConfig, batch: usize) -> Result<Self> {
        let (d, h, k, l) = (cfg.input, cfg.hidden, cfg.latent, cfg.samples);
        let lb = l * batch;
        let z = |name: &str, shape: &[usize]| ctx.zeros(name, shape, DType::F32);
        Ok(Activations {
            x: z("x", &[batch, d])?,
            h_enc: z("h_enc", &[batch, h])?,
            heads: z("mu_e | logvar_e", &[batch, 2 * k])?,
            eps: z("eps", &[lb, k])?,
            z: z("z", &[lb, k])?,
            h_dec: z("h_dec", &[lb, h])?,
            logits: z("logits", &[lb, d])?,
            dlogits: z("dlogits", &[lb, d])?,
            dh_dec: z("dh_dec", &[lb, h])?,
            dz: z("dz", &[lb, k])?,
            dheads: z("dmu_e | dlogvar_e", &[batch, 2 * k])?,
            dh_enc: z("dh_enc", &[batch, h])?,
            // Room for the BCE kernel's partials and for the fused BCE epilogue's.
            bce_partials: z(
                "bce_partials",
                &[bce::partials_len(lb * d).max(matmul::bce_partials_capacity(lb, d))],
            )?,
            kl_partials: z("kl_partials", &[kl_partials_len(lb * k)])?,
        })
    }

    /// Split a `[B, 2K]` heads matrix read back (`heads` or `dheads`) into its `[B, K]` mu and
    /// logvar halves.
    pub fn split_heads(heads: &[f32], latent: usize) -> (Vec<f32>, Vec<f32>) {
        let mut mu = Vec::with_capacity(heads.len() / 2);
        let mut logvar = Vec::with_capacity(heads.len() / 2);
        for row in heads.chunks_exact(2 * latent) {
            mu.extend_from_slice(&row[..latent]);
            logvar.extend_from_slice(&row[latent..]);
        }
        (mu, logvar)
    }

    /// Views of the decoder-side buffers (z, h_dec, logits) with `rows` rows.
    pub fn decoder_rows(&self, rows: usize) -> Result<(GpuTensor, GpuTensor, GpuTensor)> {
        let v = |t: &GpuTensor| t.view(0, &[rows, t.shape[1]]);
        Ok((v(&self.z)?, v(&self.h_dec)?, v(&self.logits)?))
    }

    /// Views of the first `b` rows (and L·b rows) of every buffer.
    pub fn rows(&self, b: usize, samples: usize) -> Result<Activations> {
        let v = |t: &GpuTensor, rows: usize| t.view(0, &[rows, t.shape[1]]);
        let lb = samples * b;
        Ok(Activations {
            x: v(&self.x, b)?,
            h_enc: v(&self.h_enc, b)?,
            heads: v(&self.heads, b)?,
            eps: v(&self.eps, lb)?,
            z: v(&self.z, lb)?,
            h_dec: v(&self.h_dec, lb)?,
            logits: v(&self.logits, lb)?,
            dlogits: v(&self.dlogits, lb)?,
            dh_dec: v(&self.dh_dec, lb)?,
            dz: v(&self.dz, lb)?,
            dheads: v(&self.dheads, b)?,
            dh_enc: v(&self.dh_enc, b)?,
            bce_partials: self.bce_partials.clone(),
            kl_partials: self.kl_partials.clone(),
        })
    }
}

/// A Linear layer's epilogue: its bias and activation.
fn lin(bias: &GpuTensor, act: Act) -> Epilogue<'_> {
    Epilogue {
        bias: Some(bias),
        act,
        ..Epilogue::NONE
    }
}

/// The epilogue of a weight-gradient product `dW = dYᵀ·X` that also writes the bias gradient
/// `db = colsum(dY)` (the row sums of dYᵀ), saving a column-sum dispatch per layer.
fn with_bias_grad(db: &GpuTensor) -> Epilogue<'_> {
    Epilogue {
        row_sums: Some(db),
        ..Epilogue::NONE
    }
}

/// Where a step's input batch comes from.
#[derive(Clone, Copy)]
pub enum Input<'a> {
    /// Gathered on the GPU: rows `index[batch_offset..batch_offset + B]` of `pixels` (u8 `[N, D]`).
    Gather {
        pixels: &'a GpuTensor,
        index: &'a GpuTensor,
    },
    /// Already in `acts.x` (written by the caller), e.g. for parity with a reference batch.
    Given,
}

/// A planned step for one batch size.
pub struct StepGraph {
    pub batch: usize,
    pub train: bool,
    /// The per-step uniform slot its kernels read.
    pub slot: usize,
    dispatches: Vec<Dispatch>,
}

impl StepGraph {
    pub fn dispatch_count(&self) -> usize {
        self.dispatches.len()
    }

    /// Record the step's dispatches into a compute pass.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.dispatches {
            d.encode(pass);
        }
    }

    /// The planned dispatches, in order.
    pub fn dispatches(&self) -> &[Dispatch] {
        &self.dispatches
    }

    /// Append a dispatch to run after the planned ones (e.g. evaluation extras).
    pub fn push(&mut self, d: Dispatch) {
        self.dispatches.push(d);
    }
}

/// A pass over `len` rows in batches of `batch`: one planned graph for the full batches and one for
/// the last, smaller batch (as PyTorch's DataLoader without `drop_last`).
pub struct EpochPlan {
    pub batch: usize,
    pub len: usize,
    full: StepGraph,
    last: Option<StepGraph>,
}

impl EpochPlan {
    /// Plan with `plan(rows)`, called for the full batch size and, if `len` is not a multiple of
    /// it, for the remainder.
    pub fn new(
        len: usize,
        batch: usize,
        mut plan: impl FnMut(usize) -> Result<StepGraph>,
    ) -> Result<Self> {
        if batch == 0 || len == 0 {
            return Err(Error::Config(format!(
                "cannot plan {len} rows in batches of {batch}"
            )));
        }
        let full = plan(batch)?;
        let last = match len % batch {
            0 => None,
            rem => Some(plan(rem)?),
        };
        Ok(EpochPlan {
            batch,
            len,
            full,
            last,
        })
    }

    pub fn steps(&self) -> usize {
        self.len.div_ceil(self.batch)
    }

    /// The graph of step `step` (0-based); it starts at row `step * batch`.
    pub fn graph(&self, step: usize) -> &StepGraph {
        if (step + 1) * self.batch <= self.len {
            &self.full
        } else {
            self.last.as_ref().unwrap_or(&self.full)
        }
    }

    /// The graph of a full batch.
    pub fn full(&self) -> &StepGraph {
        &self.full
    }

    /// The graph of the last, smaller batch, when `len` is not a multiple of `batch`.
    pub fn last(&self) -> Option<&StepGraph> {
        self.last.as_ref()
    }

    /// Kernel launches of a full step.
    pub fn dispatch_count(&self) -> usize {
        self.full.dispatch_count()
    }
}

/// The loss accumulator's contents (sums over the batches since the last reset).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossReadout {
    pub epoch_total: f64,
    pub epoch_bce: f64,
    pub epoch_kl: f64,
    pub batch_total: f64,
    pub batch_bce: f64,
    pub batch_kl: f64,
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
            epoch_bce: f(LossSlots::EPOCH_BCE),
            epoch_kl: f(LossSlots::EPOCH_KL),
            batch_total: f(LossSlots::BATCH_TOTAL),
            batch_bce: f(LossSlots::BATCH_BCE),
            batch_kl: f(LossSlots::BATCH_KL),
            batches: v[LossSlots::BATCHES] as u64,
            nonfinite: v[LossSlots::NONFINITE] != 0.0,
        }
    }
}

pub struct GpuVae {
    pub cfg: VaeConfig,
    pub layout: ParamLayout,
    pub adam: AdamConfig,
    pub params: GpuTensor,
    pub grads: GpuTensor,
    pub adam_m: GpuTensor,
    pub adam_v: GpuTensor,
    pub acts: Activations,
    pub max_batch: usize,
    pub seed: u64,
    /// Adam steps taken so far (PyTorch's `state['step']`).
    pub adam_steps: u64,
    /// A ring of per-step uniforms: a submit of k steps gives each step its own (see
    /// [`GpuVae::run_steps`]); graphs are planned against one slot of the ring.
    step_uniforms: Vec<StepUniform>,
    /// The slot `plan_*` binds (set by [`GpuVae::in_slot`]).
    planning_slot: std::cell::Cell<usize>,
    eval_draws: u32,
}

/// The most steps one submit can carry: the size of the per-step uniform ring.
pub const MAX_STEPS_PER_SUBMIT: usize = 8;

impl GpuVae {
    /// The largest buffers a model of `cfg` training on batches of `batch` needs, in bytes, with
    /// their names: checked against the adapter's limits before anything is allocated.
    pub fn largest_buffers(cfg: &VaeConfig, batch: usize) -> Vec<(&'static str, u64)> {
        let rows = (cfg.samples * batch) as u64;
        let arena = ParamLayout::new(cfg).len as u64 * 4;
        vec![
            ("parameter arena", arena),
            ("logits [L·B, D]", rows * cfg.input as u64 * 4),
            ("h_dec [L·B, H]", rows * cfg.hidden as u64 * 4),
            ("x [B, D]", batch as u64 * cfg.input as u64 * 4),
        ]
    }

    /// Refuse, before any allocation, a model or batch whose buffers exceed the adapter's limits.
    pub fn check_fits(ctx: &GpuContext, cfg: &VaeConfig, batch: usize) -> Result<()> {
        for (name, bytes) in Self::largest_buffers(cfg, batch) {
            ctx.check_binding_size(name, bytes)?;
        }
        let groups = (cfg.samples * batch * cfg.input).div_ceil(256) as u64;
        let max = ctx.limits().max_compute_workgroups_per_dimension as u64;
        if groups > max * max {
            return Err(Error::AdapterLimit {
                adapter: ctx.adapter.name.clone(),
                what: format!(
                    "{groups} workgroups for the logits exceed {max}² (max_compute_workgroups_per_dimension)"
                ),
            });
        }
        Ok(())
    }

    /// A fresh model initialised from `seed` as PyTorch's `nn.Linear` would be.
    pub fn new(
        ctx: &GpuContext,
        cfg: VaeConfig,
        adam: AdamConfig,
        max_batch: usize,
        seed: u64,
    ) -> Result<Self> {
        let layout = ParamLayout::new(&cfg);
        let init = layout.init(seed);
        Self::from_params(ctx, cfg, adam, max_batch, seed, &init)
    }

    /// A model with the given parameter arena (laid out by [`ParamLayout`]).
    pub fn from_params(
        ctx: &GpuContext,
        cfg: VaeConfig,
        adam: AdamConfig,
        max_batch: usize,
        seed: u64,
        params: &[f32],
    ) -> Result<Self> {
        cfg.validate()?;
        if max_batch == 0 {
            return Err(Error::setting("batch size", "must be at least 1"));
        }
        Self::check_fits(ctx, &cfg, max_batch)?;
        let layout = ParamLayout::new(&cfg);
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
        Ok(GpuVae {
            params: ctx.upload_f32("params", &[n], params)?,
            grads: ctx.zeros("grads", &[n], DType::F32)?,
            adam_m: ctx.zeros("adam_m", &[n], DType::F32)?,
            adam_v: ctx.zeros("adam_v", &[n], DType::F32)?,
            acts: Activations::new(ctx, &cfg, max_batch)?,
            step_uniforms: (0..MAX_STEPS_PER_SUBMIT)
                .map(|_| StepUniform::new(ctx, &StepParams::with_seed(seed)))
                .collect(),
            planning_slot: std::cell::Cell::new(0),
            cfg,
            layout,
            adam,
            max_batch,
            seed,
            adam_steps: 0,
            eval_draws: 0,
        })
    }

    /// The view of parameter `i` (see [`crate::model::params::idx`]) in an arena.
    pub fn view(&self, arena: &GpuTensor, i: usize) -> Result<GpuTensor> {
        let s = &self.layout.specs[i];
        arena.view(s.offset, &s.shape)
    }

    /// The encoder heads' joint `[2K, H]` weight and `[2K]` bias views in an arena.
    pub fn heads(&self, arena: &GpuTensor) -> Result<(GpuTensor, GpuTensor)> {
        let [(wo, ws), (bo, bs)] = self.layout.heads();
        Ok((arena.view(wo, &ws)?, arena.view(bo, &bs)?))
    }

    /// A fresh loss accumulator.
    pub fn new_accumulator(&self, ctx: &GpuContext) -> Result<GpuTensor> {
        ctx.zeros("loss accumulator", &[LossSlots::LEN], DType::F32)
    }

    /// Plan one step on `batch` rows: forward, loss (into `acc`), and if `train`, backward and Adam.
    pub fn plan_step(
        &self,
        ctx: &GpuContext,
        batch: usize,
        input: Input<'_>,
        eps_source: EpsSource,
        train: bool,
        acc: &GpuTensor,
    ) -> Result<StepGraph> {
        self.check_batch(batch)?;
        let a = self.acts.rows(batch, self.cfg.samples)?;
        let p = |i| self.view(&self.params, i);
        let g = |i| self.view(&self.grads, i);
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
            1.0,
            eps_source,
            step,
        )?);
        let lb = self.cfg.samples * batch;
        let mut logits_variant = None;
        let bce_partials = if train {
            // Training needs no logits: the BCE loss and dlogits come out of the logits product's
            // epilogue (one dispatch and one pass over [L·B, D] fewer).
            let p = |i| self.view(&self.params, i);
            let (d_in, h) = (self.cfg.input, self.cfg.hidden);
            d.extend(self.decoder(ctx, &a.z, &a.h_dec, None)?);
            let logits_product = matmul::Problem {
                layout: Layout::NT,
                m: lb,
                n: d_in,
                k: h,
                row_sums: false,
            };
            let variant = matmul::variant_for(ctx, logits_product)?;
            let (w_out, b_out) = (p(idx::OUT_W)?, p(idx::OUT_B)?);
            d.push(matmul::with_candidates(
                ctx,
                logits_product,
                variant,
                |v| {
                    matmul::matmul_with(
                        ctx,
                        v,
                        Layout::NT,
                        &a.h_dec,
                        &w_out,
                        &a.dlogits,
                        Epilogue {
                            bias: Some(&b_out),
                            bce: Some(BceEpilogue {
                                targets: &a.x,
                                partials: &a.bce_partials,
                            }),
                            ..Epilogue::NONE
                        },
                    )
                },
            )?);
            logits_variant = Some((d.len() - 1, logits_product));
            matmul::bce_partials_len(ctx, variant, logits_product)?
        } else {
            d.extend(self.decoder(ctx, &a.z, &a.h_dec, Some(&a.logits))?);
            d.push(bce::bce_forward_backward(
                ctx,
                &a.logits,
                &a.x,
                &a.dlogits,
                &a.bce_partials,
            )?);
            bce::partials_len(lb * self.cfg.input)
        };
        d.push(reduce::loss_reduce(
            ctx,
            &a.bce_partials,
            bce_partials,
            &a.kl_partials,
            kl_partials_len(lb * self.cfg.latent),
            acc,
        )?);
        // An exported plan may choose another kernel for the logits product: the loss reduction
        // then adds up that kernel's count of BCE partials (its first uniform word).
        if let Some((i, problem)) = logits_variant {
            let reduce_params = d[d.len() - 1].desc.bindings[3].0.clone();
            for c in &mut d[i].candidates {
                let n = matmul::bce_partials_len(ctx, c.variant, problem)? as u32;
                c.set = vec![(reduce_params.clone(), 0, vec![n])];
            }
        }

        if train {
            // ---- backward: dW = dYᵀ·X (TN) with db = colsum(dY) fused in, dX = dY·W (NN) with
            // the ReLU mask fused in.
            let (w_heads, _) = self.heads(&self.params)?;
            let (w_dec, w_out) = (p(idx::DEC_W)?, p(idx::OUT_W)?);
            let none = Epilogue::NONE;
            d.push(matmul(
                ctx,
                Layout::TN,
                &a.dlogits,
                &a.h_dec,
                &g(idx::OUT_W)?,
                with_bias_grad(&g(idx::OUT_B)?),
            )?);
            d.push(matmul(
                ctx,
                Layout::NN,
                &a.dlogits,
                &w_out,
                &a.dh_dec,
                // dh_dec = (dlogits·W_out) ⊙ [h_dec > 0]: the decoder ReLU's backward, fused.
                Epilogue {
                    relu_mask: Some(&a.h_dec),
                    ..Epilogue::NONE
                },
            )?);
            d.push(matmul(
                ctx,
                Layout::TN,
                &a.dh_dec,
                &a.z,
                &g(idx::DEC_W)?,
                with_bias_grad(&g(idx::DEC_B)?),
            )?);
            d.push(matmul(ctx, Layout::NN, &a.dh_dec, &w_dec, &a.dz, none)?);
            d.push(reparam_kl::reparam_backward(
                ctx, &a.heads, &a.eps, &a.dz, &a.dheads, 1.0,
            )?);
            // Both heads at once: d[W_mu; W_lv] = dheadsᵀ·h_enc with the bias gradients fused,
            // and dh_enc = (dheads·[W_mu; W_lv]) ⊙ [h_enc > 0], the encoder ReLU's backward fused.
            let (dw_heads, db_heads) = self.heads(&self.grads)?;
            d.push(matmul(
                ctx,
                Layout::TN,
                &a.dheads,
                &a.h_enc,
                &dw_heads,
                with_bias_grad(&db_heads),
            )?);
            d.push(matmul(
                ctx,
                Layout::NN,
                &a.dheads,
                &w_heads,
                &a.dh_enc,
                Epilogue {
                    relu_mask: Some(&a.h_enc),
                    ..Epilogue::NONE
                },
            )?);
            d.push(matmul(
                ctx,
                Layout::TN,
                &a.dh_enc,
                &a.x,
                &g(idx::ENC_W)?,
                with_bias_grad(&g(idx::ENC_B)?),
            )?);
            d.push(adam::adam_step(
                ctx,
                &self.params,
                &self.grads,
                &self.adam_m,
                &self.adam_v,
                &self.adam,
                step,
            )?);
        }
        ctx.check_errors()?;
        Ok(StepGraph {
            batch,
            train,
            slot: self.planning_slot.get(),
            dispatches: d,
        })
    }

    /// Gather (optional) → `h_enc = ReLU(x·W_encᵀ + b)` → the `mu | logvar` heads.
    fn encoder(
        &self,
        ctx: &GpuContext,
        a: &Activations,
        input: Input<'_>,
    ) -> Result<Vec<Dispatch>> {
        let p = |i| self.view(&self.params, i);
        let mut d = Vec::with_capacity(4);
        if let Input::Gather { pixels, index } = input {
            d.push(gather::gather_batch(
                ctx,
                pixels,
                index,
                &a.x,
                self.step_uniform(),
            )?);
        }
        d.push(matmul(
            ctx,
            Layout::NT,
            &a.x,
            &p(idx::ENC_W)?,
            &a.h_enc,
            lin(&p(idx::ENC_B)?, Act::Relu),
        )?);
        // Both heads as one Linear H -> 2K: heads = h_enc·[W_mu; W_lv]ᵀ + [b_mu; b_lv].
        let (w_heads, b_heads) = self.heads(&self.params)?;
        d.push(matmul(
            ctx,
            Layout::NT,
            &a.h_enc,
            &w_heads,
            &a.heads,
            lin(&b_heads, Act::Identity),
        )?);
        Ok(d)
    }

    /// `h_dec = ReLU(z·W_decᵀ + b)`, then, given a `logits` buffer, `logits = h_dec·W_outᵀ + b`.
    fn decoder(
        &self,
        ctx: &GpuContext,
        z: &GpuTensor,
        h_dec: &GpuTensor,
        logits: Option<&GpuTensor>,
    ) -> Result<Vec<Dispatch>> {
        let p = |i| self.view(&self.params, i);
        let mut d = vec![matmul(
            ctx,
            Layout::NT,
            z,
            &p(idx::DEC_W)?,
            h_dec,
            lin(&p(idx::DEC_B)?, Act::Relu),
        )?];
        if let Some(logits) = logits {
            d.push(matmul(
                ctx,
                Layout::NT,
                h_dec,
                &p(idx::OUT_W)?,
                logits,
                lin(&p(idx::OUT_B)?, Act::Identity),
            )?);
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
        Ok(StepGraph {
            batch,
            train: false,
            slot: self.planning_slot.get(),
            dispatches: self.encoder(ctx, &a, input)?,
        })
    }

    /// Plan the decoder alone on `rows` latent codes written into `acts.z`: leaves
    /// `mu_d = sigmoid(logits)` in `acts.logits`.
    pub fn plan_decode(&self, ctx: &GpuContext, rows: usize) -> Result<StepGraph> {
        if rows == 0 || rows > self.acts.z.shape[0] {
            return Err(Error::Config(format!(
                "{rows} latent codes do not fit buffers of {} rows",
                self.acts.z.shape[0]
            )));
        }
        let (z, h_dec, logits) = self.acts.decoder_rows(rows)?;
        let mut dispatches = self.decoder(ctx, &z, &h_dec, Some(&logits))?;
        dispatches.push(bias_act::act_forward(ctx, &logits, None, Act::Sigmoid)?);
        Ok(StepGraph {
            batch: rows,
            train: false,
            slot: self.planning_slot.get(),
            dispatches,
        })
    }

    /// Plan the full forward pass with sampled z (as the notebook's `model(x)`), the loss into
    /// `acc`, and `mu_d = sigmoid(logits)` left in `acts.logits`.
    pub fn plan_reconstruct(
        &self,
        ctx: &GpuContext,
        batch: usize,
        input: Input<'_>,
        acc: &GpuTensor,
    ) -> Result<StepGraph> {
        let mut g = self.plan_step(ctx, batch, input, EpsSource::Philox, false, acc)?;
        let (_, _, logits) = self.acts.decoder_rows(self.cfg.samples * batch)?;
        g.dispatches
            .push(bias_act::act_forward(ctx, &logits, None, Act::Sigmoid)?);
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
    /// spent recording it. For a training step the Adam step counter advances and keys the noise;
    /// evaluation draws use a separate counter range.
    pub fn run_step(
        &mut self,
        ctx: &GpuContext,
        graph: &StepGraph,
        batch_offset: usize,
    ) -> Result<std::time::Duration> {
        self.run_steps(ctx, &[(graph, batch_offset)])
    }

    /// Record several planned steps, in order, into one compute pass of one submit (a real GPU
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
                self.adam_steps += 1;
                let (step_size, bc2_sqrt) = self.adam.step_factors(self.adam_steps);
                sp.rng_step = self.adam_steps as u32;
                sp.adam_step_size = step_size as f32;
                sp.adam_bc2_sqrt = bc2_sqrt as f32;
            } else {
                // The top half of the counter space: never a training step's noise.
                self.eval_draws = self.eval_draws.wrapping_add(1);
                sp.rng_step = 0x8000_0000 | (self.eval_draws & 0x7fff_ffff);
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
            .flat_map(|(g, _)| g.dispatches.iter())
            .collect();
        kernels::encode_all(&mut encoder, &refs);
        let commands = encoder.finish();
        // Host time to record the steps; the submit may wait for the device when it is busy.
        let recorded = start.elapsed();
        ctx.queue.submit([commands]);
        Ok(recorded)
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
        self.eval_draws = ((epoch as u32) << 16) & 0x7fff_ffff;
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
