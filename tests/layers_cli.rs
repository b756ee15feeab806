//! Layers and image folders end to end, as a user runs them: a deeper tanh model trained, resumed,
//! evaluated and drawn from its checkpoint (flags that contradict the checkpoint refused), and a
//! model trained on a generated folder of shape pictures, grayscale and RGB.

mod common;

use common::programs::{
    Dir, eval_and_draw, fails_with, ok, run, tiny_mnist, train_args, train_losses,
};
use common::shapes::shape_folder;
use vae_wgpu::model::Checkpoint;
use vae_wgpu::ops::Act;

#[test]
fn deep_tanh_model_trains_resumes_evaluates_and_refuses_contradicting_flags() {
    let dir = Dir::new("deep");
    let data = tiny_mnist(&dir, 300, 60);
    let (data, out) = (data.to_str().unwrap(), dir.path("run"));
    let out = out.to_str().unwrap();
    let arch = ["--hidden", "32,16", "--activation", "tanh", "--latent", "4"];
    let mut a = train_args(data, out, &["--epochs", "1", "--batch-size", "50"]);
    a.extend_from_slice(&arch);
    let o = ok(&run(&a));
    assert!(o.contains("model: 784-32-16-4 tanh"), "{o}");
    let ckpt_path = dir.path("run/checkpoint.safetensors");
    let c = Checkpoint::load(&ckpt_path).unwrap();
    assert_eq!(
        (
            c.cfg.hidden.clone(),
            c.cfg.decoder_hidden.clone(),
            c.cfg.activation
        ),
        (vec![32, 16], vec![16, 32], Act::Tanh)
    );
    assert!(c.activation_recorded);
    assert_eq!(c.progress.image, [1, 28, 28]);
    // The PyTorch state_dict carries the Sequential names.
    let sd = Checkpoint::load(&dir.path("run/model.safetensors")).unwrap();
    assert_eq!(sd.cfg, c.cfg);
    assert_eq!(sd.params, c.params);
    let ck = ckpt_path.to_str().unwrap();

    // Folder options are refused for IDX files, naming the flag.
    let o = run(&train_args(
        data,
        out,
        &["--image-size", "32", "--overwrite"],
    ));
    fails_with(
        &o,
        &["IDX files of 28x28", "--image-size 32", "image folders"],
    );

    // Contradicting flags are refused, naming both values; nothing is trained.
    for (flag, value, has) in [
        ("--hidden", "64", "32,16"),
        ("--activation", "relu", "tanh"),
        ("--decoder-hidden", "16", "16,32"),
        ("--latent", "5", "4"),
    ] {
        let o = run(&train_args(
            data,
            out,
            &["--resume", ck, "--epochs", "2", flag, value],
        ));
        fails_with(&o, &[&format!("{flag} {value}"), has, "contradicts"]);
    }
    // Resume reads the architecture from the file; the same flags repeated are fine.
    let mut a = train_args(data, out, &["--resume", ck, "--epochs", "2"]);
    a.extend_from_slice(&arch[..4]);
    let o = ok(&run(&a));
    assert!(
        o.contains("resumed") && o.contains("784-32-16-4 tanh"),
        "{o}"
    );
    let l = train_losses(&dir.path("run"));
    assert_eq!(l.len(), 2, "{l:?}");
    assert!(l[1] < l[0], "the loss fell: {l:?}");

    // eval and pictures read the architecture too.
    eval_and_draw(ck, data, &dir.path("pics"), "784-32-16-4 tanh");
    let o = run(&[
        "eval",
        "--checkpoint",
        ck,
        "--data-dir",
        data,
        "--activation",
        "relu",
    ]);
    fails_with(&o, &["--activation relu", "tanh", "contradicts"]);
}

fn png_color(path: &std::path::Path) -> png::ColorType {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    dec.read_info().unwrap().info().color_type
}

