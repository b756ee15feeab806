//! Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11), the
//! counter-based generator shared with `shaders/reparam_kl.wgsl`: the same (seed, step, element)
//! gives the same bits on both sides, and the same normal up to the adapter's log/cos accuracy.
//! Host-side streams (parameter init, epoch shuffles) use other counter domains of the same key,
//! through `rand`'s traits ([`Philox`]).

use rand::Rng;
use rand::distr::Distribution;
use rand_core::block::{BlockRng, BlockRngCore};
use rand_core::{RngCore, SeedableRng};

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for _ in 0..10 {
        let p0 = (M0 as u64) * (c[0] as u64);
        let p1 = (M1 as u64) * (c[2] as u64);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
    }
    c
}

pub fn key(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// A uniform in (0, 1) from the top 24 bits, exactly as the shader computes it.
pub fn to_unit(x: u32) -> f64 {
    ((x >> 8) as f64 + 0.5) / 16_777_216.0
}

/// The reparameterisation noise of `element` at `step` (Box–Muller on Philox outputs 0 and 1).
///
/// ```
/// use vae_wgpu::rng::normal_at;
/// // Counter-based: the same (seed, step, element) always gives the same value, in any order.
/// assert_eq!(normal_at(42, 7, 3), normal_at(42, 7, 3));
/// assert_ne!(normal_at(42, 7, 3), normal_at(42, 8, 3));
/// ```
pub fn normal_at(seed: u64, step: u32, element: u32) -> f64 {
    let r = philox4x32_10([element, step, 0, 0], key(seed));
    let u1 = to_unit(r[0]);
    let u2 = to_unit(r[1]);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::PI * (2.0 * u2 - 1.0)).cos()
}

/// `n` noise values for elements `0..n` at `step`.
pub fn normals(seed: u64, step: u32, n: usize) -> Vec<f64> {
    (0..n as u32).map(|e| normal_at(seed, step, e)).collect()
}

/// Counter domains (the third counter word) so host streams never meet the reparameterisation's.
pub mod domain {
    pub const REPARAM: u32 = 0;
    pub const INIT: u32 = 1;
    pub const SHUFFLE: u32 = 2;
    pub const TEST_DATA: u32 = 3;
    pub const SAMPLES: u32 = 4;
    /// The held-out test split of an image folder without one.
    pub const SPLIT: u32 = 5;
}

/// Philox4x32-10 as `rand_core`'s block generator: block `n` of stream (`domain`, `stream`) is
/// the four words of counter `[n, stream, domain, 0x5eed]` under the seed's key, so host streams
/// share the GPU's key and never meet its counters (`domain::REPARAM`'s fourth word is 0).
#[derive(Clone, Debug)]
pub struct PhiloxCore {
    key: [u32; 2],
    domain: u32,
    stream: u32,
    block: u32,
}

impl BlockRngCore for PhiloxCore {
    type Item = u32;
    type Results = [u32; 4];

    fn generate(&mut self, results: &mut [u32; 4]) {
        *results = philox4x32_10([self.block, self.stream, self.domain, 0x5eed], self.key);
        self.block = self.block.wrapping_add(1);
    }
}

/// The host's random numbers: Philox4x32-10 with `rand`'s traits ([`RngCore`], [`SeedableRng`];
/// sample with `rand::Rng` and the distributions below), a stream and a word position
/// that can be set as `rand_chacha`'s generators' can. Parameter init, epoch shuffles and the
/// pictures' codes each read a stream of their own ([`domain`]).
///
/// ```
/// use rand::{Rng, SeedableRng};
/// use vae_wgpu::rng::{Philox, domain};
/// let mut a = Philox::stream(7, domain::INIT, 3);
/// let x = a.sample(vae_wgpu::rng::Unit);
/// // The same seed and stream give the same numbers; setting the position replays them.
/// a.set_word_pos(0);
/// assert_eq!(a.sample(vae_wgpu::rng::Unit), x);
/// assert_eq!(Philox::seed_from_u64(7).key(), Philox::stream(7, 0, 0).key());
/// ```
#[derive(Clone, Debug)]
pub struct Philox(BlockRng<PhiloxCore>);

impl Philox {
    /// The generator of `seed` reading stream (`domain`, `stream`) from its start.
    pub fn stream(seed: u64, domain: u32, stream: u32) -> Self {
        let mut p = Philox::seed_from_u64(seed);
        p.set_stream(domain, stream);
        p
    }

    /// Read stream (`domain`, `stream`) of the same key, from its start.
    pub fn set_stream(&mut self, domain: u32, stream: u32) {
        let c = &mut self.0.core;
        (c.domain, c.stream) = (domain, stream);
        self.set_word_pos(0);
    }

    /// The Philox key (the seed's two halves), as the shaders take it.
    pub fn key(&self) -> [u32; 2] {
        self.0.core.key
    }

