//! What a hostile tester tries, class by class, on the real programs: a closed stdout, poisoned
//! checkpoints, splits that disagree, shared output folders, unbounded reads, signals, odd flags.
//! Each case checks the exit status, the message and what is left on disk.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::programs::{BIN, Dir, fails_with, run, tiny_mnist, train_args};
use common::{gz, idx_bytes};
use vae_wgpu::model::Checkpoint;

/// One epoch on a tiny set into `dir/name`; returns the run folder.
fn trained(dir: &Dir, data: &Path, name: &str) -> PathBuf {
    let out = dir.path(name);
    let ok = run(&train_args(
        data.to_str().unwrap(),
        out.to_str().unwrap(),
        &["--epochs", "1", "--batch-size", "64", "--hidden", "40"],
    ));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    out
}

fn spawn(args: &[&str]) -> std::process::Child {
    Command::new(BIN)
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vae-wgpu")
}

type Lines = std::io::Lines<BufReader<std::process::ChildStdout>>;

/// Spawn, then read stdout until a line contains `needle` (the program is past its start-up: its
/// signal handler is in place). The reader is returned open: closing it would close stdout.
fn spawn_until(args: &[&str], needle: &str) -> (std::process::Child, Lines) {
    spawn_env_until(args, &[], needle)
}

fn signal(child: &std::process::Child, sig: &str) {
    assert!(
        Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
}

fn stderr_of(child: std::process::Child) -> (Option<i32>, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_stops_training_like_an_interrupt() {
    let dir = Dir::new("stdout");
    let data = tiny_mnist(&dir, 600, 40);
    let out = dir.path("run");
    let mut child = spawn(&train_args(
        data.to_str().unwrap(),
        out.to_str().unwrap(),
        &["--epochs", "50", "--batch-size", "32", "--hidden", "40"],
    ));
    // `train | head`: read up to the first batch loss (a step is done), then close the pipe.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while !lines.next().unwrap().unwrap().contains("batch loss") {}
    drop(lines);
    let (code, err) = stderr_of(child);
    assert_eq!(code, Some(141), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("stdout was closed") && err.contains("resume with"),
        "{err}"
    );
    let c = Checkpoint::load(&out.join("checkpoint.safetensors")).unwrap();
    assert!(c.progress.epoch < 50, "the run stopped early");

    // eval with its output closed at once: no panic, status 141.
    let ckpt = out.join("checkpoint.safetensors");
    let mut child = spawn(&[
        "eval",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--iw-samples",
        "2",
        "--elbo-samples",
        "2",
    ]);
    drop(child.stdout.take());
    let (code, err) = stderr_of(child);
    assert_eq!(code, Some(141), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn checkpoint_values_are_checked_and_blamed_on_the_file() {
    let dir = Dir::new("values");
    let data = tiny_mnist(&dir, 300, 40);
    let out = trained(&dir, &data, "run");
    let good = Checkpoint::load(&out.join("checkpoint.safetensors")).unwrap();
    let d = data.to_str().unwrap();
    let write = |name: &str, edit: &dyn Fn(&mut Checkpoint)| -> String {
        let mut c = good.clone();
        edit(&mut c);
        let p = dir.path(name);
        c.save(&p).unwrap();
        p.to_str().unwrap().to_string()
    };
    let o = dir.path("resumed");
    let o = o.to_str().unwrap();
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            write("nan.safetensors", &|c| c.params[7] = f32::NAN),
            vec!["linear_enc.weight", "non-finite", "index 7"],
        ),
        (
            // Finite but absurd: pictures would be blank, a resume diverge at once.
            write("huge.safetensors", &|c| c.params[11] = 1e30),
            vec!["linear_enc.weight", "past ±1e6", "index 11"],
        ),
        (
            write("inf_m.safetensors", &|c| {
                c.optimizer.as_mut().unwrap().state[0][3] = f32::INFINITY
            }),
            vec!["optimizer.exp_avg.linear_enc.weight", "index 3"],
        ),
        (
            write("neg_v.safetensors", &|c| {
                c.optimizer.as_mut().unwrap().state[1][0] = -1.0
            }),
            vec!["optimizer.exp_avg_sq.linear_enc.weight", "negative"],
        ),
        (
            write("beta2.safetensors", &|c| {
                c.optimizer.as_mut().unwrap().config.beta2 = 2.0
            }),
            vec!["metadata 'beta2' = 2", "out of range"],
        ),
        (
            write("eps.safetensors", &|c| {
                c.optimizer.as_mut().unwrap().config.eps = 1e30
            }),
            vec!["metadata 'eps'"],
        ),
        (
            write("wd.safetensors", &|c| {
                c.optimizer.as_mut().unwrap().config.weight_decay = f32::INFINITY
            }),
            vec!["metadata 'weight_decay'"],
        ),
        (
            write("acc.safetensors", &|c| {
                c.optimizer.as_mut().unwrap().loss_accumulator = vec![0.0; 3]
            }),
            vec!["trainer.loss_accumulator"],
        ),
        (
            write("epoch.safetensors", &|c| c.progress.epoch = usize::MAX),
            vec!["metadata 'epoch'", "out of range"],
        ),
    ];
    for (file, needles) in &cases {
        // Every program refuses the file, naming it and the bad value.
        let mut needles = needles.clone();
        needles.push(file);
        fails_with(
            &run(&["eval", "--checkpoint", file, "--data-dir", d]),
            &needles,
        );
        fails_with(
            &run(&train_args(d, o, &["--resume", file, "--epochs", "3"])),
            &needles,
        );
        fails_with(
            &run(&[
                "pictures",
                "--checkpoint",
                file,
                "--data-dir",
                d,
                "--out",
                o,
            ]),
            &needles,
        );
    }
    assert!(!Path::new(o).join("checkpoint.safetensors").exists());

    // A mid-epoch checkpoint resumed on a smaller data set, or with another seed, is refused.
    let mid = write("mid.safetensors", &|c| c.progress.step_in_epoch = 3);
    let small_dir = Dir::new("values-small");
    let small = tiny_mnist(&small_dir, 100, 40);
    fails_with(
        &run(&train_args(
            small.to_str().unwrap(),
            o,
            &["--resume", &mid, "--epochs", "3"],
        )),
        &["mid-epoch", "300 training images", "has 100"],
    );
    fails_with(
        &run(&train_args(d, o, &["--resume", &mid, "--seed", "5"])),
        &["mid-epoch", "seed 0, not 5"],
    );

    // A header that names a tensor twice: refused, with the same message every time.
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + n].to_vec()).unwrap();
    let dup = header.replacen("\"enc_mu.bias\"", "\"linear_enc.bias\"", 1);
    assert_ne!(dup, header);
    let mut file = (dup.len() as u64).to_le_bytes().to_vec();
    file.extend(dup.as_bytes());
    file.extend(&bytes[8 + n..]);
    let p = dir.path("dup.safetensors");
    std::fs::write(&p, file).unwrap();
    let msgs: Vec<String> = (0..3)
        .map(|_| {
            let r = run(&["eval", "--checkpoint", p.to_str().unwrap(), "--data-dir", d]);
            fails_with(&r, &["linear_enc.bias", "twice"]);
            String::from_utf8_lossy(&r.stderr).into_owned()
        })
        .collect();
    assert!(msgs.iter().all(|m| *m == msgs[0]), "{msgs:?}");
}

