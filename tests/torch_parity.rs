//! Parity with PyTorch itself: `scripts/torch_reference.py` ran the notebook's model in PyTorch
//! (f32, CPU) and dumped initial weights, a 16-image batch, the noise, every intermediate, the loss
//! parts, every gradient and the weights after 3 Adam steps into tests/fixtures/. Here the GPU
//! engine and the CPU reference are checked against it tensor by tensor, as llm.c's test does.
//!
//! Tolerances, relative to the largest magnitude of each tensor: PyTorch computes in f32 too, so
//! the GPU/PyTorch difference is up to twice the GPU/f64 one of tests/model_parity.rs: 2e-4 for
//! activations, 2e-3 for gradients. PyTorch's BCE goes through σ(l) and log (clamped at -100) where
//! ours uses the logits form; for |logits| < 17, as here, both agree to f32 rounding.

#[macro_use]
mod common;

use std::path::Path;

use common::{ReferenceGraphs, U, assert_close, reference_graphs, run_likelihood};
use safetensors::SafeTensors;
use vae_wgpu::cpu::model::CpuVae;
use vae_wgpu::gpu::GpuContext;
use vae_wgpu::model::gpu::Activations;
use vae_wgpu::model::{Checkpoint, GpuVae, VaeConfig};
use vae_wgpu::optim::OptimizerConfig;

struct Fixture {
    bytes: Vec<u8>,
}

impl Fixture {
    fn load(name: &str) -> Self {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        Fixture {
            bytes: std::fs::read(&p).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (regenerate with scripts/torch_reference.py)",
                    p.display()
                )
            }),
        }
    }

    fn get(&self, name: &str) -> Vec<f32> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("fixture lacks '{name}'"));
        t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    fn get64(&self, name: &str) -> Vec<f64> {
        self.get(name).iter().map(|&v| v as f64).collect()
    }

    fn has(&self, name: &str) -> bool {
        SafeTensors::deserialize(&self.bytes)
            .unwrap()
            .tensor(name)
            .is_ok()
    }

    /// Hidden layer `i`'s output: `h_enc.{i}` (deep fixtures), or `h_enc` (the notebook's).
    fn layer(&self, stem: &str, i: usize) -> Vec<f64> {
        let name = format!("{stem}.{i}");
        self.get64(if self.has(&name) { &name } else { stem })
    }
}

/// A tensor three ways: its name, the GPU's values, the CPU twin's, PyTorch's.
type Compared<'a> = (String, Vec<f32>, &'a Vec<f64>, Vec<f64>);

/// Each hidden layer's output three ways, `stem0`, `stem1`, ….
fn layers<'a>(
    ctx: &GpuContext,
    fx: &Fixture,
    stem: &str,
    gpu: &[vae_wgpu::gpu::GpuTensor],
    cpu: &'a [Vec<f64>],
) -> Vec<Compared<'a>> {
    (0..gpu.len())
        .map(|i| {
            let got = ctx.read_f32(&gpu[i]).unwrap();
            (format!("{stem}{i}"), got, &cpu[i], fx.layer(stem, i))
        })
        .collect()
}

fn close(name: &str, got: &[f32], want: &[f64], rel: f64) {
    let scale = want.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    assert_close(name, got, want, |_| rel * scale + 1e-30);
}

