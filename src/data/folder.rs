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

const CACHE_MAGIC: &[u8; 16] = b"VAEWGPU-IMAGES2\n";

/// Most skipped files a cache records (the rest are counted in the report, not named).
const CACHE_MAX_SKIPPED: usize = 1000;

/// Files that did not decode, with why.
pub type Skipped = Vec<(PathBuf, String)>;

/// What a cache file held for a folder.
pub enum CacheRead {
    /// Both splits and the files skipped when they were decoded.
    Hit(Box<(ImageSet, ImageSet, Skipped)>),
    /// No cache, or one of another folder, other files or other options: decode.
    Absent,
    /// A cache of this folder that fails its checks (why): decode, and say so.
    Damaged(String),
}

/// A decoded folder on disk: both splits and the key of what they were decoded from.
///
/// Layout (little-endian): magic, key u64, the class names, the skipped files (u32-length-
/// prefixed texts), then both splits' `count, channels, rows, cols` (u64 each) — so the file's
/// exact size is known from its first bytes — then each split's labels and pixels, and last an
/// FNV-1a checksum of everything before it. A reader checks the header and the size before it
/// reads the rest, and the checksum and every label's range before it trusts a pixel.
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
    /// were decoded (a cache hit reports them again; the first `CACHE_MAX_SKIPPED` are kept).
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
        let skipped = &skipped[..skipped.len().min(CACHE_MAX_SKIPPED)];
        b.extend_from_slice(&(skipped.len() as u32).to_le_bytes());
        for (p, why) in skipped {
            text(&mut b, &p.to_string_lossy());
            text(&mut b, why);
        }
        for s in [train, test] {
            for v in [s.count, s.channels, s.rows, s.cols] {
                b.extend_from_slice(&(v as u64).to_le_bytes());
            }
        }
        for s in [train, test] {
            b.extend_from_slice(&s.labels);
            b.extend_from_slice(&s.images);
        }
        let sum = Fnv1a::default().bytes(&b).finish();
        b.extend_from_slice(&sum.to_le_bytes());
        crate::files::write_atomic(path, &b)
    }

    /// What `path` holds for a folder of cache key `key`, reading no more than its header unless
    /// the header is this folder's and the file's size is the one the header gives.
    pub fn read(path: &Path, key: u64) -> CacheRead {
        use std::io::Read;
        let Ok(meta) = std::fs::metadata(path) else {
            return CacheRead::Absent;
        };
        if !meta.is_file() {
            return CacheRead::Damaged("not a regular file".into());
        }
        let Ok(file) = std::fs::File::open(path) else {
            return CacheRead::Absent;
        };
        /// The file read in order, hashed and counted as it goes; every length is checked
        /// before it is allocated.
        struct Reader {
            r: std::io::BufReader<std::fs::File>,
            sum: Fnv1a,
            read: u64,
        }
        const SHORT: &str = "its header is damaged (too short)";
        impl Reader {
            fn take(&mut self, n: usize) -> Option<Vec<u8>> {
                let mut v = vec![0; n];
                self.r.read_exact(&mut v).ok()?;
                self.sum.bytes(&v);
                self.read += n as u64;
                Some(v)
            }
            fn u32(&mut self) -> std::result::Result<usize, String> {
                let v = self.take(4).ok_or(SHORT)?;
                Ok(u32::from_le_bytes(v.try_into().unwrap_or_default()) as usize)
            }
            fn u64(&mut self) -> std::result::Result<u64, String> {
                let v = self.take(8).ok_or(SHORT)?;
                Ok(u64::from_le_bytes(v.try_into().unwrap_or_default()))
            }
            fn text(&mut self, limit: usize) -> std::result::Result<String, String> {
                let len = self.u32()?;
                if len > limit {
                    return Err("its header is damaged (a name is too long)".into());
                }
                String::from_utf8(self.take(len).ok_or(SHORT)?)
                    .map_err(|_| "its header is damaged (a name is not UTF-8)".into())
            }
        }
        let mut r = Reader {
            r: std::io::BufReader::new(file),
            sum: Fnv1a::default(),
            read: 0,
        };
        let header = (|| -> std::result::Result<Option<_>, String> {
            let bad = |what: &str| format!("its header is damaged ({what})");
            // Another version's cache, not a cache, or another folder's: decode and replace it.
            if r.take(16).as_deref() != Some(CACHE_MAGIC) || r.u64()? != key {
                return Ok(None);
            }
            let n_classes = r.u32()?;
            if n_classes == 0 || n_classes > MAX_CLASSES {
                return Err(bad("class count"));
            }
            let classes = (0..n_classes)
                .map(|_| r.text(4096))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let n_skipped = r.u32()?;
            if n_skipped > CACHE_MAX_SKIPPED {
                return Err(bad("skipped-file count"));
            }
            let mut skipped = Vec::new();
            for _ in 0..n_skipped {
                let p = r.text(1 << 16)?;
                skipped.push((PathBuf::from(p), r.text(1 << 16)?));
            }
            let mut dims = [[0usize; 4]; 2];
            for d in dims.iter_mut().flatten() {
                *d = usize::try_from(r.u64()?).map_err(|_| bad("a size"))?;
            }
            for [count, channels, rows, cols] in dims {
                let sane = count > 0
                    && (channels == 1 || channels == 3)
                    && rows == cols
                    && (1..=MAX_IMAGE_SIZE).contains(&rows)
                    && count <= 1 << 32;
                if !sane || [channels, rows] != [dims[0][1], dims[0][2]] {
                    return Err(bad("image counts or shapes"));
                }
            }
            Ok(Some((classes, skipped, dims)))
        })();
        let (classes, skipped, dims) = match header {
            Ok(Some(h)) => h,
            Ok(None) => return CacheRead::Absent,
            Err(e) => return CacheRead::Damaged(e),
        };
        // The exact size the header gives, before the pixels are read.
        let header_len = r.read;
        let payload: u64 = dims
            .iter()
            .map(|[n, c, h, w]| (*n as u64) * (1 + (c * h * w) as u64))
            .sum();
        let expected = header_len + payload + 8;
        if meta.len() != expected {
            return CacheRead::Damaged(format!(
                "it is {} bytes where its header says {expected}: truncated or altered",
                meta.len()
            ));
        }
        let mut sets = Vec::new();
        for [count, channels, rows, cols] in dims {
            let (Some(labels), Some(images)) =
                (r.take(count), r.take(count * channels * rows * cols))
            else {
                return CacheRead::Damaged("it ends early".into());
            };
            sets.push(ImageSet {
                images,
                labels,
                count,
                channels,
                rows,
                cols,
                classes: classes.clone(),
            });
        }
        let computed = r.sum.finish();
        let Some(stored) = r.take(8) else {
            return CacheRead::Damaged("it ends early".into());
        };
        if u64::from_le_bytes(stored.try_into().unwrap_or_default()) != computed {
            return CacheRead::Damaged("its checksum does not match its contents".into());
        }
        if sets
            .iter()
            .any(|s| s.labels.iter().any(|&l| l as usize >= classes.len()))
        {
            return CacheRead::Damaged("a label is out of range".into());
        }
        let test = sets.pop().expect("two splits");
        let train = sets.pop().expect("two splits");
        CacheRead::Hit(Box::new((train, test, skipped)))
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
    /// A cache of this folder that failed its checks (and why): the folder was decoded again.
    pub cache_damaged: Option<(PathBuf, String)>,
    /// How the folder's layout was read, where it could be taken another way (`val/` as the
    /// test set, folders left unread, a held-out share of `train/`).
    pub notes: Vec<String>,
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
        parts.extend(self.notes.iter().cloned());
        if let Some((p, why)) = &self.cache_damaged {
            parts.push(format!(
                "{} was not used, {why}: the images were decoded again",
                p.display()
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

/// Whether a file is named as an image (by its extension).
pub fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Sorted entries of a directory (hidden ones skipped): (subdirectories, image files). A name
/// that looks like an image but is not a regular file (a FIFO, a socket, a link to nothing) is
/// reported as skipped, as an unreadable image is.
fn entries(dir: &Path, report: &mut FolderReport) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
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
            // A training run's own folder (its pictures are PNGs) is never a class of images.
            if ["checkpoint.safetensors", "losses.csv"]
                .iter()
                .any(|f| p.join(f).is_file())
            {
                report.skipped.push((
                    p,
                    "holds a vae-wgpu run (checkpoint.safetensors, losses.csv), not images of a \
                     class"
                        .into(),
                ));
                continue;
            }
            dirs.push(p);
        } else if is_image(&p) {
            // Regular files only: a FIFO named x.png would block the reader forever.
            match std::fs::metadata(&p) {
                Ok(m) if m.is_file() => files.push(p),
                Ok(_) => report
                    .skipped
                    .push((p, "not a regular file (a FIFO, socket or device)".into())),
                Err(e) if p.is_symlink() => report
                    .skipped
                    .push((p, format!("a symbolic link to nothing ({e})"))),
                Err(e) => report.skipped.push((p, e.to_string())),
            }
        }
    }
    dirs.sort();
    files.sort();
    Ok((dirs, files))
}

/// A file or folder name as text: UTF-8 as it is, other bytes as `\xNN`, so names that differ
/// stay different (a lossy conversion would merge two class folders).
pub fn name_text(name: &std::ffi::OsStr) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let mut out = String::new();
        for chunk in name.as_bytes().utf8_chunks() {
            out.push_str(chunk.valid());
            for b in chunk.invalid() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
        out
    }
    #[cfg(not(unix))]
    {
        name.to_string_lossy().into_owned()
    }
}

