//! The image-folder loader on PNG and JPEG files generated here: class folders, a flat folder,
//! a train/test pair, RGB, odd sizes, the held-out split, a corrupt file, and the errors (empty
//! folder, a class folder without images, bad sizes).

mod common;

use std::path::Path;

use common::programs::Dir;
use common::shapes::{CLASSES, shape_folder};
use vae_wgpu::data::{
    FolderOptions, ImageCache, ImageSet, load_data, load_folder, load_folder_cached,
};

fn load(root: &Path, opts: &FolderOptions) -> vae_wgpu::Result<(ImageSet, ImageSet)> {
    load_folder(root, opts, &|_, _| {}).map(|(a, b, _)| (a, b))
}

#[test]
fn class_folders_of_png_and_jpeg_at_odd_sizes_load_resized_labelled_and_split() {
    let d = Dir::new("classes");
    shape_folder(&d.0, 10, 37, 23, 1);
    let opts = FolderOptions::default();
    let (train, test) = load(&d.0, &opts).unwrap();
    assert_eq!(train.classes, CLASSES);
    // Each file is held out by its own hash: about 10% of 30, never none.
    assert_eq!(train.count + test.count, 30);
    assert!((1..=9).contains(&test.count), "{} held out", test.count);
    assert_eq!(train.shape(), [1, 28, 28]);
    assert_eq!(train.images.len(), train.count * 784);
    // Every class is present, labels index the class names.
    let mut seen = [0; 3];
    for &l in train.labels.iter().chain(&test.labels) {
        seen[l as usize] += 1;
    }
    assert_eq!(seen, [10, 10, 10]);
    // Bright shapes on a dark background survive grayscale conversion and resizing.
    for i in 0..train.count {
        let img = &train.images[i * 784..(i + 1) * 784];
        let (lo, hi) = (img.iter().min().unwrap(), img.iter().max().unwrap());
        assert!(*lo < 30 && *hi > 120, "image {i}: range {lo}..{hi}");
    }
    // The split is the seed's: the same again, another with another seed.
    let (train2, _) = load(&d.0, &opts).unwrap();
    assert_eq!(train2.images, train.images);
    let (train3, _) = load(
        &d.0,
        &FolderOptions {
            seed: 5,
            ..opts.clone()
        },
    )
    .unwrap();
    assert_ne!(train3.images, train.images);
    // 0.5 held out.
    let (a, b) = load(
        &d.0,
        &FolderOptions {
            test_fraction: 0.5,
            ..opts
        },
    )
    .unwrap();
    assert!(
        (8..=22).contains(&b.count),
        "{} of 30 held out at 0.5",
        b.count
    );
    assert_eq!(a.count + b.count, 30);
    // Adding files moves no image between the splits.
    let images =
        |s: &ImageSet| -> Vec<Vec<u8>> { s.images.chunks(784).map(<[u8]>::to_vec).collect() };
    let before = images(&test);
    shape_folder(&d.0.join("extra"), 10, 20, 20, 500);
    let (train4, test4) = load(&d.0, &opts).unwrap();
    let after = images(&test4);
    assert!(
        before.iter().all(|i| after.contains(i)),
        "a held-out image moved to training"
    );
    let train_after = images(&train4);
    assert!(
        images(&train).iter().all(|i| train_after.contains(i)),
        "a training image moved out"
    );
}

