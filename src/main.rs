//! `vae-wgpu train|eval|pictures|export-web|tune`: the example programs as one binary.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vae_wgpu::cli;

#[derive(Parser)]
#[command(
    version,
    about = "Variational autoencoders trained by hand-written WGSL kernels, on any GPU wgpu reaches"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train (or resume training) the VAE.
    Train(cli::train::Args),
    /// Evaluate a checkpoint on the test set.
    Eval(cli::eval::Args),
    /// Draw a checkpoint's pictures.
    Pictures(cli::pictures::Args),
    /// Export the training step as a plan for the WebGPU page in web/.
    ExportWeb(cli::export::Args),
    /// Time the matmul kernels again and print the autotune table.
    Tune(cli::tune::Args),
    /// Encode images into latents (an AutoencoderKL's `[N, C, h, w]`).
    Encode(cli::encode::Args),
    /// Decode latents into images.
    Decode(cli::decode::Args),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Train(a) => cli::train::execute(a),
        Command::Eval(a) => cli::eval::execute(a),
        Command::Pictures(a) => cli::pictures::execute(a),
        Command::ExportWeb(a) => cli::export::execute(a),
        Command::Tune(a) => cli::tune::execute(a),
        Command::Encode(a) => cli::encode::execute(a),
        Command::Decode(a) => cli::decode::execute(a),
    }
}
