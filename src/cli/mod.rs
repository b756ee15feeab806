//! The command-line programs: `train`, `eval` and `pictures`. Each is an example
//! (`cargo run --release --example train`) and a subcommand of the `vae-wgpu` binary
//! (`cargo run --release -- train`); both call the same code here.

pub mod eval;
pub mod export;
pub mod pictures;
pub mod train;

use std::process::ExitCode;

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
}

impl DeviceArgs {
    /// Context options from the environment, overridden by these flags.
    pub fn options(&self) -> crate::Result<ContextOptions> {
        ContextOptions::from_env_and_flags(self.backend.as_deref(), self.adapter.as_deref())
    }
}

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
