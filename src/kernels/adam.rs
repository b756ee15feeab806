//! One fused Adam (or AdamW) update over a flat parameter arena — launcher for `shaders/adam.wgsl`, whose
//! two entry points read the four operands from storage (`adam_step`) or from textures copied from
//! them just before (`adam_step_tex`, see [`super::texture`]); which one runs is measured once per
//! device and parameter count and kept in the tune store, as the matmul choices are.

use std::fmt;

use super::step::StepUniform;
use super::texture::{TextureOperand, texture_fits};
use super::tuner::{Candidate, Check, choose};
use super::{Bind, Dispatch, dispatch, grid_1d, uniform};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuTensor, Shader};
use crate::ops::one_minus;

/// The kernel's constant hyperparameters (the step-dependent factors come from the per-step
/// uniform): Adam's, and AdamW's with `weight_decay` 0 (its decay is the uniform's `decay`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamHyper {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// L2, added to the gradient (Adam's `weight_decay`).
    pub weight_decay: f32,
}

impl Default for AdamHyper {
    fn default() -> Self {
        AdamHyper {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AdamParams {
    n4: u32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    _pad: u32,
}

/// Where the update reads its operands (it always writes storage). Both give the same results bit
/// for bit: the same arithmetic on the same values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdamReads {
    Storage,
    Texture,
}

impl AdamReads {
    pub const ALL: [AdamReads; 2] = [AdamReads::Storage, AdamReads::Texture];
}

impl fmt::Display for AdamReads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AdamReads::Storage => "storage",
            AdamReads::Texture => "texture",
        })
    }
}

/// Update `params` in place from `grads` and the moments `m`, `v` (all the same length, a multiple
/// of 4). The step-dependent factors come from `step` (see [`crate::kernels::StepParams`]). Reads
/// storage or textures as measured on this device ([`reads_for`]); an exported plan (whose
/// bindings are buffers) always reads storage.
pub fn adam_step(
    ctx: &GpuContext,
    params: &GpuTensor,
    grads: &GpuTensor,
    m: &GpuTensor,
    v: &GpuTensor,
    cfg: &AdamHyper,
    step: &StepUniform,
) -> Result<Dispatch> {
    let reads = if ctx.records_buffers() {
        AdamReads::Storage
    } else {
        reads_for(ctx, params.len(), cfg, step)?
    };
    adam_step_with(ctx, reads, params, grads, m, v, cfg, step)
}

/// The faster read path for `n` parameters on this device: recorded in the tune store, else timed
/// now on scratch tensors (each path's best of 3 rounds) and recorded. Storage where the textures
/// would not fit.
pub fn reads_for(
    ctx: &GpuContext,
    n: usize,
    cfg: &AdamHyper,
    step: &StepUniform,
) -> Result<AdamReads> {
    if !texture_fits(ctx, n) {
        return Ok(AdamReads::Storage);
    }
    choose(
        ctx,
        &format!("adam reads, {n} parameters"),
        |v| AdamReads::ALL.into_iter().find(|r| r.to_string() == v),
        || {
            let scratch = |name| ctx.zeros(name, &[n], crate::gpu::DType::F32);
            let (p, g, m, v) = (
                scratch("adam tune params")?,
                scratch("adam tune grads")?,
                scratch("adam tune m")?,
                scratch("adam tune v")?,
            );
            let candidates = (AdamReads::ALL.into_iter())
                .map(|r| {
                    let d = adam_step_with(ctx, r, &p, &g, &m, &v, cfg, step)?;
                    Ok(Candidate::dispatches(ctx, r, vec![d]))
                })
                .collect::<Result<Vec<_>>>()?;
            // The same step from the same state: the weights and both moments after it, against
            // the storage path's.
            let state = [p.clone(), m.clone(), v.clone()];
            let check = Check {
                reset: Box::new(move || {
                    ctx.write_f32(&p, &super::tune_operand(n, 31))?;
                    ctx.write_f32(&g, &super::tune_operand(n, 17))?;
                    ctx.write_f32(&m, &vec![0.0; n])?;
                    ctx.write_f32(&v, &vec![0.0; n])
                }),
                read: Box::new(move || {
                    let mut out = Vec::with_capacity(3 * n);
                    for t in &state {
                        out.extend(ctx.read_f32(t)?);
                    }
                    Ok(out)
                }),
            };
            Ok((candidates, Some(check)))
        },
    )
}

/// As [`adam_step`], reading as `reads` says.
#[allow(clippy::too_many_arguments)]
pub fn adam_step_with(
    ctx: &GpuContext,
    reads: AdamReads,
    params: &GpuTensor,
    grads: &GpuTensor,
    m: &GpuTensor,
    v: &GpuTensor,
    cfg: &AdamHyper,
    step: &StepUniform,
) -> Result<Dispatch> {
    let n = params.len();
    if grads.len() != n || m.len() != n || v.len() != n || !n.is_multiple_of(4) {
        return Err(Error::shape(
            "adam_step",
            format!(
                "params {}, grads {}, m {}, v {} elements: all must be equal and a multiple of 4",
                n,
                grads.len(),
                m.len(),
                v.len()
            ),
        ));
    }
    let p = AdamParams {
        n4: (n / 4) as u32,
        beta1: cfg.beta1,
        beta2: cfg.beta2,
        eps: cfg.eps,
        weight_decay: cfg.weight_decay,
        one_minus_beta1: one_minus(cfg.beta1),
        one_minus_beta2: one_minus(cfg.beta2),
        _pad: 0,
    };
    let params_buf = uniform(ctx, "adam params", &p);
    let mut binds = vec![
        Bind::Tensor(params),
        Bind::Tensor(grads),
        Bind::Tensor(m),
        Bind::Tensor(v),
        Bind::Buffer(&params_buf),
        Bind::Buffer(&step.buffer),
    ];
    let entry = match reads {
        AdamReads::Storage => "adam_step",
        AdamReads::Texture => {
            if !texture_fits(ctx, n) {
                return Err(Error::AdapterLimit {
                    adapter: ctx.adapter.name.clone(),
                    what: format!(
                        "adam_step_tex: {n} parameters exceed the largest 2D texture ({} texels)",
                        ctx.limits().max_texture_dimension_2d
                    ),
                });
            }
            // Binding 1 becomes the gradient's texture; 6, 7, 8 those of params, m and v.
            let tex = |t| Bind::Texture(Box::new(TextureOperand::new(ctx, t)));
            binds[1] = tex(grads);
            binds.extend([tex(params), tex(m), tex(v)]);
            "adam_step_tex"
        }
    };
    dispatch(
        ctx,
        "adam_step",
        Shader::ADAM,
        entry,
        &[],
        &binds,
        grid_1d(n / 4),
    )
}

/// This module's uniform structs, as `kernels::contracts` checks them against `Shader::ADAM`.
#[cfg(test)]
pub(crate) const UNIFORMS: &[crate::kernels::UniformLayout] = &[uniform_layout!(
    AdamParams,
    n4,
    beta1,
    beta2,
    eps,
    weight_decay,
    one_minus_beta1,
    one_minus_beta2
)];
