//! The programs as a user meets them: bad data, bad checkpoints, absurd flags, a diverging run and
//! an interrupted run each end with a non-zero exit status and a message that names the problem —
//! never a panic. Runs the `vae-wgpu` binary (the same code as the examples) on tiny data sets.

mod common;

use common::programs::{BIN, Dir, fails_with, run, tiny_mnist, train_args};
use common::{gz, idx_bytes};
use std::path::PathBuf;
use std::process::Command;
use vae_wgpu::model::{Checkpoint, ParamLayout};

#[test]
fn bad_data_is_named_with_what_was_expected() {
    let dir = Dir::new("data");
    let good = tiny_mnist(&dir, 200, 50);
    let out = dir.path("out");
    let (g, o) = (good.to_str().unwrap(), out.to_str().unwrap());
    fails_with(
        &run(&train_args("/no/such/dir", o, &[])),
        &["/no/such/dir", "data directory not found"],
    );

    let variant = |name: &str, file: &str, bytes: Vec<u8>| -> PathBuf {
        let d = dir.path(name);
        std::fs::create_dir_all(&d).unwrap();
        for f in std::fs::read_dir(&good).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), d.join(f.file_name())).unwrap();
        }
        std::fs::write(d.join(file), bytes).unwrap();
        d
    };
    let train_img = "train-images-idx3-ubyte.gz";
    let train_lbl = "train-labels-idx1-ubyte.gz";
    let raw_imgs = idx_bytes(&[200, 28, 28], &vec![7u8; 200 * 784]);
    let cases: Vec<(PathBuf, Vec<&str>)> = vec![
        (
            variant("trunc", train_img, gz(&raw_imgs[..raw_imgs.len() - 100])),
            vec![train_img, "truncated"],
        ),
        (
            variant(
                "magic",
                train_img,
                gz(&[&[0x12, 0x34, 8, 3][..], &raw_imgs[4..]].concat()),
            ),
            vec![train_img, "wrong magic"],
        ),
        (
            variant(
                "dims",
                train_img,
                gz(&idx_bytes(&[200, 20, 20], &vec![0u8; 200 * 400])),
            ),
            // Caught at load, before any GPU work: the splits disagree.
            vec![
                "t10k-images-idx3-ubyte.gz",
                "training images are 20x20",
                "28x28",
            ],
        ),
        (
            variant("count", train_lbl, gz(&idx_bytes(&[150], &[1u8; 150]))),
            vec![train_lbl, "150 labels", "200 images"],
        ),
        (
            variant(
                "label",
                train_lbl,
                gz(&idx_bytes(&[200], &[[3u8; 199].as_slice(), &[12]].concat())),
            ),
            vec![train_lbl, "label 12"],
        ),
        (
            variant("gzip", train_img, {
                let mut b = gz(&raw_imgs);
                let n = b.len();
                b[n / 2] ^= 0x55;
                b.truncate(n - 8);
                b
            }),
            vec![train_img, "corrupt gzip"],
        ),
    ];
    for (d, needles) in cases {
        fails_with(&run(&train_args(d.to_str().unwrap(), o, &[])), &needles);
    }
    // The good tiny set trains (a sanity check that the failures above are about the data).
    let ok = run(&train_args(g, o, &["--epochs", "1", "--batch-size", "64"]));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[test]
