//! Evaluation on the GPU against the CPU reference on a tiny model, and the pictures: written, the
//! right size, not blank.

mod common;

use std::path::Path;

use common::{assert_close, ctx};
use vae_wgpu::cpu::model::CpuVae;
use vae_wgpu::cpu::ops;
use vae_wgpu::data::{ImageSet, Split};
use vae_wgpu::model::eval::{evaluate, evaluate_pass};
use vae_wgpu::model::{GpuDataset, GpuVae, Likelihood, ParamLayout, VaeConfig};
use vae_wgpu::viz::pictures::{PictureSet, write_pictures};
use vae_wgpu::viz::{LossHistory, tsne_2d};

fn test_subset(n: usize) -> ImageSet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let mut m = ImageSet::load_idx(&dir, Split::Test).unwrap();
    m.images.truncate(n * m.dim());
    m.labels.truncate(n);
    m.count = n;
    m
}

/// One batch holds the whole subset, so the GPU's noise (read back after the pass) is exactly the
/// noise of every image; the CPU then recomputes -ELBO and the IWAE bound from the same eps.
/// Tolerance: sums of ~L·B·D f32 terms, 1e-5 relative (see the kernel and model parity tests).
#[test]
fn evaluation_matches_cpu_reference() {
    let ctx = ctx();
    let n = 40;
    let test = test_subset(n);
    let data = GpuDataset::upload(ctx, "test", &test).unwrap();
    let x: Vec<f64> = (0..n)
        .flat_map(|i| test.image_f32(i))
        .map(|v| v as f64)
        .collect();
    // Each likelihood: the per-row -log p of the IWAE bound is the likelihood's (a Gaussian's read
    // at its learned log σ, set away from its initial 0).
    for (samples, likelihood) in [
        (1, Likelihood::Bernoulli),
        (7, Likelihood::Bernoulli),
        (3, Likelihood::ContinuousBernoulli),
        (3, Likelihood::Gaussian { sigma: None }),
    ] {
        let cfg = VaeConfig {
            samples,
            likelihood,
            ..VaeConfig::mirrored(784, &[32], 4)
        };
        let layout = ParamLayout::new(&cfg);
        let mut params = layout.init(21);
        let log_sigma = -0.8;
        if let Some(o) = layout.log_sigma {
            params[o] = log_sigma as f32;
        }
        let mut vae = GpuVae::from_params(ctx, cfg.clone(), n, 3, &params).unwrap();
        let r = evaluate_pass(ctx, &mut vae, &data, true, None).unwrap();
        let a = vae.acts.rows(n, samples).unwrap();
        let eps: Vec<f64> = ctx
            .read_f32(&a.eps)
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect();
        let cpu = CpuVae::new(cfg.clone(), Default::default(), &params);
        let t = cpu.forward_backward(&x, &eps);
        let want_elbo = t.loss / n as f64;
        // Relative to the terms' size: a density's -log p may sum to near 0.
        let tol = |want: f64| 1e-5 * (want.abs() + 784.0);
        assert_close(
            &format!("-ELBO L={samples} {likelihood}"),
            &[r.neg_elbo as f32],
            &[want_elbo],
            |_| tol(want_elbo),
        );
        let rowloss = ops::recon_rows(likelihood, &t.logits, &x, 784, log_sigma);
        let nll = ops::iwae_estimate(&rowloss, &t.z, &eps, &t.logvar, n, cfg.latent);
        let want_iwae = nll.iter().sum::<f64>() / n as f64;
        let got = r.iwae_nll.unwrap();
        assert_close(
            &format!("IWAE k={samples} {likelihood}"),
            &[got as f32],
            &[want_iwae],
            |_| tol(want_iwae),
        );
        if samples == 1 {
            // With one sample the bound is the single-sample -ELBO of the same draw.
            assert!(
                (got - r.neg_elbo).abs() < 1e-3 * got.abs(),
                "k=1 IWAE {got} vs -ELBO {}",
                r.neg_elbo
            );
        } else {
            assert!(
                got <= r.neg_elbo + 1e-3,
                "the k-sample bound ({got}) is at least as tight as -ELBO ({})",
                r.neg_elbo
            );
        }
    }
    common::assert_no_validation_messages("evaluation_matches_cpu_reference");
}

fn decode_png(path: &Path) -> (u32, u32, png::ColorType, Vec<u8>) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info.width, info.height, info.color_type, buf)
}

fn spread(px: &[u8]) -> f64 {
    let mean = px.iter().map(|&v| v as f64).sum::<f64>() / px.len() as f64;
    (px.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / px.len() as f64).sqrt()
}

