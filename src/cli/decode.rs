//! Latents to images with a trained model's decoder:
//!
//! ```text
//! vae-wgpu decode --model DIR --latents latents.safetensors --out FOLDER
//! ```
//!
//! One PNG per latent (named after the image it was encoded from, when the file records it), the
//! likelihood's mean drawn as pixels; scaled latents (`encode --scale`) are unscaled first. An
//! AutoencoderKL decodes a latent of any size to the image size it implies.

use std::path::PathBuf;
use std::process::ExitCode;

use super::latents::{latent_shape, load_model, read_latents, scaling};
use super::out::say;
use crate::gpu::GpuContext;
use crate::model::GpuVae;

#[derive(clap::Parser, Debug)]
#[command(about = "Decode latents into images with a model's decoder")]
pub struct Args {
    /// diffusers' model folder (config.json, diffusion_pytorch_model.safetensors) or a checkpoint.
    #[arg(long)]
    model: PathBuf,
    /// A latents file (`vae-wgpu encode` writes one: tensor `latents`).
    #[arg(long)]
    latents: PathBuf,
    /// The folder to write the PNGs into.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    device: super::DeviceArgs,
}

super::program_entry_points!();

fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let ckpt = load_model(&args.model)?;
    let super::latents::Latents {
        values: mut z,
        shape,
        names,
        scaled,
    } = read_latents(&args.latents)?;
    let mut cfg = ckpt.cfg.clone();
    let n = shape.first().copied().unwrap_or(0);
    let per = &shape[1.min(shape.len())..];
    if let Some(k) = cfg.kl.clone()
        && let [c, h, w] = *per
    {
        // The image size the latent implies: its sides times 2^downsamples.
        let f = 1usize << k.config.downsamples();
        if c != k.config.latent_channels {
            return Err(format!(
                "{}: latents of {c} channels; the model's have {}",
                args.latents.display(),
                k.config.latent_channels
            )
            .into());
        }
        cfg = cfg.for_images(k.image[0], h * f, w * f);
    }
    if n == 0 || per != latent_shape(&cfg).as_slice() {
        return Err(format!(
            "{}: latents {shape:?}; the model's are [N, {}]",
            args.latents.display(),
            latent_shape(&cfg)
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
        .into());
    }
    if scaled {
        let (scale, shift) = scaling(&cfg);
        z.iter_mut().for_each(|v| *v = *v / scale + shift);
    }
    std::fs::create_dir_all(&args.out).map_err(|e| format!("--out {}: {e}", args.out.display()))?;
    let ctx = GpuContext::new(&args.device.options()?)?;
    say!("adapter: {}", ctx.adapter.short());
    let mut vae = GpuVae::from_params(&ctx, cfg.clone(), 1, 0, &ckpt.params)
        .map_err(|e| super::image_size_hint(&ctx, &cfg, &e))?;
    let [c, h, w] = match &cfg.kl {
        Some(k) => k.image,
        None => ckpt.progress.image,
    };
    if c * h * w != cfg.input {
        return Err("the model does not record its images' shape: decode needs one".into());
    }
    let g = vae.plan_decode(&ctx, 1)?;
    let a = vae.acts.decoder_rows(1)?;
    for i in 0..n {
        ctx.write_f32(&a.z, &z[i * cfg.latent..(i + 1) * cfg.latent])?;
        vae.run_step(&ctx, &g, 0)?;
        let mean = ctx.read_f32(&a.logits)?;
        let px = |v: f32| (cfg.display_value(v) * 255.0).round() as u8;
        let stem = names
            .get(i)
            .and_then(|f| std::path::Path::new(f).file_stem())
            .map_or(format!("{i:05}"), |s| s.to_string_lossy().to_string());
        let path = args.out.join(format!("{stem}.png"));
        let plane = h * w;
        let saved = match c {
            1 => image::GrayImage::from_fn(w as u32, h as u32, |x, y| {
                image::Luma([px(mean[y as usize * w + x as usize])])
            })
            .save(&path),
            3 => image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
                let at = y as usize * w + x as usize;
                image::Rgb([px(mean[at]), px(mean[plane + at]), px(mean[2 * plane + at])])
            })
            .save(&path),
            _ => return Err(format!("{c}-channel images cannot be written as PNG").into()),
        };
        saved.map_err(|e| format!("{}: {e}", path.display()))?;
    }
    say!("wrote {n} image(s) into {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}