fn absurd_flags_are_refused_before_gpu_work() {
    let dir = Dir::new("flags");
    let data = tiny_mnist(&dir, 100, 20);
    let (d, o) = (data.to_str().unwrap(), dir.path("out"));
    let o = o.to_str().unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (&["--batch-size", "0"], &["--batch-size must be at least 1"]),
        (
            &["--batch-size", "1000"],
            &[
                "--batch-size 1000",
                "larger than the training set (100 images)",
            ],
        ),
        (&["--lr", "0"], &["--lr must be a finite number > 0"]),
        (&["--lr=-1"], &["--lr must be a finite number > 0"]),
        // A negative number after a space is a value, not an unknown flag.
        (
            &["--lr", "-1"],
            &["--lr must be a finite number > 0", "got -1"],
        ),
        // Printed as given, not as the f32 it rounds to (0).
        (&["--lr", "1e-50"], &["got 1e-50"]),
        (&["--lr", "NaN"], &["--lr must be a finite number > 0"]),
        (&["--lr", "inf"], &["--lr must be a finite number > 0"]),
        (&["--latent", "0"], &["--latent must be at least 1"]),
        (&["--hidden", "0"], &["--hidden must be at least 1"]),
        (&["--epochs", "0"], &["--epochs must be at least 1"]),
        (&["--samples", "0"], &["--samples must be at least 1"]),
        (&["--hidden", "400000"], &["parameters", "limit"]),
        (&["--backend", "quantum"], &["unknown backend 'quantum'"]),
        // The optimizer's flags, each named.
        (
            &["--optimizer", "rmsprop"],
            &["--optimizer must be one of adam, adamw, sgd, got 'rmsprop'"],
        ),
        (
            &["--weight-decay", "-0.1"],
            &["--weight-decay must be a finite number ≥ 0"],
        ),
        (
            &["--optimizer", "sgd", "--momentum", "1"],
            &["--momentum must be in [0, 1), got 1"],
        ),
        (&["--momentum", "0.9"], &["--momentum is SGD's"]),
        (
            &["--optimizer", "sgd", "--nesterov"],
            &["--nesterov needs a momentum > 0"],
        ),
        (
            &["--lr-schedule", "linear"],
            &["--lr-schedule must be constant or cosine, got 'linear'"],
        ),
        (&["--warmup-steps", "-3"], &["--warmup-steps must be ≥ 0"]),
        (
            &["--clip-grad-norm", "0"],
            &["--clip-grad-norm must be a finite number > 0"],
        ),
        (
            &["--clip-grad-norm", "NaN"],
            &["--clip-grad-norm must be a finite number > 0"],
        ),
        // Fits the host, not one storage binding: the logits alone are 100·1000·784·4 bytes.
        (
            &["--samples", "1000", "--batch-size", "100"],
            &["logits", "max_storage_buffer_binding_size"],
        ),
    ];
    for (flags, needles) in cases {
        fails_with(&run(&train_args(d, o, flags)), needles);
    }
}

