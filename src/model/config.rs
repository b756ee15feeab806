use crate::data::folder::MAX_CLASSES;
use crate::error::{Error, Result};
use crate::kernels::reparam_kl::Logvar;
use crate::model::autoencoder_kl::KlConfig;
use crate::model::likelihood::Likelihood;
use crate::ops::Act;

/// Every convolution of `--conv`: kernel 4, stride 2, padding 1, so each halves the image's sides
/// (and each transposed convolution of the decoder doubles them).
pub const CONV_KERNEL: usize = 4;
pub const CONV_STRIDE: usize = 2;
pub const CONV_PADDING: usize = 1;

/// The convolutional front of a model (`--conv 32,64`): one `Conv2d(4, 2, 1)` per width on the
/// encoder side, mirrored by `ConvTranspose2d(4, 2, 1)`s on the decoder side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvNet {
    /// Output channels of each Conv2d, input side first.
    pub widths: Vec<usize>,
    /// The images' channels, rows, columns (`input` is their product).
    pub image: [usize; 3],
}

/// What training minimises (`--objective`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Objective {
    /// The negative ELBO: reconstruction (averaged over the L samples) + β·KL (analytic).
    #[default]
    Elbo,
    /// The importance-weighted bound of Burda et al. (2015) with k = L samples:
    /// −log (1/L Σ_l w_l), w_l = p(x|z_l) p(z_l) / q(z_l|x); its gradient weighs each sample's
    /// −log w_l by its normalised weight (no analytic KL).
    Iwae,
}

impl Objective {
    pub fn name(&self) -> &'static str {
        match self {
            Objective::Elbo => "elbo",
            Objective::Iwae => "iwae",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "elbo" => Ok(Objective::Elbo),
            "iwae" => Ok(Objective::Iwae),
            _ => Err(Error::setting(
                "objective",
                format!("{name:?} is not one: use elbo or iwae"),
            )),
        }
    }
}

/// The Bernoulli VAE's architecture: an encoder `input -> [conv layers] -> hidden[0] -> … ->
/// (mu, logvar)` of `latent` each, and a decoder `latent -> decoder_hidden[0] -> … -> input`
/// logits (with conv layers: `… -> Linear to the last conv's features -> ConvTranspose2d … ->
/// logits`), every hidden layer followed by `activation`. The layers themselves, with their
/// names, are [`crate::model::ParamLayout`]'s list.
#[derive(Clone, Debug, PartialEq)]
pub struct VaeConfig {
    pub input: usize,
    /// The encoder's hidden widths, input side first.
    pub hidden: Vec<usize>,
    /// The decoder's hidden widths, latent side first (by default the encoder's, mirrored).
    pub decoder_hidden: Vec<usize>,
    pub latent: usize,
    /// L: reparameterised samples per observation (their reconstruction terms are averaged).
    pub samples: usize,
    /// The activation of every hidden layer.
    pub activation: Act,
    /// Convolutional layers in front of the dense ones (`--conv`), or none.
    pub conv: Option<ConvNet>,
    /// The decoder's likelihood p(x | z) (`--likelihood`; Bernoulli, the notebook's).
    pub likelihood: Likelihood,
    /// The KL term's weight β in the objective minimised, reconstruction + β·KL (`--beta`; 1, the
    /// ELBO).
    pub beta: f64,
    /// Epochs over which the KL weight rises linearly from 0 to β, step by step (`--kl-warmup`;
    /// 0: none; fractions allowed).
    pub kl_warmup: f64,
    /// The ELBO (default) or the IWAE bound with k = `samples` (`--objective`).
    pub objective: Objective,
    /// Classes of a class-conditional model (`--conditional`: the one-hot label joins the input
    /// of the encoder's first layer and of the decoder's first layer); 0: unconditional.
    pub classes: usize,
    /// Residual blocks after the hidden layers (`--res-blocks`): their output widths on the
    /// encoder side, in reverse order on the decoder's; each `act(s + fc2(act(fc1(x))))` with `s`
    /// the block's input, or its `shortcut` Linear when the widths differ (`model::body`).
    pub res_blocks: Vec<usize>,
    /// diffusers' AutoencoderKL (`--arch autoencoder-kl`, or a diffusers folder) in place of the
    /// layers above (`hidden`, `conv`, `res_blocks` then empty), on images of `image`.
    pub kl: Option<KlModel>,
}

