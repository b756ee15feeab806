//! What users look at: image grids (reconstructions, samples, the latent manifold), the loss curve
//! and a t-SNE map of the latent codes. PNGs are encoded with the `png` crate; charts are drawn by
//! `plotters` into memory with a bundled font (DejaVu Sans, assets/fonts), so text renders the same
//! on a fresh machine with no system fonts.

pub mod pictures;
pub mod tensorboard;

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::{Error, Result};
use crate::rng::{BoxMuller, Philox, domain};
use rand::Rng;

const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font compiled into the binary; a failure here would be a
        // build defect, reported when the first chart's text fails to draw.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// An encoded 8-bit PNG picture (`channels` 1 = gray, 3 = RGB): what a picture file holds, and
/// what the TensorBoard event file embeds.
#[derive(Clone, Debug)]
pub struct Png {
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub bytes: Vec<u8>,
}

impl Png {
    /// Encode interleaved 8-bit pixels.
    pub fn encode(width: u32, height: u32, channels: u8, data: &[u8]) -> Result<Png> {
        let err = |e: png::EncodingError| Error::Config(format!("PNG encoding failed: {e}"));
        let mut bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut bytes, width, height);
            enc.set_color(if channels == 1 {
                png::ColorType::Grayscale
            } else {
                png::ColorType::Rgb
            });
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().map_err(err)?;
            w.write_image_data(data).map_err(err)?;
            w.finish().map_err(err)?;
        }
        Ok(Png {
            width,
            height,
            channels,
            bytes,
        })
    }

    /// Write it atomically (a full disk leaves the old file or none, never a truncated one).
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::files::write_atomic(path, &self.bytes)
    }
}

/// Write an 8-bit PNG (`channels` 1 = gray, 3 = RGB), atomically.
pub fn write_png(path: &Path, width: u32, height: u32, channels: u8, data: &[u8]) -> Result<()> {
    Png::encode(width, height, channels, data)
        .map_err(|e| io_err(path, e))?
        .save(path)
}

/// The shape of the images drawn: `channels` (1 grayscale, 3 RGB) planes of `h x w`, as the model
/// sees them (values in [0, 1]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageShape {
    pub channels: usize,
    pub h: usize,
    pub w: usize,
}

/// A grid of images, `cols` per row, each pixel scaled up `scale` times (less for large images:
/// cells stay near 112 pixels), with a 1-pixel (scaled) dark gutter. Returns (width, height,
/// interleaved pixels of `shape.channels` channels).
pub fn image_grid(
    images: &[Vec<f32>],
    shape: ImageShape,
    cols: usize,
    scale: usize,
) -> (u32, u32, Vec<u8>) {
    let ImageShape { channels: ch, h, w } = shape;
    let scale = scale.min((112 / h.max(w).max(1)).max(1)).max(1);
    let rows = images.len().div_ceil(cols.max(1));
    let cell_w = (w + 1) * scale;
    let cell_h = (h + 1) * scale;
    let (width, height) = (cols * cell_w + scale, rows * cell_h + scale);
    let mut out = vec![40u8; width * height * ch];
    for (n, img) in images.iter().enumerate() {
        let (gr, gc) = (n / cols, n % cols);
        for y in 0..h * scale {
            for x in 0..w * scale {
                let py = scale + gr * cell_h + y;
                let px = scale + gc * cell_w + x;
                for c in 0..ch {
                    let v = img[c * h * w + (y / scale) * w + x / scale].clamp(0.0, 1.0);
                    out[(py * width + px) * ch + c] = (v * 255.0).round() as u8;
                }
            }
        }
    }
    (width as u32, height as u32, out)
}

/// A grid of images as a PNG (grayscale or RGB as the images are).
pub fn grid_png(images: &[Vec<f32>], shape: ImageShape, cols: usize, scale: usize) -> Result<Png> {
    let (gw, gh, px) = image_grid(images, shape, cols, scale);
    Png::encode(gw, gh, shape.channels as u8, &px)
}

/// Widest label column of a figure's named rows, in pixels (the reconstructions figure's).
pub const LABEL_WIDTH: u32 = 136;