#[test]
fn bad_checkpoints_divergence_and_interruption() {
    let dir = Dir::new("ckpt");
    let data = tiny_mnist(&dir, 300, 40);
    let d = data.to_str().unwrap();
    let out = dir.path("run");
    let o = out.to_str().unwrap();
    // A good run: 1 epoch, checkpoint written.
    let ok = run(&train_args(
        d,
        o,
        &["--epochs", "1", "--batch-size", "64", "--hidden", "50"],
    ));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let ckpt = out.join("checkpoint.safetensors");
    let good = std::fs::read(&ckpt).unwrap();
    let c = ckpt.to_str().unwrap();

    // Checkpoint problems.
    fails_with(
        &run(&train_args(d, o, &["--resume", "/no/such.safetensors"])),
        &["/no/such.safetensors"],
    );
    let bad = dir.path("bad.safetensors");
    let b = bad.to_str().unwrap();
    std::fs::write(&bad, b"this is not a safetensors file at all").unwrap();
    fails_with(
        &run(&train_args(d, o, &["--resume", b])),
        &["bad.safetensors", "not a readable safetensors file"],
    );
    std::fs::write(&bad, &good[..good.len() - 1000]).unwrap();
    fails_with(
        &run(&train_args(d, o, &["--resume", b])),
        &["bad.safetensors", "not a readable safetensors file"],
    );
    // Rename a tensor in the JSON header (same length, so offsets stay valid).
    let key = b"\"dec_mu.bias\"";
    let at = good
        .windows(key.len())
        .position(|w| w == key)
        .expect("tensor name in header");
    let mut renamed = good.clone();
    renamed[at + key.len() - 2] = b'_';
    std::fs::write(&bad, &renamed).unwrap();
    fails_with(
        &run(&train_args(d, o, &["--resume", b])),
        &["missing tensor 'dec_mu.bias'"],
    );
    fails_with(
        &run(&train_args(d, o, &["--resume", c, "--hidden", "60"])),
        &["--hidden 60", "contradicts the checkpoint"],
    );

    // Divergence: the run stops with epoch and step, and the good checkpoint is left as it was.
    let div = run(&train_args(
        d,
        o,
        &["--resume", c, "--epochs", "3", "--lr", "1e6"],
    ));
    fails_with(&div, &["diverged", "epoch 2, step", "Lower --lr"]);
    assert_eq!(
        std::fs::read(&ckpt).unwrap(),
        good,
        "a diverging run must not overwrite the last good checkpoint"
    );

    // Eval and pictures on the same bad inputs.
    fails_with(
        &run(&["eval", "--checkpoint", b, "--data-dir", d]),
        &["bad.safetensors"],
    );
    fails_with(
        &run(&[
            "pictures",
            "--checkpoint",
            "/no/such.safetensors",
            "--data-dir",
            d,
        ]),
        &["/no/such.safetensors"],
    );
    fails_with(
        &run(&[
            "eval",
            "--checkpoint",
            c,
            "--data-dir",
            d,
            "--iw-samples",
            "0",
        ]),
        &["at least 1"],
    );
    let ev = run(&[
        "eval",
        "--checkpoint",
        c,
        "--data-dir",
        d,
        "--elbo-samples",
        "2",
        "--iw-samples",
        "3",
    ]);
    assert!(
        ev.status.success(),
        "{}",
        String::from_utf8_lossy(&ev.stderr)
    );
    assert!(String::from_utf8_lossy(&ev.stdout).contains("IWAE, k =   3"));
}

#[cfg(unix)]
#[test]
fn sigint_checkpoints_and_resume_continues() {
    interrupt_checkpoints_and_resume_continues("INT");
}

#[cfg(unix)]
#[test]
fn sigterm_checkpoints_and_resume_continues() {
    interrupt_checkpoints_and_resume_continues("TERM");
}

