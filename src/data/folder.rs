//! Your own images: a folder in torchvision's `ImageFolder` layout (`root/<class>/*.png|jpg|…`,
//! class = folder name, images found at any depth below it), or a flat folder of images
//! (one class, "unlabelled"). With `train/` and `test/` subfolders those are the split; otherwise
//! `test_fraction` of the images (shuffled with the seed) is held out.
//!
//! Each image is decoded by the `image` crate (PNG, JPEG, BMP, GIF; the format is read from the
//! bytes), converted to grayscale (luma, ITU-R BT.709 weights) or RGB, resized to
//! `size x size` with a triangle (bilinear) filter whose support widens when shrinking, so it
//! averages as torchvision's antialiased `Resize` does (aspect ratio is not kept), and stored as
//! u8, scaled to [0, 1] when batched. Decoding runs on every core (rayon).
//!
//! Large folders (at least [`CACHE_MIN_FILES`] images, where decoding takes tens of seconds) are
//! cached decoded next to the run (`decoded-images.bin` in its output folder, see
//! [`ImageCache`]), keyed by the folder's file list (names, sizes, modification times) and the
//! options; a resumed run, `eval` and `pictures` of that run read it instead of decoding again.
//!
//! A file that cannot be read or decoded is skipped; the loader reports how many and names the
//! first few (a few bad files in a folder of thousands should not stop a run). An empty folder, a
//! class folder without images, or a folder where nothing decodes is an error.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::ImageSet;
use crate::error::{Error, Result};
use crate::hash::Fnv1a;

/// File extensions taken as images (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "bmp", "gif"];

/// Most classes (labels are u8).
pub const MAX_CLASSES: usize = 256;

/// Largest `--image-size`: 1024² RGB images are 3 M inputs, already far past a useful MLP.
pub const MAX_IMAGE_SIZE: usize = 1024;

/// Folders with at least this many image files are cached decoded next to the run
/// (`VAE_WGPU_IMAGE_CACHE_MIN` overrides it).
pub const CACHE_MIN_FILES: usize = 20_000;

/// The cache file's name in a run's folder.
pub const CACHE_FILE: &str = "decoded-images.bin";

const CACHE_MAGIC: &[u8; 16] = b"VAEWGPU-IMAGES1\n";

/// Files that did not decode, with why.
pub type Skipped = Vec<(PathBuf, String)>;

/// A decoded folder on disk: both splits and the key of what they were decoded from.
pub struct ImageCache;

impl ImageCache {
    /// The folder size from which decoded sets are cached.
    pub fn min_files() -> usize {
        std::env::var("VAE_WGPU_IMAGE_CACHE_MIN")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(CACHE_MIN_FILES)
    }

    /// Write both splits under `key` (atomically), with the files that were skipped when they
    /// were decoded (a cache hit reports them again).
    pub fn write(
        path: &Path,
        key: u64,
        train: &ImageSet,
        test: &ImageSet,
        skipped: &[(PathBuf, String)],
    ) -> Result<()> {
        let mut b = Vec::with_capacity(train.images.len() + test.images.len() + 1024);
        b.extend_from_slice(CACHE_MAGIC);
        b.extend_from_slice(&key.to_le_bytes());
        b.extend_from_slice(&(train.classes.len() as u32).to_le_bytes());
        let text = |b: &mut Vec<u8>, t: &str| {
            b.extend_from_slice(&(t.len() as u32).to_le_bytes());
            b.extend_from_slice(t.as_bytes());
        };
        for c in &train.classes {
            text(&mut b, c);
        }
        b.extend_from_slice(&(skipped.len() as u32).to_le_bytes());
        for (p, why) in skipped {
            text(&mut b, &p.to_string_lossy());
            text(&mut b, why);
        }
        for s in [train, test] {
            for v in [s.count, s.channels, s.rows, s.cols] {
                b.extend_from_slice(&(v as u64).to_le_bytes());
            }
            b.extend_from_slice(&s.labels);
            b.extend_from_slice(&s.images);
        }
        crate::files::write_atomic(path, &b)
    }

