//! Shader sources and a cache of compiled compute pipelines.
//!
//! Every WGSL file is compiled into the binary with `include_str!`. A pipeline is keyed by
//! (shader, entry point, override constants) and created once; creation runs inside a wgpu error
//! scope so a shader the driver rejects becomes an `Error`, not a panic.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::{Error, Result};

/// One WGSL source file of `shaders/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shader {
    pub name: &'static str,
    pub source: &'static str,
}

/// A shader of `shaders/`, with `shaders/common.wgsl` (shared structs and helpers) in front.
macro_rules! shader {
    ($name:literal) => {
        Shader {
            name: $name,
            source: concat!(
                include_str!("../../shaders/common.wgsl"),
                include_str!(concat!("../../shaders/", $name, ".wgsl"))
            ),
        }
    };
}

impl Shader {
    pub const MATMUL: Shader = shader!("matmul");
    pub const BIAS_ACT: Shader = shader!("bias_act");
    pub const REDUCE: Shader = shader!("reduce");
    pub const BCE: Shader = shader!("bce");
    pub const REPARAM_KL: Shader = shader!("reparam_kl");
    pub const ADAM: Shader = shader!("adam");
    pub const GATHER: Shader = shader!("gather");
    pub const IWAE: Shader = shader!("iwae");
    /// The subgroup matmul kernels, after `matmul.wgsl` (whose bindings and epilogue they share).
    /// A module of its own: it compiles only on devices with wgpu's `SUBGROUP` feature.
    pub const MATMUL_SUBGROUP: Shader = Shader {
        name: "matmul_subgroup",
        source: concat!(
            include_str!("../../shaders/common.wgsl"),
            include_str!("../../shaders/matmul.wgsl"),
            include_str!("../../shaders/matmul_subgroup.wgsl")
        ),
    };

    /// Every shader of the engine (the cross-compilation test walks this list).
    pub const ALL: [Shader; 8] = [
        Shader::MATMUL,
        Shader::BIAS_ACT,
        Shader::REDUCE,
        Shader::BCE,
        Shader::REPARAM_KL,
        Shader::ADAM,
        Shader::GATHER,
        Shader::IWAE,
    ];
}

fn poisoned() -> Error {
    Error::Device("pipeline cache lock poisoned (a thread panicked while compiling)".into())
}

type PipelineKey = (&'static str, &'static str, Vec<(&'static str, u64)>);

#[derive(Default)]
pub struct PipelineCache {
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
}

impl PipelineCache {
    /// The pipeline for `entry` of `shader` with these override constants, compiled on first use.
    pub fn get(
        &self,
        device: &wgpu::Device,
        shader: Shader,
        entry: &'static str,
        constants: &[(&'static str, f64)],
    ) -> Result<wgpu::ComputePipeline> {
        let key: PipelineKey = (
            shader.name,
            entry,
            constants.iter().map(|&(k, v)| (k, v.to_bits())).collect(),
        );
        if let Some(p) = self.pipelines.lock().map_err(|_| poisoned())?.get(&key) {
            return Ok(p.clone());
        }
        let module = {
            let mut modules = self.modules.lock().map_err(|_| poisoned())?;
            match modules.get(shader.name) {
                Some(m) => m.clone(),
                None => {
                    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
                    let m = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(shader.name),
                        source: wgpu::ShaderSource::Wgsl(shader.source.into()),
                    });
                    if let Some(e) = pollster::block_on(scope.pop()) {
                        return Err(Error::Device(format!(
                            "shader '{}' failed to compile: {e}",
                            shader.name
                        )));
                    }
                    modules.insert(shader.name, m.clone());
                    m
                }
            }
        };
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Device(format!(
                "pipeline '{}::{entry}' ({constants:?}) could not be created: {e}",
                shader.name
            )));
        }
        self.pipelines
            .lock()
            .map_err(|_| poisoned())?
            .insert(key, pipeline.clone());
        Ok(pipeline)
    }
}
