//! The command-line programs: `train`, `eval` and `pictures`. Each is an example
//! (`cargo run --release --example train`) and a subcommand of the `vae-wgpu` binary
//! (`cargo run --release -- train`); both call the same code here.

pub mod decode;
pub mod encode;
pub mod eval;
pub mod export;
pub mod latents;
pub mod out;
pub mod pictures;
pub mod run_dir;
pub mod train;
pub mod tune;

use std::process::ExitCode;

use out::note;

use crate::gpu::ContextOptions;

/// MNIST's image shape: the model's shape before the data is read (IDX files of other sizes
/// reshape it once they are).
pub const MNIST_IMAGE: [usize; 3] = [1, 28, 28];

/// The device flags every program takes (flattened into each program's arguments).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DeviceArgs {
    /// auto, vulkan, metal, dx12 or gl (default: $VAE_WGPU_BACKEND, else auto).
    #[arg(long)]
    pub backend: Option<String>,
    /// Adapter index (see the list_adapters example) or name substring.
    #[arg(long)]
    pub adapter: Option<String>,
    /// Time the matmul kernels again instead of using the recorded autotune choices (the new
    /// choices replace the old ones in the cache).
    #[arg(long)]
    pub retune: bool,
}

impl DeviceArgs {
    /// Context options from the environment, overridden by these flags.
    pub fn options(&self) -> crate::Result<ContextOptions> {
        let mut o =
            ContextOptions::from_env_and_flags(self.backend.as_deref(), self.adapter.as_deref())?;
        o.retune = self.retune;
        o.cancel = signal_token().clone();
        Ok(o)
    }
}

/// The program's cancellation token: raised by its first Ctrl-C or SIGTERM ([`stop_flag`]) and
/// held by every context it opens, so the engine's long work (the autotunes, the probes, the
/// t-SNE map) gives up at its next safe point.
pub(crate) fn signal_token() -> &'static crate::gpu::Cancel {
    static TOKEN: std::sync::OnceLock<crate::gpu::Cancel> = std::sync::OnceLock::new();
    TOKEN.get_or_init(crate::gpu::Cancel::new)
}

/// A list of layer widths as a flag takes it: `400,200`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Widths(pub Vec<usize>);

impl std::str::FromStr for Widths {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        crate::model::config::parse_widths(s).map(Widths)
    }
}

/// A hidden-layer activation as a flag takes it: `relu` or `tanh`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HiddenAct(pub crate::ops::Act);

impl std::str::FromStr for HiddenAct {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        crate::ops::Act::hidden_from_name(s)
            .map(HiddenAct)
            .ok_or_else(|| format!("'{s}' is not a hidden activation: use relu or tanh"))
    }
}

/// The architecture flags (train, export_web, tune). Unset flags take the checkpoint's values
/// when resuming, else the notebook's.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ModelArgs {
    /// The encoder's hidden widths, input side first, e.g. 400,200; the decoder mirrors them
    /// unless --decoder-hidden says otherwise [default: 200, or the checkpoint's].
    #[arg(long)]
    pub hidden: Option<Widths>,
    /// The decoder's hidden widths, latent side first [default: --hidden reversed].
    #[arg(long)]
    pub decoder_hidden: Option<Widths>,
    /// The activation of every hidden layer: relu or tanh (the AEVB paper's)
    /// [default: relu, or the checkpoint's].
    #[arg(long)]
    pub activation: Option<HiddenAct>,
    /// Latent dimensions [default: 10, or the checkpoint's].
    #[arg(long)]
    pub latent: Option<usize>,
    /// Reparameterised samples per observation, AEVB's L [default: 1, or the checkpoint's].
    #[arg(long)]
    pub samples: Option<usize>,
    /// Convolutional layers in front: one Conv2d(kernel 4, stride 2, padding 1) per channel
    /// count, e.g. 32,64 (28 -> 14 -> 7); the decoder mirrors them with ConvTranspose2d layers.
    /// --hidden then defaults to none [default: no conv layers, or the checkpoint's].
    #[arg(long)]
    pub conv: Option<Widths>,
    /// The decoder's likelihood: bernoulli (binary cross-entropy, the notebook's),
    /// continuous-bernoulli (normalised for values in [0, 1]), gaussian (mean sigmoid(logits),
    /// a learned σ unless --sigma) or laplace (the L1 loss: location sigmoid(logits), a learned
    /// scale b unless --sigma); an AutoencoderKL's Gaussian or Laplace has the decoder's output as
    /// its mean [default: bernoulli, or the checkpoint's; gaussian for an AutoencoderKL].
    #[arg(long)]
    pub likelihood: Option<String>,
    /// A Gaussian decoder's fixed σ, or a Laplace's fixed b (1e-6 to 1e6), instead of a learned
    /// one.
    #[arg(long)]
    pub sigma: Option<f64>,
    /// The KL term's weight β in the objective recon + β·KL (β-VAE); printed losses stay the
    /// unweighted -ELBO [default: 1, or the checkpoint's].
    #[arg(long)]
    pub beta: Option<f64>,
    /// Epochs over which the KL weight rises linearly from 0 to β, step by step (fractions
    /// allowed) [default: 0, none, or the checkpoint's].
    #[arg(long)]
    pub kl_warmup: Option<f64>,
    /// What training minimises: elbo, or iwae (the importance-weighted bound with k = --samples,
    /// at least 2) [default: elbo, or the checkpoint's].
    #[arg(long)]
    pub objective: Option<String>,
    /// A class-conditional VAE: the one-hot class label joins the input of the encoder's and of
    /// the decoder's first layer; labels come from the IDX label file or the image folder's class
    /// folders (dense models) [default: off, or the checkpoint's].
    #[arg(long)]
    pub conditional: bool,
    /// Residual blocks by output width (e.g. 200,200): each act(x + fc2(act(fc1(x)))) after the
    /// hidden layers, with a shortcut Linear for x where the widths differ; with --conv, blocks
    /// of two 3x3 convolutions after the last one, by channels, with a 1x1 conv_shortcut; the
    /// decoder's in reverse order [default: none, or the checkpoint's].
    #[arg(long)]
    pub res_blocks: Option<Widths>,
    /// The model family: vae (the notebook's and the flags above) or autoencoder-kl (diffusers'
    /// AutoencoderKL, Stable Diffusion's VAE: pixels in [−1, 1], a spatial latent, the
    /// likelihood gaussian) [default: vae, or the checkpoint's].
    #[arg(long)]
    pub arch: Option<String>,
    /// autoencoder-kl: channels of each block, e.g. 32,64 (each block but the last halves the
    /// image's sides) [default: 32,64].
    #[arg(long)]
    pub block_out_channels: Option<Widths>,
    /// autoencoder-kl: ResNet blocks per down block (the up blocks have one more) [default: 1].
    #[arg(long)]
    pub layers_per_block: Option<usize>,
    /// autoencoder-kl: channels of the spatial latent [default: 4].
    #[arg(long)]
    pub latent_channels: Option<usize>,
    /// autoencoder-kl: groups of every GroupNorm (dividing every block's channels) [default: 8].
    #[arg(long)]
    pub norm_groups: Option<usize>,
    /// autoencoder-kl: leave out the mid blocks' attention (diffusers' mid_block_add_attention
    /// false).
    #[arg(long)]
    pub no_mid_attention: bool,
}

