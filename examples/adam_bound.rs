//! What bounds Adam on this adapter: the update over the default model's 321 088-float arena (4
//! vec4 loads and 3 vec4 stores per thread) beside kernels that make the same loads and stores
//! with no arithmetic, that only load, that only store, and a plain copy of as many bytes, each the
//! best of 5 rounds of launches back to back (as the autotune times). If the traffic-only kernel
//! takes what Adam takes, the arithmetic is free and the memory path is the bound.
//!
//! ```text
//! cargo run --release --example adam_bound
//! ```

use vae_wgpu::gpu::{GpuContext, Shader};
use vae_wgpu::kernels::adam::AdamHyper;
use vae_wgpu::kernels::adam::{AdamReads, adam_step_with};
use vae_wgpu::kernels::step::{StepParams, StepUniform};
use vae_wgpu::kernels::{self, Bind, Dispatch};

const PROBES: Shader = Shader {
    name: "adam_bound",
    source: r#"
struct Params { n4: u32, _pad0: u32, _pad1: u32, _pad2: u32 }
@group(0) @binding(0) var<storage, read_write> param: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> grad: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> m: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> v: array<vec4<f32>>;
@group(0) @binding(4) var<uniform> p: Params;

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

// Adam's loads and stores, an add for each store.
@compute @workgroup_size(256, 1, 1)
fn traffic(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n4) { return; }
    let w = param[i]; let g = grad[i]; let m0 = m[i]; let v0 = v[i];
    m[i] = m0 + g;
    v[i] = v0 + g;
    param[i] = w + m0;
}

// The four loads, one store of their sum.
@compute @workgroup_size(256, 1, 1)
fn loads(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n4) { return; }
    m[i] = param[i] + grad[i] + m[i] + v[i];
}

// The three stores of constants.
@compute @workgroup_size(256, 1, 1)
fn stores(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    _ = &grad; // bound like the others (the pipeline's layout comes from the shader)
    if (i >= p.n4) { return; }
    m[i] = vec4<f32>(1.0);
    v[i] = vec4<f32>(2.0);
    param[i] = vec4<f32>(3.0);
}

// One load and one store.
@compute @workgroup_size(256, 1, 1)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    _ = &m;
    _ = &v;
    if (i >= p.n4) { return; }
    param[i] = grad[i];
}
"#,
    features: &[],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n4: u32,
    _pad: [u32; 3],
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = GpuContext::from_env()?;
    println!("adapter: {}", ctx.adapter.short());
    let n = 321_088; // the default model's arena: 320 804 parameters, each tensor padded
    let t = |name| ctx.zeros(name, &[n], vae_wgpu::gpu::DType::F32);
    let (p, g, m, v) = (t("param")?, t("grad")?, t("m")?, t("v")?);
    let step = StepUniform::new(&ctx, &StepParams::default());
    let cfg = AdamHyper::default();
    let params = kernels::uniform(
        &ctx,
        "probe params",
        &Params {
            n4: (n / 4) as u32,
            _pad: [0; 3],
        },
    );
    let probe = |entry: &'static str| {
        kernels::dispatch(
            &ctx,
            entry,
            PROBES,
            entry,
            &[],
            &[
                Bind::Tensor(&p),
                Bind::Tensor(&g),
                Bind::Tensor(&m),
                Bind::Tensor(&v),
                Bind::Buffer(&params),
            ],
            kernels::grid_1d(n / 4),
        )
    };
    let rows: Vec<(&str, Dispatch, f64)> = vec![
        (
            "adam_step (storage reads)",
            adam_step_with(&ctx, AdamReads::Storage, &p, &g, &m, &v, &cfg, &step)?,
            7.0,
        ),
        (
            "adam_step_tex (texture reads, copies included)",
            adam_step_with(&ctx, AdamReads::Texture, &p, &g, &m, &v, &cfg, &step)?,
            7.0,
        ),
        (
            "the same 4 loads and 3 stores, adds only",
            probe("traffic")?,
            7.0,
        ),
        ("the 4 loads, 1 store", probe("loads")?, 5.0),
        ("the 3 stores", probe("stores")?, 3.0),
        ("a copy: 1 load, 1 store", probe("copy")?, 2.0),
    ];
    for (what, d, arrays) in &rows {
        kernels::best_of_rounds(&ctx, &[(d, 4)], 1)?;
        let secs = kernels::best_of_rounds(&ctx, &[(d, 16)], 5)?[0];
        let bytes = arrays * (n * 4) as f64;
        println!(
            "{what:48} {:7.0} µs  {:5.1} GB/s",
            secs * 1e6,
            bytes / secs / 1e9
        );
    }
    // The host's own copy of the same bytes, for scale.
    let src = vec![1.0f32; n * 7 / 2];
    let mut dst = vec![0.0f32; n * 7 / 2];
    let mut best = f64::INFINITY;
    for _ in 0..20 {
        let t = std::time::Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&dst);
    println!(
        "{:48} {:7.0} µs  {:5.1} GB/s",
        "host memcpy of 7 arrays' bytes (one thread)",
        best * 1e6,
        (n * 7 * 4) as f64 / best / 1e9
    );
    Ok(())
}
