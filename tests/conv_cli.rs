//! Convolutional models end to end, as a user runs them: `--conv` trained on MNIST, resumed,
//! evaluated and drawn from its checkpoint (its PyTorch names and shapes, the architecture read
//! back, contradicting flags refused), an RGB image folder, and image sides the layers cannot
//! halve refused before any GPU work.

mod common;

use std::path::Path;

use common::programs::{
    Dir, eval_and_draw, fails_with, ok, run, run_env, tiny_mnist, train_args, train_losses,
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
    fails_with(
        &o,
        &[
            "3 conv layer(s) (4,8,8)",
            "the images are 20x20",
            "an --image-size divisible by 8 (e.g. 16), or at most 2 --conv layer(s)",
        ],
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains("adapter:"));
    // Only the fixes that apply: MNIST's IDX images have no --image-size, nor has `tune` (it
    // times MNIST's shapes); no --image-size past the largest (1024) is suggested.
    let hints = |args: &[&str], want: &[&str]| {
        let o = run(args);
        fails_with(&o, want);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("--image-size"), "{args:?}: {err}");
    };
    let bad = bad.to_str().unwrap();
    let few = "divisible by 8; the images are 28x28, whose sides halve exactly at most 2 time(s): \
               choose at most 2 --conv layer(s)";
    hints(&["train", "--out", bad, "--conv", "4,8,8"], &[few]);
    hints(&["tune", "--conv", "4,8,8"], &[few]);
    let many = ["4"; 11].join(",");
    hints(
        &[
            "train",
            "--data-dir",
            data,
            "--out",
            bad,
            "--image-size",
            "20",
            "--conv",
            &many,
        ],
        &["divisible by 2048", "choose at most 2 --conv layer(s)"],
    );
    fails_with(
        &run(&[
            "train",
            "--data-dir",
            data,
            "--out",
            bad,
            "--image-size",
            "20",
            "--conv",
            "4,4,4,4,4",
        ]),
        &["choose an --image-size divisible by 32 (e.g. 32), or at most 2 --conv layer(s)"],
    );
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

/// Kernels pinned: a new model's many conv shapes are not autotuned (minutes on a fresh cache).
const PINNED: [(&str, &str); 2] = [("VAE_WGPU_MATMUL", "direct"), ("VAE_WGPU_CONV", "direct")];

