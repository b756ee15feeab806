//! vae-wgpu: variational autoencoders (MLP, convolutional, diffusers' AutoencoderKL) trained by
//! hand-written WGSL compute kernels, on any GPU wgpu reaches. Start at [`prelude`] and
//! [`vae`] (`examples/library.rs`); the map of the code is `docs/ARCHITECTURE.md`; the smallest
//! use of the kernels themselves is `examples/one_kernel.rs`.
//!
//! Modules, top-down (a module imports only from those below it):
//! - [`cli`]: the programs `train`, `eval`, `pictures`, `export_web` (feature `cli`, on by default).
//! - [`viz`]: the pictures and plots the programs write (feature `cli`).
//! - [`vae`]: the front door: a model from a config, trained, encoded, decoded, saved.
//! - [`export`]: the planned training step written as data for other runtimes (`web/`).
//! - [`model`]: the VAE's parameter layout, its planned GPU step, the trainer, evaluation and
//!   checkpoints.
//! - [`optim`]: the optimizers (Adam, AdamW, SGD) as values: their state on the device, their
//!   step-dependent factors, learning-rate schedules and gradient clipping.
//! - [`cpu`]: the f64 reference of every kernel and of the model, the oracle of the parity tests.
//! - [`kernels`]: one typed launcher per shader of `shaders/`, each returning a replayable
//!   [`kernels::Dispatch`]; the matmul kernel choice and autotune.
//! - [`gpu`]: adapter and device, typed tensors, pipeline cache, readback, the tune store.
//! - [`data`]: the images: IDX files (MNIST) and image folders.
//! - [`files`]: atomic writes and bounded reads.
//! - [`hash`]: FNV-1a, for keys that are stored or must repeat across runs.
//! - [`rng`]: Philox4x32-10, shared by the WGSL kernels and the host.
//! - [`ops`]: descriptors shared by kernels and their CPU twins (layouts, activations, the shapes of convolutions).
//! - [`error`]: the one error type.

#[cfg(feature = "cli")]
pub mod cli;
pub mod cpu;
pub mod data;
pub mod error;
pub mod export;
pub mod files;
pub mod gpu;
pub mod hash;
pub mod kernels;
pub mod model;
pub mod ops;
pub mod optim;
pub mod rng;
pub mod vae;
#[cfg(feature = "cli")]
pub mod viz;

pub use error::{Error, Result};

/// What a program that trains and runs models names: `use vae_wgpu::prelude::*`.
pub mod prelude {
    pub use crate::data::ImageSet;
    pub use crate::gpu::{Cancel, ContextOptions, GpuContext as Device};
    pub use crate::model::{EpochStats, Likelihood, Trainer, VaeConfig};
    pub use crate::optim::{OptimizerConfig, OptimizerKind};
    pub use crate::vae::{Posterior, Vae};
    pub use crate::{Error, Result};
}