/// An AutoencoderKL's config and the images it runs on (`[C, H, W]`; its latent is
/// `[latent_channels, H/2^n, W/2^n]`, n = [`KlConfig::downsamples`]).
#[derive(Clone, Debug, PartialEq)]
pub struct KlModel {
    pub config: KlConfig,
    pub image: [usize; 3],
}

impl Default for VaeConfig {
    /// The notebook's model: 784 -> 200 -> 10, ReLU.
    fn default() -> Self {
        VaeConfig::mirrored(784, &[200], 10)
    }
}

/// Most hidden layers per side.
pub const MAX_HIDDEN_LAYERS: usize = 16;

/// The largest value any size of a configuration takes (widths, latent, samples per image).
pub const MAX_SIZE: usize = 1 << 20;

impl VaeConfig {
    /// A model whose decoder mirrors the encoder's hidden widths (`[400, 200]` ->
    /// decoder `[200, 400]`), ReLU, L = 1.
    pub fn mirrored(input: usize, hidden: &[usize], latent: usize) -> Self {
        VaeConfig {
            input,
            hidden: hidden.to_vec(),
            decoder_hidden: hidden.iter().rev().copied().collect(),
            latent,
            samples: 1,
            activation: Act::Relu,
            conv: None,
            likelihood: Likelihood::Bernoulli,
            beta: 1.0,
            kl_warmup: 0.0,
            objective: Objective::Elbo,
            classes: 0,
            res_blocks: Vec::new(),
            kl: None,
        }
    }

    /// diffusers' AutoencoderKL of `config` on `image` (`[C, H, W]`) images: its latent is the
    /// encoder's spatial `[latent_channels, h, w]`, its likelihood by default a Gaussian of learned
    /// σ whose mean is the decoder's output (pixels in [−1, 1]).
    pub fn autoencoder_kl(config: KlConfig, image: [usize; 3]) -> Self {
        let [lc, h, w] = config.latent_image(image);
        VaeConfig {
            hidden: Vec::new(),
            decoder_hidden: Vec::new(),
            likelihood: Likelihood::GaussianIdentity { sigma: None },
            kl: Some(KlModel { config, image }),
            ..VaeConfig::mirrored(image.iter().product(), &[], lc * h * w)
        }
    }

    /// Whether the model reads pixels in [−1, 1] (`(p/255 − 0.5)/0.5`, diffusers' VAE training)
    /// rather than [0, 1] (`p/255`, torchvision's ToTensor): an AutoencoderKL does, and its
    /// decoder's output (the likelihood's mean) is on the same scale.
    pub fn signed_pixels(&self) -> bool {
        self.kl.is_some()
    }

    /// A pixel `p` (0–255) as the model reads it.
    pub fn pixel_value(&self, p: u8) -> f32 {
        let unit = p as f32 / 255.0;
        if self.signed_pixels() {
            (unit - 0.5) / 0.5
        } else {
            unit
        }
    }

    /// A value on the model's pixel scale (an input, or the likelihood's mean) as a picture's, in
    /// [0, 1].
    pub fn display_value(&self, v: f32) -> f32 {
        if self.signed_pixels() {
            (v * 0.5 + 0.5).clamp(0.0, 1.0)
        } else {
            v
        }
    }

    /// How the posterior reads its logvar: clamped to [−30, 20] in an AutoencoderKL, as diffusers'
    /// `DiagonalGaussianDistribution`; as it is otherwise.
    pub fn logvar(&self) -> Logvar {
        match self.kl {
            Some(_) => Logvar::Clamped,
            None => Logvar::AsIs,
        }
    }

    /// The `--conv` model for images of `image` (channels, rows, columns): `widths` Conv2d layers,
    /// then the dense `hidden` layers (often none), the heads, and the mirrored decoder.
    pub fn convolutional(
        image: [usize; 3],
        widths: &[usize],
        hidden: &[usize],
        latent: usize,
    ) -> Self {
        VaeConfig {
            conv: Some(ConvNet {
                widths: widths.to_vec(),
                image,
            }),
            ..VaeConfig::mirrored(image.iter().product(), hidden, latent)
        }
    }

