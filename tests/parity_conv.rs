//! The convolution kernels (`shaders/conv.wgsl`, launchers in `src/kernels/conv.rs`) on the GPU
//! against their f64 CPU twins (`cpu::ops::conv_*`), for Conv2d and ConvTranspose2d layers on
//! ragged geometries: odd sides, 1 to 3 and 32 to 64 channels, kernels 1, 3, 4 and 5, strides 1
//! to 3, padding 0, 1 and 2, batches 1 to 33; each layer's forward (bias and every activation), input gradient
//! (with the activation backward fused) and weight gradient (bias gradient fused).

#[macro_use]
mod common;

use common::{U, assert_close, to_f32, uniform};
use vae_wgpu::cpu::ops as cpu;
use vae_wgpu::gpu::{DType, GpuContext};
use vae_wgpu::kernels::{
    self, Dispatch,
    conv::{
        BiasSide, ConvEpilogue, ConvFormulation, ConvPass, ConvScratch, ConvShape, conv_to_hi,
        conv_to_lo, conv_weight_grad, plan_to_hi, plan_to_lo, plan_weight_grad,
    },
};
use vae_wgpu::model::ConvGeom;
use vae_wgpu::ops::Act;

/// (transposed, input [C, H, W], output channels, kernel, stride, padding, batch).
type Case = (bool, [usize; 3], usize, usize, usize, usize, usize);

const CASES: [Case; 12] = [
    (false, [1, 7, 9], 4, 3, 1, 0, 1),
    // A 1x1 convolution (a ResNet block's shortcut) and a 3x3 at stride 1 (most of an
    // AutoencoderKL), on odd channel counts; a stride past 2 (col2im's tap stepping).
    (false, [33, 6, 5], 2, 1, 1, 0, 2),
    (false, [32, 9, 7], 33, 3, 1, 1, 2),
    (true, [2, 4, 5], 3, 5, 3, 1, 2),
    (false, [3, 11, 13], 5, 4, 2, 1, 33),
    (false, [3, 9, 9], 2, 5, 2, 2, 2),
    (false, [2, 5, 6], 3, 3, 1, 2, 3),
    (true, [4, 5, 7], 3, 4, 2, 1, 33),
    (true, [1, 6, 5], 3, 3, 1, 0, 1),
    (true, [3, 4, 4], 1, 5, 2, 2, 3),
    // The `--conv 32,64` model's second layer and its mirror, on a few images.
    (false, [32, 14, 14], 64, 4, 2, 1, 4),
    (true, [64, 7, 7], 32, 4, 2, 1, 4),
];

fn geom(case: &Case) -> ConvGeom {
    let &(t, input, c_out, k, s, p, _) = case;
    let g = if t {
        ConvGeom::conv_transpose2d(input, c_out, k, s, p)
    } else {
        ConvGeom::conv2d(input, c_out, k, s, p)
    };
    g.expect("a case whose kernel fits")
}

fn abs(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| x.abs()).collect()
}

/// f32 accumulation of n products is within γ_n·Σ|a·b| of the exact sum (Higham §3.5), whatever
/// the order: the kernels' loops and the weight gradient's tree alike. The epilogue adds one
/// rounding of the bias sum and at most a few ULP of tanh (1-Lipschitz, so it does not amplify the
/// sum's error).
fn gamma(n: usize) -> f64 {
    let nu = n as f64 * U;
    nu / (1.0 - nu)
}

/// The most products any output of the pass sums: the bound's n.
fn terms(s: &ConvShape, pass: &str) -> usize {
    let k2 = s.kernel * s.kernel;
    match pass {
        "to_lo" => s.hi[0] * k2,
        "to_hi" => s.lo[0] * k2,
        _ => s.batch * (s.lo[1] * s.lo[2]).max(s.hi[1] * s.hi[2]),
    }
}

fn run(ctx: &GpuContext, d: Vec<Dispatch>) {
    kernels::run(ctx, &d.iter().collect::<Vec<_>>()).unwrap();
}

