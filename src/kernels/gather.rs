//! Batch gather from the GPU-resident data set — launcher for `shaders/gather.wgsl`.

use super::step::StepUniform;
use super::{Bind, Dispatch, dispatch, expect_2d, grid_1d, uniform};
use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext, GpuTensor, Shader};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GatherParams {
    batch: u32,
    dim: u32,
    _pad: [u32; 2],
}

/// `x[b] = pixels[index[step.batch_offset + b]] / 255` for every row b of `x` `[B, D]` (`signed`:
/// then `(v − 0.5)/0.5`, in [−1, 1], as an AutoencoderKL reads pixels); `pixels` is `[N, D]` u8,
/// `index` a u32 list of positions in `0..N`.
pub fn gather_batch(
    ctx: &GpuContext,
    pixels: &GpuTensor,
    index: &GpuTensor,
    x: &GpuTensor,
    step: &StepUniform,
    signed: bool,
) -> Result<Dispatch> {
    const OP: &str = "gather_batch";
    let (_, d) = expect_2d(OP, "pixels", pixels)?;
    let (b, xd) = expect_2d(OP, "x", x)?;
    if pixels.dtype != DType::U8 || index.dtype != DType::U32 || xd != d || index.len() < b {
        return Err(Error::shape(
            OP,
            format!(
                "pixels {:?} {:?}, index {:?} {:?}, x {:?}: need u8 pixels [N, D], u32 index of at least B, x [B, D]",
                pixels.shape, pixels.dtype, index.shape, index.dtype, x.shape
            ),
        ));
    }
    let params = uniform(
        ctx,
        "gather params",
        &GatherParams {
            batch: b as u32,
            dim: d as u32,
            _pad: [0; 2],
        },
    );
    dispatch(
        ctx,
        OP,
        Shader::GATHER,
        OP,
        // Set only when on: every other model plans the dispatch it always did.
        if signed { &[("SIGNED", 1.0)] } else { &[] },
        &[
            Bind::Tensor(pixels),
            Bind::Tensor(index),
            Bind::Tensor(x),
            Bind::Buffer(&params),
            Bind::Buffer(&step.buffer),
        ],
        grid_1d((b * d).div_ceil(4)),
    )
}

/// This module's uniform structs, as `kernels::contracts` checks them against `Shader::GATHER`.
#[cfg(test)]
pub(crate) const UNIFORMS: &[crate::kernels::UniformLayout] =
    &[uniform_layout!(GatherParams, batch, dim)];
