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
