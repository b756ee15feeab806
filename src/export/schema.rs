//! The exported plan's schema (`plan.json`): one typed value per section, serialised by serde,
//! the schema `docs/PLAN_FORMAT.md` describes and `web/runtime.js`'s typedefs read. Numbers keep
//! the types the page reads (f64 for every real, whatever the engine holds).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

#[derive(Serialize)]
pub struct Plan {
    pub format: &'static str,
    pub version: u32,
    pub engine: String,
    pub planned_on: String,
    pub model: Model,
    pub train: Train,
    pub image: Image,
    /// The native autotune's rule (`kernels::AUTOTUNE`).
    pub autotune: crate::kernels::AutotuneRule,
    pub limits: Limits,
    pub shaders: Vec<ShaderSource>,
    pub pipelines: Vec<Pipeline>,
    pub buffers: Vec<Buffer>,
    pub uniform: Uniform,
    pub accumulators: BTreeMap<&'static str, Accumulator>,
    pub epoch_input: EpochInput,
    pub evaluation: Evaluation,
    pub graphs: BTreeMap<&'static str, Graph>,
    pub outputs: Outputs,
}

/// The architecture and objective, for display.
#[derive(Serialize)]
pub struct Model {
    pub input: usize,
    pub hidden: Vec<usize>,
    pub decoder_hidden: Vec<usize>,
    pub conv: Option<Vec<usize>>,
    pub describe: String,
    pub activation: &'static str,
    pub latent: usize,
    pub likelihood: &'static str,
    pub beta: f64,
    pub kl_warmup: f64,
    pub objective: &'static str,
    pub classes: usize,
    pub class_names: Vec<String>,
    pub samples: usize,
    pub params: usize,
}

/// The run's settings; the reals are the decimal values meant (`ops::meant`).
#[derive(Serialize)]
pub struct Train {
    pub batch: usize,
    pub epochs: usize,
    pub optimizer: &'static str,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub nesterov: bool,
    pub lr_schedule: Value,
    pub clip_grad_norm: Option<f64>,
    pub seed: u64,
    pub train_len: usize,
    pub test_len: usize,
    pub log_every: usize,
    pub steps_per_epoch: usize,
}

#[derive(Serialize)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
}

/// WebGPU limit names → what the plan needs.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroups_per_dimension: u32,
    pub max_storage_buffers_per_shader_stage: usize,
    pub max_uniform_buffers_per_shader_stage: usize,
    pub max_compute_invocations_per_workgroup: u32,
    #[serde(rename = "maxComputeWorkgroupSizeX")]
    pub max_compute_workgroup_size_x: u32,
}

#[derive(Serialize)]
pub struct ShaderSource {
    pub name: &'static str,
    pub source: String,
    pub features: &'static [&'static str],
}

#[derive(Serialize)]
pub struct Pipeline {
    pub shader: &'static str,
    pub entry: &'static str,
    pub constants: BTreeMap<&'static str, f64>,
}

#[derive(Serialize)]
pub struct Buffer {
    pub id: usize,
    pub name: String,
    pub size: u64,
    pub usage: Vec<&'static str>,
    pub init: Option<Init>,
}

/// A buffer's initial contents (none: zeros).
#[derive(Serialize)]
#[serde(untagged)]
pub enum Init {
    Blob {
        blob: &'static str,
        offset: usize,
        size: usize,
    },
    Gzip {
        gzip: &'static str,
        skip: usize,
        size: usize,
    },
}

#[derive(Serialize)]
pub struct Uniform {
    pub buffer: usize,
    pub size: usize,
    pub fields: Vec<UniformField>,
}

#[derive(Serialize)]
pub struct UniformField {
    pub name: &'static str,
    pub offset: usize,
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub rule: Option<Value>,
}

#[derive(Serialize)]
pub struct Accumulator {
    pub buffer: usize,
    pub len: usize,
    pub slots: BTreeMap<&'static str, usize>,
}

#[derive(Serialize)]
pub struct EpochInput {
    pub buffer: usize,
    pub blob: &'static str,
    pub count: usize,
}

/// How evaluation steps number their noise (`model::gpu::EVAL_DRAWS`).
#[derive(Serialize)]
pub struct Evaluation {
    pub rng_flag: u32,
    pub epoch_stride: u32,
}

#[derive(Serialize)]
pub struct Graph {
    pub rows: usize,
    pub train: bool,
    pub dispatches: Vec<Dispatch>,
}

#[derive(Serialize)]
pub struct Dispatch {
    pub label: &'static str,
    pub shader: &'static str,
    pub entry: &'static str,
    pub constants: BTreeMap<&'static str, f64>,
    pub bindings: Vec<Binding>,
    pub workgroups: [u32; 3],
    /// A matmul's problem and its candidates (every usable kernel, `direct` first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidates: Option<Vec<Candidate>>,
}

#[derive(Serialize)]
pub struct Binding {
    pub binding: usize,
    pub buffer: usize,
    pub offset: u64,
    pub size: u64,
}

/// One kernel a matmul may run as: its dispatch, what it needs, and the words to write when it is
/// chosen (the loss reduction's count of partials).
#[derive(Serialize)]
pub struct Candidate {
    #[serde(flatten)]
    pub dispatch: Dispatch,
    pub variant: String,
    pub requires: &'static [&'static str],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_subgroup_size: Option<u32>,
    pub set: Vec<SetWords>,
}

#[derive(Serialize)]
pub struct SetWords {
    pub buffer: usize,
    pub offset: u64,
    pub u32: Vec<u32>,
}

#[derive(Serialize)]
pub struct Region {
    pub buffer: usize,
    pub offset: u64,
    pub rows: usize,
    pub cols: usize,
}

#[derive(Serialize)]
pub struct Outputs {
    pub reconstruct: Reconstruct,
    pub decode: Decode,
}

#[derive(Serialize)]
pub struct Reconstruct {
    pub originals: Region,
    pub reconstructions: Region,
}

#[derive(Serialize)]
pub struct Decode {
    pub z: Region,
    pub means: Region,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
}

/// A conditional model's classes of the decoded codes: u32 per row, written by the page.
#[derive(Serialize)]
pub struct Labels {
    pub buffer: usize,
    pub offset: u64,
    pub rows: usize,
}
