//! A plain store of autotuned kernel choices, problem key → choice name, in memory and on disk.
//! What the choices mean is `kernels::matmul::select`'s business.
//!
//! Which matmul kernel is fastest depends on the adapter, its driver and the problem's shape
//! (workgroup-memory tiles on real GPUs, subgroup broadcasts on lavapipe, ...). The first time a
//! product is planned, `kernels::matmul::tune` times the candidates and records the winner here; the
//! record is written to a small text file (like burn's autotune cache), so later runs on the same
//! adapter, driver and kernel sources pick the same kernels without timing them again — and so
//! give bit-identical results run after run.
//!
//! File: `$VAE_WGPU_CACHE_DIR`, else `$XDG_CACHE_HOME/vae-wgpu`, else `~/.cache/vae-wgpu`, then
//! `matmul-autotune.tsv`: one line per choice, `adapter key <TAB> problem <TAB> variant`, appended;
//! the first line for a problem wins. Lines of other adapters, drivers or kernel versions are kept
//! but not used; malformed lines are ignored. Delete the file to tune again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::context::AdapterSummary;
use super::pipeline::Shader;

/// Environment variable naming the cache directory.
pub const CACHE_DIR_ENV: &str = "VAE_WGPU_CACHE_DIR";
const FILE_NAME: &str = "matmul-autotune.tsv";
const HEADER: &str = "# vae-wgpu matmul autotune cache, v1: adapter key\tproblem\tvariant\n";

/// The default cache directory (see the module docs); `None` when no home is known.
pub fn default_cache_dir() -> Option<PathBuf> {
    let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = nonempty(CACHE_DIR_ENV) {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = nonempty("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("vae-wgpu"));
    }
    nonempty("HOME").map(|h| PathBuf::from(h).join(".cache").join("vae-wgpu"))
}

/// FNV-1a: a hash that is stable across Rust versions and platforms (unlike `DefaultHasher`), so
/// the cache key changes exactly when the kernel sources do.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0xff]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Adapter, backend, driver and a hash of the matmul kernels' sources: a choice recorded under
/// another key says nothing about this one.
fn adapter_key(a: &AdapterSummary) -> String {
    // Every matmul source file: MATMUL is common + matmul + matmul_direct, MATMUL_SUBGROUP common +
    // matmul + matmul_subgroup.
    let kernels = fnv1a(&[
        env!("CARGO_PKG_VERSION"),
        Shader::MATMUL.source,
        Shader::MATMUL_SUBGROUP.source,
    ]);
    format!(
        "{} | {:?} | {} {} | kernels {kernels:016x}",
        a.name, a.backend, a.driver, a.driver_info
    )
    .replace(['\t', '\n'], " ")
}

/// This adapter's choices in a cache file's text; the first line for a problem wins (processes
/// that tune at once each append a line, then all take the first).
fn parse(text: &str, key: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let mut f = l.split('\t');
        let (Some(k), Some(problem), Some(variant), None) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if k == key && !variant.is_empty() {
            out.entry(problem.to_string())
                .or_insert_with(|| variant.to_string());
        }
    }
    out
}

/// Autotuned choices of one device.
pub struct TuneStore {
    file: Option<PathBuf>,
    key: String,
    /// A choice that overrides every problem's (`VAE_WGPU_MATMUL`).
    pin: Option<String>,
    /// Choices made or read in this process, by problem.
    memo: Mutex<HashMap<String, String>>,
    /// Held while a problem is timed, so concurrent planners tune it once.
    pub(crate) tuning: Mutex<()>,
    warned: AtomicBool,
}

impl TuneStore {
    /// A store for `adapter` kept in `dir` (`None`: in memory only), with an optional pinned choice.
    pub fn new(adapter: &AdapterSummary, dir: Option<PathBuf>, pin: Option<String>) -> Self {
        TuneStore {
            file: dir.map(|d| d.join(FILE_NAME)),
            key: adapter_key(adapter),
            pin,
            memo: Mutex::new(HashMap::new()),
            tuning: Mutex::new(()),
            warned: AtomicBool::new(false),
        }
    }

    /// The choice pinned for every problem, if any.
    pub fn pin(&self) -> Option<&str> {
        self.pin.as_deref()
    }

    /// The cache file, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    fn read_file(&self) -> HashMap<String, String> {
        match self.file.as_ref().map(std::fs::read_to_string) {
            Some(Ok(text)) => parse(&text, &self.key),
            _ => HashMap::new(),
        }
    }

    /// The recorded choice for `problem`: this process's, else the file's.
    pub fn get(&self, problem: &str) -> Option<String> {
        let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = memo.get(problem) {
            return Some(v.clone());
        }
        let v = self.read_file().remove(problem)?;
        memo.insert(problem.to_string(), v.clone());
        Some(v)
    }

    /// Record `variant` as the choice for `problem` and return the choice to use: the file's first
    /// line for the problem wins, so processes that tune at once all end up with one record.
    pub fn record(&self, problem: &str, variant: &str) -> String {
        let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        let chosen = match &self.file {
            None => variant.to_string(),
            Some(file) => match self.append(file, &format!("{}\t{problem}\t{variant}\n", self.key))
            {
                // Read back: another process may have recorded the problem first.
                Ok(()) => self
                    .read_file()
                    .remove(problem)
                    .unwrap_or_else(|| variant.to_string()),
                Err(e) => {
                    if !self.warned.swap(true, Ordering::Relaxed) {
                        eprintln!(
                            "warning: could not write the matmul autotune cache {} ({e}); the \
                             choices hold for this run only. Set {CACHE_DIR_ENV} to a writable \
                             directory to keep them.",
                            file.display()
                        );
                    }
                    variant.to_string()
                }
            },
        };
        memo.insert(problem.to_string(), chosen.clone());
        chosen
    }

    /// Append one line with a single write (appends of a short line do not interleave), creating
    /// the file with its header line first if needed.
    fn append(&self, file: &Path, line: &str) -> std::io::Result<()> {
        use std::io::Write;
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)?;
        let text = if f.metadata()?.len() == 0 {
            format!("{HEADER}{line}")
        } else {
            line.to_string()
        };
        f.write_all(text.as_bytes())
    }

    /// Every choice made or read in this process, sorted by problem.
    pub fn choices(&self) -> Vec<(String, String)> {
        let memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = memo.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_keeps_this_adapters_wellformed_lines_only_first_wins() {
        let text = "# header\nA\tNT 1x2x3\tsubgroup\nB\tNT 1x2x3\ttiled\nA\tNN 4x4x4\t\n\
                    A\tTN 8x8x8\tdirect\textra\ngarbage\nA\tTN 4x4x4\tdirect\nA\tNT 1x2x3\ttiled";
        let m = parse(text, "A");
        assert_eq!(m.len(), 2);
        assert_eq!(m["NT 1x2x3"], "subgroup");
        assert_eq!(m["TN 4x4x4"], "direct");
    }

    #[test]
    fn fnv1a_separates_parts_and_is_stable() {
        assert_ne!(fnv1a(&["ab", "c"]), fnv1a(&["a", "bc"]));
        assert_eq!(fnv1a(&[]), 0xcbf2_9ce4_8422_2325);
    }
}