/// The notebook's figure: observations on the top row, their reconstructions below, each row
/// labelled in a column on the left (as the notebook's title says which is which).
pub fn reconstructions_png(
    originals: &[Vec<f32>],
    recons: &[Vec<f32>],
    shape: ImageShape,
) -> Result<Png> {
    let all: Vec<Vec<f32>> = originals.iter().chain(recons).cloned().collect();
    let rows = ["input".to_string(), "reconstruction".to_string()];
    labelled_grid_png(&all, shape, originals.len(), 4, &rows)
}

/// A grid of images, `cols` per row, each row named in a column on the left (names longer than
/// 14 characters are cut).
pub fn labelled_grid_png(
    images: &[Vec<f32>],
    shape: ImageShape,
    cols: usize,
    scale: usize,
    row_names: &[String],
) -> Result<Png> {
    let (gw, gh, px) = image_grid(images, shape, cols, scale);
    let ch = shape.channels;
    // As wide as the longest name needs (about 11 pixels a character at 18 px).
    let longest = row_names.iter().map(|n| n.chars().count().min(14)).max();
    let label_w = (longest.unwrap_or(0) as u32 * 11 + 16).clamp(32, LABEL_WIDTH);
    let (w, h) = (gw + label_w, gh);
    // The grid to the right of the label column, as RGB for drawing the text.
    let mut rgb = vec![40u8; (w * h * 3) as usize];
    for y in 0..gh as usize {
        for x in 0..gw as usize {
            for c in 0..3 {
                rgb[(y * w as usize + label_w as usize + x) * 3 + c] =
                    px[(y * gw as usize + x) * ch + c.min(ch - 1)];
            }
        }
    }
    register_font();
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        let style = ("sans-serif", 18).into_font().color(&WHITE);
        let n = row_names.len().max(1) as u32;
        for (row, text) in row_names.iter().enumerate() {
            let text: String = text.chars().take(14).collect();
            let y = (row as u32 * gh / n + gh / (2 * n)).saturating_sub(9);
            root.draw_text(&text, &style, (8, y as i32))
                .map_err(draw_err)?;
        }
        root.present().map_err(draw_err)?;
    }
    if ch == 1 {
        let gray: Vec<u8> = rgb.chunks_exact(3).map(|p| p[0]).collect();
        Png::encode(w, h, 1, &gray)
    } else {
        Png::encode(w, h, 3, &rgb)
    }
}

/// Per-epoch and per-logged-step losses, for the loss chart.
#[derive(Clone, Debug, Default)]
pub struct LossHistory {
    /// (epoch, train loss, test loss).
    pub epochs: Vec<(usize, f64, Option<f64>)>,
    /// (position in epochs, e.g. 1.21, batch loss per image).
    pub steps: Vec<(f64, f64)>,
}

fn draw_err(e: impl std::fmt::Display) -> Error {
    Error::Config(format!("drawing failed: {e}"))
}

fn render_rgb(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<()>,
) -> Result<()> {
    register_font();
    let mut buf = vec![255u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        draw(root.clone())?;
        root.present().map_err(draw_err)?;
    }
    write_png(path, size.0, size.1, 3, &buf)
}

/// Train and test loss per epoch, and the logged batch losses, against epochs.
pub fn loss_png(path: &Path, hist: &LossHistory) -> Result<()> {
    let mut ys: Vec<f64> = hist.steps.iter().map(|s| s.1).collect();
    ys.extend(hist.epochs.iter().map(|e| e.1));
    ys.extend(hist.epochs.iter().filter_map(|e| e.2));
    if ys.is_empty() {
        return Err(Error::Config("no losses to plot".into()));
    }
    // Skip the first logged batch (≈543 at initialisation) when setting the y range, so the
    // interesting part is not squashed; it is drawn clipped at the top.
    let body: Vec<f64> = if ys.len() > 2 {
        ys[1..].to_vec()
    } else {
        ys.clone()
    };
    let lo = body.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = body.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let pad = ((hi - lo) * 0.1).max(1.0);
    let x_max = hist.epochs.iter().map(|e| e.0 as f64).fold(1.0, f64::max);
    render_rgb(path, (900, 560), |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "VAE loss (negative ELBO, nats per image)",
                ("sans-serif", 24),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, (lo - pad)..(hi + pad))
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("loss")
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 17))
            .draw()
            .map_err(draw_err)?;
        let faint = RGBColor(150, 170, 220);
        chart
            .draw_series(LineSeries::new(
                hist.steps.iter().cloned(),
                faint.stroke_width(1),
            ))
            .map_err(draw_err)?
            .label("train batch loss (logged steps)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], faint));
        let train: Vec<(f64, f64)> = hist.epochs.iter().map(|e| (e.0 as f64, e.1)).collect();
        chart
            .draw_series(LineSeries::new(train.clone(), BLUE.stroke_width(3)))
            .map_err(draw_err)?
            .label("train (epoch average)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(3)));
        chart
            .draw_series(train.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))
            .map_err(draw_err)?;
        let test: Vec<(f64, f64)> = hist
            .epochs
            .iter()
            .filter_map(|e| e.2.map(|t| (e.0 as f64, t)))
            .collect();
        if !test.is_empty() {
            chart
                .draw_series(LineSeries::new(test.clone(), RED.stroke_width(3)))
                .map_err(draw_err)?
                .label("test")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(3)));
            chart
                .draw_series(test.iter().map(|&p| Circle::new(p, 4, RED.filled())))
                .map_err(draw_err)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()
            .map_err(draw_err)?;
        Ok(())
    })
}