fn check_against_torch(ctx: &GpuContext, fx: &Fixture, cfg: VaeConfig) {
    let path = Path::new("fixture");
    // The fixture holds the initial state_dict under PyTorch's names: load it as a checkpoint.
    let ckpt = Checkpoint::from_bytes(&fx.bytes, path).unwrap();
    assert_eq!(
        ckpt.cfg, cfg,
        "architecture read from PyTorch's names and metadata"
    );
    let adam = OptimizerConfig::default();
    let b = 16;
    let x = fx.get("x");
    let mut gpu = GpuVae::from_params(ctx, cfg.clone(), b, 0, &ckpt.params).unwrap();
    let mut cpu = CpuVae::new(cfg.clone(), adam, &ckpt.params);
    let ReferenceGraphs {
        train: graph,
        acc,
        forward,
        ..
    } = reference_graphs(ctx, &gpu, b);
    let a = gpu.acts.rows(b, 1).unwrap();
    ctx.write_f32(&a.x, &x).unwrap();
    if cfg.is_conditional() {
        // PyTorch concatenated their one-hot codes; the engine reads them as label columns.
        let labels: Vec<u32> = fx.get("labels").iter().map(|&l| l as u32).collect();
        ctx.write_u32(&a.labels, &labels).unwrap();
        cpu.labels = labels;
    }
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let backend = ctx.adapter.backend.to_str();
    let losses = fx.get64("losses");
    for step in 1..=3 {
        let eps = fx.get(&format!("eps.{step}"));
        ctx.write_f32(&a.eps, &eps).unwrap();
        gpu.run_step(ctx, &forward, 0).unwrap();
        let logits = ctx.read_f32(&a.logits).unwrap();
        gpu.reset_losses(ctx, &acc).unwrap();
        gpu.run_step(ctx, &graph, 0).unwrap();
        let t = cpu.step(&x64, &eps.iter().map(|&v| v as f64).collect::<Vec<_>>());
        let r = gpu.read_losses(ctx, &acc).unwrap();
        let want = losses[step - 1];
        assert_close(
            &format!("{backend} torch loss step {step} (gpu)"),
            &[r.batch_total as f32],
            &[want],
            |_| 1e-5 * want,
        );
        assert_close(
            &format!("{backend} torch loss step {step} (cpu)"),
            &[t.loss as f32],
            &[want],
            |_| 1e-5 * want,
        );
        if step > 1 {
            continue;
        }
        assert_close(
            "torch bce",
            &[r.batch_recon as f32],
            &fx.get64("bce"),
            |_| 1e-5 * r.batch_recon.abs(),
        );
        assert_close("torch kl", &[r.batch_kl as f32], &fx.get64("kl"), |_| {
            1e-4 * r.batch_kl.abs()
        });
        let (mu, logvar) =
            Activations::split_heads(&ctx.read_f32(&a.heads).unwrap(), gpu.cfg.latent);
        // (name, GPU, CPU twin, PyTorch)
        let mut tensors = layers(ctx, fx, "h_enc", &a.enc, &t.enc);
        tensors.push(("mu_e".into(), mu, &t.mu, fx.get64("mu_e")));
        tensors.push(("logvar_e".into(), logvar, &t.logvar, fx.get64("logvar_e")));
        tensors.push(("z".into(), ctx.read_f32(&a.z).unwrap(), &t.z, fx.get64("z")));
        tensors.extend(layers(ctx, fx, "h_dec", &a.dec, &t.dec));
        tensors.push(("logits".into(), logits, &t.logits, fx.get64("logits")));
        for (name, got, cpu_v, want) in tensors {
            close(
                &format!("{backend} {name} (gpu vs torch)"),
                &got,
                &want,
                2e-4,
            );
            close(
                &format!("{name} (cpu vs torch)"),
                &cpu_v.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                &want,
                2e-4,
            );
        }
        close(
            &format!("{backend} dlogits (gpu vs torch)"),
            &ctx.read_f32(&a.dlogits).unwrap(),
            &fx.get64("grad.logits"),
            2e-3,
        );
        let grads = ctx.read_f32(&gpu.grads).unwrap();
        for s in &gpu.layout.specs {
            let want = fx.get64(&format!("grad.{}", s.name));
            close(
                &format!("{backend} d{} (gpu vs torch)", s.name),
                &s.read(&grads),
                &want,
                2e-3,
            );
            let c: Vec<f32> = s.read(&t.grads).iter().map(|&v| v as f32).collect();
            close(&format!("d{} (cpu vs torch)", s.name), &c, &want, 2e-3);
        }
    }
    // Weights after 3 Adam steps. Where PyTorch's step-1 gradient is robustly non-zero (and agrees
    // in sign with ours) the first moment's sign is settled and the update is continuous in the
    // gradients: 3 steps × lr × (gradient rel. error 2e-3) + rounding. Elsewhere a sign can differ
    // and the weight by up to 2·lr per step.
    let params = ctx.read_f32(&gpu.params).unwrap();
    let lr = adam.lr as f64;
    let mut loose = 0;
    for s in &gpu.layout.specs {
        let want = fx.get64(&format!("after3.{}", s.name));
        let g1 = fx.get64(&format!("grad.{}", s.name));
        let gmax = g1.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        // Exact zeros (pixels that are 0 in all 16 images) must stay exactly in place on both sides.
        let robust: Vec<bool> = g1
            .iter()
            .map(|g| *g == 0.0 || (g.abs() > 1e-2 * gmax && g.abs() > 1e-6))
            .collect();
        loose += robust.iter().filter(|r| !**r).count();
        assert_close(
            &format!("{backend} after3.{} (gpu vs torch)", s.name),
            &s.read(&params),
            &want,
            |i| {
                let base = 3.0 * lr * 2e-3 + 8.0 * U * want[i].abs();
                if robust[i] { base } else { base + 6.0 * lr }
            },
        );
    }
    eprintln!(
        "{backend}: {loose} weights with a small non-zero step-1 gradient were checked within 6·lr"
    );
}

backend_test!(engine_and_cpu_reference_match_pytorch, |ctx| {
    let fx = Fixture::load("torch_reference.safetensors");
    check_against_torch(ctx, &fx, VaeConfig::default());
});

// A class-conditional model: PyTorch concatenates one-hot labels to the inputs of `encoder.0`
// ([32, 784 + 10]) and `decoder.0` ([16, 6 + 10]); the engine reads the label columns per row
// (`scripts/torch_reference.py --hidden 32,16 --latent 6 --classes 10`, MNIST's labels).
backend_test!(conditional_model_matches_pytorch, |ctx| {
    let fx = Fixture::load("torch_reference_conditional.safetensors");
    check_against_torch(ctx, &fx, conditional_cfg());
});

// Residual blocks (`scripts/torch_reference.py --hidden 32 --latent 6 --res-blocks 32,16`):
// `enc_blocks.0` keeps its width (its input is read twice: by fc1 and by the sum), every other
// block has a shortcut Linear (its input read by fc1 and the shortcut), so each side's graph has
// tensors with two readers whose gradients are summed. Every tensor of both graphs, every
// gradient and 3 Adam steps against PyTorch's autograd.
backend_test!(residual_model_matches_pytorch, |ctx| {
    let fx = Fixture::load("torch_reference_residual.safetensors");
    let cfg = VaeConfig {
        res_blocks: vec![32, 16],
        ..VaeConfig::mirrored(784, &[32], 6)
    };
    let layout = vae_wgpu::model::ParamLayout::new(&cfg);
    assert!(layout.enc_body.has_fan_out() && layout.dec_body.has_fan_out());
    assert_eq!(
        (layout.enc_body.widths.len(), layout.dec_body.widths.len()),
        (9, 10),
        "tensors of each side's graph (the input, each layer's output, each sum)"
    );
    check_against_torch(ctx, &fx, cfg);
});

// A two-hidden-layer tanh model, PyTorch's `encoder`/`decoder` Sequentials (names and metadata as
// `scripts/torch_reference.py --hidden 32,16 --latent 6 --activation tanh` writes them).
backend_test!(deep_tanh_model_matches_pytorch, |ctx| {
    let fx = Fixture::load("torch_reference_deep_tanh.safetensors");
    let cfg = VaeConfig {
        activation: vae_wgpu::ops::Act::Tanh,
        ..VaeConfig::mirrored(784, &[32, 16], 6)
    };
    check_against_torch(ctx, &fx, cfg);
});

