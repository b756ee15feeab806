//! The oracle checked: gradients of the CPU reference against central finite differences in f64,
//! for the whole model (every parameter tensor) and for each op's backward on its own.
//!
//! Central differences with step h have truncation error O(h²·f''') and rounding error
//! O(ε_f64·|f|/h); with h = 1e-5 both are ~1e-10 relative here, so 1e-6 relative to the largest
//! gradient of a tensor (plus a tiny absolute floor) is a bound no correct gradient misses and a
//! wrong one (a missing term, a transposed index) fails by orders of magnitude.

use rand::Rng;
use vae_wgpu::cpu::model::CpuVae;
use vae_wgpu::cpu::ops;
use vae_wgpu::model::{Likelihood, ParamLayout, VaeConfig};
use vae_wgpu::ops::{Act, Layout};
use vae_wgpu::rng::{Between, Philox, domain};

const H: f64 = 1e-5;

fn rand(seed: u32, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    let mut s = Philox::stream(99, domain::TEST_DATA, seed);
    (0..n).map(|_| s.sample(Between(lo, hi))).collect()
}

fn central(f: &dyn Fn(&[f64]) -> f64, x: &[f64], i: usize) -> f64 {
    let mut xp = x.to_vec();
    xp[i] += H;
    let mut xm = x.to_vec();
    xm[i] -= H;
    (f(&xp) - f(&xm)) / (2.0 * H)
}

fn check(name: &str, analytic: &[f64], f: &dyn Fn(&[f64]) -> f64, x: &[f64]) {
    let scale = analytic
        .iter()
        .fold(0.0f64, |a, g| a.max(g.abs()))
        .max(1e-3);
    let mut worst = 0.0f64;
    assert_eq!(analytic.len(), x.len(), "{name}: gradient length");
    for (i, &a) in analytic.iter().enumerate() {
        let fd = central(f, x, i);
        let err = (fd - a).abs();
        assert!(
            err <= 1e-6 * scale + 1e-9,
            "{name}[{i}]: analytic {a} vs finite difference {fd} (scale {scale})"
        );
        worst = worst.max(err / scale);
    }
    eprintln!(
        "{name}: max error / max |grad| = {worst:.2e} over {} elements",
        x.len()
    );
}

/// Every parameter of a model perturbed, its finite-difference gradient against the analytic one.
fn whole_model_case(cfg: VaeConfig, b: usize, seed: u64) {
    let layout = ParamLayout::new(&cfg);
    let params: Vec<f32> = layout.init(seed);
    let x = rand(seed as u32 + 1, b * cfg.input, 0.0, 1.0);
    let eps = rand(seed as u32 + 2, cfg.samples * b * cfg.latent, -2.0, 2.0);
    let mut vae = CpuVae::new(cfg.clone(), Default::default(), &params);
    vae.labels = (0..b).map(|i| (i % cfg.classes.max(1)) as u32).collect();
    if !cfg.is_conditional() {
        vae.labels.clear();
    }
    let trace = vae.forward_backward(&x, &eps);
    if cfg.activation == Act::Relu && cfg.kl.is_none() {
        assert!(
            trace.enc.iter().chain(&trace.dec).any(|h| h.contains(&0.0)),
            "ReLU should be active somewhere"
        );
    }
    // Each tensor's arena ranges (a conditional layer's weight has two: its input and label
    // columns).
    for spec in &layout.specs {
        for range in spec.ranges() {
            let base = vae.params.clone();
            let f = |p: &[f64]| {
                let mut v = vae.clone();
                v.params[range.clone()].copy_from_slice(p);
                v.loss(&x, &eps)
            };
            check(
                &format!("{} {} [{range:?}]", cfg.describe(), spec.name),
                &trace.grads[range.clone()],
                &f,
                &base[range.clone()],
            );
        }
    }
}

// diffusers' AutoencoderKL in miniature (blocks 2,4 in 2 groups, one latent channel, 4x4 images
// of one channel, the mid blocks' attention over 2x2 positions): every parameter of the f64 twin,
// GroupNorms with SiLU, the Downsample2D's end padding, the upsampling, the attention core, the
// spatial posterior and the Gaussian whose mean is the output, against finite differences.
#[test]
fn autoencoder_kl_gradients_match_finite_differences() {
    use vae_wgpu::model::autoencoder_kl::KlConfig;
    let kl = KlConfig::new(1, &[2, 4], 1, 1, 2, 4);
    assert!(kl.mid_block_add_attention);
    let cfg = VaeConfig::autoencoder_kl(kl, [1, 4, 4]);
    cfg.validate().unwrap();
    whole_model_case(cfg, 2, 5);
}

