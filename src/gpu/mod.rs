//! The GPU side of the engine: adapter and device selection ([`context`]), the store of autotuned kernel choices ([`tune_store`]), typed tensors with
//! upload and readback ([`tensor`]), readback that does not stall the queue ([`readback`]), and compiled-once compute pipelines ([`pipeline`]).

pub mod context;
pub mod pipeline;
pub mod readback;
pub mod tensor;
pub mod tune_store;

pub use context::{
    AdapterSummary, BackendChoice, Cancel, ContextOptions, GpuContext, list_adapters,
};
pub use pipeline::{PipelineCache, Shader};
pub use tensor::{DType, GpuTensor};
