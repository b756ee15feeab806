//! Parameter arena layout. All parameters live in one flat f32 buffer (gradients and both Adam
//! moments in three more of the same layout), each tensor an (offset, shape) view. Offsets are
//! multiples of 64 floats (256 bytes), so every view can be bound on any adapter; the padding is
//! never written, its gradient stays 0 and Adam leaves it at 0.
//!
//! Every layer is a [`Layer`] (its kind, weight and bias views; see `model/layers.rs`), built in
//! forward order from the configuration by `LayerList::new`. The encoder's two heads are one
//! `Linear` `H -> 2K`: `enc_logvar.weight` follows `enc_mu.weight` with no padding
//! (together a `[2K, H]` matrix) and `enc_logvar.bias` follows `enc_mu.bias`, so both heads are
//! one product forward and one per gradient backward.
//!
//! Names, shapes and order are PyTorch's `state_dict`, weights `[out, in]`. With one hidden layer
//! per side, the notebook's module: `linear_enc`, `enc_mu`, `enc_logvar`, `linear_dec`, `dec_mu`.
//! Deeper models are this module (documented in `docs/ARCHITECTURE.md`, built by
//! `scripts/torch_reference.py` from a checkpoint's metadata):
//!
//! ```text
//! encoder    = nn.Sequential(Linear(D, h0), Act, Linear(h0, h1), Act, ...)  # encoder.0, encoder.2, ...
//! enc_mu     = Linear(h_last, K);  enc_logvar = Linear(h_last, K)
//! decoder    = nn.Sequential(Linear(K, g0), Act, Linear(g0, g1), Act, ...)  # decoder.0, decoder.2, ...
//! dec_mu     = Linear(g_last, D)                                             # logits; sigmoid outside
//! ```
//!
//! With conv layers (`--conv c0,c1,…`, each `Conv2d(4, 2, 1)` halving the image's sides):
//!
//! ```text
//! encoder = nn.Sequential(Conv2d(C, c0), Act, Conv2d(c0, c1), Act, …, Flatten(), Linear(F, h0), Act, …)
//! enc_mu, enc_logvar = Linear(h_last or F, K)
//! decoder = nn.Sequential(Linear(K, g0), Act, …, Linear(g_last or K, F), Act, Unflatten(1, (c_last, S/2^n, S/2^n)),
//!                         ConvTranspose2d(c_last, c_{n-2}), Act, …, ConvTranspose2d(c0, C))   # logits
//! ```
//!
//! (`F = c_last·(S/2^n)²`; Flatten and Unflatten take Sequential indices but hold no tensors.)

use super::VaeConfig;
use super::config::{CONV_KERNEL, CONV_PADDING, CONV_STRIDE};
pub use super::layers::{ConvGeom, Layer, LayerKind};
use crate::ops::Act;
use crate::rng::{Stream, domain};

/// Alignment of every tensor in the arena, in f32 elements.
pub const ARENA_ALIGN: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
    /// `fan_in` of the layer it belongs to (PyTorch's init bound is 1/sqrt(fan_in)).
    pub fan_in: usize,
}