#[test]
fn whole_model_gradients_match_finite_differences() {
    // Small sizes so every parameter is perturbed; L = 2 exercises the sample averaging.
    let cfg = VaeConfig {
        samples: 2,
        ..VaeConfig::mirrored(7, &[6], 3)
    };
    whole_model_case(cfg, 5, 3);
}

#[test]
fn deep_tanh_model_gradients_match_finite_differences() {
    // Three hidden layers a side (the decoder's not mirrored), tanh, L = 2.
    let cfg = VaeConfig {
        samples: 2,
        decoder_hidden: vec![4, 6, 5],
        activation: Act::Tanh,
        ..VaeConfig::mirrored(7, &[6, 5, 4], 3)
    };
    whole_model_case(cfg, 4, 7);
}

#[test]
fn residual_model_gradients_match_finite_differences() {
    // Residual blocks on both sides: a block that keeps its width (its input read by fc1 and the
    // sum) and blocks with a shortcut Linear (read by fc1 and the shortcut), tanh and ReLU, L = 2:
    // every tensor with two readers sums both gradients.
    let cfg = VaeConfig {
        samples: 2,
        res_blocks: vec![6, 4],
        activation: Act::Tanh,
        ..VaeConfig::mirrored(7, &[6], 3)
    };
    whole_model_case(cfg, 4, 11);
    let cfg = VaeConfig {
        res_blocks: vec![5],
        ..VaeConfig::mirrored(7, &[5], 3)
    };
    whole_model_case(cfg, 5, 13);
}

#[test]
fn conditional_model_gradients_match_finite_differences() {
    // Labels of 3 classes (one of them twice) join the first layer of each side; L = 2, so
    // decoder rows of both samples read their image's label; and a deeper tanh model.
    let cfg = VaeConfig {
        samples: 2,
        classes: 3,
        ..VaeConfig::mirrored(7, &[6], 3)
    };
    whole_model_case(cfg, 4, 5);
    let cfg = VaeConfig {
        classes: 2,
        activation: Act::Tanh,
        ..VaeConfig::mirrored(6, &[5, 4], 2)
    };
    whole_model_case(cfg, 3, 9);
}

#[test]
fn deep_relu_model_gradients_match_finite_differences() {
    let cfg = VaeConfig::mirrored(8, &[7, 5], 2);
    whole_model_case(cfg, 5, 11);
}

#[test]
fn matmul_gradients_in_every_layout() {
    // L = Σ G ⊙ op(A)·op(B): dL/dA and dL/dB by the same TN/NN/NT products the backward pass uses.
    let (m, n, k) = (3, 4, 5);
    for layout in Layout::ALL {
        let a = rand(10, m * k, -1.0, 1.0);
        let b = rand(11, k * n, -1.0, 1.0);
        let g = rand(12, m * n, -1.0, 1.0);
        let loss = |a: &[f64], b: &[f64]| {
            ops::matmul(layout, a, b, m, n, k)
                .iter()
                .zip(&g)
                .map(|(c, g)| c * g)
                .sum::<f64>()
        };
        // dA (in A's stored layout) and dB by finite differences against the analytic formulas.
        let da_mk = ops::matmul(Layout::NT, &g, &b_as_kn(layout, &b, n, k), m, k, n); // [M,K] = G·B'ᵀ
        let da = match layout {
            Layout::TN => transpose(&da_mk, m, k),
            _ => da_mk,
        };
        check(
            &format!("matmul {layout:?} dA"),
            &da,
            &|a: &[f64]| loss(a, &b),
            &a,
        );
        let db_kn = ops::matmul(Layout::TN, &a_as_mk(layout, &a, m, k), &g, k, n, m); // [K,N] = A'ᵀ·G
        let db = match layout {
            Layout::NT => transpose(&db_kn, k, n),
            _ => db_kn,
        };
        check(
            &format!("matmul {layout:?} dB"),
            &db,
            &|b: &[f64]| loss(&a, b),
            &b,
        );
    }
}

fn transpose(x: &[f64], r: usize, c: usize) -> Vec<f64> {
    let mut t = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            t[j * r + i] = x[i * c + j];
        }
    }
    t
}

/// A as a row-major [M,K] matrix whatever its stored layout.
fn a_as_mk(layout: Layout, a: &[f64], m: usize, k: usize) -> Vec<f64> {
    match layout {
        Layout::TN => transpose(a, k, m),
        _ => a.to_vec(),
    }
}

