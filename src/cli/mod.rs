//! The command-line programs: `train`, `eval` and `pictures`. Each is an example
//! (`cargo run --release --example train`) and a subcommand of the `vae-wgpu` binary
//! (`cargo run --release -- train`); both call the same code here.

pub mod eval;
pub mod pictures;
pub mod train;

use std::process::ExitCode;

/// A program's result as an exit status: errors print as `error: …` on stderr with status 1.
pub(crate) fn exit_with(result: Result<ExitCode, Box<dyn std::error::Error>>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