impl ParamSpec {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// The layers of the default model were all `Linear`s; the name stays for them.
pub type Linear = Layer;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamLayout {
    /// Every tensor, in state_dict order.
    pub specs: Vec<ParamSpec>,
    /// Arena length in f32 (a multiple of [`ARENA_ALIGN`]).
    pub len: usize,
    /// The encoder's hidden layers, input side first (conv layers, then dense ones).
    pub encoder: Vec<Layer>,
    /// Both heads as one Linear `H -> 2K` (mu rows, then logvar rows).
    pub heads: Layer,
    /// The decoder's hidden layers, latent side first.
    pub decoder: Vec<Layer>,
    /// The output layer (logits): `dec_mu`, or a conv model's last ConvTranspose2d.
    pub output: Layer,
    /// The arena offset of a learned-σ Gaussian decoder's `log_sigma` (a 0-d tensor, last in the
    /// state_dict, initialised to 0: σ = 1).
    pub log_sigma: Option<usize>,
}

/// A model's layers in forward order, with their state_dict names (offsets not yet placed).
struct LayerList {
    encoder: Vec<Layer>,
    heads: Layer,
    decoder: Vec<Layer>,
    output: Layer,
}

impl LayerList {
    /// The layers of `cfg`, named as its PyTorch module names them (see the module docs).
    fn new(cfg: &VaeConfig) -> Self {
        let act = cfg.activation;
        let notebook = cfg.has_notebook_names();
        let dense_name = |side: &str, notebook_name: &str, index: usize| {
            if notebook {
                notebook_name.to_string()
            } else {
                format!("{side}.{index}")
            }
        };
        // Encoder: Conv2d, Act, … , Flatten (one Sequential index), then Linear, Act, ….
        let mut encoder = Vec::new();
        if let Some(c) = &cfg.conv {
            let mut image = c.image;
            for &w in &c.widths {
                let g = conv_geom(image, w, false);
                image = g.output;
                encoder.push(Layer::conv(
                    format!("encoder.{}", 2 * encoder.len()),
                    false,
                    g,
                    act,
                ));
            }
        }
        let n_conv = encoder.len();
        // Sequential index of the first dense layer: past the Flatten after the convolutions.
        let dense_base = if n_conv > 0 { 2 * n_conv + 1 } else { 0 };
        let mut width = cfg.conv_features();
        for (i, &h) in cfg.hidden.iter().enumerate() {
            encoder.push(Layer::linear(
                dense_name("encoder", "linear_enc", dense_base + 2 * i),
                width,
                h,
                act,
            ));
            width = h;
        }
        let heads = Layer::linear("enc_mu|enc_logvar", width, 2 * cfg.latent, Act::Identity);
        // Decoder: Linear, Act, …; with conv layers a Linear to the last conv's features, Act,
        // Unflatten, then ConvTranspose2d, Act, …, ConvTranspose2d (the logits).
        let mut decoder = Vec::new();
        let mut width = cfg.latent;
        for (i, &h) in cfg.decoder_hidden.iter().enumerate() {
            decoder.push(Layer::linear(
                dense_name("decoder", "linear_dec", 2 * i),
                width,
                h,
                act,
            ));
            width = h;
        }
        let output = match &cfg.conv {
            None => Layer::linear("dec_mu", width, cfg.input, Act::Identity),
            Some(c) => {
                let m = decoder.len();
                let features = cfg.conv_features();
                decoder.push(Layer::linear(
                    format!("decoder.{}", 2 * m),
                    width,
                    features,
                    act,
                ));
                // After the Unflatten at index 2m + 2.
                let mut index = 2 * m + 3;
                let div = 1usize << c.widths.len();
                let last = *c.widths.last().unwrap_or(&c.image[0]);
                let mut image = [last, c.image[1] / div, c.image[2] / div];
                // Each width in reverse but the first, with the activation; then the image's
                // channels, the logits.
                for &ch in c.widths.iter().rev().skip(1) {
                    let g = conv_geom(image, ch, true);
                    image = g.output;
                    decoder.push(Layer::conv(format!("decoder.{index}"), true, g, act));
                    index += 2;
                }
                let g = conv_geom(image, c.image[0], true);
                Layer::conv(format!("decoder.{index}"), true, g, Act::Identity)
            }
        };
        LayerList {
            encoder,
            heads,
            decoder,
            output,
        }
    }
}

/// The geometry of `--conv`'s layers (kernel 4, stride 2, padding 1) on `image`; [`VaeConfig::validate`]
/// has checked that every side divides.
fn conv_geom(image: [usize; 3], c_out: usize, transposed: bool) -> ConvGeom {
    let g = if transposed {
        ConvGeom::conv_transpose2d(image, c_out, CONV_KERNEL, CONV_STRIDE, CONV_PADDING)
    } else {
        ConvGeom::conv2d(image, c_out, CONV_KERNEL, CONV_STRIDE, CONV_PADDING)
    };
    g.unwrap_or(ConvGeom {
        input: image,
        output: [c_out, 0, 0],
        kernel: CONV_KERNEL,
        stride: CONV_STRIDE,
        padding: CONV_PADDING,
    })
}

impl ParamLayout {
    pub fn new(cfg: &VaeConfig) -> Self {
        let list = LayerList::new(cfg);
        // Every parameter tensor in state_dict order (the heads as their two modules).
        let k = cfg.latent;
        let mut specs: Vec<ParamSpec> = Vec::new();
        let push_layer = |l: &Layer, specs: &mut Vec<ParamSpec>| {
            for (suffix, shape) in [("weight", l.weight_shape()), ("bias", vec![l.bias_len()])] {
                specs.push(ParamSpec {
                    name: format!("{}.{suffix}", l.name),
                    shape,
                    offset: 0,
                    fan_in: l.fan_in(),
                });
            }
        };
        for l in &list.encoder {
            push_layer(l, &mut specs);
        }
        let h = list.heads.inputs;
        for name in ["enc_mu", "enc_logvar"] {
            push_layer(&Layer::linear(name, h, k, Act::Identity), &mut specs);
        }
        for l in list.decoder.iter().chain([&list.output]) {
            push_layer(l, &mut specs);
        }
        // Arena order: state_dict order, but each logvar tensor packed right behind its mu one.
        let mu = 2 * list.encoder.len();
        let (mu_w, mu_b, lv_w, lv_b) = (mu, mu + 1, mu + 2, mu + 3);
        let mut order: Vec<(usize, bool)> = (0..mu).map(|i| (i, true)).collect();
        order.extend([(mu_w, true), (lv_w, false), (mu_b, true), (lv_b, false)]);
        order.extend((mu + 4..specs.len()).map(|i| (i, true)));
        let mut offset = 0usize;
        for (i, aligned) in order {
            if aligned {
                offset = offset.div_ceil(ARENA_ALIGN) * ARENA_ALIGN;
            }
            specs[i].offset = offset;
            offset += specs[i].len();
        }
        let mut len = offset.div_ceil(ARENA_ALIGN) * ARENA_ALIGN;
        let output_spec = specs.len() - 2;
        let log_sigma = cfg.likelihood.learns_sigma().then(|| {
            specs.push(ParamSpec {
                name: "log_sigma".into(),
                shape: vec![],
                offset: len,
                fan_in: 0,
            });
            len += ARENA_ALIGN;
            len - ARENA_ALIGN
        });
        // Each layer's weight and bias are specs 2i and 2i + 1 (i counting the heads twice).
        let placed = |mut l: Layer, spec: usize| {
            l.weight = specs[spec].offset;
            l.bias = specs[spec + 1].offset;
            l
        };
        let n_enc = list.encoder.len();
        ParamLayout {
            encoder: (list.encoder.into_iter().enumerate())
                .map(|(i, l)| placed(l, 2 * i))
                .collect(),
            heads: placed(list.heads, mu),
            decoder: (list.decoder.into_iter().enumerate())
                .map(|(i, l)| placed(l, 2 * (n_enc + 2 + i)))
                .collect(),
            output: placed(list.output, output_spec),
            specs,
            len,
            log_sigma,
        }
    }

