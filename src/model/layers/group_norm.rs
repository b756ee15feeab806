//! `GroupNorm` (PyTorch's `nn.GroupNorm(groups, C, eps, affine=True)`, weight γ and bias β of
//! `[C]`), with diffusers' SiLU after it fused when [`NormGeom::silu`]: each image's and group's
//! statistics, then `y = silu((x − mean)·rstd·γ + β)`. GPU plans (`kernels::group_norm`) and their
//! f64 CPU twins side by side; the backward reads as the forward in reverse. The forward keeps its
//! statistics for the backward in [`LayerScratch`]; the backward recomputes the SiLU's input
//! from them, so the gradient it is given is the SiLU output's (the layer's activation is
//! `Identity` to the graph: its SiLU is inside it).

use super::{CpuGrads, Init, Layer, LayerScratch, LayerViews, ParamDecl};
use crate::cpu::ops;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuTensor};
use crate::kernels::{Dispatch, group_norm};
use crate::ops::{Act, GroupNormShape};

/// A GroupNorm's geometry: `[C, H, W]` images in `groups` groups of channels, its ε (as bits, so
/// the kind stays `Eq` and `Hash`), and whether diffusers' SiLU follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NormGeom {
    pub image: [usize; 3],
    pub groups: usize,
    eps_bits: u32,
    pub silu: bool,
}

impl NormGeom {
    pub fn new(image: [usize; 3], groups: usize, eps: f32, silu: bool) -> Self {
        NormGeom {
            image,
            groups,
            eps_bits: eps.to_bits(),
            silu,
        }
    }

    pub fn eps(&self) -> f32 {
        f32::from_bits(self.eps_bits)
    }

    /// The kernels' shape on `rows` images.
    pub fn shape(&self, rows: usize) -> GroupNormShape {
        let [c, h, w] = self.image;
        GroupNormShape {
            batch: rows,
            channels: c,
            groups: self.groups,
            plane: h * w,
            eps: self.eps(),
        }
    }
}

/// `weight` γ (ones) and `bias` β (zeros), `[C]` each, as `nn.GroupNorm` starts them.
pub fn params(g: &NormGeom) -> Vec<ParamDecl> {
    let c = g.image[0];
    vec![
        ParamDecl {
            suffix: "weight",
            shape: vec![c],
            init: Init::Ones,
        },
        ParamDecl {
            suffix: "bias",
            shape: vec![c],
            init: Init::Zeros,
        },
    ]
}

/// The statistics' buffer of layer `l` on `rows` images.
fn stats(l: &Layer, g: &NormGeom, rows: usize, scratch: &LayerScratch) -> Result<GpuTensor> {
    scratch.norm_stats(&l.name, 2 * g.shape(rows).stats_rows())
}

/// Forward: the statistics (kept for the backward), then the normalised, scaled and shifted
/// values (SiLU fused).
pub fn forward(
    ctx: &GpuContext,
    l: &Layer,
    g: &NormGeom,
    v: &LayerViews,
    x: &GpuTensor,
    y: &GpuTensor,
    scratch: &LayerScratch,
) -> Result<Vec<Dispatch>> {
    let rows = x.shape[0];
    let st = stats(l, g, rows, scratch)?;
    group_norm::forward(ctx, &g.shape(rows), g.silu, x, &v.w, &v.b, &st, y)
}

/// Backward from the output's gradient `dy`: dγ and dβ, then, if asked, the input gradient. The
/// input must be a tensor no activation produced (in diffusers' blocks a norm reads a
/// convolution's or a residual sum's output).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    ctx: &GpuContext,
    l: &Layer,
    g: &NormGeom,
    v: &LayerViews,
    dy: &GpuTensor,
    x: &GpuTensor,
    dx: Option<(&GpuTensor, Option<Act>)>,
    scratch: &LayerScratch,
) -> Result<Vec<Dispatch>> {
    if let Some((_, Some(act))) = dx
        && act != Act::Identity
    {
        return Err(Error::Config(format!(
            "{} reads a tensor that {act} produced; a GroupNorm's input must be a layer's \
             output without an activation",
            l.describe()
        )));
    }
    let rows = x.shape[0];
    let s = g.shape(rows);
    let st = stats(l, g, rows, scratch)?;
    let sums = scratch.norm_sums.view(0, &[2 * s.stats_rows()])?;
    let params = (&v.w, &v.b);
    let grads = (&v.dw, &v.db);
    group_norm::backward(
        ctx,
        &s,
        g.silu,
        dy,
        x,
        params,
        &st,
        &sums,
        dx.map(|(t, _)| t),
        grads,
    )
}

/// The CPU twin of [`forward`].
pub fn cpu_forward(g: &NormGeom, gamma: &[f64], beta: &[f64], x: &[f64], rows: usize) -> Vec<f64> {
    ops::group_norm_forward(&g.shape(rows), g.silu, x, gamma, beta).0
}

/// The CPU twin of [`backward`] (its statistics recomputed from `x`).
pub fn cpu_backward(
    g: &NormGeom,
    (gamma, beta): (&[f64], &[f64]),
    dy: &[f64],
    x: &[f64],
    rows: usize,
    want_dx: bool,
) -> CpuGrads {
    let s = g.shape(rows);
    let (_, stats) = ops::group_norm_forward(&s, g.silu, x, gamma, beta);
    let (dx, dw, db) = ops::group_norm_backward(&s, g.silu, dy, x, (gamma, beta), &stats);
    CpuGrads {
        dw,
        db,
        dlabels: None,
        dx: want_dx.then_some(dx),
    }
}
