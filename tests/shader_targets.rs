//! Every shader, every entry point, with every override combination the launchers use, goes through
//! naga (the translator wgpu itself uses) to SPIR-V (Vulkan), MSL (Metal), HLSL (DX12) and GLSL ES
//! 3.10 (GL), and is validated — so a Metal, DX12 or GL user never meets the first shader error.
//! The SPIR-V is also checked by Khronos's `spirv-val` (from `spirv-tools`, which `scripts/test.sh`
//! installs and requires through `VAE_WGPU_REQUIRE_SPIRV_VAL=1`): naga's own validation is of its
//! IR, not of the binary a Vulkan driver receives.

mod common;

use naga::back::PipelineConstants;
use naga::valid::{Capabilities, ValidationFlags, Validator};
use vae_wgpu::gpu::Shader;

#[test]
fn every_shader_translates_to_every_backend() {
    let mut translated = 0;
    let spirv_val = SpirvVal::find();
    for shader in Shader::ALL.into_iter().chain(Shader::SUBGROUP_MODULES) {
        // The subgroup kernels need subgroup operations: SPIR-V 1.3, MSL 2.1 (SIMD-group
        // functions), HLSL shader model 6.0 (wave intrinsics). wgpu's GL backend has no subgroups,
        // so GLSL is not a target for them.
        let subgroup = !shader.features.is_empty();
        let caps = if subgroup {
            Capabilities::SUBGROUP
        } else {
            Capabilities::empty()
        };
        let module = naga::front::wgsl::parse_str(shader.source)
            .unwrap_or_else(|e| panic!("{}: {}", shader.name, e.emit_to_string(shader.source)));
        let info = Validator::new(ValidationFlags::all(), caps)
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}: {}", shader.name, e.emit_to_string(shader.source)));
        let entries: Vec<String> = module.entry_points.iter().map(|e| e.name.clone()).collect();
        assert!(!entries.is_empty(), "{} has no entry points", shader.name);
        for entry in &entries {
            for set in vae_wgpu::kernels::override_sets(&shader, entry) {
                let mut constants = PipelineConstants::default();
                for (k, v) in &set {
                    constants.insert(k.to_string(), *v);
                }
                let what = format!("{}::{entry} {set:?}", shader.name);
                let ep = Some((naga::ShaderStage::Compute, entry.as_str()));
                let (m, i) = naga::back::pipeline_constants::process_overrides(
                    &module, &info, ep, &constants,
                )
                .unwrap_or_else(|e| panic!("{what}: overrides: {e}"));

                let spv_opts = naga::back::spv::PipelineOptions {
                    shader_stage: naga::ShaderStage::Compute,
                    entry_point: entry.clone(),
                };
                let mut spv = naga::back::spv::Options::default();
                let mut msl = naga::back::msl::Options::default();
                let mut hlsl_opts = naga::back::hlsl::Options::default();
                if subgroup {
                    spv.lang_version = (1, 3);
                    msl.lang_version = (2, 1);
                    hlsl_opts.shader_model = naga::back::hlsl::ShaderModel::V6_0;
                }
                let words = naga::back::spv::write_vec(&m, &i, &spv, Some(&spv_opts))
                    .unwrap_or_else(|e| panic!("{what}: SPIR-V: {e}"));
                if let Some(val) = &spirv_val {
                    let env = if subgroup { "vulkan1.1" } else { "vulkan1.0" };
                    val.check(&what, env, &words);
                }

                let msl_opts = naga::back::msl::PipelineOptions {
                    entry_point: Some((naga::ShaderStage::Compute, entry.clone())),
                    ..Default::default()
                };
                naga::back::msl::write_string(&m, &i, &msl, &msl_opts)
                    .unwrap_or_else(|e| panic!("{what}: MSL: {e}"));

                let hlsl_pipeline = naga::back::hlsl::PipelineOptions {
                    entry_point: Some((naga::ShaderStage::Compute, entry.clone())),
                };
                let mut hlsl = String::new();
                naga::back::hlsl::Writer::new(&mut hlsl, &hlsl_opts, &hlsl_pipeline)
                    .write(&m, &i, None)
                    .unwrap_or_else(|e| panic!("{what}: HLSL: {e}"));

                if subgroup {
                    translated += 1;
                    continue;
                }
                let glsl_opts = naga::back::glsl::Options::default(); // GLSL ES 3.10: compute on GL
                let glsl_pipeline = naga::back::glsl::PipelineOptions {
                    shader_stage: naga::ShaderStage::Compute,
                    entry_point: entry.clone(),
                    multiview: None,
                };
                let mut glsl = String::new();
                naga::back::glsl::Writer::new(
                    &mut glsl,
                    &m,
                    &i,
                    &glsl_opts,
                    &glsl_pipeline,
                    naga::proc::BoundsCheckPolicies::default(),
                )
                .and_then(|mut w| w.write())
                .unwrap_or_else(|e| panic!("{what}: GLSL: {e}"));
                translated += 1;
            }
        }
    }
    eprintln!(
        "{translated} (entry point, overrides) combinations translated to SPIR-V, MSL, HLSL and (without subgroups) GLSL"
    );
    assert!(
        translated >= 40,
        "expected every shader variant, got {translated}"
    );
}

/// Khronos's SPIR-V validator, run on each module naga writes (one file per check).
struct SpirvVal {
    dir: std::path::PathBuf,
}

impl SpirvVal {
    /// `spirv-val` if it runs; its absence fails the test when `VAE_WGPU_REQUIRE_SPIRV_VAL=1` (as
    /// `scripts/test.sh` sets), else it is said on stderr.
    fn find() -> Option<SpirvVal> {
        let runs = std::process::Command::new("spirv-val")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !runs {
            let required = std::env::var("VAE_WGPU_REQUIRE_SPIRV_VAL").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "spirv-val is not installed (apt-get install spirv-tools), and VAE_WGPU_REQUIRE_SPIRV_VAL=1"
            );
            common::skip(
                "spirv-val of every module",
                "spirv-val not found (apt-get install spirv-tools): SPIR-V checked by naga only",
            );
            return None;
        }
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("spirv-val-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Some(SpirvVal { dir })
    }

    fn check(&self, what: &str, env: &str, words: &[u32]) {
        let path = self.dir.join("module.spv");
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        std::fs::write(&path, bytes).unwrap();
        let out = std::process::Command::new("spirv-val")
            .args(["--target-env", env])
            .arg(&path)
            .output()
            .expect("run spirv-val");
        assert!(
            out.status.success(),
            "{what}: spirv-val --target-env {env}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for SpirvVal {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
