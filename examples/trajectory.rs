//! A training run laid bare, for comparing step by step with PyTorch fed the same things: the
//! notebook's model with a likelihood (`--likelihood gaussian` learns σ), trained for `--steps`
//! steps on MNIST's training images in order (batch i = images 128·i … 128·i + 127) with noise
//! from `rng::normals(seed, step, …)` written into the step's `eps` buffer. Writes to `--out`:
//! `init.safetensors` (the initial weights as a PyTorch state_dict), `eps.bin` (every step's
//! noise, f32 little-endian) and `engine.json` (every step's loss, reconstruction, KL and log σ).
//! `scripts/torch_trajectory.py` trains PyTorch on the same and compares.
//!
//! ```text
//! cargo run --release --example trajectory -- --likelihood gaussian --steps 500 --out /tmp/traj
//!     [--seed S]   (the initial weights' and the noise's seed, 0 by default)
//! ```

use std::path::PathBuf;
use vae_wgpu::data::{ImageSet, Split};
use vae_wgpu::gpu::GpuContext;
use vae_wgpu::kernels::reparam_kl::EpsSource;
use vae_wgpu::model::checkpoint::Progress;
use vae_wgpu::model::gpu::Input;
use vae_wgpu::model::{Checkpoint, GpuVae, Likelihood, ParamLayout, VaeConfig};
use vae_wgpu::rng;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        let i = args.iter().position(|a| a == name)?;
        args.get(i + 1).cloned()
    };
    let steps: usize = flag("--steps").map_or(Ok(500), |v| v.parse())?;
    let out = PathBuf::from(flag("--out").unwrap_or("trajectory".into()));
    let likelihood = Likelihood::parse(&flag("--likelihood").unwrap_or("gaussian".into()), None)?;
    let seed: u64 = flag("--seed").map_or(Ok(0), |v| v.parse())?;
    let b = 128usize;
    std::fs::create_dir_all(&out)?;
    let cfg = VaeConfig {
        likelihood,
        ..VaeConfig::default()
    };
    let layout = ParamLayout::new(&cfg);
    let init = layout.init(seed);
    let ckpt = Checkpoint {
        cfg: cfg.clone(),
        params: init.clone(),
        optimizer: None,
        progress: Progress::default(),
        activation_recorded: true,
    };
    ckpt.save_state_dict(&out.join("init.safetensors"))?;
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let train = ImageSet::load_idx(&data, Split::Train)?;
    let ctx = GpuContext::from_env()?;
    let mut gpu = GpuVae::from_params(&ctx, cfg.clone(), b, seed, &init)?;
    let acc = gpu.new_accumulator(&ctx)?;
    let adam = vae_wgpu::optim::Optimizer::new(&ctx, Default::default(), layout.len)?;
    let graph = gpu.plan_step(&ctx, b, Input::Given, EpsSource::Buffer, Some(&adam), &acc)?;
    let a = gpu.acts.rows(b, 1)?;
    let mut eps_all: Vec<u8> = Vec::new();
    let mut rows = Vec::new();
    for step in 0..steps {
        let first = (step * b) % (train.count - b + 1);
        let x: Vec<f32> = (first..first + b)
            .flat_map(|i| train.image_f32(i))
            .collect();
        let eps: Vec<f32> = (rng::normals(seed, step as u32 + 1, b * cfg.latent).iter())
            .map(|&e| e as f32)
            .collect();
        eps_all.extend(eps.iter().flat_map(|e| e.to_le_bytes()));
        ctx.write_f32(&a.x, &x)?;
        ctx.write_f32(&a.eps, &eps)?;
        gpu.reset_losses(&ctx, &acc)?;
        gpu.run_step(&ctx, &graph, 0)?;
        let r = gpu.read_losses(&ctx, &acc)?;
        let log_sigma = match layout.log_sigma {
            Some(o) => ctx.read_f32(&gpu.params.view(o, &[1])?)?[0] as f64,
            None => 0.0,
        };
        rows.push(serde_json::json!({
            "step": step + 1, "loss": r.batch_total, "recon": r.batch_recon, "kl": r.batch_kl,
            "log_sigma": log_sigma,
        }));
    }
    std::fs::write(out.join("eps.bin"), eps_all)?;
    let doc = serde_json::json!({
        "likelihood": likelihood.name(), "batch": b, "latent": cfg.latent, "steps": rows,
    });
    std::fs::write(out.join("engine.json"), serde_json::to_string(&doc)?)?;
    println!("wrote {}: {steps} steps", out.display());
    Ok(())
}
