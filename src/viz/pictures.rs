//! The pictures of a trained model, computed on the GPU from its current weights:
//! `reconstructions.png`, `samples.png`, `latent_tsne.png`, and with a 2-D latent space
//! `manifold.png`; `loss.png` from the training history.

use std::path::{Path, PathBuf};

use super::{ImageShape, LossHistory, grid_png, loss_png, reconstructions_png, tsne_2d, tsne_png};
use crate::data::ImageSet;
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::model::gpu::{Activations, Input};
use crate::model::{GpuVae, VaeConfig};
use crate::ops::AdamConfig;
use crate::rng::{Stream, domain};

/// Points in the t-SNE map.
pub const TSNE_POINTS: usize = 1000;

/// Which pictures to draw and where.
pub struct PictureSet<'a> {
    pub out_dir: &'a Path,
    /// Appended to file names (e.g. `_epoch3`); empty for the final pictures.
    pub suffix: &'a str,
    pub tsne: bool,
    pub loss: Option<&'a LossHistory>,
}

fn image_rows(data: &[f32], rows: usize, dim: usize) -> Vec<Vec<f32>> {
    data[..rows * dim].chunks(dim).map(|c| c.to_vec()).collect()
}

/// Draw the pictures for weights `params` of a model of sizes `cfg`; returns the files written.
pub fn write_pictures(
    ctx: &GpuContext,
    cfg: &VaeConfig,
    params: &[f32],
    test: &ImageSet,
    seed: u64,
    set: &PictureSet<'_>,
) -> Result<Vec<PathBuf>> {
    // One sample per picture.
    let cfg = cfg.for_inference(1);
    let dim = cfg.input;
    let shape = ImageShape {
        channels: test.channels,
        h: test.rows,
        w: test.cols,
    };
    if test.dim() != dim {
        return Err(Error::Config(format!(
            "test images have {} values, the model takes {dim}: point --data-dir at the data it \
             was trained on",
            test.dim()
        )));
    }
    // Rows the pictures' buffers may have on this adapter: large images (3x256x256, say) fit a
    // training batch but not 1000 rows at once; the pictures then use fewer.
    let mut cap = TSNE_POINTS.min(test.count).max(400);
    while cap > 1 && GpuVae::check_fits(ctx, &cfg, cap).is_err() {
        cap /= 2;
    }
    let n_tsne = TSNE_POINTS.min(test.count).min(cap);
    let mut vae = GpuVae::from_params(ctx, cfg.clone(), AdamConfig::default(), cap, seed, params)?;
    let acc = vae.new_accumulator(ctx)?;
    let name = |stem: &str| set.out_dir.join(format!("{stem}{}.png", set.suffix));
    let mut written = Vec::new();

    // Reconstructions: the first 10 test images over their reconstructions (sampled z, as the
    // notebook's `model(x)`).
    let n_rec = 10.min(test.count).min(cap);
    let x: Vec<f32> = (0..n_rec).flat_map(|i| test.image_f32(i)).collect();
    let a = vae.acts.rows(n_rec, 1)?;
    ctx.write_f32(&a.x, &x)?;
    let g = vae.plan_reconstruct(ctx, n_rec, Input::Given, &acc)?;
    vae.run_step(ctx, &g, 0)?;
    let recon = ctx.read_f32(&a.logits)?;
    let path = name("reconstructions");
    reconstructions_png(
        &path,
        &image_rows(&x, n_rec, dim),
        &image_rows(&recon, n_rec, dim),
        shape,
    )?;
    written.push(path);

    // Samples: decodes of z ~ N(0, I), a 10x10 grid.
    let n_samples = 100.min(cap);
    let mut s = Stream::new(seed, domain::SAMPLES, 1);
    let z: Vec<f32> = (0..n_samples * cfg.latent)
        .map(|_| s.normal() as f32)
        .collect();
    let logits = {
        let a = vae.acts.decoder_rows(n_samples)?;
        ctx.write_f32(&a.z, &z)?;
        a.logits
    };
    let g = vae.plan_decode(ctx, n_samples)?;
    vae.run_step(ctx, &g, 0)?;
    let path = name("samples");
    grid_png(
        &path,
        &image_rows(&ctx.read_f32(&logits)?, n_samples, dim),
        shape,
        10,
        2,
    )?;
    written.push(path);

    // The manifold of a 2-D latent space: decodes over a 20x20 grid of z in [-2, 2]².
    if cfg.latent == 2 && cap >= 4 {
        let n = 20.min(cap.isqrt());
        let z: Vec<f32> = (0..n * n)
            .flat_map(|i| {
                let (r, c) = (i / n, i % n);
                let t = |k: usize| -2.0 + 4.0 * k as f32 / (n - 1) as f32;
                [t(c), -t(r)]
            })
            .collect();
        let logits = {
            let a = vae.acts.decoder_rows(n * n)?;
            ctx.write_f32(&a.z, &z)?;
            a.logits
        };
        let g = vae.plan_decode(ctx, n * n)?;
        vae.run_step(ctx, &g, 0)?;
        let path = name("manifold");
        grid_png(
            &path,
            &image_rows(&ctx.read_f32(&logits)?, n * n, dim),
            shape,
            n,
            1,
        )?;
        written.push(path);
    }

    // t-SNE of the encoded means of random test images, coloured by class.
    if set.tsne && n_tsne >= 4 {
        let pick = Stream::new(seed, domain::SAMPLES, 2).permutation(test.count);
        let pick = &pick[..n_tsne];
        let x: Vec<f32> = pick
            .iter()
            .flat_map(|&i| test.image_f32(i as usize))
            .collect();
        let a = vae.acts.rows(n_tsne, 1)?;
        ctx.write_f32(&a.x, &x)?;
        let g = vae.plan_encode(ctx, n_tsne, Input::Given)?;
        vae.run_step(ctx, &g, 0)?;
        let (mu, _) = Activations::split_heads(&ctx.read_f32(&a.heads)?, cfg.latent);
        let labels: Vec<u8> = pick.iter().map(|&i| test.labels[i as usize]).collect();
        let points = tsne_2d(&mu, cfg.latent, seed)?;
        let path = name("latent_tsne");
        tsne_png(&path, &points, &labels, &test.classes)?;
        written.push(path);
    }

    if let Some(hist) = set.loss
        && (!hist.epochs.is_empty() || !hist.steps.is_empty())
    {
        let path = name("loss");
        loss_png(&path, hist)?;
        written.push(path);
    }
    Ok(written)
}
