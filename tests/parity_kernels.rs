//! Every kernel, forward and backward, on the GPU against its CPU twin (src/cpu/ops.rs), on random
//! inputs of several shapes, odd ones included, and at extreme values. Each check states its
//! tolerance and why; a failure prints the worst element, both values, max abs and max rel error.

#[macro_use]
mod common;

use common::{
    U, assert_close, contexts, exp_rel_tol, join_heads, run_likelihood, to_f32, uniform, variants,
};
use vae_wgpu::cpu::ops as cpu;
use vae_wgpu::gpu::DType;
use vae_wgpu::gpu::GpuContext;
use vae_wgpu::kernels::matmul::MatmulVariant;
use vae_wgpu::kernels::matmul::{self, Epilogue, ReconEpilogue, matmul_with};
use vae_wgpu::kernels::reparam_kl::{EpsSource, Logvar, kl_partials_len};
use vae_wgpu::kernels::{
    self, StepParams, StepUniform, adam, bias_act, gather, likelihood, reduce, reparam_kl,
};
use vae_wgpu::model::Likelihood;
use vae_wgpu::model::gpu::Activations;
use vae_wgpu::ops::{Act, Layout};
use vae_wgpu::optim::{OptimizerConfig, OptimizerKind};
use vae_wgpu::rng;

/// (M, N, K). 132x204x200 has every dimension a multiple of 4 but not of the 8x8 block, so the
/// vec4-loading direct kernels (taken when the contiguous dimensions are multiples of 4) run with
/// clamped edge loads; 128x784x200 takes them too; the odd shapes take the scalar kernel.
const SHAPES: [(usize, usize, usize); 8] = [
    (1, 1, 1),
    (3, 5, 7),
    (128, 784, 200),
    (129, 785, 201),
    (128, 10, 200),
    (132, 204, 200),
    // Multiples of 4 (the vec4 and subgroup kernels) with ragged tiles: M % 8 = 4, N < 64, and
    // K % 8 = 4 so the subgroup TN kernel's tail loop runs; then a K % 8 = 3 tail.
    (68, 44, 36),
    (132, 204, 203),
];

/// `|op(A)|·|op(B)|` in f64: the magnitude the matmul error bounds scale with.
fn abs_product(layout: Layout, a: &[f64], b: &[f64], m: usize, n: usize, k: usize) -> Vec<f64> {
    let abs = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    cpu::matmul(layout, &abs(a), &abs(b), m, n, k)
}

/// Matmul tolerance: f32 accumulation of K products is within γ_K·(|A|·|B|)_ij of the exact value
/// (Higham, Accuracy and Stability, §3.5: γ_K = K·u/(1-K·u)); the epilogue adds one rounding of the
/// bias sum. The reference computes |A|·|B| exactly in f64 for the bound.
#[allow(clippy::too_many_arguments)]
fn matmul_case(
    ctx: &GpuContext,
    variant: MatmulVariant,
    layout: Layout,
    m: usize,
    n: usize,
    k: usize,
    act: Act,
    bias: bool,
) {
    let (sa, sb) = layout.operand_shapes(m, n, k);
    let seed = (m * 31 + n * 7 + k) as u32;
    let a = uniform(seed, m * k, -1.0, 1.0);
    let b = uniform(seed + 1, k * n, -1.0, 1.0);
    let bv = uniform(seed + 2, n, -1.0, 1.0);
    let c0 = uniform(seed + 3, m * n, -1.0, 1.0);
    let ga = ctx.upload_f32("a", &sa, &to_f32(&a)).unwrap();
    let gb = ctx.upload_f32("b", &sb, &to_f32(&b)).unwrap();
    let gbias = ctx.upload_f32("bias", &[n], &to_f32(&bv)).unwrap();
    let gc = ctx.upload_f32("c", &[m, n], &to_f32(&c0)).unwrap();
    let epi = Epilogue {
        bias: bias.then_some(&gbias),
        act,
        ..Epilogue::NONE
    };
    let d = matmul_with(ctx, variant, layout, &ga, &gb, &gc, epi).unwrap();
    kernels::run(ctx, &[&d]).unwrap();
    let got = ctx.read_f32(&gc).unwrap();

    let p = cpu::matmul(layout, &a, &b, m, n, k);
    let want = cpu::epilogue(&p, n, bias.then_some(&bv[..]), act);
    let mag = abs_product(layout, &a, &b, m, n, k);
    let gamma = (k as f64 + 2.0) * U / (1.0 - (k as f64 + 2.0) * U);
    let tol = |i: usize| {
        let pre = gamma * (mag[i] + if bias { bv[i % n].abs() } else { 0.0 });
        match act {
            // ReLU is exact; sigmoid's slope is at most 1/4, plus exp's error on σ in [0, 1].
            Act::Identity | Act::Relu => pre + f64::MIN_POSITIVE,
            Act::Sigmoid => 0.25 * pre + exp_rel_tol(20.0),
            // tanh's slope is at most 1; tanh_act adds exp's error, at most ~1e-7 absolute.
            Act::Tanh => pre + 1e-6,
        }
    };
    assert_close(
        &format!(
            "{} matmul {variant:?} {layout:?} {m}x{n}x{k} {act:?} bias={bias}",
            ctx.adapter.backend.to_str()
        ),
        &got,
        &want,
        tol,
    );
}

backend_test!(matmul_all_layouts_shapes_and_variants, |ctx| {
    for variant in variants(ctx) {
        for layout in Layout::ALL {
            for (m, n, k) in SHAPES {
                matmul_case(ctx, variant, layout, m, n, k, Act::Identity, false);
            }
        }
    }
});

backend_test!(matmul_epilogues, |ctx| {
    for variant in variants(ctx) {
        for act in Act::ALL {
            matmul_case(ctx, variant, Layout::NT, 67, 45, 33, act, true);
            // The same epilogue behind the vec4 and subgroup kernels, every layout.
            for layout in Layout::ALL {
                matmul_case(ctx, variant, layout, 68, 44, 36, act, true);
            }
        }
        matmul_case(ctx, variant, Layout::NN, 67, 45, 33, Act::Identity, false);
        matmul_case(ctx, variant, Layout::NN, 67, 45, 33, Act::Relu, true);
    }
});

// A hidden activation's backward fused into the input-gradient product:
// C = op(A)·op(B) ⊙ act'(h) from the activation's saved output h — ReLU's [h > 0], tanh's 1 − h² —
// checked against the CPU twin's `act_backward` applied to the CPU product. Masking is exact and
// 1 − h² ≤ 1 adds one rounding, so the tolerance is the product's (plus that rounding).
backend_test!(matmul_act_backward_epilogue, |ctx| {
    for act in [Act::Relu, Act::Tanh] {
        for variant in variants(ctx) {
            for layout in Layout::ALL {
                for (m, n, k) in [(67, 45, 33), (132, 204, 200), (68, 44, 36)] {
                    let (sa, sb) = layout.operand_shapes(m, n, k);
                    let a = uniform(71, m * k, -1.0, 1.0);
                    let b = uniform(72, k * n, -1.0, 1.0);
                    let c0 = uniform(73, m * n, -1.0, 1.0);
                    // The activation's saved output: zeros and positives for ReLU, (-1, 1) for tanh
                    // (rounded to f32, as the GPU holds it).
                    let h: Vec<f64> = uniform(74, m * n, -2.0, 2.0)
                        .iter()
                        .map(|&v| cpu::activate(act, v) as f32 as f64)
                        .collect();
                    let ga = ctx.upload_f32("a", &sa, &to_f32(&a)).unwrap();
                    let gb = ctx.upload_f32("b", &sb, &to_f32(&b)).unwrap();
                    let gc = ctx.upload_f32("c", &[m, n], &to_f32(&c0)).unwrap();
                    let gh = ctx.upload_f32("h", &[m, n], &to_f32(&h)).unwrap();
                    let epi = Epilogue {
                        act_grad: Some((act, &gh)),
                        ..Epilogue::NONE
                    };
                    let d = matmul_with(ctx, variant, layout, &ga, &gb, &gc, epi).unwrap();
                    kernels::run(ctx, &[&d]).unwrap();
                    let p = cpu::matmul(layout, &a, &b, m, n, k);
                    let pre = cpu::epilogue(&p, n, None, Act::Identity);
                    let want = cpu::act_backward(&pre, &h, act);
                    let mag = abs_product(layout, &a, &b, m, n, k);
                    let gamma = (k as f64 + 4.0) * U;
                    let name = format!(
                        "{} {act}-backward matmul {variant:?} {layout:?} {m}x{n}x{k}",
                        ctx.adapter.backend.to_str()
                    );
                    assert_close(&name, &ctx.read_f32(&gc).unwrap(), &want, |i| {
                        gamma * mag[i] + f64::MIN_POSITIVE
                    });
                }
            }
        }
    }
    // A mask of the wrong shape is a shape error.
    let a = ctx.zeros("a", &[4, 5], DType::F32).unwrap();
    let b = ctx.zeros("b", &[6, 5], DType::F32).unwrap();
    let c = ctx.zeros("c", &[4, 6], DType::F32).unwrap();
    let bad = ctx.zeros("h", &[4, 5], DType::F32).unwrap();
    let epi = Epilogue {
        act_grad: Some((Act::Relu, &bad)),
        ..Epilogue::NONE
    };
    let msg = matmul_with(ctx, MatmulVariant::Direct, Layout::NT, &a, &b, &c, epi)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("relu backward mask") && msg.contains("[4, 5]"),
        "{msg}"
    );
});

