//! Whole-model parity: full training steps (forward, backward, Adam) on the GPU and on the f64 CPU
//! reference (src/cpu/model.rs) from the same initial parameters, batch and noise. Every
//! intermediate, the loss, every gradient and every updated parameter is compared after step 1;
//! then the loss and parameters after a few more steps, to show the trajectories stay together.

#[macro_use]
mod common;

use common::{ReferenceGraphs, U, assert_close, reference_graphs};
use vae_wgpu::cpu::model::CpuVae;
use vae_wgpu::data::{ImageSet, Split};
use vae_wgpu::gpu::GpuContext;
use vae_wgpu::gpu::GpuTensor;
use vae_wgpu::model::gpu::Activations;
use vae_wgpu::model::{GpuVae, ParamLayout, VaeConfig};
use vae_wgpu::optim::OptimizerConfig;
use vae_wgpu::rng;

fn mnist_batch(b: usize) -> (Vec<f32>, Vec<f64>) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let train = ImageSet::load_idx(&dir, Split::Train).expect("vendored MNIST");
    let x: Vec<f32> = (0..b).flat_map(|i| train.image_f32(i)).collect();
    let x64 = x.iter().map(|&v| v as f64).collect();
    (x, x64)
}

fn read(ctx: &GpuContext, t: &GpuTensor) -> Vec<f32> {
    ctx.read_f32(t).unwrap()
}

/// Tensor-level tolerance: `|gpu - cpu| <= rel · max|cpu|`. Forward activations go through at most
/// two chained matmuls of K ≤ 784 in f32 (worst case γ_784 ≈ 4.7e-5 of the magnitude each, typically
/// √K·u ≈ 2e-6): rel = 1e-4. Gradients pass through up to five products and cancelling sums
/// (column sums over the batch, dW over the batch): rel = 1e-3.
fn close(name: &str, got: &[f32], want: &[f64], rel: f64) {
    let scale = want.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    assert_close(name, got, want, |_| rel * scale + 1e-30);
}

