//! Lists every adapter wgpu sees, with the limits this engine uses.
//!
//! ```text
//! cargo run --release --example list_adapters [-- auto|vulkan|metal|dx12|gl]
//! ```

use std::process::ExitCode;

use vae_wgpu::gpu::{BackendChoice, list_adapters};

fn main() -> ExitCode {
    let backend: BackendChoice = match std::env::args().nth(1).unwrap_or_default().parse() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let adapters = list_adapters(backend);
    if adapters.is_empty() {
        eprintln!(
            "no adapters found for backend '{backend}'. On Linux without a GPU: \
             apt-get update && apt-get install -y mesa-vulkan-drivers"
        );
        return ExitCode::FAILURE;
    }
    for a in adapters {
        println!("{a}");
    }
    ExitCode::SUCCESS
}
