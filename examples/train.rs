//! Trains the notebook's Bernoulli VAE on MNIST, on the GPU.
//!
//! ```text
//! cargo run --release --example train                     # 5 epochs, the notebook's settings
//! cargo run --release --example train -- --resume runs/X/checkpoint.safetensors
//! cargo run --release --example train -- --help
//! ```
//!
//! Prints what the notebook prints (`[i/469] batch loss` every 100 steps, `Average loss` per
//! epoch), plus the test-set loss, wall time per epoch and the adapter, with a progress bar.
//! Writes into `--out`: `checkpoint.safetensors` (resumable) and `model.safetensors` (PyTorch
//! state_dict) every epoch, `losses.csv`, and the pictures: `reconstructions.png`, `samples.png`,
//! `latent_tsne.png`, `loss.png` (and `manifold.png` with `--latent 2`).
//! Ctrl-C / SIGTERM: the current step finishes, a checkpoint is written, and the run exits with
//! status 130 and the command that resumes it.

fn main() -> std::process::ExitCode {
    vae_wgpu::cli::train::main()
}