// Every subgroup kernel makes the direct variant's multiply-adds in the direct variant's order, so
// the autotune's choice between them never changes a result: C with bias and ReLU, C with row
// sums and the row sums themselves, bit for bit, in every layout, for the default model's products
// and ragged ones (M % 8 = 4, K tails of every length mod 8, N from 1 to 12 for
// `matmul_sg_skinny`, whose grid spills into y past 65535 workgroups, which the subgroup variant runs where N <= 12 and the direct variant runs
// the scalar kernel). The primary adapter only, as the texture test above (GL has no subgroups;
// 4-lane lavapipe refuses the subgroup kernels: the outcome checked there).
#[test]
fn subgroup_kernels_match_the_direct_variant_bit_for_bit() {
    let ctx = &contexts()[0];
    if !runs_subgroup_kernels(
        ctx,
        "subgroup_kernels_match_the_direct_variant_bit_for_bit",
        MatmulVariant::Subgroup,
    ) {
        return;
    }
    let variants: Vec<MatmulVariant> = [MatmulVariant::Subgroup, MatmulVariant::SubgroupTexture]
        .into_iter()
        .filter(|v| matmul::select::usable_variants(ctx).contains(v))
        .collect();
    let mut entries = std::collections::BTreeSet::new();
    for layout in Layout::ALL {
        for (m, n, k) in [
            (128, 200, 784),
            (128, 784, 200),
            (784, 200, 128),
            (200, 784, 128),
            (128, 20, 200),
            (128, 200, 20),
            (20, 200, 128),
            (68, 44, 36),
            (132, 204, 203),
            (68, 44, 35),
            (128, 10, 200),
            (200, 10, 128),
            (67, 12, 33),
            (9, 1, 7),
            (20, 5, 70),
            // More than 65535 skinny workgroups of 8 rows: the grid spills into y.
            (8 * 65535 + 20, 3, 5),
        ] {
            let (sa, sb) = layout.operand_shapes(m, n, k);
            let seed = (m * 31 + n * 7 + k) as u32;
            let up = |name, shape: &[usize], s, len| {
                ctx.upload_f32(name, shape, &to_f32(&uniform(s, len, -1.0, 1.0)))
                    .unwrap()
            };
            let (a, b, bias) = (
                up("a", &sa, seed, m * k),
                up("b", &sb, seed + 1, k * n),
                up("bias", &[n], seed + 2, n),
            );
            let run = |variant| {
                let c = ctx.zeros("c", &[m, n], DType::F32).unwrap();
                let c2 = ctx.zeros("c2", &[m, n], DType::F32).unwrap();
                let rs = ctx.zeros("rs", &[m], DType::F32).unwrap();
                let epi = Epilogue {
                    bias: Some(&bias),
                    act: Act::Relu,
                    ..Epilogue::NONE
                };
                let sums = Epilogue {
                    row_sums: Some(&rs),
                    ..Epilogue::NONE
                };
                let d = matmul_with(ctx, variant, layout, &a, &b, &c, epi).unwrap();
                let d2 = matmul_with(ctx, variant, layout, &a, &b, &c2, sums).unwrap();
                kernels::run(ctx, &[&d, &d2]).unwrap();
                let bits = |t| {
                    ctx.read_f32(t)
                        .unwrap()
                        .iter()
                        .map(|v| v.to_bits())
                        .collect::<Vec<_>>()
                };
                let names = [d.desc.entry.to_string(), d2.desc.entry.to_string()];
                (bits(&c), bits(&c2), bits(&rs), names)
            };
            let want = run(MatmulVariant::Direct);
            for &variant in &variants {
                let got = run(variant);
                let what = format!(
                    "{layout:?} {m}x{n}x{k}: {variant} ({}, {}) against direct ({}, {})",
                    got.3[0], got.3[1], want.3[0], want.3[1]
                );
                assert!(got.0 == want.0, "{what}: C with bias and ReLU differs");
                assert!(got.1 == want.1, "{what}: C with row sums differs");
                assert!(got.2 == want.2, "{what}: the row sums differ");
                entries.extend(got.3);
            }
        }
    }
    // Every subgroup kernel took part.
    for e in [
        "matmul_sg_nt",
        "matmul_sg_nn",
        "matmul_sg_tn",
        "matmul_sg_skinny",
    ] {
        assert!(entries.contains(e), "{e} never ran: {entries:?}");
    }
}

// Row sums of op(A) written by the product's own threads (the fused bias gradient of a TN
// weight-gradient product): Σ_k op(A)[i, k] against the CPU, in every layout and variant, with the
// product itself still right. Tolerance: a sum of K terms, K·u·Σ|a|.
backend_test!(matmul_row_sums_epilogue, |ctx| {
    for variant in variants(ctx) {
        for layout in Layout::ALL {
            for (m, n, k) in [
                (67, 45, 33),
                (132, 204, 200),
                (200, 784, 128),
                (10, 200, 129),
                (68, 44, 36),
            ] {
                let (sa, sb) = layout.operand_shapes(m, n, k);
                let a = uniform(81, m * k, -1.0, 1.0);
                let b = uniform(82, k * n, -1.0, 1.0);
                let ga = ctx.upload_f32("a", &sa, &to_f32(&a)).unwrap();
                let gb = ctx.upload_f32("b", &sb, &to_f32(&b)).unwrap();
                let gc = ctx.zeros("c", &[m, n], DType::F32).unwrap();
                let grs = ctx.upload_f32("rs", &[m], &vec![f32::NAN; m]).unwrap();
                let epi = Epilogue {
                    row_sums: Some(&grs),
                    ..Epilogue::NONE
                };
                let d = matmul_with(ctx, variant, layout, &ga, &gb, &gc, epi).unwrap();
                kernels::run(ctx, &[&d]).unwrap();
                // op(A) as [M, K] rows, whatever the stored layout.
                let op_a = |i: usize, kk: usize| {
                    if layout == Layout::TN {
                        a[kk * m + i]
                    } else {
                        a[i * k + kk]
                    }
                };
                let want: Vec<f64> = (0..m).map(|i| (0..k).map(|kk| op_a(i, kk)).sum()).collect();
                let mag: Vec<f64> = (0..m)
                    .map(|i| (0..k).map(|kk| op_a(i, kk).abs()).sum())
                    .collect();
                let tag = format!(
                    "{} {variant:?} {layout:?} {m}x{n}x{k}",
                    ctx.adapter.backend.to_str()
                );
                assert_close(
                    &format!("{tag} row sums"),
                    &ctx.read_f32(&grs).unwrap(),
                    &want,
                    |i| k as f64 * U * mag[i],
                );
                let p = cpu::matmul(layout, &a, &b, m, n, k);
                let pm = abs_product(layout, &a, &b, m, n, k);
                assert_close(
                    &format!("{tag} product with row sums"),
                    &ctx.read_f32(&gc).unwrap(),
                    &p,
                    |i| (k as f64 + 2.0) * U * pm[i] + f64::MIN_POSITIVE,
                );
            }
        }
    }
    let a = ctx.zeros("a", &[5, 4], DType::F32).unwrap();
    let b = ctx.zeros("b", &[5, 6], DType::F32).unwrap();
    let c = ctx.zeros("c", &[4, 6], DType::F32).unwrap();
    let bad = ctx.zeros("rs", &[6], DType::F32).unwrap();
    let epi = Epilogue {
        row_sums: Some(&bad),
        ..Epilogue::NONE
    };
    let msg = matmul_with(ctx, MatmulVariant::Direct, Layout::TN, &a, &b, &c, epi)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("row sums") && msg.contains("[6]") && msg.contains("[4]"),
        "{msg}"
    );
});