    /// Both splits and the skipped files, if `path` holds a cache of `key`; `None` for a missing,
    /// foreign or damaged file.
    pub fn read(path: &Path, key: u64) -> Option<(ImageSet, ImageSet, Skipped)> {
        let bytes = crate::files::read_bounded(path, 64 << 30, "image cache").ok()?;
        /// A cursor over the cache's bytes; every read is checked.
        struct Reader<'a>(&'a [u8]);
        impl<'a> Reader<'a> {
            fn take(&mut self, n: usize) -> Option<&'a [u8]> {
                let (a, b) = (self.0.get(..n)?, self.0.get(n..)?);
                self.0 = b;
                Some(a)
            }
            fn u32(&mut self) -> Option<usize> {
                Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize)
            }
            fn u64(&mut self) -> Option<u64> {
                Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
            }
            fn text(&mut self) -> Option<String> {
                let len = self.u32()?;
                String::from_utf8(self.take(len)?.to_vec()).ok()
            }
        }
        let mut r = Reader(bytes.strip_prefix(CACHE_MAGIC.as_slice())?);
        if r.u64()? != key {
            return None;
        }
        let n_classes = r.u32()?;
        if n_classes > MAX_CLASSES {
            return None;
        }
        let classes = (0..n_classes)
            .map(|_| r.text())
            .collect::<Option<Vec<_>>>()?;
        let n_skipped = r.u32()?;
        let mut skipped = Vec::new();
        for _ in 0..n_skipped {
            let p = r.text()?;
            skipped.push((PathBuf::from(p), r.text()?));
        }
        let mut split = || -> Option<ImageSet> {
            let mut dims = [0usize; 4];
            for d in &mut dims {
                *d = usize::try_from(r.u64()?).ok()?;
            }
            let [count, channels, rows, cols] = dims;
            let dim = channels.checked_mul(rows)?.checked_mul(cols)?;
            let labels = r.take(count)?.to_vec();
            let images = r.take(count.checked_mul(dim)?)?.to_vec();
            Some(ImageSet {
                images,
                labels,
                count,
                channels,
                rows,
                cols,
                classes: classes.clone(),
            })
        };
        let (train, test) = (split()?, split()?);
        (r.0.is_empty() && train.count > 0 && test.count > 0).then_some((train, test, skipped))
    }
}

/// The cache key of a folder read with `opts`: its image files' paths, sizes and modification
/// times, and the options (FNV-1a).
fn cache_key(files: &[(PathBuf, String)], opts: &FolderOptions) -> u64 {
    let mut h = Fnv1a::default();
    h.bytes(format!("{opts:?}").as_bytes());
    for (p, class) in files {
        h.bytes(p.to_string_lossy().as_bytes())
            .bytes(class.as_bytes());
        if let Ok(m) = std::fs::metadata(p) {
            h.bytes(&m.len().to_le_bytes());
            if let Ok(t) = m.modified()
                && let Ok(d) = t.duration_since(std::time::UNIX_EPOCH)
            {
                h.bytes(&d.as_nanos().to_le_bytes());
            }
        }
    }
    h.finish()
}

/// How to read an image folder.
#[derive(Clone, Debug, PartialEq)]
pub struct FolderOptions {
    /// 1 (grayscale) or 3 (RGB).
    pub channels: usize,
    /// Images are resized to `size x size`.
    pub size: usize,
    /// Held out as the test set when the folder has no train/test split.
    pub test_fraction: f64,
    /// Shuffles the held-out split.
    pub seed: u64,
}

impl Default for FolderOptions {
    fn default() -> Self {
        FolderOptions {
            channels: 1,
            size: 28,
            test_fraction: 0.1,
            seed: 0,
        }
    }
}

