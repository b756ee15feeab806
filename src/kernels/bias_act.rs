//! Bias + activation — the launcher for `shaders/bias_act.wgsl`, evaluation's standalone sigmoid.
//! Training fuses bias and activation into the products' epilogues (and their backward, and the
//! bias gradient as row sums, into the gradient products'): see `kernels::matmul::Epilogue`.

use super::{Bind, Dispatch, dispatch, expect_2d, grid_1d, uniform};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuTensor, Shader};
use crate::ops::Act;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ActParams {
    rows: u32,
    cols: u32,
    _pad: [u32; 2],
}

/// In place: `y = act(y + bias)`, y `[rows, cols]`, bias `[cols]`.
pub fn act_forward(
    ctx: &GpuContext,
    y: &GpuTensor,
    bias: Option<&GpuTensor>,
    act: Act,
) -> Result<Dispatch> {
    let (rows, cols) = expect_2d("act_forward", "y", y)?;
    if let Some(b) = bias
        && b.shape != [cols]
    {
        return Err(Error::shape(
            "act_forward",
            format!("bias {:?} for y {:?}", b.shape, y.shape),
        ));
    }
    let params = uniform(
        ctx,
        "act params",
        &ActParams {
            rows: rows as u32,
            cols: cols as u32,
            _pad: [0; 2],
        },
    );
    let aux = match bias {
        Some(b) => Bind::Tensor(b),
        None => Bind::Buffer(&ctx.dummy),
    };
    dispatch(
        ctx,
        "act_forward",
        Shader::BIAS_ACT,
        "act_forward",
        &[
            ("ACT", act.code() as f64),
            ("HAS_BIAS", bias.is_some() as u32 as f64),
        ],
        &[Bind::Tensor(y), aux, Bind::Buffer(&params)],
        grid_1d(rows * cols),
    )
}

/// This module's uniform structs, as `kernels::contracts` checks them against `Shader::BIAS_ACT`.
#[cfg(test)]
pub(crate) const UNIFORMS: &[crate::kernels::UniformLayout] =
    &[uniform_layout!(ActParams, rows, cols)];