// The σ-free likelihoods fused into the logits product (every variant and layout): C = dlogits =
// ∂(-log p)/∂l / L (σ(l) - x for the Bernoulli, mean(l) - x for the continuous Bernoulli) with
// l = op(A)·op(B) + bias, and the per-thread loss partials add up to the CPU loss. Tolerance: the
// product's error e_l = (K+2)·u·(|A||B| + |bias|) carries into dlogits at most e_l/4 (σ', the
// continuous Bernoulli's variance ≤ 1/4) and into each loss term at most e_l (|∂loss/∂l| ≤ 1), plus
// the likelihood's own rounding terms (the continuous Bernoulli's: a few logs and exps, `f` times
// the Bernoulli's bound).
backend_test!(matmul_likelihood_epilogue, |ctx| {
    for (lik, f) in [
        (Likelihood::Bernoulli, 1.0),
        (Likelihood::ContinuousBernoulli, 4.0),
    ] {
        for variant in variants(ctx) {
            for layout in Layout::ALL {
                for (samples, b, n, k) in [
                    (2, 34, 44, 36),
                    (1, 128, 784, 200),
                    (3, 23, 45, 33),
                    // N <= 12: the subgroup variant is matmul_sg_skinny.
                    (2, 13, 10, 18),
                ] {
                    let m = samples * b;
                    let (sa, sb) = layout.operand_shapes(m, n, k);
                    let a = uniform(91, m * k, -1.0, 1.0);
                    let w = uniform(92, k * n, -1.0, 1.0);
                    let bias = uniform(93, n, -1.0, 1.0);
                    let x = uniform(94, b * n, 0.0, 1.0);
                    let ga = ctx.upload_f32("a", &sa, &to_f32(&a)).unwrap();
                    let gw = ctx.upload_f32("w", &sb, &to_f32(&w)).unwrap();
                    let gbias = ctx.upload_f32("bias", &[n], &to_f32(&bias)).unwrap();
                    let gx = ctx.upload_f32("x", &[b, n], &to_f32(&x)).unwrap();
                    let gd = ctx.zeros("dlogits", &[m, n], DType::F32).unwrap();
                    let problem = matmul::Problem::bare(layout, m, n, k);
                    let np = matmul::recon_partials_len(ctx, variant, problem).unwrap();
                    // NaN past the partials the kernel owns: loss_reduce must not reach them.
                    let gp = ctx
                        .upload_f32("partials", &[np + 7], &vec![f32::NAN; np + 7])
                        .unwrap();
                    let gk = ctx.zeros("kl partials", &[1], DType::F32).unwrap();
                    let acc = ctx
                        .zeros("acc", &[reduce::LossSlots::LEN], DType::F32)
                        .unwrap();
                    let epi = Epilogue {
                        bias: Some(&gbias),
                        recon: Some(ReconEpilogue {
                            likelihood: lik,
                            targets: &gx,
                            partials: &gp,
                        }),
                        ..Epilogue::NONE
                    };
                    let d = matmul_with(ctx, variant, layout, &ga, &gw, &gd, epi).unwrap();
                    let step = StepUniform::new(ctx, &StepParams::with_seed(0));
                    let r = reduce::loss_reduce(ctx, &gp, np, &gk, 1, &acc, &step).unwrap();
                    kernels::run(ctx, &[&d, &r]).unwrap();
                    let p = cpu::matmul(layout, &a, &w, m, n, k);
                    let logits = cpu::epilogue(&p, n, Some(&bias), Act::Identity);
                    let (want_loss, want_d, _) = cpu::recon_forward_backward(lik, &logits, &x, 0.0);
                    let mag = abs_product(layout, &a, &w, m, n, k);
                    let e_l = |i: usize| (k as f64 + 2.0) * U * (mag[i] + bias[i % n].abs());
                    let scale = 1.0 / samples as f64;
                    let tag = format!(
                        "{} {lik} epilogue {variant:?} {layout:?} L={samples} {m}x{n}x{k}",
                        ctx.adapter.backend.to_str()
                    );
                    assert_close(
                        &format!("{tag} dlogits"),
                        &ctx.read_f32(&gd).unwrap(),
                        &want_d,
                        |i| scale * (0.25 * e_l(i) + f * (exp_rel_tol(17.0) + 2.0 * U)),
                    );
                    let loss_mag: f64 = logits
                        .iter()
                        .enumerate()
                        .map(|(i, &l)| {
                            cpu::recon_elem(lik, l, x[i % x.len()], 0.0).0.abs() + 2.0 * l.abs()
                        })
                        .sum::<f64>()
                        * scale;
                    let tol = (0..m * n).map(e_l).sum::<f64>() * scale
                        + 24.0 * U * loss_mag
                        + f * (m * n) as f64 * scale * (2f64.powi(-21) + exp_rel_tol(17.0));
                    let acc_v = ctx.read_f32(&acc).unwrap();
                    assert_close(
                        &format!("{tag} loss"),
                        &acc_v[reduce::LossSlots::BATCH_RECON..][..1],
                        &[want_loss],
                        |_| tol,
                    );
                }
            }
        }
    }
    // A likelihood epilogue with an activation, targets that do not tile the rows, or a likelihood
    // that reads σ, is refused.
    let a = ctx.zeros("a", &[6, 4], DType::F32).unwrap();
    let w = ctx.zeros("w", &[5, 4], DType::F32).unwrap();
    let c = ctx.zeros("c", &[6, 5], DType::F32).unwrap();
    let parts = ctx.zeros("p", &[4096], DType::F32).unwrap();
    for (rows, act, lik, says) in [
        (4, Act::Identity, Likelihood::Bernoulli, "targets"),
        (3, Act::Relu, Likelihood::Bernoulli, "activation"),
        (3, Act::Identity, Likelihood::Gaussian { sigma: None }, "σ"),
    ] {
        let x = ctx.zeros("x", &[rows, 5], DType::F32).unwrap();
        let epi = Epilogue {
            act,
            recon: Some(ReconEpilogue {
                likelihood: lik,
                targets: &x,
                partials: &parts,
            }),
            ..Epilogue::NONE
        };
        let msg = matmul_with(ctx, MatmulVariant::Direct, Layout::NT, &a, &w, &c, epi)
            .err()
            .unwrap()
            .to_string();
        assert!(msg.contains(says), "{msg}");
    }
});

// The texture-fed kernels copy their operands right before the launch: an operand written by the
// previous dispatch of the same submit must arrive written, and operands that are views at a
// non-zero offset of a larger buffer (as the weights in the parameter arena) must arrive from
// their offset. Y1 = X·W1ᵀ (direct) then Y2 = Y1·W2ᵀ (subgroup-tex, Y1 and W2 views into arenas),
// in one run.
// The texture-fed kernels are subgroup kernels, which wgpu's GL backend does not have: the
// primary adapter only (lavapipe must have subgroups, see `subgroup_kernels_are_covered_on_lavapipe`).
#[test]
fn texture_operands_follow_earlier_writes_and_views() {
    let ctx = &contexts()[0];
    // The texture-fed products are the subgroup kernels'.
    if !runs_subgroup_kernels(
        ctx,
        "texture_operands_follow_earlier_writes_and_views",
        MatmulVariant::SubgroupTexture,
    ) {
        return;
    }
    let (b, d, h, o) = (36, 44, 68, 52);
    let x = uniform(71, b * d, -1.0, 1.0);
    let w1 = uniform(72, h * d, -1.0, 1.0);
    let w2 = uniform(73, o * h, -1.0, 1.0);
    let gx = ctx.upload_f32("x", &[b, d], &to_f32(&x)).unwrap();
    let gw1 = ctx.upload_f32("w1", &[h, d], &to_f32(&w1)).unwrap();
    // W2 at element 192 (768 bytes) of an arena, Y1 at element 128 of another.
    let mut arena = vec![9.0f32; 192 + o * h + 64];
    arena[192..192 + o * h].copy_from_slice(&to_f32(&w2));
    let params = ctx.upload_f32("arena", &[arena.len()], &arena).unwrap();
    let gw2 = params.view(192, &[o, h]).unwrap();
    let acts = ctx.zeros("acts", &[128 + b * h + 64], DType::F32).unwrap();
    let gy1 = acts.view(128, &[b, h]).unwrap();
    let gy2 = ctx.zeros("y2", &[b, o], DType::F32).unwrap();
    let first = matmul_with(
        ctx,
        MatmulVariant::Direct,
        Layout::NT,
        &gx,
        &gw1,
        &gy1,
        Epilogue::NONE,
    )
    .unwrap();
    let second = matmul_with(
        ctx,
        MatmulVariant::SubgroupTexture,
        Layout::NT,
        &gy1,
        &gw2,
        &gy2,
        Epilogue::NONE,
    )
    .unwrap();
    assert!(second.desc.entry.ends_with("_tex"), "{}", second.desc.entry);
    kernels::run(ctx, &[&first, &second]).unwrap();
    let y1 = cpu::matmul(Layout::NT, &x, &w1, b, h, d);
    let want = cpu::matmul(Layout::NT, &y1, &w2, b, o, h);
    let mag = abs_product(Layout::NT, &y1, &w2, b, o, h);
    // Y1 itself is f32-rounded: allow its error (≤ γ_d·|X||W1|) carried through |W2| as well.
    let y1_mag = abs_product(Layout::NT, &x, &w1, b, h, d);
    let carried = abs_product(Layout::NT, &y1_mag, &w2, b, o, h);
    let g = |k: usize| (k as f64 + 2.0) * U / (1.0 - (k as f64 + 2.0) * U);
    assert_close(
        "texture-fed product of an earlier product's output, from views",
        &ctx.read_f32(&gy2).unwrap(),
        &want,
        |i| g(h) * mag[i] + g(d) * carried[i] + f64::MIN_POSITIVE,
    );
    common::assert_no_validation_messages("texture_operands_follow_earlier_writes_and_views");
}