// The `--conv 4,8 --latent 6` model (`scripts/torch_reference.py --conv 4,8 --latent 6`): PyTorch's
// Conv2d and ConvTranspose2d outputs, autograd gradients and Adam steps, tensor by tensor.
backend_test!(conv_model_matches_pytorch, |ctx| {
    let fx = Fixture::load("torch_reference_conv.safetensors");
    check_against_torch(ctx, &fx, conv_cfg());
});

// Conv residual blocks (`scripts/torch_reference.py --conv 4,8 --latent 6 --res-blocks 8,6`):
// after the convolutions, `enc_blocks.0` (8 -> 8 channels: its input read by conv1 and by the sum)
// and `enc_blocks.1` (8 -> 6, through a 1x1 conv_shortcut); the decoder's after its Unflatten,
// 8 -> 6 -> 8, then the transposed convolutions. Every tensor, gradient and 3 Adam steps against
// PyTorch's autograd.
backend_test!(conv_residual_model_matches_pytorch, |ctx| {
    let fx = Fixture::load("torch_reference_conv_residual.safetensors");
    let cfg = conv_residual_cfg();
    let layout = vae_wgpu::model::ParamLayout::new(&cfg);
    assert!(layout.enc_body.has_fan_out() && layout.dec_body.has_fan_out());
    assert_eq!(
        cfg.num_params(),
        layout
            .specs
            .iter()
            .map(|s| s.shape.iter().product::<usize>() as u64)
            .sum::<u64>(),
        "num_params counts the declared tensors"
    );
    check_against_torch(ctx, &fx, cfg);
});

fn conv_cfg() -> VaeConfig {
    VaeConfig::convolutional([1, 28, 28], &[4, 8], &[], 6)
}

fn conv_residual_cfg() -> VaeConfig {
    VaeConfig {
        res_blocks: vec![8, 6],
        ..conv_cfg()
    }
}

fn conditional_cfg() -> VaeConfig {
    VaeConfig {
        classes: 10,
        ..VaeConfig::mirrored(784, &[32, 16], 6)
    }
}

// A bare state_dict (no metadata, as `torch.save`-then-convert gives) of a conv model and of a
// conditional one: the architecture (the classes: the decoder's first layer takes K + C inputs)
// is read from the tensors' names and shapes alone.
#[test]
fn a_state_dict_without_metadata_reads_its_architecture_from_the_tensors() {
    for (file, cfg) in [
        ("torch_reference_conv.safetensors", conv_cfg()),
        ("torch_reference_conditional.safetensors", conditional_cfg()),
        (
            "torch_reference_conv_residual.safetensors",
            conv_residual_cfg(),
        ),
    ] {
        let fx = Fixture::load(file);
        let st = SafeTensors::deserialize(&fx.bytes).unwrap();
        let layout = vae_wgpu::model::ParamLayout::new(&cfg);
        let tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> = layout
            .specs
            .iter()
            .map(|s| (s.name.clone(), st.tensor(&s.name).unwrap()))
            .collect();
        let bare = safetensors::tensor::serialize(tensors, None).unwrap();
        let c = Checkpoint::from_bytes(&bare, Path::new("bare")).unwrap();
        assert_eq!(c.cfg, cfg, "{file}");
        assert_eq!(
            c.params,
            Checkpoint::from_bytes(&fx.bytes, Path::new("fx"))
                .unwrap()
                .params
        );
    }
}

// Our checkpoints load into PyTorch with `load_state_dict(strict=True)` exactly when they hold the
// same names and shapes as PyTorch's `state_dict()`: the fixtures are PyTorch's, so compare.
#[test]
fn checkpoint_names_and_shapes_are_pytorchs_state_dict() {
    for (file, cfg) in [
        ("torch_reference.safetensors", VaeConfig::default()),
        (
            "torch_reference_deep_tanh.safetensors",
            VaeConfig {
                activation: vae_wgpu::ops::Act::Tanh,
                ..VaeConfig::mirrored(784, &[32, 16], 6)
            },
        ),
        ("torch_reference_conv.safetensors", conv_cfg()),
        ("torch_reference_conditional.safetensors", conditional_cfg()),
        (
            "torch_reference_conv_residual.safetensors",
            conv_residual_cfg(),
        ),
    ] {
        let fx = Fixture::load(file);
        let st = SafeTensors::deserialize(&fx.bytes).unwrap();
        let (_, header) = SafeTensors::read_metadata(&fx.bytes).unwrap();
        let keys: Vec<String> = header.metadata().as_ref().unwrap()["state_dict_keys"]
            .split(',')
            .map(str::to_string)
            .collect();
        let layout = vae_wgpu::model::ParamLayout::new(&cfg);
        let ours: Vec<String> = layout.specs.iter().map(|s| s.name.clone()).collect();
        assert_eq!(ours, keys, "{file}: state_dict keys, in PyTorch's order");
        for s in &layout.specs {
            assert_eq!(
                st.tensor(&s.name).unwrap().shape(),
                s.shape.as_slice(),
                "{}",
                s.name
            );
        }
        // And a checkpoint written here reads back with the same architecture.
        let ckpt = Checkpoint::from_bytes(&fx.bytes, Path::new(file)).unwrap();
        let p = std::env::temp_dir().join(format!(
            "vae-wgpu-torch-names-{}-{file}",
            std::process::id()
        ));
        ckpt.save_state_dict(&p).unwrap();
        let back = Checkpoint::load(&p).unwrap();
        // Every tensor written in PyTorch's layout: byte for byte the fixture's.
        let written = std::fs::read(&p).unwrap();
        let written = SafeTensors::deserialize(&written).unwrap();
        for s in &layout.specs {
            assert_eq!(
                written.tensor(&s.name).unwrap().data(),
                st.tensor(&s.name).unwrap().data(),
                "{file}: {} as written",
                s.name
            );
        }
        let _ = std::fs::remove_file(&p);
        assert_eq!(back.cfg, cfg);
        assert_eq!(back.params, ckpt.params);
    }
}