fn run_case(ctx: &GpuContext, cfg: VaeConfig, b: usize, seed: u64, steps: u32) {
    let adam = OptimizerConfig::default();
    let layout = ParamLayout::new(&cfg);
    let init = layout.init(seed);
    let (x, x64) = mnist_batch(b);
    let x = if cfg.input == 784 {
        x
    } else {
        x.iter().cycle().take(b * cfg.input).copied().collect()
    };
    let x64: Vec<f64> = if cfg.input == 784 {
        x64
    } else {
        x.iter().map(|&v| v as f64).collect()
    };
    let mut gpu = GpuVae::from_params(ctx, cfg.clone(), b, seed, &init).unwrap();
    // Every tensor's gradient is compared below: each in a buffer of its own.
    gpu.keep_every_gradient(ctx).unwrap();
    // A warm-up of `kl_warmup` steps here (an epoch is one step): the KL weight changes each step.
    gpu.kl.warmup_steps = cfg.kl_warmup;
    let mut cpu = CpuVae::new(cfg.clone(), adam, &init);
    let ReferenceGraphs {
        train: graph,
        acc,
        forward,
        acc_forward: acc_fwd,
        ..
    } = reference_graphs(ctx, &gpu, b);
    let a = gpu.acts.rows(b, cfg.samples).unwrap();
    ctx.write_f32(&a.x, &x).unwrap();
    if cfg.is_conditional() {
        // Every class, in an order that is not the rows'.
        let labels: Vec<u32> = (0..b).map(|i| ((i * 7 + 3) % cfg.classes) as u32).collect();
        ctx.write_u32(&a.labels, &labels).unwrap();
        cpu.labels = labels;
    }
    let name = format!(
        "{} {} L={} B={b}",
        ctx.adapter.backend.to_str(),
        cfg.describe(),
        cfg.samples
    );
    let mut loose_total = 0;
    // Per parameter: was its gradient ever within tolerance of 0 (a possible sign flip)?
    let mut ever_loose = vec![false; layout.len];
    for step in 1..=steps {
        let eps = rng::normals(seed, step, cfg.samples * b * cfg.latent);
        ctx.write_f32(&a.eps, &eps.iter().map(|&e| e as f32).collect::<Vec<_>>())
            .unwrap();
        gpu.reset_losses(ctx, &acc_fwd).unwrap();
        gpu.run_step(ctx, &forward, 0).unwrap();
        let logits = read(ctx, &a.logits);
        let r_fwd = gpu.read_losses(ctx, &acc_fwd).unwrap();
        gpu.reset_losses(ctx, &acc).unwrap();
        cpu.kl_weight = gpu.schedule(graph.update_rules()).kl_weight(step as u64);
        gpu.run_step(ctx, &graph, 0).unwrap();
        let t = cpu.step(&x64, &eps);
        let r = gpu.read_losses(ctx, &acc).unwrap();
        // Fused (training) and standalone likelihood: the same sums in other orders.
        assert_close(
            &format!("{name} step {step} loss, fused vs standalone likelihood"),
            &[r.batch_total as f32],
            &[r_fwd.batch_total],
            |_| 1e-5 * r_fwd.batch_total.abs(),
        );
        // The loss is a sum of B·D terms in f32 (see the kernel test): 1e-5 relative (of the
        // terms' magnitude: a Gaussian's -log p sums terms of both signs).
        assert_close(
            &format!("{name} step {step} loss"),
            &[r.batch_total as f32],
            &[t.loss],
            |_| 1e-5 * (t.loss.abs() + t.kl.abs() + (b * cfg.input) as f64 / cfg.samples as f64),
        );
        assert_close(
            &format!("{name} step {step} KL"),
            &[r.batch_kl as f32],
            &[t.kl],
            |_| 1e-4 * t.kl.abs() + 1e-6,
        );
        assert_close(
            &format!("{name} step {step} objective"),
            &[r.batch_objective as f32],
            &[t.objective],
            |_| 1e-5 * (t.objective.abs() + t.kl.abs() + (b * cfg.input) as f64),
        );
        assert_close(
            &format!("{name} step {step} weighted KL (weight {})", cpu.kl_weight),
            &[r.batch_kl_weighted as f32],
            &[cpu.kl_weight * t.kl],
            |_| 1e-4 * cpu.kl_weight * t.kl.abs() + 1e-6,
        );
        if step == 1 {
            for (i, (h, want)) in a.enc.iter().zip(&t.enc).enumerate() {
                close(&format!("{name} h_enc{i}"), &read(ctx, h), want, 1e-4);
            }
            let (mu, logvar) = Activations::split_heads(&read(ctx, &a.heads), cfg.latent);
            close(&format!("{name} mu_e"), &mu, &t.mu, 1e-4);
            close(&format!("{name} logvar_e"), &logvar, &t.logvar, 1e-4);
            close(&format!("{name} z"), &read(ctx, &a.z), &t.z, 1e-4);
            for (i, (h, want)) in a.dec.iter().zip(&t.dec).enumerate() {
                close(&format!("{name} h_dec{i}"), &read(ctx, h), want, 1e-4);
            }
            close(&format!("{name} logits"), &logits, &t.logits, 1e-4);
            close(
                &format!("{name} dlogits"),
                &read(ctx, &a.dlogits),
                &t.dlogits,
                1e-4,
            );
            for (i, (h, want)) in a.d_dec.iter().zip(&t.d_dec).enumerate().rev() {
                close(&format!("{name} dh_dec{i}"), &read(ctx, h), want, 1e-3);
            }
            close(&format!("{name} dz"), &read(ctx, &a.dz), &t.dz, 1e-3);
            let (dmu, dlogvar) = Activations::split_heads(&read(ctx, &a.dheads), cfg.latent);
            close(&format!("{name} dmu_e"), &dmu, &t.dmu, 1e-3);
            close(&format!("{name} dlogvar_e"), &dlogvar, &t.dlogvar, 1e-3);
            for (i, (h, want)) in a.d_enc.iter().zip(&t.d_enc).enumerate().rev() {
                close(&format!("{name} dh_enc{i}"), &read(ctx, h), want, 1e-3);
            }
            let grads = read(ctx, &gpu.grads);
            for s in &layout.specs {
                close(
                    &format!("{name} d{}", s.name),
                    &s.read(&grads),
                    &s.read(&t.grads),
                    1e-3,
                );
            }
        }
        // Updated parameters. Adam's first steps move each parameter by about ±lr·sign(m̂): where a
        // gradient is so close to 0 that its sign differs between f32 and f64 (or it is near ε), the
        // parameter may differ by up to 2·lr per step. Elsewhere the update agrees to rounding.
        let params = read(ctx, &gpu.params);
        let gpu_grads = read(ctx, &gpu.grads);
        // Each tensor's arena ranges (a conditional layer's weight has two).
        for (s, range) in layout
            .specs
            .iter()
            .flat_map(|s| s.ranges().into_iter().map(move |r| (s, r)))
        {
            let g = &t.grads[range.clone()];
            let lr = adam.lr as f64;
            let loose = &mut ever_loose[range.clone()];
            for ((l, &v), &gg) in loose.iter_mut().zip(g).zip(&gpu_grads[range.clone()]) {
                // The update's direction is shared when both gradients have the same sign and are
                // well above Adam's ε (1e-8); exact zeros (pixels 0 across the batch) stay 0 on both.
                // Adam's update follows the ratios of a weight's gradients over the steps, so a
                // gradient whose f32 value is off by δg moves the weight by about lr·δg/|g| more:
                // where that relative error exceeds 1e-4 (small gradients that went through
                // several products and cancelling sums, as in deep models) the check is loose.
                let relative = (gg as f64 - v).abs() / v.abs().max(f64::MIN_POSITIVE);
                let shared = (v == 0.0 && gg == 0.0)
                    || (v * gg as f64 > 0.0 && v.abs() > 1e-6 && relative <= 1e-4);
                if !shared {
                    *l = true;
                    loose_total += 1;
                }
            }
            let want = &cpu.params[range.clone()];
            assert_close(
                &format!("{name} step {step} {} [{range:?}]", s.name),
                &params[range],
                want,
                |i| {
                    let base = 4.0 * U * want[i].abs() + 1e-6 * step as f64;
                    if loose[i] {
                        base + 2.0 * lr * step as f64
                    } else {
                        base
                    }
                },
            );
        }
    }
    eprintln!(
        "{name}: {loose_total} parameter-steps had gradients of differing sign, below 1e-6 or off by more than 1e-4 relative (loose check)"
    );
}

