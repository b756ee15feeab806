//! Images to latents with a trained model's encoder:
//!
//! ```text
//! vae-wgpu encode --model DIR --input IMAGES --out latents.safetensors [--sample] [--scale]
//! ```
//!
//! `--model` is diffusers' model folder (a run folder of `--arch autoencoder-kl` is one) or a
//! checkpoint. The images of `--input` (a folder, in path order, or one file) are read at their own
//! size (an AutoencoderKL takes any size its blocks divide; the others their trained size) and
//! encoded one at a time: the posterior means, or with `--sample` a draw `mean + σ·ε`; `--scale`
//! applies diffusers' `(z − shift_factor)·scaling_factor`. The file holds tensor `latents`
//! (`[N, C, h, w]`, or `[N, K]`) and the images' names.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use super::latents::{latent_shape, load_model, scaling, write_latents};
use super::out::say;
use crate::gpu::GpuContext;
use crate::model::GpuVae;
use crate::model::gpu::Input;
use crate::rng::{BoxMuller, Philox, domain};
use rand::Rng;

#[derive(clap::Parser, Debug)]
#[command(about = "Encode images into latents with a model's encoder")]
pub struct Args {
    /// diffusers' model folder (config.json, diffusion_pytorch_model.safetensors) or a checkpoint.
    #[arg(long)]
    model: PathBuf,
    /// A folder of images (png, jpg, bmp, gif; read in path order) or one image.
    #[arg(long)]
    input: PathBuf,
    /// The latents file to write (safetensors, tensor `latents`).
    #[arg(long)]
    out: PathBuf,
    /// Draw z = mean + σ·ε instead of the means.
    #[arg(long)]
    sample: bool,
    /// Multiply by the config's scaling_factor (after subtracting shift_factor), as latent
    /// diffusion does.
    #[arg(long)]
    scale: bool,
    /// Seed of --sample's noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    device: super::DeviceArgs,
}

super::program_entry_points!();

/// The image files of `input`, in path order.
fn image_files(input: &std::path::Path) -> Result<Vec<PathBuf>, String> {
    if !input.is_dir() {
        return Ok(vec![input.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(input)
        .map_err(|e| format!("--input {}: {e}", input.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let ext = p.extension().map(|e| e.to_string_lossy().to_lowercase());
            matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg" | "bmp" | "gif"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!(
            "--input {}: no png, jpg, bmp or gif images in the folder",
            input.display()
        ));
    }
    Ok(files)
}

/// An image's pixels, channel-major, with `channels` channels (1: luminance, 3: RGB).
fn read_image(path: &std::path::Path, channels: usize) -> Result<([usize; 3], Vec<u8>), String> {
    let img = image::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let interleaved = match channels {
        1 => img.to_luma8().into_raw(),
        3 => img.to_rgb8().into_raw(),
        c => {
            return Err(format!(
                "the model takes {c}-channel images; encode reads 1 (grey) or 3 (RGB)"
            ));
        }
    };
    let mut chw = vec![0u8; interleaved.len()];
    for (i, &v) in interleaved.iter().enumerate() {
        let (pixel, c) = (i / channels, i % channels);
        chw[c * h * w + pixel] = v;
    }
    Ok(([channels, h, w], chw))
}

fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let ckpt = load_model(&args.model)?;
    let files = image_files(&args.input)?;
    let channels = ckpt
        .cfg
        .kl
        .as_ref()
        .map_or(ckpt.progress.image[0], |k| k.image[0]);
    let channels = if channels == 0 { 1 } else { channels };
    let ctx = GpuContext::new(&args.device.options()?)?;
    say!("adapter: {}", ctx.adapter.short());
    // One model per image size (an AutoencoderKL is convolutional).
    let mut models: HashMap<[usize; 3], GpuVae> = HashMap::new();
    let mut latents = Vec::new();
    let mut shape: Option<(Vec<usize>, PathBuf)> = None;
    let names: Vec<String> = (files.iter())
        .map(|f| {
            f.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string()
        })
        .collect();
    let (scale, shift) = if args.scale {
        scaling(&ckpt.cfg)
    } else {
        (1.0, 0.0)
    };
    for (n, file) in files.iter().enumerate() {
        let (image, pixels) = read_image(file, channels)?;
        let cfg = match ckpt.cfg.kl {
            Some(_) => ckpt.cfg.clone().for_images(image[0], image[1], image[2]),
            None => ckpt.cfg.clone(),
        };
        if pixels.len() != cfg.input {
            return Err(format!(
                "{}: {}x{}x{} values, the model takes {}",
                file.display(),
                image[0],
                image[1],
                image[2],
                cfg.input
            )
            .into());
        }
        cfg.validate()
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let this_shape = latent_shape(&cfg);
        match &shape {
            None => shape = Some((this_shape.clone(), file.clone())),
            Some((s, first)) if *s != this_shape => {
                return Err(format!(
                    "{} encodes to a latent of {:?}, {} to {s:?}: one latents file holds one \
                     size; encode the sizes separately",
                    file.display(),
                    this_shape,
                    first.display()
                )
                .into());
            }
            _ => {}
        }
        let vae = match models.entry(image) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(
                GpuVae::from_params(&ctx, cfg.clone(), 1, args.seed, &ckpt.params)
                    .map_err(|err| super::image_size_hint(&ctx, &cfg, &err))?,
            ),
        };
        let a = vae.acts.rows(1, 1)?;
        let x: Vec<f32> = pixels.iter().map(|&p| cfg.pixel_value(p)).collect();
        ctx.write_f32(&a.x, &x)?;
        let g = vae.plan_encode(&ctx, 1, Input::Given)?;
        vae.run_step(&ctx, &g, 0)?;
        let (mean, logvar) = crate::ops::split_heads(&ctx.read_f32(&a.heads)?, cfg.latent);
        let mut noise = Philox::stream(args.seed, domain::SAMPLES, 16 + n as u32);
        for (m, lv) in mean.iter().zip(&logvar) {
            let z = if args.sample {
                m + (0.5 * cfg.logvar().read(*lv)).exp() * noise.sample(BoxMuller) as f32
            } else {
                *m
            };
            latents.push((z - shift) * scale);
        }
    }
    let per = shape.map(|s| s.0).unwrap_or_default();
    let mut full = vec![files.len()];
    full.extend(&per);
    write_latents(&args.out, &latents, &full, &names, args.scale)?;
    say!(
        "wrote {}: latents {:?} of {} image(s){}",
        args.out.display(),
        full,
        files.len(),
        if args.sample {
            " (sampled)"
        } else {
            " (means)"
        }
    );
    Ok(ExitCode::SUCCESS)
}
