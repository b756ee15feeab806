//! The decoder's likelihood p(x | z): what the reconstruction term −log p(x | z) is, how its
//! gradient in the logits comes out, and what the pictures draw (its mean). One concept, in one
//! place per side:
//!
//! | | Bernoulli | continuous Bernoulli | Gaussian |
//! |---|---|---|---|
//! | −log p(x\|l) per pixel | `softplus(l) − l·x` | `A(l) − l·x`, `A(l) = log((eˡ−1)/l)` | `½((x−μ)/σ)² + log σ + ½log 2π`, `μ = σ(l)` |
//! | ∂/∂l | `σ(l) − x` | `mean(l) − x` | `(μ − x)·μ(1 − μ)/σ²` |
//! | mean (pictures) | `σ(l)` | `1/(1 − e^{−l}) − 1/l` (½ at 0) | `σ(l)` |
//!
//! The continuous Bernoulli (Loaiza-Ganem & Cunningham, 2019) is the exponential family on [0, 1]
//! with natural parameter l, so its log-partition A(l) gives both the normaliser (−log C =
//! A − softplus) and the mean (A′); both formulas divide 0 by 0 at l = 0 (λ = ½), where a series
//! takes over (PyTorch's `ContinuousBernoulli` does the same in probability space). The Gaussian's
//! σ is learned (the parameter `log_sigma`, Rybkin et al. 2021's calibrated decoder) unless
//! `--sigma` fixes it.
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
}

/// Codes of the WGSL `LIKELIHOOD` override (`LIKELIHOOD_*` in shaders/common.wgsl).
pub const LIKELIHOOD_NONE: u32 = 0;

impl Likelihood {
    pub const NAMES: [&'static str; 3] = ["bernoulli", "continuous-bernoulli", "gaussian"];

    /// The flag's spelling.
    pub fn name(&self) -> &'static str {
        match self {
            Likelihood::Bernoulli => "bernoulli",
            Likelihood::ContinuousBernoulli => "continuous-bernoulli",
            Likelihood::Gaussian { .. } | Likelihood::GaussianIdentity { .. } => "gaussian",
        }
    }

    /// `--likelihood NAME` with `--sigma` (a Gaussian's fixed σ; refused for the others).
    pub fn parse(name: &str, sigma: Option<f32>) -> Result<Self> {
        let l = match name {
            "bernoulli" => Likelihood::Bernoulli,
            "continuous-bernoulli" => Likelihood::ContinuousBernoulli,
            "gaussian" => Likelihood::Gaussian { sigma },
            _ => {
                return Err(Error::setting(
                    "likelihood",
                    format!("{name:?} is not one: use {}", Self::NAMES.join(", ")),
                ));
            }
        };
        if sigma.is_some() && !l.is_gaussian() {
            return Err(Error::setting(
                "sigma",
                format!(
                    "fixes a Gaussian decoder's σ, but the likelihood is {}: add --likelihood gaussian",
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
        if let Some(Some(s)) = self.gaussian_sigma()
            && !(s.is_finite() && (1e-6..=1e6).contains(&s))
        {
            return Err(Error::setting(
                "sigma",
                format!("must be a number from 1e-6 to 1e6 (values lie in [0, 1]), got {s}"),
            ));
        }
        Ok(())
    }

    /// Every likelihood the kernels compute, one of each kind (a Gaussian's σ learned): what the
    /// shaders' override sets and the parity tests enumerate.
    pub const KINDS: [Likelihood; 4] = [
        Likelihood::Bernoulli,
        Likelihood::ContinuousBernoulli,
        Likelihood::Gaussian { sigma: None },
        Likelihood::GaussianIdentity { sigma: None },
    ];

    /// The WGSL `LIKELIHOOD` code (`LIKELIHOOD_BERNOULLI` … in shaders/common.wgsl).
    pub fn code(&self) -> u32 {
        match self {
            Likelihood::Bernoulli => 1,
            Likelihood::ContinuousBernoulli => 2,
            Likelihood::Gaussian { .. } => 3,
            Likelihood::GaussianIdentity { .. } => 4,
        }
    }

    /// Either Gaussian.
    pub fn is_gaussian(&self) -> bool {
        self.gaussian_sigma().is_some()
    }

    /// A Gaussian's σ setting (`Some(None)`: learned); `None` for the other likelihoods.
    pub fn gaussian_sigma(&self) -> Option<Option<f32>> {
        match *self {
            Likelihood::Gaussian { sigma } | Likelihood::GaussianIdentity { sigma } => Some(sigma),
            _ => None,
        }
    }

    /// The same likelihood for a decoder whose output is the mean itself (an AutoencoderKL's):
    /// a Gaussian becomes [`Likelihood::GaussianIdentity`]; the others are unchanged.
    pub fn with_identity_mean(self) -> Self {
        match self {
            Likelihood::Gaussian { sigma } => Likelihood::GaussianIdentity { sigma },
            l => l,
        }
    }

    /// The fused logits product can compute it: it needs nothing but the logit and the target
    /// (a Gaussian reads σ, so it runs as the standalone kernel after a plain product).
    pub fn fuses(&self) -> bool {
        !self.is_gaussian()
    }

    /// A Gaussian whose log σ is a trained parameter (`log_sigma`).
    pub fn learns_sigma(&self) -> bool {
        self.gaussian_sigma() == Some(None)
    }

    /// The fixed log σ of a Gaussian with `--sigma` (0 otherwise: unused).
    pub fn fixed_log_sigma(&self) -> f32 {
        match self.gaussian_sigma() {
            Some(Some(s)) => s.ln(),
            _ => 0.0,
        }
    }

    /// `bernoulli`, `gaussian (learned σ)`, `gaussian (σ = 0.1)`.
    pub fn describe(&self) -> String {
        let mean = match self {
            Likelihood::GaussianIdentity { .. } => ", mean = output",
            _ => "",
        };
        match self.gaussian_sigma() {
            Some(None) => format!("gaussian (learned σ{mean})"),
            Some(Some(s)) => format!("gaussian (σ = {s}{mean})"),
            None => self.name().into(),
        }
    }
}

impl std::fmt::Display for Likelihood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}