backend_test!(notebook_model_full_steps_match_cpu, |ctx| {
    run_case(ctx, VaeConfig::default(), 128, 42, 3);
});

// Residual blocks (`--res-blocks`): each side's graph has tensors with two readers, their
// gradients summed (the second contribution through the add kernel); a width-keeping block and
// blocks with a shortcut Linear, tanh with L = 3, and ReLU at MNIST's size with 3 Adam steps.
backend_test!(residual_blocks_match_cpu, |ctx| {
    run_case(
        ctx,
        VaeConfig {
            samples: 3,
            res_blocks: vec![37, 21],
            activation: vae_wgpu::ops::Act::Tanh,
            ..VaeConfig::mirrored(45, &[37], 5)
        },
        33,
        5,
        3,
    );
    run_case(
        ctx,
        VaeConfig {
            res_blocks: vec![64, 64],
            ..VaeConfig::mirrored(784, &[64], 8)
        },
        32,
        6,
        3,
    );
});

// The tensor gradients share buffers by default (`Body::gradient_slots`): the same step with
// shared and with separate buffers gives the same gradients and weights bit for bit, for a deep
// chain, residual blocks and conv residual blocks, and the shared ones take less memory.
backend_test!(shared_gradient_buffers_change_nothing, |ctx| {
    for cfg in [
        VaeConfig::mirrored(784, &[64, 48, 32], 8),
        VaeConfig {
            res_blocks: vec![64, 32],
            ..VaeConfig::mirrored(784, &[64], 8)
        },
        VaeConfig {
            res_blocks: vec![8, 6],
            ..VaeConfig::convolutional([1, 28, 28], &[4, 8], &[], 6)
        },
    ] {
        let b = 16;
        let init = ParamLayout::new(&cfg).init(3);
        let (x, _) = mnist_batch(b);
        let eps: Vec<f32> = (rng::normals(3, 1, b * cfg.latent).iter())
            .map(|&e| e as f32)
            .collect();
        let run = |keep: bool| {
            let mut gpu = GpuVae::from_params(ctx, cfg.clone(), b, 3, &init).unwrap();
            if keep {
                gpu.keep_every_gradient(ctx).unwrap();
            }
            let graphs = reference_graphs(ctx, &gpu, b);
            let a = gpu.acts.rows(b, 1).unwrap();
            ctx.write_f32(&a.x, &x).unwrap();
            ctx.write_f32(&a.eps, &eps).unwrap();
            gpu.reset_losses(ctx, &graphs.acc).unwrap();
            gpu.run_step(ctx, &graphs.train, 0).unwrap();
            let bytes = gpu.device_bytes();
            (read(ctx, &gpu.grads), read(ctx, &gpu.params), bytes)
        };
        let (shared, kept) = (run(false), run(true));
        let name = cfg.describe();
        assert!(
            shared
                .0
                .iter()
                .zip(&kept.0)
                .all(|(p, q)| p.to_bits() == q.to_bits()),
            "{name}: gradients differ"
        );
        assert!(
            shared
                .1
                .iter()
                .zip(&kept.1)
                .all(|(p, q)| p.to_bits() == q.to_bits()),
            "{name}: updated weights differ"
        );
        assert!(
            shared.2 < kept.2,
            "{name}: {} bytes shared, {} kept",
            shared.2,
            kept.2
        );
    }
});

