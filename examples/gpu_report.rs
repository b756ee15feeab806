//! A speed report of this machine's adapter, to paste into an issue: the adapters wgpu sees, the
//! matmul kernels at the model's shapes and 1024³ (GFLOP/s per variant beside a single-threaded CPU
//! sgemm), the autotune's choices with their timings, the training step (dispatches and submits
//! per step, host µs per step, step time, and each of its dispatches timed alone), whole training
//! epochs and an evaluation, the cold start (the trainer's time to its first loss with empty and
//! kept autotune and driver shader caches), then the
//! `--conv 32,64 --latent 16` model: its conv layers per pass and formulation (GFLOP/s) beside
//! PyTorch's CPU convolutions of the same shapes, and its epochs beside PyTorch's. Writes
//! `report.md` and `report.json` into `--out` (default `report/`).
//!
//! ```text
//! scripts/gpu_report.sh            # builds, then runs this with the flags given
//! cargo run --release --example gpu_report -- --epochs 1 --out report
//! ```

use std::time::Instant;

use clap::Parser;
use serde_json::{Value, json};
use vae_wgpu::cli::train::FirstLoss;
use vae_wgpu::data::load_splits;
use vae_wgpu::gpu::{BackendChoice, DType, GpuContext, list_adapters};
use vae_wgpu::kernels::matmul::{self, Epilogue};
use vae_wgpu::kernels::{self, Dispatch};
use vae_wgpu::model::eval::evaluate;
use vae_wgpu::model::{EpochEnd, GpuDataset, GpuVae, TrainSettings, Trainer, VaeConfig};
use vae_wgpu::ops::Layout;

#[derive(Parser)]
#[command(about = "Measure this adapter and write report.md and report.json")]
struct Args {
    /// Training epochs to time (5 is the notebook's run; 1 keeps it short on a CPU driver).
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Importance samples of the evaluation's bound.
    #[arg(long, default_value_t = 100)]
    iw_samples: usize,
    /// Seconds of timing per kernel and variant.
    #[arg(long, default_value_t = 0.3)]
    kernel_seconds: f64,
    #[arg(long, default_value = "report")]
    out: std::path::PathBuf,
    #[arg(long, default_value = "data/mnist")]
    data_dir: std::path::PathBuf,
    /// Skip the PyTorch CPU epoch (run only when `python3 -c "import torch"` works).
    #[arg(long)]
    no_torch: bool,
    /// Epochs of the `--conv 32,64 --latent 16 --lr 0.001` model to time (0: none).
    #[arg(long, default_value_t = 1)]
    conv_epochs: usize,
    /// Skip the AutoencoderKL step (blocks 32,64 at batch 32 on 28x28 images, beside diffusers').
    #[arg(long)]
    no_kl: bool,
    #[command(flatten)]
    device: vae_wgpu::cli::DeviceArgs,
}

/// PyTorch's CPU epochs of the same model (`scripts/torch_train.py`, data preloaded), run after
/// ours in the same process's lifetime so the two are measured on the same machine in one run;
/// `None` (with why) when python3 or torch is missing.
fn torch_epochs(
    epochs: usize,
    data_dir: &std::path::Path,
    extra: &[&str],
) -> Result<Value, String> {
    let mut a = vec![
        "--epochs".to_string(),
        epochs.to_string(),
        "--data-dir".to_string(),
    ];
    a.push(data_dir.display().to_string());
    a.extend(extra.iter().map(|s| s.to_string()));
    python("scripts/torch_train.py", &a)
}

/// Run a script of `scripts/` with python3 and parse its last line as JSON; why not, when python3
/// or torch is missing or the script fails.
fn python(script: &str, args: &[String]) -> Result<Value, String> {
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .map_err(|e| format!("python3 not runnable: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(if err.contains("No module named 'torch'") {
            "PyTorch not installed (pip install torch numpy safetensors to compare)".into()
        } else {
            format!("{script} failed: {}", err.lines().last().unwrap_or(""))
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or("");
    serde_json::from_str(last).map_err(|e| format!("{script}'s last line is not JSON: {e}"))
}

/// Seconds per launch: the best of 5 submits of enough launches to fill ~`budget / 5` each.
fn time_gpu(ctx: &GpuContext, d: &Dispatch, budget: f64) -> f64 {
    let launch = |reps| kernels::time_launches(ctx, d, reps).unwrap();
    let once = launch(1);
    let reps = ((budget / 5.0) / once.max(1e-7)).ceil().clamp(1.0, 256.0) as usize;
    (0..5).map(|_| launch(reps)).fold(f64::INFINITY, f64::min)
}

/// (threads, GFLOP/s): a 1024³ sgemm on every core at once, the threads' rates summed.
fn host_sgemm_all_cores(budget: f64) -> (usize, f64) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let flops = 2.0 * 1024f64.powi(3);
    let secs: Vec<f64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| s.spawn(move || time_cpu(Layout::NT, 1024, 1024, 1024, budget.max(0.5))))
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or(f64::INFINITY))
            .collect()
    });
    (threads, secs.iter().map(|t| flops / t / 1e9).sum())
}

