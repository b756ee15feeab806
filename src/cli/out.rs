//! Program output that never panics. `println!` panics when stdout is closed (`train | head`);
//! `say!` writes a line to stdout and, on any error, remembers that stdout is gone instead, and
//! `note!` writes to stderr and ignores errors. The trainer treats a closed stdout like an
//! interrupt (it finishes the step, writes the checkpoint and exits); every program whose stdout
//! closed exits with [`EXIT_OUTPUT_CLOSED`], the status of a process killed by SIGPIPE.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Exit status of a program whose stdout was closed under it (128 + SIGPIPE).
pub const EXIT_OUTPUT_CLOSED: u8 = 141;

/// Write one line to stdout; after the first failure, nothing more is written.
pub fn say_line(args: fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{args}").and_then(|()| out.flush()).is_err() {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}

/// Write one line to stderr, ignoring failure (there is nowhere left to report it).
pub fn note_line(args: fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{args}");
}

/// Whether a write to stdout has failed (closed pipe, full disk, …).
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// `say!("…", args)`: a line on stdout, never a panic.
macro_rules! say {
    ($($t:tt)*) => { $crate::cli::out::say_line(format_args!($($t)*)) };
}

/// `note!("…", args)`: a line on stderr, never a panic.
macro_rules! note {
    ($($t:tt)*) => { $crate::cli::out::note_line(format_args!($($t)*)) };
}

pub(crate) use {note, say};

/// The engine's `log` records as the programs print them: warnings and errors as `warning: …`
/// on stderr (never a panic); the rest only with `RUST_LOG` set (any value).
struct StderrLog {
    verbose: bool,
}

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn || self.verbose
    }

    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        match r.level() {
            log::Level::Error | log::Level::Warn => {
                note_line(format_args!("warning: {}", r.args()))
            }
            l => note_line(format_args!("{}: {}", l.as_str().to_lowercase(), r.args())),
        }
    }

    fn flush(&self) {}
}

/// Route the engine's `log` records to stderr (once per process; a logger the embedding program
/// set first is kept).
pub fn install_logger() {
    static LOG: std::sync::OnceLock<StderrLog> = std::sync::OnceLock::new();
    let logger = LOG.get_or_init(|| StderrLog {
        verbose: std::env::var_os("RUST_LOG").is_some(),
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(if logger.verbose {
            log::LevelFilter::Trace
        } else {
            log::LevelFilter::Warn
        });
    }
}