/// The `--arch` values.
const ARCHS: [&str; 2] = ["vae", "autoencoder-kl"];

impl ModelArgs {
    /// `--sigma` as the f32 the model holds, checked as given: a value past f32's range would
    /// otherwise round to 0 or infinity and be reported as that.
    fn sigma(&self) -> crate::Result<Option<f32>> {
        match self.sigma {
            Some(s) if !(s.is_finite() && (1e-6..=1e6).contains(&s)) => Err(crate::Error::setting(
                "sigma",
                format!(
                    "must be a number from 1e-6 to 1e6 (values lie in [0, 1]), got {}",
                    crate::error::number(s)
                ),
            )),
            s => Ok(s.map(|s| s as f32)),
        }
    }

    /// `--likelihood` with `--sigma`, if given.
    fn likelihood(&self) -> crate::Result<Option<crate::model::Likelihood>> {
        match (&self.likelihood, self.sigma()?) {
            (None, None) => Ok(None),
            (None, Some(s)) => crate::model::Likelihood::parse("bernoulli", Some(s)).map(Some),
            (Some(name), sigma) => crate::model::Likelihood::parse(name, sigma).map(Some),
        }
    }

    /// A new model for the images `data` names (an image folder's size from its flags, MNIST's
    /// otherwise), refused with the fixes that apply to that data.
    pub fn new_model_for(&self, data: &DataArgs) -> Result<crate::model::VaeConfig, String> {
        let folder = data.folder_image()?;
        self.new_model(folder.unwrap_or(MNIST_IMAGE))
            .map_err(|e| sides_hint(&e, folder.is_some(), true))
    }

    /// A new model: these flags over the notebook's architecture, for images of `image`
    /// (channels, rows, columns).
    pub fn new_model(&self, image: [usize; 3]) -> crate::Result<crate::model::VaeConfig> {
        if self.is_autoencoder_kl()? {
            return self.new_autoencoder_kl(image);
        }
        if let Some(flag) = self.kl_flag() {
            return Err(crate::Error::setting(
                "arch",
                format!("--{flag} is an autoencoder-kl setting: add --arch autoencoder-kl"),
            ));
        }
        let d = crate::model::VaeConfig::default();
        let conv = self.conv.as_ref().map(|w| crate::model::ConvNet {
            widths: w.0.clone(),
            image,
        });
        // A conv model's convolutions are its hidden layers: dense ones only when asked for.
        let default_hidden = if conv.is_some() {
            vec![]
        } else {
            d.hidden.clone()
        };
        let hidden = self.hidden.as_ref().map_or(default_hidden, |w| w.0.clone());
        let cfg = crate::model::VaeConfig {
            input: image.iter().product(),
            conv,
            decoder_hidden: self
                .decoder_hidden
                .as_ref()
                .map_or_else(|| hidden.iter().rev().copied().collect(), |w| w.0.clone()),
            hidden,
            latent: self.latent.unwrap_or(d.latent),
            samples: self.samples.unwrap_or(d.samples),
            activation: self.activation.map_or(d.activation, |a| a.0),
            likelihood: self.likelihood()?.unwrap_or_default(),
            beta: self.beta.unwrap_or(d.beta),
            kl_warmup: self.kl_warmup.unwrap_or(d.kl_warmup),
            objective: match &self.objective {
                Some(o) => crate::model::Objective::parse(o)?,
                None => d.objective,
            },
            // Set from the data's classes once they are read (see `condition_on`).
            classes: 0,
            res_blocks: self
                .res_blocks
                .as_ref()
                .map_or_else(Vec::new, |w| w.0.clone()),
            kl: None,
        };
        if self.conditional && cfg.conv.is_some() {
            return Err(crate::Error::setting(
                "conditional",
                "is built for dense models: drop --conv, or --conditional",
            ));
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// `--arch autoencoder-kl` (`vae`, or none: the other models).
    fn is_autoencoder_kl(&self) -> crate::Result<bool> {
        match self.arch.as_deref() {
            None | Some("vae") => Ok(false),
            Some("autoencoder-kl") => Ok(true),
            Some(a) => Err(crate::Error::setting(
                "arch",
                format!("{a:?} is not one: use {}", ARCHS.join(" or ")),
            )),
        }
    }

    /// The first autoencoder-kl flag given, by name.
    fn kl_flag(&self) -> Option<&'static str> {
        [
            ("block-out-channels", self.block_out_channels.is_some()),
            ("layers-per-block", self.layers_per_block.is_some()),
            ("latent-channels", self.latent_channels.is_some()),
            ("norm-groups", self.norm_groups.is_some()),
            ("no-mid-attention", self.no_mid_attention),
        ]
        .into_iter()
        .find_map(|(f, set)| set.then_some(f))
    }

    /// The other models' flags that an AutoencoderKL does not take, by name.
    fn vae_flag(&self) -> Option<&'static str> {
        [
            ("hidden", self.hidden.is_some()),
            ("decoder-hidden", self.decoder_hidden.is_some()),
            ("activation", self.activation.is_some()),
            ("latent", self.latent.is_some()),
            ("conv", self.conv.is_some()),
            ("objective", self.objective.is_some()),
            ("conditional", self.conditional),
            ("res-blocks", self.res_blocks.is_some()),
        ]
        .into_iter()
        .find_map(|(f, set)| set.then_some(f))
    }

