//! The engine as a library: train the notebook's model for one epoch, encode ten test images,
//! decode them, save the model (what `vae-wgpu train` does, in the front door's calls).
//!
//! ```text
//! cargo run --release --example library [-- DATA_DIR [OUT_FILE]]   # data/mnist, vae.safetensors
//! ```

use vae_wgpu::prelude::*;

fn main() -> vae_wgpu::Result<()> {
    let mut args = std::env::args().skip(1);
    let data = args.next().unwrap_or_else(|| "data/mnist".into());
    let out = args.next().unwrap_or_else(|| "vae.safetensors".into());

    let device = Device::auto()?;
    let (train, test) = vae_wgpu::data::load_splits(data.as_ref())?;
    let vae = VaeConfig::mlp(784, &[200], 10).init(0)?;
    let mut trainer = Trainer::fit(&device, vae, OptimizerConfig::default(), 128, &train)?;
    for stats in trainer.epochs(&device, 1) {
        let s = stats?;
        println!(
            "epoch {}: -ELBO {:.2} ({:.1} s)",
            s.epoch, s.loss, s.seconds
        );
    }
    let vae = trainer.model(&device)?;
    let z = vae.encode(&device, &test.pixels_f32(0..10))?;
    let images = vae.decode(&device, &z.mean)?;
    println!(
        "encoded {} images to {} latent values each; decoded {} pixels",
        z.len(),
        z.latent,
        images.len()
    );
    vae.save(&out)?;
    println!("saved {out}");
    Ok(())
}
