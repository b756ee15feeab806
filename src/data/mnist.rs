//! The IDX split files under a data directory (`data/mnist/` by default), `.gz` or uncompressed:
//! MNIST, and the data sets that reuse its file names (Fashion-MNIST, KMNIST).

use std::path::{Path, PathBuf};

use super::ImageSet;
use super::idx::read_idx;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub(crate) fn stems(self) -> (&'static str, &'static str) {
        match self {
            Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
            Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        }
    }
}

impl ImageSet {
    /// Load one split from `dir`, taking `<stem>` or `<stem>.gz`.
    /// One split of an IDX data set (MNIST, Fashion-MNIST, KMNIST: the same file names).
    pub fn load_idx(dir: &Path, split: Split) -> Result<ImageSet> {
        if !dir.is_dir() {
            return Err(Error::Data {
                path: dir.to_path_buf(),
                detail: "data directory not found: pass --data-dir pointing at the four MNIST IDX files \
                         (the repository vendors them in data/mnist/)"
                    .into(),
            });
        }
        let (img_stem, lbl_stem) = split.stems();
        let img_path = find(dir, img_stem)?;
        let lbl_path = find(dir, lbl_stem)?;
        let img = read_idx(&img_path)?;
        let lbl = read_idx(&lbl_path)?;
        let bad = |path: &Path, detail: String| Error::Data {
            path: path.to_path_buf(),
            detail,
        };
        if img.dims.len() != 3 {
            return Err(bad(
                &img_path,
                format!(
                    "images must have 3 dimensions (count, rows, cols), found {:?}",
                    img.dims
                ),
            ));
        }
        if lbl.dims.len() != 1 {
            return Err(bad(
                &lbl_path,
                format!("labels must have 1 dimension, found {:?}", lbl.dims),
            ));
        }
        let (count, rows, cols) = (img.dims[0], img.dims[1], img.dims[2]);
        if count == 0 || rows == 0 || cols == 0 {
            return Err(bad(&img_path, format!("empty image array {:?}", img.dims)));
        }
        if lbl.dims[0] != count {
            return Err(bad(
                &lbl_path,
                format!(
                    "{} labels but {} has {count} images",
                    lbl.dims[0],
                    img_path.display()
                ),
            ));
        }
        if let Some(i) = lbl.data.iter().position(|&l| l > 9) {
            return Err(bad(
                &lbl_path,
                format!("label {} at index {i}: labels must be 0-9", lbl.data[i]),
            ));
        }
        Ok(ImageSet {
            images: img.data,
            labels: lbl.data,
            count,
            channels: 1,
            rows,
            cols,
            classes: (0..10).map(|d| d.to_string()).collect(),
        })
    }
}

/// The training and test splits of `dir`, checked against each other before any GPU work: both
/// must hold images of one size (a model takes one input size).
pub fn load_splits(dir: &Path) -> Result<(ImageSet, ImageSet)> {
    let train = ImageSet::load_idx(dir, Split::Train)?;
    let test = ImageSet::load_idx(dir, Split::Test)?;
    if (test.rows, test.cols) != (train.rows, train.cols) {
        return Err(Error::Data {
            path: find(dir, Split::Test.stems().0)?,
            detail: format!(
                "test images are {}x{} but the training images are {}x{}: every split must have \
                 the images' size the model takes",
                test.rows, test.cols, train.rows, train.cols
            ),
        });
    }
    Ok((train, test))
}

pub(crate) fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    for name in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(&name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(Error::Data {
        path: dir.join(format!("{stem}.gz")),
        detail: format!("missing: expected {stem}.gz or {stem} in {}", dir.display()),
    })
}