    /// A new AutoencoderKL for images of `image`: these flags over diffusers' layout (blocks
    /// 32,64, one ResNet each, 4 latent channels, 8 groups, the mid blocks' attention).
    fn new_autoencoder_kl(&self, image: [usize; 3]) -> crate::Result<crate::model::VaeConfig> {
        if let Some(flag) = self.vae_flag() {
            return Err(crate::Error::setting(
                "arch",
                format!(
                    "--{flag} does not apply to autoencoder-kl (its layers are \
                     --block-out-channels, --layers-per-block, --latent-channels, --norm-groups)"
                ),
            ));
        }
        let mut kl = crate::model::autoencoder_kl::KlConfig::new(
            image[0],
            &self
                .block_out_channels
                .as_ref()
                .map_or(vec![32, 64], |w| w.0.clone()),
            self.layers_per_block.unwrap_or(1),
            self.latent_channels.unwrap_or(4),
            self.norm_groups.unwrap_or(8),
            image[1],
        );
        kl.mid_block_add_attention = !self.no_mid_attention;
        for (flag, v) in [
            ("layers-per-block", kl.layers_per_block),
            ("latent-channels", kl.latent_channels),
            ("norm-groups", kl.norm_num_groups),
        ] {
            if !(1..=4096).contains(&v) {
                return Err(crate::Error::setting(
                    "arch",
                    format!("--{flag} {v}: give 1 to 4096"),
                ));
            }
        }
        let mut cfg = crate::model::VaeConfig::autoencoder_kl(kl, image);
        // Its default is a Gaussian, so --sigma alone fixes that Gaussian's σ.
        let likelihood = match (&self.likelihood, self.sigma()?) {
            (None, Some(s)) => Some(crate::model::Likelihood::parse("gaussian", Some(s))?),
            _ => self.likelihood()?,
        };
        if let Some(l) = likelihood {
            cfg.likelihood = l.with_identity_mean();
        }
        cfg.beta = self.beta.unwrap_or(1.0);
        cfg.kl_warmup = self.kl_warmup.unwrap_or(0.0);
        cfg.samples = self.samples.unwrap_or(1);
        cfg.validate()?;
        Ok(cfg)
    }

    /// The checkpoint's architecture; a flag that contradicts it is refused, naming both (L, the
    /// samples per observation, is a training setting and may change). With `objective_free` (a
    /// diffusers folder to fine-tune, which records weights but no loss) the likelihood, β, the
    /// warm-up and the objective are the flags' (the weights are re-laid out for a likelihood
    /// with or without a learned scale: [`relaid`]).
    pub fn agree_with(
        &self,
        ckpt: &crate::model::Checkpoint,
        objective_free: bool,
    ) -> Result<crate::model::VaeConfig, String> {
        let c = &ckpt.cfg;
        let w = crate::model::config::width_list;
        let kl = self.is_autoencoder_kl().map_err(|e| setting_message(&e))?;
        match (&c.kl, kl || self.kl_flag().is_some(), self.vae_flag()) {
            (Some(_), _, Some(flag)) => {
                return Err(format!(
                    "--{flag} does not apply to the checkpoint's autoencoder-kl: drop the flag"
                ));
            }
            (None, true, _) => {
                return Err(
                    "--arch autoencoder-kl (or its flags) contradicts the checkpoint, which is \
                     not an AutoencoderKL: drop the flag"
                        .to_string(),
                );
            }
            (Some(_), _, None) if self.kl_flag().is_some() => {
                return Err(format!(
                    "--{}: the architecture comes from the checkpoint ({}): drop the flag",
                    self.kl_flag().unwrap_or_default(),
                    c.describe()
                ));
            }
            _ => {}
        }
        if let Some(h) = &self.hidden
            && h.0 != c.hidden
        {
            return refuse("hidden", w(&h.0), w(&c.hidden));
        }
        if let Some(h) = &self.decoder_hidden
            && h.0 != c.decoder_hidden
        {
            return refuse("decoder-hidden", w(&h.0), w(&c.decoder_hidden));
        }
        let ckpt_conv = c
            .conv
            .as_ref()
            .map(|n| n.widths.clone())
            .unwrap_or_default();
        if let Some(cv) = &self.conv
            && cv.0 != ckpt_conv
        {
            let has = if ckpt_conv.is_empty() {
                "none".to_string()
            } else {
                w(&ckpt_conv)
            };
            return refuse("conv", w(&cv.0), has);
        }
        if let Some(l) = self.latent
            && l != c.latent
        {
            return refuse("latent", l.to_string(), c.latent.to_string());
        }
        if let Some(r) = &self.res_blocks
            && r.0 != c.res_blocks
        {
            let has = if c.res_blocks.is_empty() {
                "none".to_string()
            } else {
                w(&c.res_blocks)
            };
            return refuse("res-blocks", w(&r.0), has);
        }
        let mut cfg = c.clone();
        if let Some(a) = self.activation
            && a.0 != c.activation
        {
            if ckpt.activation_recorded {
                return refuse("activation", a.0.to_string(), c.activation.to_string());
            }
            // A bare state_dict cannot say which activation it was trained with.
            cfg.activation = a.0;
        }
        self.objective_over(ckpt, &mut cfg, objective_free)?;
        if self.conditional && !c.is_conditional() {
            return Err(
                "--conditional contradicts the checkpoint (an unconditional model); the \
                        architecture comes from the checkpoint: drop the flag"
                    .to_string(),
            );
        }
        if let Some(s) = self.samples {
            cfg.samples = s;
        }
        cfg.validate().map_err(|e| setting_message(&e))?;
        Ok(cfg)
    }