/// Whether `ctx` runs the subgroup kernels, for `test`, a test of them. Where it does not: on
/// lavapipe made 4 lanes wide `variant` must be refused, which is the test's outcome there
/// (`subgroup_kernels_are_covered_on_lavapipe` checks the pin's error); any other adapter without
/// them is a counted skip.
fn runs_subgroup_kernels(ctx: &GpuContext, test: &str, variant: MatmulVariant) -> bool {
    if matmul::select::subgroups_usable(ctx) {
        return true;
    }
    let lanes_4 = std::env::var("LP_NATIVE_VECTOR_WIDTH").is_ok_and(|w| w == "128")
        && ctx.adapter.name.contains("llvmpipe");
    if lanes_4 {
        assert!(
            !matmul::select::usable_variants(ctx).contains(&variant),
            "{test}: {variant} is a candidate on 4-lane subgroups"
        );
    } else {
        common::skip(test, &format!("{} has no subgroups", ctx.adapter.short()));
    }
    false
}

/// The subgroup kernels must not silently drop out of the parity tests: lavapipe's Vulkan driver
/// has 8-lane subgroups (AVX2) or wider, so there the device must come up with them. Made 4 lanes
/// wide (`LP_NATIVE_VECTOR_WIDTH=128`, narrower than the kernels' 8), they must be refused: by the
/// autotune (not a candidate) and by a pin.
#[test]
fn subgroup_kernels_are_covered_on_lavapipe() {
    let ctx = &contexts()[0];
    let lanes_4 = std::env::var("LP_NATIVE_VECTOR_WIDTH").is_ok_and(|w| w == "128");
    if ctx.adapter.backend == wgpu::Backend::Vulkan && ctx.adapter.name.contains("llvmpipe") {
        if lanes_4 {
            assert!(
                !matmul::select::subgroups_usable(ctx)
                    && !matmul::select::usable_variants(ctx)
                        .iter()
                        .any(|v| v.uses_subgroups()),
                "{} has {}-lane subgroups: the 8-lane kernels must not be candidates",
                ctx.adapter.short(),
                ctx.subgroup_min_size
            );
            let pinned = vae_wgpu::gpu::ContextOptions::from_env()
                .and_then(|o| {
                    GpuContext::new(&vae_wgpu::gpu::ContextOptions {
                        matmul: Some("subgroup".into()),
                        cache_dir: None,
                        ..o
                    })
                })
                .and_then(|c| matmul::select::pinned(&c).map(|_| ()));
            let e = pinned
                .expect_err("a pinned subgroup kernel on 4 lanes")
                .to_string();
            assert!(e.contains("needs subgroups of at least 8 lanes"), "{e}");
            return;
        }
        assert!(
            matmul::select::subgroups_usable(ctx),
            "{} came up without subgroups: the subgroup matmul kernels would go untested",
            ctx.adapter.short()
        );
    } else {
        common::skip(
            "subgroup_kernels_are_covered_on_lavapipe",
            &format!("the adapter is {}, not lavapipe", ctx.adapter.short()),
        );
    }
}

backend_test!(matmul_shape_mismatch_is_an_error_not_a_panic, |ctx| {
    let a = ctx.zeros("a", &[4, 5], DType::F32).unwrap();
    let b = ctx.zeros("b", &[6, 5], DType::F32).unwrap();
    let c = ctx.zeros("c", &[4, 7], DType::F32).unwrap();
    let err = matmul_with(
        ctx,
        MatmulVariant::Direct,
        Layout::NT,
        &a,
        &b,
        &c,
        Epilogue::NONE,
    )
    .err()
    .unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("[4, 5]") && msg.contains("[6, 5]") && msg.contains("[4, 7]"),
        "{msg}"
    );
    let bias = ctx.zeros("bias", &[3], DType::F32).unwrap();
    let c = ctx.zeros("c", &[4, 6], DType::F32).unwrap();
    let epi = Epilogue {
        bias: Some(&bias),
        act: Act::Relu,
        ..Epilogue::NONE
    };
    let msg = matmul_with(ctx, MatmulVariant::TILED, Layout::NT, &a, &b, &c, epi)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("bias") && msg.contains("[3]"), "{msg}");
    ctx.check_errors().unwrap();
});

backend_test!(bias_act_forward, |ctx| {
    for (rows, cols) in [(1, 1), (3, 7), (129, 785)] {
        for act in Act::ALL {
            let x = uniform(11, rows * cols, -30.0, 30.0);
            let bias = uniform(12, cols, -1.0, 1.0);
            let gy = ctx.upload_f32("y", &[rows, cols], &to_f32(&x)).unwrap();
            let gb = ctx.upload_f32("b", &[cols], &to_f32(&bias)).unwrap();
            kernels::run(
                ctx,
                &[&bias_act::act_forward(ctx, &gy, Some(&gb), act).unwrap()],
            )
            .unwrap();
            let y = ctx.read_f32(&gy).unwrap();
            let want = cpu::act_forward(&x, cols, Some(&bias), act);
            // One rounding of x + b (≤ u·|x+b|); sigmoid adds exp's error (x up to 31 here).
            let tol = |i: usize| {
                let s = (x[i] + bias[i % cols]).abs();
                match act {
                    Act::Sigmoid => 0.25 * U * s + exp_rel_tol(31.0),
                    Act::Tanh => U * s + 1e-6,
                    _ => U * s + f64::MIN_POSITIVE,
                }
            };
            assert_close(
                &format!("act_forward {act:?} {rows}x{cols}"),
                &y,
                &want,
                tol,
            );
        }
    }
});

