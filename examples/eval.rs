//! Evaluates a checkpoint on the MNIST test set, on the GPU: the negative ELBO with 1 and with N
//! noise draws per image, and the importance-weighted bound on -log p(x) with k samples.
//!
//! ```text
//! cargo run --release --example eval -- --checkpoint runs/X/checkpoint.safetensors
//! ```

fn main() -> std::process::ExitCode {
    vae_wgpu::cli::eval::main()
}
