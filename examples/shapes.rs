//! Writes a folder of generated pictures in torchvision's ImageFolder layout — discs, squares and
//! bars of random colours, places and sizes, as PNG and JPEG — to try `--data-dir` on your own
//! images without downloading any:
//!
//! ```text
//! cargo run --release --example shapes -- --out data/shapes --per-class 1000 --size 32
//! cargo run --release -- train --data-dir data/shapes --channels 3 --image-size 32
//! ```

#[path = "../tests/common/shapes.rs"]
#[allow(dead_code)]
mod shapes;

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(about = "Write a folder of generated shape pictures (3 classes) for --data-dir")]
struct Args {
    /// Folder to write (class folders bars/, discs/, squares/ inside).
    #[arg(long, default_value = "data/shapes")]
    out: PathBuf,
    /// Pictures per class.
    #[arg(long, default_value_t = 1000)]
    per_class: usize,
    /// Width and height in pixels.
    #[arg(long, default_value_t = 32)]
    size: u32,
    #[arg(long, default_value_t = 0)]
    seed: u32,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.size < 8 || args.per_class == 0 {
        eprintln!("error: --size must be at least 8 and --per-class at least 1");
        return std::process::ExitCode::FAILURE;
    }
    let files = match shapes::try_shape_folder(
        &args.out,
        args.per_class,
        args.size,
        args.size,
        args.seed,
    ) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!(
        "wrote {} pictures ({}x{}) in {} classes under {}",
        files.len(),
        args.size,
        args.size,
        shapes::CLASSES.len(),
        args.out.display()
    );
    std::process::ExitCode::SUCCESS
}
