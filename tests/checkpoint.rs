//! Checkpoints: a save/load round trip is bit-for-bit; resuming after N steps (mid-epoch, through a
//! file) reproduces training straight through bit-for-bit; a state_dict with PyTorch's names written
//! here loads; missing, misshapen, mistyped and truncated files give clear errors.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::ctx;
use safetensors::tensor::{Dtype, TensorView};
use vae_wgpu::data::{ImageSet, Split};
use vae_wgpu::model::{Checkpoint, EpochEnd, ParamLayout, TrainSettings, Trainer, VaeConfig};

fn subset(n: usize) -> ImageSet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let mut m = ImageSet::load_idx(&dir, Split::Train).unwrap();
    m.images.truncate(n * m.dim());
    m.labels.truncate(n);
    m.count = n;
    m
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vae-wgpu-ckpt-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn settings() -> TrainSettings {
    TrainSettings {
        seed: 5,
        log_every: 0,
        ..TrainSettings::default()
    }
}

/// Train until `stop_after` steps in total have run (or `epochs` epochs complete).
fn train(t: &mut Trainer, epochs: usize, stop_after: Option<usize>) -> Vec<f64> {
    let ctx = ctx();
    let mut losses = Vec::new();
    while t.epoch < epochs {
        let steps_done = t.vae.train_steps as usize;
        let mut n = steps_done;
        let mut stop = || {
            let s = stop_after.is_some_and(|k| n >= k);
            n += 1;
            s
        };
        match t.train_epoch(ctx, &mut |_| {}, &mut stop).unwrap() {
            EpochEnd::Completed(s) => losses.push(s.loss),
            EpochEnd::Stopped { .. } => return losses,
        }
    }
    losses
}

