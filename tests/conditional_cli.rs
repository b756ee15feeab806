//! Class-conditional VAEs end to end, as a user runs them: `--conditional` on MNIST's labels and on
//! an image folder's class folders — trained, checkpointed (PyTorch's `[h0, D + classes]` weight,
//! the classes and their names in the metadata), resumed, evaluated on the true labels and drawn
//! (a samples grid with one labelled row per class); unlabelled images, a conv model, a flag or a
//! data set that contradicts the checkpoint refused with the reason.

mod common;

use common::programs::{Dir, eval_and_draw, fails_with, ok, run, tiny_mnist, train_args};
use common::shapes::{CLASSES, shape_folder};
use vae_wgpu::model::Checkpoint;

#[test]
fn a_conditional_model_trains_resumes_evaluates_and_draws_one_row_per_class() {
    let dir = Dir::new("conditional");
    let data = tiny_mnist(&dir, 300, 60);
    let data = data.to_str().unwrap();
    let out = dir.path("run");
    let out_s = out.to_str().unwrap();
    let o = ok(&run(&train_args(
        data,
        out_s,
        &["--epochs", "1", "--batch-size", "50", "--conditional"],
    )));
    assert!(o.contains("conditional on 10 classes"), "{o}");
    let ck = out.join("checkpoint.safetensors");
    let c = Checkpoint::load(&ck).unwrap();
    assert_eq!(c.cfg.classes, 10);
    let names: Vec<String> = (0..10).map(|d| d.to_string()).collect();
    assert_eq!(c.progress.class_names, names);
    // The state_dict alone (PyTorch's layout) says it too: the first layers take D + 10 and K + 10.
    let sd = Checkpoint::load(&out.join("model.safetensors")).unwrap();
    assert_eq!(sd.cfg, c.cfg);
    assert_eq!(sd.params, c.params);
    let layout = vae_wgpu::model::ParamLayout::new(&c.cfg);
    assert_eq!(layout.specs[0].name, "linear_enc.weight");
    assert_eq!(layout.specs[0].shape, [200, 794]);
    assert_eq!(layout.get("linear_dec.weight").unwrap().shape, [200, 20]);
    assert!(out.join("samples_by_class.png").exists());

    // Resumed without the flag: the checkpoint's conditioning goes on.
    let o = ok(&run(&train_args(
        data,
        out_s,
        &["--epochs", "2", "--resume", ck.to_str().unwrap()],
    )));
    assert!(o.contains("conditional on 10 classes"), "{o}");
    assert_eq!(Checkpoint::load(&ck).unwrap().progress.epoch, 2);

    let pics = dir.path("pics");
    eval_and_draw(
        ck.to_str().unwrap(),
        data,
        &pics,
        "784-200-10 relu, conditional on 10 classes",
    );
    assert!(pics.join("samples_by_class.png").exists());
    let grid = image::open(pics.join("samples_by_class.png")).unwrap();
    // Ten rows of 28-pixel digits at scale 2 (plus gutters) beside the names' column.
    assert_eq!(grid.height(), 10 * 29 * 2 + 2, "one row per class");

    // An unconditional checkpoint with --conditional: refused, naming the flag.
    let plain = dir.path("plain");
    ok(&run(&train_args(
        data,
        plain.to_str().unwrap(),
        &["--epochs", "1", "--batch-size", "50"],
    )));
    let plain_ck = plain.join("checkpoint.safetensors");
    fails_with(
        &run(&train_args(
            data,
            plain.to_str().unwrap(),
            &[
                "--epochs",
                "2",
                "--resume",
                plain_ck.to_str().unwrap(),
                "--conditional",
            ],
        )),
        &["--conditional contradicts the checkpoint"],
    );
}

#[test]
fn an_image_folders_class_folders_condition_and_unlabelled_images_are_refused() {
    let dir = Dir::new("conditional-folder");
    let root = dir.path("shapes");
    shape_folder(&root, 6, 16, 16, 1);
    let out = dir.path("run");
    let root_s = root.to_str().unwrap();
    let o = ok(&run(&train_args(
        root_s,
        out.to_str().unwrap(),
        &[
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--image-size",
            "16",
            "--channels",
            "3",
            "--conditional",
            "--test-fraction",
            "0.25",
        ],
    )));
    let n = CLASSES.len();
    assert!(o.contains(&format!("conditional on {n} classes")), "{o}");
    let c = Checkpoint::load(&out.join("checkpoint.safetensors")).unwrap();
    let mut names: Vec<String> = CLASSES.iter().map(|s| s.to_string()).collect();
    names.sort();
    assert_eq!(c.progress.class_names, names);

    // Evaluated on a folder with other classes: refused, naming both lists.
    let other = dir.path("other");
    shape_folder(&other, 6, 16, 16, 2);
    std::fs::rename(other.join(CLASSES[0]), other.join("zzz-other")).unwrap();
    fails_with(
        &run(&[
            "eval",
            "--checkpoint",
            out.join("checkpoint.safetensors").to_str().unwrap(),
            "--data-dir",
            other.to_str().unwrap(),
            "--elbo-samples",
            "1",
            "--iw-samples",
            "2",
        ]),
        &[
            "conditional on",
            "zzz-other",
            "use the data it was trained on",
        ],
    );

    // A flat folder of images has no labels.
    let flat = dir.path("flat");
    std::fs::create_dir_all(&flat).unwrap();
    for (i, f) in std::fs::read_dir(root.join(CLASSES[1]))
        .unwrap()
        .enumerate()
    {
        let f = f.unwrap().path();
        std::fs::copy(
            &f,
            flat.join(format!("{i}-{}", f.file_name().unwrap().to_string_lossy())),
        )
        .unwrap();
    }
    fails_with(
        &run(&train_args(
            flat.to_str().unwrap(),
            dir.path("flat-run").to_str().unwrap(),
            &["--epochs", "1", "--batch-size", "2", "--conditional"],
        )),
        &[
            "--conditional needs labelled images",
            "flat folder",
            "drop --conditional",
        ],
    );
    // Conditioning is for dense models: refused before any data is read.
    fails_with(
        &run(&train_args(
            root_s,
            dir.path("conv-run").to_str().unwrap(),
            &["--conditional", "--conv", "4"],
        )),
        &["conditional", "dense models"],
    );
}
