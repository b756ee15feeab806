//! Kernel microbenchmarks on the selected adapter (`VAE_WGPU_BACKEND`, `VAE_WGPU_ADAPTER`):
//! matmul in all three layouts and every variant (direct, tiled, and subgroup where the device has
//! subgroups) at the model's shapes and 1024³, next to the f64 CPU twin and a tuned CPU sgemm
//! (`matrixmultiply`); the logits product with and without the fused BCE; and the elementwise and
//! reduction kernels; the convolution passes of the `--conv 32,64` model in both formulations.
//! Matmul throughput is reported in FLOP/s (criterion's "elem/s" = FLOP/s, 2·M·N·K per product).
//!
//! ```text
//! cargo bench --bench kernels                # everything
//! cargo bench --bench kernels -- matmul/NT   # a filter
//! ```

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vae_wgpu::cpu::ops as cpu;
use vae_wgpu::gpu::{DType, GpuContext};
use vae_wgpu::kernels::StepUniform;
use vae_wgpu::kernels::adam::AdamHyper;
use vae_wgpu::kernels::matmul::{
    Epilogue, Problem, ReconEpilogue, matmul_with, recon_partials_len, variant_for,
};
use vae_wgpu::kernels::reparam_kl::{EpsSource, Logvar, kl_partials_len};
use vae_wgpu::kernels::{Dispatch, StepParams, adam, gather, likelihood, reparam_kl};
use vae_wgpu::model::Likelihood;
use vae_wgpu::ops::Layout;

/// Model shapes (M, N, K) — the issue's list, the two weight-gradient shapes training runs (TN
/// 784x200x128 and 200x784x128), the 20-wide joint latent heads, the 10-wide decoder input — and
/// the square one.
const SHAPES: [(usize, usize, usize); 10] = [
    (128, 784, 200),
    (128, 200, 784),
    (784, 128, 200),
    (784, 200, 128),
    (200, 784, 128),
    (128, 20, 200),
    (20, 200, 128),
    (128, 10, 200),
    (128, 200, 10),
    (1024, 1024, 1024),
];

fn context() -> GpuContext {
    let ctx = GpuContext::from_env().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("adapter: {}", ctx.adapter.short());
    ctx
}

/// The adapter in every benchmark's name, so each result line says where it ran (and criterion
/// keeps one baseline per adapter).
fn tag(ctx: &GpuContext) -> String {
    format!("{} {:?}", ctx.adapter.name, ctx.adapter.backend)
}

/// Time `iters` launches of `d`, recorded 64 to a submit so per-submit overhead is amortised.
fn gpu_time(ctx: &GpuContext, d: &Dispatch, iters: u64) -> Duration {
    ctx.wait_idle("warm-up").unwrap();
    let start = Instant::now();
    let mut left = iters;
    while left > 0 {
        let n = left.min(64);
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        vae_wgpu::kernels::encode_all(&mut enc, &vec![d; n as usize]);
        ctx.queue.submit([enc.finish()]);
        left -= n;
    }
    ctx.wait_idle("benchmark").unwrap();
    start.elapsed()
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
}

fn bench_matmul(c: &mut Criterion) {
    let ctx = context();
    for layout in Layout::ALL {
        let mut g = c.benchmark_group(format!("matmul/{layout:?} [{}]", tag(&ctx)));
        for (m, n, k) in SHAPES {
            let id = format!("{m}x{n}x{k}");
            g.throughput(Throughput::Elements((2 * m * n * k) as u64));
            let (sa, sb) = layout.operand_shapes(m, n, k);
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7) % 13) as f32 * 0.1 - 0.6)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 5) % 11) as f32 * 0.1 - 0.5)
                .collect();
            let ga = ctx.upload_f32("a", &sa, &a).unwrap();
            let gb = ctx.upload_f32("b", &sb, &b).unwrap();
            let gc = ctx.zeros("c", &[m, n], DType::F32).unwrap();
            let variants = vae_wgpu::kernels::matmul::select::usable_variants(&ctx);
            for variant in variants {
                let d = matmul_with(&ctx, variant, layout, &ga, &gb, &gc, Epilogue::NONE).unwrap();
                g.bench_function(BenchmarkId::new(format!("gpu-{variant:?}"), &id), |bench| {
                    bench.iter_custom(|it| gpu_time(&ctx, &d, it))
                });
            }
            // A tuned CPU sgemm on the same operands (row/column strides express the layout).
            let (rsa, csa) = if layout == Layout::TN {
                (1, m as isize)
            } else {
                (k as isize, 1)
            };
            let (rsb, csb) = if layout == Layout::NT {
                (1, k as isize)
            } else {
                (n as isize, 1)
            };
            let mut cc = vec![0f32; m * n];
            g.bench_function(BenchmarkId::new("cpu-sgemm", &id), |bench| {
                bench.iter(|| unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        a.as_ptr(),
                        rsa,
                        csa,
                        b.as_ptr(),
                        rsb,
                        csb,
                        0.0,
                        cc.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                })
            });
            if m * n * k <= 1 << 26 {
                let a64: Vec<f64> = a.iter().map(|&v| v as f64).collect();
                let b64: Vec<f64> = b.iter().map(|&v| v as f64).collect();
                g.bench_function(BenchmarkId::new("cpu-twin-f64", &id), |bench| {
                    bench.iter(|| cpu::matmul(layout, &a64, &b64, m, n, k))
                });
            }
        }
        g.finish();
    }
}

