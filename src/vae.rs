//! The front door: a model a Rust program makes from a config, loads, trains, runs and saves in a
//! few calls, without the planner's buffers and graphs (which stay public underneath, in
//! [`crate::model`]). `use vae_wgpu::prelude::*` brings in what these calls name.
//!
//! ```no_run
//! use vae_wgpu::prelude::*;
//!
//! # fn main() -> vae_wgpu::Result<()> {
//! let device = Device::auto()?;
//! let (train, test) = vae_wgpu::data::load_splits("data/mnist".as_ref())?;
//! // The notebook's model: 784 -> 200 -> 10, Adam at lr 0.01, batches of 128.
//! let vae = VaeConfig::mlp(784, &[200], 10).init(0)?;
//! let mut trainer = Trainer::fit(&device, vae, OptimizerConfig::default(), 128, &train)?;
//! for stats in trainer.epochs(&device, 1) {
//!     println!("-ELBO {:.2}", stats?.loss);
//! }
//! let vae = trainer.model(&device)?;
//! let z = vae.encode(&device, &test.pixels_f32(0..10))?;
//! let images = vae.decode(&device, &z.mean)?;
//! vae.save("vae.safetensors")?;
//! # Ok(()) }
//! ```

use std::path::Path;

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::model::gpu::Input;
use crate::model::{Checkpoint, GpuDataset, GpuVae, TrainSettings, Trainer, VaeConfig};
use crate::optim::{Optimizer, OptimizerConfig};
use crate::rng::{BoxMuller, Philox, domain};
use rand::distr::Distribution;

/// Most images one encode or decode pass holds (larger inputs go in passes of this many).
pub const PASS_ROWS: usize = 256;

/// A model's weights on the host, with its config: what [`VaeConfig::init`] makes, a trainer
/// gives back ([`Trainer::model`]) and a file holds ([`Vae::load`], [`Vae::save`]). `encode` and
/// `decode` upload the weights for the call; a [`Trainer`] keeps them on the device.
#[derive(Clone, Debug)]
pub struct Vae {
    cfg: VaeConfig,
    params: Vec<f32>,
    seed: u64,
}

/// The posterior of each image: the encoder's means and log-variances, `[N, latent]` row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Posterior {
    pub mean: Vec<f32>,
    pub logvar: Vec<f32>,
    pub latent: usize,
}

impl Posterior {
    /// Images encoded.
    pub fn len(&self) -> usize {
        self.mean.len() / self.latent.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.mean.is_empty()
    }

    /// One reparameterised draw per image, `mean + exp(logvar / 2)·ε`, ε from Philox stream
    /// `seed` (the same draws on every device and run).
    pub fn sample(&self, seed: u64) -> Vec<f32> {
        let mut noise = Philox::stream(seed, domain::SAMPLES, 0);
        self.mean
            .iter()
            .zip(&self.logvar)
            .map(|(m, lv)| m + (0.5 * lv).exp() * BoxMuller.sample(&mut noise) as f32)
            .collect()
    }
}

impl GpuContext {
    /// The first adapter that works, with the options the environment sets
    /// (`VAE_WGPU_BACKEND`, `VAE_WGPU_ADAPTER`, `VAE_WGPU_MATMUL`).
    pub fn auto() -> Result<Self> {
        Self::new(&crate::gpu::ContextOptions::from_env()?)
    }
}

impl VaeConfig {
    /// A dense model on `input` values (784 for MNIST): `hidden` widths on the encoder's side,
    /// mirrored by the decoder, ReLU, a Bernoulli likelihood, `latent` dimensions.
    pub fn mlp(input: usize, hidden: &[usize], latent: usize) -> Self {
        VaeConfig::mirrored(input, hidden, latent)
    }

    /// A convolutional model on `image` (`[channels, rows, cols]`): one Conv2d(4, stride 2,
    /// padding 1) per width, mirrored by ConvTranspose2d layers.
    pub fn conv(image: [usize; 3], widths: &[usize], latent: usize) -> Self {
        VaeConfig::convolutional(image, widths, &[], latent)
    }

    /// The model with weights initialised from `seed` as PyTorch's `nn.Linear` and `nn.Conv2d`
    /// would (diffusers' for an AutoencoderKL); refused, naming the setting, when the config is
    /// not one the engine builds.
    ///
    /// ```
    /// use vae_wgpu::prelude::*;
    /// let vae = VaeConfig::conv([1, 28, 28], &[32, 64], 16).init(0).unwrap();
    /// assert_eq!(vae.config().latent, 16);
    /// assert!(VaeConfig::mlp(784, &[200], 0).init(0).is_err()); // no latent dimensions
    /// ```
    pub fn init(&self, seed: u64) -> Result<Vae> {
        self.validate()?;
        let params = crate::model::ParamLayout::new(self).init(seed);
        Ok(Vae {
            cfg: self.clone(),
            params,
            seed,
        })
    }
}

