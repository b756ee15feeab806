//! The VAE: its sizes ([`VaeConfig`]), its parameters laid out in flat arenas with PyTorch's names
//! ([`ParamLayout`]), and the GPU training step ([`GpuVae`]).

pub mod autoencoder_kl;
pub mod body;
pub mod checkpoint;
pub mod config;
pub mod dataset;
pub mod eval;
pub mod gpu;
pub mod graph;
pub mod layers;
/// The decoder's likelihood, a descriptor of `ops` that the model's configuration names.
pub use crate::ops::likelihood;
pub mod params;
pub mod schedule;
pub mod train;

pub use checkpoint::Checkpoint;
pub use config::VaeConfig;
pub use config::{ConvNet, Objective};
pub use dataset::GpuDataset;
pub use gpu::{Activations, GpuVae, LossReadout};
pub use likelihood::Likelihood;
pub use params::{ConvGeom, Layer, LayerKind, Linear, ParamLayout, ParamSpec};
pub use schedule::{KlWeight, Rule, Schedule};
pub use train::{EpochEnd, EpochStats, Event, TrainSettings, Trainer};
