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
            ("hidden", self.hidden),
            ("latent", self.latent),
            ("samples", self.samples),
        ] {
            if v == 0 {
                return Err(Error::setting(name, "must be at least 1"));
            }
            if v > 1 << 20 {
                return Err(Error::setting(
                    name,
                    format!("{v} is absurdly large (max {})", 1 << 20),
                ));
            }
        }
        let n = self.num_params();
        if n > MAX_PARAMS {
            return Err(Error::Config(format!(
                "a {}-{}-{} model has {n} parameters ({:.1} GiB as f32); the limit is {MAX_PARAMS} — use smaller hidden/latent sizes",
                self.input,
                self.hidden,
                self.latent,
                n as f64 * 4.0 / (1u64 << 30) as f64
            )));
        }
        Ok(())
    }

    /// Parameters of the model (weights and biases of the five Linear layers).
    pub fn num_params(&self) -> u64 {
        let (d, h, k) = (self.input as u64, self.hidden as u64, self.latent as u64);
        (d * h + h) + 2 * (h * k + k) + (k * h + h) + (h * d + d)
    }
}

/// Largest model accepted (2^28 parameters, 1 GiB per f32 arena): beyond this the host-side arenas
/// alone would exhaust a typical machine before any GPU limit is reached.
pub const MAX_PARAMS: u64 = 1 << 28;
