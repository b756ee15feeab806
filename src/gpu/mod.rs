//! The GPU side of the engine: adapter and device selection ([`context`]), the autotuned matmul choices ([`autotune`]), typed tensors with
//! upload and readback ([`tensor`]), readback that does not stall the queue ([`readback`]), and compiled-once compute pipelines ([`pipeline`]).

pub mod autotune;
pub mod context;
pub mod pipeline;
pub mod readback;
pub mod tensor;

pub use context::{
    AdapterSummary, BackendChoice, ContextOptions, GpuContext, MatmulVariant, list_adapters,
};
pub use pipeline::{PipelineCache, Shader};
pub use tensor::{DType, GpuTensor};
