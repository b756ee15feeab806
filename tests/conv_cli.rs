//! Convolutional models end to end, as a user runs them: `--conv` trained on MNIST, resumed,
//! evaluated and drawn from its checkpoint (its PyTorch names and shapes, the architecture read
//! back, contradicting flags refused), an RGB image folder, and image sides the layers cannot
//! halve refused before any GPU work.

mod common;

use common::programs::{
    Dir, eval_and_draw, fails_with, ok, run, tiny_mnist, train_args, train_losses,
};
use common::shapes::shape_folder;
use vae_wgpu::model::{Checkpoint, ConvNet, ParamLayout};

#[test]
fn conv_model_trains_resumes_evaluates_draws_and_keeps_pytorch_names() {
    let dir = Dir::new("conv");
    let data = tiny_mnist(&dir, 300, 60);
    let (data, out) = (data.to_str().unwrap(), dir.path("run"));
    let out_s = out.to_str().unwrap();
    let arch = ["--conv", "8,16", "--latent", "4"];
    let mut a = train_args(
        data,
        out_s,
        &["--epochs", "1", "--batch-size", "50", "--lr", "0.003"],
    );
    a.extend_from_slice(&arch);
    let o = ok(&run(&a));
    assert!(o.contains("model: 1x28x28-c8-c16-4 relu"), "{o}");
    let ckpt_path = out.join("checkpoint.safetensors");
    let c = Checkpoint::load(&ckpt_path).unwrap();
    assert_eq!(
        c.cfg.conv,
        Some(ConvNet {
            widths: vec![8, 16],
            image: [1, 28, 28]
        })
    );
    assert!(c.cfg.hidden.is_empty() && c.cfg.decoder_hidden.is_empty());
    // The documented module: encoder = Sequential(Conv2d, ReLU, Conv2d, ReLU, Flatten), the heads,
    // decoder = Sequential(Linear, ReLU, Unflatten, ConvTranspose2d, ReLU, ConvTranspose2d).
    let shapes: Vec<(String, Vec<usize>)> = ParamLayout::new(&c.cfg)
        .specs
        .iter()
        .map(|s| (s.name.clone(), s.shape.clone()))
        .collect();
    let want: Vec<(&str, Vec<usize>)> = vec![
        ("encoder.0.weight", vec![8, 1, 4, 4]),
        ("encoder.0.bias", vec![8]),
        ("encoder.2.weight", vec![16, 8, 4, 4]),
        ("encoder.2.bias", vec![16]),
        ("enc_mu.weight", vec![4, 784]),
        ("enc_mu.bias", vec![4]),
        ("enc_logvar.weight", vec![4, 784]),
        ("enc_logvar.bias", vec![4]),
        ("decoder.0.weight", vec![784, 4]),
        ("decoder.0.bias", vec![784]),
        ("decoder.3.weight", vec![16, 8, 4, 4]),
        ("decoder.3.bias", vec![8]),
        ("decoder.5.weight", vec![8, 1, 4, 4]),
        ("decoder.5.bias", vec![1]),
    ];
    assert_eq!(
        shapes,
        want.iter()
            .map(|(n, s)| (n.to_string(), s.clone()))
            .collect::<Vec<_>>()
    );
    // The state_dict alone reads back as the same model.
    let sd = Checkpoint::load(&out.join("model.safetensors")).unwrap();
    assert_eq!(
        (sd.cfg.clone(), sd.params.clone()),
        (c.cfg.clone(), c.params.clone())
    );
    let ck = ckpt_path.to_str().unwrap();

    // Contradicting flags are refused, naming both values.
    for (flag, value, has) in [("--conv", "8", "8,16"), ("--latent", "5", "4")] {
        let o = run(&train_args(
            data,
            out_s,
            &["--resume", ck, "--epochs", "2", flag, value],
        ));
        fails_with(&o, &[&format!("{flag} {value}"), has, "contradicts"]);
    }
    let o = ok(&run(&train_args(
        data,
        out_s,
        &["--resume", ck, "--epochs", "3"],
    )));
    assert!(
        o.contains("resumed") && o.contains("1x28x28-c8-c16-4"),
        "{o}"
    );
    let l = train_losses(&out);
    eprintln!("conv MNIST losses: {l:?}");
    assert_eq!(l.len(), 3, "{l:?}");
    // Measured on lavapipe (seed 0): 547.7, 437.5, 366.6; a model that learns nothing stays at
    // the first epoch's.
    assert!(l[2] < 0.8 * l[0], "the loss fell: {l:?}");

    eval_and_draw(ck, data, &dir.path("pics"), "1x28x28-c8-c16-4");
}

#[test]
fn conv_model_on_an_rgb_folder_and_sides_it_cannot_halve() {
    let dir = Dir::new("conv-rgb");
    let root = dir.path("shapes");
    shape_folder(&root, 40, 16, 16, 3);
    let data = root.to_str().unwrap();
    let out = dir.path("run");
    let o = ok(&run(&[
        "train",
        "--data-dir",
        data,
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "2",
        "--channels",
        "3",
        "--image-size",
        "16",
        "--batch-size",
        "30",
        "--conv",
        "4,8",
        "--latent",
        "3",
        "--lr",
        "0.003",
    ]));
    assert!(o.contains("model: 3x16x16-c4-c8-3 relu"), "{o}");
    assert!(out.join("reconstructions.png").is_file());
    let c = Checkpoint::load(&out.join("checkpoint.safetensors")).unwrap();
    assert_eq!(c.cfg.conv.map(|c| c.image), Some([3, 16, 16]));

    // Three halvings need sides divisible by 8: refused before the device starts, naming both
    // flags.
    let bad = dir.path("bad");
    let o = run(&[
        "train",
        "--data-dir",
        data,
        "--out",
        bad.to_str().unwrap(),
        "--channels",
        "3",
        "--image-size",
        "20",
        "--conv",
        "4,8,8",
    ]);
    fails_with(&o, &["--image-size", "--conv 4,8,8", "divisible by 8"]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("adapter:"));
    // MNIST's 28 is not divisible by 8 either.
    let o = run(&["train", "--out", bad.to_str().unwrap(), "--conv", "4,8,8"]);
    fails_with(&o, &["28x28", "--conv 4,8,8", "divisible by 8"]);
}

#[test]
fn a_conv_layer_too_large_for_the_adapter_is_named() {
    // 64 channels of 128x128 for a batch of 64 is a 268 MB activation, past the 128 MiB storage
    // binding of the adapters here: refused before anything is allocated, naming the layer.
    let dir = Dir::new("conv-huge");
    let root = dir.path("imgs");
    shape_folder(&root, 30, 8, 8, 3);
    let out = dir.path("run");
    let o = run(&[
        "train",
        "--data-dir",
        root.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--channels",
        "3",
        "--image-size",
        "256",
        "--conv",
        "64",
        "--latent",
        "2",
        "--batch-size",
        "64",
    ]);
    fails_with(
        &o,
        &[
            "encoder.0 Conv2d 3x256x256->64x128x128",
            "max_storage_buffer_binding_size",
        ],
    );
    assert!(!out.join("checkpoint.safetensors").exists());
}