// A stop (Ctrl-C) as evaluate's progress callback reports it: one that arrives at the end of a
// pass leaves that pass whole and stops before the next one, saying so with the passes done and
// their numbers (it said "stopped after 40 of 40 images"); one inside a pass names the pass and
// how far it went.
#[test]
fn a_stopped_evaluation_says_which_pass_and_what_was_done() {
    let ctx = ctx();
    let n = 40;
    let data = GpuDataset::upload(ctx, "test", &test_subset(n)).unwrap();
    let cfg = VaeConfig::mirrored(784, &[32], 4);
    let params = ParamLayout::new(&cfg).init(5);
    let run = |stop_at: &dyn Fn(&str, usize) -> bool| {
        let mut stopped = false;
        let mut progress = |name: &str, done: usize, _all: usize| {
            stopped |= stop_at(name, done);
            !stopped
        };
        match evaluate(ctx, &cfg, &params, &data, 3, 1000, 0, &mut progress) {
            Err(vae_wgpu::Error::Interrupted(what)) => what,
            other => panic!("not interrupted: {:?}", other.map(|r| r.images)),
        }
    };
    let at_end = run(&|name, done| name == "-ELBO, 1 sample" && done == n);
    assert!(
        at_end.starts_with(
            "evaluation stopped before the '-ELBO, N samples' pass (done: -ELBO, 1 sample "
        ),
        "{at_end}"
    );
    // The IWAE pass with k = 1000 takes 12 images a step (`eval_batch`): a stop after its first
    // step is inside it.
    let inside = run(&|name, done| name == "IWAE bound" && done > 0 && done < n);
    assert!(
        inside.starts_with("evaluation stopped in the 'IWAE bound' pass after 12 of 40 images (done: -ELBO, 1 sample "),
        "{inside}"
    );
    assert!(inside.contains(", -ELBO, N samples "), "{inside}");
}

#[test]
fn pictures_are_written_sized_and_not_blank() {
    let ctx = ctx();
    let test = test_subset(300);
    let cfg = VaeConfig {
        samples: 1,
        ..VaeConfig::mirrored(784, &[64], 2)
    };
    let params = ParamLayout::new(&cfg).init(4);
    let dir = std::env::temp_dir().join(format!("vae-wgpu-pics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hist = LossHistory {
        epochs: vec![(1, 150.0, Some(130.0)), (2, 125.0, Some(121.0))],
        steps: vec![(0.0, 543.0), (0.5, 160.0), (1.5, 126.0)],
    };
    let set = PictureSet {
        out_dir: &dir,
        suffix: "",
        tsne: true,
        loss: Some(&hist),
    };
    let files = write_pictures(ctx, &cfg, &params, &test, 1, &set).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "reconstructions.png",
            "samples.png",
            "manifold.png",
            "latent_tsne.png",
            "loss.png"
        ]
    );
    // Grid sizes: cells of (28+1)·scale plus one gutter.
    let label = vae_wgpu::viz::LABEL_WIDTH as usize;
    let expect = [
        ((10 * 29 + 1) * 4 + label, (2 * 29 + 1) * 4),
        ((10 * 29 + 1) * 2, (10 * 29 + 1) * 2),
        (20 * 29 + 1, 20 * 29 + 1),
        (800, 720),
        (900, 560),
    ];
    for (path, (w, h)) in files.iter().zip(expect) {
        let (pw, ph, _, px) = decode_png(path);
        assert_eq!((pw, ph), (w as u32, h as u32), "{}", path.display());
        assert!(
            spread(&px) > 5.0,
            "{} looks blank (pixel std {:.2})",
            path.display(),
            spread(&px)
        );
    }
    // The top row of the reconstructions is the test images themselves.
    let (w, _, _, px) = decode_png(&files[0]);
    let img0 = test.image_f32(0);
    // Centre pixel of the first cell, scale 4, right of the label column.
    let (y, x) = (4 + 14 * 4, label + 4 + 14 * 4);
    assert_eq!(
        px[y * w as usize + x],
        (img0[14 * 28 + 14] * 255.0).round() as u8
    );
    let _ = std::fs::remove_dir_all(&dir);
    common::assert_no_validation_messages("pictures_are_written_sized_and_not_blank");
}

#[test]
fn tsne_separates_well_separated_clusters() {
    // Two tight clusters far apart in 5-D must stay apart in 2-D.
    let mut codes = Vec::new();
    for i in 0..60 {
        let base = if i < 30 { 0.0 } else { 50.0 };
        codes.extend((0..5).map(|d| base + ((i * 7 + d * 3) % 10) as f32 * 0.01));
    }
    let p = tsne_2d(&codes, 5, 0).unwrap();
    let centre = |r: std::ops::Range<usize>| {
        let n = r.len() as f64;
        let (sx, sy) = p[r].iter().fold((0.0, 0.0), |a, q| (a.0 + q.0, a.1 + q.1));
        (sx / n, sy / n)
    };
    let (a, b) = (centre(0..30), centre(30..60));
    let spread_a = p[0..30]
        .iter()
        .map(|q| ((q.0 - a.0).powi(2) + (q.1 - a.1).powi(2)).sqrt())
        .fold(0.0, f64::max);
    let gap = ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt();
    assert!(
        gap > 2.0 * spread_a,
        "clusters overlap: gap {gap:.2}, radius {spread_a:.2}"
    );
}