#[test]
fn splits_of_another_image_size_are_refused_before_training() {
    let dir = Dir::new("splits");
    let data = tiny_mnist(&dir, 200, 40);
    // Test images of 20x20 beside 28x28 training images.
    std::fs::write(
        data.join("t10k-images-idx3-ubyte.gz"),
        gz(&idx_bytes(&[40, 20, 20], &vec![7u8; 40 * 400])),
    )
    .unwrap();
    let out = dir.path("run");
    let start = std::time::Instant::now();
    fails_with(
        &run(&train_args(
            data.to_str().unwrap(),
            out.to_str().unwrap(),
            &[],
        )),
        &["t10k-images-idx3-ubyte.gz", "20x20", "28x28"],
    );
    assert!(start.elapsed().as_secs() < 30);
    assert!(!out.join("checkpoint.safetensors").exists());
}

#[test]
fn one_run_per_folder_and_the_folder_tells_the_truth() {
    let dir = Dir::new("folder");
    let data = tiny_mnist(&dir, 300, 40);
    let d = data.to_str().unwrap();
    let out = trained(&dir, &data, "run");
    let o = out.to_str().unwrap();
    let ckpt = out.join("checkpoint.safetensors");
    let before = std::fs::read(&ckpt).unwrap();
    // A new run into the old run's folder is refused and changes nothing.
    fails_with(
        &run(&train_args(d, o, &["--epochs", "1", "--hidden", "40"])),
        &[o, "already holds a run", "--overwrite", "--resume"],
    );
    assert_eq!(std::fs::read(&ckpt).unwrap(), before);

    // After a crash: losses.csv an epoch ahead of the checkpoint, no model.safetensors, a stale
    // temporary file. Resuming trims, rewrites and cleans.
    let csv = out.join("losses.csv");
    let mut text = std::fs::read_to_string(&csv).unwrap();
    text.push_str("2,1.0,1.0,1.0,1.0,1.0\n");
    std::fs::write(&csv, text).unwrap();
    std::fs::remove_file(out.join("model.safetensors")).unwrap();
    let stale = out.join(".checkpoint.safetensors.tmp-99999-0");
    std::fs::write(&stale, b"half a file").unwrap();
    let ck = ckpt.to_str().unwrap().to_string();
    let ok = run(&train_args(d, o, &["--resume", &ck, "--epochs", "2"]));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    let epochs: Vec<&str> = text.lines().skip(1).map(|l| &l[..2]).collect();
    assert_eq!(epochs, ["1,", "2,"], "{text}");
    assert!(out.join("model.safetensors").is_file());
    assert!(!stale.exists());
    assert!(!text.contains("1.0,1.0,1.0,1.0,1.0"), "{text}");

    // --overwrite replaces the run.
    let ok = run(&train_args(
        d,
        o,
        &["--epochs", "1", "--hidden", "40", "--overwrite"],
    ));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 2);

    // Two runs at once on one folder: the second is refused while the first holds it.
    let busy = dir.path("busy");
    let b = busy.to_str().unwrap();
    let (first, _lines) = spawn_until(
        &train_args(d, b, &["--epochs", "1000", "--hidden", "40"]),
        "matmul kernels",
    );
    fails_with(
        &run(&train_args(d, b, &["--epochs", "1", "--overwrite"])),
        &["in use by another run", &format!("pid {}", first.id())],
    );
    signal(&first, "-INT");
    let (code, err) = stderr_of(first);
    assert_eq!(code, Some(130), "{err}");

    // An output path that is a file: the message names it.
    let file = dir.path("a-file");
    std::fs::write(&file, b"x").unwrap();
    fails_with(
        &run(&train_args(d, file.to_str().unwrap(), &[])),
        &[file.to_str().unwrap()],
    );
}

