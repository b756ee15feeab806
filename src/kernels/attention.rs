//! The attention of diffusers' mid block (`Attention`, one head of all `C` channels, over the
//! `h·w` positions of each image) between its projections — launchers for
//! `shaders/attention.wgsl` and the plans of the whole core, forward and backward. The tensors
//! are the engine's `[rows, C·h·w]` (NCHW), so an image's q, k, v are `[C, n]` matrices
//! (n = h·w) and its products run on the matmul kernels, an image per dispatch:
//!
//! ```text
//! forward:  S = qᵀ·k (TN)   P = softmax(S/√C) by rows   o = v·Pᵀ (NT)
//! backward: dv = do·P (NN)  dP = doᵀ·v (TN)   dS = P ⊙ (dP − rowsum(dP ⊙ P))/√C
//!           dq = k·dSᵀ (NT) dk = q·dS (NN)
//! ```
//!
//! `P` (`[rows·n, n]`) is kept from the forward for the backward; `dP` and `dS` share one scratch.

use super::matmul::{Epilogue, matmul};
use super::{Bind, Dispatch, dispatch, uniform};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuTensor, Shader};
use crate::ops::Layout;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SoftmaxParams {
    rows: u32,
    n: u32,
    scale: f32,
    _pad: u32,
}

/// One workgroup per row, spilling into y past 65535.
fn row_grid(rows: usize) -> [u32; 3] {
    let y = rows.div_ceil(65535).max(1);
    [rows.div_ceil(y) as u32, y as u32, 1]
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
        row_grid(s.len() / n),
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
        row_grid(g.len() / n),
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

/// Image `b`'s `[C, n]` matrix of an activation.
fn image(t: &GpuTensor, s: &AttnShape, b: usize) -> Result<GpuTensor> {
    let (c, n) = (s.image[0], s.positions());
    t.view(b * c * n, &[c, n]).map_err(|_| aligned_error(s))
}

/// Image `b`'s `[n, n]` score matrix.
fn scores(t: &GpuTensor, s: &AttnShape, b: usize) -> Result<GpuTensor> {
    let n = s.positions();
    t.view(b * n * n, &[n, n]).map_err(|_| aligned_error(s))
}

fn aligned_error(s: &AttnShape) -> Error {
    let [c, h, w] = s.image;
    Error::Config(format!(
        "the attention over {c}x{h}x{w} images runs its products image by image, which needs \
         h·w and C·h·w to be multiples of 64 values (256-byte views); choose an image size whose \
         mid-block sides give h·w a multiple of 64 (e.g. 8x8)"
    ))
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
    let p = probs.view(0, &[s.probs_len(rows)])?;
    let mut d = Vec::with_capacity(2 * rows + 1);
    for b in 0..rows {
        let (qb, kb, pb) = (image(q, s, b)?, image(k, s, b)?, scores(&p, s, b)?);
        d.push(matmul(ctx, Layout::TN, &qb, &kb, &pb, Epilogue::NONE)?);
    }
    d.push(softmax_rows(ctx, &p, s.positions(), s.scale())?);
    for b in 0..rows {
        let (vb, pb, ob) = (image(v, s, b)?, scores(&p, s, b)?, image(o, s, b)?);
        d.push(matmul(ctx, Layout::NT, &vb, &pb, &ob, Epilogue::NONE)?);
    }
    Ok(d)
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
    let p = probs.view(0, &[s.probs_len(rows)])?;
    let g = scratch.view(0, &[s.probs_len(rows)])?;
    let mut d = Vec::with_capacity(4 * rows + 1);
    for b in 0..rows {
        let (dob, pb, gb) = (image(dout, s, b)?, scores(&p, s, b)?, scores(&g, s, b)?);
        let vb = image(v, s, b)?;
        d.push(matmul(
            ctx,
            Layout::NN,
            &dob,
            &pb,
            &image(dv, s, b)?,
            Epilogue::NONE,
        )?);
        d.push(matmul(ctx, Layout::TN, &dob, &vb, &gb, Epilogue::NONE)?);
    }
    d.push(softmax_rows_grad(ctx, &g, &p, s.positions(), s.scale())?);
    for b in 0..rows {
        let gb = scores(&g, s, b)?;
        let (qb, kb) = (image(q, s, b)?, image(k, s, b)?);
        d.push(matmul(
            ctx,
            Layout::NT,
            &kb,
            &gb,
            &image(dq, s, b)?,
            Epilogue::NONE,
        )?);
        d.push(matmul(
            ctx,
            Layout::NN,
            &qb,
            &gb,
            &image(dk, s, b)?,
            Epilogue::NONE,
        )?);
    }
    Ok(d)
}

/// This module's uniform structs, as `kernels::contracts` checks them against `Shader::ATTENTION`.
#[cfg(test)]
pub(crate) const UNIFORMS: &[crate::kernels::UniformLayout] =
    &[uniform_layout!(SoftmaxParams, rows, n, scale)];
