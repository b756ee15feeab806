//! Fused reparameterisation + KL, forward and backward — launchers for `shaders/reparam_kl.wgsl`.

use super::step::StepUniform;
use super::{Bind, Dispatch, dispatch, expect_2d, uniform};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuTensor, Shader};

/// Where the reparameterisation's noise comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpsSource {
    /// Drawn on the GPU from Philox4x32-10 (seed, step, element) and written to the eps buffer.
    Philox,
    /// Read from the eps buffer (for parity with references that supply their own noise).
    Buffer,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ReparamParams {
    bk: u32,
    samples: u32,
    k: u32,
    _pad: u32,
}

/// How many KL partial sums `reparam_forward` writes for L·B·K noise elements.
pub fn kl_partials_len(noise_len: usize) -> usize {
    noise_len.div_ceil(256).max(1)
}

/// Checks `heads` = [B, 2K] (mu | logvar) against `eps`, `z` = [L·B, K]; returns (L, K).
fn check(
    op: &'static str,
    heads: &GpuTensor,
    eps: &GpuTensor,
    z: &GpuTensor,
) -> Result<(usize, usize)> {
    let (b, k2) = expect_2d(op, "heads", heads)?;
    let (rows, k) = expect_2d(op, "z", z)?;
    if k2 != 2 * k || eps.shape != z.shape || b == 0 || rows % b != 0 || rows == 0 {
        return Err(Error::shape(
            op,
            format!(
                "heads {:?}, eps {:?}, z {:?}: need heads = [B, 2K] (mu | logvar), eps = z = [L·B, K]",
                heads.shape, eps.shape, z.shape
            ),
        ));
    }
    Ok((rows / b, k))
}

/// How the posterior reads its logvar: as it is, or clamped to [−30, 20] as diffusers'
/// `DiagonalGaussianDistribution` does (its gradient then 0 outside the bounds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Logvar {
    #[default]
    AsIs,
    Clamped,
}

impl Logvar {
    /// The clamp's bounds (diffusers' `torch.clamp(logvar, -30.0, 20.0)`).
    pub const CLAMP: (f32, f32) = (-30.0, 20.0);

    /// A logvar as the posterior reads it (on the host: an encoder's output read back).
    pub fn read(self, v: f32) -> f32 {
        match self {
            Logvar::AsIs => v,
            Logvar::Clamped => v.clamp(Self::CLAMP.0, Self::CLAMP.1),
        }
    }

    /// The override constant, set only when clamping (every other model plans the dispatches it
    /// always did).
    fn constants(self) -> Option<(&'static str, f64)> {
        (self == Logvar::Clamped).then_some(("LOGVAR_CLAMP", 1.0))
    }
}

/// `z = mu + exp(logvar/2)·eps` for L samples, and the (unweighted) KL's partial sums into
/// `kl_partials`; `heads` is the encoder heads' output [B, 2K], row b = (mu_b, logvar_b).
#[allow(clippy::too_many_arguments)]
pub fn reparam_forward(
    ctx: &GpuContext,
    heads: &GpuTensor,
    eps: &GpuTensor,
    z: &GpuTensor,
    kl_partials: &GpuTensor,
    source: EpsSource,
    step: &StepUniform,
    logvar: Logvar,
) -> Result<Dispatch> {
    const OP: &str = "reparam_forward";
    let (samples, k) = check(OP, heads, eps, z)?;
    let n = z.len();
    if kl_partials.len() < kl_partials_len(n) {
        return Err(Error::shape(
            OP,
            format!(
                "{} KL partials, need {}",
                kl_partials.len(),
                kl_partials_len(n)
            ),
        ));
    }
    let params = uniform(
        ctx,
        "reparam params",
        &ReparamParams {
            bk: (heads.len() / 2) as u32,
            samples: samples as u32,
            k: k as u32,
            _pad: 0,
        },
    );
    dispatch(
        ctx,
        OP,
        Shader::REPARAM_KL,
        OP,
        &[(
            "EPS_FROM_BUFFER",
            (source == EpsSource::Buffer) as u32 as f64,
        )]
        .into_iter()
        .chain(logvar.constants())
        .collect::<Vec<_>>(),
        &[
            Bind::Tensor(heads),
            Bind::Tensor(eps),
            Bind::Tensor(z),
            Bind::Tensor(kl_partials),
            Bind::Buffer(&params),
            Bind::Buffer(&step.buffer),
        ],
        [kl_partials_len(n) as u32, 1, 1],
    )
}

/// `dmu = Σ_l dz_l + w·mu`, `dlogvar = Σ_l dz_l·eps_l·exp(logvar/2)/2 + w·(exp(logvar) - 1)/2`,
/// written as `dheads` [B, 2K], row b = (dmu_b, dlogvar_b), like `heads`; the KL weight w is the
/// step uniform's `kl_weight`. With `iwae_weights` (`[L·B]`, normalised importance weights w̃) the
/// IWAE objective's instead: `dmu = Σ_l (dz_l + w̃_l z_l)`, `dlogvar = Σ_l (dz_l + w̃_l z_l)·eps_l·sd/2 − 1/2`.
#[allow(clippy::too_many_arguments)]
pub fn reparam_backward(
    ctx: &GpuContext,
    heads: &GpuTensor,
    eps: &GpuTensor,
    dz: &GpuTensor,
    dheads: &GpuTensor,
    step: &StepUniform,
    iwae_weights: Option<&GpuTensor>,
    logvar: Logvar,
) -> Result<Dispatch> {
    const OP: &str = "reparam_backward";
    let (samples, k) = check(OP, heads, eps, dz)?;
    if dheads.shape != heads.shape {
        return Err(Error::shape(
            OP,
            format!("dheads {:?} for heads {:?}", dheads.shape, heads.shape),
        ));
    }
    let bk = heads.len() / 2;
    if iwae_weights.is_some_and(|w| w.len() < samples * (bk / k)) {
        return Err(Error::shape(
            OP,
            format!("IWAE weights for {samples}·{} rows", bk / k),
        ));
    }
    let params = uniform(
        ctx,
        "reparam params",
        &ReparamParams {
            bk: bk as u32,
            samples: samples as u32,
            k: k as u32,
            _pad: 0,
        },
    );
    dispatch(
        ctx,
        OP,
        Shader::REPARAM_KL,
        OP,
        &[("IWAE", iwae_weights.is_some() as u32 as f64)]
            .into_iter()
            .chain(logvar.constants())
            .collect::<Vec<_>>(),
        &[
            Bind::Tensor(heads),
            Bind::Tensor(eps),
            Bind::Tensor(dz),
            Bind::Tensor(dheads),
            Bind::Buffer(&params),
            Bind::Buffer(&step.buffer),
            match iwae_weights {
                Some(w) => Bind::Tensor(w),
                None => Bind::Buffer(&ctx.dummy),
            },
        ],
        [bk.div_ceil(256) as u32, 1, 1],
    )
}

/// This module's uniform structs, as `kernels::contracts` checks them against `Shader::REPARAM_KL`.
#[cfg(test)]
pub(crate) const UNIFORMS: &[crate::kernels::UniformLayout] =
    &[uniform_layout!(ReparamParams, bk, samples, k)];