/// Ten distinguishable colours (matplotlib's tab10), one per digit.
pub const DIGIT_COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// t-SNE of `codes` (one row of `dim` values per point) to 2-D, Barnes–Hut (θ = 0.5), perplexity
/// 30, from a seeded initial embedding so the map is reproducible.
pub fn tsne_2d(codes: &[f32], dim: usize, seed: u64) -> Result<Vec<(f64, f64)>> {
    let n = codes.len() / dim.max(1);
    if n < 4 || dim == 0 {
        return Err(Error::Config(format!(
            "t-SNE needs at least 4 points, got {n}"
        )));
    }
    let rows: Vec<&[f32]> = codes.chunks(dim).collect();
    let mut s = Philox::stream(seed, domain::SAMPLES, 0x75e);
    let init: Vec<f32> = (0..n * 2)
        .map(|_| (s.sample(BoxMuller) * 1e-4) as f32)
        .collect();
    let perplexity = 30.0f32.min((n as f32 - 1.0) / 3.0);
    let emb = bhtsne::tSNE::<f32, &[f32]>::new(&rows)
        .perplexity(perplexity)
        .epochs(1000)
        .initial_embedding(init)
        .barnes_hut(0.5, |a, b| {
            a.iter()
                .zip(b.iter())
                .map(|(x, y)| (x - y).powi(2))
                .sum::<f32>()
                .sqrt()
        })
        .embedding();
    Ok(emb.chunks(2).map(|p| (p[0] as f64, p[1] as f64)).collect())
}

/// A scatter plot of 2-D points coloured by class, with a legend of the class names (the first
/// 20 classes present; colours repeat after 10).
pub fn tsne_png(
    path: &Path,
    points: &[(f64, f64)],
    labels: &[u8],
    classes: &[String],
) -> Result<()> {
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !(x0.is_finite() && y0.is_finite()) {
        return Err(Error::Config("t-SNE produced no finite points".into()));
    }
    let (px, py) = ((x1 - x0) * 0.05 + 1e-9, (y1 - y0) * 0.05 + 1e-9);
    render_rgb(path, (800, 720), |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("t-SNE of latent means ({} test images)", points.len()),
                ("sans-serif", 22),
            )
            .margin(15)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d((x0 - px)..(x1 + px * 6.0), (y0 - py)..(y1 + py))
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(draw_err)?;
        let mut present: Vec<u8> = labels.to_vec();
        present.sort_unstable();
        present.dedup();
        for (i, &class) in present.iter().enumerate() {
            let color = DIGIT_COLORS[class as usize % DIGIT_COLORS.len()];
            let series = chart
                .draw_series(
                    points
                        .iter()
                        .zip(labels)
                        .filter(|(_, l)| **l == class)
                        .map(|(&p, _)| Circle::new(p, 3, color.filled())),
                )
                .map_err(draw_err)?;
            if i < 20 {
                let name = classes
                    .get(class as usize)
                    .cloned()
                    .unwrap_or_else(|| class.to_string());
                series
                    .label(name)
                    .legend(move |(x, y)| Circle::new((x + 6, y), 5, color.filled()));
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(("sans-serif", 16))
            .draw()
            .map_err(draw_err)?;
        Ok(())
    })
}
