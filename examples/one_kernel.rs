//! The smallest complete use of the engine: a context, two matrices uploaded, one matmul planned
//! with the `direct` kernel (pinned: no autotune, so this is the one visible path from buffer to
//! dispatch), run, read back and compared with its CPU twin.
//!
//! ```text
//! cargo run --release --example one_kernel
//! ```

use vae_wgpu::cpu::ops as cpu;
use vae_wgpu::gpu::{DType, GpuContext};
use vae_wgpu::kernels::{self, matmul};
use vae_wgpu::ops::Layout;

fn main() -> vae_wgpu::Result<()> {
    let ctx = GpuContext::from_env()?;
    println!("adapter: {}", ctx.adapter.short());
    // Y[M, N] = X[M, K] · W[N, K]ᵀ, the Linear forward (an NT product).
    let (m, n, k) = (3, 4, 5);
    let x: Vec<f32> = (0..m * k).map(|i| i as f32 / 10.0).collect();
    let w: Vec<f32> = (0..n * k).map(|i| 1.0 - i as f32 / 20.0).collect();
    let xg = ctx.upload_f32("x", &[m, k], &x)?;
    let wg = ctx.upload_f32("w", &[n, k], &w)?;
    let yg = ctx.zeros("y", &[m, n], DType::F32)?;
    let direct = matmul::MatmulVariant::Direct;
    let d = matmul::matmul_with(
        &ctx,
        direct,
        Layout::NT,
        &xg,
        &wg,
        &yg,
        matmul::Epilogue::NONE,
    )?;
    kernels::run(&ctx, &[&d])?;
    let y = ctx.read_f32(&yg)?;
    let f64s = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
    let want = cpu::matmul(Layout::NT, &f64s(&x), &f64s(&w), m, n, k);
    let worst = y
        .iter()
        .zip(&want)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    println!("y = {y:?}\nmax |GPU - CPU twin| = {worst:e}");
    assert!(worst < 1e-5, "the GPU and its CPU twin disagree");
    Ok(())
}
