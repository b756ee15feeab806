//! Loss reduction — launcher for `shaders/reduce.wgsl`.

use super::{Bind, Dispatch, dispatch, uniform};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuTensor, Shader};

/// Slots of the f32 loss accumulator that `loss_reduce` writes (mirrors `SLOT_*` in reduce.wgsl).
pub struct LossSlots;

impl LossSlots {
    pub const EPOCH_TOTAL: usize = 0;
    pub const BATCH_TOTAL: usize = 1;
    pub const BATCH_BCE: usize = 2;
    pub const BATCH_KL: usize = 3;
    pub const EPOCH_BCE: usize = 4;
    pub const EPOCH_KL: usize = 5;
    /// Set to 1 once any batch loss was NaN or infinite.
    pub const NONFINITE: usize = 6;
    pub const BATCHES: usize = 7;
    pub const LEN: usize = 8;
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LossReduceParams {
    n_bce: u32,
    n_kl: u32,
    _pad: [u32; 2],
}

/// Sum `bce_partials[..n_bce]` and `kl_partials[..n_kl]` into the accumulator's slots.
pub fn loss_reduce(
    ctx: &GpuContext,
    bce_partials: &GpuTensor,
    n_bce: usize,
    kl_partials: &GpuTensor,
    n_kl: usize,
    acc: &GpuTensor,
) -> Result<Dispatch> {
    Ok(loss_reduce_with_params(ctx, bce_partials, n_bce, kl_partials, n_kl, acc)?.dispatch)
}

/// A planned loss reduction and its uniform buffer, whose first u32 is the count of BCE partials
/// it adds: a plan that lets another runtime choose the logits product's kernel writes that
/// kernel's count there (see `GpuVae::plan_step`).
pub struct LossReduce {
    pub dispatch: Dispatch,
    pub params: wgpu::Buffer,
}

/// [`loss_reduce`], handing back its uniform buffer too.
pub fn loss_reduce_with_params(
    ctx: &GpuContext,
    bce_partials: &GpuTensor,
    n_bce: usize,
    kl_partials: &GpuTensor,
    n_kl: usize,
    acc: &GpuTensor,
) -> Result<LossReduce> {
    if bce_partials.len() < n_bce || kl_partials.len() < n_kl {
        return Err(Error::shape(
            "loss_reduce",
            format!(
                "{} BCE and {} KL partials, but {n_bce} and {n_kl} were asked for",
                bce_partials.len(),
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
            n_bce: n_bce as u32,
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
            Bind::Tensor(bce_partials),
            Bind::Tensor(kl_partials),
            Bind::Tensor(acc),
            Bind::Buffer(&params),
        ],
        [1, 1, 1],
    )?;
    Ok(LossReduce { dispatch, params })
}

/// This module's uniform structs, as `kernels::contracts` checks them against `Shader::REDUCE`.
#[cfg(test)]
pub(crate) const UNIFORMS: &[crate::kernels::UniformLayout] =
    &[uniform_layout!(LossReduceParams, n_bce, n_kl)];
