//! A soak benchmark: the default model trained for `--epochs` (50) or `--minutes` (60), whichever
//! ends first, doing each epoch what `train --images-every-epoch` does (the test pass, a
//! checkpoint written, the pictures drawn and saved), and printing after each epoch its time, the
//! process's resident memory and what wgpu holds on the device (buffers and their bytes, bind
//! groups, pipelines, from wgpu's internal counters). A leak or a slowdown shows as a trend: the
//! last line compares the last quarter of the epochs with the first. `soak.csv` in `--out` keeps
//! the rows.
//!
//! ```text
//! cargo run --release --example soak -- --epochs 50 --minutes 60 --out soak
//! ```

use std::time::Instant;

use clap::Parser;
use vae_wgpu::data::load_splits;
use vae_wgpu::gpu::GpuContext;
use vae_wgpu::model::{EpochEnd, GpuDataset, TrainSettings, Trainer, VaeConfig};
use vae_wgpu::viz::pictures::{draw_grids, save_grids};

#[derive(Parser)]
#[command(about = "Train for a long time and watch memory and epoch time")]
struct Args {
    #[arg(long, default_value_t = 50)]
    epochs: usize,
    /// Stop after the epoch that passes this many minutes.
    #[arg(long, default_value_t = 60.0)]
    minutes: f64,
    #[arg(long, default_value = "soak")]
    out: std::path::PathBuf,
    #[arg(long, default_value = "data/mnist")]
    data_dir: std::path::PathBuf,
    #[command(flatten)]
    device: vae_wgpu::cli::DeviceArgs,
}

/// One epoch's measurements.
struct Row {
    epoch: usize,
    seconds: f64,
    rss: f64,
    buffers: f64,
    buffer_mib: f64,
    groups: f64,
}

/// The process's resident memory in MiB (Linux: /proc/self/status), NaN elsewhere.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let ctx = GpuContext::new(&args.device.options()?)?;
    println!("adapter: {}", ctx.adapter.short());
    std::fs::create_dir_all(&args.out)?;
    let (train, test) = load_splits(&args.data_dir)?;
    let cfg = VaeConfig::default();
    let settings = TrainSettings::default();
    let mut trainer = Trainer::new(&ctx, cfg.clone(), settings.clone(), &train)?;
    let test_gpu = GpuDataset::upload(&ctx, "test pixels", &test)?;
    let started = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    let mut csv = String::from(
        "epoch,epoch_seconds,train_loss,test_loss,rss_mib,gpu_buffers,gpu_buffer_mib,bind_groups,compute_pipelines\n",
    );
    println!(
        "{:>5} {:>8} {:>8} {:>8} {:>9} {:>8} {:>10} {:>11} {:>9}",
        "epoch",
        "seconds",
        "train",
        "test",
        "RSS MiB",
        "buffers",
        "buffer MiB",
        "bind groups",
        "pipelines"
    );
    while trainer.epoch < args.epochs && started.elapsed().as_secs_f64() < args.minutes * 60.0 {
        let s = match trainer.train_epoch(&ctx, &mut |_| {}, &mut || false)? {
            EpochEnd::Completed(s) => s,
            EpochEnd::Stopped { .. } => unreachable!("nothing stops the soak"),
        };
        let t = trainer.evaluate(&ctx, &test_gpu)?;
        let c = trainer.checkpoint(&ctx)?;
        c.save(&args.out.join("checkpoint.safetensors"))?;
        // Drawn once, for the files and the TensorBoard events, as `train` does.
        let grids = draw_grids(&ctx, &cfg, &c.params, &test, settings.seed)?;
        save_grids(&grids, &args.out, "")?;
        ctx.wait_idle("the epoch")?;
        let counters = ctx.device.get_internal_counters().hal;
        let (buffers, buffer_mib) = (
            counters.buffers.read() as f64,
            counters.buffer_memory.read() as f64 / (1 << 20) as f64,
        );
        let (groups, pipelines) = (
            counters.bind_groups.read() as f64,
            counters.compute_pipelines.read() as f64,
        );
        let rss = rss_mib();
        println!(
            "{:>5} {:>8.2} {:>8.2} {:>8.2} {:>9.1} {:>8} {:>10.1} {:>11} {:>9}",
            s.epoch, s.seconds, s.loss, t.loss, rss, buffers, buffer_mib, groups, pipelines
        );
        csv += &format!(
            "{},{:.3},{:.4},{:.4},{:.1},{buffers},{buffer_mib:.1},{groups},{pipelines}\n",
            s.epoch, s.seconds, s.loss, t.loss, rss
        );
        vae_wgpu::files::write_atomic(&args.out.join("soak.csv"), csv.as_bytes())?;
        rows.push(Row {
            epoch: s.epoch,
            seconds: s.seconds,
            rss,
            buffers,
            buffer_mib,
            groups,
        });
    }
    // The last quarter against the first (after the first epoch, which compiles and tunes).
    let n = rows.len();
    if n >= 5 {
        let q = (n / 4).max(1);
        let mean = |r: &[Row], f: fn(&Row) -> f64| r.iter().map(f).sum::<f64>() / r.len() as f64;
        let (first, last) = (&rows[1..1 + q], &rows[n - q..]);
        println!(
            "epochs {}–{} against {}–{}: epoch time {:.2} → {:.2} s, RSS {:.1} → {:.1} MiB, \
             GPU buffers {:.0} → {:.0} ({:.1} → {:.1} MiB), bind groups {:.0} → {:.0}",
            first[0].epoch,
            first[q - 1].epoch,
            last[0].epoch,
            last[q - 1].epoch,
            mean(first, |r| r.seconds),
            mean(last, |r| r.seconds),
            mean(first, |r| r.rss),
            mean(last, |r| r.rss),
            mean(first, |r| r.buffers),
            mean(last, |r| r.buffers),
            mean(first, |r| r.buffer_mib),
            mean(last, |r| r.buffer_mib),
            mean(first, |r| r.groups),
            mean(last, |r| r.groups),
        );
    }
    println!(
        "{} epochs in {:.0} s; rows in {}",
        n,
        started.elapsed().as_secs_f64(),
        args.out.join("soak.csv").display()
    );
    Ok(())
}