/// B as a row-major [K,N] matrix whatever its stored layout.
fn b_as_kn(layout: Layout, b: &[f64], n: usize, k: usize) -> Vec<f64> {
    match layout {
        Layout::NT => transpose(b, n, k),
        _ => b.to_vec(),
    }
}

#[test]
fn activation_bce_and_reparam_gradients() {
    let n = 12;
    let x = rand(20, n, -3.0, 3.0);
    let g = rand(21, n, -1.0, 1.0);
    for act in Act::ALL {
        let y = ops::act_forward(&x, n, None, act);
        let analytic = ops::act_backward(&g, &y, act);
        let f = |x: &[f64]| {
            ops::act_forward(x, n, None, act)
                .iter()
                .zip(&g)
                .map(|(y, g)| y * g)
                .sum::<f64>()
        };
        check(&format!("act {act:?}"), &analytic, &f, &x);
    }
    // BCE with 2 samples per target row.
    let target = rand(22, n / 2, 0.0, 1.0);
    let (_, dl) = ops::bce_forward_backward(&x, &target);
    check(
        "bce dlogits",
        &dl,
        &|l: &[f64]| ops::bce_forward_backward(l, &target).0,
        &x,
    );
    // Reparameterisation + KL: L = Σ dz ⊙ z + KL.
    let (bk, samples) = (4, 3);
    let mu = rand(23, bk, -1.0, 1.0);
    let lv = rand(24, bk, -2.0, 2.0);
    let eps = rand(25, bk * samples, -2.0, 2.0);
    let dz = rand(26, bk * samples, -1.0, 1.0);
    let loss = |mu: &[f64], lv: &[f64]| {
        let (z, kl) = ops::reparam_forward(mu, lv, &eps, 1.0);
        z.iter().zip(&dz).map(|(z, g)| z * g).sum::<f64>() + kl
    };
    let (dmu, dlv) = ops::reparam_backward(&mu, &lv, &eps, &dz, 1.0);
    check("reparam+kl dmu", &dmu, &|m: &[f64]| loss(m, &lv), &mu);
    check("reparam+kl dlogvar", &dlv, &|l: &[f64]| loss(&mu, l), &lv);
}

// Each likelihood's -log p(x | l): its gradient in the logits (logits across the continuous
// Bernoulli's series/closed-form switch at |l| = ½, and large ones) and a learned scale's (a
// Gaussian's σ, a Laplace's b) in log s.
#[test]
fn likelihood_gradients_in_logits_and_log_sigma() {
    let n = 16;
    let mut x = rand(30, n, -6.0, 6.0);
    x.extend([0.4999, 0.5001, -0.5001, 1e-4, -30.0, 25.0]);
    let target = rand(31, x.len() / 2, 0.0, 1.0);
    for lik in Likelihood::KINDS {
        let ls = -0.7;
        let (_, dl, dls) = ops::recon_forward_backward(lik, &x, &target, ls);
        let loss = |l: &[f64], ls: f64| ops::recon_forward_backward(lik, l, &target, ls).0;
        check(&format!("{lik} dlogits"), &dl, &|l: &[f64]| loss(l, ls), &x);
        if lik.learns_scale() {
            check(
                &format!("{lik} dlog_sigma"),
                &[dls],
                &|s: &[f64]| loss(&x, s[0]),
                &[ls],
            );
        }
    }
    // The continuous Bernoulli's mean is its log-partition's derivative (exponential family), and
    // its density integrates to 1 over [0, 1]: exp(-(A(l) - l·x)) by the midpoint rule.
    for l in [-40.0, -3.0, -0.6, -0.2, 0.0, 1e-5, 0.3, 0.5, 2.0, 12.0] {
        let a = |l: f64| ops::cb_log_partition(l);
        let fd = (a(l + H) - a(l - H)) / (2.0 * H);
        assert!(
            (fd - ops::cb_mean(l)).abs() < 1e-7,
            "A'({l}) = {fd} vs mean {}",
            ops::cb_mean(l)
        );
        let k = 20_000;
        let mass: f64 = (0..k)
            .map(|i| (-(a(l) - l * (i as f64 + 0.5) / k as f64)).exp() / k as f64)
            .sum();
        assert!((mass - 1.0).abs() < 1e-6, "∫ p(x | {l}) dx = {mass}");
    }
}