impl Vae {
    pub fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    /// The weights, in [`crate::model::ParamLayout`] order.
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// A checkpoint or a PyTorch state_dict (`.safetensors`), or a diffusers `AutoencoderKL`
    /// folder (`config.json` + `diffusion_pytorch_model.safetensors`; tensors it does not use are
    /// ignored).
    pub fn load(path: impl AsRef<Path>) -> Result<Vae> {
        let path = path.as_ref();
        let c = if path.is_dir() {
            Checkpoint::load_diffusers(path)?.0
        } else {
            Checkpoint::load(path)?
        };
        Ok(Vae {
            seed: c.progress.seed,
            cfg: c.cfg,
            params: c.params,
        })
    }

    /// Write the model as a safetensors file with PyTorch's names and the engine's metadata
    /// (what [`Vae::load`] and the `vae-wgpu` programs read); atomic.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.checkpoint().save(path.as_ref())
    }

    /// An AutoencoderKL as a diffusers model folder (`AutoencoderKL.from_pretrained` loads it).
    pub fn save_diffusers(&self, dir: impl AsRef<Path>) -> Result<()> {
        self.checkpoint().save_diffusers(dir.as_ref())
    }

    fn checkpoint(&self) -> Checkpoint {
        let image = match (&self.cfg.conv, &self.cfg.kl) {
            (Some(c), _) => c.image,
            (_, Some(k)) => k.image,
            _ => [0; 3],
        };
        Checkpoint {
            cfg: self.cfg.clone(),
            params: self.params.clone(),
            optimizer: None,
            progress: crate::model::checkpoint::Progress {
                seed: self.seed,
                image,
                ..Default::default()
            },
            activation_recorded: true,
        }
    }

    /// The posterior of each of `images` (`[N, input]` row-major, pixels in [0, 1] as
    /// torchvision's `ToTensor` gives them; an AutoencoderKL reads them in [−1, 1] itself).
    ///
    /// ```no_run
    /// # use vae_wgpu::prelude::*;
    /// # fn main() -> vae_wgpu::Result<()> {
    /// let device = Device::auto()?;
    /// let vae = Vae::load("runs/x/checkpoint.safetensors")?;
    /// let z = vae.encode(&device, &[0.0; 2 * 784])?; // two blank MNIST images
    /// assert_eq!((z.len(), z.latent), (2, vae.config().latent));
    /// let draws = z.sample(0); // mean + σ·ε, the same for the same seed
    /// # Ok(()) }
    /// ```
    pub fn encode(&self, device: &GpuContext, images: &[f32]) -> Result<Posterior> {
        let (d, k) = (self.cfg.input, self.cfg.latent);
        let n = self.rows("encode", images.len(), d, "images")?;
        let signed = self.cfg.signed_pixels();
        let x: Vec<f32> = if signed {
            images.iter().map(|v| 2.0 * v - 1.0).collect()
        } else {
            images.to_vec()
        };
        let mut vae = self.on(device, n.min(PASS_ROWS))?;
        let (mut mean, mut logvar) = (Vec::with_capacity(n * k), Vec::with_capacity(n * k));
        for start in (0..n).step_by(PASS_ROWS) {
            let b = (n - start).min(PASS_ROWS);
            let a = vae.acts.rows(b, 1)?;
            device.write_f32(&a.x, &x[start * d..(start + b) * d])?;
            let g = vae.plan_encode(device, b, Input::Given)?;
            vae.run_step(device, &g, 0)?;
            let (m, lv) = crate::ops::split_heads(&device.read_f32(&a.heads)?, k);
            mean.extend(m);
            // diffusers clamps an AutoencoderKL's logvar as its sampler reads it.
            logvar.extend(lv.into_iter().map(|v| self.cfg.logvar().read(v)));
        }
        Ok(Posterior {
            mean,
            logvar,
            latent: k,
        })
    }

    /// The decoder's likelihood mean for each latent code of `z` (`[N, latent]`), as pixels in
    /// [0, 1], `[N, input]` row-major.
    ///
    /// ```no_run
    /// # use vae_wgpu::prelude::*;
    /// # fn main() -> vae_wgpu::Result<()> {
    /// let device = Device::auto()?;
    /// let vae = VaeConfig::mlp(784, &[200], 10).init(0)?;
    /// let pixels = vae.decode(&device, &[0.0; 10])?; // the prior's mean code
    /// assert_eq!(pixels.len(), 784);
    /// # Ok(()) }
    /// ```
    pub fn decode(&self, device: &GpuContext, z: &[f32]) -> Result<Vec<f32>> {
        let (d, k) = (self.cfg.input, self.cfg.latent);
        let n = self.rows("decode", z.len(), k, "latent values")?;
        let mut vae = self.on(device, n.min(PASS_ROWS))?;
        let mut out = Vec::with_capacity(n * d);
        for start in (0..n).step_by(PASS_ROWS) {
            let b = (n - start).min(PASS_ROWS);
            let a = vae.acts.decoder_rows(b)?;
            device.write_f32(&a.z, &z[start * k..(start + b) * k])?;
            let g = vae.plan_decode(device, b)?;
            vae.run_step(device, &g, 0)?;
            let mean = device.read_f32(&a.logits)?;
            out.extend(mean.into_iter().map(|v| self.cfg.display_value(v)));
        }
        Ok(out)
    }

    /// How many rows of `per` values `len` holds, refused (naming the call) when it is not a whole
    /// number of rows, or when the model needs class labels.
    fn rows(&self, call: &str, len: usize, per: usize, what: &str) -> Result<usize> {
        if self.cfg.is_conditional() {
            return Err(Error::Config(format!(
                "Vae::{call}: a conditional model needs each image's class; plan its passes on \
                 a GpuVae (model::GpuVae::plan_encode with labels)"
            )));
        }
        if len == 0 || !len.is_multiple_of(per) {
            return Err(Error::shape(
                "Vae::encode/decode",
                format!("{call} takes rows of {per} {what}; got {len} values"),
            ));
        }
        Ok(len / per)
    }

    /// The weights on `device`, planned for passes of up to `rows` rows.
    fn on(&self, device: &GpuContext, rows: usize) -> Result<GpuVae> {
        GpuVae::from_params(
            device,
            self.cfg.for_inference(1),
            rows,
            self.seed,
            &self.params,
        )
    }
}

