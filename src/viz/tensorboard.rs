//! TensorBoard event files, so `tensorboard --logdir runs` compares runs as it does PyTorch's: the
//! trainer writes the batch loss at each log point, each epoch's losses and parts, and the
//! pictures after each epoch.
//!
//! The format is small and stable, so it is written here rather than through a writer crate
//! (`tensorboard-rs`, the one maintained for Rust, pulls `image` 0.23 and `protobuf` 2 beside the
//! `png` we use): a file named `events.out.tfevents.*` of records, each `u64` length, the masked
//! CRC-32C of those 8 bytes, the data, the masked CRC-32C of the data (all little-endian), whose
//! data is an `Event` protobuf (tensorflow/core/util/event.proto): `wall_time` (1, double), `step`
//! (2, int64), then `file_version` (3, string) in the first record and `summary` (5) in the rest.
//! A `Summary` (summary.proto) is repeated `Value` (1) of `tag` (1) and `simple_value` (2, float)
//! or `image` (4: `height` 1, `width` 2, `colorspace` 3, PNG bytes `encoded_image_string` 4).
//! `tests/tensorboard.rs` reads the files back with TensorBoard's own reader.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The CRC TensorFlow's record format uses (Castagnoli).
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// TFRecord's masking of a CRC (so that a CRC of data holding CRCs is not degenerate).
fn masked_crc(bytes: &[u8]) -> u32 {
    let c = CRC32C.checksum(bytes);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// Protobuf wire encoding, as much of it as the two messages need.
#[derive(Default)]
struct Proto(Vec<u8>);

impl Proto {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    /// Field `field` of wire type `wire` (0 varint, 1 fixed64, 2 length-delimited, 5 fixed32).
    fn key(&mut self, field: u32, wire: u8) {
        self.varint(((field as u64) << 3) | wire as u64);
    }

    fn uint(&mut self, field: u32, v: u64) {
        self.key(field, 0);
        self.varint(v);
    }

    fn double(&mut self, field: u32, v: f64) {
        self.key(field, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn float(&mut self, field: u32, v: f32) {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
}

/// A run's event file, appended to as training goes (each call writes whole records; a crash
/// leaves at most a torn last record, which TensorBoard's reader stops at).
pub struct EventWriter {
    path: PathBuf,
    file: File,
}

impl EventWriter {
    /// A new event file in `dir` (`events.out.tfevents.<unix time>.vae-wgpu.<pid>`: a resumed run
    /// adds one more, and TensorBoard reads them all as one run).
    pub fn create(dir: &Path) -> Result<Self> {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let path = dir.join(format!(
            "events.out.tfevents.{secs}.vae-wgpu.{}",
            std::process::id()
        ));
        let file = File::create(&path).map_err(|e| Error::Io {
            path: path.clone(),
            source: e,
        })?;
        let mut w = EventWriter { path, file };
        let mut first = w.event(0);
        first.bytes(3, b"brain.Event:2");
        w.record(&first.0)?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An `Event` with its time and step; the caller adds its payload.
    fn event(&self, step: i64) -> Proto {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut e = Proto::default();
        e.double(1, now);
        e.uint(2, step as u64);
        e
    }

    fn record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut r = Vec::with_capacity(data.len() + 16);
        r.extend_from_slice(&len);
        r.extend_from_slice(&masked_crc(&len).to_le_bytes());
        r.extend_from_slice(data);
        r.extend_from_slice(&masked_crc(data).to_le_bytes());
        self.file.write_all(&r).map_err(|e| Error::Io {
            path: self.path.clone(),
            source: e,
        })
    }

    /// One summary value (its encoded `Value`) at `step`.
    fn summary(&mut self, step: i64, value: &Proto) -> Result<()> {
        let mut summary = Proto::default();
        summary.bytes(1, &value.0);
        let mut e = self.event(step);
        e.bytes(5, &summary.0);
        self.record(&e.0)
    }

    /// A scalar (TensorBoard's Scalars tab) at `step`.
    pub fn scalar(&mut self, tag: &str, step: i64, value: f64) -> Result<()> {
        let mut v = Proto::default();
        v.bytes(1, tag.as_bytes());
        v.float(2, value as f32);
        self.summary(step, &v)
    }

    /// A PNG picture (the Images tab) of `width` x `height` with `channels` (1 gray, 3 RGB).
    pub fn image(
        &mut self,
        tag: &str,
        step: i64,
        png: &[u8],
        width: u32,
        height: u32,
        channels: u32,
    ) -> Result<()> {
        let mut img = Proto::default();
        img.uint(1, height as u64);
        img.uint(2, width as u64);
        img.uint(3, channels as u64);
        img.bytes(4, png);
        let mut v = Proto::default();
        v.bytes(1, tag.as_bytes());
        v.bytes(4, &img.0);
        self.summary(step, &v)
    }

    /// Hand the written records to the OS (once per epoch: TensorBoard sees the epoch then).
    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| Error::Io {
            path: self.path.clone(),
            source: e,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_and_its_mask_are_tensorflows() {
        // CRC-32C's check value, and the masked CRCs TensorBoard's own `masked_crc32c`
        // (tensorboard.compat.tensorflow_stub.pywrap_tensorflow) gives for the same bytes.
        assert_eq!(CRC32C.checksum(b"123456789"), 0xe306_9283);
        assert_eq!(masked_crc(&[0u8; 8]), 0x0798_0329);
        assert_eq!(masked_crc(b"123456789"), 0xc78a_b0e5);
    }

    #[test]
    fn varints_are_little_endian_groups_of_seven_bits() {
        let mut p = Proto::default();
        p.varint(1);
        p.varint(300);
        p.varint(u64::MAX);
        assert_eq!(&p.0[..3], [0x01, 0xac, 0x02]);
        assert_eq!(p.0.len(), 3 + 10);
    }
}
