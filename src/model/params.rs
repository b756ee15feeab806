//! Parameter arena layout. All parameters live in one flat f32 buffer (gradients and both Adam
//! moments in three more of the same layout), each tensor an (offset, shape) view. Offsets are
//! multiples of 64 floats (256 bytes), so every view can be bound on any adapter; the padding is
//! never written, its gradient stays 0 and Adam leaves it at 0.
//!
//! Every layer is a [`Linear`] handle (weight `[out, in]` and bias views). The encoder's two heads
//! are one of them, `H -> 2K`: `enc_logvar.weight` follows `enc_mu.weight` with no padding
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

use super::VaeConfig;
use crate::rng::{Stream, domain};

/// Alignment of every tensor in the arena, in f32 elements.
pub const ARENA_ALIGN: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
    /// `fan_in` of the Linear layer it belongs to (PyTorch's init bound is 1/sqrt(fan_in)).
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

/// One Linear layer `y = x·Wᵀ + b` in the arenas: where its weight `[outputs, inputs]` and bias
/// `[outputs]` live (the same offsets in the parameter, gradient and moment arenas).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Linear {
    /// The state_dict prefix (`encoder.2`, `dec_mu`; `enc_mu|enc_logvar` for the joint heads).
    pub name: String,
    pub inputs: usize,
    pub outputs: usize,
    pub weight: usize,
    pub bias: usize,
}

impl Linear {
    pub fn weight_shape(&self) -> [usize; 2] {
        [self.outputs, self.inputs]
    }

    pub fn weight_range(&self) -> std::ops::Range<usize> {
        self.weight..self.weight + self.inputs * self.outputs
    }

    pub fn bias_range(&self) -> std::ops::Range<usize> {
        self.bias..self.bias + self.outputs
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamLayout {
    /// Every tensor, in state_dict order.
    pub specs: Vec<ParamSpec>,
    /// Arena length in f32 (a multiple of [`ARENA_ALIGN`]).
    pub len: usize,
    /// The encoder's hidden layers, input side first.
    pub encoder: Vec<Linear>,
    /// Both heads as one Linear `H -> 2K` (mu rows, then logvar rows).
    pub heads: Linear,
    /// The decoder's hidden layers, latent side first.
    pub decoder: Vec<Linear>,
    /// The output layer (logits).
    pub output: Linear,
}

impl ParamLayout {
    pub fn new(cfg: &VaeConfig) -> Self {
        let notebook = cfg.has_notebook_names();
        let side = |prefix: &str, notebook_name: &str, from: usize, widths: &[usize]| {
            let mut sizes = vec![from];
            sizes.extend_from_slice(widths);
            sizes
                .windows(2)
                .enumerate()
                .map(|(i, w)| {
                    let name = if notebook {
                        notebook_name.to_string()
                    } else {
                        format!("{prefix}.{}", 2 * i)
                    };
                    (name, w[0], w[1])
                })
                .collect::<Vec<_>>()
        };
        let enc = side("encoder", "linear_enc", cfg.input, &cfg.hidden);
        let dec = side("decoder", "linear_dec", cfg.latent, &cfg.decoder_hidden);
        let (h, k, g) = (
            *cfg.hidden.last().unwrap_or(&cfg.input),
            cfg.latent,
            *cfg.decoder_hidden.last().unwrap_or(&cfg.latent),
        );
        // (name, inputs, outputs) of every Linear, in state_dict order.
        let mut linears = enc.clone();
        linears.push(("enc_mu".into(), h, k));
        linears.push(("enc_logvar".into(), h, k));
        linears.extend(dec.iter().cloned());
        linears.push(("dec_mu".into(), g, cfg.input));
        let mut specs = Vec::with_capacity(2 * linears.len());
        for (name, i, o) in &linears {
            for (suffix, shape) in [("weight", vec![*o, *i]), ("bias", vec![*o])] {
                specs.push(ParamSpec {
                    name: format!("{name}.{suffix}"),
                    shape,
                    offset: 0,
                    fan_in: *i,
                });
            }
        }
        // Arena order: state_dict order, but each logvar tensor packed right behind its mu one.
        let mu = 2 * enc.len();
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
        let len = offset.div_ceil(ARENA_ALIGN) * ARENA_ALIGN;
        let linear = |spec: usize, name: String, outputs: usize| Linear {
            name,
            inputs: specs[spec].shape[1],
            outputs,
            weight: specs[spec].offset,
            bias: specs[spec + 1].offset,
        };
        let at = |i: usize| linear(2 * i, linears[i].0.clone(), linears[i].2);
        let n_enc = enc.len();
        ParamLayout {
            encoder: (0..n_enc).map(at).collect(),
            heads: linear(mu_w, "enc_mu|enc_logvar".into(), 2 * k),
            decoder: (n_enc + 2..n_enc + 2 + dec.len()).map(at).collect(),
            output: at(linears.len() - 1),
            specs,
            len,
        }
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
    /// the same seed gives the same arena on every machine. Padding is 0.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let mut arena = vec![0.0f32; self.len];
        for (i, spec) in self.specs.iter().enumerate() {
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
