//! Gradient clipping by the global norm (`torch.nn.utils.clip_grad_norm_` over every parameter) —
//! launcher for `shaders/clip_grad.wgsl`: two dispatches, the sums of squares per workgroup, then
//! the scaling (each workgroup adding the partials in one fixed order). Nothing is read back.

use super::{Bind, Dispatch, dispatch, grid_1d, uniform};
use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext, GpuTensor, Shader};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ClipParams {
    n4: u32,
    groups: u32,
    max_norm: f32,
    _pad: u32,
}

/// Workgroups of the sums of squares (and so partials): at most one per 256 vec4s, at most 256.
fn groups(n: usize) -> usize {
    (n / 4).div_ceil(256).clamp(1, 256)
}

/// Scratch for the partial sums of [`clip_grad_norm`] over an arena of `n` values.
pub fn partials(ctx: &GpuContext, n: usize) -> Result<GpuTensor> {
    ctx.zeros("clip_grad partials", &[groups(n)], DType::F32)
}

/// Scale `grads` (length a multiple of 4) in place by `min(1, max_norm / (‖grads‖₂ + 1e-6))`.
pub fn clip_grad_norm(
    ctx: &GpuContext,
    grads: &GpuTensor,
    partials: &GpuTensor,
    max_norm: f32,
) -> Result<Vec<Dispatch>> {
    let n = grads.len();
    let g = groups(n);
    if !n.is_multiple_of(4) || partials.len() < g {
        return Err(Error::shape(
            "clip_grad_norm",
            format!(
                "{n} gradients (a multiple of 4 needed), {} partials for {g} workgroups",
                partials.len()
            ),
        ));
    }
    let p = uniform(
        ctx,
        "clip_grad params",
        &ClipParams {
            n4: (n / 4) as u32,
            groups: g as u32,
            max_norm,
            _pad: 0,
        },
    );
    let binds = [
        Bind::Tensor(grads),
        Bind::Tensor(partials),
        Bind::Buffer(&p),
    ];
    Ok(vec![
        dispatch(
            ctx,
            "grad_sq_partials",
            Shader::CLIP_GRAD,
            "grad_sq_partials",
            &[],
            &binds,
            [g as u32, 1, 1],
        )?,
        dispatch(
            ctx,
            "clip_grads",
            Shader::CLIP_GRAD,
            "clip_grads",
            &[],
            &binds,
            grid_1d(n / 4),
        )?,
    ])
}

/// This module's uniform structs, as `kernels::contracts` checks them against `Shader::CLIP_GRAD`.
#[cfg(test)]
pub(crate) const UNIFORMS: &[crate::kernels::UniformLayout] =
    &[uniform_layout!(ClipParams, n4, groups, max_norm)];
