//! The attention of diffusers' mid block (`Attention`, one head of all `C` channels, over the
//! `h·w` positions of each image) between its projections — launchers for
//! `shaders/attention.wgsl` and the plans of the whole core, forward and backward. The tensors
//! are the engine's `[rows, C·h·w]` (NCHW), so an image's q, k, v are `[C, n]` matrices
//! (n = h·w); the products are batched over the images (`bmm`):
//!
//! ```text
//! forward:  S = qᵀ·k   P = softmax(S/√C) by rows   o = v·Pᵀ
//! backward: dv = do·P  dP = doᵀ·v   dS = P ⊙ (dP − rowsum(dP ⊙ P))/√C   dq = k·dSᵀ   dk = q·dS
//! ```
//!
//! `P` (`[rows·n, n]`) is kept from the forward for the backward; `dP` and `dS` share one scratch.

use super::{Bind, Dispatch, dispatch, uniform};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuTensor, Shader};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SoftmaxParams {
    rows: u32,
    n: u32,
    scale: f32,
    _pad: u32,
}

/// A thread per item in workgroups of 64, spilling into y past 65535 workgroups.
fn grid_64(items: usize) -> [u32; 3] {
    let groups = items.div_ceil(64).max(1);
    let y = groups.div_ceil(65535);
    [groups.div_ceil(y) as u32, y as u32, 1]
}

fn params(ctx: &GpuContext, op: &str, t: &GpuTensor, n: usize, scale: f32) -> Result<wgpu::Buffer> {
    if n == 0 || !t.len().is_multiple_of(n) || t.len() > u32::MAX as usize {
        return Err(Error::shape(
            "attention",
            format!("{op}: {:?} is not rows of {n} scores", t.shape),
        ));
    }
    Ok(uniform(
        ctx,
        "softmax params",
        &SoftmaxParams {
            rows: (t.len() / n) as u32,
            n: n as u32,
            scale,
            _pad: 0,
        },
    ))
}

/// `s` (rows of `n` scores) becomes `softmax(scale·s)` by rows, in place.
pub fn softmax_rows(ctx: &GpuContext, s: &GpuTensor, n: usize, scale: f32) -> Result<Dispatch> {
    let p = params(ctx, "softmax_rows", s, n, scale)?;
    dispatch(
        ctx,
        "softmax_rows",
        Shader::ATTENTION,
        "softmax_rows",
        &[],
        &[Bind::Tensor(s), Bind::Buffer(&p)],
        grid_64(s.len() / n),
    )
}

/// `g` (the probabilities' gradient, rows of `n`) becomes the scores' gradient, in place:
/// `scale·p ⊙ (g − rowsum(g ⊙ p))`.
pub fn softmax_rows_grad(
    ctx: &GpuContext,
    g: &GpuTensor,
    p: &GpuTensor,
    n: usize,
    scale: f32,
) -> Result<Dispatch> {
    let u = params(ctx, "softmax_rows_grad", g, n, scale)?;
    if p.len() != g.len() {
        return Err(Error::shape(
            "attention",
            format!("softmax_rows_grad: p {:?} for g {:?}", p.shape, g.shape),
        ));
    }
    dispatch(
        ctx,
        "softmax_rows_grad",
        Shader::ATTENTION,
        "softmax_rows_grad",
        &[],
        &[Bind::Tensor(g), Bind::Tensor(p), Bind::Buffer(&u)],
        grid_64(g.len() / n),
    )
}

/// The core's geometry: `[C, h, w]` images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttnShape {
    pub image: [usize; 3],
}

impl AttnShape {
    /// Positions per image, n = h·w.
    pub fn positions(&self) -> usize {
        self.image[1] * self.image[2]
    }

    /// diffusers' scale of the scores, 1/√(head dim) with one head of C channels.
    pub fn scale(&self) -> f32 {
        1.0 / (self.image[0] as f32).sqrt()
    }

