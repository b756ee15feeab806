//! Generated image folders (for the tests and `examples/shapes.rs`): pictures of simple shapes (discs, squares, horizontal bars) at random
//! places and sizes, written as PNG and JPEG files in torchvision's ImageFolder layout.

use std::path::{Path, PathBuf};

use rand::Rng;
use vae_wgpu::rng::{Between, Philox, domain};

pub const CLASSES: [&str; 3] = ["bars", "discs", "squares"];

/// One `w x h` RGB picture of `class` (an index into [`CLASSES`]): a bright shape on a dark
/// background, its colour drawn at random.
pub fn shape_picture(class: usize, w: u32, h: u32, seed: u32) -> image::RgbImage {
    let mut s = Philox::stream(u64::from(seed), domain::SAMPLES, 77);
    let (fw, fh) = (w as f64, h as f64);
    let size = (0.25 + 0.2 * s.sample(Between(0.0, 1.0))) * fw.min(fh);
    let cx = s.sample(Between(size, fw - size));
    let cy = s.sample(Between(size, fh - size));
    let color = [
        s.sample(Between(150.0, 255.0)) as u8,
        s.sample(Between(150.0, 255.0)) as u8,
        s.sample(Between(150.0, 255.0)) as u8,
    ];
    image::RgbImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (x as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
        let inside = match class {
            0 => dy.abs() < size * 0.3 && dx.abs() < size * 1.2,
            1 => dx * dx + dy * dy < size * size,
            _ => dx.abs() < size * 0.8 && dy.abs() < size * 0.8,
        };
        image::Rgb(if inside { color } else { [10, 10, 10] })
    })
}

/// Write `per_class` pictures of each class under `root/<class>/`, alternating PNG and JPEG.
pub fn try_shape_folder(
    root: &Path,
    per_class: usize,
    w: u32,
    h: u32,
    seed: u32,
) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for (c, name) in CLASSES.iter().enumerate() {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        for i in 0..per_class {
            let img = shape_picture(c, w, h, seed.wrapping_add((c * per_class + i) as u32));
            let ext = if i % 2 == 0 { "png" } else { "jpg" };
            let p = dir.join(format!("{i:05}.{ext}"));
            img.save(&p)
                .map_err(|e| format!("cannot write {}: {e}", p.display()))?;
            files.push(p);
        }
    }
    Ok(files)
}

/// [`try_shape_folder`], for tests.
pub fn shape_folder(root: &Path, per_class: usize, w: u32, h: u32, seed: u32) -> Vec<PathBuf> {
    try_shape_folder(root, per_class, w, h, seed).unwrap()
}