#[test]
fn rgb_is_channel_planar_and_grayscale_uses_luma() {
    let d = Dir::new("rgb");
    let flat = d.0.join("flat");
    std::fs::create_dir_all(&flat).unwrap();
    // A pure red and a mid-gray picture, 10x6, and one 3x3.
    image::RgbImage::from_pixel(10, 6, image::Rgb([255, 0, 0]))
        .save(flat.join("red.png"))
        .unwrap();
    image::RgbImage::from_pixel(10, 6, image::Rgb([100, 100, 100]))
        .save(flat.join("gray.png"))
        .unwrap();
    image::RgbImage::from_pixel(3, 3, image::Rgb([0, 0, 255]))
        .save(flat.join("blue.bmp"))
        .unwrap();
    let opts = FolderOptions {
        channels: 3,
        size: 8,
        test_fraction: 0.34,
        seed: 0,
    };
    let (train, test) = load(&flat, &opts).unwrap();
    assert_eq!(train.classes, ["unlabelled"]);
    assert_eq!(train.count + test.count, 3);
    let all: Vec<(Vec<u8>, usize)> = [&train, &test]
        .iter()
        .flat_map(|s| (0..s.count).map(move |i| (s.images[i * 192..(i + 1) * 192].to_vec(), i)))
        .collect();
    let plane = |img: &[u8], c: usize| img[c * 64..(c + 1) * 64].to_vec();
    let red = all
        .iter()
        .find(|(img, _)| plane(img, 0).iter().all(|&v| v == 255))
        .expect("the red picture, channel 0 full");
    assert!(
        plane(&red.0, 1)
            .iter()
            .chain(&plane(&red.0, 2))
            .all(|&v| v == 0)
    );
    assert!(
        all.iter()
            .any(|(img, _)| plane(img, 2).iter().all(|&v| v == 255)
                && plane(img, 0).iter().all(|&v| v == 0)),
        "the blue picture, upscaled from 3x3"
    );
    // Grayscale: a gray picture keeps its value.
    let (g, h) = load(
        &flat,
        &FolderOptions {
            channels: 1,
            ..opts
        },
    )
    .unwrap();
    assert_eq!(g.shape(), [1, 8, 8]);
    let grays: Vec<&[u8]> = [&g, &h].iter().flat_map(|s| s.images.chunks(64)).collect();
    assert!(
        grays.iter().any(|img| img.iter().all(|&v| v == 100)),
        "{grays:?}"
    );
}

#[test]
fn resizing_averages_like_an_antialiased_filter() {
    let d = Dir::new("resize");
    let flat = d.0.join("f");
    std::fs::create_dir_all(&flat).unwrap();
    // 56x56: left half white, right half black; 1-pixel stripes below row 40.
    let img = image::GrayImage::from_fn(56, 56, |x, y| {
        image::Luma([if y >= 40 {
            if x % 2 == 0 { 255 } else { 0 }
        } else if x < 28 {
            255
        } else {
            0
        }])
    });
    for name in ["a.png", "b.png"] {
        img.save(flat.join(name)).unwrap();
    }
    let (train, _) = load(&flat, &FolderOptions::default()).unwrap();
    let px = |x: usize, y: usize| train.images[y * 28 + x];
    assert_eq!((px(2, 2), px(25, 10)), (255, 0), "halves far from the edge");
    // Stripes of width 1 average to mid-gray at half resolution (a point sampler would give 0/255).
    let v = px(10, 24);
    assert!((100..=155).contains(&v), "striped area gave {v}");
}

#[test]
fn a_train_and_test_pair_is_the_split() {
    let d = Dir::new("pair");
    shape_folder(&d.0.join("train"), 4, 28, 28, 3);
    shape_folder(&d.0.join("test"), 2, 28, 28, 99);
    let (train, test, report) = load_folder(&d.0, &FolderOptions::default(), &|_, _| {}).unwrap();
    assert!(report.presplit);
    assert_eq!((train.count, test.count), (12, 6));
    assert_eq!(test.classes, CLASSES);
}

#[test]
fn a_corrupt_file_is_skipped_and_named_and_loose_files_are_reported() {
    let d = Dir::new("corrupt");
    shape_folder(&d.0, 3, 20, 20, 7);
    let bad = d.0.join("discs").join("broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\n not really").unwrap();
    std::fs::copy(d.0.join("bars/00000.png"), d.0.join("loose.png")).unwrap();
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let (train, test, report) = load_folder(&d.0, &FolderOptions::default(), &|_, all| {
        calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(all, 10);
    })
    .unwrap();
    assert_eq!(train.count + test.count, 9);
    assert_eq!(calls.into_inner(), 10, "progress per file");
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].0, bad);
    assert_eq!(report.ignored_loose_files, 1);
    let w = report.warning().unwrap();
    assert!(
        w.contains("skipped 1") && w.contains("broken.png") && w.contains("ignored 1"),
        "{w}"
    );
}