// Each likelihood against torch.distributions itself (scripts/torch_likelihoods.py, float64 on
// f32 inputs): the GPU's standalone kernel (-Σ log p through loss_reduce, dlogits, a learned
// scale's dlog s through sum_to, the mean) and the CPU twin. Logits up to ±12 and inside the continuous
// Bernoulli's Taylor region (|l| < 0.01), targets with exact 0s and 1s. Tolerances: the sum of 4096
// terms in f32 (1e-5 of Σ|terms|), per element a few ulps of exp and log.
backend_test!(likelihoods_match_torch_distributions, |ctx| {
    use vae_wgpu::cpu::ops;
    use vae_wgpu::kernels::{self, likelihood, reduce};
    use vae_wgpu::model::Likelihood;
    let fx = Fixture::load("torch_likelihoods.safetensors");
    let (logits, x) = (fx.get("logits"), fx.get("x"));
    let log_sigma = fx.get("log_sigma")[0];
    let n = logits.len();
    let gl = ctx.upload_f32("logits", &[1, n], &logits).unwrap();
    let gx = ctx.upload_f32("x", &[1, n], &x).unwrap();
    for lik in Likelihood::KINDS {
        // The fixture's key: the flag's name, `-identity` where the logit is the mean itself.
        let name = match lik.identity_mean() {
            true => format!("{}-identity", lik.name()),
            false => lik.name().to_string(),
        };
        let (want_nll, want_d, want_mean) = (
            fx.get64(&format!("{name}.nll"))[0],
            fx.get64(&format!("{name}.dlogits")),
            fx.get64(&format!("{name}.mean")),
        );
        let terms: f64 = (0..n)
            .map(|i| {
                ops::recon_elem(lik, logits[i] as f64, x[i] as f64, log_sigma as f64)
                    .0
                    .abs()
            })
            .sum();
        // The CPU twin in f64.
        let l64: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let (cpu_nll, cpu_d, cpu_ds) =
            ops::recon_forward_backward(lik, &l64, &x64, log_sigma as f64);
        assert_close(
            &format!("cpu {name} nll"),
            &[cpu_nll as f32],
            &[want_nll],
            |_| 1e-6 * terms,
        );
        let cpu_d32: Vec<f32> = cpu_d.iter().map(|&v| v as f32).collect();
        assert_close(&format!("cpu {name} dlogits"), &cpu_d32, &want_d, |_| 1e-6);
        // The GPU kernel.
        let learned = lik.learns_scale();
        let got = run_likelihood(ctx, lik, &gl, &gx, log_sigma);
        let acc_v = &got.acc;
        assert_close(
            &format!("{name} -Σ log p"),
            &acc_v[reduce::LossSlots::BATCH_RECON..][..1],
            &[want_nll],
            |_| 1e-5 * terms,
        );
        let scale = want_d.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        assert_close(&format!("{name} dlogits"), &got.dlogits, &want_d, |_| {
            2e-5 * scale
        });
        if learned {
            let want = fx.get64(&format!("{name}.dlog_sigma"));
            assert_close(
                &format!("cpu {name} dlog_sigma"),
                &[cpu_ds as f32],
                &want,
                |_| 1e-6 * n as f64,
            );
            assert_close(
                &format!("{name} dlog_sigma"),
                &[got.dlog_sigma],
                &want,
                |_| 1e-5 * n as f64 * 8.0,
            );
        }
        let means = ctx.upload_f32("means", &[1, n], &logits).unwrap();
        let km = likelihood::likelihood_mean(ctx, lik, &means).unwrap();
        kernels::run(ctx, &[&km]).unwrap();
        assert_close(
            &format!("{name} mean"),
            &ctx.read_f32(&means).unwrap(),
            &want_mean,
            |_| 2e-6,
        );
    }
});

