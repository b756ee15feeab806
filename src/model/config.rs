use crate::error::{Error, Result};
use crate::ops::Act;

/// The Bernoulli VAE's architecture: an MLP encoder `input -> hidden[0] -> … -> (mu, logvar)` of
/// `latent` each, and an MLP decoder `latent -> decoder_hidden[0] -> … -> input` logits, every
/// hidden layer followed by `activation`.
#[derive(Clone, Debug, PartialEq, Eq)]
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
}

impl Default for VaeConfig {
    /// The notebook's model: 784 -> 200 -> 10, ReLU.
    fn default() -> Self {
        VaeConfig::mirrored(784, &[200], 10)
    }
}

/// Most hidden layers per side.
pub const MAX_HIDDEN_LAYERS: usize = 16;

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
        }
    }

    /// One hidden layer on each side: the notebook's module, whose checkpoints keep its names
    /// (`linear_enc`, `linear_dec`); deeper models are named as `nn.Sequential`s
    /// (see [`crate::model::ParamLayout`]).
    pub fn has_notebook_names(&self) -> bool {
        self.hidden.len() == 1 && self.decoder_hidden.len() == 1
    }

    /// `784-400-200-10 tanh` (and the decoder's widths when they do not mirror the encoder's).
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{}-{}-{} {}",
            self.input,
            widths(&self.hidden),
            self.latent,
            self.activation
        );
        let mirrored: Vec<usize> = self.hidden.iter().rev().copied().collect();
        if self.decoder_hidden != mirrored {
            s.push_str(&format!(
                " (decoder {}-{})",
                widths(&self.decoder_hidden),
                self.input
            ));
        }
        s
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
        {
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
        for (name, h) in [
            ("hidden", &self.hidden),
            ("decoder hidden", &self.decoder_hidden),
        ] {
            if h.is_empty() || h.len() > MAX_HIDDEN_LAYERS {
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

    /// `(inputs, outputs)` of every Linear layer in forward order: encoder layers, the joint
    /// `mu | logvar` heads (`2K` outputs), decoder layers, the output layer.
    pub fn linear_shapes(&self) -> Vec<(usize, usize)> {
        let chain = |from: usize, widths: &[usize], to: usize| {
            let mut sizes = vec![from];
            sizes.extend_from_slice(widths);
            sizes.push(to);
            sizes.windows(2).map(|w| (w[0], w[1])).collect::<Vec<_>>()
        };
        let mut v = chain(self.input, &self.hidden, 2 * self.latent);
        v.extend(chain(self.latent, &self.decoder_hidden, self.input));
        v
    }

    /// Parameters of the model (weights and biases of every Linear layer).
    pub fn num_params(&self) -> u64 {
        self.linear_shapes()
            .iter()
            .map(|&(i, o)| (i as u64 + 1) * o as u64)
            .sum()
    }

    /// The widest hidden layer (either side).
    pub fn widest_hidden(&self) -> usize {
        self.hidden
            .iter()
            .chain(&self.decoder_hidden)
            .copied()
            .max()
            .unwrap_or(0)
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