fn bench_elementwise(c: &mut Criterion) {
    let ctx = context();
    let (b, d, h, k) = (128usize, 784usize, 200usize, 10usize);
    let mut g = c.benchmark_group(format!("kernels [{}]", tag(&ctx)));
    let f = |n: usize| -> Vec<f32> { (0..n).map(|i| ((i * 7) % 13) as f32 * 0.1 - 0.6).collect() };
    let logits = ctx.upload_f32("logits", &[b, d], &f(b * d)).unwrap();
    let x = ctx
        .upload_f32(
            "x",
            &[b, d],
            &f(b * d).iter().map(|v| v.abs()).collect::<Vec<_>>(),
        )
        .unwrap();
    let dl = ctx.zeros("dl", &[b, d], DType::F32).unwrap();
    let parts = ctx
        .zeros("parts", &[likelihood::partials_len(b * d)], DType::F32)
        .unwrap();
    let bytes = |n: usize| Throughput::Bytes(n as u64 * 4);

    g.throughput(bytes(3 * b * d));
    for lik in [Likelihood::Bernoulli, Likelihood::ContinuousBernoulli] {
        let kb = likelihood::recon_forward_backward(
            &ctx, lik, &logits, &x, &dl, &parts, None, None, None,
        )
        .unwrap();
        g.bench_function(
            format!("recon_forward_backward {} 128x784", lik.name()),
            |bn| bn.iter_custom(|it| gpu_time(&ctx, &kb, it)),
        );
    }

    // The logits product with and without the BCE fused into its epilogue (autotuned variant).
    let hd = ctx.upload_f32("h_dec", &[b, h], &f(b * h)).unwrap();
    let w_out = ctx.upload_f32("w_out", &[d, h], &f(d * h)).unwrap();
    let b_out = ctx.upload_f32("b_out", &[d], &f(d)).unwrap();
    let logits_product = Problem {
        epilogue: vae_wgpu::kernels::matmul::EpilogueKind {
            bias: true,
            recon: Some(Likelihood::Bernoulli.name()),
            ..vae_wgpu::kernels::matmul::EpilogueKind::NONE
        },
        ..Problem::bare(Layout::NT, b, d, h)
    };
    let variant = variant_for(&ctx, logits_product).unwrap();
    let fused_parts = ctx
        .zeros(
            "fused parts",
            &[recon_partials_len(&ctx, variant, logits_product).unwrap()],
            DType::F32,
        )
        .unwrap();
    g.throughput(Throughput::Elements((2 * b * d * h) as u64));
    let plain = Epilogue {
        bias: Some(&b_out),
        ..Epilogue::NONE
    };
    let kp = matmul_with(&ctx, variant, Layout::NT, &hd, &w_out, &dl, plain).unwrap();
    g.bench_function(format!("logits product 128x784x200 ({variant})"), |bn| {
        bn.iter_custom(|it| gpu_time(&ctx, &kp, it))
    });
    let fused = Epilogue {
        recon: Some(ReconEpilogue {
            likelihood: Likelihood::Bernoulli,
            targets: &x,
            partials: &fused_parts,
        }),
        ..plain
    };
    let kf = matmul_with(&ctx, variant, Layout::NT, &hd, &w_out, &dl, fused).unwrap();
    g.bench_function(
        format!("logits product + fused BCE 128x784x200 ({variant})"),
        |bn| bn.iter_custom(|it| gpu_time(&ctx, &kf, it)),
    );

    let step = StepUniform::new(
        &ctx,
        &StepParams {
            step_size: 0.01,
            bc2_sqrt: 0.03,
            ..StepParams::with_seed(1)
        },
    );
    let heads = ctx.upload_f32("heads", &[b, 2 * k], &f(2 * b * k)).unwrap();
    let eps = ctx.zeros("eps", &[b, k], DType::F32).unwrap();
    let z = ctx.zeros("z", &[b, k], DType::F32).unwrap();
    let klp = ctx
        .zeros("klp", &[kl_partials_len(b * k)], DType::F32)
        .unwrap();
    g.throughput(bytes(4 * b * k));
    let kr = reparam_kl::reparam_forward(
        &ctx,
        &heads,
        &eps,
        &z,
        &klp,
        EpsSource::Philox,
        &step,
        Logvar::AsIs,
    )
    .unwrap();
    g.bench_function("reparam_forward philox 128x10", |bn| {
        bn.iter_custom(|it| gpu_time(&ctx, &kr, it))
    });

    let n = 320_896; // the model's arena
    let p = ctx.upload_f32("p", &[n], &f(n)).unwrap();
    let gr = ctx.upload_f32("g", &[n], &f(n)).unwrap();
    let m = ctx.zeros("m", &[n], DType::F32).unwrap();
    let v = ctx.zeros("v", &[n], DType::F32).unwrap();
    g.throughput(bytes(7 * n));
    let kadam = adam::adam_step(&ctx, &p, &gr, &m, &v, &AdamHyper::default(), &step).unwrap();
    g.bench_function("adam_step 320k", |bn| {
        bn.iter_custom(|it| gpu_time(&ctx, &kadam, it))
    });

    let pixels = ctx
        .upload_u8("pixels", &[60000, d], &vec![3u8; 60000 * d])
        .unwrap();
    let index = ctx
        .upload_u32("index", &[60000], &(0..60000u32).collect::<Vec<_>>())
        .unwrap();
    let xg = ctx.zeros("xg", &[b, d], DType::F32).unwrap();
    g.throughput(bytes(2 * b * d));
    let kg = gather::gather_batch(&ctx, &pixels, &index, &xg, &step, false).unwrap();
    g.bench_function("gather_batch 128x784", |bn| {
        bn.iter_custom(|it| gpu_time(&ctx, &kg, it))
    });
    g.finish();
}