#[cfg(unix)]
fn interrupt_checkpoints_and_resume_continues(signal: &str) {
    let dir = Dir::new(&format!("sig{signal}"));
    let data = tiny_mnist(&dir, 256, 40);
    let d = data.to_str().unwrap();
    let out = dir.path("run");
    let o = out.to_str().unwrap();
    let xdg = std::env::temp_dir().join(format!("vae-wgpu-xdg-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&xdg);
    let mut child = Command::new(BIN)
        .args([
            "train",
            "--data-dir",
            d,
            "--out",
            o,
            "--no-tsne",
            "--epochs",
            "100000",
            "--batch-size",
            "32",
            "--no-test",
            "--log-every",
            "0",
        ])
        .env("XDG_RUNTIME_DIR", &xdg)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first epoch's checkpoint, so the signal lands mid-training.
    let ckpt = out.join("checkpoint.safetensors");
    let start = std::time::Instant::now();
    while !ckpt.exists() && start.elapsed().as_secs() < 120 {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "training exited early ({status}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(ckpt.exists(), "no checkpoint after 120 s");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let res = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(130), "stderr:\n{err}");
    // The signal lands mid-epoch or during the epoch's test pass: either way the run stops at
    // the next safe point with a checkpoint and says how to resume.
    assert!(
        (err.contains("interrupted before step") || err.contains("interrupted after epoch"))
            && err.contains("resume with:")
            && err.contains("--resume"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let c = vae_wgpu::model::Checkpoint::load(&ckpt).unwrap();
    let done = c.progress.epoch;
    // Resume and finish one more epoch.
    let target = (done + 1).to_string();
    let r = run(&[
        "train",
        "--data-dir",
        d,
        "--resume",
        ckpt.to_str().unwrap(),
        "--epochs",
        &target,
        "--no-test",
        "--no-tsne",
        "--log-every",
        "0",
    ]);
    let so = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(
        so.contains("resumed from") && so.contains(&format!("trained to epoch {target}")),
        "{so}"
    );
}

// Every optimizer's state, its schedule's position and the clipping survive a checkpoint: SGD
// with Nesterov momentum and a warm-up, clipped, trained 2 epochs in one run and 1 + 1 with a
// resume, gives the same weights bit for bit (a warm-up does not depend on the run's length; a
// cosine spans the --epochs of the command that trains, recorded in the checkpoint); resuming it
// with another optimizer is refused naming both.
#[test]
fn optimizer_state_resumes_exactly_and_another_optimizer_is_refused() {
    let dir = Dir::new("optim_resume");
    let data = tiny_mnist(&dir, 100, 20);
    let d = data.to_str().unwrap();
    let flags = [
        "--optimizer",
        "sgd",
        "--lr",
        "0.0001",
        "--momentum",
        "0.9",
        "--nesterov",
        "--warmup-steps",
        "10",
        "--clip-grad-norm",
        "200",
        "--batch-size",
        "16",
        "--hidden",
        "32",
        "--no-test",
    ];
    let (whole, split) = (dir.path("whole"), dir.path("split"));
    let (w, s) = (whole.to_str().unwrap(), split.to_str().unwrap());
    let ok = |out: std::process::Output| {
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{err}");
        String::from_utf8_lossy(&out.stdout).to_string() + &err
    };
    let said = ok(run(&train_args(
        d,
        w,
        &[&flags[..], &["--epochs", "2"]].concat(),
    )));
    assert!(
        said.contains(
            "sgd lr 0.0001 momentum 0.9 (nesterov), constant schedule over 14 steps (10 \
             warm-up), gradients clipped to norm 200"
        ),
        "{said}"
    );
    ok(run(&train_args(
        d,
        s,
        &[&flags[..], &["--epochs", "1"]].concat(),
    )));
    let ckpt = split.join("checkpoint.safetensors");
    let c = ckpt.to_str().unwrap();
    let one = vae_wgpu::model::Checkpoint::load(&ckpt).unwrap();
    let o = one.optimizer.as_ref().unwrap();
    assert_eq!(o.config.state_names(), ["momentum_buffer"]);
    assert_eq!((o.steps, o.config.schedule.total_steps), (7, 7));
    assert_eq!(o.config.schedule.warmup_steps, 10);
    assert!(o.state[0].iter().any(|&v| v != 0.0));
    let refused = run(&[
        "train",
        "--resume",
        c,
        "--data-dir",
        d,
        "--epochs",
        "2",
        "--optimizer",
        "adam",
    ]);
    fails_with(&refused, &["trained with sgd, not adam", "--optimizer sgd"]);
    ok(run(&[
        "train",
        "--resume",
        c,
        "--data-dir",
        d,
        "--epochs",
        "2",
        "--no-tsne",
        "--no-test",
    ]));
    let a = vae_wgpu::model::Checkpoint::load(&whole.join("checkpoint.safetensors")).unwrap();
    let b = vae_wgpu::model::Checkpoint::load(&ckpt).unwrap();
    assert_eq!(b.optimizer.as_ref().unwrap().steps, 14);
    assert!(
        a.params == b.params,
        "2 epochs in one run and 1 + 1 resumed differ"
    );
    assert_eq!(a.optimizer, b.optimizer, "the optimizer's state differs");
}

// Residual blocks as a user runs them: trained, checkpointed with their modules' names and the
// architecture in the metadata, resumed (a different --res-blocks refused, naming both),
// evaluated; conv blocks with --conv; refused with --conditional, naming the flag.
#[test]
fn residual_blocks_train_resume_and_evaluate() {
    let dir = Dir::new("res_blocks");
    let data = tiny_mnist(&dir, 100, 20);
    let d = data.to_str().unwrap();
    let out = dir.path("run");
    let o = out.to_str().unwrap();
    let flags = [
        "--hidden",
        "32",
        "--res-blocks",
        "32,16",
        "--latent",
        "4",
        "--batch-size",
        "25",
        "--epochs",
        "1",
    ];
    let res = run(&train_args(d, o, &flags));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{err}");
    let said = String::from_utf8_lossy(&res.stdout);
    assert!(
        said.contains("784-32-4 relu, residual blocks 32,16"),
        "{said}"
    );
    let ckpt = out.join("checkpoint.safetensors");
    let c = vae_wgpu::model::Checkpoint::load(&ckpt).unwrap();
    assert_eq!(c.cfg.res_blocks, [32, 16]);
    let layout = ParamLayout::new(&c.cfg);
    let names: Vec<&str> = (layout.specs.iter())
        .map(|s| s.name.as_str())
        .filter(|n| n.contains("blocks.1"))
        .map(|n| &n[..n.rfind('.').unwrap()])
        .collect();
    assert_eq!(
        names,
        [
            "enc_blocks.1.fc1",
            "enc_blocks.1.fc1",
            "enc_blocks.1.fc2",
            "enc_blocks.1.fc2",
            "enc_blocks.1.shortcut",
            "enc_blocks.1.shortcut",
            "dec_blocks.1.fc1",
            "dec_blocks.1.fc1",
            "dec_blocks.1.fc2",
            "dec_blocks.1.fc2",
            "dec_blocks.1.shortcut",
            "dec_blocks.1.shortcut",
        ]
    );
    let c_path = ckpt.to_str().unwrap();
    let refused = run(&[
        "train",
        "--resume",
        c_path,
        "--data-dir",
        d,
        "--epochs",
        "2",
        "--res-blocks",
        "8",
    ]);
    fails_with(&refused, &["--res-blocks 8", "32,16"]);
    let resumed = run(&[
        "train",
        "--resume",
        c_path,
        "--data-dir",
        d,
        "--epochs",
        "2",
        "--no-tsne",
    ]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let eval = run(&["eval", "--checkpoint", c_path, "--iw-samples", "2"]);
    let said = String::from_utf8_lossy(&eval.stdout);
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    assert!(said.contains("-ELBO"), "{said}");
    // With --conv: blocks of 3x3 convolutions after the last one, a 1x1 conv_shortcut where the
    // channels change (4 -> 8), under diffusers' module names.
    let conv_out = dir.path("conv_run");
    let flags = [
        "--conv",
        "4",
        "--res-blocks",
        "8",
        "--latent",
        "4",
        "--batch-size",
        "25",
        "--epochs",
        "1",
    ];
    let conv = run(&train_args(d, conv_out.to_str().unwrap(), &flags));
    assert!(
        conv.status.success(),
        "{}",
        String::from_utf8_lossy(&conv.stderr)
    );
    let c = vae_wgpu::model::Checkpoint::load(&conv_out.join("checkpoint.safetensors")).unwrap();
    assert_eq!(c.cfg.res_blocks, [8]);
    let shortcut = (ParamLayout::new(&c.cfg).specs.into_iter())
        .find(|s| s.name == "enc_blocks.0.conv_shortcut.weight")
        .map(|s| s.shape);
    assert_eq!(shortcut, Some(vec![8, 4, 1, 1]));
    let conditional = run(&train_args(d, o, &["--conditional", "--res-blocks", "8"]));
    fails_with(&conditional, &["--res-blocks", "unconditional models"]);
}

// Hostile class "silent wrong results" (a): images of another shape with the same pixel count
// (56x28 for a model of 28x56) are refused by eval and by a resume, naming both shapes; and
// (abort) an export of more epochs than its shuffles can be carried in is refused before any
// allocation, huge counts included.
#[test]
fn data_of_another_shape_and_absurd_export_epochs_are_refused() {
    let dir = Dir::new("geometry");
    let idx_set = |name: &str, rows: u32, cols: u32| -> PathBuf {
        let d = dir.path(name);
        std::fs::create_dir_all(&d).unwrap();
        for (split, n) in [("train", 64u32), ("t10k", 16)] {
            let px: Vec<u8> = (0..n * rows * cols).map(|i| (i * 37 % 251) as u8).collect();
            let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
            let images = gz(&idx_bytes(&[n, rows, cols], &px));
            std::fs::write(d.join(format!("{split}-images-idx3-ubyte.gz")), images).unwrap();
            let lbl = gz(&idx_bytes(&[n], &labels));
            std::fs::write(d.join(format!("{split}-labels-idx1-ubyte.gz")), lbl).unwrap();
        }
        d
    };
    let (wide, tall) = (idx_set("wide", 28, 56), idx_set("tall", 56, 28));
    let (w, t) = (wide.to_str().unwrap(), tall.to_str().unwrap());
    let run_dir = dir.path("run");
    let o = run_dir.to_str().unwrap();
    let flags = [
        "--conv",
        "4",
        "--latent",
        "2",
        "--epochs",
        "1",
        "--batch-size",
        "16",
    ];
    let trained = run(&train_args(w, o, &flags));
    assert!(
        trained.status.success(),
        "{}",
        String::from_utf8_lossy(&trained.stderr)
    );
    let ckpt = run_dir.join("checkpoint.safetensors");
    let c = ckpt.to_str().unwrap();
    let needles = ["holds 56x28 images", "trained on 28x56 images"];
    fails_with(
        &run(&["eval", "--checkpoint", c, "--data-dir", t]),
        &needles,
    );
    let resume = ["train", "--resume", c, "--data-dir", t, "--epochs", "2"];
    fails_with(&run(&resume), &needles);
    // The shuffles of 64 images take 256 bytes an epoch.
    let out = dir.path("plan");
    let p = out.to_str().unwrap();
    for epochs in ["100000000", "4611686018427387904"] {
        let export = run(&[
            "export-web",
            "--data-dir",
            w,
            "--out",
            p,
            "--batch-size",
            "16",
            "--epochs",
            epochs,
        ]);
        fails_with(
            &export,
            &[
                &format!("--epochs {epochs} is too many to export"),
                "at most",
            ],
        );
    }
}

// Hostile class "wrong or unclear messages", five of its cases: eval's huge sample counts named
// by eval's flags; a checkpoint stopped inside an
// epoch that --epochs does not reach says so and writes nothing; --sigma on a learned-σ Gaussian
// checkpoint names the checkpoint's likelihood, not the default one; a state_dict that cannot be
// written is named as such, the checkpoint said to hold its epoch; --reference-steps past the
// first epoch is refused instead of shortened silently.
#[test]
fn wrong_or_unclear_messages_say_what_is_true() {
    let dir = Dir::new("messages");
    let data = tiny_mnist(&dir, 100, 20);
    let d = data.to_str().unwrap();
    let out = dir.path("run");
    let o = out.to_str().unwrap();
    let flags = [
        "--hidden",
        "8",
        "--latent",
        "2",
        "--batch-size",
        "20",
        "--epochs",
        "1",
        "--likelihood",
        "gaussian",
    ];
    vae_wgpu_ok(&run(&train_args(d, o, &flags)));
    let ckpt = out.join("checkpoint.safetensors");
    let c = ckpt.to_str().unwrap();
    // Stopped at step 2 of epoch 2 (edited as a Ctrl-C would have left it), resumed to 1 epoch.
    let mut k = Checkpoint::load(&ckpt).unwrap();
    k.progress.step_in_epoch = 2;
    let mid = dir.path("mid.safetensors");
    k.save(&mid).unwrap();
    let before = std::fs::read(&mid).unwrap();
    let r = run(&[
        "train",
        "--resume",
        mid.to_str().unwrap(),
        "--data-dir",
        d,
        "--epochs",
        "1",
    ]);
    let said = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(
        said.contains("stopped at step 2 of epoch 2, past the 1 epoch(s)")
            && said.contains("nothing written")
            && said.contains("--epochs 2"),
        "{said}"
    );
    assert_eq!(
        std::fs::read(&mid).unwrap(),
        before,
        "the checkpoint is untouched"
    );
    // The checkpoint's batch size (20) on a training set of 10 images: said to be the
    // checkpoint's, not a --batch-size that was never given.
    let ten_dir = Dir::new("messages-ten");
    let ten = tiny_mnist(&ten_dir, 10, 5);
    let r = run(&[
        "train",
        "--resume",
        c,
        "--data-dir",
        ten.to_str().unwrap(),
        "--epochs",
        "2",
        "--out",
        ten_dir.path("run").to_str().unwrap(),
    ]);
    fails_with(
        &r,
        &["the checkpoint's batch size 20 is larger than the training set (10 images)"],
    );
    assert!(
        !String::from_utf8_lossy(&r.stderr).contains("--batch-size 20"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    // --sigma on a learned-σ checkpoint.
    let r = run(&[
        "train",
        "--resume",
        c,
        "--data-dir",
        d,
        "--epochs",
        "2",
        "--sigma",
        "0.5",
    ]);
    fails_with(&r, &["gaussian (σ = 0.5)", "gaussian (learned σ)"]);
    // A state_dict that cannot be written (its name links into a folder that does not exist).
    let blocked = dir.path("blocked");
    std::fs::create_dir_all(&blocked).unwrap();
    std::os::unix::fs::symlink(
        dir.path("no such folder").join("model.safetensors"),
        blocked.join("model.safetensors"),
    )
    .unwrap();
    let mut args = train_args(d, blocked.to_str().unwrap(), &flags);
    args.push("--overwrite");
    let r = run(&args);
    fails_with(
        &r,
        &[
            "model.safetensors of epoch 1",
            "checkpoint.safetensors holds epoch 1",
        ],
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        !err.contains("no checkpoint of this run was written"),
        "{err}"
    );
    assert_eq!(
        Checkpoint::load(&blocked.join("checkpoint.safetensors"))
            .unwrap()
            .progress
            .epoch,
        1
    );
    // losses.csv a link into a folder that does not exist: the error names losses.csv and the
    // link's target, not only a temporary file.
    let dangling = dir.path("dangling");
    std::fs::create_dir_all(&dangling).unwrap();
    let nowhere = dir.path("no such folder").join("x.csv");
    std::os::unix::fs::symlink(&nowhere, dangling.join("losses.csv")).unwrap();
    let mut args = train_args(d, dangling.to_str().unwrap(), &flags);
    args.push("--overwrite");
    fails_with(
        &run(&args),
        &[
            "losses.csv: could not write it, through its link to",
            &nowhere.display().to_string(),
        ],
    );
    // Huge sample counts for eval: named by eval's own flags, refused before any pass.
    for (flag, k) in [
        ("--iw-samples", "4611686018427387904"),
        ("--elbo-samples", "2000000"),
    ] {
        let r = run(&["eval", "--checkpoint", c, "--data-dir", d, flag, k]);
        fails_with(&r, &[&format!("{flag} {k} is absurdly large")]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!err.contains("--samples"), "{err}");
    }
    // --reference-steps past the first epoch (5 steps of 20 images).
    let plan = dir.path("plan");
    let r = run(&[
        "export-web",
        "--data-dir",
        d,
        "--out",
        plan.to_str().unwrap(),
        "--batch-size",
        "20",
        "--reference-steps",
        "100000000",
    ]);
    fails_with(
        &r,
        &["--reference-steps 100000000 exceeds the first epoch's 5 steps"],
    );
}

fn vae_wgpu_ok(r: &std::process::Output) {
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}
