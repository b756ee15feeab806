use crate::error::{Error, Result};

/// Sizes of the Bernoulli VAE: `input -> hidden -> (latent, latent) | latent -> hidden -> input`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VaeConfig {
    pub input: usize,
    pub hidden: usize,
    pub latent: usize,
    /// L: reparameterised samples per observation (their reconstruction terms are averaged).
    pub samples: usize,
}

impl Default for VaeConfig {
    /// The notebook's model: 784 -> 200 -> 10.
    fn default() -> Self {
        VaeConfig {
            input: 784,
            hidden: 200,
            latent: 10,
            samples: 1,
        }
    }
}

impl VaeConfig {
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("input size", self.input),
            ("--hidden", self.hidden),
            ("--latent", self.latent),
            ("--samples", self.samples),
        ] {
            if v == 0 {
                return Err(Error::Config(format!("{name} must be at least 1")));
            }
            if v > 1 << 20 {
                return Err(Error::Config(format!(
                    "{name} = {v} is absurdly large (max {})",
                    1 << 20
                )));
            }
        }
        Ok(())
    }
}