    /// Every layer in forward order: encoder layers, heads, decoder layers, output.
    pub fn layers(&self) -> impl Iterator<Item = &Layer> {
        self.encoder
            .iter()
            .chain([&self.heads])
            .chain(&self.decoder)
            .chain([&self.output])
    }

    /// Number of real (unpadded) parameters.
    pub fn num_params(&self) -> usize {
        self.specs.iter().map(|s| s.len()).sum()
    }

    pub fn get(&self, name: &str) -> Option<&ParamSpec> {
        self.specs.iter().find(|s| s.name == name)
    }

    /// PyTorch's `nn.Linear` default init (kaiming_uniform with a=√5 for weights, which is
    /// U(±1/sqrt(fan_in)), and U(±1/sqrt(fan_in)) for biases), drawn from our Philox stream:
    /// the same seed gives the same arena on every machine. Padding is 0, and so is `log_sigma`.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let mut arena = vec![0.0f32; self.len];
        for (i, spec) in self.specs.iter().enumerate() {
            // Not a layer's: log σ starts at 0 (σ = 1).
            if spec.fan_in == 0 {
                continue;
            }
            let bound = 1.0 / (spec.fan_in as f64).sqrt();
            let mut s = Stream::new(seed, domain::INIT, i as u32);
            for v in &mut arena[spec.range()] {
                *v = s.uniform(-bound, bound) as f32;
            }
        }
        arena
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Act;

