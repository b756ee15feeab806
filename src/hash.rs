//! FNV-1a (64-bit): a hash that is stable across Rust versions and platforms (unlike
//! `DefaultHasher`), for keys that are stored or must repeat from run to run: the autotune cache's
//! kernel-source key, the image cache's key, an image folder's held-out split.

/// An FNV-1a hash being fed bytes.
#[derive(Clone, Copy, Debug)]
pub struct Fnv1a(pub u64);

impl Fnv1a {
    /// The standard starting state (the hash of no bytes).
    pub const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    /// Feed `bytes`.
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
        self
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(Self::OFFSET)
    }
}