// The whole model under each likelihood and a KL weight: every parameter's gradient, log σ's too.
#[test]
fn likelihoods_and_kl_weight_model_gradients_match_finite_differences() {
    for (likelihood, beta) in [
        (Likelihood::ContinuousBernoulli, 1.0),
        (Likelihood::Gaussian { sigma: None }, 0.25),
        (Likelihood::Gaussian { sigma: Some(0.4) }, 3.0),
        (Likelihood::Laplace { scale: None }, 0.5),
    ] {
        let cfg = VaeConfig {
            samples: 2,
            likelihood,
            beta,
            ..VaeConfig::mirrored(7, &[6], 3)
        };
        whole_model_case(cfg, 4, 5);
    }
    // The IWAE objective (k = 4): its gradient weighs each sample by its importance weight.
    for likelihood in [Likelihood::Bernoulli, Likelihood::Gaussian { sigma: None }] {
        let cfg = VaeConfig {
            samples: 4,
            likelihood,
            objective: vae_wgpu::model::Objective::Iwae,
            ..VaeConfig::mirrored(7, &[6], 3)
        };
        whole_model_case(cfg, 3, 9);
    }
}

#[test]
fn conv_model_gradients_match_finite_differences() {
    // Two conv layers on 2x8x8 images (8 -> 4 -> 2), a dense layer, L = 2, tanh: every conv and
    // transposed-conv weight and bias, and the layers around them.
    let cfg = VaeConfig {
        samples: 2,
        activation: Act::Tanh,
        ..VaeConfig::convolutional([2, 8, 8], &[3, 4], &[5], 3)
    };
    whole_model_case(cfg, 2, 13);
    // ReLU, no dense hidden layer: the heads read the last conv's features directly.
    whole_model_case(VaeConfig::convolutional([1, 4, 4], &[2], &[], 2), 3, 17);
}

#[test]
fn conv_gradients_for_every_geometry() {
    // L = Σ G ⊙ conv(x, W): dL/dx by the transposed pass and dL/dW by the weight-gradient pass,
    // for strides 1 and 2, paddings 0 to 2 and kernels 3 to 5, both sides (lo = the output of a
    // Conv2d, the input of a ConvTranspose2d).
    for (lo, hi, kernel, stride, padding) in [
        ([2, 3, 4], [3, 5, 6], 3, 1, 0),
        ([2, 3, 3], [1, 6, 6], 4, 2, 1),
        ([3, 2, 3], [2, 5, 7], 5, 2, 2),
    ] {
        let d = vae_wgpu::ops::ConvShape {
            batch: 2,
            lo,
            hi,
            kernel,
            stride,
            padding,
        };
        let w = rand(20, lo[0] * hi[0] * kernel * kernel, -1.0, 1.0);
        let x = rand(21, d.hi_len(), -1.0, 1.0);
        let u = rand(22, d.lo_len(), -1.0, 1.0);
        let g_lo = rand(23, d.lo_len(), -1.0, 1.0);
        let g_hi = rand(24, d.hi_len(), -1.0, 1.0);
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let name = format!("conv lo {lo:?} hi {hi:?} k{kernel} s{stride} p{padding}");
        // conv_to_lo (a Conv2d's forward): its gradients are conv_to_hi and the weight gradient.
        let f = |x: &[f64]| dot(&ops::conv_to_lo(&d, x, &w), &g_lo);
        check(
            &format!("{name} to_lo dx"),
            &ops::conv_to_hi(&d, &g_lo, &w),
            &f,
            &x,
        );
        let f = |w: &[f64]| dot(&ops::conv_to_lo(&d, &x, w), &g_lo);
        check(
            &format!("{name} to_lo dW"),
            &ops::conv_weight_grad(&d, &g_lo, &x),
            &f,
            &w,
        );
        // conv_to_hi (a ConvTranspose2d's forward): gradients conv_to_lo and the weight gradient
        // with the operands' roles swapped.
        let f = |u: &[f64]| dot(&ops::conv_to_hi(&d, u, &w), &g_hi);
        check(
            &format!("{name} to_hi dx"),
            &ops::conv_to_lo(&d, &g_hi, &w),
            &f,
            &u,
        );
        let f = |w: &[f64]| dot(&ops::conv_to_hi(&d, &u, w), &g_hi);
        check(
            &format!("{name} to_hi dW"),
            &ops::conv_weight_grad(&d, &u, &g_hi),
            &f,
            &w,
        );
        // The bias: dL/db[c] = Σ of the output's gradient over channel c.
        let plane = hi[1] * hi[2];
        let f = |b: &[f64]| {
            let y = ops::conv_epilogue(
                &ops::conv_to_hi(&d, &u, &w),
                hi[0],
                plane,
                Some(b),
                Act::Identity,
            );
            dot(&y, &g_hi)
        };
        let b = rand(25, hi[0], -1.0, 1.0);
        check(
            &format!("{name} bias"),
            &ops::channel_sums(&g_hi, hi[0], plane),
            &f,
            &b,
        );
    }
}