// The continuous Bernoulli is what PyTorch's float32 `ContinuousBernoulli` computes
// (scripts/torch_likelihoods.py's `cb32.*`: logits from −40 to 40 on exact 0 and 1 targets): its
// clamp of λ = σ(l) to [ε, 1 − ε] holds the normaliser at |l| > logit(1 − ε) ≈ 15.94, so −log p
// on a 0/1 pixel stops falling as the logit runs off (the exact density's grows without bound).
// Per element, the CPU twin and the GPU kernel against PyTorch's f32 numbers. Tolerance: PyTorch
// rounds λ = σ(l) to f32 first, so for l > 0 its 1 − λ carries up to 2⁻²³ absolute error (the
// rounding and an ulp of σ's own), which its log-normaliser turns into up to 2⁻²³·(1 + eˡ)/l
// (and its gradient likewise, up to the 1/l it keeps where σ(l) rounds to 1 − ε exactly,
// 15.94 < l < 16.64); elsewhere a few ulps.
backend_test!(continuous_bernoulli_is_pytorchs_float32_definition, |ctx| {
    use vae_wgpu::cpu::ops;
    use vae_wgpu::kernels::{self, likelihood};
    use vae_wgpu::model::Likelihood;
    let fx = Fixture::load("torch_likelihoods.safetensors");
    let (logits, x) = (fx.get("cb32.logits"), fx.get("cb32.x"));
    let (want_nll, want_d, want_mean) = (
        fx.get64("cb32.nll"),
        fx.get64("cb32.dlogits"),
        fx.get64("cb32.mean"),
    );
    let n = logits.len();
    // PyTorch's f32 rounding, per element: of λ near 1 (l > 0, see above), and near l = 0 outside
    // its Taylor region (|l| > 0.004) the cancellation of log(1 − λ) − log λ ≈ −l (each log within
    // 2⁻²³ absolute), which its log-normaliser turns into 2⁻²²/|l| and its gradient into 2⁻²²/l².
    let noise = |i: usize, power: i32| {
        let l = logits[i] as f64;
        let near_one = if l > 0.0 && l < 16.7 {
            2f64.powi(-23) * (1.0 + l.exp()) / l
        } else {
            0.0
        };
        let near_zero = if l.abs() < 1.0 {
            2f64.powi(-22) / l.abs().max(0.004).powi(power)
        } else {
            0.0
        };
        (near_one + near_zero).min(0.07) + 1e-5
    };
    let mut cpu_nll = Vec::with_capacity(n);
    let mut cpu_d = Vec::with_capacity(n);
    for i in 0..n {
        let (v, d) = ops::cb_nll(logits[i] as f64, x[i] as f64);
        cpu_nll.push(v as f32);
        cpu_d.push(d as f32);
    }
    assert_close("cpu cb32 -log p", &cpu_nll, &want_nll, |i| {
        noise(i, 1) + 1e-6 * want_nll[i].abs()
    });
    assert_close("cpu cb32 dlogits", &cpu_d, &want_d, |i| noise(i, 2));
    let cpu_mean: Vec<f32> = (logits.iter())
        .map(|&l| ops::cb_mean_clamped(l as f64) as f32)
        .collect();
    assert_close("cpu cb32 mean", &cpu_mean, &want_mean, |i| noise(i, 2));
    // The GPU: the standalone kernel's gradient per element, and the mean kernel.
    let gl = ctx.upload_f32("logits", &[1, n], &logits).unwrap();
    let gx = ctx.upload_f32("x", &[1, n], &x).unwrap();
    let got = run_likelihood(ctx, Likelihood::ContinuousBernoulli, &gl, &gx, 0.0);
    assert_close("cb32 dlogits", &got.dlogits, &want_d, |i| noise(i, 2));
    let means = ctx.upload_f32("means", &[1, n], &logits).unwrap();
    let km = likelihood::likelihood_mean(ctx, Likelihood::ContinuousBernoulli, &means).unwrap();
    kernels::run(ctx, &[&km]).unwrap();
    assert_close(
        "cb32 mean",
        &ctx.read_f32(&means).unwrap(),
        &want_mean,
        |i| noise(i, 2),
    );
    // On a 0/1 pixel −log p is bounded below: past the clamp it is BCE − log C(1 − ε) ≥ −2.77.
    let floor = want_nll.iter().cloned().fold(f64::INFINITY, f64::min);
    assert!(floor > -2.77, "PyTorch's −log p reaches {floor}");
});

// The IWAE objective (k = 5) against PyTorch's autograd (scripts/torch_iwae.py): the notebook's
// module at 784-32-6 with a Bernoulli and with a learned-σ Gaussian decoder, 16 MNIST images, the
// fixture's noise. The bound summed over the batch and every parameter's gradient (log σ's too),
// on the GPU and on the CPU reference. Tolerances as the ELBO's: 1e-5 of the sum, 2e-3 of each
// gradient tensor's largest magnitude.
backend_test!(iwae_objective_matches_pytorch, |ctx| {
    use vae_wgpu::model::{Objective, ParamLayout};
    for file in ["torch_iwae.safetensors", "torch_iwae_gaussian.safetensors"] {
        let fx = Fixture::load(file);
        let ckpt = Checkpoint::from_bytes(&fx.bytes, Path::new(file)).unwrap();
        let cfg = ckpt.cfg.clone();
        assert_eq!((cfg.objective, cfg.samples), (Objective::Iwae, 5), "{file}");
        let b = 16;
        let (x, eps) = (fx.get("x"), fx.get("eps"));
        let gpu = GpuVae::from_params(ctx, cfg.clone(), b, 0, &ckpt.params).unwrap();
        let ReferenceGraphs {
            train: graph, acc, ..
        } = reference_graphs(ctx, &gpu, b);
        let a = gpu.acts.rows(b, cfg.samples).unwrap();
        ctx.write_f32(&a.x, &x).unwrap();
        ctx.write_f32(&a.eps, &eps).unwrap();
        let mut gpu = gpu;
        gpu.reset_losses(ctx, &acc).unwrap();
        gpu.run_step(ctx, &graph, 0).unwrap();
        let r = gpu.read_losses(ctx, &acc).unwrap();
        let want = fx.get64("objective");
        assert_close(
            &format!("{file} objective"),
            &[r.batch_objective as f32],
            &want,
            |_| 1e-5 * want[0].abs(),
        );
        let cpu = CpuVae::new(cfg.clone(), Default::default(), &ckpt.params);
        let to64 = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        let t = cpu.forward_backward(&to64(&x), &to64(&eps));
        assert_close(
            &format!("cpu {file} objective"),
            &[t.objective as f32],
            &want,
            |_| 1e-5 * want[0].abs(),
        );
        let grads = ctx.read_f32(&gpu.grads).unwrap();
        for s in &ParamLayout::new(&cfg).specs {
            let want = fx.get64(&format!("grad.{}", s.name));
            close(
                &format!("{file} d{}", s.name),
                &grads[s.range()],
                &want,
                2e-3,
            );
            let cpu_g: Vec<f32> = t.grads[s.range()].iter().map(|&g| g as f32).collect();
            close(&format!("cpu {file} d{}", s.name), &cpu_g, &want, 2e-3);
        }
    }
});