    #[test]
    fn heads_are_packed_everything_else_aligned_nothing_overlaps() {
        for cfg in [
            VaeConfig::default(),
            VaeConfig::mirrored(45, &[37], 5),
            VaeConfig {
                activation: Act::Tanh,
                ..VaeConfig::mirrored(45, &[37, 29, 11], 5)
            },
        ] {
            let l = ParamLayout::new(&cfg);
            let s = &l.specs;
            let find = |n: &str| s.iter().position(|p| p.name == n).unwrap();
            let (mu_w, mu_b) = (find("enc_mu.weight"), find("enc_mu.bias"));
            let (lv_w, lv_b) = (find("enc_logvar.weight"), find("enc_logvar.bias"));
            assert_eq!(s[lv_w].offset, s[mu_w].range().end);
            assert_eq!(s[lv_b].offset, s[mu_b].range().end);
            for (i, spec) in s.iter().enumerate() {
                if i != lv_w && i != lv_b {
                    assert_eq!(spec.offset % ARENA_ALIGN, 0, "{}", spec.name);
                }
                assert!(spec.range().end <= l.len);
                for other in &s[i + 1..] {
                    let (a, b) = (spec.range(), other.range());
                    assert!(
                        a.end <= b.start || b.end <= a.start,
                        "{} / {}",
                        spec.name,
                        other.name
                    );
                }
            }
            let h = *cfg.hidden.last().unwrap();
            assert_eq!(l.heads.weight_shape(), [2 * cfg.latent, h]);
            assert_eq!(
                (l.heads.weight, l.heads.bias),
                (s[mu_w].offset, s[mu_b].offset)
            );
            assert_eq!(l.len % ARENA_ALIGN, 0);
            // Every Linear's views are its specs'.
            let linears: Vec<&Linear> = l
                .encoder
                .iter()
                .chain(&l.decoder)
                .chain([&l.output])
                .collect();
            assert_eq!(
                linears.len(),
                cfg.hidden.len() + cfg.decoder_hidden.len() + 1
            );
            for lin in linears {
                let w = &s[find(&format!("{}.weight", lin.name))];
                let b = &s[find(&format!("{}.bias", lin.name))];
                assert_eq!(w.range(), lin.weight_range());
                assert_eq!(b.range(), lin.bias_range());
                assert_eq!(w.shape, lin.weight_shape().to_vec());
            }
            assert_eq!(l.num_params() as u64, cfg.num_params());
        }
    }

    #[test]
    fn names_are_the_notebooks_with_one_hidden_layer_and_sequential_indices_beyond() {
        let names = |cfg: &VaeConfig| -> Vec<String> {
            ParamLayout::new(cfg)
                .specs
                .iter()
                .map(|s| s.name.clone())
                .collect()
        };
        assert_eq!(
            names(&VaeConfig::default()),
            [
                "linear_enc.weight",
                "linear_enc.bias",
                "enc_mu.weight",
                "enc_mu.bias",
                "enc_logvar.weight",
                "enc_logvar.bias",
                "linear_dec.weight",
                "linear_dec.bias",
                "dec_mu.weight",
                "dec_mu.bias"
            ]
        );
        let deep = names(&VaeConfig::mirrored(784, &[400, 200], 20));
        assert_eq!(
            deep,
            [
                "encoder.0.weight",
                "encoder.0.bias",
                "encoder.2.weight",
                "encoder.2.bias",
                "enc_mu.weight",
                "enc_mu.bias",
                "enc_logvar.weight",
                "enc_logvar.bias",
                "decoder.0.weight",
                "decoder.0.bias",
                "decoder.2.weight",
                "decoder.2.bias",
                "dec_mu.weight",
                "dec_mu.bias"
            ]
        );
    }
}