impl FolderOptions {
    pub fn validate(&self) -> Result<()> {
        if self.channels != 1 && self.channels != 3 {
            return Err(Error::setting(
                "channels",
                format!("{} is not 1 (grayscale) or 3 (RGB)", self.channels),
            ));
        }
        if self.size == 0 || self.size > MAX_IMAGE_SIZE {
            return Err(Error::setting(
                "image size",
                format!("{} is outside 1..={MAX_IMAGE_SIZE}", self.size),
            ));
        }
        if !(self.test_fraction > 0.0 && self.test_fraction < 1.0) {
            return Err(Error::setting(
                "test fraction",
                format!(
                    "{} is outside (0, 1): it is the share of images held out",
                    self.test_fraction
                ),
            ));
        }
        Ok(())
    }
}

/// What was read, for the caller to report.
#[derive(Clone, Debug, Default)]
pub struct FolderReport {
    /// Whether the folder came split (`train/`, `test/`).
    pub presplit: bool,
    /// Files that could not be read or decoded, with why.
    pub skipped: Vec<(PathBuf, String)>,
    /// Image files directly in a root that also has class folders (ignored, as torchvision does).
    pub ignored_loose_files: usize,
    /// The folder's cache key, when it is large enough to be cached (see [`ImageCache`]).
    pub cache_key: Option<u64>,
    /// The cache file the sets were read from, instead of decoding.
    pub from_cache: Option<PathBuf>,
}