    /// The objective's flags (likelihood, β, warm-up, objective) over the checkpoint's, into
    /// `cfg`: refused where they contradict it, unless `objective_free` (see [`Self::agree_with`]).
    fn objective_over(
        &self,
        ckpt: &crate::model::Checkpoint,
        cfg: &mut crate::model::VaeConfig,
        objective_free: bool,
    ) -> Result<(), String> {
        let c = &ckpt.cfg;
        // --sigma alone speaks of the checkpoint's likelihood, not of the default one.
        let given = match (
            &self.likelihood,
            self.sigma().map_err(|e| setting_message(&e))?,
        ) {
            (None, Some(s)) => Some(
                crate::model::Likelihood::parse(c.likelihood.name(), Some(s))
                    .map_err(|e| setting_message(&e))?,
            ),
            _ => self.likelihood().map_err(|e| setting_message(&e))?,
        };
        // An AutoencoderKL's Gaussian takes the decoder's output as its mean.
        let given = given.map(|l| match c.kl {
            Some(_) => l.with_identity_mean(),
            None => l,
        });
        if let Some(l) = given
            && l != c.likelihood
        {
            // A bare state_dict cannot say whether it was a Bernoulli or a continuous Bernoulli.
            let free = objective_free
                || !ckpt.activation_recorded && l.learns_scale() == c.likelihood.learns_scale();
            if !free {
                return refuse("likelihood", l.to_string(), c.likelihood.to_string());
            }
            cfg.likelihood = l;
        }
        if let Some(b) = self.beta
            && b != c.beta
        {
            if !objective_free {
                return refuse("beta", b.to_string(), c.beta.to_string());
            }
            cfg.beta = b;
        }
        if let Some(e) = self.kl_warmup
            && e != c.kl_warmup
        {
            if !objective_free {
                return refuse("kl-warmup", e.to_string(), c.kl_warmup.to_string());
            }
            cfg.kl_warmup = e;
        }
        if let Some(o) = &self.objective {
            let o = crate::model::Objective::parse(o).map_err(|e| setting_message(&e))?;
            if o != c.objective {
                if !objective_free {
                    return refuse("objective", o.name().into(), c.objective.name().into());
                }
                cfg.objective = o;
            }
        }
        Ok(())
    }
}

/// A flag that contradicts a checkpoint, refused naming both.
fn refuse<T>(flag: &str, given: String, has: String) -> Result<T, String> {
    Err(format!(
        "--{flag} {given} contradicts the checkpoint ({flag} = {has}); the architecture comes \
         from the checkpoint: drop the flag"
    ))
}

/// `ckpt`'s weights laid out for `cfg`, a model of the same layers whose likelihood may now have
/// a learned scale or not (a fine-tuned diffusers folder's): each tensor copied by name, a new
/// learned scale starting at s = 1 (log s = 0).
pub(crate) fn relaid(ckpt: &crate::model::Checkpoint, cfg: &crate::model::VaeConfig) -> Vec<f32> {
    let (old, new) = (
        crate::model::ParamLayout::new(&ckpt.cfg),
        crate::model::ParamLayout::new(cfg),
    );
    let mut params = vec![0.0; new.len];
    for s in &new.specs {
        if let Some(o) = old.get(&s.name) {
            s.write(&mut params, &o.read(&ckpt.params));
        }
    }
    params
}

/// What `eval` and `pictures` read a checkpoint as: its architecture (the flags they take must
/// agree with it; a bare state_dict's assumed activation is said) and the data to read (the
/// run's own folder unless `--data-dir` says otherwise).
pub(crate) fn reading_checkpoint(
    ckpt: &crate::model::Checkpoint,
    path: &std::path::Path,
    activation: Option<HiddenAct>,
    likelihood: Option<String>,
    data: &DataArgs,
) -> Result<(crate::model::VaeConfig, DataArgs), String> {
    let cfg = ModelArgs {
        activation,
        likelihood,
        ..Default::default()
    }
    .agree_with(ckpt, false)?;
    if !ckpt.activation_recorded && activation.is_none() {
        out::note!(
            "warning: {} does not say which activation its hidden layers use (a bare state_dict): \
             assuming relu; pass --activation tanh if it was trained with tanh",
            path.display()
        );
    }
    Ok((cfg, data.for_checkpoint(ckpt)?))
}