fn case(ctx: &GpuContext, c: &Case, act: Act, f: ConvFormulation) {
    let g = geom(c);
    let transposed = c.0;
    let batch = c.6;
    let s = ConvShape::of(&g, transposed, batch);
    let d = s;
    let scratch = ConvScratch::new(ctx, &[s]).unwrap();
    let name = format!(
        "{} {f} {} {:?}->{:?} k{} s{} p{} B={batch} {act}",
        ctx.adapter.backend.to_str(),
        if transposed {
            "ConvTranspose2d"
        } else {
            "Conv2d"
        },
        g.input,
        g.output,
        g.kernel,
        g.stride,
        g.padding
    );
    let seed = (s.lo_len() * 7 + s.hi_len()) as u32;
    let (in_len, out_len) = if transposed {
        (s.lo_len(), s.hi_len())
    } else {
        (s.hi_len(), s.lo_len())
    };
    let x = uniform(seed, in_len, -1.0, 1.0);
    let w = uniform(seed + 1, s.weight_len(), -0.5, 0.5);
    let bias = uniform(seed + 2, g.output[0], -0.5, 0.5);
    let dy = uniform(seed + 3, out_len, -1.0, 1.0);
    // The saved output of the activation that produced x (for the fused backward): any tensor of
    // x's shape with both signs and values near ±1.
    let saved = uniform(seed + 4, in_len, -1.0, 1.0);
    let up =
        |label: &str, v: &[f64], shape: &[usize]| ctx.upload_f32(label, shape, &to_f32(v)).unwrap();
    let gx = up("x", &x, &[batch, in_len / batch]);
    let gw = up("w", &w, &[s.weight_len()]);
    let gb = up("b", &bias, &[g.output[0]]);
    let gdy = up("dy", &dy, &[batch, out_len / batch]);
    let gsaved = up("saved", &saved, &[batch, in_len / batch]);
    let gy = ctx
        .zeros("y", &[batch, out_len / batch], DType::F32)
        .unwrap();
    let gdx = ctx
        .zeros("dx", &[batch, in_len / batch], DType::F32)
        .unwrap();
    let gdw = ctx.zeros("dw", &[s.weight_len()], DType::F32).unwrap();
    let gdb = ctx.zeros("db", &[g.output[0]], DType::F32).unwrap();

    // Forward: y = act(conv(x) + b).
    let plane = g.output[1] * g.output[2];
    let epi = ConvEpilogue {
        bias: Some(&gb),
        act,
        act_grad: None,
    };
    let (pre, mag, pass) = if transposed {
        (
            cpu::conv_to_hi(&d, &x, &w),
            cpu::conv_to_hi(&d, &abs(&x), &abs(&w)),
            "to_hi",
        )
    } else {
        (
            cpu::conv_to_lo(&d, &x, &w),
            cpu::conv_to_lo(&d, &abs(&x), &abs(&w)),
            "to_lo",
        )
    };
    let want = cpu::conv_epilogue(&pre, g.output[0], plane, Some(&bias), act);
    let fwd = if transposed {
        plan_to_hi(ctx, f, &s, &gx, &gw, &gy, epi, &scratch)
    } else {
        plan_to_lo(ctx, f, &s, &gx, &gw, &gy, epi, &scratch)
    }
    .unwrap();
    run(ctx, fwd);
    let n = terms(&s, pass);
    assert_close(
        &format!("{name} forward"),
        &ctx.read_f32(&gy).unwrap(),
        &want,
        |i| {
            let b = bias[(i / plane) % g.output[0]].abs();
            gamma(n + 1) * (mag[i] + b) + 8.0 * U * want[i].abs() + 1e-30
        },
    );

    // Input gradient with the producing activation's backward fused: dx = convᵀ(dy) ⊙ act′(saved).
    let grad_act = if act == Act::Identity {
        None
    } else {
        Some(act)
    };
    let (gin, gmag, gpass) = if transposed {
        (
            cpu::conv_to_lo(&d, &dy, &w),
            cpu::conv_to_lo(&d, &abs(&dy), &abs(&w)),
            "to_lo",
        )
    } else {
        (
            cpu::conv_to_hi(&d, &dy, &w),
            cpu::conv_to_hi(&d, &abs(&dy), &abs(&w)),
            "to_hi",
        )
    };
    let want_dx = match grad_act {
        Some(a) if a != Act::Sigmoid => cpu::act_backward(&gin, &saved, a),
        _ => gin.clone(),
    };
    let epi = ConvEpilogue {
        act_grad: grad_act
            .filter(|a| *a != Act::Sigmoid)
            .map(|a| (a, &gsaved)),
        ..ConvEpilogue::NONE
    };
    let bwd = if transposed {
        plan_to_lo(ctx, f, &s, &gdy, &gw, &gdx, epi, &scratch)
    } else {
        plan_to_hi(ctx, f, &s, &gdy, &gw, &gdx, epi, &scratch)
    }
    .unwrap();
    run(ctx, bwd);
    let n = terms(&s, gpass);
    // act′ ≤ 1 for ReLU and tanh; tanh's 1 − h² adds two roundings.
    assert_close(
        &format!("{name} input gradient"),
        &ctx.read_f32(&gdx).unwrap(),
        &want_dx,
        |i| gamma(n + 2) * gmag[i] + 4.0 * U * want_dx[i].abs() + 1e-30,
    );

    // Weight gradient, bias gradient fused (the channel sums of the output's gradient).
    let (lo, hi, side) = if transposed {
        (&x, &dy, BiasSide::Hi)
    } else {
        (&dy, &x, BiasSide::Lo)
    };
    let want_dw = cpu::conv_weight_grad(&d, lo, hi);
    let mag_dw = cpu::conv_weight_grad(&d, &abs(lo), &abs(hi));
    let want_db = cpu::channel_sums(&dy, g.output[0], plane);
    let mag_db = cpu::channel_sums(&abs(&dy), g.output[0], plane);
    let (glo, ghi) = if transposed { (&gx, &gdy) } else { (&gdy, &gx) };
    let wg = plan_weight_grad(ctx, f, &s, glo, ghi, &gdw, Some((&gdb, side)), &scratch).unwrap();
    run(ctx, wg);
    let n = terms(&s, "weight");
    assert_close(
        &format!("{name} weight gradient"),
        &ctx.read_f32(&gdw).unwrap(),
        &want_dw,
        |i| gamma(n) * mag_dw[i] + 1e-30,
    );
    assert_close(
        &format!("{name} bias gradient"),
        &ctx.read_f32(&gdb).unwrap(),
        &want_db,
        |i| gamma(batch * plane) * mag_db[i] + 1e-30,
    );
}

