//! The images a model trains on: IDX files (MNIST; Fashion-MNIST and KMNIST use the same file
//! names), gzip-compressed or raw, or a folder of images in torchvision's `ImageFolder` layout
//! ([`folder`]). Errors name the file and what was expected and found.

pub mod folder;
pub mod idx;
pub mod images;
pub mod mnist;

use std::path::Path;

pub use folder::{FolderOptions, FolderReport, ImageCache, load_folder, load_folder_cached};
pub use idx::{IdxArray, decode_idx, parse_idx, read_idx};
pub use images::ImageSet;
pub use mnist::{Split, load_splits};

use crate::error::{Error, Result};

/// Whether `dir` holds IDX split files (MNIST's file names).
pub fn is_idx_dir(dir: &Path) -> bool {
    mnist::find(dir, Split::Train.stems().0).is_ok()
}

/// The training and test sets under `dir`: its IDX files if it has them, else its images read
/// as `opts` says (with a report of skipped files), from the decoded cache `cache` when it holds
/// them. `progress(done, all)` follows the decoding.
pub fn load_data(
    dir: &Path,
    opts: &FolderOptions,
    cache: Option<&Path>,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(ImageSet, ImageSet, Option<FolderReport>)> {
    if is_idx_dir(dir) {
        let (train, test) = load_splits(dir)?;
        if opts.channels != train.channels || opts.size != train.rows || train.rows != train.cols {
            return Err(Error::Data {
                path: dir.to_path_buf(),
                detail: format!(
                    "holds IDX files of {}x{} grayscale images: --channels and --image-size apply \
                     to image folders (drop them, or use --channels 1 --image-size {})",
                    train.rows, train.cols, train.rows
                ),
            });
        }
        return Ok((train, test, None));
    }
    let (train, test, report) = load_folder_cached(dir, opts, cache, progress)?;
    Ok((train, test, Some(report)))
}
