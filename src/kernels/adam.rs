//! One fused Adam update over a flat parameter arena — launcher for `shaders/adam.wgsl`.

use super::step::StepUniform;
use super::{Bind, Dispatch, dispatch, grid_1d, uniform};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuTensor, Shader};
use crate::ops::AdamConfig;

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

/// Update `params` in place from `grads` and the moments `m`, `v` (all the same length, a multiple
/// of 4). The step-dependent factors come from `step` (see [`crate::kernels::StepParams`]).
pub fn adam_step(
    ctx: &GpuContext,
    params: &GpuTensor,
    grads: &GpuTensor,
    m: &GpuTensor,
    v: &GpuTensor,
    cfg: &AdamConfig,
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
        one_minus_beta1: AdamConfig::one_minus(cfg.beta1),
        one_minus_beta2: AdamConfig::one_minus(cfg.beta2),
        _pad: 0,
    };
    let params_buf = uniform(ctx, "adam params", &p);
    dispatch(
        ctx,
        "adam_step",
        Shader::ADAM,
        "adam_step",
        &[],
        &[
            Bind::Tensor(params),
            Bind::Tensor(grads),
            Bind::Tensor(m),
            Bind::Tensor(v),
            Bind::Buffer(&params_buf),
            Bind::Buffer(&step.buffer),
        ],
        grid_1d(n / 4),
    )
}