backend_test!(conv_layers_forward_and_backward_match_cpu, |ctx| {
    for f in ConvFormulation::ALL {
        for c in &CASES {
            for act in [Act::Identity, Act::Relu, Act::Tanh] {
                case(ctx, c, act, f);
            }
        }
    }
});

backend_test!(conv_decoder_output_takes_a_sigmoid, |ctx| {
    // Decoding draws the output layer with the sigmoid fused (`plan_decode`).
    for f in ConvFormulation::ALL {
        case(ctx, &CASES[7], Act::Sigmoid, f);
        case(ctx, &CASES[4], Act::Sigmoid, f);
    }
});

backend_test!(conv_shape_mismatch_is_an_error_not_a_panic, |ctx| {
    let g = ConvGeom::conv2d([1, 8, 8], 2, 4, 2, 1).unwrap();
    let s = ConvShape::of(&g, false, 2);
    let t = |n: usize| ctx.zeros("t", &[n], DType::F32).unwrap();
    let (x, w, y) = (t(s.hi_len()), t(s.weight_len()), t(s.lo_len()));
    let short = t(s.lo_len() - 1);
    let e = conv_to_lo(ctx, &s, &x, &w, &short, ConvEpilogue::NONE)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("lo"), "{e}");
    let e = conv_to_hi(ctx, &s, &x, &w, &y, ConvEpilogue::NONE)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("needs"), "{e}");
    let e = conv_weight_grad(ctx, &s, &y, &x, &t(3), None)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("dW"), "{e}");
});

backend_test!(
    gemm_past_the_binding_limit_runs_in_chunks_or_not_at_all,
    |ctx| {
        // 32 images of 64x64x64 through a 3x3 convolution: 302 MB of windows, more than one binding of
        // any adapter this suite runs on (wgpu's default 128 MiB). The forward pass runs its GEMM
        // formulation in chunks of rows whose scratch fits; the backward passes, whose scratch is not
        // split, leave it to the direct kernel; the scratch is sized for the forward chunk.
        let g = ConvGeom::conv2d([64, 64, 64], 64, 3, 1, 1).unwrap();
        let big = ConvShape::of(&g, false, 32);
        let max = ctx.limits().max_storage_buffer_binding_size;
        assert!(4 * big.scratch_len().0 as u64 > max);
        let chunk = kernels::conv::gemm_chunk_rows(ctx, &big);
        assert!(
            chunk > 0 && chunk < big.gemm_rows() && chunk.is_multiple_of(64),
            "{chunk}"
        );
        assert!(kernels::conv::gemm_fits(ctx, ConvPass::ToLo, &big));
        for pass in [ConvPass::ToHi, ConvPass::WeightGrad(Some(BiasSide::Lo))] {
            assert!(!kernels::conv::gemm_fits(ctx, pass, &big));
            assert_eq!(
                kernels::conv::formulation_for(ctx, pass, &big).unwrap(),
                ConvFormulation::Direct
            );
        }
        let small = ConvShape::of(&ConvGeom::conv2d([1, 8, 8], 2, 3, 1, 1).unwrap(), false, 2);
        let scratch = ConvScratch::new(ctx, &[big, small]).unwrap();
        assert_eq!(scratch.cols.len(), chunk * big.window());
        assert!(4 * scratch.cols.len() as u64 <= max);
    }
);

