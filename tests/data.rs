//! The IDX reader: on the vendored MNIST files (counts, label histogram, pixel sums computed
//! independently with Python's gzip module) and on small hand-made files, gzip and raw, good and bad.

mod common;

use common::{gz, idx_bytes};
use std::path::{Path, PathBuf};

use vae_wgpu::data::{ImageSet, Split, parse_idx, read_idx};

fn vendored() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist")
}

#[test]
fn vendored_mnist_has_the_known_contents() {
    let train = ImageSet::load_idx(&vendored(), Split::Train).unwrap();
    assert_eq!((train.count, train.rows, train.cols), (60000, 28, 28));
    let mut hist = [0usize; 10];
    train.labels.iter().for_each(|&l| hist[l as usize] += 1);
    assert_eq!(
        hist,
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    let sum: u64 = train.images.iter().map(|&p| p as u64).sum();
    assert_eq!(sum, 1_567_298_545);
    assert!((sum as f64 / train.images.len() as f64 / 255.0 - 0.1307).abs() < 1e-4);
    assert_eq!(
        train.images[..784].iter().map(|&p| p as u64).sum::<u64>(),
        27525
    );
    assert_eq!(train.labels[0], 5);

    let test = ImageSet::load_idx(&vendored(), Split::Test).unwrap();
    assert_eq!(test.count, 10000);
    assert_eq!(
        test.images.iter().map(|&p| p as u64).sum::<u64>(),
        264_923_200
    );
    assert_eq!(test.labels[0], 7);
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("vae-wgpu-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn hand_made_files_gz_and_raw() {
    let dir = TempDir::new("idx");
    let images: Vec<u8> = (0..3 * 2 * 2).map(|i| i as u8 * 10).collect();
    let labels = [3u8, 9, 0];
    // Train split raw, test split gzipped: both must load.
    dir.write("train-images-idx3-ubyte", &idx_bytes(&[3, 2, 2], &images));
    dir.write("train-labels-idx1-ubyte", &idx_bytes(&[3], &labels));
    dir.write(
        "t10k-images-idx3-ubyte.gz",
        &gz(&idx_bytes(&[3, 2, 2], &images)),
    );
    dir.write("t10k-labels-idx1-ubyte.gz", &gz(&idx_bytes(&[3], &labels)));
    for split in [Split::Train, Split::Test] {
        let m = ImageSet::load_idx(&dir.0, split).unwrap();
        assert_eq!((m.count, m.rows, m.cols), (3, 2, 2));
        assert_eq!(m.images, images);
        assert_eq!(m.labels, labels);
        assert_eq!(
            m.image_f32(1),
            vec![40.0 / 255.0, 50.0 / 255.0, 60.0 / 255.0, 70.0 / 255.0]
        );
    }
}

fn err_of(bytes: &[u8]) -> String {
    parse_idx(bytes, Path::new("f.idx"))
        .unwrap_err()
        .to_string()
}

#[test]
fn malformed_idx_gives_clear_errors() {
    let good = idx_bytes(&[2, 3], &[1, 2, 3, 4, 5, 6]);
    assert_eq!(parse_idx(&good, Path::new("f")).unwrap().dims, vec![2, 3]);
    let e = err_of(&good[..good.len() - 1]);
    assert!(
        e.contains("f.idx")
            && e.contains("need 6")
            && e.contains("found 5")
            && e.contains("truncated"),
        "{e}"
    );
    let mut long = good.clone();
    long.push(0);
    assert!(err_of(&long).contains("trailing"), "{}", err_of(&long));
    let mut magic = good.clone();
    magic[0] = 0x50;
    assert!(err_of(&magic).contains("wrong magic"), "{}", err_of(&magic));
    let mut dtype = good.clone();
    dtype[2] = 0x0d;
    assert!(err_of(&dtype).contains("0x0d"), "{}", err_of(&dtype));
    assert!(err_of(&good[..2]).contains("too short"));
    assert!(err_of(&good[..9]).contains("header"));
    let huge = idx_bytes(&[0xffff_ffff, 0xffff_ffff, 0xffff_ffff], &[]);
    assert!(
        err_of(&huge).contains("corrupt header"),
        "{}",
        err_of(&huge)
    );
}

#[test]
fn split_level_errors_name_the_file() {
    let dir = TempDir::new("split");
    // Missing directory.
    let e = ImageSet::load_idx(&dir.0.join("nope"), Split::Train)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope") && e.contains("--data-dir"), "{e}");
    // Missing file.
    let e = ImageSet::load_idx(&dir.0, Split::Train)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("train-images-idx3-ubyte") && e.contains("missing"),
        "{e}"
    );
    // Count mismatch.
    dir.write("train-images-idx3-ubyte", &idx_bytes(&[3, 2, 2], &[0; 12]));
    dir.write("train-labels-idx1-ubyte", &idx_bytes(&[2], &[1, 2]));
    let e = ImageSet::load_idx(&dir.0, Split::Train)
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 labels") && e.contains("3 images"), "{e}");
    // A label above 9.
    dir.write("train-labels-idx1-ubyte", &idx_bytes(&[3], &[1, 12, 2]));
    let e = ImageSet::load_idx(&dir.0, Split::Train)
        .unwrap_err()
        .to_string();
    assert!(e.contains("label 12") && e.contains("index 1"), "{e}");
    // Images with the wrong rank.
    dir.write("train-images-idx3-ubyte", &idx_bytes(&[3, 4], &[0; 12]));
    dir.write("train-labels-idx1-ubyte", &idx_bytes(&[3], &[1, 2, 3]));
    let e = ImageSet::load_idx(&dir.0, Split::Train)
        .unwrap_err()
        .to_string();
    assert!(e.contains("3 dimensions"), "{e}");
    // Corrupt gzip.
    let mut bad = gz(&idx_bytes(&[3], &[1, 2, 3]));
    let n = bad.len();
    bad[n / 2] ^= 0xff;
    bad.truncate(n - 6);
    let p = dir.write("labels.gz", &bad);
    let e = read_idx(&p).unwrap_err().to_string();
    assert!(e.contains("labels.gz") && e.contains("gzip"), "{e}");
}