// diffusers' AutoencoderKL as a user trains it: `--arch autoencoder-kl` on MNIST (pixels in
// [−1, 1]); the run folder is diffusers' model folder (config.json the config it was built from,
// diffusion_pytorch_model.safetensors every tensor under diffusers' names, the learned σ aside);
// the checkpoint resumes, evaluates and draws; `--from-pretrained` fine-tunes a folder (f16
// weights too, unused tensors named and ignored); flags and configs it cannot build are refused,
// naming the flag or the field and the file.
#[test]
fn autoencoder_kl_trains_into_a_diffusers_folder_and_fine_tunes_one() {
    use vae_wgpu::model::autoencoder_kl::KlConfig;
    let dir = Dir::new("kl");
    let data = tiny_mnist(&dir, 64, 16);
    let (data, out) = (data.to_str().unwrap(), dir.path("run"));
    let out_s = out.to_str().unwrap();
    let arch = [
        "--arch",
        "autoencoder-kl",
        "--block-out-channels",
        "8,16",
        "--norm-groups",
        "4",
        "--latent-channels",
        "2",
    ];
    let mut a = train_args(
        data,
        out_s,
        &["--epochs", "1", "--batch-size", "16", "--lr", "0.001"],
    );
    a.extend_from_slice(&arch);
    let o = ok(&run_env(&a, &PINNED));
    assert!(
        o.contains("model: AutoencoderKL 1x28x28 blocks 8,16 ×1 groups 4 latent 2x14x14"),
        "{o}"
    );
    let c = Checkpoint::load(&out.join("checkpoint.safetensors")).unwrap();
    let kl = c.cfg.kl.clone().expect("an AutoencoderKL checkpoint");
    assert_eq!(
        (kl.image, kl.config.block_out_channels.clone()),
        ([1, 28, 28], vec![8, 16])
    );
    // The diffusers folder: its config builds the same model, its tensors are the layout's.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(json["_class_name"], "AutoencoderKL");
    assert_eq!(json["sample_size"], 28);
    assert_eq!(
        KlConfig::from_json(&json, "config.json").unwrap(),
        kl.config
    );
    let (folder, ignored) = Checkpoint::load_diffusers(&out).unwrap();
    assert!(ignored.is_empty(), "{ignored:?}");
    let layout = ParamLayout::new(&c.cfg);
    for s in layout.specs.iter().filter(|s| s.name != "log_sigma") {
        assert_eq!(s.read(&folder.params), s.read(&c.params), "{}", s.name);
    }
    assert!(
        layout
            .get("encoder.mid_block.attentions.0.to_q.weight")
            .is_some()
    );
    // Resumed, evaluated, drawn.
    let ck = out.join("checkpoint.safetensors");
    let ck = ck.to_str().unwrap();
    let resumed = ok(&run_env(
        &[
            "train",
            "--resume",
            ck,
            "--epochs",
            "2",
            "--no-tsne",
            "--data-dir",
            data,
        ],
        &PINNED,
    ));
    assert!(resumed.contains("Epoch 2"), "{resumed}");
    assert_eq!(train_losses(&out).len(), 2);
    let pics = dir.path("pics");
    std::fs::create_dir_all(&pics).unwrap();
    eval_and_draw(ck, data, &pics, "AutoencoderKL");

    // encode and decode with the folder: two test digits to latents [2, 2, 14, 14] and back.
    let imgs = test_digit_pngs(data, &dir, 2);
    let lat = dir.path("lat.safetensors");
    let (imgs_s, lat_s) = (imgs.to_str().unwrap(), lat.to_str().unwrap());
    let o = ok(&run(&[
        "encode", "--model", out_s, "--input", imgs_s, "--out", lat_s,
    ]));
    assert!(o.contains("latents [2, 2, 14, 14]"), "{o}");
    let dec = dir.path("dec");
    let dec_s = dec.to_str().unwrap();
    ok(&run(&[
        "decode",
        "--model",
        out_s,
        "--latents",
        lat_s,
        "--out",
        dec_s,
    ]));
    for i in 0..2 {
        let d = image::open(dec.join(format!("d{i}.png"))).unwrap();
        assert_eq!((d.width(), d.height()), (28, 28));
    }
    // Latents whose image exceeds one binding (a model of blocks 64,128: 128 channels at
    // 1024x1024 in its decoder, 512 MiB) are refused before any GPU work, naming the largest size
    // that fits.
    let wide = dir.path("wide");
    let kl = KlConfig::new(1, &[64, 128], 1, 2, 8, 28);
    let cfg = vae_wgpu::model::VaeConfig::autoencoder_kl(kl, [1, 28, 28]);
    Checkpoint {
        params: ParamLayout::new(&cfg).init(0),
        cfg,
        optimizer: None,
        progress: Default::default(),
        activation_recorded: true,
    }
    .save_diffusers(&wide)
    .unwrap();
    let huge = dir.path("huge.safetensors");
    let zeros = vec![0u8; 2 * 512 * 512 * 4];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1, 2, 512, 512], &zeros)
            .unwrap();
    std::fs::write(
        &huge,
        safetensors::tensor::serialize([("latents".to_string(), view)], None).unwrap(),
    )
    .unwrap();
    let o = run(&[
        "decode",
        "--model",
        wide.to_str().unwrap(),
        "--latents",
        huge.to_str().unwrap(),
        "--out",
        dec_s,
    ]);
    fails_with(
        &o,
        &["at most", "latents) fit", "max_storage_buffer_binding_size"],
    );
    // A size the blocks cannot halve is refused naming the file.
    image::GrayImage::new(27, 28)
        .save(imgs.join("odd.png"))
        .unwrap();
    let o = run(&[
        "encode", "--model", out_s, "--input", imgs_s, "--out", lat_s,
    ]);
    fails_with(&o, &["odd.png", "divisible"]);

    // Fine-tuning a folder: f16 weights and an unused tensor (a discriminator's, say).
    let pre = dir.path("pretrained");
    std::fs::create_dir_all(&pre).unwrap();
    std::fs::copy(out.join("config.json"), pre.join("config.json")).unwrap();
    let bytes = std::fs::read(out.join("diffusion_pytorch_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let half: Vec<(String, Vec<usize>, Vec<u8>)> = (st.tensors().into_iter())
        .map(|(n, t)| {
            let v: Vec<u8> = (t.data().chunks_exact(4))
                .flat_map(|b| f32_to_f16(f32::from_le_bytes(b.try_into().unwrap())).to_le_bytes())
                .collect();
            (n, t.shape().to_vec(), v)
        })
        .chain([("discriminator.weight".to_string(), vec![2], vec![0u8; 4])])
        .collect();
    let views = half.iter().map(|(n, s, b)| {
        let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F16, s.clone(), b);
        (n.clone(), v.unwrap())
    });
    let f16_bytes = safetensors::tensor::serialize(views, None).unwrap();
    std::fs::write(pre.join("diffusion_pytorch_model.safetensors"), f16_bytes).unwrap();
    let (f16, ignored) = Checkpoint::load_diffusers(&pre).unwrap();
    assert_eq!(ignored, vec!["discriminator.weight".to_string()]);
    // The folder as epoch 2 left it.
    let (folder, _) = Checkpoint::load_diffusers(&out).unwrap();
    for s in layout.specs.iter().filter(|s| s.name != "log_sigma") {
        let (h, f) = (s.read(&f16.params), s.read(&folder.params));
        assert!(
            h.iter()
                .zip(&f)
                .all(|(h, f)| (h - f).abs() <= 1e-3 * f.abs() + 1e-4),
            "{}",
            s.name
        );
    }
    let tuned = dir.path("tuned");
    let pre_s = pre.to_str().unwrap();
    let o = ok(&run_env(
        &train_args(
            data,
            tuned.to_str().unwrap(),
            &[
                "--from-pretrained",
                pre_s,
                "--epochs",
                "1",
                "--batch-size",
                "16",
                // Fine-tuned by the L1 loss: a Laplace whose location is the decoder's output.
                "--likelihood",
                "laplace",
                "--sigma",
                "0.05",
                // and LDM's small KL weight: a folder records no loss, so the flags set it.
                "--beta",
                "1e-6",
            ],
        ),
        &PINNED,
    ));
    assert!(o.contains("fine-tuning"), "{o}");
    assert!(o.contains("laplace (b = 0.05, mean = output)"), "{o}");
    assert!(tuned.join("diffusion_pytorch_model.safetensors").exists());
    let c = Checkpoint::load(&tuned.join("checkpoint.safetensors")).unwrap();
    assert_eq!(
        c.cfg.likelihood,
        vae_wgpu::model::Likelihood::LaplaceIdentity { scale: Some(0.05) }
    );
    assert_eq!(c.cfg.beta, 1e-6);

    // Refused, naming what to change.
    let bad = dir.path("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::copy(
        pre.join("diffusion_pytorch_model.safetensors"),
        bad.join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let mut j = json.clone();
    j["act_fn"] = serde_json::json!("gelu");
    std::fs::write(bad.join("config.json"), j.to_string()).unwrap();
    let bad_s = bad.to_str().unwrap();
    let o = run(&train_args(data, out_s, &["--from-pretrained", bad_s]));
    fails_with(&o, &["act_fn", "config.json", "gelu"]);
    for (flags, needles) in [
        (
            vec!["--arch", "autoencoder-kl", "--hidden", "200"],
            vec!["--hidden", "autoencoder-kl"],
        ),
        (
            vec!["--block-out-channels", "8,16"],
            vec!["--arch autoencoder-kl"],
        ),
        (
            vec!["--arch", "autoencoder-kl", "--likelihood", "bernoulli"],
            vec!["gaussian or laplace"],
        ),
        (
            vec![
                "--arch",
                "autoencoder-kl",
                "--block-out-channels",
                "8,12",
                "--norm-groups",
                "8",
            ],
            vec!["norm_num_groups"],
        ),
        (vec!["--arch", "vq"], vec!["autoencoder-kl"]),
        (
            vec!["--arch", "autoencoder-kl", "--beta", "1e300"],
            vec!["--beta"],
        ),
    ] {
        let mut a = train_args(data, out_s, &["--overwrite"]);
        a.extend(flags);
        fails_with(&run(&a), &needles);
    }
}

/// The first `n` test digits of the IDX files in `data` as PNGs `d0.png`, … in `dir`'s `imgs/`.
fn test_digit_pngs(data: &str, dir: &Dir, n: usize) -> std::path::PathBuf {
    let imgs = dir.path("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    let test =
        vae_wgpu::data::ImageSet::load_idx(Path::new(data), vae_wgpu::data::Split::Test).unwrap();
    for i in 0..n {
        let px = test.images[i * 784..(i + 1) * 784].to_vec();
        let img = image::GrayImage::from_raw(28, 28, px).unwrap();
        img.save(imgs.join(format!("d{i}.png"))).unwrap();
    }
    imgs
}

/// f32 → IEEE half, rounded to nearest; below its normal range (6.1e-5) flushed to 0.
fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    if x == 0.0 || exp <= 0 {
        return sign;
    }
    let mant = b & 0x7f_ffff;
    let rounded = (((exp as u32) << 10) | (mant >> 13)) + ((mant >> 12) & 1);
    sign | rounded.min(0x7bff) as u16
}

// The round trip with diffusers itself, where torch and diffusers import (`VAE_WGPU_TORCH_PYTHON`,
// else `python3`; recorded as skipped elsewhere): a folder that diffusers' `save_pretrained` wrote
// is fine-tuned one epoch, and diffusers loads the run folder strictly (no missing, unexpected or
// mismatched key) and encodes and decodes as the engine's `encode` and `decode` do
// (scripts/diffusers_roundtrip.py: latents within 1e-4 of their largest, pixels within 1 of 255).
#[test]
fn diffusers_loads_the_folders_the_engine_trains() {
    const TEST: &str = "conv_cli::diffusers_loads_the_folders_the_engine_trains";
    let python = std::env::var("VAE_WGPU_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let imports = std::process::Command::new(&python)
        .args(["-c", "import torch, diffusers, safetensors, PIL"])
        .output();
    if !imports.is_ok_and(|o| o.status.success()) {
        common::skip(
            TEST,
            &format!(
                "{python} cannot import torch, diffusers, safetensors and PIL: pip install torch \
                 diffusers safetensors pillow, or name such a python in VAE_WGPU_TORCH_PYTHON"
            ),
        );
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/diffusers_roundtrip.py");
    let py = |args: &[&str]| {
        let o = std::process::Command::new(&python)
            .arg(&script)
            .args(args)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&o.stdout).to_string();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{args:?}:\n{said}\n{err}");
        said
    };
    let dir = Dir::new("diffusers_roundtrip");
    let data = tiny_mnist(&dir, 64, 16);
    let data = data.to_str().unwrap();
    let made = dir.path("made");
    let made_s = made.to_str().unwrap();
    py(&[
        "--make",
        made_s,
        "--in-channels",
        "1",
        "--blocks",
        "8,16",
        "--groups",
        "4",
        "--latent",
        "2",
        "--size",
        "28",
    ]);
    let run_dir = dir.path("run");
    let run_s = run_dir.to_str().unwrap();
    let o = ok(&run_env(
        &train_args(
            data,
            run_s,
            &[
                "--from-pretrained",
                made_s,
                "--epochs",
                "1",
                "--batch-size",
                "16",
            ],
        ),
        &PINNED,
    ));
    assert!(o.contains("fine-tuning"), "{o}");
    let imgs = test_digit_pngs(data, &dir, 3);
    let (lat, dec) = (dir.path("lat.safetensors"), dir.path("dec"));
    let (imgs_s, lat_s, dec_s) = (
        imgs.to_str().unwrap(),
        lat.to_str().unwrap(),
        dec.to_str().unwrap(),
    );
    ok(&run(&[
        "encode", "--model", run_s, "--input", imgs_s, "--out", lat_s,
    ]));
    ok(&run(&[
        "decode",
        "--model",
        run_s,
        "--latents",
        lat_s,
        "--out",
        dec_s,
    ]));
    let said = py(&[run_s, imgs_s, lat_s, dec_s]);
    assert!(
        said.contains("no missing, unexpected or mismatched keys"),
        "{said}"
    );
    eprintln!("{said}");
}
