//! Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11), the
//! counter-based generator shared with `shaders/reparam_kl.wgsl`: the same (seed, step, element)
//! gives the same bits on both sides, and the same normal up to the adapter's log/cos accuracy.
//! Host-side streams (parameter init, epoch shuffles) use other counter domains of the same key.

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

/// A sequential host-side stream over one counter domain: (domain, stream id) fixed, position counts.
#[derive(Clone, Debug)]
pub struct Stream {
    key: [u32; 2],
    domain: u32,
    stream: u32,
    pos: u32,
    buf: [u32; 4],
    used: usize,
}

impl Stream {
    pub fn new(seed: u64, domain: u32, stream: u32) -> Self {
        Stream {
            key: key(seed),
            domain,
            stream,
            pos: 0,
            buf: [0; 4],
            used: 4,
        }
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.used == 4 {
            self.buf = philox4x32_10([self.pos, self.stream, self.domain, 0x5eed], self.key);
            self.pos = self.pos.wrapping_add(1);
            self.used = 0;
        }
        let v = self.buf[self.used];
        self.used += 1;
        v
    }

    /// Uniform in (0, 1).
    pub fn unit(&mut self) -> f64 {
        to_unit(self.next_u32())
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// A standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Uniform integer in `0..n` (n > 0), by 64-bit multiply-shift: bias below 2^-32·n.
    pub fn below(&mut self, n: u32) -> u32 {
        ((self.next_u32() as u64 * n as u64) >> 32) as u32
    }

    /// A uniformly random permutation of `0..n` (Fisher–Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<u32> {
        let mut p: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            let j = self.below(i as u32 + 1) as usize;
            p.swap(i, j);
        }
        p
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
    fn permutation_is_a_permutation() {
        let mut p = Stream::new(1, domain::SHUFFLE, 0).permutation(1000);
        assert_ne!(p, (0..1000).collect::<Vec<u32>>());
        p.sort_unstable();
        assert_eq!(p, (0..1000).collect::<Vec<u32>>());
    }
}