/// Seconds of one single-threaded sgemm (matrixmultiply) of the same product, best of a few.
fn time_cpu(layout: Layout, m: usize, n: usize, k: usize, budget: f64) -> f64 {
    let (a, b) = (vec![0.5f32; m * k], vec![0.25f32; k * n]);
    let mut c = vec![0f32; m * n];
    // Strides per layout (row-major storage): A [M,K] or [K,M]; B [K,N] or [N,K].
    let (rsa, csa) = match layout {
        Layout::TN => (1, m as isize),
        _ => (k as isize, 1),
    };
    let (rsb, csb) = match layout {
        Layout::NT => (1, k as isize),
        _ => (n as isize, 1),
    };
    let mut best = f64::INFINITY;
    let start = Instant::now();
    while best == f64::INFINITY || start.elapsed().as_secs_f64() < budget {
        let t = Instant::now();
        unsafe {
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
                c.as_mut_ptr(),
                n as isize,
                1,
            );
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let started = Instant::now();
    let adapters: Vec<String> = list_adapters(BackendChoice::Auto)
        .iter()
        .map(|a| a.to_string())
        .collect();
    let ctx = GpuContext::new(&args.device.options()?)?;
    println!("adapter: {}", ctx.adapter.short());

    // Kernels at the model's shapes and 1024³.
    let shapes: [(Layout, usize, usize, usize, &str); 9] = [
        (Layout::NT, 128, 200, 784, "encoder forward"),
        (Layout::NT, 128, 784, 200, "decoder logits"),
        (Layout::NN, 128, 200, 784, "dh_dec = dlogits·W_out"),
        (Layout::TN, 784, 200, 128, "dW_out (TN)"),
        (Layout::TN, 200, 784, 128, "dW_enc (TN)"),
        (Layout::NT, 128, 20, 200, "heads forward"),
        (Layout::NT, 1024, 1024, 1024, "1024³"),
        (Layout::NN, 1024, 1024, 1024, "1024³"),
        (Layout::TN, 1024, 1024, 1024, "1024³"),
    ];
    let variants = matmul::select::usable_variants(&ctx);
    let mut kernel_rows = Vec::new();
    for (layout, m, n, k, what) in shapes {
        let (sa, sb) = layout.operand_shapes(m, n, k);
        let fill = |len: usize| (0..len).map(|i| (i % 13) as f32 / 13.0).collect::<Vec<_>>();
        let a = ctx.upload_f32("a", &sa, &fill(m * k))?;
        let b = ctx.upload_f32("b", &sb, &fill(k * n))?;
        let c = ctx.zeros("c", &[m, n], DType::F32)?;
        let flops = 2.0 * (m * n * k) as f64;
        let mut row =
            json!({"layout": format!("{layout:?}"), "m": m, "n": n, "k": k, "what": what});
        for &v in &variants {
            let d = matmul::matmul_with(&ctx, v, layout, &a, &b, &c, Epilogue::NONE)?;
            kernels::run(&ctx, &[&d])?;
            let secs = time_gpu(&ctx, &d, args.kernel_seconds);
            row[v.to_string()] = json!(flops / secs / 1e9);
        }
        let cpu = time_cpu(layout, m, n, k, args.kernel_seconds);
        row["cpu_sgemm_1_thread"] = json!(flops / cpu / 1e9);
        println!("{row}");
        kernel_rows.push(row);
    }
    // The host's fp32 rate on all its cores (one sgemm of 1024³ per thread at once): the peak a
    // CPU adapter such as lavapipe can reach, against which its products are measured.
    let (host_threads, host_gflops) = host_sgemm_all_cores(args.kernel_seconds);
    let best_model_product = kernel_rows
        .iter()
        .filter(|r| r["m"] != 1024)
        .flat_map(|r| variants.iter().filter_map(|v| r[v.to_string()].as_f64()))
        .fold(0.0, f64::max);
    let host_peak = json!({"threads": host_threads, "gflops": host_gflops,
        "best_model_product_gflops": best_model_product,
        "best_model_product_share": best_model_product / host_gflops});
    println!("host sgemm on all cores: {host_peak}");

    // The training step in isolation, then whole epochs through the trainer.
    let (train, test) = load_splits(&args.data_dir)?;
    let settings = TrainSettings::default();
    let cfg = VaeConfig::default();
    let data = GpuDataset::upload(&ctx, "train", &train)?;
    let mut vae = GpuVae::new(&ctx, cfg.clone(), settings.batch_size, 0)?;
    let adam = vae_wgpu::optim::Optimizer::new(&ctx, settings.optimizer, vae.layout.len)?;
    let acc = vae.new_accumulator(&ctx)?;
    let input = data.input();
    let graph = vae.plan_step(
        &ctx,
        settings.batch_size,
        input,
        vae_wgpu::kernels::reparam_kl::EpsSource::Philox,
        Some(&adam),
        &acc,
    )?;
    let mut host = Vec::new();
    let t = Instant::now();
    let steps = 100;
    for i in 0..steps {
        host.push(vae.run_step(&ctx, &graph, (i % 400) * 128)?.as_secs_f64() * 1e6);
    }
    ctx.wait_idle("steps")?;
    let step_ms = t.elapsed().as_secs_f64() * 1e3 / steps as f64;
    host.sort_by(|a, b| a.total_cmp(b));
    let host_us = host[host.len() / 2];
    let dispatch_rows = dispatch_table(&ctx, graph.dispatches())?;
    let dispatch_sum_us: f64 = dispatch_rows.iter().filter_map(|r| r["us"].as_f64()).sum();
    drop((vae, data));

    let mut trainer = Trainer::new(&ctx, cfg.clone(), settings.clone(), &train)?;
    let test_gpu = GpuDataset::upload(&ctx, "test", &test)?;
    let mut epochs = Vec::new();
    for _ in 0..args.epochs {
        let t = Instant::now();
        let s = match trainer.train_epoch(&ctx, &mut |_| {}, &mut || false)? {
            EpochEnd::Completed(s) => s,
            EpochEnd::Stopped { .. } => unreachable!("nothing stops the report"),
        };
        let secs = t.elapsed().as_secs_f64();
        let test_loss = trainer.evaluate(&ctx, &test_gpu)?.loss;
        println!(
            "epoch {}: {secs:.2} s, train {:.2}, test {test_loss:.2}",
            s.epoch, s.loss
        );
        epochs.push(
            json!({"epoch": s.epoch, "seconds": secs, "images_per_s": train.count as f64 / secs,
            "train_loss": s.loss, "test_loss": test_loss, "host_us_per_step": s.host_us_per_step}),
        );
    }
    // Work per image of a training step: 2 FLOPs per weight forward, 4 backward (dW and dX; the
    // first layer's dX is skipped, counted anyway), so ~6 per parameter.
    let flops_per_epoch = 6.0 * trainer.vae.layout.num_params() as f64 * train.count as f64;
    let best_epoch = epochs
        .iter()
        .filter_map(|e| e["seconds"].as_f64())
        .fold(f64::INFINITY, f64::min);
    let torch = if args.no_torch {
        Err("skipped (--no-torch)".to_string())
    } else {
        println!("PyTorch CPU epochs of the same model (scripts/torch_train.py) ...");
        torch_epochs(args.epochs, &args.data_dir, &[])
    };
    let torch_best = torch.as_ref().ok().and_then(|t| {
        t["epochs"]
            .as_array()?
            .iter()
            .filter_map(|e| e["seconds"].as_f64())
            .reduce(f64::min)
    });
    let peer = match (&torch, torch_best) {
        (Ok(t), Some(best)) => json!({"torch": t["torch"], "threads": t["threads"],
            "epochs": t["epochs"], "best_epoch_s": best, "ours_best_epoch_s": best_epoch,
            "ratio_ours_over_torch": best_epoch / best}),
        (Err(why), _) => json!({"skipped": why}),
        _ => json!({"skipped": "no epoch timed"}),
    };
    println!("peer: {peer}");
    let params = ctx.read_f32(&trainer.vae.params)?;
    let t = Instant::now();
    let r = evaluate(
        &ctx,
        &cfg,
        &params,
        &test_gpu,
        10,
        args.iw_samples,
        0,
        &mut |_, _, _| true,
    )?;
    let eval = json!({"seconds": t.elapsed().as_secs_f64(), "neg_elbo_1": r.neg_elbo_1.neg_elbo,
        "neg_elbo_10": r.neg_elbo_n.neg_elbo, "iw_samples": args.iw_samples,
        "iwae_nll": r.iwae.iwae_nll});
    let choices: Vec<Value> = ctx
        .tune_store
        .choices()
        .into_iter()
        .map(|(p, c)| json!({"problem": p, "choice": c.variant, "timings": c.timings}))
        .collect();
    let cold = cold_start(&args);
    let (conv_layers, conv_epochs, conv_peer) = conv_report(&ctx, &args, &train, &test)?;
    let kl_step = if args.no_kl {
        json!({"skipped": "--no-kl"})
    } else {
        kl_report(&ctx, &args)?
    };
    let info = &ctx.adapter;
    let report = json!({
        "adapter": info.name, "backend": format!("{:?}", info.backend),
        "device_type": format!("{:?}", info.device_type),
        "driver": format!("{} {}", info.driver, info.driver_info),
        "adapters_seen": adapters,
        "kernels_gflops": kernel_rows, "host_sgemm_all_cores": host_peak,
        "training_step": {"dispatches": trainer.dispatches_per_step(), "submits_per_step":
            1.0 / trainer.steps_per_submit as f64, "steps_per_submit": trainer.steps_per_submit,
            "host_us_per_step": host_us, "step_ms_back_to_back": step_ms,
            "dispatches_alone": dispatch_rows, "sum_of_dispatches_alone_us": dispatch_sum_us},
        "epochs": epochs, "epoch_gflops": flops_per_epoch / best_epoch / 1e9,
        "pytorch_cpu": peer, "eval": eval, "autotune": choices, "cold_start": cold,
        "conv_layers": conv_layers, "conv_epochs": conv_epochs, "conv_pytorch_cpu": conv_peer,
        "autoencoder_kl_step": kl_step,
        "report_seconds": started.elapsed().as_secs_f64(),
    });
    std::fs::create_dir_all(&args.out)?;
    vae_wgpu::files::write_atomic(
        &args.out.join("report.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    let mut md = format!(
        "## vae-wgpu on {} ({:?}, {:?}; {} {})\n\n",
        info.name, info.backend, info.device_type, info.driver, info.driver_info
    );
    md += "| product | shape | ";
    md += &variants
        .iter()
        .map(|v| format!("{v} GFLOP/s"))
        .collect::<Vec<_>>()
        .join(" | ");
    md += " | CPU sgemm (1 thread) |\n|---|---|";
    md += &"---|".repeat(variants.len() + 1);
    md += "\n";
    for r in &kernel_rows {
        md += &format!(
            "| {} | {} {}x{}x{} | ",
            r["what"].as_str().unwrap_or(""),
            r["layout"].as_str().unwrap_or(""),
            r["m"],
            r["n"],
            r["k"]
        );
        for v in &variants {
            md += &format!("{:.1} | ", r[v.to_string()].as_f64().unwrap_or(f64::NAN));
        }
        md += &format!(
            "{:.1} |\n",
            r["cpu_sgemm_1_thread"].as_f64().unwrap_or(f64::NAN)
        );
    }
    md += &format!(
        "\nThe host's CPU: sgemm (matrixmultiply) of 1024³ on all {} threads at once, {:.1} GFLOP/s; \
         the fastest model product above reaches {:.1} GFLOP/s, {:.0}% of it (the peak a CPU \
         adapter can reach; on a GPU, a yardstick only).\n",
        host_threads,
        host_gflops,
        best_model_product,
        100.0 * best_model_product / host_gflops
    );
    md += &format!(
        "\nTraining step: {} dispatches, {} step(s) per submit, {:.0} µs host time to record, \
         {:.2} ms per step back to back.\n\n",
        trainer.dispatches_per_step(),
        trainer.steps_per_submit,
        host_us,
        step_ms
    );
    let step = &report["training_step"];
    md += &format!(
        "Where the step's time goes: each dispatch alone (its best of {} rounds of launches \
         back to back, texture copies included); together {:.0} µs against {:.0} µs per step.\n\n\
         | # | dispatch | entry point | workgroups | µs |\n|---|---|---|---|---|\n",
        kernels::AUTOTUNE.rounds,
        dispatch_sum_us,
        step_ms * 1e3
    );
    for r in step["dispatches_alone"].as_array().into_iter().flatten() {
        md += &format!(
            "| {} | {} | {} | {} | {:.0} |\n",
            r["index"],
            r["label"].as_str().unwrap_or(""),
            r["entry"].as_str().unwrap_or(""),
            r["workgroups"],
            r["us"].as_f64().unwrap_or(f64::NAN)
        );
    }
    md += "\n| epoch | seconds | images/s | train | test |\n|---|---|---|---|---|\n";
    for e in &epochs {
        md += &format!(
            "| {} | {:.2} | {:.0} | {:.2} | {:.2} |\n",
            e["epoch"],
            e["seconds"].as_f64().unwrap_or(0.0),
            e["images_per_s"].as_f64().unwrap_or(0.0),
            e["train_loss"].as_f64().unwrap_or(0.0),
            e["test_loss"].as_f64().unwrap_or(0.0)
        );
    }
    md += &format!(
        "\nBest epoch {:.2} s: {:.1} GFLOP/s of training work (~6 FLOPs per parameter per image).\n",
        best_epoch,
        flops_per_epoch / best_epoch / 1e9
    );
    md += &match (&torch, torch_best) {
        (Ok(t), Some(best)) => format!(
            "PyTorch {} on the CPU ({} threads, same model, data preloaded, scripts/torch_train.py), \
             same machine, same run: best epoch {:.2} s; ours / PyTorch = {:.2}.\n",
            t["torch"].as_str().unwrap_or("?"),
            t["threads"],
            best,
            best_epoch / best
        ),
        (Err(why), _) => format!("PyTorch CPU epoch: {why}.\n"),
        _ => String::new(),
    };
    md += &format!(
        "\nEvaluation (10k test images): -ELBO {:.2} (1 sample), {:.2} (10), IWAE k={} {:.2}; {:.1} s.\n\nAutotune:\n\n| problem | choice | timings |\n|---|---|---|\n",
        r.neg_elbo_1.neg_elbo,
        r.neg_elbo_n.neg_elbo,
        args.iw_samples,
        r.iwae.iwae_nll.unwrap_or(f64::NAN),
        eval["seconds"].as_f64().unwrap_or(0.0)
    );
    for c in &choices {
        md += &format!(
            "| {} | {} | {} |\n",
            c["problem"].as_str().unwrap_or(""),
            c["choice"].as_str().unwrap_or(""),
            c["timings"].as_str().unwrap_or("")
        );
    }
    md += &cold_start_markdown(&cold);
    md += &conv_markdown(&conv_layers, &conv_epochs, &conv_peer);
    md += &kl_markdown(&kl_step);
    md += &format!(
        "\nReport took {:.0} s. Adapters seen:\n\n{}\n",
        started.elapsed().as_secs_f64(),
        adapters
            .iter()
            .map(|a| format!("- {}", a.replace('\n', " ")))
            .collect::<Vec<_>>()
            .join("\n")
    );
    vae_wgpu::files::write_atomic(&args.out.join("report.md"), md.as_bytes())?;
    println!("{md}");
    println!(
        "wrote {} and report.json",
        args.out.join("report.md").display()
    );
    Ok(())
}

/// Each dispatch of a training step timed alone, as the autotune times a candidate (a rough run
/// for the launch count, then the best of its rounds): where the step's time goes.
fn dispatch_table(
    ctx: &GpuContext,
    dispatches: &[Dispatch],
) -> Result<Vec<Value>, Box<dyn std::error::Error>> {
    let rule = kernels::AUTOTUNE;
    let mut rows = Vec::new();
    for (i, d) in dispatches.iter().enumerate() {
        // Once to compile (lavapipe compiles at first use), once for a rough time.
        kernels::time_launches(ctx, d, 1)?;
        let first = kernels::time_launches(ctx, d, 1)?;
        let reps = rule.reps(first);
        let secs = kernels::best_of_rounds(ctx, &[(d, reps)], rule.rounds)?[0];
        rows.push(json!({"index": i, "label": d.label, "entry": d.desc.entry,
            "workgroups": d.desc.workgroups, "us": secs * 1e6}));
    }
    Ok(rows)
}

/// Seconds per run of a sequence of dispatches (a conv pass), the best of 5 submits.
fn time_seq(
    ctx: &GpuContext,
    seq: &[Dispatch],
    budget: f64,
) -> Result<f64, Box<dyn std::error::Error>> {
    let refs: Vec<&Dispatch> = seq.iter().collect();
    Ok(kernels::time_sequence(ctx, &refs, budget / 5.0)?)
}

/// The `32,64` AutoencoderKL's training step (one ResNet a block, 4 latent channels, 8 groups,
/// the mid blocks' attention) at batch 32 on 28x28 images, as one submit, beside diffusers' own
/// module's step by the same loss in PyTorch on the CPU (`scripts/torch_autoencoder_kl_train.py
/// --bench-steps`).
fn kl_report(ctx: &GpuContext, args: &Args) -> Result<Value, Box<dyn std::error::Error>> {
    use vae_wgpu::kernels::reparam_kl::EpsSource;
    use vae_wgpu::model::autoencoder_kl::KlConfig;
    use vae_wgpu::model::gpu::Input;
    println!("The AutoencoderKL step (blocks 32,64, batch 32, 28x28) ...");
    let batch = 32;
    let cfg = VaeConfig::autoencoder_kl(KlConfig::new(1, &[32, 64], 1, 4, 8, 28), [1, 28, 28]);
    let vae = GpuVae::new(ctx, cfg.clone(), batch, 0)?;
    let acc = vae.new_accumulator(ctx)?;
    let adam = vae_wgpu::optim::Optimizer::new(ctx, Default::default(), vae.layout.len)?;
    let g = vae.plan_step(
        ctx,
        batch,
        Input::Given,
        EpsSource::Philox,
        Some(&adam),
        &acc,
    )?;
    let step = time_seq(ctx, g.dispatches(), 5.0 * args.kernel_seconds)?;
    let torch = if args.no_torch {
        Err("skipped (--no-torch)".to_string())
    } else {
        python(
            "scripts/torch_autoencoder_kl_train.py",
            &[
                "--bench-steps",
                "3",
                "--image",
                "1,28,28",
                "--batch-size",
                "32",
            ]
            .map(String::from),
        )
    };
    Ok(
        json!({"model": cfg.describe(), "batch": batch, "dispatches": g.dispatch_count(),
        "step_s": step, "diffusers_cpu": match &torch {
            Ok(t) => json!({"torch": t["torch"], "threads": t["threads"], "step_s": t["step_s"],
                "ratio_ours_over_torch": t["step_s"].as_f64().map(|b| step / b)}),
            Err(why) => json!({"skipped": why}),
        }}),
    )
}

fn kl_markdown(kl: &Value) -> String {
    let Some(step) = kl["step_s"].as_f64() else {
        return format!("\nAutoencoderKL step: {}.\n", kl["skipped"]);
    };
    let peer = &kl["diffusers_cpu"];
    let theirs = match peer["step_s"].as_f64() {
        Some(t) => format!(
            "; diffusers' module by the same loss in PyTorch {} ({} threads), same machine, same \
             run: {t:.3} s; ours / PyTorch = {:.2}",
            peer["torch"].as_str().unwrap_or("?"),
            peer["threads"],
            step / t
        ),
        None => format!("; diffusers: {}", peer["skipped"]),
    };
    format!(
        "\nAutoencoderKL training step ({}, batch {}, {} dispatches as one submit): {step:.3} s{theirs}.\n",
        kl["model"].as_str().unwrap_or("?"),
        kl["batch"],
        kl["dispatches"]
    )
}

/// (per-layer rows, conv epochs, PyTorch's conv epochs or why not).
type ConvReport = (Vec<Value>, Vec<Value>, Value);

/// The conv model's layers per pass and formulation, PyTorch's convolutions of the same shapes,
/// and the conv model's epochs beside PyTorch's.
fn conv_report(
    ctx: &GpuContext,
    args: &Args,
    train: &vae_wgpu::data::ImageSet,
    test: &vae_wgpu::data::ImageSet,
) -> Result<ConvReport, Box<dyn std::error::Error>> {
    use vae_wgpu::kernels::conv::{
        BiasSide, ConvEpilogue, ConvFormulation, ConvPass, ConvScratch, formulation_for,
        plan_to_hi, plan_to_lo, plan_weight_grad,
    };
    use vae_wgpu::model::ParamLayout;
    let cfg = VaeConfig::convolutional([1, 28, 28], &[32, 64], &[], 16);
    let layout = ParamLayout::new(&cfg);
    let batch = 128;
    let torch = if args.no_torch {
        Err("skipped (--no-torch)".to_string())
    } else {
        python(
            "scripts/torch_conv_bench.py",
            &["--batch", "128", "--image", "1,28,28", "--conv", "32,64"].map(String::from),
        )
    };
    let mut rows = Vec::new();
    let conv_layers = layout
        .layers()
        .filter_map(|l| l.conv_shape(batch).map(|(s, t)| (l, s, t)));
    for (i, (l, s, transposed)) in conv_layers.enumerate() {
        let fill = |n: usize| {
            (0..n)
                .map(|i| (i % 13) as f32 / 13.0 - 0.5)
                .collect::<Vec<_>>()
        };
        let lo = ctx.upload_f32("lo", &[s.lo_len()], &fill(s.lo_len()))?;
        let hi = ctx.upload_f32("hi", &[s.hi_len()], &fill(s.hi_len()))?;
        let w = ctx.upload_f32("w", &[s.weight_len()], &fill(s.weight_len()))?;
        let dw = ctx.zeros("dw", &[s.weight_len()], DType::F32)?;
        let side = if transposed {
            BiasSide::Hi
        } else {
            BiasSide::Lo
        };
        let db = ctx.zeros(
            "db",
            &[if transposed { s.hi[0] } else { s.lo[0] }],
            DType::F32,
        )?;
        let scratch = ConvScratch::new(ctx, &[s])?;
        let flops = 2.0 * s.macs() as f64;
        let mut row = json!({"layer": l.describe(), "batch": batch, "macs_per_pass": s.macs()});
        // forward = to_lo for a Conv2d, to_hi for a ConvTranspose2d; backward = the weight
        // gradient and the other pass.
        let (fwd_pass, dx_pass) = if transposed {
            (ConvPass::ToHi, ConvPass::ToLo)
        } else {
            (ConvPass::ToLo, ConvPass::ToHi)
        };
        for (name, pass) in [
            ("forward", fwd_pass),
            ("input_grad", dx_pass),
            ("weight_grad", ConvPass::WeightGrad(Some(side))),
        ] {
            row[format!("{name}_chosen")] = json!(formulation_for(ctx, pass, &s)?.to_string());
            for f in ConvFormulation::ALL {
                let e = ConvEpilogue::NONE;
                let seq = match pass {
                    ConvPass::ToLo => plan_to_lo(ctx, f, &s, &hi, &w, &lo, e, &scratch)?,
                    ConvPass::ToHi => plan_to_hi(ctx, f, &s, &lo, &w, &hi, e, &scratch)?,
                    ConvPass::WeightGrad(b) => {
                        plan_weight_grad(ctx, f, &s, &lo, &hi, &dw, b.map(|b| (&db, b)), &scratch)?
                    }
                };
                let secs = time_seq(ctx, &seq, args.kernel_seconds)?;
                row[format!("{name}_{f}_gflops")] = json!(flops / secs / 1e9);
                row[format!("{name}_{f}_s")] = json!(secs);
            }
        }
        if let Ok(t) = &torch
            && let Some(tl) = t["layers"].get(i)
        {
            let (fwd, bwd) = (tl["forward"].as_f64(), tl["backward"].as_f64());
            row["torch_forward_gflops"] = json!(fwd.map(|f| flops / f / 1e9));
            row["torch_backward_gflops"] = json!(bwd.map(|b| 2.0 * flops / b / 1e9));
            row["torch_forward_s"] = json!(fwd);
            row["torch_backward_s"] = json!(bwd);
        }
        println!("{row}");
        rows.push(row);
    }
    let mut epochs = Vec::new();
    if args.conv_epochs > 0 {
        let settings = TrainSettings {
            optimizer: vae_wgpu::optim::OptimizerConfig {
                lr: 0.001,
                ..Default::default()
            },
            ..TrainSettings::default()
        };
        let mut trainer = Trainer::new(ctx, cfg.clone(), settings, train)?;
        let test_gpu = GpuDataset::upload(ctx, "test", test)?;
        for _ in 0..args.conv_epochs {
            let t = Instant::now();
            let s = match trainer.train_epoch(ctx, &mut |_| {}, &mut || false)? {
                EpochEnd::Completed(s) => s,
                EpochEnd::Stopped { .. } => unreachable!("nothing stops the report"),
            };
            let secs = t.elapsed().as_secs_f64();
            let test_loss = trainer.evaluate(ctx, &test_gpu)?.loss;
            println!(
                "conv epoch {}: {secs:.2} s, train {:.2}, test {test_loss:.2}",
                s.epoch, s.loss
            );
            epochs.push(
                json!({"epoch": s.epoch, "seconds": secs, "train_loss": s.loss,
                "test_loss": test_loss, "dispatches": trainer.dispatches_per_step()}),
            );
        }
    }
    let peer = if args.no_torch || args.conv_epochs == 0 {
        json!({"skipped": "no conv epochs or --no-torch"})
    } else {
        let conv = ["--conv", "32,64", "--latent", "16", "--lr", "0.001"];
        match torch_epochs(args.conv_epochs, &args.data_dir, &conv) {
            Ok(t) => {
                let best = |v: &Value| {
                    v.as_array().map(|a| {
                        a.iter()
                            .filter_map(|e| e["seconds"].as_f64())
                            .fold(f64::INFINITY, f64::min)
                    })
                };
                let (ours, theirs) = (best(&json!(epochs)), best(&t["epochs"]));
                json!({"torch": t["torch"], "threads": t["threads"], "epochs": t["epochs"],
                    "ratio_ours_over_torch": ours.zip(theirs).map(|(a, b)| a / b)})
            }
            Err(why) => json!({"skipped": why}),
        }
    };
    Ok((rows, epochs, peer))
}

fn conv_markdown(rows: &[Value], epochs: &[Value], peer: &Value) -> String {
    let g = |r: &Value, k: &str| r[k].as_f64().map_or("–".to_string(), |v| format!("{v:.1}"));
    let mut md = String::from(
        "\n`--conv 32,64 --latent 16`, batch 128, GFLOP/s per pass (direct / gemm, the chosen one \
         marked *), PyTorch's CPU convolution of the same shape (scripts/torch_conv_bench.py):\n\n\
         | layer | forward | input grad | weight grad | PyTorch forward | PyTorch backward |\n\
         |---|---|---|---|---|---|\n",
    );
    for r in rows {
        let pass = |name: &str| {
            let chosen = r[format!("{name}_chosen")].as_str().unwrap_or("");
            let mark = |f: &str| if f == chosen { "*" } else { "" };
            format!(
                "{}{} / {}{}",
                g(r, &format!("{name}_direct_gflops")),
                mark("direct"),
                g(r, &format!("{name}_gemm_gflops")),
                mark("gemm")
            )
        };
        md += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r["layer"].as_str().unwrap_or(""),
            pass("forward"),
            pass("input_grad"),
            pass("weight_grad"),
            g(r, "torch_forward_gflops"),
            g(r, "torch_backward_gflops")
        );
    }
    for e in epochs {
        md += &format!(
            "\nConv epoch {}: {:.1} s ({} dispatches per step), train {:.2}, test {:.2}.",
            e["epoch"],
            e["seconds"].as_f64().unwrap_or(0.0),
            e["dispatches"],
            e["train_loss"].as_f64().unwrap_or(0.0),
            e["test_loss"].as_f64().unwrap_or(0.0)
        );
    }
    if let Some(r) = peer["ratio_ours_over_torch"].as_f64() {
        let t = peer["epochs"]
            .as_array()
            .and_then(|a| a.first())
            .cloned()
            .unwrap_or_default();
        md += &format!(
            " PyTorch {} ({} threads), same model, same run: {:.1} s, train {:.2}, test {:.2}; ours / PyTorch = {:.2}.\n",
            peer["torch"].as_str().unwrap_or("?"),
            peer["threads"],
            t["seconds"].as_f64().unwrap_or(0.0),
            t["train_loss"].as_f64().unwrap_or(0.0),
            t["test_loss"].as_f64().unwrap_or(0.0),
            r
        );
    } else if let Some(why) = peer["skipped"].as_str() {
        md += &format!(" PyTorch conv epochs: {why}.\n");
    }
    md
}

/// The cold start as a user meets it: `vae-wgpu train --epochs 1` run three times in fresh cache
/// folders — a first run ever (an empty autotune cache and an empty driver shader cache), then the
/// autotune's choices kept with the driver's cache empty (drivers such as lavapipe compile each
/// pipeline at its first dispatch), then both kept — each split as the trainer reports it after
/// its first loss (data, device, planning and autotune, first steps). One row per run, or why not.
fn cold_start(args: &Args) -> Vec<Value> {
    let exe = std::env::current_exe().ok();
    // target/<profile>/examples/gpu_report -> target/<profile>/vae-wgpu
    let bin = exe
        .as_deref()
        .and_then(|e| e.parent()?.parent())
        .map(|d| d.join(format!("vae-wgpu{}", std::env::consts::EXE_SUFFIX)));
    let Some(bin) = bin.filter(|b| b.is_file()) else {
        return vec![
            json!({"skipped": "the vae-wgpu binary is not beside this example's folder: \
            build it with `cargo build --release` (scripts/gpu_report.sh does)"}),
        ];
    };
    let root = std::env::temp_dir().join(format!("vae-wgpu-cold-start-{}", std::process::id()));
    let runs = [
        ("first run ever (both caches empty)", "driver-1"),
        ("autotune cache kept, driver shader cache empty", "driver-2"),
        ("both caches kept", "driver-2"),
    ];
    let mut rows = Vec::new();
    for (i, (caches, driver)) in runs.into_iter().enumerate() {
        let mut cmd = std::process::Command::new(&bin);
        cmd.args([
            "train",
            "--epochs",
            "1",
            "--no-tsne",
            "--no-test",
            "--data-dir",
        ])
        .arg(&args.data_dir)
        .arg("--out")
        .arg(root.join(format!("run-{i}")))
        .env("VAE_WGPU_CACHE_DIR", root.join("autotune"))
        // Mesa's and NVIDIA's on-disk shader caches; other drivers keep their own.
        .env("MESA_SHADER_CACHE_DIR", root.join(driver))
        .env("__GL_SHADER_DISK_CACHE_PATH", root.join(driver))
        .env_remove("MESA_SHADER_CACHE_DISABLE");
        if let Some(b) = &args.device.backend {
            cmd.args(["--backend", b]);
        }
        if let Some(a) = &args.device.adapter {
            cmd.args(["--adapter", a]);
        }
        let row = match cmd.output() {
            Err(e) => {
                json!({"caches": caches, "skipped": format!("{} did not start: {e}", bin.display())})
            }
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr);
                match text.lines().find_map(FirstLoss::parse) {
                    Some(f) => json!({
                        "caches": caches, "first_loss_s": f.total, "data_s": f.data,
                        "device_s": f.device, "planning_and_autotune_s": f.planning,
                        "first_steps_s": f.first_steps}),
                    None => json!({"caches": caches, "skipped": format!(
                        "no first-loss line from the trainer (exit {}): {}",
                        out.status, text.lines().last().unwrap_or(""))}),
                }
            }
        };
        println!("cold start: {row}");
        rows.push(row);
    }
    let _ = std::fs::remove_dir_all(&root);
    rows
}

fn cold_start_markdown(rows: &[Value]) -> String {
    let mut md = String::from(
        "\nCold start (`vae-wgpu train --epochs 1` in fresh cache folders, as the trainer splits \
         its first loss), seconds:\n\n| caches | first loss | data | device | planning and autotune \
         | first steps |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let f = |k: &str| r[k].as_f64().map_or("—".to_string(), |v| format!("{v:.2}"));
        match r["skipped"].as_str() {
            Some(why) => {
                md += &format!(
                    "| {} | {why} | | | | |\n",
                    r["caches"].as_str().unwrap_or("")
                )
            }
            None => {
                md += &format!(
                    "| {} | {} | {} | {} | {} | {} |\n",
                    r["caches"].as_str().unwrap_or(""),
                    f("first_loss_s"),
                    f("data_s"),
                    f("device_s"),
                    f("planning_and_autotune_s"),
                    f("first_steps_s")
                )
            }
        }
    }
    md
}
