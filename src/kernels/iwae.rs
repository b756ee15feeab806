//! The importance-weighted bound — launcher for `shaders/iwae.wgsl`.

use super::step::StepUniform;
use super::{Bind, Dispatch, dispatch, expect_2d, uniform};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuTensor, Shader};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct IwaeParams {
    batch: u32,
    latent: u32,
    samples: u32,
    _pad: u32,
}

/// `nll[step.batch_offset + b] = -(logsumexp_l log w_l - log L)` for each of the B images.
#[allow(clippy::too_many_arguments)]
pub fn iwae_estimate(
    ctx: &GpuContext,
    rowloss: &GpuTensor,
    z: &GpuTensor,
    eps: &GpuTensor,
    heads: &GpuTensor,
    nll: &GpuTensor,
    step: &StepUniform,
) -> Result<Dispatch> {
    const OP: &str = "iwae_estimate";
    let (b, k2) = expect_2d(OP, "heads", heads)?;
    let (rows, k) = expect_2d(OP, "z", z)?;
    if k2 != 2 * k || b == 0 || rows % b != 0 || eps.shape != z.shape || rowloss.len() < rows {
        return Err(Error::shape(
            OP,
            format!(
                "rowloss {:?}, z {:?}, eps {:?}, heads {:?}: need z = eps = [L·B, K], heads [B, 2K] (mu | logvar), rowloss ≥ L·B",
                rowloss.shape, z.shape, eps.shape, heads.shape
            ),
        ));
    }
    let params = uniform(
        ctx,
        "iwae params",
        &IwaeParams {
            batch: b as u32,
            latent: k as u32,
            samples: (rows / b) as u32,
            _pad: 0,
        },
    );
    dispatch(
        ctx,
        OP,
        Shader::IWAE,
        OP,
        &[],
        &[
            Bind::Tensor(rowloss),
            Bind::Tensor(z),
            Bind::Tensor(eps),
            Bind::Tensor(heads),
            Bind::Tensor(nll),
            Bind::Buffer(&params),
            Bind::Buffer(&step.buffer),
        ],
        [b.div_ceil(64) as u32, 1, 1],
    )
}

/// The IWAE objective's weights: for each of the B images, `weights[l·B + b]` = the softmax over
/// its L samples of log w_l, and `obj[b] = -(logsumexp_l log w_l - log L)` (its share of the
/// objective: [`crate::kernels::reduce::objective_reduce`] sums them).
#[allow(clippy::too_many_arguments)]
pub fn iwae_weights(
    ctx: &GpuContext,
    rowloss: &GpuTensor,
    z: &GpuTensor,
    eps: &GpuTensor,
    heads: &GpuTensor,
    weights: &GpuTensor,
    obj: &GpuTensor,
) -> Result<Dispatch> {
    const OP: &str = "iwae_weights";
    let (b, k2) = expect_2d(OP, "heads", heads)?;
    let (rows, k) = expect_2d(OP, "z", z)?;
    if k2 != 2 * k
        || b == 0
        || rows % b != 0
        || eps.shape != z.shape
        || rowloss.len() < rows
        || weights.len() < rows
        || obj.len() < b
    {
        return Err(Error::shape(
            OP,
            format!(
                "rowloss {:?}, z {:?}, eps {:?}, heads {:?}, weights {:?}, obj {:?}: need z = eps = [L·B, K], heads [B, 2K], rowloss and weights ≥ L·B, obj ≥ B",
                rowloss.shape, z.shape, eps.shape, heads.shape, weights.shape, obj.shape
            ),
        ));
    }
    let params = uniform(
        ctx,
        "iwae params",
        &IwaeParams {
            batch: b as u32,
            latent: k as u32,
            samples: (rows / b) as u32,
            _pad: 0,
        },
    );
    dispatch(
        ctx,
        OP,
        Shader::IWAE,
        OP,
        &[],
        &[
            Bind::Tensor(rowloss),
            Bind::Tensor(z),
            Bind::Tensor(eps),
            Bind::Tensor(heads),
            Bind::Tensor(weights),
            Bind::Buffer(&params),
            Bind::Tensor(obj),
        ],
        [b.div_ceil(64) as u32, 1, 1],
    )
}

/// This module's uniform structs, as `kernels::contracts` checks them against `Shader::IWAE`.
#[cfg(test)]
pub(crate) const UNIFORMS: &[crate::kernels::UniformLayout] =
    &[uniform_layout!(IwaeParams, batch, latent, samples)];