// The forward GEMM in chunks of any size equals the f64 twin within the bound of its sums: chunks
// of 1, 7 and 64 rows and one of all of them, across image boundaries (3 images of 9x11 outputs),
// with the bias and ReLU in the product's epilogue, or the activation backward in rows_to_lo.
backend_test!(gemm_forward_in_chunks_matches_cpu, |ctx| {
    use vae_wgpu::kernels::matmul::Epilogue;
    let g = ConvGeom::conv2d([5, 9, 11], 7, 3, 1, 1).unwrap();
    let s = ConvShape::of(&g, false, 3);
    let x = uniform(5, s.hi_len(), -1.0, 1.0);
    let w = uniform(6, s.weight_len(), -0.5, 0.5);
    let bias = uniform(7, s.lo[0], -0.5, 0.5);
    let saved = uniform(8, s.lo_len(), -1.0, 1.0);
    let up = |label: &str, v: &[f64]| ctx.upload_f32(label, &[v.len()], &to_f32(v)).unwrap();
    let (gx, gb, gsaved) = (up("x", &x), up("b", &bias), up("saved", &saved));
    let gw = ctx
        .upload_f32("w", &[s.lo[0], s.window()], &to_f32(&w))
        .unwrap();
    let gy = ctx.zeros("y", &[s.lo_len()], DType::F32).unwrap();
    let scratch = ConvScratch::new(ctx, &[s]).unwrap();
    let plane = s.lo[1] * s.lo[2];
    let pre = cpu::conv_to_lo(&s, &x, &w);
    let mag = cpu::conv_to_lo(&s, &abs(&x), &abs(&w));
    let n = s.window();
    // y after the chunked pass (NaN before, so that a row no chunk writes shows).
    let chunked = |product: Epilogue<'_>, back: ConvEpilogue<'_>, step: usize| {
        ctx.write_f32(&gy, &vec![f32::NAN; s.lo_len()]).unwrap();
        let d = kernels::conv::gemm_to_lo_in_chunks(
            ctx, &s, &gx, &gw, &gy, product, back, &scratch, step,
        )
        .unwrap();
        assert_eq!(d.len(), 3 * s.gemm_rows().div_ceil(step));
        run(ctx, d);
        ctx.read_f32(&gy).unwrap()
    };
    for step in [1, 7, 64, s.gemm_rows()] {
        // act(conv(x) + b), the layer's forward.
        let product = Epilogue {
            bias: Some(&gb),
            act: Act::Relu,
            ..Epilogue::NONE
        };
        let want = cpu::conv_epilogue(&pre, s.lo[0], plane, Some(&bias), Act::Relu);
        assert_close(
            &format!("chunks of {step}: forward"),
            &chunked(product, ConvEpilogue::NONE, step),
            &want,
            |i| gamma(n + 1) * (mag[i] + bias[(i / plane) % s.lo[0]].abs()) + 1e-30,
        );
        // conv(x) ⊙ tanh′(saved), a ConvTranspose2d's input gradient.
        let back = ConvEpilogue {
            act_grad: Some((Act::Tanh, &gsaved)),
            ..ConvEpilogue::NONE
        };
        let want = cpu::act_backward(&pre, &saved, Act::Tanh);
        assert_close(
            &format!("chunks of {step}: input gradient"),
            &chunked(Epilogue::NONE, back, step),
            &want,
            |i| gamma(n + 2) * mag[i] + 4.0 * U * want[i].abs() + 1e-30,
        );
    }
});