impl FolderReport {
    /// One line for the log, empty when nothing was skipped or ignored.
    pub fn warning(&self) -> Option<String> {
        let mut parts = Vec::new();
        if !self.skipped.is_empty() {
            let first: Vec<String> = self
                .skipped
                .iter()
                .take(3)
                .map(|(p, why)| format!("{} ({why})", p.display()))
                .collect();
            parts.push(format!(
                "skipped {} image file(s) that could not be decoded: {}{}",
                self.skipped.len(),
                first.join("; "),
                if self.skipped.len() > 3 { "; …" } else { "" }
            ));
        }
        if self.ignored_loose_files > 0 {
            parts.push(format!(
                "ignored {} image file(s) lying next to the class folders (images go inside a class folder)",
                self.ignored_loose_files
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

fn data_err(path: &Path, detail: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Sorted entries of a directory (hidden ones skipped): (subdirectories, image files).
fn entries(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let rd = std::fs::read_dir(dir).map_err(|e| data_err(dir, format!("cannot list: {e}")))?;
    let (mut dirs, mut files) = (Vec::new(), Vec::new());
    for e in rd {
        let p = e
            .map_err(|e| data_err(dir, format!("cannot list: {e}")))?
            .path();
        if hidden(&p) {
            continue;
        }
        if p.is_dir() {
            dirs.push(p);
        } else if is_image(&p) && p.is_file() {
            // Regular files only: a FIFO named x.png would block the reader forever.
            files.push(p);
        }
    }
    dirs.sort();
    files.sort();
    Ok((dirs, files))
}

/// Deepest folder nesting searched below a class folder.
const MAX_DEPTH: usize = 32;

/// Every image file below `dir`, at any depth up to [`MAX_DEPTH`] (symbolic links are followed,
/// so a link loop ends there with an error instead of recursing forever), sorted.
fn images_below(dir: &Path, depth: usize) -> Result<Vec<PathBuf>> {
    if depth > MAX_DEPTH {
        return Err(data_err(
            dir,
            format!(
                "folders nested more than {MAX_DEPTH} deep (a symbolic link that points back up?)"
            ),
        ));
    }
    let (dirs, mut files) = entries(dir)?;
    for d in dirs {
        files.extend(images_below(&d, depth + 1)?);
    }
    Ok(files)
}

/// The image files of one ImageFolder root with their class names.
fn scan(root: &Path, report: &mut FolderReport) -> Result<Vec<(PathBuf, String)>> {
    let (dirs, loose) = entries(root)?;
    if dirs.is_empty() {
        if loose.is_empty() {
            return Err(data_err(
                root,
                format!(
                    "no images here: expected class folders of images (root/<class>/*.png) or \
                     image files ({})",
                    IMAGE_EXTENSIONS.join(", ")
                ),
            ));
        }
        return Ok(loose
            .into_iter()
            .map(|p| (p, super::images::UNLABELLED.to_string()))
            .collect());
    }
    report.ignored_loose_files += loose.len();
    let mut out = Vec::new();
    for d in dirs {
        let files = images_below(&d, 1)?;
        if files.is_empty() {
            return Err(data_err(
                &d,
                format!(
                    "class folder without images ({}): remove it or add images",
                    IMAGE_EXTENSIONS.join(", ")
                ),
            ));
        }
        let class = d
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.extend(files.into_iter().map(|f| (f, class.clone())));
    }
    Ok(out)
}

/// Decode one file to `channels x size x size` u8, channel-planar.
pub fn decode(path: &Path, channels: usize, size: usize) -> std::result::Result<Vec<u8>, String> {
    let img = image::ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())?;
    let (w, h) = (size as u32, size as u32);
    let filter = image::imageops::FilterType::Triangle;
    Ok(if channels == 1 {
        let g = img.to_luma8();
        image::imageops::resize(&g, w, h, filter).into_raw()
    } else {
        let rgb = img.to_rgb8();
        let hwc = image::imageops::resize(&rgb, w, h, filter).into_raw();
        let n = size * size;
        let mut chw = vec![0u8; 3 * n];
        for (i, px) in hwc.chunks_exact(3).enumerate() {
            for c in 0..3 {
                chw[c * n + i] = px[c];
            }
        }
        chw
    })
}

/// Decode `files` in parallel; `progress` is called with the number done so far.
fn decode_all(
    files: &[(PathBuf, String)],
    opts: &FolderOptions,
    classes: &[String],
    progress: &(dyn Fn(usize) + Sync),
    report: &mut FolderReport,
) -> (ImageSet, Vec<PathBuf>) {
    let done = std::sync::atomic::AtomicUsize::new(0);
    let decoded: Vec<std::result::Result<Vec<u8>, String>> = files
        .par_iter()
        .map(|(p, _)| {
            let r = decode(p, opts.channels, opts.size);
            progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
            r
        })
        .collect();
    let mut set = ImageSet {
        images: Vec::new(),
        labels: Vec::new(),
        count: 0,
        channels: opts.channels,
        rows: opts.size,
        cols: opts.size,
        classes: classes.to_vec(),
    };
    let mut kept = Vec::with_capacity(files.len());
    for ((path, class), r) in files.iter().zip(decoded) {
        match r {
            Ok(px) => {
                set.images.extend(px);
                let label = classes.iter().position(|c| c == class).unwrap_or(0);
                set.labels.push(label as u8);
                set.count += 1;
                kept.push(path.clone());
            }
            Err(why) => report.skipped.push((path.clone(), why)),
        }
    }
    (set, kept)
}

/// Where a file falls in [0, 1) for the held-out split: a hash of the seed and its path below the
/// root, so each file's side depends on nothing else (adding or removing other files, or one that
/// stops decoding, moves no image between the splits).
fn split_point(seed: u64, root: &Path, path: &Path) -> f64 {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let mut h = Fnv1a(Fnv1a::OFFSET ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .bytes(rel.to_string_lossy().as_bytes())
        .finish();
    // splitmix64's finaliser spreads FNV's low-entropy high bits.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Load an image folder as a (train, test) pair. `progress(done, all)` follows the decoding.
pub fn load_folder(
    root: &Path,
    opts: &FolderOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(ImageSet, ImageSet, FolderReport)> {
    load_folder_cached(root, opts, None, progress)
}

/// As [`load_folder`], reading the decoded sets from the cache file `cache` when it holds this
/// folder as it is now (a large folder's report then carries the key to write one under).
pub fn load_folder_cached(
    root: &Path,
    opts: &FolderOptions,
    cache: Option<&Path>,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(ImageSet, ImageSet, FolderReport)> {
    opts.validate()?;
    if !root.is_dir() {
        return Err(data_err(
            root,
            "data directory not found: pass --data-dir pointing at MNIST's IDX files or at a \
             folder of images",
        ));
    }
    let mut report = FolderReport::default();
    let (train_dir, test_dir) = (root.join("train"), root.join("test"));
    report.presplit = train_dir.is_dir() && test_dir.is_dir();
    let (train_files, test_files) = if report.presplit {
        (
            scan(&train_dir, &mut report)?,
            scan(&test_dir, &mut report)?,
        )
    } else {
        (scan(root, &mut report)?, Vec::new())
    };
    let mut classes: Vec<String> = train_files
        .iter()
        .chain(&test_files)
        .map(|(_, c)| c.clone())
        .collect();
    classes.sort();
    classes.dedup();
    if classes.len() > MAX_CLASSES {
        return Err(data_err(
            root,
            format!(
                "{} class folders: at most {MAX_CLASSES} are supported",
                classes.len()
            ),
        ));
    }
    let all = train_files.len() + test_files.len();
    if all >= ImageCache::min_files() {
        let mut listed = train_files.clone();
        listed.push((PathBuf::from("--test--"), String::new()));
        listed.extend(test_files.iter().cloned());
        // A folder that comes split does not depend on the seed or the fraction.
        let keyed = if report.presplit {
            FolderOptions {
                seed: 0,
                test_fraction: 0.5,
                ..opts.clone()
            }
        } else {
            opts.clone()
        };
        let key = cache_key(&listed, &keyed);
        report.cache_key = Some(key);
        if let Some(path) = cache
            && let Some((train, test, skipped)) = ImageCache::read(path, key)
        {
            report.from_cache = Some(path.to_path_buf());
            report.skipped = skipped;
            return Ok((train, test, report));
        }
    }
    let tick = |base: usize| move |done: usize| progress(base + done, all);
    let (train, kept) = decode_all(&train_files, opts, &classes, &tick(0), &mut report);
    let (test, _) = decode_all(
        &test_files,
        opts,
        &classes,
        &tick(train_files.len()),
        &mut report,
    );
    let nothing = |dir: &Path, n: usize| {
        data_err(
            dir,
            format!(
                "none of the {n} image file(s) could be decoded (first: {})",
                report
                    .skipped
                    .first()
                    .map(|(p, why)| format!("{}: {why}", p.display()))
                    .unwrap_or_default()
            ),
        )
    };
    if train.count == 0 {
        return Err(nothing(
            if report.presplit { &train_dir } else { root },
            train_files.len(),
        ));
    }
    if report.presplit {
        if test.count == 0 {
            return Err(nothing(&test_dir, test_files.len()));
        }
        return Ok((train, test, report));
    }
    // Hold out a share as the test set: each file by its own hash (see `split_point`).
    if train.count < 2 {
        return Err(data_err(
            root,
            "a single image cannot be split into a training and a test set: add images or a \
             train/ + test/ pair of folders",
        ));
    }
    let points: Vec<f64> = kept
        .iter()
        .map(|p| split_point(opts.seed, root, p))
        .collect();
    let mut test_ix: Vec<usize> = (0..train.count)
        .filter(|&i| points[i] < opts.test_fraction)
        .collect();
    let by_point = |a: &usize, b: &usize| points[*a].total_cmp(&points[*b]);
    // Both sides non-empty: a tiny folder may hash every file to one side.
    if test_ix.is_empty() {
        test_ix.extend((0..train.count).min_by(by_point));
    } else if test_ix.len() == train.count {
        let keep = (0..train.count).max_by(by_point);
        test_ix.retain(|&i| Some(i) != keep);
    }
    let train_ix: Vec<usize> = (0..train.count)
        .filter(|i| test_ix.binary_search(i).is_err())
        .collect();
    // The training set in file order (the trainer shuffles it anyway); the test set in hash
    // order, so its first images (the reconstructions' row) mix the classes.
    test_ix.sort_by(by_point);
    Ok((train.subset(&train_ix), train.subset(&test_ix), report))
}