#[test]
fn reads_are_bounded_and_never_hang() {
    let dir = Dir::new("reads");
    let data = tiny_mnist(&dir, 300, 40);
    let d = data.to_str().unwrap();
    let fifo = dir.path("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success(),
        "mkfifo"
    );
    for bad in [fifo.to_str().unwrap(), "/dev/zero"] {
        let start = std::time::Instant::now();
        fails_with(
            &run(&["eval", "--checkpoint", bad, "--data-dir", d]),
            &[bad, "not a regular file"],
        );
        assert!(start.elapsed().as_secs() < 30, "{bad} took too long");
    }
    // A FIFO in the autotune cache's place: a warning, and the run goes on.
    let cache = dir.path("cache");
    std::fs::create_dir_all(&cache).unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(cache.join("matmul-autotune.tsv"))
            .status()
            .unwrap()
            .success()
    );
    let out = dir.path("run");
    let r = Command::new(BIN)
        .args(train_args(
            d,
            out.to_str().unwrap(),
            &["--epochs", "1", "--hidden", "40"],
        ))
        .env("VAE_WGPU_CACHE_DIR", &cache)
        .env_remove("VAE_WGPU_MATMUL")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn signals_hints_and_driver_noise_are_handled() {
    let dir = Dir::new("signals dir");
    let data = tiny_mnist(&dir, 300, 200);
    let d = data.to_str().unwrap();
    let out = trained(&dir, &data, "run with space");
    // The resume hint quotes a path with spaces and names the program that ran.
    let (child, lines) = spawn_until(
        &train_args(
            d,
            out.to_str().unwrap(),
            &[
                "--resume",
                out.join("checkpoint.safetensors").to_str().unwrap(),
                "--epochs",
                "1000",
            ],
        ),
        "matmul kernels",
    );
    signal(&child, "-TERM");
    drop(lines);
    let (code, err) = stderr_of(child);
    assert_eq!(code, Some(130), "{err}");
    assert!(
        err.contains(&format!(
            "vae-wgpu train --resume '{}'",
            out.join("checkpoint.safetensors").display()
        )),
        "{err}"
    );
    // A long evaluation shows progress and stops on Ctrl-C with status 130.
    let (child, _lines) = spawn_until(
        &[
            "eval",
            "--checkpoint",
            out.join("checkpoint.safetensors").to_str().unwrap(),
            "--data-dir",
            d,
            "--iw-samples",
            "5000",
        ],
        "model:",
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    signal(&child, "-INT");
    let (code, err) = stderr_of(child);
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    // Without XDG_RUNTIME_DIR the only `error:` lines would be ours: a good run prints none.
    let r = Command::new(BIN)
        .args([
            "eval",
            "--checkpoint",
            out.join("checkpoint.safetensors").to_str().unwrap(),
            "--data-dir",
            d,
            "--iw-samples",
            "2",
            "--elbo-samples",
            "2",
        ])
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(!err.contains("error"), "{err}");
}

#[test]
fn a_resumed_run_prints_the_same_test_loss() {
    let dir = Dir::new("resume-eval");
    let data = tiny_mnist(&dir, 300, 100);
    let d = data.to_str().unwrap();
    let test_losses = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("====> Epoch"))
            .map(|l| l.split("test loss:").nth(1).unwrap()[..10].to_string())
            .collect()
    };
    let flags = ["--batch-size", "64", "--hidden", "40", "--seed", "3"];
    let mut straight = flags.to_vec();
    straight.extend(["--epochs", "2"]);
    let a = dir.path("a");
    let r = run(&train_args(d, a.to_str().unwrap(), &straight));
    assert!(r.status.success());
    let whole = test_losses(&String::from_utf8_lossy(&r.stdout));
    let b = dir.path("b");
    let mut first = flags.to_vec();
    first.extend(["--epochs", "1"]);
    assert!(
        run(&train_args(d, b.to_str().unwrap(), &first))
            .status
            .success()
    );
    let ck = b.join("checkpoint.safetensors");
    let r = run(&train_args(
        d,
        b.to_str().unwrap(),
        &["--resume", ck.to_str().unwrap(), "--epochs", "2"],
    ));
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let resumed = test_losses(&String::from_utf8_lossy(&r.stdout));
    assert_eq!(whole.len(), 2);
    assert_eq!(
        resumed,
        whole[1..],
        "epoch 2's test loss, straight vs resumed"
    );
}

