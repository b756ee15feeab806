//! The programs as a user runs them: the `vae-wgpu` binary (the same code as the examples) on tiny
//! data sets in temporary folders, with their exit status and output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{gz, idx_bytes};
use vae_wgpu::data::{ImageSet, Split};

pub const BIN: &str = env!("CARGO_BIN_EXE_vae-wgpu");

pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("vae-wgpu-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A data directory with the first `n_train` / `n_test` real MNIST images.
pub fn tiny_mnist(dir: &Dir, n_train: usize, n_test: usize) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let d = dir.path("mnist");
    std::fs::create_dir_all(&d).unwrap();
    for (split, n, img, lbl) in [
        (
            Split::Train,
            n_train,
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
        ),
        (
            Split::Test,
            n_test,
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ),
    ] {
        let m = ImageSet::load_idx(&src, split).unwrap();
        std::fs::write(
            d.join(img),
            gz(&idx_bytes(&[n as u32, 28, 28], &m.images[..n * 784])),
        )
        .unwrap();
        std::fs::write(d.join(lbl), gz(&idx_bytes(&[n as u32], &m.labels[..n]))).unwrap();
    }
    d
}

pub fn run(args: &[&str]) -> Output {
    run_env(args, &[])
}

/// [`run`] with environment variables set (e.g. a kernel pinned, so no autotune runs).
pub fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let xdg = std::env::temp_dir().join(format!("vae-wgpu-xdg-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&xdg);
    Command::new(BIN)
        .args(args)
        .env("XDG_RUNTIME_DIR", &xdg)
        .envs(env.iter().copied())
        .output()
        .expect("run vae-wgpu")
}

/// Exit status non-zero, stderr mentions every `needle`, and nothing panicked.
pub fn fails_with(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr:\n{err}"
    );
    assert!(
        !err.contains("panicked"),
        "a panic is never an answer:\n{err}"
    );
    for n in needles {
        assert!(err.contains(n), "stderr lacks '{n}':\n{err}");
    }
}

pub fn train_args<'a>(data: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "train",
        "--data-dir",
        data,
        "--out",
        out,
        "--no-tsne",
        "--log-every",
        "1",
    ];
    v.extend_from_slice(extra);
    v
}

/// Exit status 0 (else the failure shows both streams); returns stdout.
pub fn ok(out: &Output) -> String {
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "stdout:\n{o}\nstderr:\n{e}");
    o.into_owned()
}

/// The train loss of each epoch in a run folder's `losses.csv`.
pub fn train_losses(run_dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(run_dir.join("losses.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect()
}

/// `eval` (2 ELBO draws, k = 4) and `pictures` of checkpoint `ck` on `data`, as a user runs them:
/// both read the architecture from the checkpoint (eval names it as `describe`, and reports the
/// IWAE bound), and the pictures are written into `pics`.
pub fn eval_and_draw(ck: &str, data: &str, pics: &Path, describe: &str) {
    let o = ok(&run(&[
        "eval",
        "--checkpoint",
        ck,
        "--data-dir",
        data,
        "--elbo-samples",
        "2",
        "--iw-samples",
        "4",
    ]));
    assert!(o.contains(describe) && o.contains("IWAE"), "{o}");
    ok(&run(&[
        "pictures",
        "--checkpoint",
        ck,
        "--data-dir",
        data,
        "--out",
        pics.to_str().unwrap(),
    ]));
    for f in ["reconstructions.png", "samples.png", "latent_tsne.png"] {
        assert!(pics.join(f).is_file(), "{f}");
    }
}
