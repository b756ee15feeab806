//! The decoder's likelihood p(x | z): what the reconstruction term −log p(x | z) is, how its
//! gradient in the logits comes out, and what the pictures draw (its mean). One concept, in one
//! place per side:
//!
//! | | Bernoulli | continuous Bernoulli | Gaussian | Laplace |
//! |---|---|---|---|---|
//! | −log p(x\|l) per pixel | `softplus(l) − l·x` | `A(l) − l·x`, `A(l) = log((eˡ−1)/l)` | `½((x−μ)/σ)² + log σ + ½log 2π`, `μ = σ(l)` | `\|x−μ\|/b + log b + log 2`, `μ = σ(l)` |
//! | ∂/∂l | `σ(l) − x` | `mean(l) − x` | `(μ − x)·μ(1 − μ)/σ²` | `sign(μ − x)·μ(1 − μ)/b` |
//! | mean (pictures) | `σ(l)` | `1/(1 − e^{−l}) − 1/l` (½ at 0) | `σ(l)` | `σ(l)` |
//!
//! An AutoencoderKL's decoder has no output activation: its Gaussian and Laplace take μ = l (the
//! `…Identity` kinds), for pixels in [−1, 1] — the MSE and the L1 loss up to scale and constant.
//!
//! The continuous Bernoulli (Loaiza-Ganem & Cunningham, 2019) is the exponential family on [0, 1]
//! with natural parameter l, so its log-partition A(l) gives both the normaliser (−log C =
//! A − softplus) and the mean (A′); both formulas divide 0 by 0 at l = 0 (λ = ½), where a series
//! takes over (PyTorch's `ContinuousBernoulli` does the same in probability space). The Gaussian's
//! σ and the Laplace's b — the likelihood's scale s — are learned (the parameter `log_sigma`, which
//! holds log s; Rybkin et al. 2021's calibrated decoder) unless `--sigma` fixes s. The Laplace's
//! gradient at μ = x is 0, as PyTorch's (`sign(0) = 0`).
//!
//! GPU side: `recon_with_logits` in `shaders/common.wgsl` (the fused logits product's epilogue,
//! `override LIKELIHOOD`), `shaders/likelihood.wgsl` (standalone: loss and gradient, the mean,
//! per-row log-likelihoods for the IWAE bound). CPU twin: `cpu::ops::recon_with_logits`.

use crate::error::{Error, Result};

/// The decoder's likelihood (`--likelihood`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Likelihood {
    /// Pixels as coin flips: binary cross-entropy (the notebook's).
    #[default]
    Bernoulli,
    /// The normalised likelihood for values in [0, 1] (`torch.distributions.ContinuousBernoulli`).
    ContinuousBernoulli,
    /// N(σ(l), σ²) per value: `sigma` fixed (`--sigma`), or `None` for a learned scalar log σ.
    Gaussian { sigma: Option<f32> },
    /// N(l, σ²) per value: the decoder's output is the mean itself, for pixels in [−1, 1] (the
    /// `--likelihood gaussian` of an AutoencoderKL, whose decoder has no output activation, as
    /// diffusers' MSE loss); σ as [`Likelihood::Gaussian`]'s.
    GaussianIdentity { sigma: Option<f32> },
    /// Laplace(σ(l), b) per value (the L1 loss up to scale): `scale` b fixed (`--sigma`), or
    /// `None` for a learned scalar log b (held in `log_sigma`).
    Laplace { scale: Option<f32> },
    /// Laplace(l, b): the decoder's output is the location itself (an AutoencoderKL's
    /// `--likelihood laplace`); b as [`Likelihood::Laplace`]'s.
    LaplaceIdentity { scale: Option<f32> },
}

/// Codes of the WGSL `LIKELIHOOD` override (`LIKELIHOOD_*` in shaders/common.wgsl).
pub const LIKELIHOOD_NONE: u32 = 0;

impl Likelihood {
    pub const NAMES: [&'static str; 4] =
        ["bernoulli", "continuous-bernoulli", "gaussian", "laplace"];

    /// The flag's spelling.
    pub fn name(&self) -> &'static str {
        match self {
            Likelihood::Bernoulli => "bernoulli",
            Likelihood::ContinuousBernoulli => "continuous-bernoulli",
            Likelihood::Gaussian { .. } | Likelihood::GaussianIdentity { .. } => "gaussian",
            Likelihood::Laplace { .. } | Likelihood::LaplaceIdentity { .. } => "laplace",
        }
    }

