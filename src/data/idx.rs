//! The IDX format (LeCun's MNIST files): a 4-byte magic `00 00 <type> <ndims>`, then `ndims`
//! big-endian u32 dimensions, then the data. We read unsigned-byte arrays (type 0x08), the only type
//! MNIST uses. A file starting with the gzip magic `1f 8b` is decompressed first, whatever its name.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// An IDX array of unsigned bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Largest array we accept (1 GiB): a corrupt header must not make us allocate without bound.
const MAX_ELEMS: u64 = 1 << 30;

fn bad(path: &Path, detail: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Read an IDX file, gzip-compressed or raw.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let raw = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_idx(&raw, path)
}

/// Parse IDX file contents, gunzipping them first if they start with the gzip magic; `path` only
/// names the source in errors.
pub fn decode_idx(raw: &[u8], path: &Path) -> Result<IdxArray> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        // Read at most one byte past the largest array we accept, so a gzip bomb stops early.
        flate2::read::MultiGzDecoder::new(raw)
            .take(MAX_ELEMS + 1024)
            .read_to_end(&mut out)
            .map_err(|e| {
                bad(
                    path,
                    format!(
                        "corrupt gzip data: {e} (re-copy the file; check it against SHA256SUMS)"
                    ),
                )
            })?;
        parse_idx(&out, path)
    } else {
        parse_idx(raw, path)
    }
}

/// Parse IDX bytes; `path` only names the source in errors.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    if bytes.len() < 4 {
        return Err(bad(
            path,
            format!(
                "file is {} bytes: too short for an IDX header (truncated?)",
                bytes.len()
            ),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(
            path,
            format!(
                "wrong magic {:02x} {:02x} {:02x} {:02x}: an IDX file starts with 00 00 08 <ndims> (is this an IDX file?)",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(bad(
            path,
            format!(
                "IDX data type 0x{:02x}, expected 0x08 (unsigned byte)",
                bytes[2]
            ),
        ));
    }
    let ndims = bytes[3] as usize;
    if ndims == 0 {
        return Err(bad(path, "IDX header declares 0 dimensions"));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(bad(
            path,
            format!(
                "file is {} bytes, shorter than its {header}-byte header (truncated?)",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| {
            u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap_or([0; 4])) as usize
        })
        .collect();
    let elems = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .unwrap_or(u64::MAX);
    if elems > MAX_ELEMS {
        return Err(bad(
            path,
            format!(
                "dimensions {dims:?} declare {elems} bytes, more than the {MAX_ELEMS} accepted (corrupt header?)"
            ),
        ));
    }
    let found = (bytes.len() - header) as u64;
    if found != elems {
        let what = if found < elems {
            "truncated"
        } else {
            "trailing bytes"
        };
        return Err(bad(
            path,
            format!("dimensions {dims:?} need {elems} data bytes, found {found} ({what})"),
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}