// The likelihoods and the KL weight: a continuous Bernoulli (fused into the logits product), with
// β = 4; a learned-σ Gaussian (standalone kernel, log σ's gradient and Adam update) with a warm-up
// of 2 steps, so each step's KL weight differs (0, ½, 1); a fixed-σ Gaussian on a conv model.
backend_test!(likelihoods_and_kl_weights_match_cpu, |ctx| {
    use vae_wgpu::model::Likelihood;
    run_case(
        ctx,
        VaeConfig {
            samples: 2,
            likelihood: Likelihood::ContinuousBernoulli,
            beta: 4.0,
            ..VaeConfig::mirrored(45, &[37], 5)
        },
        33,
        7,
        3,
    );
    run_case(
        ctx,
        VaeConfig {
            likelihood: Likelihood::Gaussian { sigma: None },
            kl_warmup: 2.0,
            ..VaeConfig::mirrored(784, &[64], 6)
        },
        32,
        9,
        3,
    );
    run_case(
        ctx,
        VaeConfig {
            likelihood: Likelihood::Gaussian { sigma: Some(0.3) },
            ..VaeConfig::convolutional([1, 28, 28], &[4], &[], 4)
        },
        5,
        3,
        2,
    );
});

// Training on the IWAE bound (k = 5, Bernoulli through the standalone kernel with importance
// weights; k = 3 with a learned-σ Gaussian): the objective, the weighted dlogits, the
// reparameterisation's IWAE backward, every gradient and update.
backend_test!(iwae_objective_matches_cpu, |ctx| {
    use vae_wgpu::model::{Likelihood, Objective};
    run_case(
        ctx,
        VaeConfig {
            samples: 5,
            objective: Objective::Iwae,
            ..VaeConfig::mirrored(45, &[37], 5)
        },
        33,
        7,
        3,
    );
    run_case(
        ctx,
        VaeConfig {
            samples: 3,
            objective: Objective::Iwae,
            likelihood: Likelihood::Gaussian { sigma: None },
            ..VaeConfig::mirrored(784, &[64], 6)
        },
        16,
        9,
        2,
    );
});