#[test]
fn a_generated_image_folder_trains_and_draws() {
    let dir = Dir::new("shapes");
    let root = dir.path("shapes");
    shape_folder(&root, 100, 28, 28, 1);
    let (data, out) = (root.to_str().unwrap(), dir.path("run"));
    let out = out.to_str().unwrap();
    let o = ok(&run(&train_args(
        data,
        out,
        &["--epochs", "8", "--batch-size", "30", "--latent", "2"],
    )));
    // Each file is held out by its own hash: about 30 of the 300.
    let counts: Vec<usize> = o
        .lines()
        .find(|l| l.starts_with("images: "))
        .unwrap_or_else(|| panic!("{o}"))
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .take(2)
        .collect();
    let (n_train, n_test) = (counts[0], counts[1]);
    assert!(
        n_train + n_test == 300 && (15..=45).contains(&n_test),
        "{o}"
    );
    assert!(o.contains("3 class(es), 28x28, 1 channel(s)"), "{o}");
    let l = train_losses(&dir.path("run"));
    eprintln!("shape folder losses: {l:?}");
    // Measured on lavapipe (seed 0): 458.7 after the first epoch, 298.7 after the eighth; a model
    // that learns nothing stays near the first epoch's.
    assert!(l[7] < 330.0 && l[7] < 0.75 * l[0], "{l:?}");
    for f in [
        "reconstructions.png",
        "samples.png",
        "manifold.png",
        "loss.png",
    ] {
        assert!(dir.path("run").join(f).is_file(), "{f}");
    }
    assert_eq!(
        png_color(&dir.path("run/samples.png")),
        png::ColorType::Grayscale
    );
    let c = Checkpoint::load(&dir.path("run/checkpoint.safetensors")).unwrap();
    assert_eq!(c.progress.image, [1, 28, 28]);
    assert_eq!(c.progress.test_fraction, 0.1);
    let ck = dir.path("run/checkpoint.safetensors");
    let ck = ck.to_str().unwrap();
    // eval splits the folder as training did.
    let o = ok(&run(&[
        "eval",
        "--checkpoint",
        ck,
        "--data-dir",
        data,
        "--iw-samples",
        "2",
        "--elbo-samples",
        "2",
    ]));
    assert!(o.contains(&format!("test set: {n_test} images")), "{o}");
    // The image options are the checkpoint's.
    let o = run(&train_args(
        data,
        out,
        &["--resume", ck, "--epochs", "9", "--image-size", "16"],
    ));
    fails_with(&o, &["--image-size 16", "28", "contradicts"]);
    // Another seed on resume reshuffles training, but the held-out images stay held out.
    let o = ok(&run(&train_args(
        data,
        out,
        &["--resume", ck, "--epochs", "9", "--seed", "5"],
    )));
    assert!(
        o.contains("0.1 held out with seed 0") && o.contains("Epoch 9"),
        "{o}"
    );
    assert_eq!(
        Checkpoint::load(&dir.path("run/checkpoint.safetensors"))
            .unwrap()
            .progress
            .split_seed,
        0
    );

    // RGB at another size: the pictures are RGB.
    let out2 = dir.path("rgb");
    let o = ok(&run(&[
        "train",
        "--data-dir",
        data,
        "--out",
        out2.to_str().unwrap(),
        "--epochs",
        "1",
        "--channels",
        "3",
        "--image-size",
        "16",
        "--batch-size",
        "30",
        "--hidden",
        "64",
    ]));
    assert!(
        o.contains("16x16, 3 channel(s)") && o.contains("model: 768-64-10 relu"),
        "{o}"
    );
    assert_eq!(
        png_color(&out2.join("reconstructions.png")),
        png::ColorType::Rgb
    );
    assert!(out2.join("latent_tsne.png").is_file());
}

#[test]
fn an_input_layer_too_large_is_refused_before_gpu_work() {
    let dir = Dir::new("huge");
    let root = dir.path("imgs");
    shape_folder(&root, 2, 8, 8, 3);
    let (data, out) = (root.to_str().unwrap(), dir.path("run"));
    let out = out.to_str().unwrap();
    let big = |size| ["--channels", "3", "--image-size", size, "--batch-size", "2"];
    for (flags, needles) in [
        (
            &big("1024")[..],
            &["input size", "3145728", "absurdly large"][..],
        ),
        (
            &big("512")[..],
            &["786432-200-10", "parameters", "limit"][..],
        ),
        (
            &["--image-size", "0"][..],
            &["--image-size 0 is outside"][..],
        ),
        (&["--hidden", "32,x"][..], &["'x'", "400,200"][..]),
    ] {
        let o = run(&train_args(data, out, flags));
        fails_with(&o, needles);
        assert!(
            !String::from_utf8_lossy(&o.stdout).contains("adapter:"),
            "{flags:?}"
        );
    }
    // tune and export-web check the model before the device starts (and so before the
    // parameters are initialised on the host).
    let web = dir.path("web");
    let web = web.to_str().unwrap();
    for (args, needle) in [
        (&["tune", "--hidden", "1048576,1048576"][..], "parameters"),
        (
            &["export-web", "--hidden", "1048576,1048576", "--out", web],
            "parameters",
        ),
        (
            &[
                "export-web",
                "--data-dir",
                data,
                "--image-size",
                "1024",
                "--channels",
                "3",
                "--out",
                web,
            ],
            "absurdly large",
        ),
    ] {
        let o = run(args);
        fails_with(&o, &[needle]);
        assert!(
            !String::from_utf8_lossy(&o.stdout).contains("adapter:"),
            "{args:?}"
        );
    }
}