/// A conditional model on `data`: a new one (`classes` 0 in `cfg`, `--conditional` asked) takes
/// the data's classes; a checkpoint's must be the data's, by count and, where it recorded them,
/// by name. Unlabelled images (a flat folder) are refused. An unconditional model is returned
/// as it is.
pub fn condition_on(
    mut cfg: crate::model::VaeConfig,
    asked: bool,
    ckpt_names: &[String],
    data: &crate::data::ImageSet,
    source: &std::path::Path,
) -> Result<crate::model::VaeConfig, String> {
    if !asked && !cfg.is_conditional() {
        return Ok(cfg);
    }
    let src = source.display();
    if !data.is_labelled() {
        return Err(format!(
            "--conditional needs labelled images, but {src} is a flat folder of images without \
             class folders: put each class's images in a folder of its own \
             ({src}/<class>/*.png), or drop --conditional"
        ));
    }
    let n = data.classes.len();
    if !cfg.is_conditional() {
        if n < 2 {
            return Err(format!(
                "--conditional needs at least 2 classes, but {src} has one ({}): add class \
                 folders, or drop --conditional",
                data.classes.join(", ")
            ));
        }
        cfg.classes = n;
    } else if cfg.classes != n || (!ckpt_names.is_empty() && ckpt_names != data.classes) {
        let names = |v: &[String]| match v.is_empty() {
            true => "names not recorded".to_string(),
            false => v.join(", "),
        };
        return Err(format!(
            "the checkpoint's model is conditional on {} classes ({}), but {src} has {n} ({}): \
             use the data it was trained on",
            cfg.classes,
            names(ckpt_names),
            names(&data.classes)
        ));
    }
    cfg.validate().map_err(|e| setting_message(&e))?;
    Ok(cfg)
}

/// The data a program runs on, and the split it used (for the checkpoint's metadata).
pub struct LoadedData {
    pub train: crate::data::ImageSet,
    pub test: crate::data::ImageSet,
    /// The share held out as the test set (0 when the data came split).
    pub test_fraction: f64,
    /// The seed that chose the held-out images.
    pub split_seed: u64,
    /// Set for a large folder that was decoded (not read from a cache): the key to cache it under.
    pub cache_key: Option<u64>,
    /// Files skipped because they did not decode (kept with the cache).
    pub skipped: Vec<(std::path::PathBuf, String)>,
}

impl LoadedData {
    /// Cache a large folder's decoded sets in the run's folder (a failure only warns: the cache
    /// saves time, nothing depends on it).
    pub fn cache_in(&self, run_dir: &std::path::Path) {
        if let Some(key) = self.cache_key {
            let path = run_dir.join(crate::data::folder::CACHE_FILE);
            let written =
                crate::data::ImageCache::write(&path, key, &self.train, &self.test, &self.skipped);
            match written {
                Ok(()) => out::say!("cached the decoded images in {}", path.display()),
                Err(e) => note!("warning: the decoded images were not cached: {e}"),
            }
        }
    }
}

/// The data folder when none is given.
pub const DEFAULT_DATA_DIR: &str = "data/mnist";

/// Where the images come from (train, eval, pictures, export_web).
#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// MNIST-style IDX files (Fashion-MNIST and KMNIST use the same names), or a folder of images:
    /// `root/<class>/*.png|jpg`, a flat folder, or train/ and test/ folders of those.
    /// [default: data/mnist; for eval and pictures, the data the checkpoint's run trained on]
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Image folders: 1 (grayscale) or 3 (RGB) [default: 1, or the checkpoint's].
    #[arg(long)]
    pub channels: Option<usize>,
    /// Image folders: resize every image to this many pixels square (triangle filter)
    /// [default: 28, or the checkpoint's].
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Image folders without train/ and test/: the share held out as the test set, chosen with
    /// the seed [default: 0.1, or the checkpoint's].
    #[arg(long)]
    pub test_fraction: Option<f64>,
}