// The likelihoods standalone (likelihood.wgsl), forward (through the partials and the loss
// reduction) and backward, over extreme logits: the Bernoulli, the continuous Bernoulli (its series
// near 0 and its exp that overflows to the limit for l < -88), and the Gaussian with a learned σ
// (log σ's gradient through sum_to) or a fixed one. The mean kernel too.
// Per element the GPU's log(1 + e^-|l|) is within 2^-21 absolute (log's bound near 1) plus e^-|l|'s
// relative error; max(l,0) - l·x adds two roundings of |l|; the other likelihoods take a few more
// logs and exps (`f` times that bound), the Gaussian's terms scale with r² = ((x − μ)/σ)².
// Summation: a 256-wide tree (8 levels) then the partials (strided, then another tree): 24·u·Σ|terms|
// is generous.
backend_test!(
    likelihood_forward_backward_matches_including_extremes,
    |ctx| {
        let likelihoods = [
            (Likelihood::Bernoulli, 0.0, 1.0),
            (Likelihood::ContinuousBernoulli, 0.0, 4.0),
            (Likelihood::Gaussian { sigma: None }, -1.3, 4.0),
            (Likelihood::Gaussian { sigma: Some(0.5) }, 0.5f64.ln(), 4.0),
        ];
        for (lik, log_sigma, f) in likelihoods {
            for (samples, b, d, lo, hi) in [
                (1, 1, 1, -5.0, 5.0),
                (1, 3, 7, -100.0, 100.0),
                (1, 128, 784, -20.0, 20.0),
                (2, 129, 785, -100.0, 100.0),
                (1, 16, 64, -0.7, 0.7),
            ] {
                let rows = samples * b;
                let logits = uniform(31, rows * d, lo, hi);
                let x = uniform(32, b * d, 0.0, 1.0);
                let gl = ctx
                    .upload_f32("logits", &[rows, d], &to_f32(&logits))
                    .unwrap();
                let gx = ctx.upload_f32("x", &[b, d], &to_f32(&x)).unwrap();
                let learned = lik.learns_scale();
                let got = run_likelihood(ctx, lik, &gl, &gx, log_sigma as f32);
                let (want_loss, want_d, want_ds) =
                    cpu::recon_forward_backward(lik, &logits, &x, log_sigma);
                let scale = 1.0 / samples as f64;
                let r2 = |i: usize| {
                    let r = (x[i % x.len()] - cpu::sigmoid(logits[i])) * (-log_sigma).exp();
                    if matches!(lik, Likelihood::Gaussian { .. }) {
                        r * r
                    } else {
                        0.0
                    }
                };
                let tag = format!("{lik} L={samples} {b}x{d} logits in [{lo}, {hi}]");
                // σ(l) - x: σ's error from exp (|l| ≤ 100 but σ' ≤ 1/4 and σ saturates), one subtraction.
                assert_close(&format!("{tag} dlogits"), &got.dlogits, &want_d, |i| {
                    scale * f * (exp_rel_tol(17.0) + 2.0 * U) * (1.0 + r2(i) + (-log_sigma).exp())
                });
                let acc_v = &got.acc;
                let mag: f64 = logits
                    .iter()
                    .enumerate()
                    .map(|(i, &l)| {
                        cpu::recon_elem(lik, l, x[i % x.len()], log_sigma).0.abs() + 2.0 * l.abs()
                    })
                    .sum::<f64>()
                    * scale;
                let per_elem: f64 = (0..rows * d)
                    .map(|i| f * (2f64.powi(-21) + exp_rel_tol(17.0)) * (1.0 + r2(i)))
                    .sum::<f64>()
                    * scale;
                let tol = 24.0 * U * mag + per_elem;
                for slot in [
                    reduce::LossSlots::BATCH_RECON,
                    reduce::LossSlots::BATCH_TOTAL,
                    reduce::LossSlots::EPOCH_TOTAL,
                ] {
                    assert_close(
                        &format!("{tag} loss slot {slot}"),
                        &acc_v[slot..slot + 1],
                        &[want_loss],
                        |_| tol,
                    );
                }
                assert_eq!(acc_v[reduce::LossSlots::NONFINITE], 0.0);
                assert_eq!(acc_v[reduce::LossSlots::BATCHES], 1.0);
                if learned {
                    let ds_mag: f64 = (0..rows * d).map(|i| 1.0 + r2(i)).sum::<f64>() * scale;
                    assert_close(
                        &format!("{tag} dlog_sigma"),
                        &[got.dlog_sigma],
                        &[want_ds],
                        |_| (24.0 * U + 4.0 * exp_rel_tol(2.0)) * ds_mag,
                    );
                }
                // The mean, in place.
                let km = likelihood::likelihood_mean(ctx, lik, &gl).unwrap();
                kernels::run(ctx, &[&km]).unwrap();
                let want_mean: Vec<f64> = logits
                    .iter()
                    .map(|&l| cpu::likelihood_mean(lik, l))
                    .collect();
                assert_close(
                    &format!("{tag} mean"),
                    &ctx.read_f32(&gl).unwrap(),
                    &want_mean,
                    |_| f * (exp_rel_tol(17.0) + 4.0 * U),
                );
            }
        }
    }
);

// Reparameterisation + KL, forward and backward, with eps from a buffer (tight) and from the GPU's
// Philox stream (the same bits as the CPU twin; normals equal up to log/cos accuracy).
backend_test!(reparam_kl_forward_backward, |ctx| {
    for (samples, b, k, lv_lo, lv_hi) in [
        (1, 1, 1, -1.0, 1.0),
        (1, 3, 5, -30.0, 30.0),
        (3, 128, 10, -5.0, 5.0),
        (2, 129, 11, -30.0, 30.0),
    ] {
        let n = samples * b * k;
        let mu = uniform(41, b * k, -3.0, 3.0);
        let lv = uniform(42, b * k, lv_lo, lv_hi);
        let eps = uniform(43, n, -3.0, 3.0);
        let dz = uniform(44, n, -1.0, 1.0);
        let gheads = ctx
            .upload_f32("heads", &[b, 2 * k], &to_f32(&join_heads(&mu, &lv, k)))
            .unwrap();
        let geps = ctx
            .upload_f32("eps", &[samples * b, k], &to_f32(&eps))
            .unwrap();
        let gz = ctx.zeros("z", &[samples * b, k], DType::F32).unwrap();
        let gkl = ctx.zeros("kl", &[kl_partials_len(n)], DType::F32).unwrap();
        let gbce = ctx.zeros("bce", &[1], DType::F32).unwrap();
        let acc = ctx
            .zeros("acc", &[reduce::LossSlots::LEN], DType::F32)
            .unwrap();
        // A KL weight other than 1 (β, a warm-up step): the forward's KL stays unweighted, the
        // weighted slot and the backward's KL gradient take it.
        let w = 0.375;
        let step = StepUniform::new(
            ctx,
            &StepParams {
                kl_weight: w as f32,
                ..StepParams::with_seed(5)
            },
        );
        let f = reparam_kl::reparam_forward(
            ctx,
            &gheads,
            &geps,
            &gz,
            &gkl,
            EpsSource::Buffer,
            &step,
            Logvar::AsIs,
        )
        .unwrap();
        let r = reduce::loss_reduce(ctx, &gbce, 1, &gkl, kl_partials_len(n), &acc, &step).unwrap();
        kernels::run(ctx, &[&f, &r]).unwrap();
        let (want_z, want_kl) = cpu::reparam_forward(&mu, &lv, &eps, 1.0);
        let name = format!("L={samples} {b}x{k} logvar in [{lv_lo}, {lv_hi}]");
        // z = mu + exp(lv/2)·eps: exp's relative error on |std·eps|, two roundings.
        let sd_eps = |i: usize| (0.5 * lv[i % (b * k)]).exp() * eps[i].abs();
        let tol_z =
            |i: usize| (exp_rel_tol(15.0) + 2.0 * U) * sd_eps(i) + 2.0 * U * mu[i % (b * k)].abs();
        assert_close(
            &format!("reparam z (eps from buffer) {name}"),
            &ctx.read_f32(&gz).unwrap(),
            &want_z,
            tol_z,
        );
        let kl_mag: f64 = mu
            .iter()
            .zip(&lv)
            .map(|(m, l)| 0.5 * (1.0 + l.abs() + m * m + l.exp()))
            .sum();
        let acc_v = ctx.read_f32(&acc).unwrap();
        assert_close(
            &format!("kl sum {name}"),
            &acc_v[reduce::LossSlots::BATCH_KL..][..1],
            &[want_kl],
            |_| (exp_rel_tol(30.0) + 24.0 * U) * kl_mag,
        );
        assert_close(
            &format!("weighted kl sum {name}"),
            &acc_v[reduce::LossSlots::BATCH_KL_WEIGHTED..][..1],
            &[w * want_kl],
            |_| w * (exp_rel_tol(30.0) + 25.0 * U) * kl_mag,
        );

        // Backward (KL gradient fused in).
        let gdz = ctx
            .upload_f32("dz", &[samples * b, k], &to_f32(&dz))
            .unwrap();
        let gdheads = ctx.zeros("dheads", &[b, 2 * k], DType::F32).unwrap();
        let bwd = reparam_kl::reparam_backward(
            ctx,
            &gheads,
            &geps,
            &gdz,
            &gdheads,
            &step,
            None,
            Logvar::AsIs,
        )
        .unwrap();
        kernels::run(ctx, &[&bwd]).unwrap();
        let (got_dmu, got_dlv) = Activations::split_heads(&ctx.read_f32(&gdheads).unwrap(), k);
        let (want_dmu, want_dlv) = cpu::reparam_backward(&mu, &lv, &eps, &dz, w);
        let sum_dz = |e: usize| (0..samples).map(|l| dz[l * b * k + e].abs()).sum::<f64>();
        assert_close(&format!("reparam dmu {name}"), &got_dmu, &want_dmu, |e| {
            (samples as f64 + 2.0) * U * (sum_dz(e) + mu[e].abs())
        });
        let tol_dlv = |e: usize| {
            let s = (0..samples)
                .map(|l| (dz[l * b * k + e] * eps[l * b * k + e]).abs())
                .sum::<f64>()
                * 0.5
                * (0.5 * lv[e]).exp();
            (exp_rel_tol(30.0) + (samples as f64 + 4.0) * U) * (s + 0.5 * (lv[e].exp() + 1.0))
        };
        assert_close(
            &format!("reparam dlogvar {name}"),
            &got_dlv,
            &want_dlv,
            tol_dlv,
        );
    }
});

