//! Loss reduction — launcher for `shaders/reduce.wgsl`.

use super::step::StepUniform;
use super::{Bind, Dispatch, dispatch, uniform};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuTensor, Shader};

/// Slots of the f32 loss accumulator that `loss_reduce` writes (mirrors `SLOT_*` in reduce.wgsl).
/// `TOTAL` is the -ELBO (reconstruction + KL, unweighted); the objective minimised is
/// reconstruction + `KL_WEIGHTED` (the KL times the step's weight, β and warm-up).
pub struct LossSlots;

impl LossSlots {
    pub const EPOCH_TOTAL: usize = 0;
    pub const BATCH_TOTAL: usize = 1;
    /// The reconstruction term, -log p(x | z) summed (the likelihood's; BCE for Bernoulli).
    pub const BATCH_RECON: usize = 2;
    pub const BATCH_KL: usize = 3;
    pub const EPOCH_RECON: usize = 4;
    pub const EPOCH_KL: usize = 5;
    /// Set to 1 once any batch loss was NaN or infinite.
    pub const NONFINITE: usize = 6;
    pub const BATCHES: usize = 7;
    pub const BATCH_KL_WEIGHTED: usize = 8;
    pub const EPOCH_KL_WEIGHTED: usize = 9;
    /// The objective minimised: recon + weighted KL, or the IWAE bound (`objective_reduce`).
    pub const BATCH_OBJECTIVE: usize = 10;
    pub const EPOCH_OBJECTIVE: usize = 11;
    pub const LEN: usize = 12;
    /// Every slot's name (the exported plan's and the contract test's).
    pub const NAMES: [(&'static str, usize); Self::LEN] = [
        ("epoch_total", Self::EPOCH_TOTAL),
        ("batch_total", Self::BATCH_TOTAL),
        ("batch_recon", Self::BATCH_RECON),
        ("batch_kl", Self::BATCH_KL),
        ("epoch_recon", Self::EPOCH_RECON),
        ("epoch_kl", Self::EPOCH_KL),
        ("nonfinite", Self::NONFINITE),
        ("batches", Self::BATCHES),
        ("batch_kl_weighted", Self::BATCH_KL_WEIGHTED),
        ("epoch_kl_weighted", Self::EPOCH_KL_WEIGHTED),
        ("batch_objective", Self::BATCH_OBJECTIVE),
        ("epoch_objective", Self::EPOCH_OBJECTIVE),
    ];
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LossReduceParams {
    n_recon: u32,
    n_kl: u32,
    _pad: [u32; 2],
}

/// Sum `recon_partials[..n_recon]` and `kl_partials[..n_kl]` into the accumulator's slots, the KL
/// weighted by `step`'s `kl_weight` in the weighted slots.
pub fn loss_reduce(
    ctx: &GpuContext,
    recon_partials: &GpuTensor,
    n_recon: usize,
    kl_partials: &GpuTensor,
    n_kl: usize,
    acc: &GpuTensor,
    step: &StepUniform,
) -> Result<Dispatch> {
    Ok(
        loss_reduce_with_params(ctx, recon_partials, n_recon, kl_partials, n_kl, acc, step)?
            .dispatch,
    )
}

/// A planned loss reduction and its uniform buffer, whose first u32 is the count of
/// reconstruction partials it adds: a plan that lets another runtime choose the logits product's
/// kernel writes that kernel's count there (see `GpuVae::plan_step`).
pub struct LossReduce {
    pub dispatch: Dispatch,
    pub params: wgpu::Buffer,
}

/// [`loss_reduce`], handing back its uniform buffer too.
pub fn loss_reduce_with_params(
    ctx: &GpuContext,
    recon_partials: &GpuTensor,
    n_recon: usize,
    kl_partials: &GpuTensor,
    n_kl: usize,
    acc: &GpuTensor,
    step: &StepUniform,
) -> Result<LossReduce> {
    if recon_partials.len() < n_recon || kl_partials.len() < n_kl {
        return Err(Error::shape(
            "loss_reduce",
            format!(
                "{} reconstruction and {} KL partials, but {n_recon} and {n_kl} were asked for",
                recon_partials.len(),
                kl_partials.len()
            ),
        ));
    }
    if acc.shape != [LossSlots::LEN] {
        return Err(Error::shape(
            "loss_reduce",
            format!("accumulator {:?}, expected [{}]", acc.shape, LossSlots::LEN),
        ));
    }
    let params = uniform(
        ctx,
        "loss reduce params",
        &LossReduceParams {
            n_recon: n_recon as u32,
            n_kl: n_kl as u32,
            _pad: [0; 2],
        },
    );
    let dispatch = dispatch(
        ctx,
        "loss_reduce",
        Shader::REDUCE,
        "loss_reduce",
        &[],
        &[
            Bind::Tensor(recon_partials),
            Bind::Tensor(kl_partials),
            Bind::Tensor(acc),
            Bind::Buffer(&params),
            Bind::Buffer(&step.buffer),
        ],
        [1, 1, 1],
    )?;
    Ok(LossReduce { dispatch, params })
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SumParams {
    n: u32,
    _pad: [u32; 3],
}

/// `out[0] = Σ values[..n]`, in a fixed order (a scalar parameter's gradient from per-workgroup
/// partials).
pub fn sum_to(ctx: &GpuContext, values: &GpuTensor, n: usize, out: &GpuTensor) -> Result<Dispatch> {
    if values.len() < n || out.is_empty() {
        return Err(Error::shape(
            "sum_to",
            format!("{n} of {:?} into {:?}", values.shape, out.shape),
        ));
    }
    let params = uniform(
        ctx,
        "sum params",
        &SumParams {
            n: n as u32,
            _pad: [0; 3],
        },
    );
    dispatch(
        ctx,
        "sum_to",
        Shader::REDUCE,
        "sum_to",
        &[],
        &[
            Bind::Tensor(values),
            Bind::Tensor(out),
            Bind::Buffer(&params),
        ],
        [1, 1, 1],
    )
}

/// After `loss_reduce`: the batch's objective becomes `Σ values[..n]` (per-image objectives, the
/// IWAE bound's) in the objective slots, the epoch's adjusted to match.
pub fn objective_reduce(
    ctx: &GpuContext,
    values: &GpuTensor,
    n: usize,
    acc: &GpuTensor,
) -> Result<Dispatch> {
    if values.len() < n || acc.shape != [LossSlots::LEN] {
        return Err(Error::shape(
            "objective_reduce",
            format!(
                "{n} of {:?} into an accumulator {:?}",
                values.shape, acc.shape
            ),
        ));
    }
    let params = uniform(
        ctx,
        "objective params",
        &SumParams {
            n: n as u32,
            _pad: [0; 3],
        },
    );
    dispatch(
        ctx,
        "objective_reduce",
        Shader::REDUCE,
        "objective_reduce",
        &[],
        &[
            Bind::Tensor(values),
            Bind::Tensor(acc),
            Bind::Buffer(&params),
        ],
        [1, 1, 1],
    )
}

/// This module's uniform structs, as `kernels::contracts` checks them against `Shader::REDUCE`.
#[cfg(test)]
pub(crate) const UNIFORMS: &[crate::kernels::UniformLayout] = &[
    uniform_layout!(LossReduceParams, n_recon, n_kl),
    uniform_layout!(SumParams, n),
];