/// Deepest folder nesting searched below a class folder.
const MAX_DEPTH: usize = 32;

/// Every image file below `dir`, at any depth up to [`MAX_DEPTH`] (symbolic links are followed,
/// so a link loop ends there with an error instead of recursing forever), sorted.
fn images_below(dir: &Path, depth: usize, report: &mut FolderReport) -> Result<Vec<PathBuf>> {
    if depth > MAX_DEPTH {
        return Err(data_err(
            dir,
            format!(
                "folders nested more than {MAX_DEPTH} deep (a symbolic link that points back up?)"
            ),
        ));
    }
    let (dirs, mut files) = entries(dir, report)?;
    for d in dirs {
        files.extend(images_below(&d, depth + 1, report)?);
    }
    Ok(files)
}

/// The image files of one ImageFolder root with their class names.
fn scan(root: &Path, report: &mut FolderReport) -> Result<Vec<(PathBuf, String)>> {
    let (dirs, loose) = entries(root, report)?;
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
        let files = images_below(&d, 1, report)?;
        if files.is_empty() {
            return Err(data_err(
                &d,
                format!(
                    "class folder without images ({}): remove it or add images",
                    IMAGE_EXTENSIONS.join(", ")
                ),
            ));
        }
        let class = d.file_name().map(name_text).unwrap_or_default();
        out.extend(files.into_iter().map(|f| (f, class.clone())));
    }
    Ok(out)
}