impl DataArgs {
    /// The data folder: `--data-dir`, else `data/mnist`.
    pub fn dir(&self) -> std::path::PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| std::path::PathBuf::from(DEFAULT_DATA_DIR))
    }

    /// For a program reading a checkpoint: with no `--data-dir`, the folder its run trained on
    /// (said on stdout; refused, naming it, when it is gone), else `data/mnist`.
    pub fn for_checkpoint(&self, ckpt: &crate::model::Checkpoint) -> Result<DataArgs, String> {
        let recorded = &ckpt.progress.data_dir;
        if self.data_dir.is_some() || recorded.is_empty() {
            return Ok(self.clone());
        }
        let dir = std::path::PathBuf::from(recorded);
        if !dir.exists() {
            return Err(format!(
                "the checkpoint's run trained on {recorded}, which is not there any more: pass \
                 --data-dir with the same images"
            ));
        }
        out::say!("data: {recorded} (the checkpoint's run's; --data-dir reads other images)");
        Ok(DataArgs {
            data_dir: Some(dir),
            ..self.clone()
        })
    }

    /// The input size a new run's image folder will give (channels · size²), known before any
    /// decoding, with the folder options checked; `None` for IDX files (their header says).
    pub fn folder_image(&self) -> Result<Option<[usize; 3]>, String> {
        let dir = self.dir();
        if crate::data::is_idx_dir(&dir) {
            return Ok(None);
        }
        // Refused here, before a model is sized for a folder that is not there.
        if !dir.is_dir() {
            return Err(format!(
                "{}: data directory not found: pass --data-dir pointing at MNIST's IDX files or \
                 at a folder of images",
                dir.display()
            ));
        }
        let opts = self.folder_options(0);
        opts.validate().map_err(|e| setting_message(&e))?;
        Ok(Some([opts.channels, opts.size, opts.size]))
    }

    /// The folder options these flags give, defaults for the rest.
    fn folder_options(&self, seed: u64) -> crate::data::FolderOptions {
        let d = crate::data::FolderOptions::default();
        crate::data::FolderOptions {
            channels: self.channels.unwrap_or(d.channels),
            size: self.image_size.unwrap_or(d.size),
            test_fraction: self.test_fraction.unwrap_or(d.test_fraction),
            seed,
        }
    }

    /// Load the training and test sets, with a progress bar while a large folder decodes. With a
    /// checkpoint, its image shape and split are the defaults, and flags that contradict them
    /// are refused.
    pub fn load(
        &self,
        seed: u64,
        ckpt: Option<&crate::model::Checkpoint>,
        run_dir: Option<&std::path::Path>,
    ) -> Result<LoadedData, String> {
        let mut opts = self.folder_options(seed);
        if let Some(c) = ckpt {
            let [ch, rows, cols] = c.progress.image;
            let agree = |flag: &str, given: Option<String>, has: String| match given {
                Some(g) if g != has => Err(format!(
                    "--{flag} {g} contradicts the checkpoint's images ({flag} = {has}): drop the flag"
                )),
                _ => Ok(()),
            };
            if ch > 0 {
                agree(
                    "channels",
                    self.channels.map(|v| v.to_string()),
                    ch.to_string(),
                )?;
                opts.channels = ch;
                if rows == cols {
                    agree(
                        "image-size",
                        self.image_size.map(|v| v.to_string()),
                        rows.to_string(),
                    )?;
                    opts.size = rows;
                }
            }
            if c.progress.test_fraction > 0.0 {
                agree(
                    "test-fraction",
                    self.test_fraction.map(|v| v.to_string()),
                    c.progress.test_fraction.to_string(),
                )?;
                opts.test_fraction = c.progress.test_fraction;
                // The run's split, whatever seed this program was given.
                opts.seed = c.progress.split_seed;
            }
        }
        let pb = std::sync::OnceLock::<indicatif::ProgressBar>::new();
        let progress = |done: usize, all: usize| {
            if all < 2000 {
                return;
            }
            let bar = pb.get_or_init(|| {
                let b = indicatif::ProgressBar::new(all as u64);
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "decoding images [{bar:30}] {pos}/{len}  {per_sec}  ETA {eta}",
                ) {
                    b.set_style(style.progress_chars("=> "));
                }
                b
            });
            bar.set_position(done as u64);
        };
        let cache = run_dir.map(|d| d.join(crate::data::folder::CACHE_FILE));
        let loaded = crate::data::load_data(&self.dir(), &opts, cache.as_deref(), &progress);
        if let Some(b) = pb.get() {
            b.finish_and_clear();
        }
        let (train, test, report) = loaded.map_err(|e| setting_message(&e))?;
        // The images must have the shape the checkpoint's model was trained on, not only its
        // pixel count (28x56 and 56x28 have the same).
        if let Some(c) = ckpt
            && let [ch, rows, cols] = c.progress.image
            && rows > 0
            && (train.channels, train.rows, train.cols) != (ch, rows, cols)
        {
            return Err(format!(
                "{} holds {}x{} images of {} channel(s), but the checkpoint's model was trained \
                 on {rows}x{cols} images of {ch} channel(s): point --data-dir at the data it was \
                 trained on",
                self.dir().display(),
                train.rows,
                train.cols,
                train.channels
            ));
        }
        if report.is_none() {
            // IDX files: the folder options apply to image folders only.
            let given = |flag: &str, v: Option<usize>, has: usize| match v {
                Some(v) if v != has => Err(format!(
                    "{}: holds IDX files of {}x{} grayscale images: --{flag} {v} applies to image \
                     folders (drop it)",
                    self.dir().display(),
                    train.rows,
                    train.cols
                )),
                _ => Ok(()),
            };
            given("channels", self.channels, train.channels)?;
            given("image-size", self.image_size, train.rows)?;
        }
        let test_fraction = match &report {
            Some(r) if !r.presplit => opts.test_fraction,
            _ => 0.0,
        };
        if let Some(f) = self.test_fraction
            && test_fraction == 0.0
        {
            note!(
                "warning: --test-fraction {f} is not used: {} comes split into a training and a \
                 test set",
                self.dir().display()
            );
        }
        let cache_key = report
            .as_ref()
            .filter(|r| r.from_cache.is_none())
            .and_then(|r| r.cache_key);
        let skipped = report
            .as_ref()
            .map(|r| r.skipped.clone())
            .unwrap_or_default();
        if let Some(r) = report {
            out::say!(
                "images: {} train / {} test from {} ({}), {} class(es), {}x{}, {} channel(s)",
                train.count,
                test.count,
                self.dir().display(),
                if r.presplit {
                    "its train/ and test/ folders".to_string()
                } else {
                    format!("{} held out with seed {}", opts.test_fraction, opts.seed)
                },
                train.classes.len(),
                train.rows,
                train.cols,
                train.channels
            );
            if let Some(w) = r.warning() {
                note!("warning: {w}");
            }
            if let Some(c) = &r.from_cache {
                out::say!("images read from {} (decoded earlier)", c.display());
            }
        }
        Ok(LoadedData {
            train,
            test,
            test_fraction,
            split_seed: opts.seed,
            cache_key,
            skipped,
        })
    }
}

/// A program's two entry points, the same for every program: `main()` parses the process's
/// arguments, `execute(args)` runs parsed ones (the binary's subcommands call it) with a private
/// runtime dir for Mesa, printing errors as `error: …` with exit status 1 (see [`exit_with`]).
/// The module defines `Args` (clap) and `fn run(Args) -> Result<ExitCode, Box<dyn Error>>`.
macro_rules! program_entry_points {
    () => {
        /// Parse the process's arguments and run.
        pub fn main() -> std::process::ExitCode {
            execute(<Args as clap::Parser>::parse())
        }

        /// Run with parsed arguments; errors are printed as `error: …` with exit status 1.
        pub fn execute(args: Args) -> std::process::ExitCode {
            super::ensure_runtime_dir();
            super::out::install_logger();
            super::exit_with(run(args))
        }
    };
}
pub(crate) use program_entry_points;

