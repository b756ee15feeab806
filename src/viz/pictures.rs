//! The pictures of a trained model, computed on the GPU from its current weights:
//! `reconstructions.png`, `samples.png`, `latent_tsne.png`, with a 2-D latent space
//! `manifold.png`, for a conditional model `samples_by_class.png` (one labelled row per class);
//! `loss.png` from the training history.

use std::path::{Path, PathBuf};

use super::{
    ImageShape, LossHistory, Png, grid_png, labelled_grid_png, loss_png, reconstructions_png,
    tsne_2d, tsne_png,
};
use crate::data::ImageSet;
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::model::gpu::{Activations, Input};
use crate::model::{GpuVae, VaeConfig};
use crate::rng::{BoxMuller, Philox, domain};
use rand::Rng;

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

/// Write a conditional model's classes of `rows` rows into `labels` (nothing for another model).
fn write_labels(
    ctx: &GpuContext,
    vae: &GpuVae,
    labels: &crate::gpu::GpuTensor,
    classes: impl Iterator<Item = u32>,
) -> Result<()> {
    if vae.cfg.is_conditional() {
        let v: Vec<u32> = classes.take(labels.len()).collect();
        ctx.write_u32(labels, &v)?;
    }
    Ok(())
}

/// Pictures by name (`samples`), encoded.
pub type Grids = Vec<(&'static str, Png)>;

/// Test image `i` on the model's pixel scale ([0, 1], or an AutoencoderKL's [−1, 1]).
fn model_image(cfg: &VaeConfig, test: &ImageSet, i: usize) -> Vec<f32> {
    let d = test.dim();
    (test.images[i * d..(i + 1) * d].iter())
        .map(|&p| cfg.pixel_value(p))
        .collect()
}

/// Values on the model's pixel scale as a picture's, in [0, 1].
fn display(cfg: &VaeConfig, v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| cfg.display_value(x)).collect()
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
    let name = |stem: &str| set.out_dir.join(format!("{stem}{}.png", set.suffix));
    let (mut vae, cap, grids) = draw(ctx, cfg, params, test, seed)?;
    let mut written = save_grids(&grids, set.out_dir, set.suffix)?;
    let cfg = &vae.cfg.clone();
    let n_tsne = TSNE_POINTS.min(test.count).min(cap);

    // A stop asked for (Ctrl-C, SIGTERM) ends the pictures here: those written are whole.
    if ctx.cancel.is_cancelled() {
        return Ok(written);
    }
    // t-SNE of the encoded means of random test images, coloured by class.
    if set.tsne && n_tsne >= 4 {
        let pick = Philox::stream(seed, domain::SAMPLES, 2).permutation(test.count);
        let pick = &pick[..n_tsne];
        let x: Vec<f32> = pick
            .iter()
            .flat_map(|&i| model_image(cfg, test, i as usize))
            .collect();
        let a = vae.acts.rows(n_tsne, 1)?;
        ctx.write_f32(&a.x, &x)?;
        let picked = pick.iter().map(|&i| test.labels[i as usize] as u32);
        write_labels(ctx, &vae, &a.labels, picked)?;
        let g = vae.plan_encode(ctx, n_tsne, Input::Given)?;
        vae.run_step(ctx, &g, 0)?;
        let (mu, _) = Activations::split_heads(&ctx.read_f32(&a.heads)?, cfg.latent);
        let labels: Vec<u8> = pick.iter().map(|&i| test.labels[i as usize]).collect();
        // The map takes seconds and cannot be stopped midway: it runs on a thread of its own,
        // left behind (the process is about to exit) when a stop is asked for.
        let (latent, (tx, rx)) = (cfg.latent, std::sync::mpsc::channel());
        std::thread::spawn(move || tx.send(tsne_2d(&mu, latent, seed)));
        let points = loop {
            match rx.recv_timeout(std::time::Duration::from_millis(50)) {
                Ok(points) => break points?,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if ctx.cancel.is_cancelled() {
                        return Ok(written);
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(crate::Error::Device(
                        "the t-SNE map's thread ended early".into(),
                    ));
                }
            }
        };
        let path = name("latent_tsne");
        tsne_png(&path, &points, &labels, &test.classes)?;
        written.push(path);
    }

    if let Some(hist) = set.loss
        && (!hist.epochs.is_empty() || !hist.steps.is_empty())
        && !ctx.cancel.is_cancelled()
    {
        let path = name("loss");
        loss_png(&path, hist)?;
        written.push(path);
    }
    Ok(written)
}

/// The image grids of weights `params` (no files): `reconstructions`, `samples`, for a conditional
/// model `samples_by_class`, with a 2-D latent space `manifold`, as (name, PNG): what
/// [`write_pictures`] saves and the TensorBoard event file embeds after each epoch.
pub fn draw_grids(
    ctx: &GpuContext,
    cfg: &VaeConfig,
    params: &[f32],
    test: &ImageSet,
    seed: u64,
) -> Result<Grids> {
    Ok(draw(ctx, cfg, params, test, seed)?.2)
}

