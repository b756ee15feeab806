//! Training-step and epoch benchmarks on the selected adapter: host time to record a step,
//! dispatches per step, the step's wall time, and full epochs (median of `VAE_BENCH_EPOCHS`, 3 by
//! default) in images/s. A plain timing harness: an epoch is too long for criterion's sampling.
//!
//! ```text
//! cargo bench --bench training
//! ```

use std::time::Instant;

use vae_wgpu::data::{ImageSet, Split};
use vae_wgpu::gpu::GpuContext;
use vae_wgpu::kernels::reparam_kl::EpsSource;
use vae_wgpu::model::{EpochEnd, GpuDataset, GpuVae, TrainSettings, Trainer, VaeConfig};

fn main() {
    // `cargo bench` passes `--bench`; filters are not used here.
    let ctx = GpuContext::from_env().unwrap_or_else(|e| panic!("{e}"));
    println!("adapter: {}", ctx.adapter.short());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let train = ImageSet::load_idx(&dir, Split::Train).unwrap();
    let cfg = VaeConfig::default();
    let settings = TrainSettings {
        log_every: 0,
        ..TrainSettings::default()
    };

    // One step in isolation: host recording time and wall time (submit + wait).
    let data = GpuDataset::upload(&ctx, "train", &train).unwrap();
    let mut vae = GpuVae::new(&ctx, cfg.clone(), 128, 0).unwrap();
    let adam = vae_wgpu::optim::Optimizer::new(&ctx, settings.optimizer, vae.layout.len).unwrap();
    let acc = vae.new_accumulator(&ctx).unwrap();
    let input = data.input();
    let graph = vae
        .plan_step(&ctx, 128, input, EpsSource::Philox, Some(&adam), &acc)
        .unwrap();
    println!("dispatches per training step: {}", graph.dispatch_count());
    println!("{}", vae_wgpu::kernels::matmul::summary(&ctx));
    let steps = 50;
    let (mut host, mut wall) = (Vec::new(), Vec::new());
    for i in 0..steps {
        let t = Instant::now();
        let recorded = vae.run_step(&ctx, &graph, (i % 400) * 128).unwrap();
        host.push(recorded.as_secs_f64() * 1e6);
        ctx.wait_idle("step").unwrap();
        wall.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    println!(
        "host time to record a step: {:.0} µs (median of {steps})",
        med(&mut host)
    );
    println!(
        "training step wall time (submit + wait): {:.2} ms (median of {steps})",
        med(&mut wall)
    );

    // Steps back to back, one submit per step (no waits), against 4 recorded into one submit —
    // timing only: the steps of one graph share its uniform slot, so these repeat the same noise
    // and Adam step; the trainer submits its measured steps per submit each planned in a slot of
    // its own (`GpuVae::in_slot`, `Trainer::steps_per_submit`).
    for per_submit in [1usize, 4] {
        let n = 100;
        ctx.wait_idle("before").unwrap();
        let t = Instant::now();
        for _ in 0..n / per_submit {
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            for _ in 0..per_submit {
                graph.encode(&mut enc);
            }
            ctx.queue.submit([enc.finish()]);
        }
        ctx.wait_idle("steps").unwrap();
        println!(
            "{n} steps back to back, {per_submit} per submit: {:.2} ms per step",
            t.elapsed().as_secs_f64() * 1e3 / n as f64
        );
    }

    let epochs: usize = std::env::var("VAE_BENCH_EPOCHS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut trainer = Trainer::new(&ctx, cfg, settings, &train).unwrap();
    let mut secs = Vec::new();
    for _ in 0..epochs {
        let t = Instant::now();
        match trainer
            .train_epoch(&ctx, &mut |_| {}, &mut || false)
            .unwrap()
        {
            EpochEnd::Completed(s) => {
                let dt = t.elapsed().as_secs_f64();
                println!(
                    "epoch {}: {:.2} s, {:.0} images/s, loss {:.2}",
                    s.epoch,
                    dt,
                    train.count as f64 / dt,
                    s.loss
                );
                secs.push(dt);
            }
            EpochEnd::Stopped { .. } => unreachable!("nothing stops the benchmark"),
        }
    }
    if secs.is_empty() {
        return;
    }
    let m = med(&mut secs);
    println!(
        "epoch (469 steps of batch 128): median {m:.2} s over {epochs}, {:.0} images/s",
        train.count as f64 / m
    );
}