#[test]
fn round_trip_is_bit_for_bit_and_resume_equals_straight_through() {
    let ctx = ctx();
    let data = subset(1000); // 7 batches of 128 and a last one of 104
    let cfg = VaeConfig::default();

    // Straight through: 2 epochs.
    let mut a = Trainer::new(ctx, cfg.clone(), settings(), &data).unwrap();
    let straight = train(&mut a, 2, None);
    let a_params = ctx.read_f32(&a.vae.params).unwrap();

    // Stopped after 11 steps (mid-epoch 2), saved, loaded, resumed.
    let mut b = Trainer::new(ctx, cfg.clone(), settings(), &data).unwrap();
    let first = train(&mut b, 2, Some(11));
    assert_eq!(first.len(), 1, "epoch 1 completes, epoch 2 stops mid-way");
    assert_eq!((b.epoch, b.step_in_epoch, b.vae.train_steps), (1, 3, 11));
    let ckpt = b.checkpoint(ctx).unwrap();
    let dir = tmp("resume");
    let path = dir.join("checkpoint.safetensors");
    ckpt.save(&path).unwrap();
    let loaded = Checkpoint::load(&path).unwrap();
    assert_eq!(
        loaded, ckpt,
        "save/load must round-trip every tensor and field exactly"
    );
    for (x, y) in loaded.params.iter().zip(&ckpt.params) {
        assert_eq!(x.to_bits(), y.to_bits());
    }
    drop(b);
    let mut c = Trainer::resume(ctx, &loaded, settings(), &data).unwrap();
    let rest = train(&mut c, 2, None);
    let c_params = ctx.read_f32(&c.vae.params).unwrap();
    assert_eq!(first[0], straight[0], "epoch 1 loss");
    assert_eq!(
        rest,
        vec![straight[1]],
        "epoch 2's average, half before and half after the resume"
    );
    assert!(
        a_params
            .iter()
            .zip(&c_params)
            .all(|(x, y)| x.to_bits() == y.to_bits()),
        "resumed training must give the same weights bit for bit"
    );
    // The weights-only file holds the same model tensors and nothing else.
    let sd = dir.join("model.safetensors");
    ckpt.save_state_dict(&sd).unwrap();
    let w = Checkpoint::load(&sd).unwrap();
    assert_eq!(w.params, ckpt.params);
    assert!(w.optimizer.is_none());
    let bytes = std::fs::read(&sd).unwrap();
    let mut names = safetensors::SafeTensors::deserialize(&bytes)
        .unwrap()
        .names()
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    names.sort();
    let mut want: Vec<String> = ParamLayout::new(&cfg)
        .specs
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    want.sort();
    assert_eq!(
        names, want,
        "model.safetensors must hold exactly the state_dict keys"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A state_dict file as PyTorch would write it: names and shapes of `nn.Linear`, no metadata.
fn torch_style_file(
    cfg: &VaeConfig,
    arena: &[f32],
    skip: Option<&str>,
    reshape: Option<&str>,
    as_f64: Option<&str>,
) -> Vec<u8> {
    let layout = ParamLayout::new(cfg);
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for s in &layout.specs {
        if skip == Some(s.name.as_str()) {
            continue;
        }
        let vals = &arena[s.range()];
        let mut shape = s.shape.clone();
        if reshape == Some(s.name.as_str()) {
            shape = vec![s.len()];
        }
        if as_f64 == Some(s.name.as_str()) {
            let b: Vec<u8> = vals
                .iter()
                .flat_map(|v| (*v as f64).to_le_bytes())
                .collect();
            owned.push((s.name.to_string(), Dtype::F64, shape, b));
        } else {
            owned.push((
                s.name.to_string(),
                Dtype::F32,
                shape,
                bytemuck::cast_slice(vals).to_vec(),
            ));
        }
    }
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::tensor::serialize(views, None::<HashMap<String, String>>).unwrap()
}

#[test]
fn pytorch_named_files_load_and_bad_files_are_clear_errors() {
    let cfg = VaeConfig {
        samples: 1,
        ..VaeConfig::mirrored(784, &[64], 3)
    };
    let arena = ParamLayout::new(&cfg).init(9);
    let p = Path::new("state.safetensors");
    let ok = Checkpoint::from_bytes(&torch_style_file(&cfg, &arena, None, None, None), p).unwrap();
    assert_eq!(ok.cfg, cfg, "sizes inferred from the shapes");
    assert_eq!(ok.params, arena);
    assert!(ok.optimizer.is_none());

    let err = |bytes: &[u8]| Checkpoint::from_bytes(bytes, p).unwrap_err().to_string();
    let e = err(&torch_style_file(
        &cfg,
        &arena,
        Some("dec_mu.bias"),
        None,
        None,
    ));
    assert!(
        e.contains("missing tensor 'dec_mu.bias'") && e.contains("state.safetensors"),
        "{e}"
    );
    let e = err(&torch_style_file(
        &cfg,
        &arena,
        None,
        Some("enc_logvar.weight"),
        None,
    ));
    assert!(
        e.contains("enc_logvar.weight") && e.contains("[192]") && e.contains("[3, 64]"),
        "{e}"
    );
    let e = err(&torch_style_file(
        &cfg,
        &arena,
        None,
        None,
        Some("linear_dec.weight"),
    ));
    assert!(e.contains("linear_dec.weight") && e.contains("F64"), "{e}");
    let good = torch_style_file(&cfg, &arena, None, None, None);
    let e = err(&good[..good.len() / 2]);
    assert!(e.contains("not a readable safetensors file"), "{e}");
    let e = err(b"PK\x03\x04 definitely a zip file");
    assert!(e.contains("not a readable safetensors file"), "{e}");
    let e = Checkpoint::load(Path::new("/nonexistent/ckpt.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/ckpt.safetensors"), "{e}");
}

#[test]
fn atomic_write_replaces_and_leaves_no_temporary() {
    let dir = tmp("atomic");
    let path = dir.join("c.safetensors");
    vae_wgpu::files::write_atomic(&path, b"first").unwrap();
    vae_wgpu::files::write_atomic(&path, b"second").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"second");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != "c.safetensors")
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    // A write into a directory that does not exist fails cleanly and leaves the old file alone.
    assert!(vae_wgpu::files::write_atomic(&dir.join("no/such/dir/c"), b"x").is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A PyTorch module built with one-layer `nn.Sequential`s names the notebook's tensors
/// `encoder.0.*` / `decoder.0.*`: such a state_dict loads as the notebook's model, and is written
/// back under the notebook's names. A file deeper than the limit reports its real depth.
#[test]
fn one_layer_sequential_names_load_and_depth_errors_count_every_layer() {
    let cfg = VaeConfig::mirrored(12, &[7], 3);
    let layout = ParamLayout::new(&cfg);
    let arena = layout.init(5);
    let renamed = |n: &str| {
        n.replace("linear_enc.", "encoder.0.")
            .replace("linear_dec.", "decoder.0.")
    };
    let names: Vec<String> = layout.specs.iter().map(|s| renamed(&s.name)).collect();
    let views: Vec<(String, TensorView<'_>)> = layout
        .specs
        .iter()
        .zip(&names)
        .map(|(s, n)| {
            let data: &[u8] = bytemuck::cast_slice(&arena[s.range()]);
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.shape.clone(), data).unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::tensor::serialize(views, None).unwrap();
    let c = Checkpoint::from_bytes(&bytes, Path::new("seq.safetensors")).unwrap();
    assert_eq!(c.cfg, cfg);
    assert_eq!(c.params, arena);
    assert!(!c.activation_recorded);

    // 20 hidden layers: refused, and the message says 20.
    let mut views = Vec::new();
    let w = vec![0f32; 16];
    for i in 0..20 {
        let data: &[u8] = bytemuck::cast_slice(&w);
        views.push((
            format!("encoder.{}.weight", 2 * i),
            TensorView::new(Dtype::F32, vec![4, 4], data).unwrap(),
        ));
    }
    let data: &[u8] = bytemuck::cast_slice(&w);
    views.push((
        "enc_mu.weight".to_string(),
        TensorView::new(Dtype::F32, vec![4, 4], data).unwrap(),
    ));
    views.push((
        "linear_dec.weight".to_string(),
        TensorView::new(Dtype::F32, vec![4, 4], data).unwrap(),
    ));
    let bytes = safetensors::tensor::serialize(views, None).unwrap();
    let e = Checkpoint::from_bytes(&bytes, Path::new("deep.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("20 layers given"), "{e}");
}

/// `bytes` (a safetensors file) with its metadata changed by `edit`.
fn with_metadata(
    bytes: &[u8],
    edit: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>),
) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let meta = header
        .entry("__metadata__")
        .or_insert_with(|| serde_json::json!({}));
    edit(meta.as_object_mut().unwrap());
    let mut h = serde_json::to_vec(&header).unwrap();
    h.resize(h.len().next_multiple_of(8), b' ');
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(&bytes[8 + n..]);
    out
}

// Metadata that contradicts the tensors is refused, naming what disagrees (hostile class "silent
// wrong results" b): a fixed σ or another likelihood beside a learned `log_sigma` tensor, and a
// conv file's image sides that the dense layers' widths cannot take. Each file is first checked
// to load unedited.
#[test]
fn metadata_that_contradicts_the_tensors_is_refused() {
    let p = Path::new("edited.safetensors");
    let save = |cfg: &VaeConfig| {
        let layout = ParamLayout::new(cfg);
        let c = Checkpoint {
            cfg: cfg.clone(),
            params: layout.init(3),
            optimizer: None,
            progress: Default::default(),
            activation_recorded: true,
        };
        let path = tmp("contradiction").join("state.safetensors");
        c.save_state_dict(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(Checkpoint::from_bytes(&bytes, p).unwrap().cfg, *cfg);
        bytes
    };
    let refused = |bytes: Vec<u8>, needle: &str| {
        let e = Checkpoint::from_bytes(&bytes, p).unwrap_err().to_string();
        assert!(
            e.contains(needle) && e.contains("edited.safetensors"),
            "{e}"
        );
    };
    let gaussian = save(&VaeConfig {
        likelihood: vae_wgpu::model::Likelihood::Gaussian { sigma: None },
        ..VaeConfig::mirrored(784, &[16], 2)
    });
    refused(
        with_metadata(&gaussian, &|m| {
            m.insert("sigma".into(), "0.1".into());
        }),
        "holds a learned σ (tensor 'log_sigma')",
    );
    refused(
        with_metadata(&gaussian, &|m| {
            m.insert("likelihood".into(), "bernoulli".into());
        }),
        "the likelihood is bernoulli",
    );
    let conv = save(&VaeConfig::convolutional([1, 28, 56], &[4], &[], 2));
    refused(
        with_metadata(&conv, &|m| {
            m.insert("image_cols".into(), "28".into());
        }),
        "'image_rows' = 28, 'image_cols' = 28 contradict the tensors",
    );
}

// Hostile class "silent wrong results" (c): a run with a KL warm-up of 2 epochs at batch 64,
// resumed at batch 128, keeps the ramp the run started (2 × 4 steps), not one recomputed from the
// new steps per epoch (2 × 2, which would give the full KL weight from the resumed run's first
// step); the schedule's KL weight at the next step is the original ramp's.
#[test]
fn a_kl_warmup_resumed_at_another_batch_size_keeps_its_ramp() {
    let ctx = ctx();
    let data = subset(256);
    let cfg = VaeConfig {
        kl_warmup: 2.0,
        ..VaeConfig::mirrored(784, &[32], 4)
    };
    let s = TrainSettings {
        batch_size: 64,
        ..settings()
    };
    let mut t = Trainer::new(ctx, cfg, s.clone(), &data).unwrap();
    assert_eq!(t.vae.kl.warmup_steps, 8.0);
    train(&mut t, 1, None);
    let path = tmp("warmup").join("checkpoint.safetensors");
    t.checkpoint(ctx).unwrap().save(&path).unwrap();
    let c = Checkpoint::load(&path).unwrap();
    assert_eq!(c.progress.kl_warmup_steps, Some(8.0));
    let s = TrainSettings {
        batch_size: 128,
        ..s
    };
    let r = Trainer::resume(ctx, &c, s, &data).unwrap();
    assert_eq!(r.vae.kl.warmup_steps, 8.0, "the ramp the run started");
    // Step 5 of 8 on the ramp: half the weight, not all of it.
    assert_eq!(r.vae.schedule(&[]).kl_weight(5), 0.5);
}