/// The flag that sets a library setting (`batch size` → `--batch-size`), where a program has one.
fn flag_of(setting: &str) -> Option<&'static str> {
    Some(match setting {
        "batch size" => "--batch-size",
        "lr" => "--lr",
        "optimizer" => "--optimizer",
        "weight decay" => "--weight-decay",
        "momentum" => "--momentum",
        "nesterov" => "--nesterov",
        "lr schedule" => "--lr-schedule",
        "warmup steps" => "--warmup-steps",
        "clip grad norm" => "--clip-grad-norm",
        "hidden" => "--hidden",
        "latent" => "--latent",
        "samples" => "--samples",
        "epochs" => "--epochs",
        "likelihood" => "--likelihood",
        "sigma" => "--sigma",
        "beta" => "--beta",
        "kl warmup" => "--kl-warmup",
        "objective" => "--objective",
        "decoder hidden" => "--decoder-hidden",
        "activation" => "--activation",
        "conv" => "--conv",
        "conditional" => "--conditional",
        "res blocks" => "--res-blocks",
        "block out channels" => "--block-out-channels",
        "reference steps" => "--reference-steps",
        "channels" => "--channels",
        "image size" => "--image-size",
        "test fraction" => "--test-fraction",
        _ => return None,
    })
}

/// An AutoencoderKL refused for the adapter's limits at its images' size (`encode`, `decode`):
/// the error with the largest square image (and latent) of one image at a time that fits, found
/// by the same check; other errors as they are.
pub(crate) fn image_size_hint(
    ctx: &crate::gpu::GpuContext,
    cfg: &crate::model::VaeConfig,
    e: &crate::Error,
) -> String {
    let (crate::Error::AdapterLimit { .. }, Some(k)) = (e, &cfg.kl) else {
        return e.to_string();
    };
    let [c, h, w] = k.image;
    let f = 1usize << k.config.downsamples();
    let fits = |s: usize| {
        let cfg = cfg.clone().for_images(c, s * f, s * f);
        crate::model::GpuVae::check_fits(ctx, &cfg, 1).is_ok()
    };
    if !fits(1) {
        return format!("{e}: not even {f}x{f} images fit this adapter");
    }
    // The largest latent side s with fits(s), given fits(1) and (at this size) not fits(max).
    let (mut lo, mut hi) = (1, h.max(w) / f);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) { lo = mid } else { hi = mid }
    }
    format!(
        "{e}: at most {s}x{s} images ({lo}x{lo} latents) fit one binding of this adapter; encode \
         or decode tiles of that size, or use an adapter with a larger \
         max_storage_buffer_binding_size",
        s = lo * f
    )
}

/// A model whose layers do not divide the images' sides, with the fixes that apply: an
/// `--image-size` the layers divide where the images come from a folder (and such a size is
/// within the largest), fewer layers where the layers come from flags; other errors as
/// [`setting_message`] prints them.
pub(crate) fn sides_hint(e: &crate::Error, folder: bool, from_flags: bool) -> String {
    let crate::Error::ImageSides {
        setting,
        halvings,
        rows,
        cols,
        ..
    } = e
    else {
        return setting_message(e);
    };
    let div = 1usize << halvings.min(&31);
    let mut fixes = Vec::new();
    if folder && div <= crate::data::folder::MAX_IMAGE_SIZE {
        let size = ((*rows).max(div) / div * div).min(crate::data::folder::MAX_IMAGE_SIZE);
        fixes.push(format!("an --image-size divisible by {div} (e.g. {size})"));
    }
    let fit = crate::error::halvings_fit(*rows, *cols) as usize;
    match (from_flags, *setting, flag_of(setting)) {
        // Each block after the first halves the sides.
        (true, "block out channels", Some(flag)) => {
            fixes.push(format!("at most {} {flag} widths", fit + 1))
        }
        (true, _, Some(flag)) if fit > 0 => fixes.push(format!("at most {fit} {flag} layer(s)")),
        _ => {}
    }
    if fixes.is_empty() {
        fixes.push(format!("images whose sides are divisible by {div}"));
    }
    format!("{e}: choose {}", fixes.join(", or "))
}

/// A library error as the message `exit_with` prints (a setting named by its flag).
pub(crate) fn setting_message(e: &crate::Error) -> String {
    match e {
        crate::Error::Setting { setting, problem } => match flag_of(setting) {
            Some(flag) => format!("{flag} {problem}"),
            None => e.to_string(),
        },
        e => e.to_string(),
    }
}