/// Save grids as `{name}{suffix}.png` in `dir`; returns the files written.
pub fn save_grids(grids: &Grids, dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let mut written = Vec::with_capacity(grids.len());
    for (stem, png) in grids {
        let path = dir.join(format!("{stem}{suffix}.png"));
        png.save(&path)?;
        written.push(path);
    }
    Ok(written)
}

/// The grids, and the model they were drawn with and its row capacity (for the t-SNE map).
fn draw(
    ctx: &GpuContext,
    cfg: &VaeConfig,
    params: &[f32],
    test: &ImageSet,
    seed: u64,
) -> Result<(GpuVae, usize, Grids)> {
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
    let mut vae = GpuVae::from_params(ctx, cfg.clone(), cap, seed, params)?;
    let acc = vae.new_accumulator(ctx)?;
    let mut written = Vec::new();

    // Reconstructions: the first 10 test images over their reconstructions (sampled z, as the
    // notebook's `model(x)`).
    let n_rec = 10.min(test.count).min(cap);
    let x: Vec<f32> = (0..n_rec)
        .flat_map(|i| model_image(&cfg, test, i))
        .collect();
    let a = vae.acts.rows(n_rec, 1)?;
    ctx.write_f32(&a.x, &x)?;
    write_labels(ctx, &vae, &a.labels, test.labels.iter().map(|&l| l as u32))?;
    let g = vae.plan_reconstruct(ctx, n_rec, Input::Given, &acc)?;
    vae.run_step(ctx, &g, 0)?;
    let recon = ctx.read_f32(&a.logits)?;
    let png = reconstructions_png(
        &image_rows(&display(&cfg, &x), n_rec, dim),
        &image_rows(&display(&cfg, &recon), n_rec, dim),
        shape,
    )?;
    written.push(("reconstructions", png));

    // Samples: decodes of z ~ N(0, I), a 10x10 grid.
    let n_samples = 100.min(cap);
    let mut s = Philox::stream(seed, domain::SAMPLES, 1);
    let z: Vec<f32> = (0..n_samples * cfg.latent)
        .map(|_| s.sample(BoxMuller) as f32)
        .collect();
    let logits = {
        let a = vae.acts.decoder_rows(n_samples)?;
        ctx.write_f32(&a.z, &z)?;
        // A conditional model's samples cycle through the classes.
        let classes = cfg.classes.max(1) as u32;
        write_labels(ctx, &vae, &a.labels, (0..).map(|i| i % classes))?;
        a.logits
    };
    let g = vae.plan_decode(ctx, n_samples)?;
    vae.run_step(ctx, &g, 0)?;
    let png = grid_png(
        &image_rows(&display(&cfg, &ctx.read_f32(&logits)?), n_samples, dim),
        shape,
        10,
        2,
    )?;
    written.push(("samples", png));

    // A conditional model: one row per class, named, over the same 10 codes (a column holds z,
    // the "style", fixed while the class changes).
    let rows = cfg.classes.min(cap / 10);
    if rows > 0 {
        let mut s = Philox::stream(seed, domain::SAMPLES, 3);
        let codes: Vec<f32> = (0..10 * cfg.latent)
            .map(|_| s.sample(BoxMuller) as f32)
            .collect();
        let z: Vec<f32> = (0..rows).flat_map(|_| codes.iter().copied()).collect();
        let logits = {
            let a = vae.acts.decoder_rows(rows * 10)?;
            ctx.write_f32(&a.z, &z)?;
            write_labels(ctx, &vae, &a.labels, (0..rows as u32 * 10).map(|i| i / 10))?;
            a.logits
        };
        let g = vae.plan_decode(ctx, rows * 10)?;
        vae.run_step(ctx, &g, 0)?;
        let names: Vec<String> = (0..rows)
            .map(|c| {
                test.classes
                    .get(c)
                    .cloned()
                    .unwrap_or_else(|| c.to_string())
            })
            .collect();
        let png = labelled_grid_png(
            &image_rows(&display(&cfg, &ctx.read_f32(&logits)?), rows * 10, dim),
            shape,
            10,
            2,
            &names,
        )?;
        written.push(("samples_by_class", png));
    }

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
            // A conditional model's manifold is its first class's.
            write_labels(ctx, &vae, &a.labels, std::iter::repeat(0))?;
            a.logits
        };
        let g = vae.plan_decode(ctx, n * n)?;
        vae.run_step(ctx, &g, 0)?;
        let png = grid_png(
            &image_rows(&display(&cfg, &ctx.read_f32(&logits)?), n * n, dim),
            shape,
            n,
            1,
        )?;
        written.push(("manifold", png));
    }
    Ok((vae, cap, written))
}
