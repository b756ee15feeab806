//! `Conv2d` and `ConvTranspose2d` (PyTorch's `nn.Conv2d`, weight `[c_out, c_in, k, k]`, and
//! `nn.ConvTranspose2d`, weight `[c_in, c_out, k, k]`): one kernel family for both, seen from its
//! lo side (a Conv2d's output, a ConvTranspose2d's input) and its hi side. The forward of one is
//! the input gradient of the other. GPU plans (each pass by its measured formulation: a direct
//! kernel, or im2col + a tuned product + a layout kernel using the scratch) and their f64 CPU
//! twins, side by side.

use super::{ConvGeom, CpuGrads, Layer, LayerViews, ParamDecl};
use crate::cpu::ops;
use crate::error::Result;
use crate::gpu::{GpuContext, GpuTensor};
use crate::kernels::Dispatch;
use crate::kernels::conv::{
    BiasSide, ConvEpilogue, ConvPass, ConvScratch, plan_pass_tuned, plan_weight_grad_tuned,
};
use crate::ops::{Act, ConvShape};

/// `weight` (see [`weight_shape`]) and `bias [c_out]`, both U(±1/√fan_in) as `nn.Conv2d`'s and
/// `nn.ConvTranspose2d`'s.
pub fn params(l: &Layer) -> Vec<ParamDecl> {
    l.fan_in_weight_and_bias()
}

/// The weight's shape: `[c_out, c_in, k, k]`, transposed `[c_in, c_out, k, k]`.
pub fn weight_shape(g: &ConvGeom, transposed: bool) -> Vec<usize> {
    let (a, b) = if transposed {
        (g.input[0], g.output[0])
    } else {
        (g.output[0], g.input[0])
    };
    vec![a, b, g.kernel, g.kernel]
}

/// Multiply-adds of the forward pass per image: each output pixel of a Conv2d takes a window of
/// every input channel; each input pixel of a transposed convolution is spread over a window.
pub fn macs_per_row(g: &ConvGeom, transposed: bool, weight_len: u64) -> u64 {
    let s = if transposed { g.input } else { g.output };
    weight_len * (s[1] * s[2]) as u64
}

/// Forward, bias and activation fused: a Conv2d writes its lo side (`to_lo`), a ConvTranspose2d
/// its hi side (`to_hi`).
#[allow(clippy::too_many_arguments)]
pub fn forward(
    ctx: &GpuContext,
    shape: &ConvShape,
    transposed: bool,
    v: &LayerViews,
    x: &GpuTensor,
    y: &GpuTensor,
    act: Act,
    scratch: &ConvScratch,
) -> Result<Vec<Dispatch>> {
    let epi = ConvEpilogue {
        bias: Some(&v.b),
        act,
        act_grad: None,
    };
    let pass = if transposed {
        ConvPass::ToHi
    } else {
        ConvPass::ToLo
    };
    plan_pass_tuned(ctx, pass, shape, x, &v.w, y, epi, scratch)
}

/// Backward: the weight gradient of (lo, hi) with the bias gradient (the channel sums of dy)
/// fused, then, if asked, the input gradient by the other pass than the forward, the activation
/// that produced `x` fused.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    ctx: &GpuContext,
    shape: &ConvShape,
    transposed: bool,
    v: &LayerViews,
    dy: &GpuTensor,
    x: &GpuTensor,
    dx: Option<(&GpuTensor, Option<Act>)>,
    scratch: &ConvScratch,
) -> Result<Vec<Dispatch>> {
    let (lo, hi, side, dx_pass) = if transposed {
        (x, dy, BiasSide::Hi, ConvPass::ToLo)
    } else {
        (dy, x, BiasSide::Lo, ConvPass::ToHi)
    };
    let db = Some((&v.db, side));
    let mut d = plan_weight_grad_tuned(ctx, shape, lo, hi, &v.dw, db, scratch)?;
    if let Some((dx, act)) = dx {
        let epi = ConvEpilogue {
            // Identity's derivative is 1: no epilogue (the kernels have none for it).
            act_grad: act.filter(|&a| a != Act::Identity).map(|a| (a, x)),
            ..ConvEpilogue::NONE
        };
        d.extend(plan_pass_tuned(
            ctx, dx_pass, shape, dy, &v.w, dx, epi, scratch,
        )?);
    }
    Ok(d)
}

/// The CPU twin of [`forward`].
pub fn cpu_forward(
    d: &ConvShape,
    transposed: bool,
    w: &[f64],
    b: &[f64],
    x: &[f64],
    act: Act,
) -> Vec<f64> {
    let (pre, out) = if transposed {
        (ops::conv_to_hi(d, x, w), d.hi)
    } else {
        (ops::conv_to_lo(d, x, w), d.lo)
    };
    ops::conv_epilogue(&pre, out[0], out[1] * out[2], Some(b), act)
}

/// The CPU twin of [`backward`]: the weight and bias gradients, and the input gradient before the
/// activation's backward when `want_dx`.
pub fn cpu_backward(
    d: &ConvShape,
    transposed: bool,
    w: &[f64],
    dy: &[f64],
    x: &[f64],
    want_dx: bool,
) -> CpuGrads {
    let (lo, hi, out) = if transposed {
        (x, dy, d.hi)
    } else {
        (dy, x, d.lo)
    };
    CpuGrads {
        dw: ops::conv_weight_grad(d, lo, hi),
        db: ops::channel_sums(dy, out[0], out[1] * out[2]),
        dlabels: None,
        dx: want_dx.then(|| {
            if transposed {
                ops::conv_to_lo(d, dy, w)
            } else {
                ops::conv_to_hi(d, dy, w)
            }
        }),
    }
}
