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
//! `matmul-autotune.tsv`: one line per choice, `adapter key <TAB> problem <TAB> variant <TAB>
//! timings` (each candidate's best time per launch, e.g. `direct=61.2us subgroup=40.8us`),
//! appended; the first line for a problem wins. Lines of other adapters, drivers or kernel versions
//! are kept but not used; malformed, overlong or undecodable lines are skipped. The file is read
//! once per process, line by line. `--retune` (or the `tune` program) times every problem again
//! and replaces its line, keeping every other line byte for byte; deleting the file does the same
//! for everything. A symbolic link is written through (the shared file it points to is updated);
//! a cache path that is not a regular file (a FIFO, a device) is left alone, with a warning.

use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use super::context::AdapterSummary;
use super::pipeline::Shader;
use crate::error::{Error, Result};

/// Environment variable naming the cache directory.
pub const CACHE_DIR_ENV: &str = "VAE_WGPU_CACHE_DIR";
const FILE_NAME: &str = "matmul-autotune.tsv";
const HEADER: &str =
    "# vae-wgpu matmul autotune cache, v2: adapter key\tproblem\tvariant\ttimings per candidate\n";

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

/// FNV-1a of `parts`, each followed by a 0xff byte (no UTF-8 string contains one), so the cache
/// key changes exactly when the kernel sources do and no two splits of a text collide.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h = crate::hash::Fnv1a::default();
    for p in parts {
        h.bytes(p.as_bytes()).bytes(&[0xff]);
    }
    h.finish()
}

/// Adapter, backend, driver and a hash of the tuned kernels' sources (matmul, Adam): a choice
/// recorded under another key says nothing about this one.
fn adapter_key(a: &AdapterSummary) -> String {
    // Every tuned kernel's source file: MATMUL is common + matmul + matmul_direct, the subgroup
    // modules add matmul_subgroup (and matmul_subgroup_tex); ADAM is common + adam.
    let kernels = fnv1a(&[
        env!("CARGO_PKG_VERSION"),
        Shader::MATMUL.source,
        Shader::MATMUL_SUBGROUP.source,
        Shader::MATMUL_SUBGROUP_TEX.source,
        Shader::ADAM.source,
    ]);
    format!(
        "{} | {:?} | {} {} | kernels {kernels:016x}",
        a.name, a.backend, a.driver, a.driver_info
    )
    .replace(['\t', '\n'], " ")
}

/// The longest cache line read (a choice line is ~200 bytes); longer lines are skipped.
const MAX_LINE: usize = 4096;
/// The largest cache file `--retune` rewrites (it holds the file in memory to keep every other
/// line); a larger one is left as it is, with a warning.
const MAX_REWRITE: u64 = 1 << 30;

/// Call `f` with each line of `r` (without its `\n`) of at most `max` bytes; longer lines are
/// skipped without being held in memory.
fn for_each_line(mut r: impl BufRead, max: usize, mut f: impl FnMut(&[u8])) -> std::io::Result<()> {
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut r).take(max as u64 + 1).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if line.len() > max {
            // Overlong: drop the rest of it.
            loop {
                let buf = r.fill_buf()?;
                if buf.is_empty() {
                    return Ok(());
                }
                match buf.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        r.consume(i + 1);
                        break;
                    }
                    None => {
                        let all = buf.len();
                        r.consume(all);
                    }
                }
            }
            continue;
        }
        f(&line);
    }
}

/// This adapter's choices in a cache file, read line by line; the first line for a problem wins
/// (processes that tune at once each append a line, then all take the first). Lines that are too
/// long, not UTF-8 or malformed are skipped, never the whole file; a read error ends the reading.
fn parse(r: impl BufRead, key: &str) -> HashMap<String, Choice> {
    let mut out = HashMap::new();
    let _ = for_each_line(r, MAX_LINE, |line| parse_line(line, key, &mut out));
    out
}