backend_test!(reparam_philox_noise_matches_cpu_generator, |ctx| {
    let (samples, b, k) = (2, 129, 10);
    let n = samples * b * k;
    let seed = 0x1234_5678_9abc_def0u64;
    let step_no = 77;
    let mu = uniform(51, b * k, -1.0, 1.0);
    let lv = uniform(52, b * k, -2.0, 2.0);
    let gheads = ctx
        .upload_f32("heads", &[b, 2 * k], &to_f32(&join_heads(&mu, &lv, k)))
        .unwrap();
    let geps = ctx.zeros("eps", &[samples * b, k], DType::F32).unwrap();
    let gz = ctx.zeros("z", &[samples * b, k], DType::F32).unwrap();
    let gkl = ctx.zeros("kl", &[kl_partials_len(n)], DType::F32).unwrap();
    let step = StepUniform::new(
        ctx,
        &StepParams {
            rng_step: step_no,
            ..StepParams::with_seed(seed)
        },
    );
    let f = reparam_kl::reparam_forward(
        ctx,
        &gheads,
        &geps,
        &gz,
        &gkl,
        EpsSource::Philox,
        &step,
        Logvar::AsIs,
    )
    .unwrap();
    kernels::run(ctx, &[&f]).unwrap();
    let eps = ctx.read_f32(&geps).unwrap();
    let want = rng::normals(seed, step_no, n);
    // The uniforms are bit-identical; the GPU's sqrt(-2 log u1)·cos(π(2u2-1)) is within Vulkan's
    // bounds: log 3 ULP (2^-21 absolute near 1), cos 2^-11 absolute on (-π, π) — the loosest term.
    assert_close("philox eps", &eps, &want, |i| {
        2f64.powi(-11) * (want[i].abs() + 4.0) + 8.0 * U * want[i].abs()
    });
    // z from the GPU's own eps.
    let eps64: Vec<f64> = eps.iter().map(|&e| e as f64).collect();
    let (want_z, _) = cpu::reparam_forward(&mu, &lv, &eps64, 1.0);
    assert_close("philox z", &ctx.read_f32(&gz).unwrap(), &want_z, |i| {
        8.0 * U * (want_z[i].abs() + 3.0 * eps64[i].abs())
    });
    // Another step gives other noise; the same step again gives the same bits.
    kernels::run(ctx, &[&f]).unwrap();
    assert_eq!(
        ctx.read_f32(&geps).unwrap(),
        eps,
        "same (seed, step) must give the same eps"
    );
    step.write(
        ctx,
        &StepParams {
            rng_step: step_no + 1,
            ..StepParams::with_seed(seed)
        },
    );
    kernels::run(ctx, &[&f]).unwrap();
    assert_ne!(
        ctx.read_f32(&geps).unwrap(),
        eps,
        "another step must give other eps"
    );
});

// Adam and AdamW over an arena, several steps, against PyTorch's formula in f64. Per step the
// parameter is rounded once (u·|p|, twice for slack; AdamW's decay once more) and the update
// lr·m̂/(sqrt(v̂)+ε), |m̂/sqrt(v̂)| ≤ 3 here, carries a relative error of ~20u; over 5 steps:
// 5·(3u·|p| + 60u·lr).
backend_test!(adam_matches_pytorch_formula, |ctx| {
    // 4064 floats: 3 full texture rows and a partial one for the texture-fed reads.
    let n = 4 * 1000 + 64;
    for kind in [OptimizerKind::Adam, OptimizerKind::AdamW] {
        let cfg = OptimizerConfig {
            weight_decay: 0.01,
            // A schedule, so the factors differ from step to step as a run's do.
            schedule: vae_wgpu::optim::LrSchedule {
                shape: vae_wgpu::optim::LrShape::Cosine,
                warmup_steps: 2,
                total_steps: 6,
            },
            ..OptimizerConfig::of(kind)
        };
        let rules = cfg.rules();
        let hyper = adam::AdamHyper {
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            // AdamW's decay is the uniform's `decay`, not an L2 term.
            weight_decay: if kind == OptimizerKind::Adam {
                cfg.weight_decay
            } else {
                0.0
            },
        };
        let mut results = Vec::new();
        for reads in adam::AdamReads::ALL {
            let mut p = uniform(61, n, -1.0, 1.0);
            let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
            let gp = ctx.upload_f32("p", &[n], &to_f32(&p)).unwrap();
            let gg = ctx.zeros("g", &[n], DType::F32).unwrap();
            let gm = ctx.zeros("m", &[n], DType::F32).unwrap();
            let gv = ctx.zeros("v", &[n], DType::F32).unwrap();
            let step = StepUniform::new(ctx, &StepParams::default());
            let d = adam::adam_step_with(ctx, reads, &gp, &gg, &gm, &gv, &hyper, &step).unwrap();
            for t in 1..=5u64 {
                // Gradients bounded away from 0 so the sign of m̂ is never a coin flip between f32
                // and f64.
                let g: Vec<f64> = uniform(62 + t as u32, n, 0.1, 1.0)
                    .iter()
                    .enumerate()
                    .map(|(i, x)| if i % 2 == 0 { *x } else { -x })
                    .collect();
                ctx.write_f32(&gg, &to_f32(&g)).unwrap();
                let sp = vae_wgpu::model::Schedule::new(Default::default(), 0, &rules).params(t, 0);
                let (ss, bc2) = cfg.step_factors(t);
                assert_eq!((sp.step_size, sp.bc2_sqrt), (ss as f32, bc2 as f32));
                step.write(ctx, &sp);
                kernels::run(ctx, &[&d]).unwrap();
                cpu::adam_step(&mut p, &g, &mut m, &mut v, &cfg, t);
            }
            let got = ctx.read_f32(&gp).unwrap();
            assert_close(
                &format!("{kind} ({reads} reads) params after 5 steps"),
                &got,
                &p,
                |i| 5.0 * (3.0 * U * p[i].abs() + 60.0 * U * cfg.lr as f64),
            );
            let got_m = ctx.read_f32(&gm).unwrap();
            assert_close(&format!("{kind} ({reads} reads) m"), &got_m, &m, |i| {
                8.0 * U * m[i].abs() + 1e-30
            });
            let got_v = ctx.read_f32(&gv).unwrap();
            assert_close(&format!("{kind} ({reads} reads) v"), &got_v, &v, |i| {
                8.0 * U * v[i].abs() + 1e-30
            });
            results.push((got, got_m, got_v));
        }
        // Same arithmetic on the same values: the read path changes nothing, bit for bit.
        assert!(
            results.windows(2).all(|w| w[0] == w[1]),
            "{kind}: storage and texture reads disagree"
        );
    }
});