/// Memory that decoding images may hold at once, across all threads: a large image waits for
/// others to finish instead of every core decoding one (six 23000² PNGs on 16 threads would
/// otherwise hold ~10 GB to make 28x28 inputs).
pub const DECODE_BUDGET: u64 = 1 << 30;

/// Bytes of memory lent to decodes running at once; a decode waits until its share is free.
pub struct DecodeBudget {
    limit: u64,
    used: std::sync::Mutex<u64>,
    freed: std::sync::Condvar,
    /// The most held at once (for tests and reports).
    peak: std::sync::atomic::AtomicU64,
}

/// A share of a [`DecodeBudget`], given back when dropped.
struct Lease<'a>(&'a DecodeBudget, u64);

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut used = self.0.used.lock().unwrap_or_else(|e| e.into_inner());
        *used -= self.1;
        self.0.freed.notify_all();
    }
}

impl DecodeBudget {
    pub fn new(limit: u64) -> Self {
        DecodeBudget {
            limit,
            used: std::sync::Mutex::new(0),
            freed: std::sync::Condvar::new(),
            peak: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The most memory held at once so far.
    pub fn peak(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `bytes` of the budget, waiting for other decodes to give theirs back; `None` when
    /// `bytes` exceeds the whole budget (it could never run).
    fn lease(&self, bytes: u64) -> Option<Lease<'_>> {
        if bytes > self.limit {
            return None;
        }
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used + bytes > self.limit {
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += bytes;
        self.peak
            .fetch_max(*used, std::sync::atomic::Ordering::Relaxed);
        Some(Lease(self, bytes))
    }
}

/// Whether a JPEG's bytes end its last scan with an end-of-image marker. A truncated JPEG
/// decodes without an error (the missing rows come out grey), so it is refused here, as PIL
/// refuses it. Inside a scan 0xFF is always followed by 0x00 or a restart marker, so the last
/// other marker in a whole file is EOI (0xD9); in a cut one it is the last scan's SOS or earlier.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let is_marker = |w: &[u8]| w[0] == 0xFF && !matches!(w[1], 0x00 | 0xD0..=0xD7 | 0xFF);
    bytes.windows(2).rev().find(|w| is_marker(w)) == Some(&[0xFF, 0xD9][..])
}

/// Decode one file to `channels x size x size` u8, channel-planar, within `budget`: the image's
/// header is read first, and its decode waits for (or, if larger than all of it, is refused)
/// the memory it needs.
pub fn decode(
    path: &Path,
    channels: usize,
    size: usize,
    budget: &DecodeBudget,
) -> std::result::Result<Vec<u8>, String> {
    use image::ImageDecoder;
    let file_len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    let r = image::ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let jpeg = r.format() == Some(image::ImageFormat::Jpeg);
    // The JPEG decoder reads the whole file to find its header.
    if jpeg && file_len > budget.limit {
        return Err(format!(
            "the file is {} MB, more than the {} MB the decoder may use: is data appended after \
             the image?",
            file_len >> 20,
            budget.limit >> 20
        ));
    }
    // The header is read first; the decoder that read it decodes the pixels once they fit.
    let decoder = r.into_decoder().map_err(|e| e.to_string())?;
    let (w, h) = decoder.dimensions();
    let decoded_bytes = decoder.total_bytes();
    // A JPEG's decoder holds the whole file: gone before the wait for memory (the file is read
    // again, within its lease).
    let decoder = (!jpeg).then_some(decoder);
    // A JPEG is read whole (its end is checked, see `jpeg_is_complete`); the other formats are
    // decoded from the file as a stream that stops at the image's end, so whatever follows it
    // (a sparse tail of gigabytes, say) is never read and needs no memory.
    let file_part = if jpeg { file_len } else { 0 };
    // The file, the decoded image and its grayscale or RGB copy.
    let pixels = decoded_bytes.saturating_add(w as u64 * h as u64 * channels as u64);
    let need = file_part.saturating_add(pixels);
    let Some(_lease) = budget.lease(need) else {
        return Err(format!(
            "{w}x{h} pixels need {} MB to decode, more than the {} MB the decoder may use: \
             shrink it (it becomes {size}x{size})",
            need >> 20,
            budget.limit >> 20
        ));
    };
    let img = if let Some(mut decoder) = decoder {
        // As `ImageReader::decode` does: the image crate's own allocation limit, then the pixels.
        let mut limits = image::Limits::default();
        limits.reserve(decoded_bytes).map_err(|e| e.to_string())?;
        decoder.set_limits(limits).map_err(|e| e.to_string())?;
        image::DynamicImage::from_decoder(decoder).map_err(|e| e.to_string())?
    } else {
        let bytes =
            crate::files::read_bounded(path, file_len, "image").map_err(|e| e.to_string())?;
        if !jpeg_is_complete(&bytes) {
            return Err("truncated JPEG (no end-of-image marker after its last scan)".into());
        }
        image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg)
            .map_err(|e| e.to_string())?
    };
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
    let budget = DecodeBudget::new(DECODE_BUDGET);
    let decoded: Vec<std::result::Result<Vec<u8>, String>> = files
        .par_iter()
        .map(|(p, _)| {
            let r = decode(p, opts.channels, opts.size, &budget);
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

/// The folders that hold the training images and, when the folder comes split, the test images:
/// `train/` and `test/` (or `val/`, when there is no `test/`), else the root itself. Anything
/// these rules leave unread is said in the report; a layout with no sensible reading is refused.
fn split_folders(
    root: &Path,
    opts: &FolderOptions,
    report: &mut FolderReport,
) -> Result<(PathBuf, Option<PathBuf>)> {
    let sub = |n: &str| Some(root.join(n)).filter(|p| p.is_dir());
    let (train, test, val) = (sub("train"), sub("test"), sub("val"));
    if (&train, &test, &val) == (&None, &None, &None) {
        // The usual ImageFolder root: `scan` lists it (listing it here too would stat a large
        // flat folder's files twice).
        return Ok((root.to_path_buf(), None));
    }
    // The folders beside the split ones (their files are `scan`'s to report).
    let others: Vec<String> = entries(root, &mut FolderReport::default())?
        .0
        .iter()
        .filter_map(|d| d.file_name().map(name_text))
        .filter(|n| !["train", "test", "val"].contains(&n.as_str()))
        .collect();
    let ignored = |report: &mut FolderReport| {
        if !others.is_empty() {
            report.notes.push(format!(
                "not read: the folder(s) {} beside the split folders",
                others.join(", ")
            ));
        }
    };
    match (train, test, val) {
        (Some(train), Some(test), val) => {
            if val.is_some() {
                report.notes.push(
                    "not read: val/ (train/ and test/ are the split; rename val/ to test/ to \
                     test on it)"
                        .into(),
                );
            }
            ignored(report);
            Ok((train, Some(test)))
        }
        (Some(train), None, Some(val)) => {
            report
                .notes
                .push("val/ is the test set (there is no test/ folder)".into());
            ignored(report);
            Ok((train, Some(val)))
        }
        (Some(train), None, None) if others.is_empty() => {
            report.notes.push(format!(
                "train/ has no test/ or val/ beside it: {} of train/'s images are held out as \
                 the test set",
                opts.test_fraction
            ));
            Ok((train, None))
        }
        (Some(_), None, None) => Err(data_err(
            root,
            format!(
                "holds train/ beside other folders ({}) but no test/: put the test images in \
                 test/, or move train/'s class folders up beside the others",
                others.join(", ")
            ),
        )),
        (None, test, _) => Err(data_err(
            root,
            format!(
                "holds {}/ but no train/: put the training images in train/ \
                 (train/<class>/*.png) beside it",
                if test.is_some() { "test" } else { "val" }
            ),
        )),
    }
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
    let (train_dir, test_dir) = split_folders(root, opts, &mut report)?;
    report.presplit = test_dir.is_some();
    let train_files = scan(&train_dir, &mut report)?;
    let test_files = match &test_dir {
        Some(d) => scan(d, &mut report)?,
        None => Vec::new(),
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
        if let Some(path) = cache {
            match ImageCache::read(path, key) {
                CacheRead::Hit(hit) => {
                    let (train, test, skipped) = *hit;
                    report.from_cache = Some(path.to_path_buf());
                    report.skipped = skipped;
                    return Ok((train, test, report));
                }
                CacheRead::Damaged(why) => report.cache_damaged = Some((path.to_path_buf(), why)),
                CacheRead::Absent => {}
            }
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
        return Err(nothing(&train_dir, train_files.len()));
    }
    if report.presplit {
        if test.count == 0 {
            return Err(nothing(
                test_dir.as_deref().unwrap_or(root),
                test_files.len(),
            ));
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
        .map(|p| split_point(opts.seed, &train_dir, p))
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
