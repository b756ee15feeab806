//! GroupNorm — launchers for `shaders/group_norm.wgsl` (PyTorch's `nn.GroupNorm` with its affine
//! scale γ and shift β, over NCHW tensors [`GroupNormShape`]), with diffusers' SiLU after it
//! fused when asked (`silu`). [`forward`] computes each image's and group's statistics and then
//! the output; [`backward`] the input gradient and the parameters' from the output's gradient,
//! the input and those statistics.

use super::{Bind, Dispatch, dispatch, grid_1d, uniform};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuTensor, Shader};
pub use crate::ops::GroupNormShape;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GnParams {
    batch: u32,
    channels: u32,
    groups: u32,
    plane: u32,
    eps: f32,
    _pad: [u32; 3],
}

impl GroupNormShape {
    fn params(&self) -> Result<GnParams> {
        let bad = |why: String| Err(Error::shape("group_norm", format!("{self:?}: {why}")));
        if self.groups == 0 || self.channels == 0 || self.plane == 0 || self.batch == 0 {
            return bad("an empty dimension".into());
        }
        if !self.channels.is_multiple_of(self.groups) {
            return bad(format!(
                "{} channels do not split into {} groups",
                self.channels, self.groups
            ));
        }
        if self.len() > u32::MAX as usize {
            return bad("more than 2^32 values".into());
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return bad("eps must be a positive number".into());
        }
        Ok(GnParams {
            batch: self.batch as u32,
            channels: self.channels as u32,
            groups: self.groups as u32,
            plane: self.plane as u32,
            eps: self.eps,
            _pad: [0; 3],
        })
    }
}

fn check_len(name: &str, t: &GpuTensor, want: usize) -> Result<()> {
    if t.len() != want {
        return Err(Error::shape(
            "group_norm",
            format!(
                "{name} {:?} holds {} values; the shape needs {want}",
                t.shape,
                t.len()
            ),
        ));
    }
    Ok(())
}

/// One entry point of a pass: its tensors, then the pass's uniform (one per pass, shared by its
/// dispatches).
fn launch(
    ctx: &GpuContext,
    entry: &'static str,
    (params, silu, geometry): (&wgpu::Buffer, bool, (u32, u32, u32)),
    tensors: &[&GpuTensor],
    grid: [u32; 3],
) -> Result<Dispatch> {
    let mut binds: Vec<Bind<'_>> = tensors.iter().map(|t| Bind::Tensor(t)).collect();
    binds.push(Bind::Buffer(params));
    let constants = [
        ("SILU", silu as u32 as f64),
        ("CHANNELS", geometry.0 as f64),
        ("GROUPS", geometry.1 as f64),
        ("PLANE", geometry.2 as f64),
    ];
    dispatch(
        ctx,
        entry,
        Shader::GROUP_NORM,
        entry,
        &constants,
        &binds,
        grid,
    )
}

/// `y = (x − mean)·rstd·γ + β` (then SiLU with `silu`): the statistics of every image and group
/// into `stats` (`[B·G, 2]`: mean, rstd, kept for the backward), then the output.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    ctx: &GpuContext,
    s: &GroupNormShape,
    silu: bool,
    x: &GpuTensor,
    gamma: &GpuTensor,
    beta: &GpuTensor,
    stats: &GpuTensor,
    y: &GpuTensor,
) -> Result<Vec<Dispatch>> {
    let checked = s.params()?;
    for (name, t, len) in [
        ("x", x, s.len()),
        ("y", y, s.len()),
        ("γ", gamma, s.channels),
        ("β", beta, s.channels),
        ("stats", stats, 2 * s.stats_rows()),
    ] {
        check_len(name, t, len)?;
    }
    let params = uniform(ctx, "group norm params", &checked);
    let groups = [s.stats_rows() as u32, 1, 1];
    let k = (
        &params,
        silu,
        (checked.channels, checked.groups, checked.plane),
    );
    Ok(vec![
        launch(ctx, "gn_stats", k, &[x, stats], groups)?,
        launch(
            ctx,
            "gn_apply",
            k,
            &[x, stats, gamma, beta, y],
            grid_1d(s.len()),
        )?,
    ])
}

/// From the output's gradient `dy` (through SiLU with `silu`, its input recomputed from `x`):
/// the input gradient `dx` (when asked), and `dγ`, `dβ` (`[C]` each), with `sums` (`[B·G, 2]`)
/// as scratch for each group's Σ g·γ and Σ g·γ·x̂.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    ctx: &GpuContext,
    s: &GroupNormShape,
    silu: bool,
    dy: &GpuTensor,
    x: &GpuTensor,
    (gamma, beta): (&GpuTensor, &GpuTensor),
    stats: &GpuTensor,
    sums: &GpuTensor,
    dx: Option<&GpuTensor>,
    (dgamma, dbeta): (&GpuTensor, &GpuTensor),
) -> Result<Vec<Dispatch>> {
    let checked = s.params()?;
    for (name, t, len) in [
        ("dy", dy, s.len()),
        ("x", x, s.len()),
        ("γ", gamma, s.channels),
        ("β", beta, s.channels),
        ("stats", stats, 2 * s.stats_rows()),
        ("sums", sums, 2 * s.stats_rows()),
        ("dγ", dgamma, s.channels),
        ("dβ", dbeta, s.channels),
    ] {
        check_len(name, t, len)?;
    }
    if let Some(dx) = dx {
        check_len("dx", dx, s.len())?;
    }
    let params = uniform(ctx, "group norm params", &checked);
    let groups = [s.stats_rows() as u32, 1, 1];
    let k = (
        &params,
        silu,
        (checked.channels, checked.groups, checked.plane),
    );
    let front = [x, stats, gamma, beta, dy];
    let mut d = vec![launch(
        ctx,
        "gn_param_grad",
        k,
        &[&front[..], &[dgamma, dbeta]].concat(),
        [s.channels as u32, 1, 1],
    )?];
    if let Some(dx) = dx {
        d.push(launch(
            ctx,
            "gn_backward_sums",
            k,
            &[&front[..], &[sums]].concat(),
            groups,
        )?);
        d.push(launch(
            ctx,
            "gn_input_grad",
            k,
            &[&front[..], &[sums, dx]].concat(),
            grid_1d(s.len()),
        )?);
    }
    Ok(d)
}

/// This module's uniform structs, as `kernels::contracts` checks them against `Shader::GROUP_NORM`.
#[cfg(test)]
pub(crate) const UNIFORMS: &[crate::kernels::UniformLayout] = &[uniform_layout!(
    GnParams, batch, channels, groups, plane, eps
)];
