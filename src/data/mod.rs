//! MNIST from IDX files (gzip-compressed or raw), with errors that name the file and what was
//! expected and found.

pub mod idx;
pub mod mnist;

pub use idx::{IdxArray, decode_idx, parse_idx, read_idx};
pub use mnist::{Mnist, Split, load_splits};
