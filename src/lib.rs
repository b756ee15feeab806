//! vae-wgpu: a Bernoulli VAE trained on MNIST by hand-written WGSL compute kernels.
//!
//! - [`gpu`]: adapter/device selection, typed tensors, pipeline cache.
//! - [`kernels`]: a typed launcher per shader in `shaders/`.
//! - [`cpu`]: the reference math in f64, the oracle of every parity test.
//! - [`model`]: the VAE's parameters, the GPU training step and the trainer.
//! - [`data`]: the MNIST IDX reader.

pub mod cli;
pub mod cpu;
pub mod error;
pub mod export;
pub mod gpu;
pub mod kernels;
pub mod ops;
pub mod rng;
pub mod viz;

pub use error::{Error, Result};
pub mod data;
pub mod model;
