//! Draws a checkpoint's pictures without training: reconstructions, samples, the t-SNE map of the
//! latent codes (and the manifold for a 2-D latent space).
//!
//! ```text
//! cargo run --release --example pictures -- --checkpoint runs/X/model.safetensors --out pics
//! ```

fn main() -> std::process::ExitCode {
    vae_wgpu::cli::pictures::main()
}
