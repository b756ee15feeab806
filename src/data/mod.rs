//! The images a model trains on: IDX files (MNIST; Fashion-MNIST and KMNIST use the same file
//! names), gzip-compressed or raw, or a folder of images in torchvision's `ImageFolder` layout
//! ([`folder`]). Errors name the file and what was expected and found.

pub mod folder;
pub mod idx;
pub mod images;
pub mod mnist;

use std::path::Path;

pub use folder::{
    CacheRead, FolderOptions, FolderReport, ImageCache, load_folder, load_folder_cached,
};
pub use idx::{IdxArray, decode_idx, parse_idx, read_idx};
pub use images::ImageSet;
pub use mnist::{Split, load_splits};

use crate::error::Result;

/// Whether `dir` holds IDX split files (MNIST's file names; any `*-ubyte*` file that is not named
/// as an image counts, so a folder of differently named IDX files gets the IDX reader's error
/// naming the file it expects, while a flat folder of images may hold `x-ubyte.png`).
pub fn is_idx_dir(dir: &Path) -> bool {
    mnist::find(dir, Split::Train.stems().0).is_ok()
        || std::fs::read_dir(dir).is_ok_and(|rd| {
            rd.flatten().any(|e| {
                let name = e.file_name().to_string_lossy().to_lowercase();
                name.contains("-ubyte") && !folder::is_image(Path::new(&name))
            })
        })
}

/// The training and test sets under `dir`: its IDX files if it has them (as they are: `opts`
/// applies to image folders), else its images read as `opts` says (with a report of skipped
/// files), from the decoded cache `cache` when it holds them. `progress(done, all)` follows the
/// decoding.
pub fn load_data(
    dir: &Path,
    opts: &FolderOptions,
    cache: Option<&Path>,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(ImageSet, ImageSet, Option<FolderReport>)> {
    if is_idx_dir(dir) {
        let (train, test) = load_splits(dir)?;
        return Ok((train, test, None));
    }
    let (train, test, report) = load_folder_cached(dir, opts, cache, progress)?;
    Ok((train, test, Some(report)))
}