// Every optimizer, schedule and clipping against torch.optim itself
// (`scripts/torch_optimizers.py`): from one initial state, 3 steps of each case on the GPU and the
// CPU twin; the losses, the weights and every state tensor after them. Tolerances as the Adam
// check above: gradients carry 2e-3 of their tensor's largest magnitude; Adam's update is
// bounded by lr a step (6·lr where a tiny step-1 gradient can flip the first moment's sign),
// SGD's is lr·|buf| with |buf| ≤ Σ μ^t·|g_t| (clipping scales g by its coefficient, whose own
// error is of the norm's, ~2e-3).
backend_test!(optimizers_match_pytorch, |ctx| {
    use vae_wgpu::optim::{LrSchedule, LrShape, OptimizerConfig, OptimizerKind};
    let fx = Fixture::load("torch_optimizers.safetensors");
    let path = Path::new("torch_optimizers.safetensors");
    let ckpt = Checkpoint::from_bytes(&fx.bytes, path).unwrap();
    let (_, header) = SafeTensors::read_metadata(&fx.bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    let cases: Vec<serde_json::Value> = serde_json::from_str(&meta["cases"]).unwrap();
    assert_eq!(cases.len(), 6, "the fixture's cases");
    let (b, cfg) = (16, ckpt.cfg.clone());
    let x = fx.get("x");
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let backend = ctx.adapter.backend.to_str();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let num = |k: &str| case.get(k).and_then(|v| v.as_f64());
        let kind = OptimizerKind::parse(case["optimizer"].as_str().unwrap()).unwrap();
        let d = OptimizerConfig::of(kind);
        let opt = OptimizerConfig {
            lr: num("lr").unwrap() as f32,
            weight_decay: num("weight_decay").map_or(d.weight_decay, |v| v as f32),
            momentum: num("momentum").unwrap_or(0.0) as f32,
            nesterov: case
                .get("nesterov")
                .is_some_and(|v| v.as_bool() == Some(true)),
            schedule: LrSchedule {
                shape: match case.get("lr_schedule").and_then(|v| v.as_str()) {
                    Some(s) => LrShape::parse(s).unwrap(),
                    None => LrShape::Constant,
                },
                warmup_steps: num("warmup_steps").unwrap_or(0.0) as u64,
                total_steps: num("total_steps").unwrap_or(0.0) as u64,
            },
            clip_grad_norm: num("clip_grad_norm").map(|v| v as f32),
            ..d
        };
        let mut gpu = GpuVae::from_params(ctx, cfg.clone(), b, 0, &ckpt.params).unwrap();
        let mut cpu = CpuVae::new(cfg.clone(), opt, &ckpt.params);
        let ReferenceGraphs {
            train: graph,
            acc,
            optimizer,
            ..
        } = common::reference_graphs_with(ctx, &gpu, b, opt);
        let a = gpu.acts.rows(b, 1).unwrap();
        ctx.write_f32(&a.x, &x).unwrap();
        let losses = fx.get64(&format!("{name}.losses"));
        // The step-1 gradient, and each tensor's largest, for the bounds.
        let (mut gmax, mut g1) = (Vec::new(), Vec::new());
        for step in 1..=3 {
            let eps = fx.get(&format!("eps.{step}"));
            ctx.write_f32(&a.eps, &eps).unwrap();
            gpu.reset_losses(ctx, &acc).unwrap();
            gpu.run_step(ctx, &graph, 0).unwrap();
            let t = cpu.step(&x64, &eps.iter().map(|&v| v as f64).collect::<Vec<_>>());
            let r = gpu.read_losses(ctx, &acc).unwrap();
            let want = losses[step - 1];
            let what = format!("{backend} {name} loss step {step}");
            assert_close(&what, &[r.batch_total as f32], &[want], |_| 1e-5 * want);
            assert_close(&format!("{what} (cpu)"), &[t.loss as f32], &[want], |_| {
                1e-5 * want
            });
            if step == 1 {
                gmax = (gpu.layout.specs.iter())
                    .map(|s| s.read(&t.grads).iter().fold(0.0f64, |m, v| m.max(v.abs())))
                    .collect();
                g1 = t.grads.clone();
            }
        }
        let lr = opt.lr as f64;
        let mu = opt.momentum as f64;
        let params = ctx.read_f32(&gpu.params).unwrap();
        let state = optimizer.read_state(ctx).unwrap();
        assert_eq!(state.len(), opt.state_names().len());
        for (j, s) in gpu.layout.specs.iter().enumerate() {
            let want = fx.get64(&format!("{name}.after3.{}", s.name));
            // Where the step-1 gradient is robustly non-zero, the first moment's sign is settled.
            let robust: Vec<bool> = (s.read(&g1).iter())
                .map(|g| *g == 0.0 || (g.abs() > 1e-2 * gmax[j] && g.abs() > 1e-6))
                .collect();
            let tol = |i: usize| {
                let w = want[i];
                match kind {
                    OptimizerKind::Sgd => {
                        // |buf| after 3 steps ≤ (1 + μ + μ²)·G; Nesterov adds μ·buf.
                        let buf = (1.0 + mu + mu * mu) * (1.0 + mu) * gmax[j];
                        3.0 * lr * 2e-3 * buf + 8.0 * U * w.abs()
                    }
                    _ if robust[i] => 3.0 * lr * 2e-3 + 8.0 * U * w.abs(),
                    _ => 3.0 * lr * 2e-3 + 8.0 * U * w.abs() + 6.0 * lr,
                }
            };
            assert_close(
                &format!("{backend} {name} after3.{} (gpu vs torch)", s.name),
                &s.read(&params),
                &want,
                tol,
            );
            let c: Vec<f32> = s.read(&cpu.params).iter().map(|&v| v as f32).collect();
            assert_close(
                &format!("{name} after3.{} (cpu vs torch)", s.name),
                &c,
                &want,
                tol,
            );
            for (k, key) in opt.state_names().iter().enumerate() {
                let want = fx.get64(&format!("{name}.state.{key}.{}", s.name));
                let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let rel = if *key == "exp_avg_sq" { 8e-3 } else { 4e-3 };
                let what = format!("{backend} {name} {key}.{}", s.name);
                assert_close(
                    &format!("{what} (gpu vs torch)"),
                    &s.read(&state[k]),
                    &want,
                    |_| rel * scale + 1e-30,
                );
                let c: Vec<f32> = s.read(&cpu.state[k]).iter().map(|&v| v as f32).collect();
                assert_close(&format!("{what} (cpu vs torch)"), &c, &want, |_| {
                    rel * scale + 1e-30
                });
            }
        }
    }
});