/// One cache line into `out` (see [`parse`]).
fn parse_line(line: &[u8], key: &str, out: &mut HashMap<String, Choice>) {
    let Ok(l) = std::str::from_utf8(line) else {
        return;
    };
    if l.starts_with('#') {
        return;
    }
    // key, problem, choice, and (since v2) the timings the choice was made from.
    let f: Vec<&str> = l.trim_end_matches('\r').split('\t').collect();
    if let [k, problem, variant, ..] = f[..]
        && f.len() <= 4
        && k == key
        && !variant.is_empty()
    {
        out.entry(problem.to_string()).or_insert_with(|| Choice {
            variant: variant.to_string(),
            timings: f.get(3).unwrap_or(&"").to_string(),
        });
    }
}

/// A recorded choice and the timings it was made from (empty in v1 lines).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub variant: String,
    pub timings: String,
}

thread_local! {
    /// Whether this thread is inside a [`TuneStore::get_or_measure`] measurement.
    static MEASURING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Autotuned choices of one device.
pub struct TuneStore {
    file: Option<PathBuf>,
    key: String,
    /// A choice that overrides every problem's (`VAE_WGPU_MATMUL`).
    pin: Option<String>,
    /// Ignore recorded choices: tune every problem again and record the new choice.
    retune: bool,
    /// The file's choices for this adapter, read once per process (on first use).
    from_file: OnceLock<HashMap<String, Choice>>,
    /// Choices made or read in this process, by problem.
    memo: Mutex<HashMap<String, Choice>>,
    /// Held while a problem is timed, so concurrent planners tune it once.
    tuning: Mutex<()>,
    warned: AtomicBool,
    /// Raised: a problem not yet timed is not timed (see [`crate::gpu::Cancel`]).
    cancel: crate::gpu::Cancel,
}

impl TuneStore {
    /// A store for `adapter` kept in `dir` (`None`: in memory only), with an optional pinned
    /// choice; `retune` ignores the recorded choices (each problem is timed again and the new
    /// choice replaces the old line).
    pub fn new(
        adapter: &AdapterSummary,
        dir: Option<PathBuf>,
        pin: Option<String>,
        retune: bool,
        cancel: crate::gpu::Cancel,
    ) -> Self {
        TuneStore {
            file: dir.map(|d| d.join(FILE_NAME)),
            key: adapter_key(adapter),
            pin,
            retune,
            from_file: OnceLock::new(),
            memo: Mutex::new(HashMap::new()),
            tuning: Mutex::new(()),
            warned: AtomicBool::new(false),
            cancel,
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

    fn warn_once(&self, what: std::fmt::Arguments<'_>) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            log::warn!("{what}");
        }
    }

    /// This adapter's choices in the file, read line by line; a path that is not a regular file
    /// is ignored with a warning (a FIFO or a device there would otherwise hang or fill memory).
    fn read_file(&self) -> HashMap<String, Choice> {
        let Some(file) = &self.file else {
            return HashMap::new();
        };
        match std::fs::metadata(file) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                self.warn_once(format_args!(
                    "the matmul autotune cache {} is not a regular file; ignoring it (choices \
                     hold for this run only)",
                    file.display()
                ));
                return HashMap::new();
            }
            Err(_) => return HashMap::new(),
        }
        match std::fs::File::open(file) {
            Ok(f) => parse(std::io::BufReader::new(f), &self.key),
            Err(_) => HashMap::new(),
        }
    }

    /// The recorded choice for `problem`: this process's, else the file's (read once).
    pub fn get(&self, problem: &str) -> Option<String> {
        let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = memo.get(problem) {
            return Some(c.variant.clone());
        }
        if self.retune {
            return None;
        }
        let c = self
            .from_file
            .get_or_init(|| self.read_file())
            .get(problem)?
            .clone();
        memo.insert(problem.to_string(), c.clone());
        Some(c.variant)
    }

    /// The choice for `problem` that `parse` accepts: recorded, else measured now and recorded.
    /// `measure` returns each candidate with its seconds; the fastest (the first of equals) is
    /// the choice, kept with every candidate's time (`direct=12.5us subgroup=8.1us …`). One
    /// problem is measured at a time, so concurrent planners measure it once; a recorded choice
    /// `parse` refuses (from another version, or one this device cannot run) counts as none.
    pub fn get_or_measure<T>(
        &self,
        problem: &str,
        parse: impl Fn(&str) -> Option<T>,
        measure: impl FnOnce() -> Result<Vec<(T, f64)>>,
    ) -> Result<T>
    where
        T: Copy + std::fmt::Display,
    {
        let recorded = || self.get(problem).and_then(|v| parse(&v));
        if let Some(v) = recorded() {
            return Ok(v);
        }
        // A measurement may plan work that needs other choices (the steps-per-submit probe plans
        // matmuls): on the thread that holds the lock already, measure without taking it again.
        let nested = MEASURING.with(|m| m.get());
        let _one_at_a_time =
            (!nested).then(|| self.tuning.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(v) = recorded() {
            return Ok(v);
        }
        // Set while measuring, put back however the measurement ends (a panic included).
        struct Measuring(bool);
        impl Drop for Measuring {
            fn drop(&mut self) {
                MEASURING.with(|m| m.set(self.0));
            }
        }
        let _measuring = Measuring(nested);
        MEASURING.with(|m| m.set(true));
        // A stop asked for while planning ends it here, before the next problem is timed (a
        // first run's autotune takes seconds); nothing half-measured is recorded.
        let stopped = || {
            Error::Interrupted(format!(
                "stopped while timing the kernel candidates for {problem} (nothing recorded)"
            ))
        };
        if self.cancel.is_cancelled() {
            return Err(stopped());
        }
        let timings = measure()?;
        if self.cancel.is_cancelled() {
            return Err(stopped());
        }
        let Some(&(best, _)) = timings.iter().min_by(|a, b| a.1.total_cmp(&b.1)) else {
            return Err(Error::Device(format!(
                "{problem}: no candidate could be measured"
            )));
        };
        let text = timings
            .iter()
            .map(|(c, s)| format!("{c}={:.1}us", s * 1e6))
            .collect::<Vec<_>>()
            .join(" ");
        let chosen = self.record(problem, &best.to_string(), &text);
        Ok(parse(&chosen).unwrap_or(best))
    }

    /// Record `variant` (chosen from `timings`) as the choice for `problem` and return the choice
    /// to use: the file's first line for the problem wins, so processes that tune at once all end
    /// up with one record. When retuning, the new line replaces the problem's old ones.
    pub fn record(&self, problem: &str, variant: &str, timings: &str) -> String {
        let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        let line = format!("{}\t{problem}\t{variant}\t{timings}\n", self.key);
        let mine = Choice {
            variant: variant.to_string(),
            timings: timings.to_string(),
        };
        let chosen = match &self.file {
            None => mine,
            Some(file) => {
                let written = if self.retune {
                    self.replace_line(file, problem, &line)
                } else {
                    self.append(file, &line)
                };
                match written {
                    // Read back: another process may have recorded the problem first.
                    Ok(()) => self.read_file().remove(problem).unwrap_or(mine),
                    Err(e) => {
                        self.warn_once(format_args!(
                            "could not write the matmul autotune cache {} ({e}); the choices \
                             hold for this run only. Set {CACHE_DIR_ENV} to a writable directory \
                             to keep them.",
                            file.display()
                        ));
                        mine
                    }
                }
            }
        };
        memo.insert(problem.to_string(), chosen.clone());
        chosen.variant
    }

    /// Rewrite the file without this adapter's lines for `problem`, then with `line` (atomically,
    /// through a symbolic link to its target). Every other line is kept byte for byte, whatever
    /// its length or encoding.
    fn replace_line(&self, file: &Path, problem: &str, line: &str) -> std::io::Result<()> {
        let target = crate::files::link_target(file);
        let mut bytes = Vec::new();
        match std::fs::metadata(&target) {
            Ok(m) if !m.is_file() => return Err(std::io::Error::other("not a regular file")),
            Ok(m) if m.len() > MAX_REWRITE => {
                return Err(std::io::Error::other(format!(
                    "{} bytes is too large to rewrite (at most {MAX_REWRITE}): delete it to start \
                     afresh",
                    m.len()
                )));
            }
            Ok(_) => {
                std::fs::File::open(&target)?
                    .take(MAX_REWRITE)
                    .read_to_end(&mut bytes)?;
            }
            Err(_) => {}
        }
        let prefix = format!("{}\t{problem}\t", self.key);
        let mut text = Vec::with_capacity(bytes.len() + line.len() + HEADER.len());
        if !bytes.is_empty() {
            for l in bytes
                .strip_suffix(b"\n")
                .unwrap_or(&bytes)
                .split(|&b| b == b'\n')
            {
                if !l.starts_with(prefix.as_bytes()) {
                    text.extend_from_slice(l);
                    text.push(b'\n');
                }
            }
        }
        if text.is_empty() {
            text.extend_from_slice(HEADER.as_bytes());
        }
        text.extend_from_slice(line.as_bytes());
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir)?;
        }
        crate::files::write_atomic(&target, &text).map_err(std::io::Error::other)
    }

    /// Append one line with a single write (appends of a short line do not interleave), creating
    /// the file with its header line first if needed.
    fn append(&self, file: &Path, line: &str) -> std::io::Result<()> {
        use std::io::Write;
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if std::fs::metadata(file).is_ok_and(|m| !m.is_file()) {
            return Err(std::io::Error::other("not a regular file"));
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

    /// Every choice made or read in this process, by problem, sorted.
    pub fn choices(&self) -> Vec<(String, Choice)> {
        let memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = memo.iter().map(|(k, c)| (k.clone(), c.clone())).collect();
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
                    A\tTN 8x8x8\tdirect\tdirect=1us\tfifth\ngarbage\nA\tTN 4x4x4\tdirect\n\
                    A\tNT 1x2x3\ttiled\nA\tNN 8x8x8\ttiled\ttiled=2.0us";
        let mut bytes = text.as_bytes().to_vec();
        // A line that is not UTF-8 is skipped alone.
        bytes.extend(b"\nA\tNN 7x7x7\tdirect\xff\nA\tNN 6x6x6\tdirect\n");
        let m = parse(&bytes[..], "A");
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(m["NN 8x8x8"].variant, "tiled");
        assert_eq!(m["NN 8x8x8"].timings, "tiled=2.0us");
        assert_eq!(m["NN 6x6x6"].variant, "direct");
        assert_eq!(m["NT 1x2x3"].variant, "subgroup");
        assert_eq!(m["TN 4x4x4"].variant, "direct");
    }

    fn store_adapter() -> AdapterSummary {
        AdapterSummary {
            index: 0,
            name: "test adapter".into(),
            backend: wgpu::Backend::Noop,
            device_type: wgpu::DeviceType::Other,
            driver: String::new(),
            driver_info: String::new(),
            limits: wgpu::Limits::default(),
        }
    }

    fn store() -> TuneStore {
        TuneStore::new(&store_adapter(), None, None, false, Default::default())
    }

    #[test]
    fn get_or_measure_measures_once_and_may_nest() {
        let s = store();
        let parse = |v: &str| v.parse::<usize>().ok();
        // A measurement that needs another choice (as the steps-per-submit probe plans matmuls)
        // takes it on the same thread without waiting for itself.
        let outer = s
            .get_or_measure("outer", parse, || {
                // The fastest candidate is the choice: 3, not 5.
                let inner = s.get_or_measure("inner", parse, || Ok(vec![(5, 2e-6), (3, 1e-6)]))?;
                Ok(vec![(inner + 4, 2e-6)])
            })
            .unwrap();
        assert_eq!(outer, 7);
        let choices = s.choices();
        let timings = |p: &str| &choices.iter().find(|c| c.0 == p).unwrap().1.timings;
        assert_eq!(timings("inner"), "5=2.0us 3=1.0us");
        // Recorded now: not measured again.
        let again = s.get_or_measure("outer", parse, || -> Result<Vec<(usize, f64)>> {
            panic!("measured twice")
        });
        assert_eq!(again.unwrap(), 7);
        // A recorded value the parser refuses counts as none.
        s.record("refused", "x", "");
        assert_eq!(
            s.get_or_measure("refused", parse, || Ok(vec![(1, 0.0)]))
                .unwrap(),
            1
        );
        // Nothing measured is an error, not a made-up choice.
        assert!(s.get_or_measure("empty", parse, || Ok(vec![])).is_err());
    }

    #[test]
    fn retune_keeps_every_other_line_whole_and_writes_through_links() {
        let dir = std::env::temp_dir().join(format!("vae-tune-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("shared")).unwrap();
        let adapter = |name: &str| AdapterSummary {
            name: name.into(),
            ..store_adapter()
        };
        let key = adapter_key(&adapter("this"));
        // 17.6 MB of other adapters' lines (past any read limit), one not UTF-8, one overlong,
        // and this adapter's old choice in the middle.
        let mut text = HEADER.as_bytes().to_vec();
        for i in 0..200_000 {
            text.extend(
                format!("other {i}\tNT 128x784x200\tsubgroup\tsubgroup=1.0us\n").as_bytes(),
            );
            if i == 100_000 {
                text.extend(format!("{key}\tNT 1x2x3\tdirect\tdirect=9.0us\n").as_bytes());
            }
        }
        text.extend(b"other \xff\tNN 1x1x1\tdirect\n");
        text.extend(vec![b'x'; 3 * MAX_LINE]);
        text.push(b'\n');
        text.extend(b"other last\tNN 2x2x2\ttiled\n");
        let shared = dir.join("shared").join(FILE_NAME);
        std::fs::write(&shared, &text).unwrap();
        // The store's folder holds a link to the shared file.
        let mine = dir.join("mine");
        std::fs::create_dir_all(&mine).unwrap();
        std::os::unix::fs::symlink(&shared, mine.join(FILE_NAME)).unwrap();
        let s = TuneStore::new(
            &adapter("this"),
            Some(mine.clone()),
            None,
            false,
            Default::default(),
        );
        assert_eq!(s.get("NT 1x2x3").as_deref(), Some("direct"));
        let s = TuneStore::new(
            &adapter("this"),
            Some(mine.clone()),
            None,
            true,
            Default::default(),
        );
        assert_eq!(
            s.record("NT 1x2x3", "subgroup", "subgroup=1.0us"),
            "subgroup"
        );
        let link = std::fs::symlink_metadata(mine.join(FILE_NAME)).unwrap();
        assert!(
            link.file_type().is_symlink(),
            "the link was replaced by a file"
        );
        let after = std::fs::read(&shared).unwrap();
        let old_line = format!("{key}\tNT 1x2x3\tdirect\tdirect=9.0us\n");
        let new_line = format!("{key}\tNT 1x2x3\tsubgroup\tsubgroup=1.0us\n");
        let mut expected = text.clone();
        let at = expected
            .windows(old_line.len())
            .position(|w| w == old_line.as_bytes())
            .unwrap();
        expected.drain(at..at + old_line.len());
        expected.extend(new_line.as_bytes());
        assert!(
            after == expected,
            "other lines changed ({} bytes, expected {})",
            after.len(),
            expected.len()
        );
        assert_eq!(
            TuneStore::new(
                &adapter("this"),
                Some(mine),
                None,
                false,
                Default::default()
            )
            .get("NT 1x2x3")
            .as_deref(),
            Some("subgroup")
        );
        // A FIFO is neither read nor replaced.
        let fifo_dir = dir.join("fifo");
        std::fs::create_dir_all(&fifo_dir).unwrap();
        let fifo = fifo_dir.join(FILE_NAME);
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            for retune in [false, true] {
                let s = TuneStore::new(
                    &adapter("this"),
                    Some(fifo_dir.clone()),
                    None,
                    retune,
                    Default::default(),
                );
                assert_eq!(s.get("NT 1x2x3"), None);
                assert_eq!(s.record("NT 1x2x3", "direct", ""), "direct");
                let ty = std::fs::symlink_metadata(&fifo).unwrap().file_type();
                assert!(!ty.is_file(), "the FIFO was replaced");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fnv1a_separates_parts_and_is_stable() {
        assert_ne!(fnv1a(&["ab", "c"]), fnv1a(&["a", "bc"]));
        assert_eq!(fnv1a(&[]), 0xcbf2_9ce4_8422_2325);
    }
}
