//! Files as the engine writes and reads them: every write atomic (a temporary file in the same
//! folder, synced, then renamed over the target, so a crash or a full disk never leaves half a
//! file), every read of a file a user names bounded (a regular file no larger than what it could
//! hold, so a FIFO or `/dev/zero` is refused instead of hanging or filling memory).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Marks temporary files of [`write_atomic`]: `.<name>.tmp-<pid>-<n>`. A run folder's owner
/// removes leftovers of dead processes; they are never mistaken for the files themselves.
pub const TMP_MARK: &str = ".tmp-";

/// Write `bytes` to `path` through a temporary file and a rename. A symbolic link is written
/// through: its target is replaced, so every path that shares the file sees the new contents.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let asked = path;
    let target = link_target(path);
    let path = target.as_path();
    // Errors name the file the caller asked for (never only the temporary), and the link's
    // target where it is written through one (a dangling link's folder may not exist).
    let io = |p: &Path| {
        let what = if p == path {
            ""
        } else {
            " (its temporary file)"
        };
        let via = if path == asked {
            String::new()
        } else {
            format!(", through its link to {}", path.display())
        };
        let p = p.display().to_string();
        move |source: std::io::Error| Error::Io {
            path: asked.to_path_buf(),
            source: std::io::Error::new(
                source.kind(),
                format!("could not write it{via}: {p}{what}: {source}"),
            ),
        }
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per process and call: two threads may write the same file (the autotune cache).
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp: PathBuf = dir.join(format!(".{file_name}{TMP_MARK}{}-{n}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))?;
        // Make the rename itself durable (best effort: not every platform opens directories).
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The file a path names after following its symbolic links (a chain of at most 32; a link to
/// nothing names the file it would create), else the path itself.
pub fn link_target(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    for _ in 0..32 {
        match std::fs::read_link(&p) {
            Ok(to) => {
                p = match p.parent() {
                    Some(dir) if to.is_relative() => dir.join(to),
                    _ => to,
                }
            }
            Err(_) => return p,
        }
    }
    path.to_path_buf()
}

/// The contents of `path`, which must be a regular file of at most `max_bytes` (`what` names it
/// in errors, e.g. "checkpoint").
pub fn read_bounded(path: &Path, max_bytes: u64, what: &str) -> Result<Vec<u8>> {
    let bad = |detail: String| Error::Data {
        path: path.to_path_buf(),
        detail,
    };
    let meta = std::fs::metadata(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(bad(format!(
            "not a regular file (a {what} must be a file, not a directory, FIFO or device)"
        )));
    }
    if meta.len() > max_bytes {
        return Err(bad(format!(
            "{} bytes is larger than any {what} can be (at most {max_bytes} bytes)",
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)
        .and_then(|f| f.take(max_bytes + 1).read_to_end(&mut bytes))
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > max_bytes {
        return Err(bad(format!("grew past {max_bytes} bytes while being read")));
    }
    Ok(bytes)
}

/// Remove `dir`'s temporary files left by [`write_atomic`] in processes that died mid-write
/// (call only while owning the folder). Returns how many were removed.
pub fn remove_stale_temporaries(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with('.') && n.contains(TMP_MARK) && e.path().is_file()
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_reads_refuse_directories_and_oversized_files() {
        let dir = std::env::temp_dir().join(format!("vae-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = read_bounded(&dir, 10, "checkpoint")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let f = dir.join("x.bin");
        write_atomic(&f, &[1, 2, 3]).unwrap();
        assert_eq!(read_bounded(&f, 3, "x").unwrap(), vec![1, 2, 3]);
        let e = read_bounded(&f, 2, "x").unwrap_err().to_string();
        assert!(e.contains("at most 2 bytes"), "{e}");
        std::fs::write(dir.join(".x.bin.tmp-1-0"), b"half").unwrap();
        assert_eq!(remove_stale_temporaries(&dir), 1);
        assert!(f.is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
