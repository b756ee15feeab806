//! SGD with momentum (dampening 0) and optional Nesterov over a flat parameter arena — launcher for
//! `shaders/sgd.wgsl`: `sgd_step` for plain SGD (no buffer), `sgd_momentum` with the momentum
//! buffer. The step's learning rate comes from the per-step uniform (`step_size`).

use super::step::StepUniform;
use super::{Bind, Dispatch, dispatch, grid_1d, uniform};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuTensor, Shader};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SgdParams {
    n4: u32,
    momentum: f32,
    weight_decay: f32,
    nesterov: u32,
}

/// Update `params` in place from `grads` (and the momentum buffer `buf`, when given: `momentum`
/// then applies, Nesterov's form if `nesterov`); all the same length, a multiple of 4.
pub fn sgd_step(
    ctx: &GpuContext,
    params: &GpuTensor,
    grads: &GpuTensor,
    buf: Option<&GpuTensor>,
    (momentum, nesterov, weight_decay): (f32, bool, f32),
    step: &StepUniform,
) -> Result<Dispatch> {
    let n = params.len();
    if grads.len() != n || buf.is_some_and(|b| b.len() != n) || !n.is_multiple_of(4) {
        return Err(Error::shape(
            "sgd_step",
            format!(
                "params {n}, grads {}, momentum buffer {:?} elements: all must be equal and a \
                 multiple of 4",
                grads.len(),
                buf.map(|b| b.len())
            ),
        ));
    }
    let p = SgdParams {
        n4: (n / 4) as u32,
        momentum,
        weight_decay,
        nesterov: nesterov as u32,
    };
    let params_buf = uniform(ctx, "sgd params", &p);
    let mut binds = vec![
        Bind::Tensor(params),
        Bind::Tensor(grads),
        Bind::Buffer(&params_buf),
        Bind::Buffer(&step.buffer),
    ];
    let entry = match buf {
        Some(b) => {
            binds.push(Bind::Tensor(b));
            "sgd_momentum"
        }
        None => "sgd_step",
    };
    dispatch(
        ctx,
        "sgd_step",
        Shader::SGD,
        entry,
        &[],
        &binds,
        grid_1d(n / 4),
    )
}

/// This module's uniform structs, as `kernels::contracts` checks them against `Shader::SGD`.
#[cfg(test)]
pub(crate) const UNIFORMS: &[crate::kernels::UniformLayout] = &[uniform_layout!(
    SgdParams,
    n4,
    momentum,
    weight_decay,
    nesterov
)];