/// Epoch after epoch of a [`Trainer`] ([`Trainer::epochs`]): each item is a completed epoch's
/// averages, or the error that ended the run (a raised [`crate::gpu::Cancel`] ends it with
/// [`Error::Interrupted`], the trainer in place for [`Trainer::checkpoint`]).
pub struct Epochs<'a> {
    trainer: &'a mut Trainer,
    device: &'a GpuContext,
    left: usize,
}

impl Iterator for Epochs<'_> {
    type Item = Result<crate::model::EpochStats>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let cancel = self.device.cancel.clone();
        let end = self.trainer.train_epoch(
            self.device,
            &mut |e| {
                if let crate::model::Event::BatchLoss {
                    epoch, step, loss, ..
                } = e
                {
                    log::info!("epoch {epoch}, step {step}: batch loss {loss:.2}");
                }
            },
            &mut || cancel.is_cancelled(),
        );
        Some(match end {
            Ok(crate::model::EpochEnd::Completed(stats)) => Ok(stats),
            Ok(crate::model::EpochEnd::Stopped { epoch, step }) => {
                self.left = 0;
                Err(Error::Interrupted(format!(
                    "cancelled before step {step} of epoch {epoch}"
                )))
            }
            Err(e) => {
                self.left = 0;
                Err(e)
            }
        })
    }
}

impl Trainer {
    /// A trainer of `vae` on `train` (uploaded once; the epochs' plans are made for its size), in
    /// batches of `batch` with `optimizer`, shuffled from the model's seed.
    ///
    /// ```no_run
    /// # use vae_wgpu::prelude::*;
    /// # fn main() -> vae_wgpu::Result<()> {
    /// let device = Device::auto()?;
    /// let (train, _) = vae_wgpu::data::load_splits("data/mnist".as_ref())?;
    /// let vae = VaeConfig::mlp(784, &[400, 200], 20).init(1)?;
    /// let adamw = OptimizerConfig {
    ///     kind: OptimizerKind::AdamW,
    ///     weight_decay: 0.01,
    ///     ..OptimizerConfig::default()
    /// };
    /// let mut trainer = Trainer::fit(&device, vae, adamw, 64, &train)?;
    /// let stats: Vec<EpochStats> = trainer.epochs(&device, 3).collect::<Result<_>>()?;
    /// println!("-ELBO after 3 epochs: {:.2}", stats[2].loss);
    /// trainer.model(&device)?.save("vae.safetensors")?;
    /// # Ok(()) }
    /// ```
    pub fn fit(
        device: &GpuContext,
        vae: Vae,
        optimizer: OptimizerConfig,
        batch: usize,
        train: &crate::data::ImageSet,
    ) -> Result<Trainer> {
        let settings = TrainSettings {
            batch_size: batch,
            optimizer,
            seed: vae.seed,
            log_every: 100,
        };
        settings.validate(train.count)?;
        if train.dim() != vae.cfg.input {
            return Err(Error::Config(format!(
                "the images have {} values, the model takes {}",
                train.dim(),
                vae.cfg.input
            )));
        }
        let model = GpuVae::from_params(device, vae.cfg, batch, vae.seed, &vae.params)?;
        let optimizer = Optimizer::new(device, settings.optimizer, model.layout.len)?;
        let data = GpuDataset::upload(device, "train pixels", train)?;
        Trainer::with_model(device, model, optimizer, settings, data)
    }

    /// The next `n` epochs, one item each, as they complete.
    pub fn epochs<'a>(&'a mut self, device: &'a GpuContext, n: usize) -> Epochs<'a> {
        Epochs {
            trainer: self,
            device,
            left: n,
        }
    }

    /// The model as trained so far (its weights read back from the device).
    pub fn model(&self, device: &GpuContext) -> Result<Vae> {
        Ok(Vae {
            cfg: self.vae.cfg.clone(),
            params: device.read_f32(&self.vae.params)?,
            seed: self.settings.seed,
        })
    }
}