// SGD, plain, with momentum and with Nesterov momentum, L2 and a warm-up, 5 steps against
// PyTorch's formula in f64 (both entry points). A step rounds the parameter once and the
// buffer's two operations twice: over 5 steps 5·(2u·|p| + 4u·lr·|g + buf·(1 + μ)|), |g| ≤ 1,
// |buf| ≤ 1/(1 − μ).
backend_test!(sgd_matches_pytorch_formula, |ctx| {
    let n = 4 * 250;
    for (momentum, nesterov) in [(0.0, false), (0.9, false), (0.9, true)] {
        let cfg = OptimizerConfig {
            lr: 0.05,
            momentum,
            nesterov,
            weight_decay: 0.01,
            schedule: vae_wgpu::optim::LrSchedule {
                shape: vae_wgpu::optim::LrShape::Constant,
                warmup_steps: 3,
                total_steps: 5,
            },
            ..OptimizerConfig::of(OptimizerKind::Sgd)
        };
        let mut p = uniform(71, n, -1.0, 1.0);
        let mut buf = vec![0.0; n];
        let gp = ctx.upload_f32("p", &[n], &to_f32(&p)).unwrap();
        let gg = ctx.zeros("g", &[n], DType::F32).unwrap();
        let gb = ctx.zeros("buf", &[n], DType::F32).unwrap();
        let step = StepUniform::new(ctx, &StepParams::default());
        let with_buf = (momentum > 0.0).then_some(&gb);
        let d = vae_wgpu::kernels::sgd::sgd_step(
            ctx,
            &gp,
            &gg,
            with_buf,
            (momentum, nesterov, cfg.weight_decay),
            &step,
        )
        .unwrap();
        for t in 1..=5u64 {
            let g = uniform(72 + t as u32, n, -1.0, 1.0);
            ctx.write_f32(&gg, &to_f32(&g)).unwrap();
            let sp =
                vae_wgpu::model::Schedule::new(Default::default(), 0, &cfg.rules()).params(t, 0);
            assert_eq!(sp.step_size, cfg.lr_at(t) as f32, "SGD's step is lr_t");
            step.write(ctx, &sp);
            kernels::run(ctx, &[&d]).unwrap();
            let b = (momentum > 0.0).then_some(&mut buf[..]);
            cpu::sgd_step(&mut p, &g, b, &cfg, t);
        }
        let what = format!("sgd momentum {momentum} nesterov {nesterov}");
        let got = ctx.read_f32(&gp).unwrap();
        let lr = cfg.lr as f64;
        assert_close(&format!("{what}: params"), &got, &p, |i| {
            5.0 * (2.0 * U * p[i].abs() + 4.0 * U * lr * 21.0)
        });
        if momentum > 0.0 {
            let got_b = ctx.read_f32(&gb).unwrap();
            assert_close(&format!("{what}: buffer"), &got_b, &buf, |i| {
                10.0 * U * (buf[i].abs() + 10.0)
            });
        }
    }
});

// Clipping by the global norm: an arena of several partial-sum workgroups with a ragged tail,
// scaled by min(1, max/(‖g‖ + 1e-6)); the norm is a sum of n squares (relative error ≤ n·u, far
// less in the tree order), so each value is within (n·u + 2u)·|g|. Below the threshold the
// gradients are untouched, bit for bit (coef 1).
backend_test!(clip_grad_norm_matches_pytorch_formula, |ctx| {
    let n = 4 * (256 * 5 + 37);
    let g = uniform(81, n, -1.0, 1.0);
    let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
    let grads = ctx.upload_f32("g", &[n], &to_f32(&g)).unwrap();
    let partials = vae_wgpu::kernels::clip_grad::partials(ctx, n).unwrap();
    for max_norm in [norm / 3.0, norm * 2.0] {
        ctx.write_f32(&grads, &to_f32(&g)).unwrap();
        let d =
            vae_wgpu::kernels::clip_grad::clip_grad_norm(ctx, &grads, &partials, max_norm as f32)
                .unwrap();
        kernels::run(ctx, &d.iter().collect::<Vec<_>>()).unwrap();
        let mut want = g.clone();
        let before = cpu::clip_grad_norm(&mut want, max_norm as f32 as f64);
        assert!((before - norm).abs() < 1e-9 * norm);
        let got = ctx.read_f32(&grads).unwrap();
        if max_norm > norm {
            assert_eq!(got, to_f32(&g), "under the threshold nothing changes");
        } else {
            assert_close("clipped gradients", &got, &want, |i| {
                64.0 * U * want[i].abs() + 1e-30
            });
        }
    }
});

// The graph's tensor operations: a residual sum with each hidden activation, and a gradient
// through the activation that produced a tensor, written and then accumulated (a tensor read by
// two nodes). One rounding per sum or product: u·|value| each.
backend_test!(add_kernels_match, |ctx| {
    use vae_wgpu::kernels::add;
    let n = 3 * 257 + 5;
    let (a, b) = (uniform(91, n, -2.0, 2.0), uniform(92, n, -2.0, 2.0));
    let g = uniform(93, n, -1.0, 1.0);
    let up = |name, v: &[f64]| ctx.upload_f32(name, &[n], &to_f32(v)).unwrap();
    let (ga, gb, gg) = (up("a", &a), up("b", &b), up("g", &g));
    let y = ctx.zeros("y", &[n], DType::F32).unwrap();
    for act in [Act::Identity, Act::Relu, Act::Tanh] {
        let d = add::add_act(ctx, &ga, &gb, &y, act).unwrap();
        kernels::run(ctx, &[&d]).unwrap();
        let want = cpu::add_act(
            &to_f32(&a).iter().map(|&v| v as f64).collect::<Vec<_>>(),
            &to_f32(&b).iter().map(|&v| v as f64).collect::<Vec<_>>(),
            act,
        );
        let h = ctx.read_f32(&y).unwrap();
        assert_close(&format!("add_act {act}"), &h, &want, |i| {
            4.0 * U * (want[i].abs() + 1.0)
        });
        // The gradient into h twice: written, then added.
        let h64: Vec<f64> = h.iter().map(|&v| v as f64).collect();
        let g32: Vec<f64> = to_f32(&g).iter().map(|&v| v as f64).collect();
        let out = ctx.zeros("out", &[n], DType::F32).unwrap();
        let mut want = vec![0.0; n];
        for accumulate in [false, true] {
            let d = add::grad_act(ctx, &gg, &y, &out, act, accumulate).unwrap();
            kernels::run(ctx, &[&d]).unwrap();
            cpu::grad_act(&g32, &h64, &mut want, act, accumulate);
        }
        let got = ctx.read_f32(&out).unwrap();
        assert_close(
            &format!("grad_act {act}, written then added"),
            &got,
            &want,
            |i| 8.0 * U * (want[i].abs() + 1.0),
        );
        assert!(
            want.iter().any(|v| v.abs() > 0.5),
            "the sums are not trivial"
        );
    }
});

// Diffusers' nearest-neighbour 2x (Upsample2D before its convolution) and its backward, on odd
// sides and several images of several channels: copies and sums of four, so exact in f32.
backend_test!(upsample_kernels_match, |ctx| {
    use vae_wgpu::kernels::add;
    let (rows, c, h, w) = (3, 5, 7, 3);
    let n = rows * c * h * w;
    let x = to_f32(&uniform(94, n, -2.0, 2.0));
    let dy = to_f32(&uniform(95, 4 * n, -1.0, 1.0));
    let gx = ctx.upload_f32("x", &[rows, c * h * w], &x).unwrap();
    let gdy = ctx.upload_f32("dy", &[rows, 4 * c * h * w], &dy).unwrap();
    let y = ctx.zeros("y", &[rows, 4 * c * h * w], DType::F32).unwrap();
    let dx = ctx.zeros("dx", &[rows, c * h * w], DType::F32).unwrap();
    let d = [
        add::upsample_nearest(ctx, &gx, &y, [c, h, w]).unwrap(),
        add::upsample_nearest_grad(ctx, &gdy, &dx, [c, h, w]).unwrap(),
    ];
    kernels::run(ctx, &d.iter().collect::<Vec<_>>()).unwrap();
    let f64s = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<_>>();
    let want_y = cpu::upsample_nearest(&f64s(&x), [h, w]);
    let want_dx = cpu::upsample_nearest_grad(&f64s(&dy), [h, w]);
    assert_close(
        "upsample_nearest",
        &ctx.read_f32(&y).unwrap(),
        &want_y,
        |_| 0.0,
    );
    assert_close(
        "upsample_nearest_grad",
        &ctx.read_f32(&dx).unwrap(),
        &want_dx,
        |i| 4.0 * U * want_dx[i].abs(),
    );
    // Pixel (1, 2) of image 2's channel 4 lands at (2..4, 4..6) of its plane.
    let at = |img: usize, ch: usize, yy: usize, xx: usize, hh: usize, ww: usize| {
        ((img * c + ch) * hh + yy) * ww + xx
    };
    assert_eq!(
        want_y[at(2, 4, 3, 5, 2 * h, 2 * w)],
        f64s(&x)[at(2, 4, 1, 2, h, w)]
    );
    // A wrong size is an error, not a stray write.
    assert!(add::upsample_nearest(ctx, &gx, &dx, [c, h, w]).is_err());
});