    /// Values of `P` for `rows` images.
    pub fn probs_len(&self, rows: usize) -> usize {
        rows * self.positions() * self.positions()
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BmmParams {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
}

/// `c[b] = op(a[b])·op(b[b])` for every image b of `batch`: `c[b]` `[m, n]`; `a[b]` `[m, k]`, or
/// `[k, m]` with `a_t`; `b[b]` `[k, n]`, or `[n, k]` with `b_t`; each image's matrices contiguous.
pub fn bmm(
    ctx: &GpuContext,
    (a, a_t): (&GpuTensor, bool),
    (b, b_t): (&GpuTensor, bool),
    c: &GpuTensor,
    [m, n, k]: [usize; 3],
    batch: usize,
) -> Result<Dispatch> {
    let fits = |t: &GpuTensor, per: usize| t.len() == batch * per;
    if !(fits(a, m * k) && fits(b, k * n) && fits(c, m * n))
        || [m, n, k, batch].contains(&0)
        || c.len().max(a.len()).max(b.len()) > u32::MAX as usize
    {
        return Err(Error::shape(
            "bmm",
            format!(
                "a {:?}, b {:?}, c {:?} are not {batch} products of [{m}, {k}]·[{k}, {n}]",
                a.shape, b.shape, c.shape
            ),
        ));
    }
    let p = uniform(
        ctx,
        "bmm params",
        &BmmParams {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            batch: batch as u32,
        },
    );
    dispatch(
        ctx,
        "bmm",
        Shader::ATTENTION,
        "bmm",
        &[("A_T", a_t as u32 as f64), ("B_T", b_t as u32 as f64)],
        &[
            Bind::Tensor(a),
            Bind::Tensor(b),
            Bind::Tensor(c),
            Bind::Buffer(&p),
        ],
        grid_64(batch * m.div_ceil(4) * n.div_ceil(4)),
    )
}

fn rows_of(t: &GpuTensor, s: &AttnShape) -> usize {
    t.len() / (s.image.iter().product::<usize>()).max(1)
}

/// The forward: `o` from `q`, `k`, `v` (`[rows, C·n]` each), keeping `P` in `probs`.
pub fn forward(
    ctx: &GpuContext,
    s: &AttnShape,
    (q, k, v): (&GpuTensor, &GpuTensor, &GpuTensor),
    probs: &GpuTensor,
    o: &GpuTensor,
) -> Result<Vec<Dispatch>> {
    let rows = rows_of(q, s);
    let (c, n) = (s.image[0], s.positions());
    let p = probs.view(0, &[s.probs_len(rows)])?;
    Ok(vec![
        // S = qᵀ·k: [n, n] over C.
        bmm(ctx, (q, true), (k, false), &p, [n, n, c], rows)?,
        softmax_rows(ctx, &p, n, s.scale())?,
        // o = v·Pᵀ: [C, n] over the keys.
        bmm(ctx, (v, false), (&p, true), o, [c, n, n], rows)?,
    ])
}

/// The backward from `dout`: `dq`, `dk`, `dv` (each written), with `P` from the forward and
/// `scratch` (as large as `P`) for dP, then dS.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    ctx: &GpuContext,
    s: &AttnShape,
    (q, k, v): (&GpuTensor, &GpuTensor, &GpuTensor),
    probs: &GpuTensor,
    dout: &GpuTensor,
    scratch: &GpuTensor,
    (dq, dk, dv): (&GpuTensor, &GpuTensor, &GpuTensor),
) -> Result<Vec<Dispatch>> {
    let rows = rows_of(q, s);
    let (c, n) = (s.image[0], s.positions());
    let p = probs.view(0, &[s.probs_len(rows)])?;
    let g = scratch.view(0, &[s.probs_len(rows)])?;
    Ok(vec![
        // dv = do·P, dP = doᵀ·v, dS from dP in place, dq = k·dSᵀ, dk = q·dS.
        bmm(ctx, (dout, false), (&p, false), dv, [c, n, n], rows)?,
        bmm(ctx, (dout, true), (v, false), &g, [n, n, c], rows)?,
        softmax_rows_grad(ctx, &g, &p, n, s.scale())?,
        bmm(ctx, (k, false), (&g, true), dq, [c, n, n], rows)?,
        bmm(ctx, (q, false), (&g, false), dk, [c, n, n], rows)?,
    ])
}

/// This module's uniform structs, as `kernels::contracts` checks them against `Shader::ATTENTION`.
#[cfg(test)]
pub(crate) const UNIFORMS: &[crate::kernels::UniformLayout] = &[
    uniform_layout!(SoftmaxParams, rows, n, scale),
    uniform_layout!(BmmParams, m, n, k, batch),
];
