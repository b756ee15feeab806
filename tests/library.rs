//! The front door (`src/vae.rs`, `vae_wgpu::prelude`): a model made from a config trains as the
//! programs' trainer trains it, encodes and decodes as the f64 twin computes, saves and loads
//! back bit for bit, stops on its cancellation token, and refuses bad input by name.

#[macro_use]
mod common;

use vae_wgpu::cpu::model::CpuVae;
use vae_wgpu::data::{ImageSet, Split};
use vae_wgpu::model::TrainSettings;
use vae_wgpu::prelude::*;

fn mnist(n: usize) -> ImageSet {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let train = ImageSet::load_idx(&dir, Split::Train).expect("vendored MNIST");
    train.subset(&(0..n).collect::<Vec<_>>())
}

fn open() -> Device {
    Device::new(&common::ctx_options()).unwrap()
}

#[test]
fn the_front_door_trains_as_the_programs_trainer_does() {
    let device = open();
    let train = mnist(256);
    let cfg = VaeConfig::mlp(784, &[32], 4);
    let settings = TrainSettings {
        batch_size: 64,
        seed: 3,
        ..TrainSettings::default()
    };
    let mut theirs = Trainer::new(&device, cfg.clone(), settings.clone(), &train).unwrap();
    let mut ours = Trainer::fit(
        &device,
        cfg.init(3).unwrap(),
        settings.optimizer,
        64,
        &train,
    )
    .unwrap();
    let stats: Vec<EpochStats> = ours.epochs(&device, 2).map(Result::unwrap).collect();
    assert_eq!(stats.len(), 2);
    for s in &stats {
        let t = match theirs
            .train_epoch(&device, &mut |_| {}, &mut || false)
            .unwrap()
        {
            vae_wgpu::model::EpochEnd::Completed(t) => t,
            e => panic!("{e:?}"),
        };
        assert_eq!((s.epoch, s.loss.to_bits()), (t.epoch, t.loss.to_bits()));
    }
    assert!(stats[1].loss < stats[0].loss, "{stats:?}");
    // The model handed back is the trainer's.
    let vae = ours.model(&device).unwrap();
    assert_eq!(
        vae.params(),
        &device.read_f32(&ours.vae.params).unwrap()[..]
    );
}

#[test]
fn encode_and_decode_match_the_f64_twin_and_a_saved_model_loads_back() {
    let device = open();
    let images = mnist(300);
    let vae = VaeConfig::mlp(784, &[40], 6).init(11).unwrap();
    // 300 images: two passes (256 + 44).
    let x = images.pixels_f32(0..300);
    let z = vae.encode(&device, &x).unwrap();
    assert_eq!((z.len(), z.latent), (300, 6));
    let decoded = vae.decode(&device, &z.mean).unwrap();
    assert_eq!(decoded.len(), 300 * 784);
    // The twin with ε = 0: its z is the mean, its logits the decoder's at the mean.
    let twin = CpuVae::new(
        vae.config().clone(),
        OptimizerConfig::default(),
        vae.params(),
    );
    for (i, chunk) in [(0, 0..3), (1, 297..300)] {
        let x64: Vec<f64> = images
            .pixels_f32(chunk.clone())
            .iter()
            .map(|&v| v as f64)
            .collect();
        let t = twin.forward_backward(&x64, &[0.0; 3 * 6]);
        let rows = chunk.start * 6..chunk.end * 6;
        common::assert_close(&format!("mean {i}"), &z.mean[rows.clone()], &t.mu, |_| 1e-4);
        common::assert_close(&format!("logvar {i}"), &z.logvar[rows], &t.logvar, |_| 1e-4);
        let px: Vec<f64> = t.logits.iter().map(|l| 1.0 / (1.0 + (-l).exp())).collect();
        let got = &decoded[chunk.start * 784..chunk.end * 784];
        common::assert_close(&format!("decoded {i}"), got, &px, |_| 1e-4);
    }
    // Samples: mean + σ·ε, the same for the same seed.
    assert_eq!(z.sample(5), z.sample(5));
    assert_ne!(z.sample(5), z.mean);
    // Saved and loaded: the same weights and config, so the same encoding.
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("library-vae.safetensors");
    vae.save(&path).unwrap();
    let back = Vae::load(&path).unwrap();
    assert_eq!(back.params(), vae.params());
    assert_eq!(back.config(), vae.config());
    assert_eq!(back.encode(&device, &x[..784]).unwrap().mean, z.mean[..6]);
}

#[test]
fn a_raised_token_stops_training_and_bad_input_is_named() {
    let cancel = Cancel::new();
    let device = Device::new(&ContextOptions {
        cancel: cancel.clone(),
        ..common::ctx_options()
    })
    .unwrap();
    let train = mnist(128);
    let vae = VaeConfig::mlp(784, &[16], 2).init(0).unwrap();
    let mut trainer = Trainer::fit(&device, vae, OptimizerConfig::default(), 32, &train).unwrap();
    cancel.cancel();
    let ends: Vec<_> = trainer.epochs(&device, 3).collect();
    assert_eq!(ends.len(), 1, "one item, the stop");
    assert!(
        matches!(&ends[0], Err(Error::Interrupted(why)) if why.contains("step 0 of epoch 1")),
        "{ends:?}"
    );
    // Another context's token is its own: this one trains.
    let other = open();
    let vae = trainer.model(&device).unwrap();
    let mut t = Trainer::fit(&other, vae.clone(), OptimizerConfig::default(), 32, &train).unwrap();
    assert!(t.epochs(&other, 1).all(|s| s.is_ok()));

    let e = vae.encode(&other, &[0.5; 100]).unwrap_err().to_string();
    assert!(e.contains("rows of 784 images; got 100 values"), "{e}");
    let e = vae.decode(&other, &[]).unwrap_err().to_string();
    assert!(e.contains("rows of 2 latent values; got 0"), "{e}");
    let e = VaeConfig::mlp(784, &[16], 0)
        .init(0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("latent"), "{e}");
    let e = Trainer::fit(&other, vae, OptimizerConfig::default(), 1000, &train)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("batch size 1000 is larger than the training set"),
        "{e}"
    );
}