#[test]
fn a_log_the_shell_created_does_not_make_a_folder_a_run() {
    // `train --out runs/x > runs/x/train.log`: the shell creates the log before the program
    // starts; the folder holds no run's file, so the run goes ahead.
    let dir = Dir::new("logged");
    let data = tiny_mnist(&dir, 300, 40);
    let out = dir.path("run");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("train.log"), b"").unwrap();
    let trained_here = trained(&dir, &data, "run");
    assert!(trained_here.join("checkpoint.safetensors").is_file());
    assert!(
        trained_here.join("train.log").is_file(),
        "the user's file is left alone"
    );
}

// Class 8 of the hostile rerun: every refusal names its flag, and nothing finished pretends to
// run. Folder options out of range name their flags; a finished run resumed to its own epoch
// count says it is complete and how to train further, and writes nothing (not into its own
// folder, not into a new --out).
#[test]
fn refusals_name_their_flags_and_a_finished_run_says_so() {
    let dir = Dir::new("hostile-class8");
    let data = tiny_mnist(&dir, 128, 32);
    let folder = dir.path("pictures");
    common::shapes::shape_folder(&folder, 2, 8, 8, 0);
    let folder = folder.to_str().unwrap();
    for (flag, value, needle) in [
        (
            "--image-size",
            "4096",
            "--image-size 4096 is outside 1..=1024",
        ),
        (
            "--channels",
            "2",
            "--channels 2 is not 1 (grayscale) or 3 (RGB)",
        ),
        (
            "--test-fraction",
            "1.5",
            "--test-fraction 1.5 is outside (0, 1)",
        ),
    ] {
        let out = dir.path(&format!("refused{flag}"));
        fails_with(
            &run(&train_args(folder, out.to_str().unwrap(), &[flag, value])),
            &[needle],
        );
    }
    fails_with(
        &run(&train_args(
            folder,
            dir.path("conv-cond").to_str().unwrap(),
            &["--conv", "4", "--conditional"],
        )),
        &["--conditional is built for dense models"],
    );

    let out = trained(&dir, &data, "done");
    let ck = out.join("checkpoint.safetensors");
    let files = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let before = files(&out);
    let mtime = std::fs::metadata(&ck).unwrap().modified().unwrap();
    let o = run(&["train", "--resume", ck.to_str().unwrap(), "--epochs", "1"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout.contains("has trained 1 epoch(s)")
            && stdout.contains("nothing to do")
            && stdout.contains("--epochs 6"),
        "{stdout}"
    );
    assert_eq!(files(&out), before, "nothing written into the run's folder");
    assert_eq!(std::fs::metadata(&ck).unwrap().modified().unwrap(), mtime);
    // An IWAE k past what one image's rows may hold on any adapter: refused before any work,
    // with the largest k that fits.
    fails_with(
        &run(&[
            "eval",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--iw-samples",
            "1000000",
        ]),
        &[
            "--iw-samples 1000000",
            "evaluated at once",
            "fit this adapter",
        ],
    );
    // samples = 1000 read from a checkpoint: the buffer that does not fit, where L came from and
    // the largest batch that fits; with a million, not even one image fits: the most samples that
    // do (a --samples given on resume overrides the checkpoint's).
    let mut many = Checkpoint::load(&ck).unwrap();
    many.cfg.samples = 1000;
    let many_path = dir.path("samples1000.safetensors");
    many.save(&many_path).unwrap();
    fails_with(
        &run(&train_args(
            data.to_str().unwrap(),
            dir.path("many").to_str().unwrap(),
            &["--resume", many_path.to_str().unwrap(), "--epochs", "2"],
        )),
        &[
            "storage buffer",
            "1000 samples per image, from the checkpoint,",
            "is the largest that fits the checkpoint's model",
        ],
    );
    let out = run(&train_args(
        data.to_str().unwrap(),
        dir.path("many").to_str().unwrap(),
        &[
            "--resume",
            many_path.to_str().unwrap(),
            "--epochs",
            "2",
            "--samples",
            "1000000",
        ],
    ));
    fails_with(
        &out,
        &[
            "not even 1 image a step fits with 1000000 samples per image",
            "at --batch-size 1",
        ],
    );
    // The largest L it names fits one image a step on this adapter, one more does not (the check
    // that planning makes before any allocation).
    let err = String::from_utf8_lossy(&out.stderr);
    let l: usize = err
        .split("at most --samples ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no --samples named: {err}"));
    for (l, fits) in [(l, true), (l + 1, false)] {
        let mut cfg = many.cfg.clone();
        cfg.samples = l;
        assert_eq!(
            vae_wgpu::model::GpuVae::check_fits(common::ctx(), &cfg, 1).is_ok(),
            fits,
            "--samples {l} at --batch-size 1"
        );
    }
    let elsewhere = dir.path("elsewhere");
    let o = run(&[
        "train",
        "--resume",
        ck.to_str().unwrap(),
        "--epochs",
        "1",
        "--out",
        elsewhere.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert!(
        !elsewhere.exists(),
        "no folder made for a run that does not run"
    );
}

// Class 5 of the hostile rerun: a program reads the data its run trained on, or says it does
// not. A run records its data folder; `eval` and `pictures` without --data-dir read it (and say
// so), refuse it by name when it is gone, and --data-dir still chooses. A bare state_dict, which
// cannot say its activation, is evaluated with a warning that names the assumption.
#[test]
fn eval_reads_the_data_the_run_trained_on() {
    let dir = Dir::new("hostile-class5");
    let folder = dir.path("shapes");
    common::shapes::shape_folder(&folder, 8, 8, 8, 3);
    let out = dir.path("run");
    let o = run(&train_args(
        folder.to_str().unwrap(),
        out.to_str().unwrap(),
        &[
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--image-size",
            "8",
            "--hidden",
            "16",
            "--activation",
            "tanh",
        ],
    ));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ck = out.join("checkpoint.safetensors");
    let abs = std::path::absolute(&folder).unwrap();
    assert_eq!(
        Checkpoint::load(&ck).unwrap().progress.data_dir,
        abs.display().to_string()
    );
    let eval = |extra: &[&str]| {
        let mut a = vec![
            "eval",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--elbo-samples",
            "1",
            "--iw-samples",
            "2",
        ];
        a.extend_from_slice(extra);
        run(&a)
    };
    let o = eval(&[]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout.contains(&format!("data: {} (the checkpoint's run's", abs.display())),
        "{stdout}"
    );
    let pics = dir.path("pics");
    let o = run(&[
        "pictures",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--out",
        pics.to_str().unwrap(),
        "--no-tsne",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(pics.join("samples.png").is_file());
    // --data-dir still chooses: MNIST's 28x28 images do not fit this 8x8 model.
    fails_with(
        &eval(&[
            "--data-dir",
            concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist"),
        ]),
        &["point --data-dir at the data it was trained on"],
    );
    // The folder gone: refused, naming it.
    let moved = dir.path("moved");
    std::fs::rename(&folder, &moved).unwrap();
    fails_with(
        &eval(&[]),
        &[
            &abs.display().to_string(),
            "not there any more",
            "--data-dir",
        ],
    );

    // A bare state_dict of the tanh model: the assumption is said, and --activation states it.
    let c = Checkpoint::load(&out.join("model.safetensors")).unwrap();
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let layout = vae_wgpu::model::ParamLayout::new(&c.cfg);
    let tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> = layout
        .specs
        .iter()
        .map(|s| (s.name.clone(), st.tensor(&s.name).unwrap()))
        .collect();
    let bare = dir.path("bare.safetensors");
    std::fs::write(
        &bare,
        safetensors::tensor::serialize(tensors, None).unwrap(),
    )
    .unwrap();
    let moved_s = moved.to_str().unwrap();
    let eval_bare = |extra: &[&str]| {
        let mut a = vec![
            "eval",
            "--checkpoint",
            bare.to_str().unwrap(),
            "--data-dir",
            moved_s,
            "--image-size",
            "8",
            "--elbo-samples",
            "1",
            "--iw-samples",
            "2",
        ];
        a.extend_from_slice(extra);
        run(&a)
    };
    let o = eval_bare(&[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("does not say which activation") && stderr.contains("assuming relu"),
        "{stderr}"
    );
    let o = eval_bare(&["--activation", "tanh"]);
    assert!(o.status.success());
    assert!(!String::from_utf8_lossy(&o.stderr).contains("assuming relu"));
}

/// As [`spawn_until`], with environment variables set.
fn spawn_env_until(
    args: &[&str],
    env: &[(&str, &Path)],
    needle: &str,
) -> (std::process::Child, Lines) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run vae-wgpu");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains(needle) => break,
            Some(Ok(_)) => {}
            other => {
                let (code, err) = stderr_of(child);
                panic!("no '{needle}' line ({other:?}, exit {code:?}): {err}");
            }
        }
    }
    (child, lines)
}

#[test]
fn a_stop_during_the_autotune_or_the_pictures_is_prompt() {
    let dir = Dir::new("prompt stops");
    let data = tiny_mnist(&dir, 300, 1200);
    let d = data.to_str().unwrap();
    let run_files = |out: &Path| -> Vec<String> {
        std::fs::read_dir(out)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    };
    // A first run's autotune (an empty cache: seconds of timing) stops at its next problem, not
    // after it, and leaves no run behind: the same command starts again without --overwrite.
    for (signals, says) in [
        (1, "stopped while timing the"),
        (2, "second interrupt: stopping now"),
    ] {
        let out = dir.path(&format!("first run {signals}"));
        let cache = dir.path(&format!("empty cache {signals}"));
        let args = ["train", "--data-dir", d, "--out", out.to_str().unwrap()];
        let (child, lines) = spawn_env_until(&args, &[("VAE_WGPU_CACHE_DIR", &cache)], "output:");
        // Two signals from one shell, microseconds apart, of two kinds (one kind's pending
        // signals merge): the handler sees the second long before the planner reaches its next
        // check (two `kill` processes raced a planner that stopped between them).
        let script = match signals {
            1 => r#"kill -TERM "$1""#,
            _ => r#"kill -INT "$1"; kill -TERM "$1""#,
        };
        assert!(
            Command::new("sh")
                .args(["-c", script, "sh", &child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
        drop(lines);
        let (code, err) = stderr_of(child);
        assert_eq!(code, Some(130), "{err}");
        assert!(err.contains(says), "{err}");
        assert_eq!(run_files(&out), Vec::<String>::new(), "{err}");
    }
    // After the last step, a stop ends the t-SNE map (seconds for 1000 points) at once: the run
    // is complete and says so; the map is not written.
    let out = dir.path("pictures");
    let args = [
        "train",
        "--data-dir",
        d,
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "1",
    ];
    let (child, lines) = spawn_env_until(&args, &[], "trained to epoch 1");
    signal(&child, "-TERM");
    drop(lines);
    let (code, err) = stderr_of(child);
    assert_eq!(code, Some(130), "{err}");
    assert!(
        err.contains("interrupted while the pictures were drawn: training is complete"),
        "{err}"
    );
    let files = run_files(&out);
    assert!(
        files.contains(&"checkpoint.safetensors".to_string()),
        "{files:?}"
    );
    assert!(!files.contains(&"latent_tsne.png".to_string()), "{files:?}");
}

/// Run `cmd` with `$MNT` on a tmpfs of `kib` KiB in a user and mount namespace (its run folder
/// copied out to `copy` afterwards); `None`, said as a counted skip, where this machine allows no
/// such namespace.
fn on_small_tmpfs(
    test: &str,
    cmd: Command,
    kib: u64,
    mnt: &Path,
    copy: &Path,
) -> Option<std::process::Output> {
    std::fs::create_dir_all(mnt).unwrap();
    std::fs::create_dir_all(copy).unwrap();
    let script = r#"mount -t tmpfs -o size="$KIB"k tmpfs "$MNT" || exit 97
"$@"; rc=$?; cp -a "$MNT/run" "$COPY/"; exit $rc"#;
    let r = Command::new("unshare")
        .args(["-r", "-m", "sh", "-c", script, "sh"])
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env("KIB", kib.to_string())
        .env("MNT", mnt)
        .env("COPY", copy)
        .output();
    match r {
        Ok(r) if r.status.code() != Some(97) && r.status.code().is_some() => Some(r),
        other => {
            common::skip(
                test,
                &format!("cannot mount a small tmpfs with `unshare -r -m`: {other:?}"),
            );
            None
        }
    }
}

// Data loss (Reliability IV's first class): the TensorBoard event file, which holds each epoch's
// pictures, took the room the next checkpoint needed, and the run stopped without it. On a disk
// with room for the checkpoints and little else, the events now give way to the checkpoint (said),
// every epoch is saved, and the run ends well; `--no-tensorboard` writes none at all.
#[test]
fn tensorboard_events_give_way_to_the_checkpoint() {
    let dir = Dir::new("events full disk");
    let data = tiny_mnist(&dir, 100, 20);
    let d = data.to_str().unwrap();
    let flags = [
        "--hidden",
        "2",
        "--latent",
        "2",
        "--batch-size",
        "16",
        "--epochs",
        "3",
    ];
    let train = |out: &Path, extra: &[&str]| -> Command {
        let mut c = Command::new(BIN);
        let mut args = train_args(d, out.to_str().unwrap(), &flags);
        args.extend_from_slice(extra);
        c.args(args).env("XDG_RUNTIME_DIR", std::env::temp_dir());
        c
    };
    // The sizes of this model's files, from a run with room.
    let cal = dir.path("room");
    common::programs::ok(&train(&cal, &[]).output().unwrap());
    let size = |f: &str| std::fs::metadata(cal.join(f)).unwrap().len();
    let (ckpt, model) = (size("checkpoint.safetensors"), size("model.safetensors"));
    let events: u64 = (std::fs::read_dir(&cal).unwrap().flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with("events.out"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    // Room for two of each checkpoint file (a write replaces the old file after the new one is
    // whole), losses.csv and a little more: not for the events, which hold three epochs' pictures.
    let kib = 2 * (ckpt + model) / 1024 + 24;
    assert!(events / 1024 > 24, "{events}: the events must not fit");
    let (mnt, copy) = (dir.path("mnt"), dir.path("copy"));
    let test = "hostile::tensorboard_events_give_way_to_the_checkpoint";
    let Some(r) = on_small_tmpfs(test, train(&mnt.join("run"), &[]), kib, &mnt, &copy) else {
        return;
    };
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(
        err.contains("removed this run's TensorBoard events")
            && err.contains("room for the checkpoint"),
        "{err}"
    );
    let run = copy.join("run");
    let c = Checkpoint::load(&run.join("checkpoint.safetensors")).unwrap();
    assert_eq!(c.progress.epoch, 3, "every epoch saved");
    // --no-tensorboard: no event file at all.
    let none = dir.path("none");
    common::programs::ok(&train(&none, &["--no-tensorboard"]).output().unwrap());
    assert!(
        !(std::fs::read_dir(&none).unwrap().flatten())
            .any(|e| e.file_name().to_string_lossy().starts_with("events.out")),
        "--no-tensorboard wrote events"
    );
}

#[test]
fn optional_files_give_way_to_the_checkpoint() {
    let dir = Dir::new("full disk");
    let folder = dir.path("shapes");
    common::shapes::shape_folder(&folder, 80, 64, 64, 1);
    let d = folder.to_str().unwrap();
    let flags = [
        "--channels",
        "3",
        "--image-size",
        "64",
        "--hidden",
        "8",
        "--latent",
        "3",
        "--epochs",
        "1",
        "--batch-size",
        "32",
    ];
    let train = |out: &Path| -> Command {
        let mut c = Command::new(BIN);
        c.args(train_args(d, out.to_str().unwrap(), &flags))
            .env("XDG_RUNTIME_DIR", std::env::temp_dir())
            // 240 images are a "large" folder here: its decoded cache is written into the run.
            .env("VAE_WGPU_IMAGE_CACHE_MIN", "10");
        c
    };
    // The sizes of this model's files, from a run with room.
    let cal = dir.path("room");
    common::programs::ok(&train(&cal).output().unwrap());
    let size = |f: &str| std::fs::metadata(cal.join(f)).unwrap().len();
    let (ckpt, model, cache) = (
        size("checkpoint.safetensors"),
        size("model.safetensors"),
        size(vae_wgpu::data::folder::CACHE_FILE),
    );
    assert!(
        cache > 2 << 20,
        "{cache}: the cache must not fit beside the checkpoint"
    );
    // A disk with room for the checkpoint, the state_dict and 512 KiB: the cache, written at the
    // start, leaves too little for the checkpoint; the pictures do not fit after it.
    let kib = (ckpt + model) / 1024 + 512;
    let (mnt, copy) = (dir.path("mnt"), dir.path("copy"));
    let test = "optional_files_give_way_to_the_checkpoint";
    let Some(r) = on_small_tmpfs(test, train(&mnt.join("run")), kib, &mnt, &copy) else {
        return;
    };
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(
        err.contains("removed the decoded-image cache") && err.contains("room for the checkpoint"),
        "{err}"
    );
    assert!(
        err.contains("the pictures were not written")
            && err.contains("training is complete and saved in"),
        "{err}"
    );
    let run = copy.join("run");
    let c = Checkpoint::load(&run.join("checkpoint.safetensors")).unwrap();
    assert_eq!(c.progress.epoch, 1);
    let csv = std::fs::read_to_string(run.join("losses.csv")).unwrap();
    assert!(
        csv.lines().nth(1).is_some_and(|l| l.starts_with("1,")),
        "{csv}"
    );
    assert!(!run.join(vae_wgpu::data::folder::CACHE_FILE).exists());
}

// Hostile class "silent wrong results" (d): a run's --out inside its image folder is refused
// before anything is written; a run folder already inside one (from an earlier version) is not
// read as a class of images: it is skipped, said, and a conditional model keeps its classes.
#[test]
fn a_run_inside_its_image_folder_is_refused_and_old_ones_are_skipped() {
    let dir = Dir::new("out inside data");
    let folder = dir.path("shapes");
    common::shapes::shape_folder(&folder, 8, 8, 8, 1);
    let d = folder.to_str().unwrap();
    let inside = folder.join("run");
    let flags = [
        "--image-size",
        "8",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--conditional",
    ];
    fails_with(
        &run(&train_args(d, inside.to_str().unwrap(), &flags)),
        &["is inside --data-dir", "choose an --out outside it"],
    );
    assert!(!inside.exists(), "nothing written");
    // An earlier run left inside the folder: its PNGs are no class.
    let outside = dir.path("run");
    common::programs::ok(&run(&train_args(d, outside.to_str().unwrap(), &flags)));
    let classes = |c: &Checkpoint| c.progress.class_names.clone();
    let before = classes(&Checkpoint::load(&outside.join("checkpoint.safetensors")).unwrap());
    std::fs::rename(&outside, &inside).unwrap();
    let again = dir.path("again");
    let r = run(&train_args(d, again.to_str().unwrap(), &flags));
    common::programs::ok(&r);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("holds a vae-wgpu run"), "{err}");
    let after = classes(&Checkpoint::load(&again.join("checkpoint.safetensors")).unwrap());
    assert_eq!(after, before, "the run's folder became a class");
    assert!(!after.iter().any(|c| c == "run"));
}

// Slow (Reliability IV): a large batch's steps per submit were timed by 192 forward passes (16
// per count of 1, 2, 4, 8, three rounds: a minute of 2000 conv images on lavapipe, during which
// Ctrl-C waited). A forward pass past 5 ms makes a submit's cost noise, so the probe now records
// one step per submit after a single pass. With a cache that holds every other choice (a first
// run with the count pinned), the second run's only new measurement is that probe: it must cost
// seconds, not a minute, and record 1.
#[test]
fn a_large_batch_does_not_time_steps_per_submit_for_a_minute() {
    let dir = Dir::new("prompt probe");
    let data = tiny_mnist(&dir, 2000, 100);
    let d = data.to_str().unwrap();
    let cache = dir.path("cache");
    let flags = |out: &Path| -> Vec<String> {
        [
            "train",
            "--data-dir",
            d,
            "--out",
            out.to_str().unwrap(),
            "--conv",
            "4,8",
            "--batch-size",
            "2000",
            "--epochs",
            "1",
            "--no-test",
            "--no-tsne",
        ]
        .map(String::from)
        .to_vec()
    };
    // A first run with steps per submit pinned: every kernel choice cached, the probe not run.
    let first = dir.path("first");
    let o = Command::new(BIN)
        .args(flags(&first))
        .env("VAE_WGPU_CACHE_DIR", &cache)
        .env("VAE_WGPU_STEPS_PER_SUBMIT", "1")
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .unwrap();
    common::programs::ok(&o);
    let o = Command::new(BIN)
        .args(flags(&dir.path("second")))
        .env("VAE_WGPU_CACHE_DIR", &cache)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .unwrap();
    let out = common::programs::ok(&o);
    assert!(out.contains("1 steps/submit"), "{out}");
    let first_loss = (out.lines())
        .find_map(vae_wgpu::cli::train::FirstLoss::parse)
        .unwrap_or_else(|| panic!("no first-loss line: {out}"));
    assert!(
        first_loss.planning < 15.0,
        "planning took {:.1} s: {out}",
        first_loss.planning
    );
}
