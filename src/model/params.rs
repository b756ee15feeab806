//! Parameter arena layout. All parameters live in one flat f32 buffer (gradients and both Adam
//! moments in three more of the same layout), each tensor an (offset, shape) view. Offsets are
//! multiples of 64 floats (256 bytes), so every view can be bound on any adapter; the padding is
//! never written, its gradient stays 0 and Adam leaves it at 0.
//!
//! One exception: the encoder's two heads are stored as one Linear `H -> 2K`. `enc_logvar.weight`
//! follows `enc_mu.weight` with no padding (together a `[2K, H]` matrix) and `enc_logvar.bias`
//! follows `enc_mu.bias` (a `[2K]` vector), so both heads are one product forward and one per
//! gradient backward; those two are only ever bound through the joint views ([`ParamLayout::heads`]).
//!
//! Names, shapes and order are PyTorch's `state_dict` of the notebook's model, weights `[out, in]`.

use super::VaeConfig;
use crate::rng::{Stream, domain};

/// Alignment of every tensor in the arena, in f32 elements.
pub const ARENA_ALIGN: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: &'static str,
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamLayout {
    pub specs: Vec<ParamSpec>,
    /// Arena length in f32 (a multiple of [`ARENA_ALIGN`]).
    pub len: usize,
}

/// Indices into [`ParamLayout::specs`].
pub mod idx {
    pub const ENC_W: usize = 0;
    pub const ENC_B: usize = 1;
    pub const MU_W: usize = 2;
    pub const MU_B: usize = 3;
    pub const LV_W: usize = 4;
    pub const LV_B: usize = 5;
    pub const DEC_W: usize = 6;
    pub const DEC_B: usize = 7;
    pub const OUT_W: usize = 8;
    pub const OUT_B: usize = 9;
}

impl ParamLayout {
    pub fn new(cfg: &VaeConfig) -> Self {
        let (d, h, k) = (cfg.input, cfg.hidden, cfg.latent);
        let tensors: [(&'static str, Vec<usize>, usize); 10] = [
            ("linear_enc.weight", vec![h, d], d),
            ("linear_enc.bias", vec![h], d),
            ("enc_mu.weight", vec![k, h], h),
            ("enc_mu.bias", vec![k], h),
            ("enc_logvar.weight", vec![k, h], h),
            ("enc_logvar.bias", vec![k], h),
            ("linear_dec.weight", vec![h, k], k),
            ("linear_dec.bias", vec![h], k),
            ("dec_mu.weight", vec![d, h], h),
            ("dec_mu.bias", vec![d], h),
        ];
        let mut specs: Vec<ParamSpec> = tensors
            .into_iter()
            .map(|(name, shape, fan_in)| ParamSpec {
                name,
                shape,
                offset: 0,
                fan_in,
            })
            .collect();
        // Arena order, with each logvar head packed right behind its mu head.
        let order = [
            (idx::ENC_W, true),
            (idx::ENC_B, true),
            (idx::MU_W, true),
            (idx::LV_W, false),
            (idx::MU_B, true),
            (idx::LV_B, false),
            (idx::DEC_W, true),
            (idx::DEC_B, true),
            (idx::OUT_W, true),
            (idx::OUT_B, true),
        ];
        let mut offset = 0usize;
        for (i, aligned) in order {
            if aligned {
                offset = offset.div_ceil(ARENA_ALIGN) * ARENA_ALIGN;
            }
            specs[i].offset = offset;
            offset += specs[i].len();
        }
        let len = offset.div_ceil(ARENA_ALIGN) * ARENA_ALIGN;
        ParamLayout { specs, len }
    }

    /// The encoder heads as one Linear `H -> 2K`: (offset, shape) of the `[2K, H]` weight
    /// (mu rows, then logvar rows) and of the `[2K]` bias.
    pub fn heads(&self) -> [(usize, Vec<usize>); 2] {
        let (w, b) = (&self.specs[idx::MU_W], &self.specs[idx::MU_B]);
        let (k, h) = (w.shape[0], w.shape[1]);
        [(w.offset, vec![2 * k, h]), (b.offset, vec![2 * k])]
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

    #[test]
    fn heads_are_packed_everything_else_aligned_nothing_overlaps() {
        for cfg in [
            VaeConfig::default(),
            VaeConfig {
                input: 45,
                hidden: 37,
                latent: 5,
                ..VaeConfig::default()
            },
        ] {
            let l = ParamLayout::new(&cfg);
            let s = &l.specs;
            assert_eq!(s[idx::LV_W].offset, s[idx::MU_W].range().end);
            assert_eq!(s[idx::LV_B].offset, s[idx::MU_B].range().end);
            for (i, spec) in s.iter().enumerate() {
                if i != idx::LV_W && i != idx::LV_B {
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
            let [(wo, ws), (bo, bs)] = l.heads();
            assert_eq!(
                (wo, ws),
                (s[idx::MU_W].offset, vec![2 * cfg.latent, cfg.hidden])
            );
            assert_eq!((bo, bs), (s[idx::MU_B].offset, vec![2 * cfg.latent]));
            assert_eq!(l.len % ARENA_ALIGN, 0);
        }
    }
}