#[test]
fn empty_folders_classes_without_images_and_bad_options_are_clear_errors() {
    let d = Dir::new("errors");
    let empty = d.0.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = load(&empty, &FolderOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty") && e.contains("no images"), "{e}");

    let classes = d.0.join("classes");
    shape_folder(&classes, 2, 28, 28, 0);
    std::fs::create_dir_all(classes.join("zebras")).unwrap();
    std::fs::write(classes.join("zebras").join("notes.txt"), b"no images").unwrap();
    let e = load(&classes, &FolderOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("zebras") && e.contains("class folder without images"),
        "{e}"
    );

    let only_bad = d.0.join("bad");
    std::fs::create_dir_all(&only_bad).unwrap();
    std::fs::write(only_bad.join("x.jpg"), b"garbage").unwrap();
    let e = load(&only_bad, &FolderOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("none of the 1") && e.contains("x.jpg"), "{e}");

    for (opts, needle) in [
        (
            FolderOptions {
                size: 0,
                ..Default::default()
            },
            "image size",
        ),
        (
            FolderOptions {
                channels: 2,
                ..Default::default()
            },
            "channels",
        ),
        (
            FolderOptions {
                test_fraction: 1.0,
                ..Default::default()
            },
            "test fraction",
        ),
    ] {
        let e = load(&classes, &opts).unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    }
    // A FIFO with an image's name is not read (it would block forever).
    let piped = d.0.join("piped");
    shape_folder(&piped, 2, 8, 8, 0);
    let fifo = piped.join("discs").join("pipe.png");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let (train, test) = load(&piped, &FolderOptions::default()).unwrap();
    assert_eq!(train.count + test.count, 6);

    // A symbolic link that points back up ends in an error, not endless recursion.
    let looped = d.0.join("looped");
    shape_folder(&looped, 1, 8, 8, 0);
    std::os::unix::fs::symlink(&looped, looped.join("discs").join("up")).unwrap();
    let e = load(&looped, &FolderOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nested more than 32") && e.contains("symbolic link"),
        "{e}"
    );

    let e = load(&d.0.join("missing"), &FolderOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not found"), "{e}");
}

#[test]
fn idx_folders_are_read_as_they_are_and_named_when_misnamed() {
    // The folder options apply to image folders: IDX files come as they are (the programs refuse
    // --channels / --image-size given for them, see tests/layers_cli.rs).
    let mnist = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let opts = FolderOptions {
        size: 32,
        ..Default::default()
    };
    let (train, _, report) = load_data(&mnist, &opts, None, &|_, _| {}).unwrap();
    assert!(report.is_none());
    assert_eq!(train.shape(), [1, 28, 28]);
    // IDX files under other names are taken for IDX, and the error names the file expected.
    let d = Dir::new("imgs-kaggle");
    std::fs::write(d.0.join("train-images.idx3-ubyte"), b"x").unwrap();
    let e = load_data(&d.0, &opts, None, &|_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("train-images-idx3-ubyte"), "{e}");
}

#[test]
fn large_folders_are_cached_decoded_and_a_changed_folder_is_decoded_again() {
    // The rule is ≥ 20 000 files; this binary's other folders have at most 30, so lowering it to
    // 50 here touches no other test.
    unsafe { std::env::set_var("VAE_WGPU_IMAGE_CACHE_MIN", "50") };
    let d = Dir::new("cache");
    let root = d.0.join("imgs");
    shape_folder(&root, 20, 28, 28, 5);
    let cache = d.0.join(vae_wgpu::data::folder::CACHE_FILE);
    let opts = FolderOptions::default();
    let (train, test, r) = load_folder_cached(&root, &opts, Some(&cache), &|_, _| {}).unwrap();
    let key = r.cache_key.expect("60 files are 'large' here");
    assert!(r.from_cache.is_none());
    ImageCache::write(
        &cache,
        key,
        &train,
        &test,
        &[(std::path::PathBuf::from("x.png"), "not a PNG".into())],
    )
    .unwrap();
    let decoded = std::sync::atomic::AtomicUsize::new(0);
    let count = |_: usize, _: usize| {
        decoded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    };
    let (t2, s2, r2) = load_folder_cached(&root, &opts, Some(&cache), &count).unwrap();
    assert_eq!(r2.from_cache.as_deref(), Some(cache.as_path()));
    assert_eq!(
        r2.skipped.len(),
        1,
        "the skipped files come back with the cache"
    );
    assert_eq!(
        decoded.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "nothing decoded"
    );
    assert_eq!(
        (t2.images, t2.labels, t2.classes),
        (
            train.images.clone(),
            train.labels.clone(),
            train.classes.clone()
        )
    );
    assert_eq!((s2.images, s2.count), (test.images.clone(), test.count));
    // Other options, or a file replaced, make another key: decoded again.
    let (_, _, r3) = load_folder_cached(
        &root,
        &FolderOptions {
            seed: 1,
            ..opts.clone()
        },
        Some(&cache),
        &|_, _| {},
    )
    .unwrap();
    assert!(r3.from_cache.is_none());
    std::fs::write(root.join("discs/00000.png"), b"not an image any more").unwrap();
    let (_, _, r4) = load_folder_cached(&root, &opts, Some(&cache), &|_, _| {}).unwrap();
    assert!(r4.from_cache.is_none() && r4.skipped.len() == 1);
    // Another version's (or no) cache is replaced quietly.
    std::fs::write(&cache, b"VAEWGPU-IMAGES1\n garbage").unwrap();
    let (_, _, r5) = load_folder_cached(&root, &opts, Some(&cache), &|_, _| {}).unwrap();
    assert!(r5.from_cache.is_none() && r5.cache_damaged.is_none());
    // A cache of this folder is checked before it is trusted: altered pixels (the checksum),
    // a truncated or extended file (the size its header gives, checked before the pixels are
    // read: a sparse 30 GB file is refused at once), an out-of-range label.
    let key = r5.cache_key.unwrap();
    let (train, test, _) = load_folder_cached(&root, &opts, None, &|_, _| {}).unwrap();
    ImageCache::write(&cache, key, &train, &test, &[]).unwrap();
    let good = std::fs::read(&cache).unwrap();
    let damaged = |bytes: &dyn Fn(&std::fs::File), what: &str| {
        std::fs::write(&cache, &good).unwrap();
        bytes(
            &std::fs::OpenOptions::new()
                .write(true)
                .open(&cache)
                .unwrap(),
        );
        let t = std::time::Instant::now();
        let (t2, _, r) = load_folder_cached(&root, &opts, Some(&cache), &|_, _| {}).unwrap();
        let (p, why) = r
            .cache_damaged
            .clone()
            .unwrap_or_else(|| panic!("{what}: trusted"));
        assert!(r.from_cache.is_none() && p == cache, "{what}");
        assert!(why.contains(what), "{what}: {why}");
        assert!(r.warning().unwrap().contains("decoded again"), "{what}");
        assert_eq!(t2.images, train.images, "{what}: decoded again");
        assert!(t.elapsed().as_secs() < 20, "{what}: read whole");
    };
    use std::io::{Seek, Write};
    let n = good.len() as u64;
    let at = |f: &std::fs::File, pos: u64, b: &[u8]| {
        let mut f = f;
        f.seek(std::io::SeekFrom::Start(pos)).unwrap();
        f.write_all(b).unwrap();
    };
    // The first test image's first pixels, inverted (the pixels sit just before the checksum).
    let tail = (test.count * test.dim() + 8) as u64;
    let inverted: Vec<u8> = good[(n - tail) as usize..][..64]
        .iter()
        .map(|p| 255 - p)
        .collect();
    damaged(&|f| at(f, n - tail, &inverted), "checksum");
    damaged(&|f| f.set_len(n - 100).unwrap(), "truncated or altered");
    damaged(&|f| f.set_len(30 << 30).unwrap(), "truncated or altered");
    // A label past the class list, with a checksum that matches: the range check.
    let mut bad_label = good[..(n - 8) as usize].to_vec();
    let labels_at =
        bad_label.len() - test.count * test.dim() - test.count - train.count * (train.dim() + 1);
    bad_label[labels_at] = 200;
    let sum = vae_wgpu::hash::Fnv1a::default().bytes(&bad_label).finish();
    bad_label.extend(sum.to_le_bytes());
    damaged(&|f| at(f, 0, &bad_label), "label");
    std::fs::write(&cache, &good).unwrap();
    let (_, _, r6) = load_folder_cached(&root, &opts, Some(&cache), &|_, _| {}).unwrap();
    assert!(r6.from_cache.is_some(), "the intact cache is read");
}

#[test]
fn folders_mean_what_they_look_like() {
    let opts = FolderOptions::default();
    // train/ alone: its class folders are the classes, and a share of it is held out.
    let d = Dir::new("train-only");
    shape_folder(&d.0.join("train"), 10, 28, 28, 3);
    let (train, test, r) = load_folder(&d.0, &opts, &|_, _| {}).unwrap();
    assert!(!r.presplit);
    assert_eq!(train.classes, CLASSES, "train/ read as one class");
    assert_eq!(train.count + test.count, 30);
    assert!(
        r.warning().unwrap().contains("held out"),
        "{:?}",
        r.warning()
    );
    // train/ beside other folders and no test/: refused, naming them.
    shape_folder(&d.0.join("more"), 1, 28, 28, 4);
    let e = load(&d.0, &opts).unwrap_err().to_string();
    assert!(e.contains("no test/") && e.contains("more"), "{e}");
    // train/ + val/: val/ is the test set, said; with test/ too, val/ is not read, said.
    let d = Dir::new("train-val");
    shape_folder(&d.0.join("train"), 4, 28, 28, 3);
    shape_folder(&d.0.join("val"), 2, 28, 28, 9);
    let (train, test, r) = load_folder(&d.0, &opts, &|_, _| {}).unwrap();
    assert!(r.presplit && (train.count, test.count) == (12, 6));
    assert!(r.warning().unwrap().contains("val/ is the test set"));
    shape_folder(&d.0.join("test"), 1, 28, 28, 11);
    let (_, test, r) = load_folder(&d.0, &opts, &|_, _| {}).unwrap();
    assert_eq!(test.count, 3);
    assert!(r.warning().unwrap().contains("not read: val/"));
    // test/ without train/: refused.
    let d = Dir::new("test-only");
    shape_folder(&d.0.join("test"), 2, 28, 28, 9);
    let e = load(&d.0, &opts).unwrap_err().to_string();
    assert!(e.contains("no train/"), "{e}");
    // Class folders whose names are not UTF-8 and differ stay two classes.
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let d = Dir::new("non-utf8");
        for (i, name) in [&b"cat\xff"[..], &b"cat\xfe"[..]].into_iter().enumerate() {
            let dir = d.0.join(std::ffi::OsStr::from_bytes(name));
            shape_folder(&d.0.join("tmp"), 3, 28, 28, i as u32);
            std::fs::rename(d.0.join("tmp").join(CLASSES[i]), &dir).unwrap();
            std::fs::remove_dir_all(d.0.join("tmp")).unwrap();
        }
        let (train, _, _) = load_folder(&d.0, &opts, &|_, _| {}).unwrap();
        assert_eq!(train.classes, ["cat\\xfe", "cat\\xff"]);
    }
    // A FIFO and a dangling link named like images are reported with the unreadable files.
    let d = Dir::new("odd-files");
    shape_folder(&d.0, 3, 28, 28, 5);
    let fifo = d.0.join("discs").join("pipe.png");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let link = d.0.join("bars").join("gone.png");
    std::os::unix::fs::symlink(d.0.join("nothing.png"), &link).unwrap();
    let (_, _, r) = load_folder(&d.0, &opts, &|_, _| {}).unwrap();
    let skipped: Vec<_> = r.skipped.iter().map(|(p, _)| p.clone()).collect();
    assert!(
        skipped.contains(&fifo) && skipped.contains(&link),
        "{skipped:?}"
    );
    let w = r.warning().unwrap();
    assert!(
        w.contains("not a regular file") && w.contains("link to nothing"),
        "{w}"
    );
    // A flat folder may hold an image named like an IDX file.
    let d = Dir::new("ubyte-png");
    shape_folder(&d.0.join("x"), 3, 28, 28, 5);
    for (i, f) in std::fs::read_dir(d.0.join("x").join("discs"))
        .unwrap()
        .enumerate()
    {
        std::fs::rename(f.unwrap().path(), d.0.join(format!("img{i}-ubyte.png"))).unwrap();
    }
    std::fs::remove_dir_all(d.0.join("x")).unwrap();
    let (train, test, r) = load_data(&d.0, &opts, None, &|_, _| {}).unwrap();
    assert!(r.is_some(), "taken for IDX files");
    assert_eq!(train.count + test.count, 3);
}

#[test]
fn truncated_jpegs_are_refused_and_large_images_decode_within_a_memory_budget() {
    use vae_wgpu::data::folder::{DecodeBudget, decode};
    let d = Dir::new("decode");
    // A JPEG cut in half decodes without error in the image crate (grey rows): refused.
    let img = image::RgbImage::from_fn(256, 256, |x, y| {
        image::Rgb([(x * 7 + y * 13) as u8, (x ^ y) as u8, (x * y) as u8])
    });
    let jpeg = d.0.join("whole.jpg");
    img.save(&jpeg).unwrap();
    let bytes = std::fs::read(&jpeg).unwrap();
    let cut = d.0.join("cut.jpg");
    let half = &bytes[..bytes.len() * 6 / 10];
    std::fs::write(&cut, half).unwrap();
    assert!(
        image::load_from_memory(half).is_ok(),
        "the decoder alone accepts the cut file"
    );
    let budget = DecodeBudget::new(1 << 30);
    assert!(decode(&jpeg, 1, 28, &budget).is_ok());
    let e = decode(&cut, 1, 28, &budget).unwrap_err();
    assert!(e.contains("truncated JPEG"), "{e}");
    // Trailing bytes after the end-of-image marker are fine.
    let padded = d.0.join("padded.jpg");
    std::fs::write(&padded, [&bytes[..], &[0u8; 100]].concat()).unwrap();
    assert!(decode(&padded, 1, 28, &budget).is_ok());
    // A PNG followed by a 64 GiB sparse tail decodes as the PNG alone (the stream stops at its
    // end; nothing of the tail is read or budgeted); a JPEG so padded, which is read whole to
    // check its end, is refused for its file size, not its pixels.
    let png = d.0.join("whole.png");
    img.save(&png).unwrap();
    let want = decode(&png, 3, 28, &budget).unwrap();
    let tailed = d.0.join("tailed.png");
    std::fs::copy(&png, &tailed).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&tailed)
        .unwrap();
    f.set_len(64 << 30).unwrap();
    assert_eq!(decode(&tailed, 3, 28, &budget).unwrap(), want);
    std::fs::copy(&jpeg, &tailed).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&tailed)
        .unwrap();
    f.set_len(64 << 30).unwrap();
    let e = decode(&tailed, 3, 28, &budget).unwrap_err();
    assert!(
        e.contains("the file is 65536 MB") && e.contains("appended after the image"),
        "{e}"
    );
    // The header's size is read first: an image larger than the whole budget is refused
    // without decoding; the others wait for each other's memory, never holding more at once.
    let big = d.0.join("big.png");
    image::GrayImage::from_pixel(2000, 2000, image::Luma([7]))
        .save(&big)
        .unwrap();
    let small = DecodeBudget::new(3 << 20);
    let e = decode(&big, 1, 28, &small).unwrap_err();
    assert!(e.contains("2000x2000") && e.contains("shrink it"), "{e}");
    let files: Vec<_> = (0..8)
        .map(|i| {
            let p = d.0.join(format!("m{i}.png"));
            image::GrayImage::from_pixel(700, 700, image::Luma([i]))
                .save(&p)
                .unwrap();
            p
        })
        .collect();
    // Each needs ~1 MB (file, pixels, grayscale copy): at most two fit in 2.5 MB at once.
    let two = DecodeBudget::new(5 << 19);
    std::thread::scope(|s| {
        for f in &files {
            let two = &two;
            s.spawn(move || assert!(decode(f, 1, 28, two).is_ok()));
        }
    });
    assert!(
        two.peak() > 0 && two.peak() <= 5 << 19,
        "peak {}",
        two.peak()
    );
}