    /// `--likelihood NAME` with `--sigma` (a Gaussian's fixed σ or a Laplace's fixed b; refused
    /// for the others).
    pub fn parse(name: &str, sigma: Option<f32>) -> Result<Self> {
        let l = match name {
            "bernoulli" => Likelihood::Bernoulli,
            "continuous-bernoulli" => Likelihood::ContinuousBernoulli,
            "gaussian" => Likelihood::Gaussian { sigma },
            "laplace" => Likelihood::Laplace { scale: sigma },
            _ => {
                return Err(Error::setting(
                    "likelihood",
                    format!("{name:?} is not one: use {}", Self::NAMES.join(", ")),
                ));
            }
        };
        if sigma.is_some() && !l.is_scaled() {
            return Err(Error::setting(
                "sigma",
                format!(
                    "fixes a Gaussian decoder's σ (a Laplace's b), but the likelihood is {}: add \
                     --likelihood gaussian or laplace",
                    l.name()
                ),
            ));
        }
        l.validate()?;
        Ok(l)
    }

    pub fn validate(&self) -> Result<()> {
        // Values lie in [0, 1]: a σ past these bounds overflows −log p in f32 (½((x − μ)/σ)²) or
        // says nothing, and would only surface as a diverged epoch.
        if let Some(Some(s)) = self.scale()
            && !(s.is_finite() && (1e-6..=1e6).contains(&s))
        {
            return Err(Error::setting(
                "sigma",
                format!("must be a number from 1e-6 to 1e6 (values lie in [0, 1]), got {s}"),
            ));
        }
        Ok(())
    }

    /// Every likelihood the kernels compute, one of each kind (the scale learned): what the
    /// shaders' override sets and the parity tests enumerate.
    pub const KINDS: [Likelihood; 6] = [
        Likelihood::Bernoulli,
        Likelihood::ContinuousBernoulli,
        Likelihood::Gaussian { sigma: None },
        Likelihood::GaussianIdentity { sigma: None },
        Likelihood::Laplace { scale: None },
        Likelihood::LaplaceIdentity { scale: None },
    ];

    /// The WGSL `LIKELIHOOD` code (`LIKELIHOOD_BERNOULLI` … in shaders/common.wgsl).
    pub fn code(&self) -> u32 {
        match self {
            Likelihood::Bernoulli => 1,
            Likelihood::ContinuousBernoulli => 2,
            Likelihood::Gaussian { .. } => 3,
            Likelihood::GaussianIdentity { .. } => 4,
            Likelihood::Laplace { .. } => 5,
            Likelihood::LaplaceIdentity { .. } => 6,
        }
    }

    /// A Gaussian or a Laplace: a likelihood with a scale s (σ or b) that reads log s.
    pub fn is_scaled(&self) -> bool {
        self.scale().is_some()
    }

    /// The scale's setting, a Gaussian's σ or a Laplace's b (`Some(None)`: learned); `None` for
    /// the other likelihoods.
    pub fn scale(&self) -> Option<Option<f32>> {
        match *self {
            Likelihood::Gaussian { sigma } | Likelihood::GaussianIdentity { sigma } => Some(sigma),
            Likelihood::Laplace { scale } | Likelihood::LaplaceIdentity { scale } => Some(scale),
            _ => None,
        }
    }

    /// The same likelihood for a decoder whose output is the mean itself (an AutoencoderKL's):
    /// a Gaussian or a Laplace becomes its `…Identity` kind; the others are unchanged.
    pub fn with_identity_mean(self) -> Self {
        match self {
            Likelihood::Gaussian { sigma } => Likelihood::GaussianIdentity { sigma },
            Likelihood::Laplace { scale } => Likelihood::LaplaceIdentity { scale },
            l => l,
        }
    }

    /// The mean is the decoder's output itself (no output activation).
    pub fn identity_mean(&self) -> bool {
        matches!(
            self,
            Likelihood::GaussianIdentity { .. } | Likelihood::LaplaceIdentity { .. }
        )
    }

    /// The fused logits product can compute it: it needs nothing but the logit and the target
    /// (a scaled likelihood reads log s, so it runs as the standalone kernel after a plain product).
    pub fn fuses(&self) -> bool {
        !self.is_scaled()
    }

    /// A likelihood whose log scale is a trained parameter (`log_sigma`).
    pub fn learns_scale(&self) -> bool {
        self.scale() == Some(None)
    }

    /// The fixed log s of a Gaussian or a Laplace with `--sigma` (0 otherwise: unused).
    pub fn fixed_log_scale(&self) -> f32 {
        match self.scale() {
            Some(Some(s)) => s.ln(),
            _ => 0.0,
        }
    }

    /// `bernoulli`, `gaussian (learned σ)`, `gaussian (σ = 0.1)`, `laplace (b = 0.1, mean = output)`.
    pub fn describe(&self) -> String {
        let mean = if self.identity_mean() {
            ", mean = output"
        } else {
            ""
        };
        let s = match self {
            Likelihood::Laplace { .. } | Likelihood::LaplaceIdentity { .. } => "b",
            _ => "σ",
        };
        match self.scale() {
            Some(None) => format!("{} (learned {s}{mean})", self.name()),
            Some(Some(v)) => format!("{} ({s} = {v}{mean})", self.name()),
            None => self.name().into(),
        }
    }
}

impl std::fmt::Display for Likelihood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}
