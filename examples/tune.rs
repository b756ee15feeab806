//! Times the matmul kernels of the training step again on this adapter and prints the table (the
//! choices replace the old ones in the autotune cache).
//!
//! ```text
//! cargo run --release --example tune
//! ```

fn main() -> std::process::ExitCode {
    vae_wgpu::cli::tune::main()
}
