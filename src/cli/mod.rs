//! The command-line programs: `train`, `eval` and `pictures`. Each is an example
//! (`cargo run --release --example train`) and a subcommand of the `vae-wgpu` binary
//! (`cargo run --release -- train`); both call the same code here.

pub mod eval;
pub mod export;
pub mod out;
pub mod pictures;
pub mod run_dir;
pub mod train;
pub mod tune;

use std::process::ExitCode;

use out::note;

use crate::gpu::ContextOptions;

/// The device flags every program takes (flattened into each program's arguments).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DeviceArgs {
    /// auto, vulkan, metal, dx12 or gl (default: $VAE_WGPU_BACKEND, else auto).
    #[arg(long)]
    pub backend: Option<String>,
    /// Adapter index (see the list_adapters example) or name substring.
    #[arg(long)]
    pub adapter: Option<String>,
    /// Time the matmul kernels again instead of using the recorded autotune choices (the new
    /// choices replace the old ones in the cache).
    #[arg(long)]
    pub retune: bool,
}

impl DeviceArgs {
    /// Context options from the environment, overridden by these flags.
    pub fn options(&self) -> crate::Result<ContextOptions> {
        let mut o =
            ContextOptions::from_env_and_flags(self.backend.as_deref(), self.adapter.as_deref())?;
        o.retune = self.retune;
        Ok(o)
    }
}

/// A program's two entry points, the same for every program: `main()` parses the process's
/// arguments, `execute(args)` runs parsed ones (the binary's subcommands call it) with a private
/// runtime dir for Mesa, printing errors as `error: …` with exit status 1 (see [`exit_with`]).
/// The module defines `Args` (clap) and `fn run(Args) -> Result<ExitCode, Box<dyn Error>>`.
macro_rules! program_entry_points {
    () => {
        /// Parse the process's arguments and run.
        pub fn main() -> std::process::ExitCode {
            execute(<Args as clap::Parser>::parse())
        }

        /// Run with parsed arguments; errors are printed as `error: …` with exit status 1.
        pub fn execute(args: Args) -> std::process::ExitCode {
            super::ensure_runtime_dir();
            super::exit_with(run(args))
        }
    };
}
pub(crate) use program_entry_points;

/// The flag that sets a library setting (`batch size` → `--batch-size`), where a program has one.
fn flag_of(setting: &str) -> Option<&'static str> {
    Some(match setting {
        "batch size" => "--batch-size",
        "lr" => "--lr",
        "hidden" => "--hidden",
        "latent" => "--latent",
        "samples" => "--samples",
        "epochs" => "--epochs",
        _ => return None,
    })
}

/// A program's result as an exit status: errors print as `error: …` on stderr with status 1; a
/// setting out of range is named by its flag.
pub(crate) fn exit_with(result: Result<ExitCode, Box<dyn std::error::Error>>) -> ExitCode {
    match result {
        Ok(code) if out::stdout_closed() && code == ExitCode::SUCCESS => {
            ExitCode::from(out::EXIT_OUTPUT_CLOSED)
        }
        Ok(code) => code,
        Err(e) => {
            match e.downcast_ref::<crate::Error>() {
                Some(crate::Error::Setting { setting, problem }) if flag_of(setting).is_some() => {
                    note!("error: {} {problem}", flag_of(setting).unwrap_or_default())
                }
                _ => note!("error: {e}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// A path as a shell reads it: as is when it is plain, else in single quotes.
pub(crate) fn shell_quote(p: &std::path::Path) -> String {
    let s = p.display().to_string();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:,=@".contains(c));
    if plain {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The command that resumes a run, naming the program actually run: `vae-wgpu train …` for the
/// binary, `cargo run --release --example train -- …` for the example.
pub(crate) fn resume_command(program: &str, checkpoint: &std::path::Path, epochs: usize) -> String {
    let exe = std::env::args_os().next().map(std::path::PathBuf::from);
    let is_binary = exe
        .as_ref()
        .and_then(|p| p.file_stem())
        .is_some_and(|n| n == "vae-wgpu");
    let args = format!("--resume {} --epochs {epochs}", shell_quote(checkpoint));
    match exe {
        Some(exe) if is_binary => format!("{} {program} {args}", shell_quote(&exe)),
        _ => format!("cargo run --release --example {program} -- {args}"),
    }
}

/// Mesa prints `error: XDG_RUNTIME_DIR is invalid or not set` when it has none: give the process
/// a private one (mode 0700) so the only `error:` lines a user sees are ours. Call before any
/// thread starts (it sets an environment variable).
pub(crate) fn ensure_runtime_dir() {
    let set = std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|v| !v.is_empty());
    if set || !cfg!(unix) {
        return;
    }
    let dir = std::env::temp_dir().join("vae-wgpu-runtime");
    if std::fs::create_dir_all(&dir).is_ok() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        // SAFETY: called at program start, before any other thread exists.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
    }
}

/// A learning rate as a flag: checked as typed, so `--lr 1e-50` (0 in f32) is refused with the
/// value as given rather than "got 0".
#[derive(Clone, Copy, Debug)]
pub struct Lr(pub f32);

impl std::str::FromStr for Lr {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("--lr must be a finite number > 0 that f32 can hold, got {text}");
        let v: f64 = text.trim().parse().map_err(|_| bad())?;
        let f = v as f32;
        if v.is_finite() && v > 0.0 && f > 0.0 && f.is_finite() {
            Ok(Lr(f))
        } else {
            Err(bad())
        }
    }
}

impl std::fmt::Display for Lr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Catch Ctrl-C and SIGTERM from here on: they only raise the returned flag, which the program
/// checks at its safe points. Installed before any GPU work or output, so a signal that arrives
/// while the program starts up is caught too, never the default death.
pub(crate) fn stop_flag() -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>, String> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::SeqCst))
        .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    Ok(stop)
}
