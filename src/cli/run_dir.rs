//! One run per output folder. A run owns its folder through an advisory lock on `.vae-wgpu.lock`
//! (held by the open file, so the kernel releases it when the process dies, even by `kill -9`;
//! the file holds the owner's pid for the message a second run gets). A folder that already holds
//! a run is refused unless that run is being resumed or the user passes `--overwrite`. While it
//! owns the folder, a run removes temporary files that dead processes left behind.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The lock file's name inside a run folder.
pub const LOCK_FILE: &str = ".vae-wgpu.lock";

/// Files a run writes into its folder; a folder holding any of them holds a run.
const RUN_FILES: [&str; 9] = [
    "checkpoint.safetensors",
    "model.safetensors",
    crate::model::checkpoint::DIFFUSERS_CONFIG,
    crate::model::checkpoint::DIFFUSERS_WEIGHTS,
    "losses.csv",
    "loss.png",
    "latent_tsne.png",
    "manifold.png",
    crate::data::folder::CACHE_FILE,
];

fn is_run_file(name: &str) -> bool {
    if name.contains(crate::files::TMP_MARK) {
        return false;
    }
    RUN_FILES.contains(&name)
        || name.starts_with(EVENTS_PREFIX)
        || ["reconstructions", "samples"]
            .iter()
            .any(|p| name.starts_with(p) && name.ends_with(".png"))
}

/// TensorBoard event files (`viz::tensorboard`).
const EVENTS_PREFIX: &str = "events.out.tfevents.";

/// An output folder owned by this process until dropped.
pub struct RunDir {
    pub path: PathBuf,
    _lock: File,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl RunDir {
    /// Create (if needed) and lock `path`. `resuming`: the folder's run is continued; `overwrite`:
    /// an earlier run's files may be replaced.
    pub fn claim(path: &Path, resuming: bool, overwrite: bool) -> Result<RunDir> {
        std::fs::create_dir_all(path).map_err(io(path))?;
        let lock_path = path.join(LOCK_FILE);
        let mut lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = lock.read_to_string(&mut pid);
                return Err(Error::Config(format!(
                    "{} is in use by another run (pid {}): wait for it to finish, or choose \
                     another --out",
                    path.display(),
                    pid.trim()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        lock.set_len(0)
            .and_then(|()| lock.rewind())
            .and_then(|()| write!(lock, "{}", std::process::id()))
            .map_err(io(&lock_path))?;
        if !resuming && !overwrite {
            // A decoded-image cache alone is no run (a run stopped while planning leaves it).
            let others: Vec<String> = Self::run_files(path)?
                .into_iter()
                .filter(|n| n != crate::data::folder::CACHE_FILE)
                .collect();
            if !others.is_empty() {
                return Err(Error::Config(format!(
                    "{} already holds a run ({}): resume it with --resume {}, choose another \
                     --out, or pass --overwrite to replace it",
                    path.display(),
                    others.join(", "),
                    path.join("checkpoint.safetensors").display()
                )));
            }
        }
        if overwrite && !resuming {
            // The replaced run's TensorBoard events would read as this run's (TensorBoard merges
            // a folder's event files); its other files are rewritten as this run goes.
            for name in Self::run_files(path)? {
                if name.starts_with(EVENTS_PREFIX) {
                    let f = path.join(&name);
                    std::fs::remove_file(&f).map_err(io(&f))?;
                }
            }
        }
        crate::files::remove_stale_temporaries(path);
        Ok(RunDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// The files of a run the folder holds, sorted. Only what a run writes counts: a log the
    /// shell created for this run (`train --out runs/x > runs/x/train.log`) or the user's notes do
    /// not make the folder an earlier run's.
    fn run_files(path: &Path) -> Result<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(path)
            .map_err(io(path))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| is_run_file(n))
            .collect();
        names.sort();
        Ok(names)
    }
}