    /// The same model for images of `channels × rows × cols` (the input size follows; a conv
    /// model's image shape too).
    pub fn for_images(mut self, channels: usize, rows: usize, cols: usize) -> Self {
        self.input = channels * rows * cols;
        if let Some(c) = &mut self.conv {
            c.image = [channels, rows, cols];
        }
        if let Some(k) = &mut self.kl {
            k.image = [channels, rows, cols];
            self.latent = k.config.latent_image(k.image).iter().product();
        }
        self
    }

    /// The same model run with `samples` draws per image by a pass that trains nothing
    /// (evaluation, pictures): the objective does not apply, so an IWAE model's k ≥ 2 does not
    /// either.
    pub fn for_inference(&self, samples: usize) -> Self {
        VaeConfig {
            samples,
            objective: Objective::Elbo,
            ..self.clone()
        }
    }

    /// One hidden layer on each side: the notebook's module, whose checkpoints keep its names
    /// (`linear_enc`, `linear_dec`); deeper models are named as `nn.Sequential`s
    /// (see [`crate::model::ParamLayout`]).
    pub fn has_notebook_names(&self) -> bool {
        self.conv.is_none() && self.hidden.len() == 1 && self.decoder_hidden.len() == 1
    }

    /// `784-400-200-10 tanh` (and the decoder's widths when they do not mirror the encoder's).
    pub fn describe(&self) -> String {
        if let Some(k) = &self.kl {
            let c = &k.config;
            let [ch, r, w] = k.image;
            let [lc, lh, lw] = c.latent_image(k.image);
            return format!(
                "AutoencoderKL {ch}x{r}x{w} blocks {} ×{} groups {} latent {lc}x{lh}x{lw}, {}{}",
                width_list(&c.block_out_channels),
                c.layers_per_block,
                c.norm_num_groups,
                self.likelihood,
                if self.beta != 1.0 {
                    format!(", β = {}", self.beta)
                } else {
                    String::new()
                }
            );
        }
        let mut front = self.input.to_string();
        if let Some(c) = &self.conv {
            let [ch, r, w] = c.image;
            front = format!("{ch}x{r}x{w}");
            for w in &c.widths {
                front.push_str(&format!("-c{w}"));
            }
        }
        let mut s = front;
        for h in &self.hidden {
            s.push_str(&format!("-{h}"));
        }
        s.push_str(&format!("-{} {}", self.latent, self.activation));
        let mirrored: Vec<usize> = self.hidden.iter().rev().copied().collect();
        if self.decoder_hidden != mirrored {
            s.push_str(&format!(
                " (decoder {}-{})",
                widths(&self.decoder_hidden),
                self.input
            ));
        }
        if self.likelihood != Likelihood::Bernoulli {
            s.push_str(&format!(", {}", self.likelihood));
        }
        if self.beta != 1.0 {
            s.push_str(&format!(", β = {}", self.beta));
        }
        if self.kl_warmup > 0.0 {
            s.push_str(&format!(", KL warm-up {} epochs", self.kl_warmup));
        }
        if self.objective == Objective::Iwae {
            s.push_str(&format!(", IWAE objective (k = {})", self.samples));
        }
        if self.classes > 0 {
            s.push_str(&format!(", conditional on {} classes", self.classes));
        }
        if !self.res_blocks.is_empty() {
            s.push_str(&format!(
                ", residual blocks {}",
                width_list(&self.res_blocks)
            ));
        }
        s
    }