criterion_group! { name = matmul; config = config(); targets = bench_matmul }
criterion_group! { name = elementwise; config = config(); targets = bench_elementwise }
criterion_group! { name = conv; config = config(); targets = bench_conv }
criterion_main!(matmul, elementwise, conv);

/// Time `iters` runs of a sequence of dispatches (a conv pass: one kernel, or im2col + product +
/// layout), 16 to a submit.
fn gpu_time_seq(ctx: &GpuContext, seq: &[Dispatch], iters: u64) -> Duration {
    ctx.wait_idle("warm-up").unwrap();
    let start = Instant::now();
    let mut left = iters;
    while left > 0 {
        let n = left.min(16);
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        let all: Vec<&Dispatch> = (0..n).flat_map(|_| seq.iter()).collect();
        vae_wgpu::kernels::encode_all(&mut enc, &all);
        ctx.queue.submit([enc.finish()]);
        left -= n;
    }
    ctx.wait_idle("benchmark").unwrap();
    start.elapsed()
}

/// The `--conv 32,64 --latent 16` model's four conv layers on a batch of 128, each pass in each
/// formulation (criterion's "elem/s" = FLOP/s, 2 per multiply-add).
fn bench_conv(c: &mut Criterion) {
    use vae_wgpu::kernels::conv::{
        BiasSide, ConvEpilogue, ConvFormulation, ConvScratch, plan_to_hi, plan_to_lo,
        plan_weight_grad,
    };
    let ctx = context();
    let cfg = vae_wgpu::model::VaeConfig::convolutional([1, 28, 28], &[32, 64], &[], 16);
    let layout = vae_wgpu::model::ParamLayout::new(&cfg);
    let shapes = vae_wgpu::model::gpu::conv_shapes(&layout, 128, 128);
    let mut g = c.benchmark_group(format!("conv [{}]", tag(&ctx)));
    for s in shapes {
        let fill = |len: usize| -> Vec<f32> {
            (0..len)
                .map(|i| ((i * 7) % 13) as f32 * 0.1 - 0.6)
                .collect()
        };
        let lo = ctx
            .upload_f32("lo", &[s.lo_len()], &fill(s.lo_len()))
            .unwrap();
        let hi = ctx
            .upload_f32("hi", &[s.hi_len()], &fill(s.hi_len()))
            .unwrap();
        let w = ctx
            .upload_f32("w", &[s.weight_len()], &fill(s.weight_len()))
            .unwrap();
        let db = ctx.zeros("db", &[s.lo[0]], DType::F32).unwrap();
        let scratch = ConvScratch::new(&ctx, &[s]).unwrap();
        g.throughput(Throughput::Elements(2 * s.macs()));
        let id = format!(
            "{}x{}x{}x{}<-{}x{}x{}",
            s.batch, s.lo[0], s.lo[1], s.lo[2], s.hi[0], s.hi[1], s.hi[2]
        );
        for f in ConvFormulation::ALL {
            let e = ConvEpilogue::NONE;
            let passes = [
                (
                    "to_lo",
                    plan_to_lo(&ctx, f, &s, &hi, &w, &lo, e, &scratch).unwrap(),
                ),
                (
                    "to_hi",
                    plan_to_hi(&ctx, f, &s, &lo, &w, &hi, e, &scratch).unwrap(),
                ),
                (
                    "weight_grad",
                    plan_weight_grad(
                        &ctx,
                        f,
                        &s,
                        &lo,
                        &hi,
                        &w,
                        Some((&db, BiasSide::Lo)),
                        &scratch,
                    )
                    .unwrap(),
                ),
            ];
            for (pass, seq) in passes {
                g.bench_function(BenchmarkId::new(format!("{pass}-{f}"), &id), |bench| {
                    bench.iter_custom(|it| gpu_time_seq(&ctx, &seq, it))
                });
            }
        }
    }
}
