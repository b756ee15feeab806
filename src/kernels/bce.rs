//! BCE-with-logits forward and backward in one pass — launcher for `shaders/bce.wgsl`.

use super::{Bind, Dispatch, dispatch, expect_2d, grid_1d, grid_1d_groups, uniform};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuTensor, Shader};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BceParams {
    n: u32,
    n_target: u32,
    scale: f32,
    _pad: u32,
}

/// Elements per thread (`ITEMS` in bce.wgsl).
const ITEMS: usize = 8;

/// How many partial sums the BCE kernel writes for `logits_len` logits.
pub fn partials_len(logits_len: usize) -> usize {
    grid_1d_groups(logits_len.div_ceil(ITEMS))
}

/// `dlogits = (σ(l) - x) / L` and per-workgroup partial sums of the BCE (divided by L) into
/// `partials[..partials_len(L·B·D)]`. logits and dlogits are `[L·B, D]`, targets `[B, D]`.
pub fn bce_forward_backward(
    ctx: &GpuContext,
    logits: &GpuTensor,
    target: &GpuTensor,
    dlogits: &GpuTensor,
    partials: &GpuTensor,
) -> Result<Dispatch> {
    const OP: &str = "bce_forward_backward";
    let (rows, d) = expect_2d(OP, "logits", logits)?;
    let (b, td) = expect_2d(OP, "target", target)?;
    if td != d || rows % b != 0 || dlogits.shape != logits.shape {
        return Err(Error::shape(
            OP,
            format!(
                "logits {:?}, target {:?}, dlogits {:?}: need logits [L·B, D], target [B, D], dlogits like logits",
                logits.shape, target.shape, dlogits.shape
            ),
        ));
    }
    let n = rows * d;
    if partials.len() < partials_len(n) {
        return Err(Error::shape(
            OP,
            format!("{} partials, need {}", partials.len(), partials_len(n)),
        ));
    }
    let samples = rows / b;
    let params = uniform(
        ctx,
        "bce params",
        &BceParams {
            n: n as u32,
            n_target: (b * d) as u32,
            scale: 1.0 / samples as f32,
            _pad: 0,
        },
    );
    dispatch(
        ctx,
        OP,
        Shader::BCE,
        OP,
        &[],
        &[
            Bind::Tensor(logits),
            Bind::Tensor(target),
            Bind::Tensor(dlogits),
            Bind::Tensor(partials),
            Bind::Buffer(&params),
        ],
        grid_1d(n.div_ceil(ITEMS)),
    )
}

/// This module's uniform structs, as `kernels::contracts` checks them against `Shader::BCE`.
#[cfg(test)]
pub(crate) const UNIFORMS: &[crate::kernels::UniformLayout] =
    &[uniform_layout!(BceParams, n, n_target, scale)];