    /// The number of 32-bit words read from the stream so far.
    pub fn get_word_pos(&self) -> u64 {
        // `block` is the next block to generate; the buffer holds the one before it.
        match self.0.core.block as u64 {
            0 => 0,
            block => (block - 1) * 4 + self.0.index() as u64,
        }
    }

    /// Continue the stream from its `pos`-th 32-bit word.
    pub fn set_word_pos(&mut self, pos: u64) {
        self.0.core.block = (pos / 4) as u32;
        self.0.generate_and_set((pos % 4) as usize);
    }

    /// A uniformly random order of `0..n`: Fisher–Yates drawing each index by [`Below`].
    pub fn permutation(&mut self, n: usize) -> Vec<u32> {
        let mut p: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            let j = self.sample(Below(i as u32 + 1)) as usize;
            p.swap(i, j);
        }
        p
    }
}

// The engine's distributions, sampled through `rand::Rng::sample`. They are the ones the shaders
// and every documented run use: `rand`'s own (`Uniform`'s 52-bit floats, `StandardNormal`'s
// ziggurat, `shuffle`'s index sampling) draw other numbers from the same stream, so switching
// would change every initialisation and epoch order, and every documented loss, with it.

/// Uniform in (0, 1) from a word's top 24 bits, exactly as the shaders compute it ([`to_unit`]).
#[derive(Clone, Copy, Debug)]
pub struct Unit;

impl Distribution<f64> for Unit {
    fn sample<R: rand::Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        to_unit(rng.next_u32())
    }
}

/// Uniform in `[lo, hi)`: `lo + (hi − lo)·u` with `u` from [`Unit`] (PyTorch's `nn.Linear` init
/// bounds, `lo = −hi`).
#[derive(Clone, Copy, Debug)]
pub struct Between(pub f64, pub f64);

impl Distribution<f64> for Between {
    fn sample<R: rand::Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        self.0 + (self.1 - self.0) * Unit.sample(rng)
    }
}

/// A standard normal by Box–Muller on two [`Unit`] draws (the reparameterisation's transform).
#[derive(Clone, Copy, Debug)]
pub struct BoxMuller;

impl Distribution<f64> for BoxMuller {
    fn sample<R: rand::Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        let u1 = Unit.sample(rng);
        let u2 = Unit.sample(rng);
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Uniform integer in `0..n` (n > 0) by a 64-bit multiply-shift of one word: bias below 2^-32·n.
#[derive(Clone, Copy, Debug)]
pub struct Below(pub u32);

impl Distribution<u32> for Below {
    fn sample<R: rand::Rng + ?Sized>(&self, rng: &mut R) -> u32 {
        ((rng.next_u32() as u64 * self.0 as u64) >> 32) as u32
    }
}

impl SeedableRng for Philox {
    type Seed = [u8; 8];

    fn from_seed(seed: [u8; 8]) -> Self {
        let key = key(u64::from_le_bytes(seed));
        Philox(BlockRng::new(PhiloxCore {
            key,
            domain: 0,
            stream: 0,
            block: 0,
        }))
    }

    /// The seed is the key itself (`rand`'s default would expand it through a PCG), so a
    /// `--seed` means the same key here and in the shaders.
    fn seed_from_u64(state: u64) -> Self {
        Philox::from_seed(state.to_le_bytes())
    }
}

impl RngCore for Philox {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }

    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.0.fill_bytes(dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_known_answer() {
        // Known-answer vectors from the Random123 distribution (kat_vectors, philox4x32_10).
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn normals_look_normal() {
        let v = normals(7, 3, 100_000);
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }

    #[test]
    fn the_rand_generator_reads_philox_blocks_of_its_stream_in_order() {
        let mut r = Philox::stream(0x1234_5678_9abc, domain::INIT, 9);
        let k = key(0x1234_5678_9abc);
        let words: Vec<u32> = (0..12).map(|_| r.next_u32()).collect();
        for (n, block) in words.chunks(4).enumerate() {
            assert_eq!(
                block,
                philox4x32_10([n as u32, 9, domain::INIT, 0x5eed], k),
                "block {n}"
            );
        }
        // The position can be read and set, mid-block too; next_u64 is two words, low first.
        assert_eq!(r.get_word_pos(), 12);
        r.set_word_pos(5);
        assert_eq!(r.get_word_pos(), 5);
        assert_eq!(r.next_u32(), words[5]);
        assert_eq!(r.next_u64(), words[6] as u64 | (words[7] as u64) << 32);
        // Another stream of the same key starts elsewhere; setting it back replays.
        r.set_stream(domain::SHUFFLE, 9);
        assert_ne!(r.next_u32(), words[0]);
        r.set_stream(domain::INIT, 9);
        assert_eq!(r.next_u32(), words[0]);
        assert_eq!(Philox::seed_from_u64(0x1234_5678_9abc).key(), k);
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut p = Philox::stream(1, domain::SHUFFLE, 0).permutation(1000);
        assert_ne!(p, (0..1000).collect::<Vec<u32>>());
        p.sort_unstable();
        assert_eq!(p, (0..1000).collect::<Vec<u32>>());
    }
}
