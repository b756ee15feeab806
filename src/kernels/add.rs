//! The tensor operations between a model graph's layers — launcher for `shaders/add.wgsl`: a
//! residual sum with its activation (`add_act`), and a gradient passed through an activation into
//! a tensor's gradient, written or added (`grad_act`: how a tensor read by several nodes sums
//! their gradients), and diffusers' nearest-neighbour 2x upsampling with its backward
//! (`upsample_nearest`, `upsample_nearest_grad`).

use super::{Bind, Dispatch, dispatch, grid_1d, uniform};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuTensor, Shader};
use crate::ops::Act;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AddParams {
    n: u32,
    _pad: [u32; 3],
}

fn same_len(op: &'static str, ts: &[&GpuTensor]) -> Result<usize> {
    let n = ts[0].len();
    if ts.iter().any(|t| t.len() != n) {
        let shapes: Vec<_> = ts.iter().map(|t| t.shape.clone()).collect();
        return Err(Error::shape(
            op,
            format!("operands of unequal sizes {shapes:?}"),
        ));
    }
    Ok(n)
}

/// Entry point `entry` over `tensors` (bound 0.., then the uniform), a thread per value of the
/// `n` it writes.
fn launch(
    ctx: &GpuContext,
    entry: &'static str,
    constants: &[(&'static str, f64)],
    tensors: &[&GpuTensor],
    n: usize,
) -> Result<Dispatch> {
    let params = uniform(
        ctx,
        "add params",
        &AddParams {
            n: n as u32,
            _pad: [0; 3],
        },
    );
    let mut binds: Vec<Bind<'_>> = tensors.iter().map(|t| Bind::Tensor(t)).collect();
    binds.push(Bind::Buffer(&params));
    dispatch(
        ctx,
        entry,
        Shader::ADD,
        entry,
        constants,
        &binds,
        grid_1d(n),
    )
}

/// `y = act(a + b)`, all of one size.
pub fn add_act(
    ctx: &GpuContext,
    a: &GpuTensor,
    b: &GpuTensor,
    y: &GpuTensor,
    act: Act,
) -> Result<Dispatch> {
    let n = same_len("add_act", &[a, b, y])?;
    launch(ctx, "add_act", &[("ACT", act.code() as f64)], &[a, b, y], n)
}

/// `out = g ⊙ act′(h)`, or with `accumulate` `out += g ⊙ act′(h)` (`h` the output of `act`;
/// Identity passes `g` through unchanged).
pub fn grad_act(
    ctx: &GpuContext,
    g: &GpuTensor,
    h: &GpuTensor,
    out: &GpuTensor,
    act: Act,
    accumulate: bool,
) -> Result<Dispatch> {
    launch(
        ctx,
        "grad_act",
        &[
            ("ACT", act.code() as f64),
            ("ACCUMULATE", accumulate as u32 as f64),
        ],
        &[g, h, out],
        same_len("grad_act", &[g, h, out])?,
    )
}

/// Nearest-neighbour 2x of `[C, H, W]` images (`image`): `y` `[rows, C·2H·2W]` from `x`
/// `[rows, C·H·W]` (diffusers' `Upsample2D` before its convolution).
pub fn upsample_nearest(
    ctx: &GpuContext,
    x: &GpuTensor,
    y: &GpuTensor,
    image: [usize; 3],
) -> Result<Dispatch> {
    upsample(ctx, "upsample_nearest", x, y, image, true)
}

/// The backward of [`upsample_nearest`]: `dx` `[rows, C·H·W]`, each value the sum of the 2x2
/// values of `dy` it was copied to.
pub fn upsample_nearest_grad(
    ctx: &GpuContext,
    dy: &GpuTensor,
    dx: &GpuTensor,
    image: [usize; 3],
) -> Result<Dispatch> {
    upsample(ctx, "upsample_nearest_grad", dy, dx, image, false)
}

/// `src` → `dst`, one thread per value of `dst` (four times `src`'s values `forward`, a quarter
/// backward).
fn upsample(
    ctx: &GpuContext,
    entry: &'static str,
    src: &GpuTensor,
    dst: &GpuTensor,
    [c, h, w]: [usize; 3],
    forward: bool,
) -> Result<Dispatch> {
    let plane = c * h * w;
    let (src_factor, dst_factor) = if forward { (1, 4) } else { (4, 1) };
    let rows = src.len() / (plane * src_factor).max(1);
    let n = dst.len();
    if plane == 0 || src.len() != rows * plane * src_factor || n != rows * plane * dst_factor {
        return Err(Error::shape(
            entry,
            format!(
                "{:?} -> {:?} is not a 2x nearest upsampling of {c}x{h}x{w} images",
                src.shape, dst.shape
            ),
        ));
    }
    if n > u32::MAX as usize {
        return Err(Error::shape(entry, format!("{n} values exceed u32")));
    }
    let geometry = [("UP_H", h as f64), ("UP_W", w as f64)];
    launch(ctx, entry, &geometry, &[src, dst], n)
}

/// This module's uniform structs, as `kernels::contracts` checks them against `Shader::ADD`.
#[cfg(test)]
pub(crate) const UNIFORMS: &[crate::kernels::UniformLayout] = &[uniform_layout!(AddParams, n)];