/// A program's result as an exit status: errors print as `error: …` on stderr with status 1; a
/// setting out of range is named by its flag.
pub(crate) fn exit_with(result: Result<ExitCode, Box<dyn std::error::Error>>) -> ExitCode {
    match result {
        Ok(code) if out::stdout_closed() && code == ExitCode::SUCCESS => {
            ExitCode::from(out::EXIT_OUTPUT_CLOSED)
        }
        Ok(code) => code,
        Err(e) => {
            match e.downcast_ref::<crate::Error>() {
                Some(crate::Error::Setting { setting, problem }) if flag_of(setting).is_some() => {
                    note!("error: {} {problem}", flag_of(setting).unwrap_or_default())
                }
                _ => note!("error: {e}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// A path as a shell reads it: as is when it is plain, else in single quotes.
pub(crate) fn shell_quote(p: &std::path::Path) -> String {
    let s = p.display().to_string();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:,=@".contains(c));
    if plain {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The command that resumes a run, naming the program actually run: `vae-wgpu train …` for the
/// binary, `cargo run --release --example train -- …` for the example.
pub(crate) fn resume_command(program: &str, checkpoint: &std::path::Path, epochs: usize) -> String {
    let args = format!("--resume {} --epochs {epochs}", shell_quote(checkpoint));
    command_line(program, &args)
}

/// `program` (train, pictures, …) with `args` as the user runs it: through the binary that is
/// running (`vae-wgpu pictures …`), else as the example (`cargo run --release --example …`).
pub(crate) fn command_line(program: &str, args: &str) -> String {
    let exe = std::env::args_os().next().map(std::path::PathBuf::from);
    let is_binary = exe
        .as_ref()
        .and_then(|p| p.file_stem())
        .is_some_and(|n| n == "vae-wgpu");
    match exe {
        Some(exe) if is_binary => format!("{} {program} {args}", shell_quote(&exe)),
        _ => format!("cargo run --release --example {program} -- {args}"),
    }
}

/// Mesa prints `error: XDG_RUNTIME_DIR is invalid or not set` when it has none: give the process
/// a private one (mode 0700) so the only `error:` lines a user sees are ours. Call before any
/// thread starts (it sets an environment variable).
pub(crate) fn ensure_runtime_dir() {
    let set = std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|v| !v.is_empty());
    if set || !cfg!(unix) {
        return;
    }
    let dir = std::env::temp_dir().join("vae-wgpu-runtime");
    if std::fs::create_dir_all(&dir).is_ok() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        // SAFETY: called at program start, before any other thread exists.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
    }
}

/// The optimizer flags (train, export_web). Unset flags take the checkpoint's values when
/// resuming, else PyTorch's defaults for the optimizer (the lr the notebook's 0.01).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OptimizerArgs {
    /// adam, adamw (decoupled weight decay) or sgd [default: adam, or the checkpoint's].
    #[arg(long)]
    pub optimizer: Option<String>,
    /// L2 penalty for adam and sgd, decoupled decay for adamw [default: 0; adamw 0.01, as PyTorch].
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// SGD's momentum, in [0, 1) (dampening 0) [default: 0].
    #[arg(long)]
    pub momentum: Option<f32>,
    /// Nesterov momentum (SGD with --momentum > 0).
    #[arg(long)]
    pub nesterov: bool,
    /// The learning rate over the run: constant, or cosine (from lr after the warm-up to 0 at the
    /// run's last step) [default: constant].
    #[arg(long)]
    pub lr_schedule: Option<String>,
    /// Linear warm-up over this many steps, from lr/N at the first step to lr at step N
    /// [default: 0].
    #[arg(long)]
    pub warmup_steps: Option<i64>,
    /// Clip the gradients to this global L2 norm before each update (torch.nn.utils.clip_grad_norm_).
    #[arg(long)]
    pub clip_grad_norm: Option<f32>,
}

impl OptimizerArgs {
    /// The optimizer these flags and `--lr` ask for, over a run of `total_steps` steps: unset
    /// flags take `base`'s values (a checkpoint's) where the optimizer is the same, else PyTorch's
    /// defaults. Bad values are refused naming the flag, before any GPU work.
    pub fn config(
        &self,
        base: Option<&crate::optim::OptimizerConfig>,
        lr: Option<Lr>,
        total_steps: u64,
    ) -> crate::Result<crate::optim::OptimizerConfig> {
        use crate::optim::{LrShape, OptimizerConfig, OptimizerKind};
        let kind = match &self.optimizer {
            Some(name) => OptimizerKind::parse(name).ok_or_else(|| {
                crate::Error::setting(
                    "optimizer",
                    format!("must be one of adam, adamw, sgd, got '{name}'"),
                )
            })?,
            None => base.map_or(OptimizerKind::Adam, |b| b.kind),
        };
        let mut c = match base {
            Some(b) if b.kind == kind => *b,
            Some(b) => OptimizerConfig {
                lr: b.lr,
                ..OptimizerConfig::of(kind)
            },
            None => OptimizerConfig::of(kind),
        };
        if let Some(l) = lr {
            c.lr = l.0;
        }
        if let Some(w) = self.weight_decay {
            c.weight_decay = w;
        }
        if let Some(m) = self.momentum {
            c.momentum = m;
        }
        c.nesterov |= self.nesterov;
        if let Some(s) = &self.lr_schedule {
            c.schedule.shape = LrShape::parse(s).ok_or_else(|| {
                crate::Error::setting(
                    "lr schedule",
                    format!("must be constant or cosine, got '{s}'"),
                )
            })?;
        }
        if let Some(n) = self.warmup_steps {
            c.schedule.warmup_steps = u64::try_from(n).map_err(|_| {
                crate::Error::setting("warmup steps", format!("must be ≥ 0, got {n}"))
            })?;
        }
        if let Some(x) = self.clip_grad_norm {
            c.clip_grad_norm = Some(x);
        }
        c.schedule.total_steps = total_steps;
        c.validate()?;
        Ok(c)
    }
}

/// A learning rate as a flag: checked as typed, so `--lr 1e-50` (0 in f32) is refused with the
/// value as given rather than "got 0".
#[derive(Clone, Copy, Debug)]
pub struct Lr(pub f32);

impl std::str::FromStr for Lr {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("--lr must be a finite number > 0 that f32 can hold, got {text}");
        let v: f64 = text.trim().parse().map_err(|_| bad())?;
        let f = v as f32;
        if v.is_finite() && v > 0.0 && f > 0.0 && f.is_finite() {
            Ok(Lr(f))
        } else {
            Err(bad())
        }
    }
}

impl std::fmt::Display for Lr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Catch Ctrl-C and SIGTERM from here on: the first raises the returned flag, which the program
/// checks at its safe points, and asks the engine's long work (the autotune, the t-SNE map) to
/// give up; a second ends the process at once (status 130: every file is written atomically,
/// so what is on disk is whole). Installed before any GPU work or output, so a signal that
/// arrives while the program starts up is caught too, never the default death.
pub(crate) fn stop_flag() -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>, String> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
            note!("second interrupt: stopping now");
            std::process::exit(130);
        }
        signal_token().cancel();
    })
    .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    Ok(stop)
}