// A learned-σ Gaussian trained step by step beside PyTorch fed the same initial weights, batches
// and noise (`examples/trajectory.rs` writes them; `scripts/torch_trajectory.py` trains PyTorch on
// them; the fixture holds PyTorch's float32 loss at each of 150 steps): the notebook's model,
// MNIST's training images in order, 128 a step, noise from `rng::normals(0, step, …)`. Through
// step 100 the two agree within 1e-5 relative (measured: ≤ 9e-7). After it they part as
// PyTorch's float32 and float64 runs part from each other (steps 119 and 128): σ falls fast, and
// the run amplifies rounding differences until seeds and rounding decide where it lands (PyTorch
// runs whose initial weights differ by 1e-7 relative end 500 steps between −289 and −318 nats per
// image; the engine's −296). So a learned σ's epochs differ from PyTorch's as two PyTorch seeds
// do, and this holds the part that is arithmetic.
backend_test!(learned_sigma_training_follows_pytorch_step_by_step, |ctx| {
    use vae_wgpu::data::{ImageSet, Split};
    use vae_wgpu::kernels::reparam_kl::EpsSource;
    use vae_wgpu::model::gpu::Input;
    use vae_wgpu::model::{GpuVae, Likelihood, ParamLayout};
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_trajectory_gaussian.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let torch: Vec<f64> = (doc["loss_per_image"].as_array().unwrap().iter())
        .map(|v| v.as_f64().unwrap())
        .collect();
    let cfg = VaeConfig {
        likelihood: Likelihood::Gaussian { sigma: None },
        ..VaeConfig::default()
    };
    let b = 128;
    let init = ParamLayout::new(&cfg).init(0);
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let train = ImageSet::load_idx(&data, Split::Train).unwrap();
    let mut gpu = GpuVae::from_params(ctx, cfg.clone(), b, 0, &init).unwrap();
    let acc = gpu.new_accumulator(ctx).unwrap();
    let adam = vae_wgpu::optim::Optimizer::new(ctx, Default::default(), gpu.layout.len).unwrap();
    let graph = gpu
        .plan_step(ctx, b, Input::Given, EpsSource::Buffer, Some(&adam), &acc)
        .unwrap();
    let a = gpu.acts.rows(b, 1).unwrap();
    let mut ours = Vec::new();
    for step in 0..100 {
        let x: Vec<f32> = (step * b..(step + 1) * b)
            .flat_map(|i| train.image_f32(i))
            .collect();
        let eps: Vec<f32> = (vae_wgpu::rng::normals(0, step as u32 + 1, b * cfg.latent).iter())
            .map(|&e| e as f32)
            .collect();
        ctx.write_f32(&a.x, &x).unwrap();
        ctx.write_f32(&a.eps, &eps).unwrap();
        gpu.reset_losses(ctx, &acc).unwrap();
        gpu.run_step(ctx, &graph, 0).unwrap();
        ours.push((gpu.read_losses(ctx, &acc).unwrap().batch_total / b as f64) as f32);
    }
    assert_close(
        "learned-σ loss per image, steps 1-100",
        &ours,
        &torch[..100],
        |i| 1e-5 * torch[i].abs(),
    );
});

// diffusers' own AutoencoderKL (`scripts/torch_autoencoder_kl.py`: blocks 8,16, one ResNet per
// down block, 4 groups, 2 latent channels, here without the mid blocks' attention; γ and β off 1 and 0; one logvar
// channel below diffusers' clamp at −30), built by the engine from the config diffusers wrote:
// every tensor name and shape is diffusers' (no missing, no unexpected key); the posterior's mean
// and logvar, z, the decoder's output, the loss parts and every parameter's gradient (the clamped
// logvar's 0 included) match diffusers' autograd, on the GPU and in the f64 CPU twin.
backend_test!(autoencoder_kl_matches_diffusers, |ctx| {
    check_autoencoder_kl(ctx, "torch_autoencoder_kl.safetensors", false);
});

// The same with the mid blocks' attention (diffusers' default: GroupNorm, to_q / to_k / to_v,
// softmax(qᵀk/√C) over the 4x4 positions, to_out.0, the residual), in both the encoder and the
// decoder.
backend_test!(autoencoder_kl_with_attention_matches_diffusers, |ctx| {
    check_autoencoder_kl(ctx, "torch_autoencoder_kl_attention.safetensors", true);
});

