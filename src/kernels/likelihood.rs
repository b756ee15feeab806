//! The decoder's likelihood, standalone — launchers for `shaders/likelihood.wgsl`: the
//! reconstruction term's loss and logits gradient in one pass (with log σ's gradient partials for a
//! learned-σ Gaussian), per-row -log p(x | z) for the importance-weighted bound, and the mean.

use super::{Bind, Dispatch, dispatch, expect_2d, grid_1d, grid_1d_groups, uniform};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuTensor, Shader};
use crate::ops::likelihood::Likelihood;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ReconParams {
    n: u32,
    n_target: u32,
    scale: f32,
    dim: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RowParams {
    rows: u32,
    dim: u32,
    batch: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MeanParams {
    n: u32,
    _pad: [u32; 3],
}

/// Elements per thread (`ITEMS` in likelihood.wgsl).
const ITEMS: usize = 8;

/// How many partial sums `recon_forward_backward` writes for `logits_len` logits (and as many of
/// log σ's gradient).
pub fn partials_len(logits_len: usize) -> usize {
    grid_1d_groups(logits_len.div_ceil(ITEMS))
}

/// Checks logits `[L·B, D]` against targets `[B, D]`; returns (L·B, B, D).
fn check_targets(
    op: &'static str,
    logits: &GpuTensor,
    target: &GpuTensor,
) -> Result<(usize, usize, usize)> {
    let (rows, d) = expect_2d(op, "logits", logits)?;
    let (b, td) = expect_2d(op, "target", target)?;
    if td != d || b == 0 || rows % b != 0 {
        return Err(Error::shape(
            op,
            format!(
                "logits {:?}, target {:?}: need logits [L·B, D], target [B, D]",
                logits.shape, target.shape
            ),
        ));
    }
    Ok((rows, b, d))
}

/// An optional read-only input (log σ, the IWAE row weights): the tensor, or the placeholder.
fn optional_input<'a>(ctx: &'a GpuContext, t: Option<&'a GpuTensor>) -> Bind<'a> {
    match t {
        Some(t) => Bind::Tensor(t),
        None => Bind::Buffer(&ctx.dummy),
    }
}

/// A Gaussian reads its log σ: refuse one planned without it.
fn check_log_sigma(op: &str, likelihood: Likelihood, log_sigma: Option<&GpuTensor>) -> Result<()> {
    if likelihood.is_scaled() && log_sigma.is_none() {
        return Err(Error::Config(format!("{op}: a Gaussian needs its log σ")));
    }
    Ok(())
}

/// `dlogits = ∂(-log p(x | l))/∂l / L` and per-workgroup partial sums of -log p / L into
/// `partials[..partials_len(L·B·D)]`; logits and dlogits `[L·B, D]`, targets `[B, D]`. A Gaussian
/// reads log σ from `log_sigma` (required), and with `sigma_partials` also writes partial sums of
/// ∂(-log p)/∂log σ / L there (a learned σ: [`crate::kernels::reduce::sum_to`] adds them up).
/// With `row_weights` (`[L·B]`, the IWAE objective's normalised importance weights) the gradients
/// of row r are scaled by `row_weights[r]` instead of 1/L (the loss partials stay / L).
#[allow(clippy::too_many_arguments)]
pub fn recon_forward_backward(
    ctx: &GpuContext,
    likelihood: Likelihood,
    logits: &GpuTensor,
    target: &GpuTensor,
    dlogits: &GpuTensor,
    partials: &GpuTensor,
    log_sigma: Option<&GpuTensor>,
    sigma_partials: Option<&GpuTensor>,
    row_weights: Option<&GpuTensor>,
) -> Result<Dispatch> {
    const OP: &str = "recon_forward_backward";
    let (rows, b, d) = check_targets(OP, logits, target)?;
    if dlogits.shape != logits.shape {
        return Err(Error::shape(
            OP,
            format!("dlogits {:?} for logits {:?}", dlogits.shape, logits.shape),
        ));
    }
    let n = rows * d;
    let need = partials_len(n);
    if partials.len() < need || sigma_partials.is_some_and(|s| s.len() < need) {
        return Err(Error::shape(
            OP,
            format!("partials buffers need {need} values"),
        ));
    }
    if row_weights.is_some_and(|w| w.len() < rows) {
        return Err(Error::shape(OP, format!("row weights for {rows} rows")));
    }
    check_log_sigma(OP, likelihood, log_sigma)?;
    if sigma_partials.is_some() && !likelihood.is_scaled() {
        return Err(Error::Config(format!(
            "{OP}: only a Gaussian has a σ to differentiate"
        )));
    }
    let params = uniform(
        ctx,
        "recon params",
        &ReconParams {
            n: n as u32,
            n_target: (b * d) as u32,
            scale: 1.0 / (rows / b) as f32,
            dim: d as u32,
        },
    );
    dispatch(
        ctx,
        OP,
        Shader::LIKELIHOOD,
        OP,
        &[
            ("LIKELIHOOD", likelihood.code() as f64),
            ("SIGMA_GRAD", sigma_partials.is_some() as u32 as f64),
            ("ROW_WEIGHTS", row_weights.is_some() as u32 as f64),
        ],
        &[
            Bind::Tensor(logits),
            Bind::Tensor(target),
            Bind::Tensor(dlogits),
            Bind::Tensor(partials),
            Bind::Buffer(&params),
            optional_input(ctx, log_sigma),
            match sigma_partials {
                Some(t) => Bind::Tensor(t),
                None => Bind::Buffer(&ctx.dummy_rw),
            },
            optional_input(ctx, row_weights),
        ],
        grid_1d(n.div_ceil(ITEMS)),
    )
}

/// `rowloss[r] = Σ_d -log p(target[r mod B, d] | logits[r, d])`; logits `[L·B, D]`, target
/// `[B, D]`; a Gaussian reads log σ from `log_sigma`.
pub fn recon_rows(
    ctx: &GpuContext,
    likelihood: Likelihood,
    logits: &GpuTensor,
    target: &GpuTensor,
    rowloss: &GpuTensor,
    log_sigma: Option<&GpuTensor>,
) -> Result<Dispatch> {
    const OP: &str = "recon_rows";
    let (rows, b, d) = check_targets(OP, logits, target)?;
    if rowloss.len() < rows {
        return Err(Error::shape(
            OP,
            format!("rowloss {:?} for {rows} rows", rowloss.shape),
        ));
    }
    check_log_sigma(OP, likelihood, log_sigma)?;
    let params = uniform(
        ctx,
        "recon rows params",
        &RowParams {
            rows: rows as u32,
            dim: d as u32,
            batch: b as u32,
            _pad: 0,
        },
    );
    dispatch(
        ctx,
        OP,
        Shader::LIKELIHOOD,
        OP,
        &[("LIKELIHOOD", likelihood.code() as f64)],
        &[
            Bind::Tensor(logits),
            Bind::Tensor(target),
            Bind::Tensor(rowloss),
            Bind::Buffer(&params),
            optional_input(ctx, log_sigma),
        ],
        [rows as u32, 1, 1],
    )
}

/// Logits to the likelihood's mean, in place (σ(l) for the Bernoulli and the Gaussian, the
/// continuous Bernoulli's `1/(1 − e^{−l}) − 1/l`).
pub fn likelihood_mean(
    ctx: &GpuContext,
    likelihood: Likelihood,
    values: &GpuTensor,
) -> Result<Dispatch> {
    const OP: &str = "likelihood_mean";
    let n = values.len();
    let params = uniform(
        ctx,
        "mean params",
        &MeanParams {
            n: n as u32,
            _pad: [0; 3],
        },
    );
    dispatch(
        ctx,
        OP,
        Shader::LIKELIHOOD,
        OP,
        &[("LIKELIHOOD", likelihood.code() as f64)],
        &[Bind::Tensor(values), Bind::Buffer(&params)],
        grid_1d(n),
    )
}

/// This module's uniform structs, as `kernels::contracts` checks them against `Shader::LIKELIHOOD`.
#[cfg(test)]
pub(crate) const UNIFORMS: &[crate::kernels::UniformLayout] = &[
    uniform_layout!(ReconParams, n, n_target, scale, dim),
    uniform_layout!(RowParams, rows, dim, batch),
    uniform_layout!(MeanParams, n),
];
