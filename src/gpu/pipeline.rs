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
    /// The WGSL as naga (wgpu) takes it.
    pub source: &'static str,
    /// WebGPU features the module needs (`"subgroups"`); each is also a WGSL `enable` directive
    /// that Tint requires and naga 30 refuses, so [`Shader::webgpu_source`] adds them.
    pub features: &'static [&'static str],
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
            features: &[],
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
        features: &["subgroups"],
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

impl Shader {
    /// The source a WebGPU implementation (Tint in Chrome, Dawn) takes: an `enable` directive
    /// per feature the module uses, then the same WGSL. The one place where the targets differ.
    pub fn webgpu_source(&self) -> String {
        let mut s: String = self
            .features
            .iter()
            .map(|f| format!("enable {f};\n"))
            .collect();
        s.push_str(self.source);
        s
    }

    /// The module's compute entry points, in source order (the `fn` after each `@compute`).
    pub fn entry_points(&self) -> Vec<&'static str> {
        let src = self.source;
        src.match_indices("@compute")
            .filter_map(|(i, _)| {
                let rest = &src[i..];
                let start = rest.find("fn ")? + 3;
                let name = &rest[start..];
                let end = name.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
                Some(&name[..end])
            })
            .collect()
    }

    /// Every override-constant combination the launchers use with this module (empty: the
    /// shader's defaults). The cross-compilation and browser portability tests walk these.
    pub fn override_sets(&self) -> Vec<Vec<(&'static str, f64)>> {
        match self.name {
            "matmul" | "matmul_subgroup" => {
                let mut v = Vec::new();
                for layout in 0..3 {
                    for act in 0..3 {
                        for bias in 0..2 {
                            for acc in 0..2 {
                                for mask in 0..2 {
                                    for rows in 0..2 {
                                        v.push(vec![
                                            ("LAYOUT", layout as f64),
                                            ("ACT", act as f64),
                                            ("HAS_BIAS", bias as f64),
                                            ("ACCUMULATE", acc as f64),
                                            ("RELU_MASK", mask as f64),
                                            ("ROW_SUM", rows as f64),
                                            ("BCE", 0.0),
                                        ]);
                                    }
                                }
                            }
                        }
                    }
                    // The BCE epilogue goes with identity, no accumulation, mask or row sums.
                    for bias in 0..2 {
                        v.push(vec![
                            ("LAYOUT", layout as f64),
                            ("HAS_BIAS", bias as f64),
                            ("BCE", 1.0),
                        ]);
                    }
                }
                v
            }
            "bias_act" => (0..3)
                .flat_map(|a| (0..2).map(move |b| vec![("ACT", a as f64), ("HAS_BIAS", b as f64)]))
                .collect(),
            "reparam_kl" => vec![
                vec![("EPS_FROM_BUFFER", 0.0)],
                vec![("EPS_FROM_BUFFER", 1.0)],
            ],
            _ => vec![vec![]],
        }
    }
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