    /// Whether the model is class-conditional (`--conditional`).
    pub fn is_conditional(&self) -> bool {
        self.classes > 0
    }

    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("input size", self.input),
            ("latent", self.latent),
            ("samples", self.samples),
        ]
        .into_iter()
        .chain(self.hidden.iter().map(|&h| ("hidden", h)))
        .chain(self.decoder_hidden.iter().map(|&h| ("decoder hidden", h)))
        .chain(self.res_blocks.iter().map(|&h| ("res blocks", h)))
        {
            if v == 0 {
                return Err(Error::setting(name, "must be at least 1"));
            }
            if v > MAX_SIZE {
                return Err(Error::setting(
                    name,
                    format!("{v} is absurdly large (max {MAX_SIZE})"),
                ));
            }
        }
        self.validate_conv()?;
        self.likelihood.validate()?;
        // The KL weight is an f32 on the device: past 1e6 it drowns the reconstruction term and
        // past f32's range it is infinite, which would only surface as a diverged epoch.
        if !(self.beta.is_finite() && (0.0..=1e6).contains(&self.beta)) {
            return Err(Error::setting(
                "beta",
                format!(
                    "the KL weight must be a number from 0 to 1e6, got {}",
                    crate::error::number(self.beta)
                ),
            ));
        }
        if !(self.kl_warmup.is_finite() && self.kl_warmup >= 0.0) {
            return Err(Error::setting(
                "kl warmup",
                format!(
                    "the warm-up must be a finite number of epochs ≥ 0, got {}",
                    self.kl_warmup
                ),
            ));
        }
        // An AutoencoderKL's layers come from its config: the other models' checks below do not
        // apply (β and the warm-up above do).
        if self.kl.is_some() {
            return self.validate_kl();
        }
        if self.objective == Objective::Iwae {
            if self.samples < 2 {
                return Err(Error::setting(
                    "objective",
                    format!(
                        "iwae weighs k ≥ 2 samples per image, but samples is {}: add --samples 5 (or more)",
                        self.samples
                    ),
                ));
            }
            if self.beta != 1.0 || self.kl_warmup > 0.0 {
                return Err(Error::setting(
                    "objective",
                    "iwae has no separate KL term to weigh: drop --beta and --kl-warmup",
                ));
            }
        }
        if self.classes > MAX_CLASSES {
            return Err(Error::setting(
                "conditional",
                format!(
                    "takes at most {MAX_CLASSES} classes; the data has {}",
                    self.classes
                ),
            ));
        }
        if !self.res_blocks.is_empty() {
            if self.res_blocks.len() > MAX_HIDDEN_LAYERS {
                return Err(Error::setting(
                    "res blocks",
                    format!(
                        "{} blocks given: give 1 to {MAX_HIDDEN_LAYERS} widths, e.g. 200,200",
                        self.res_blocks.len()
                    ),
                ));
            }
            if self.classes > 0 {
                return Err(Error::setting(
                    "res blocks",
                    "are built for unconditional models: drop --conditional, or --res-blocks",
                ));
            }
        }
        if self.classes > 0 && self.conv.is_some() {
            return Err(Error::setting(
                "conditional",
                "is built for dense models: drop --conv, or --conditional",
            ));
        }
        for (name, h) in [
            ("hidden", &self.hidden),
            ("decoder hidden", &self.decoder_hidden),
        ] {
            // A conv model may have no dense hidden layers: its convolutions are the hidden ones.
            let min = if self.conv.is_some() { 0 } else { 1 };
            if h.len() < min || h.len() > MAX_HIDDEN_LAYERS {
                return Err(Error::setting(
                    name,
                    format!(
                        "{} layers given: give 1 to {MAX_HIDDEN_LAYERS} widths, e.g. 400,200",
                        h.len()
                    ),
                ));
            }
        }
        if !matches!(self.activation, Act::Relu | Act::Tanh) {
            return Err(Error::setting(
                "activation",
                format!(
                    "{} is not a hidden activation: use relu or tanh",
                    self.activation
                ),
            ));
        }
        let n = self.num_params();
        if n > MAX_PARAMS {
            return Err(Error::Config(format!(
                "a {} model has {n} parameters ({:.1} GiB as f32); the limit is {MAX_PARAMS} — use smaller hidden/latent sizes",
                self.describe(),
                n as f64 * 4.0 / (1u64 << 30) as f64
            )));
        }
        Ok(())
    }

    /// An AutoencoderKL: its config buildable, the images' channels its `in_channels` and
    /// `out_channels`, their sides divisible by 2^downsamples, and nothing of the other models.
    fn validate_kl(&self) -> Result<()> {
        let Some(k) = &self.kl else {
            return Ok(());
        };
        let c = &k.config;
        c.validate("the AutoencoderKL config")?;
        let [ch, rows, cols] = k.image;
        if c.in_channels != ch || c.out_channels != ch {
            return Err(Error::Config(format!(
                "the AutoencoderKL takes in_channels = {} and gives out_channels = {}, but the \
                 images have {ch} channels",
                c.in_channels, c.out_channels
            )));
        }
        let div = 1usize << c.downsamples().min(31);
        if rows % div != 0 || cols % div != 0 || rows < div || cols < div {
            return Err(Error::ImageSides {
                setting: "block out channels",
                layers: format!(
                    "the AutoencoderKL's {} blocks ({} downsamplers)",
                    c.block_out_channels.len(),
                    c.downsamples()
                ),
                halvings: c.downsamples() as u32,
                rows,
                cols,
            });
        }
        if !self.likelihood.identity_mean() {
            return Err(Error::setting(
                "likelihood",
                format!(
                    "an AutoencoderKL's output is the mean of pixels in [−1, 1]: use \
                     --likelihood gaussian or laplace, not {}",
                    self.likelihood.name()
                ),
            ));
        }
        let other = [
            ("conv", self.conv.is_some()),
            (
                "hidden",
                !self.hidden.is_empty() || !self.decoder_hidden.is_empty(),
            ),
            ("res blocks", !self.res_blocks.is_empty()),
            ("conditional", self.classes > 0),
            ("objective", self.objective != Objective::Elbo),
        ];
        if let Some((name, _)) = other.iter().find(|(_, set)| *set) {
            return Err(Error::setting(
                name,
                "does not apply to an AutoencoderKL (its layers come from its config)",
            ));
        }
        let n = self.num_params();
        if n > MAX_PARAMS {
            return Err(Error::Config(format!(
                "a {} model has {n} parameters; the limit is {MAX_PARAMS}",
                self.describe()
            )));
        }
        Ok(())
    }

    /// The conv layers' shapes: channel counts in range, the image's sides divisible by 2^n (each
    /// layer halves them), the image's size the input's. Named after the flags that set them.
    fn validate_conv(&self) -> Result<()> {
        let Some(c) = &self.conv else {
            return Ok(());
        };
        let [ch, rows, cols] = c.image;
        if c.widths.is_empty() || c.widths.len() > MAX_HIDDEN_LAYERS {
            return Err(Error::setting(
                "conv",
                format!(
                    "{} conv layers given: give 1 to {MAX_HIDDEN_LAYERS} channel counts, e.g. 32,64",
                    c.widths.len()
                ),
            ));
        }
        if let Some(w) = c.widths.iter().find(|&&w| w == 0 || w > 4096) {
            return Err(Error::setting(
                "conv",
                format!("{w} channels: give 1 to 4096 per conv layer"),
            ));
        }
        if ch * rows * cols != self.input || ch == 0 {
            return Err(Error::Config(format!(
                "the conv layers expect {ch}x{rows}x{cols} images, but the input has {} values",
                self.input
            )));
        }
        let n = c.widths.len();
        let div = 1usize << n;
        if rows % div != 0 || cols % div != 0 || rows < div || cols < div {
            return Err(Error::ImageSides {
                setting: "conv",
                layers: format!("{n} conv layer(s) ({})", width_list(&c.widths)),
                halvings: n as u32,
                rows,
                cols,
            });
        }
        Ok(())
    }

    /// Parameters of the model (weights and biases of every layer).
    pub fn num_params(&self) -> u64 {
        if self.kl.is_some() {
            return crate::model::ParamLayout::new(self).num_params() as u64;
        }
        // Residual blocks from width `from`: two layers and a shortcut where the widths differ,
        // `k2` weights a pair of channels (1 for the dense blocks' Linear layers, 9 for the
        // conv blocks' 3x3 convolutions, whose shortcut is 1x1).
        let blocks = |from: u64, widths: &mut dyn Iterator<Item = usize>, k2: u64| -> (u64, u64) {
            let (mut n, mut i) = (0, from);
            for o in widths.map(|o| o as u64) {
                n += (i * k2 + 1) * o + (o * k2 + 1) * o + if i != o { (i + 1) * o } else { 0 };
                i = o;
            }
            (n, i)
        };
        let conv = |c: &ConvNet| -> u64 {
            let mut prev = c.image[0] as u64;
            let mut n = 0;
            let k2 = (CONV_KERNEL * CONV_KERNEL) as u64;
            let last = c.widths.last().copied().unwrap_or(0) as u64;
            // The decoder's blocks end at the first width, where its transposed convolutions begin.
            let dec_first = self.res_blocks.first().map_or(last, |&w| w as u64);
            for (j, &w) in c.widths.iter().enumerate() {
                let w = w as u64;
                let mirror_in = if j + 1 == c.widths.len() {
                    dec_first
                } else {
                    w
                };
                // Conv2d prev -> w, and its mirror ConvTranspose2d w -> prev.
                n += (prev * k2 + 1) * w + (mirror_in * k2 + 1) * prev;
                prev = w;
            }
            n + blocks(last, &mut self.res_blocks.iter().copied(), 9).0
                + blocks(last, &mut self.res_blocks.iter().rev().copied(), 9).0
        };
        let (enc_in, dec_out) = match &self.conv {
            Some(_) => (self.enc_features() as u64, self.conv_features() as u64),
            None => (self.input as u64, self.input as u64),
        };
        // Linear layers from width `from` through `widths`.
        let dense = |from: u64, widths: &[usize]| {
            let mut sizes = vec![from];
            sizes.extend(widths.iter().map(|&w| w as u64));
            sizes.windows(2).map(|w| (w[0] + 1) * w[1]).sum::<u64>()
        };
        let k = self.latent as u64;
        // A conditional model's first encoder and first decoder layers take `classes` more inputs.
        let first_widths = |w: &[usize], last: u64| w.first().map_or(last, |&h| h as u64);
        let labels = self.classes as u64
            * (first_widths(&self.hidden, 2 * k) + first_widths(&self.decoder_hidden, dec_out));
        // A dense model's residual blocks (a conv model's are among its convolutions).
        let dense_blocks: &[usize] = if self.conv.is_some() {
            &[]
        } else {
            &self.res_blocks
        };
        let last = |w: &[usize], first: u64| w.last().map_or(first, |&h| h as u64);
        let (enc_blocks, enc_last) = blocks(
            last(&self.hidden, enc_in),
            &mut dense_blocks.iter().copied(),
            1,
        );
        let (dec_blocks, dec_last) = blocks(
            last(&self.decoder_hidden, k),
            &mut dense_blocks.iter().rev().copied(),
            1,
        );
        dense(enc_in, &self.hidden)
            + enc_blocks
            + (enc_last + 1) * 2 * k
            + dense(k, &self.decoder_hidden)
            + dec_blocks
            + (dec_last + 1) * dec_out
            + labels
            + self.conv.as_ref().map_or(0, conv)
    }

    /// Features the encoder's dense layers (or heads) see: the last conv layer's, or with
    /// residual blocks the last block's (`C · (rows/2^n) · (cols/2^n)`); the input size without
    /// conv layers.
    pub fn enc_features(&self) -> usize {
        match (&self.conv, self.res_blocks.last()) {
            (Some(c), Some(&channels)) => channels * Self::conv_cells(c),
            _ => self.conv_features(),
        }
    }

    /// Pixels of one channel after the conv layers: `(rows/2^n) · (cols/2^n)`.
    fn conv_cells(c: &ConvNet) -> usize {
        let div = 1usize << c.widths.len().min(32);
        (c.image[1] / div) * (c.image[2] / div)
    }

    /// Features after the last conv layer (`C_last · (rows/2^n) · (cols/2^n)`): what the
    /// decoder's last dense layer gives (and without residual blocks what the encoder's dense
    /// layers see); the input size without conv layers.
    pub fn conv_features(&self) -> usize {
        match &self.conv {
            None => self.input,
            Some(c) => c.widths.last().copied().unwrap_or(c.image[0]) * Self::conv_cells(c),
        }
    }
}

/// `400-200`, as a model's description shows widths.
pub fn widths(w: &[usize]) -> String {
    join(w, "-")
}

/// `400,200`, as flags and checkpoints write widths (read back by [`parse_widths`]).
pub fn width_list(w: &[usize]) -> String {
    join(w, ",")
}

fn join(w: &[usize], sep: &str) -> String {
    w.iter().map(usize::to_string).collect::<Vec<_>>().join(sep)
}

/// Parse a width list as flags and checkpoints write it: `400,200` (also `400-200`).
pub fn parse_widths(s: &str) -> std::result::Result<Vec<usize>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("no widths given: write them as 400,200".into());
    }
    s.split([',', '-'])
        .map(|w| {
            w.trim().parse::<usize>().map_err(|_| {
                format!("'{w}' in '{s}' is not a layer width: write widths as 400,200")
            })
        })
        .collect()
}

/// Largest model accepted (2^28 parameters, 1 GiB per f32 arena): beyond this the host-side arenas
/// alone would exhaust a typical machine before any GPU limit is reached.
pub const MAX_PARAMS: u64 = 1 << 28;