// A class-conditional model: the label columns of the first encoder and first decoder layers
// (forward and their gradients, rows of every class), with L = 3 samples (decoder rows read
// their image's label) and tanh; at MNIST's size with 10 classes and two layers a side; and
// trained on the IWAE bound.
backend_test!(conditional_model_matches_cpu, |ctx| {
    run_case(
        ctx,
        VaeConfig {
            samples: 3,
            classes: 4,
            activation: vae_wgpu::ops::Act::Tanh,
            ..VaeConfig::mirrored(45, &[37], 5)
        },
        33,
        7,
        3,
    );
    run_case(
        ctx,
        VaeConfig {
            classes: 10,
            ..VaeConfig::mirrored(784, &[64, 32], 6)
        },
        32,
        9,
        2,
    );
    // On the IWAE bound (k = 3): the importance weights of rows decoded with their labels.
    run_case(
        ctx,
        VaeConfig {
            samples: 3,
            classes: 3,
            objective: vae_wgpu::model::Objective::Iwae,
            ..VaeConfig::mirrored(45, &[37], 5)
        },
        17,
        5,
        2,
    );
});

backend_test!(odd_sizes_and_several_samples_match_cpu, |ctx| {
    run_case(
        ctx,
        VaeConfig {
            samples: 3,
            ..VaeConfig::mirrored(45, &[37], 5)
        },
        33,
        7,
        3,
    );
});

// Three hidden layers of ragged widths with tanh, several samples: every layer's activation and
// gradient, every fused tanh backward.
backend_test!(deep_tanh_model_full_steps_match_cpu, |ctx| {
    run_case(
        ctx,
        VaeConfig {
            samples: 2,
            activation: vae_wgpu::ops::Act::Tanh,
            ..VaeConfig::mirrored(45, &[37, 29, 19], 5)
        },
        33,
        11,
        3,
    );
});

// A two-hidden-layer ReLU model at MNIST's size, as `--hidden 400,200 --latent 20` trains it.
backend_test!(mnist_400_200_relu_full_steps_match_cpu, |ctx| {
    run_case(ctx, VaeConfig::mirrored(784, &[400, 200], 20), 64, 5, 2);
});

// A decoder that does not mirror the encoder.
backend_test!(asymmetric_decoder_matches_cpu, |ctx| {
    run_case(
        ctx,
        VaeConfig {
            decoder_hidden: vec![23, 41],
            activation: vae_wgpu::ops::Act::Tanh,
            ..VaeConfig::mirrored(45, &[37], 6)
        },
        20,
        3,
        2,
    );
});

// The `--conv` model at MNIST's size (two Conv2d layers 28 -> 14 -> 7, the heads on their
// features, a Linear back to them, two ConvTranspose2d layers to the logits), fewer channels than
// `--conv 32,64` so the f64 reference stays quick: every conv activation and gradient, the
// standalone BCE kernel a conv output layer trains with.
backend_test!(conv_model_full_steps_match_cpu, |ctx| {
    run_case(
        ctx,
        VaeConfig::convolutional([1, 28, 28], &[4, 8], &[], 6),
        9,
        5,
        2,
    );
});

// Ragged: an RGB 12x12 image, one conv layer, a dense layer of its own, tanh, L = 2.
backend_test!(conv_rgb_tanh_model_full_steps_match_cpu, |ctx| {
    run_case(
        ctx,
        VaeConfig {
            samples: 2,
            activation: vae_wgpu::ops::Act::Tanh,
            ..VaeConfig::convolutional([3, 12, 12], &[5], &[17], 4)
        },
        7,
        9,
        2,
    );
});
