//! Exports the training step as a plan for the WebGPU page in `web/`.
//!
//! ```text
//! cargo run --release --example export_web -- --out web/plan
//! node web/serve.mjs            # then open http://127.0.0.1:8080/
//! ```

fn main() -> std::process::ExitCode {
    vae_wgpu::cli::export::main()
}