// The mid block's attention core (kernels::attention: products batched over images, the softmax
// with its scaling and its backward) against its f64 twin: 3 images of 5 channels at 7x9
// positions (ragged tiles, images not on 256-byte boundaries), 2 of 4 channels at 8x8, and one of
// 1 channel at 16x20 (rows of 320 scores: past a workgroup's 256 threads).
backend_test!(attention_kernels_match, |ctx| {
    use vae_wgpu::kernels::attention::{self, AttnShape};
    for (rows, image) in [(3, [5, 7, 9]), (2, [4, 8, 8]), (1, [1, 16, 20])] {
        let s = AttnShape { image };
        let [c, h, w] = image;
        let (n, per) = (h * w, c * h * w);
        let make = |seed, scale: f64| to_f32(&uniform(seed, rows * per, -scale, scale));
        let (q, k, v, dout) = (make(96, 2.0), make(97, 2.0), make(98, 1.0), make(99, 1.0));
        let up = |name, x: &[f32]| ctx.upload_f32(name, &[rows, per], x).unwrap();
        let zeros = |name, len| ctx.zeros(name, &[len], DType::F32).unwrap();
        let (gq, gk, gv, gdo) = (up("q", &q), up("k", &k), up("v", &v), up("dout", &dout));
        let (probs, scratch) = (
            zeros("P", s.probs_len(rows)),
            zeros("dP", s.probs_len(rows)),
        );
        let outs = [0, 1, 2, 3].map(|_| ctx.zeros("out", &[rows, per], DType::F32).unwrap());
        let mut d = attention::forward(ctx, &s, (&gq, &gk, &gv), &probs, &outs[0]).unwrap();
        let grads = (&outs[1], &outs[2], &outs[3]);
        d.extend(
            attention::backward(ctx, &s, (&gq, &gk, &gv), &probs, &gdo, &scratch, grads).unwrap(),
        );
        kernels::run(ctx, &d.iter().collect::<Vec<_>>()).unwrap();
        let f64s = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<_>>();
        let scale = 1.0 / (c as f64).sqrt();
        let mut want: [Vec<f64>; 5] = Default::default();
        for b in 0..rows {
            let at = |x: &[f32]| f64s(&x[b * per..(b + 1) * per]);
            let (o, p) = cpu::attention_forward(&at(&q), &at(&k), &at(&v), c, n, scale);
            let (dq, dk, dv) =
                cpu::attention_backward(&at(&q), &at(&k), &at(&v), &p, &at(&dout), c, n, scale);
            for (acc, part) in want.iter_mut().zip([o, dq, dk, dv, p]) {
                acc.extend(part);
            }
        }
        let names = ["o", "dq", "dk", "dv"];
        for (i, name) in names.iter().enumerate() {
            let got = ctx.read_f32(&outs[i]).unwrap();
            let scale = want[i].iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert_close(
                &format!("attention {image:?} {name}"),
                &got,
                &want[i],
                |_| 1e-5 * scale,
            );
        }
        let p = ctx.read_f32(&probs).unwrap();
        assert_close(&format!("attention {image:?} P"), &p, &want[4], |_| 1e-6);
        // Each row of P sums to 1.
        for row in p.chunks(n) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }
});

// A conditional layer's label input: the batch's labels gathered through the shuffled index; the
// label columns added before each activation, with period B (encoder) and L·B rows read with
// period B (decoder, sample-major); their gradient summed per class in row order.
backend_test!(condition_kernels_match, |ctx| {
    use vae_wgpu::kernels::condition;
    let (n, b, classes) = (50, 7, 4);
    let data_labels: Vec<u32> = (0..n).map(|i| (i * 3 % classes) as u32).collect();
    let index: Vec<u32> = rng::Philox::stream(5, rng::domain::SHUFFLE, 0).permutation(n);
    let g_data = ctx.upload_u32("data labels", &[n], &data_labels).unwrap();
    let g_index = ctx.upload_u32("index", &[n], &index).unwrap();
    let g_labels = ctx.zeros("labels", &[b], DType::U32).unwrap();
    let offset = 11;
    let step = StepUniform::new(
        ctx,
        &StepParams {
            batch_offset: offset as u32,
            ..Default::default()
        },
    );
    let gather = condition::gather_labels(ctx, &g_data, &g_index, &g_labels, &step).unwrap();
    kernels::run(ctx, &[&gather]).unwrap();
    let labels = cpu::gather_labels(&data_labels, &index, offset, b);
    assert_eq!(ctx.read_u32(&g_labels).unwrap(), labels, "gather_labels");
    let cols = 37;
    for rows in [b, 3 * b] {
        let wc = uniform(1, cols * classes, -1.0, 1.0);
        let pre = uniform(2, rows * cols, -2.0, 2.0);
        let g_wc = ctx
            .upload_f32("wc", &[cols, classes], &to_f32(&wc))
            .unwrap();
        for act in [Act::Identity, Act::Relu, Act::Sigmoid, Act::Tanh] {
            let y = ctx.upload_f32("y", &[rows, cols], &to_f32(&pre)).unwrap();
            let f = condition::label_forward(ctx, &y, &g_wc, &g_labels, act).unwrap();
            kernels::run(ctx, &[&f]).unwrap();
            let want = cpu::label_forward(&pre, cols, &wc, &labels, act);
            // One f32 addition and the activation (tanh/sigmoid: a few ULP of an exp).
            assert_close(
                &format!("label_forward {act} rows {rows}"),
                &ctx.read_f32(&y).unwrap(),
                &want,
                |i| 1e-6 * (pre[i].abs() + 1.0),
            );
        }
        let dy = uniform(3, rows * cols, -1.0, 1.0);
        let g_dy = ctx.upload_f32("dy", &[rows, cols], &to_f32(&dy)).unwrap();
        let g_dwc = ctx.zeros("dwc", &[cols, classes], DType::F32).unwrap();
        let g = condition::label_grad(ctx, &g_dy, &g_dwc, &g_labels).unwrap();
        kernels::run(ctx, &[&g]).unwrap();
        let want = cpu::label_grad(&dy, cols, classes, &labels);
        // A sum of up to `rows` terms in f32.
        assert_close(
            &format!("label_grad rows {rows}"),
            &ctx.read_f32(&g_dwc).unwrap(),
            &want,
            |_| rows as f64 * U * 2.0,
        );
    }
    // Shapes that do not fit are refused: rows not a multiple of the labels' count.
    let y = ctx.zeros("y", &[b + 1, cols], DType::F32).unwrap();
    let wc = ctx.zeros("wc", &[cols, classes], DType::F32).unwrap();
    assert!(condition::label_forward(ctx, &y, &wc, &g_labels, Act::Relu).is_err());
});

backend_test!(gather_is_exact, |ctx| {
    // 13 bytes per image: rows straddle u32 words (the general path); 28: whole words (the
    // word-per-thread path every image size divisible by 4 takes); each in [0, 1] and, as an
    // AutoencoderKL reads them, in [−1, 1].
    for (d, signed) in [(13, false), (28, false), (13, true), (28, true)] {
        let (n, b) = (50, 7);
        let pixels: Vec<u8> = (0..n * d).map(|i| (i * 37 % 256) as u8).collect();
        let index: Vec<u32> = rng::Philox::stream(3, rng::domain::SHUFFLE, 0).permutation(n);
        let gpx = ctx.upload_u8("pixels", &[n, d], &pixels).unwrap();
        let gidx = ctx.upload_u32("index", &[n], &index).unwrap();
        let gx = ctx.zeros("x", &[b, d], DType::F32).unwrap();
        let offset = 20;
        let step = StepUniform::new(
            ctx,
            &StepParams {
                batch_offset: offset as u32,
                ..Default::default()
            },
        );
        kernels::run(
            ctx,
            &[&gather::gather_batch(ctx, &gpx, &gidx, &gx, &step, signed).unwrap()],
        )
        .unwrap();
        let want = cpu::gather_scaled(&pixels, d, &index, offset, b, signed);
        // u8/255 in f32 is the correctly rounded quotient (WGSL division: 2.5 ULP at most); the
        // signed map's subtraction is exact and its division by 0.5 too, so 3 ULP of 1.
        let got = ctx.read_f32(&gx).unwrap();
        assert_close(
            &format!("gather, {d} bytes per image, signed {signed}"),
            &got,
            &want,
            |i| 3.0 * U * want[i].abs().max(if signed { 1.0 } else { 0.0 }) + f64::MIN_POSITIVE,
        );
        if signed {
            assert!(got.iter().any(|&v| v < -0.9) && got.iter().any(|&v| v > 0.9));
        }
    }
});