fn check_autoencoder_kl(ctx: &GpuContext, fixture: &str, attention: bool) {
    use vae_wgpu::model::autoencoder_kl::KlConfig;
    let fx = Fixture::load(fixture);
    let (_, header) = SafeTensors::read_metadata(&fx.bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    let json: serde_json::Value = serde_json::from_str(&meta["config"]).unwrap();
    let kl = KlConfig::from_json(&json, "the fixture's config").unwrap();
    assert_eq!(kl.mid_block_add_attention, attention);
    let blocks = vae_wgpu::model::autoencoder_kl::layers(&kl, [3, 8, 8]).blocks;
    let cfg = VaeConfig::autoencoder_kl(kl, [3, 8, 8]);
    cfg.validate().unwrap();
    let layout = vae_wgpu::model::ParamLayout::new(&cfg);
    // Names and shapes: exactly diffusers' state_dict (and the learned log σ).
    let st = SafeTensors::deserialize(&fx.bytes).unwrap();
    let mut theirs: Vec<(String, Vec<usize>)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| {
            !n.starts_with("grad.") && !n.starts_with("block.") && n.contains('.')
                || n == "log_sigma"
        })
        .map(|(n, t)| (n, t.shape().to_vec()))
        .collect();
    theirs.sort();
    let mut ours: Vec<(String, Vec<usize>)> = (layout.specs.iter())
        .map(|s| (s.name.clone(), s.shape.clone()))
        .collect();
    ours.sort();
    assert_eq!(ours, theirs, "the state_dict's names and shapes");
    let mut params = vec![0.0f32; layout.len];
    for s in &layout.specs {
        s.write(&mut params, &fx.get(&s.name));
    }
    let b = 2;
    let mut gpu = GpuVae::from_params(ctx, cfg.clone(), b, 0, &params).unwrap();
    gpu.keep_every_gradient(ctx).unwrap();
    let cpu = CpuVae::new(cfg.clone(), OptimizerConfig::default(), &params);
    let ReferenceGraphs {
        train,
        acc,
        forward,
        ..
    } = reference_graphs(ctx, &gpu, b);
    let a = gpu.acts.rows(b, 1).unwrap();
    let (x, eps) = (fx.get("x"), fx.get("eps"));
    ctx.write_f32(&a.x, &x).unwrap();
    ctx.write_f32(&a.eps, &eps).unwrap();
    // The forward's tensors first (the training step then updates the weights; its gradients are
    // of the weights before).
    gpu.run_step(ctx, &forward, 0).unwrap();
    let output = ctx.read_f32(&a.logits).unwrap();
    gpu.reset_losses(ctx, &acc).unwrap();
    gpu.run_step(ctx, &train, 0).unwrap();
    let r = gpu.read_losses(ctx, &acc).unwrap();
    let f64s = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<_>>();
    let t = cpu.forward_backward(&f64s(&x), &f64s(&eps));
    let backend = ctx.adapter.backend.to_str();
    for (name, gpu_v, cpu_v) in [
        ("loss", r.batch_total, t.loss),
        ("recon", r.batch_recon, t.recon),
        ("kl", r.batch_kl, t.kl),
    ] {
        let want = fx.get64(name);
        close(
            &format!("{backend} {name} (gpu)"),
            &[gpu_v as f32],
            &want,
            1e-5,
        );
        close(&format!("{name} (cpu)"), &[cpu_v as f32], &want, 1e-5);
    }
    let (mean, logvar) = Activations::split_heads(&ctx.read_f32(&a.heads).unwrap(), cfg.latent);
    assert!(logvar.iter().any(|&v| v < -30.0), "the clamp is exercised");
    let as32 = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<_>>();
    for (name, got, cpu_v) in [
        ("mean", mean, &t.mu),
        ("logvar", logvar, &t.logvar),
        ("z", ctx.read_f32(&a.z).unwrap(), &t.z),
        ("output", output, &t.logits),
    ] {
        let want = fx.get64(name);
        close(&format!("{backend} {name} (gpu)"), &got, &want, 2e-4);
        close(&format!("{name} (cpu)"), &as32(cpu_v), &want, 2e-4);
    }
    // Every block's output (diffusers' forward hooks), from the forward pass's tensors.
    assert_eq!(blocks.len(), 12, "{blocks:?}");
    for (name, decoder, id) in &blocks {
        let (gpu_t, cpu_t) = match decoder {
            false => (&a.enc[id - 1], &t.enc[id - 1]),
            true => (&a.dec[id - 1], &t.dec[id - 1]),
        };
        let want = fx.get64(&format!("block.{name}"));
        close(
            &format!("{backend} {name} (gpu)"),
            &ctx.read_f32(gpu_t).unwrap(),
            &want,
            2e-4,
        );
        close(&format!("{name} (cpu)"), &as32(cpu_t), &want, 2e-4);
    }
    let grads = ctx.read_f32(&gpu.grads).unwrap();
    // to_k's bias adds q_i·b to every score of row i: the softmax cancels it, so its gradient is
    // 0 in exact arithmetic and rounding noise (~1e-8) on each side: an absolute floor of 1e-5
    // (the loss is ~1000, its other gradients 1e-3 to 1e2).
    let close = |name: &str, got: &[f32], want: &[f64], rel: f64| {
        let scale = want.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        assert_close(name, got, want, |_| rel * scale + 1e-5);
    };
    for s in &layout.specs {
        let want = fx.get64(&format!("grad.{}", s.name));
        close(
            &format!("{backend} d{} (gpu)", s.name),
            &s.read(&grads),
            &want,
            2e-3,
        );
        close(
            &format!("d{} (cpu)", s.name),
            &as32(&s.read(&t.grads)),
            &want,
            2e-3,
        );
    }
    // The clamped logvar channel gets no gradient: quant_conv's logvar rows for channel 1.
    let dq = layout.get("quant_conv.bias").unwrap().read(&grads);
    assert_eq!(dq[3], 0.0, "the clamped channel's bias gradient");
    assert!(dq[2] != 0.0);
}
