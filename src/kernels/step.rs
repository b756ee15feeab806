//! The per-step uniform: the few values that change every step (batch offset, noise counter,
//! seed, Adam's bias corrections, the KL weight), written once per step into one 32-byte buffer that the gather,
//! reparameterisation, Adam and IWAE kernels read. It mirrors `StepParams` in
//! `shaders/common.wgsl`.

use crate::gpu::GpuContext;

/// Values that change every step, written once per step into one small uniform buffer that the
/// gather, reparameterisation, Adam and IWAE kernels read (mirrors `StepParams` in
/// shaders/common.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StepParams {
    /// First position of this batch in the epoch's index list.
    pub batch_offset: u32,
    /// Step counter fed to the Philox counter: same (seed, step, element) → same eps.
    pub rng_step: u32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    /// `lr / (1 - β1^t)`.
    pub adam_step_size: f32,
    /// `sqrt(1 - β2^t)`.
    pub adam_bc2_sqrt: f32,
    /// The KL term's weight in the objective being minimised (β, ramped up over a warm-up): the
    /// reparameterisation's backward and the loss reduction's weighted KL read it.
    pub kl_weight: f32,
    pub _pad: u32,
}

impl StepParams {
    /// (name, byte offset, WGSL type) of every field, for runtimes that write the uniform
    /// themselves (the exported plan).
    pub const FIELDS: [(&'static str, usize, &'static str); 7] = [
        (
            "batch_offset",
            std::mem::offset_of!(StepParams, batch_offset),
            "u32",
        ),
        (
            "rng_step",
            std::mem::offset_of!(StepParams, rng_step),
            "u32",
        ),
        ("seed_lo", std::mem::offset_of!(StepParams, seed_lo), "u32"),
        ("seed_hi", std::mem::offset_of!(StepParams, seed_hi), "u32"),
        (
            "adam_step_size",
            std::mem::offset_of!(StepParams, adam_step_size),
            "f32",
        ),
        (
            "adam_bc2_sqrt",
            std::mem::offset_of!(StepParams, adam_bc2_sqrt),
            "f32",
        ),
        (
            "kl_weight",
            std::mem::offset_of!(StepParams, kl_weight),
            "f32",
        ),
    ];

    pub fn with_seed(seed: u64) -> Self {
        StepParams {
            seed_lo: seed as u32,
            seed_hi: (seed >> 32) as u32,
            kl_weight: 1.0,
            ..Default::default()
        }
    }
}

/// The per-step uniform buffer.
pub struct StepUniform {
    pub buffer: wgpu::Buffer,
}

impl StepUniform {
    pub fn new(ctx: &GpuContext, value: &StepParams) -> Self {
        StepUniform {
            buffer: super::uniform(ctx, "step params", value),
        }
    }

    /// Queue new values; they apply to every later submit.
    pub fn write(&self, ctx: &GpuContext, value: &StepParams) {
        ctx.queue
            .write_buffer(&self.buffer, 0, bytemuck::bytes_of(value));
    }
}

/// This module's uniform structs, as `kernels::contracts` checks them against `Shader::ADAM`.
#[cfg(test)]
pub(crate) const UNIFORMS: &[crate::kernels::UniformLayout] = &[uniform_layout!(
    StepParams,
    batch_offset,
    rng_step,
    seed_lo,
    seed_hi,
    adam_step_size,
    adam_bc2_sqrt,
    kl_weight
)];
