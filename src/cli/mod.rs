//! The command-line programs: `train`, `eval` and `pictures`. Each is an example
//! (`cargo run --release --example train`) and a subcommand of the `vae-wgpu` binary
//! (`cargo run --release -- train`); both call the same code here.

pub mod eval;
pub mod pictures;
pub mod train;
