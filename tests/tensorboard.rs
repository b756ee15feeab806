//! The trainer's TensorBoard event files read back by TensorBoard's own reader
//! (`scripts/read_tensorboard.py`: `EventAccumulator`, which verifies every record's CRC): the batch
//! loss at each log point as printed, each epoch's losses and parts as `losses.csv` has them, the
//! pictures after each epoch (the last epoch's byte for byte the run's picture files, each
//! epoch's the `--images-every-epoch` files), and a
//! resumed run's events continuing the same steps.
//!
//! The reader runs on `VAE_WGPU_PYTHON` (`scripts/test.sh` installs tensorboard into a virtual
//! environment and sets it), else `python3`; without tensorboard the test fails saying so.

mod common;

use std::path::Path;

use common::programs::{Dir, ok, run, tiny_mnist, train_args};

/// The run folder's events as TensorBoard reads them.
fn read_events(run_dir: &Path) -> serde_json::Value {
    let python = std::env::var("VAE_WGPU_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/read_tensorboard.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(run_dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e} (scripts/test.sh sets it up)"));
    assert!(
        out.status.success(),
        "TensorBoard's reader failed (pip install tensorboard, or run scripts/test.sh, which \
         installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the reader prints JSON")
}

/// (step, value) pairs of scalar `tag`.
fn scalars(ev: &serde_json::Value, tag: &str) -> Vec<(i64, f64)> {
    ev["scalars"][tag]
        .as_array()
        .unwrap_or_else(|| panic!("no scalar '{tag}' in {ev}"))
        .iter()
        .map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap()))
        .collect()
}

/// The printed batch losses, `[step/steps] batch loss: X`, in order.
fn printed_batch_losses(stdout: &str) -> Vec<f64> {
    stdout
        .lines()
        .filter_map(|l| l.split("batch loss: ").nth(1))
        .map(|v| v.trim().parse().unwrap())
        .collect()
}

#[test]
fn a_runs_tensorboard_events_hold_what_the_trainer_printed_and_wrote() {
    let dir = Dir::new("tensorboard");
    let data = tiny_mnist(&dir, 300, 60);
    let data = data.to_str().unwrap();
    let out = dir.path("run");
    let out_s = out.to_str().unwrap();
    // 6 steps an epoch, every one logged.
    let stdout = ok(&run(&train_args(
        data,
        out_s,
        &[
            "--epochs",
            "2",
            "--batch-size",
            "50",
            "--images-every-epoch",
        ],
    )));
    let ev = read_events(&out);

    let printed = printed_batch_losses(&stdout);
    let batch = scalars(&ev, "train/batch_loss");
    assert_eq!(printed.len(), 12, "{stdout}");
    assert_eq!(
        batch.iter().map(|p| p.0).collect::<Vec<_>>(),
        (1..=12).collect::<Vec<_>>(),
        "one batch loss per training step, numbered from 1"
    );
    for ((_, got), want) in batch.iter().zip(&printed) {
        assert!((got - want).abs() <= 0.005 + 1e-6 * want, "{got} vs {want}");
    }

    // Each epoch's row of losses.csv: train loss, recon, KL, test loss, objective.
    let csv = std::fs::read_to_string(out.join("losses.csv")).unwrap();
    let rows: Vec<Vec<f64>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    for (tag, col) in [
        ("epoch/train_loss", 1),
        ("epoch/train_recon", 2),
        ("epoch/train_kl", 3),
        ("epoch/test_loss", 4),
        ("epoch/train_objective", 6),
    ] {
        let s = scalars(&ev, tag);
        assert_eq!(s.len(), 2, "{tag}");
        for (e, (step, v)) in s.iter().enumerate() {
            let want = rows[e][col];
            assert_eq!(*step, e as i64 + 1, "{tag}: stepped by epoch");
            // losses.csv keeps 4 decimals, the event an f32.
            assert!(
                (v - want).abs() <= 1e-4 + 1e-6 * want.abs(),
                "{tag} epoch {step}: {v} vs {want}"
            );
        }
    }
    assert_eq!(scalars(&ev, "epoch/test_recon").len(), 2);

    // The pictures after each epoch; after the last, the very files the run wrote.
    for name in ["reconstructions", "samples"] {
        let imgs = ev["images"][format!("pictures/{name}")]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(imgs.len(), 2, "{name} after each epoch");
        let file = std::fs::read(out.join(format!("{name}.png"))).unwrap();
        let png = image::load_from_memory(&file).unwrap();
        let last = &imgs[1];
        assert_eq!(last[0].as_i64(), Some(2));
        assert_eq!(
            (last[1].as_u64().unwrap(), last[2].as_u64().unwrap()),
            (png.width() as u64, png.height() as u64),
            "{name}: width, height"
        );
        assert_eq!(
            last[3].as_u64(),
            Some(file.len() as u64),
            "{name}: the same PNG"
        );
        assert_eq!(last[4].as_bool(), Some(true), "{name}: PNG bytes");
        // --images-every-epoch saves the same drawing as each epoch's event.
        for (i, img) in imgs.iter().enumerate() {
            let epoch = std::fs::read(out.join(format!("{name}_epoch{}.png", i + 1))).unwrap();
            assert_eq!(
                img[3].as_u64(),
                Some(epoch.len() as u64),
                "{name} epoch {}",
                i + 1
            );
        }
    }

    // Resumed to epoch 3: a second event file, the steps going on from 13.
    let ck = out.join("checkpoint.safetensors");
    ok(&run(&train_args(
        data,
        out_s,
        &["--epochs", "3", "--resume", ck.to_str().unwrap()],
    )));
    let files = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
        })
        .count();
    assert_eq!(files, 2, "one event file per process");
    let ev = read_events(&out);
    let steps: Vec<i64> = scalars(&ev, "train/batch_loss")
        .iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(steps, (1..=18).collect::<Vec<_>>());
    let epochs: Vec<i64> = scalars(&ev, "epoch/train_loss")
        .iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(epochs, [1, 2, 3]);

    // --overwrite replaces the run: its old events go with it.
    ok(&run(&train_args(
        data,
        out_s,
        &["--epochs", "1", "--batch-size", "50", "--overwrite"],
    )));
    let ev = read_events(&out);
    assert_eq!(scalars(&ev, "epoch/train_loss").len(), 1);
}
