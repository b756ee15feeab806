//! A kernel of your own through the engine's context: WGSL written here, launched with the same
//! `kernels::dispatch` every launcher of the engine ends in (pipeline cache, bind group inside an
//! error scope, the launch kept as data), run, read back and checked on the host.
//!
//! ```text
//! cargo run --release --example own_kernel
//! ```

use vae_wgpu::gpu::{DType, GpuContext, Shader};
use vae_wgpu::kernels::{self, Bind};

/// `y = a·x + y` over n floats, one thread each.
const SAXPY: Shader = Shader {
    name: "my_saxpy",
    source: r#"
struct Params { n: u32, a: f32, _pad0: u32, _pad1: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(256, 1, 1)
fn saxpy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i < p.n) {
        y[i] = p.a * x[i] + y[i];
    }
}
"#,
    features: &[],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    a: f32,
    _pad: [u32; 2],
}

fn main() -> vae_wgpu::Result<()> {
    let ctx = GpuContext::from_env()?;
    println!("adapter: {}", ctx.adapter.short());
    let n = 1000;
    let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let xg = ctx.upload_f32("x", &[n], &x)?;
    let yg = ctx.zeros("y", &[n], DType::F32)?;
    ctx.write_f32(&yg, &vec![1.0; n])?;
    let params = kernels::uniform(
        &ctx,
        "saxpy params",
        &Params {
            n: n as u32,
            a: 2.0,
            _pad: [0; 2],
        },
    );
    let d = kernels::dispatch(
        &ctx,
        "saxpy",
        SAXPY,
        "saxpy",
        &[],
        &[Bind::Tensor(&xg), Bind::Tensor(&yg), Bind::Buffer(&params)],
        kernels::grid_1d(n),
    )?;
    kernels::run(&ctx, &[&d])?;
    let y = ctx.read_f32(&yg)?;
    let worst = (0..n)
        .map(|i| (y[i] - (2.0 * x[i] + 1.0)).abs())
        .fold(0.0f32, f32::max);
    println!("y[..4] = {:?}, max error {worst}", &y[..4]);
    assert_eq!(worst, 0.0, "2·x + 1 is exact in f32 for these x");
    Ok(())
}
