//! The matmul autotune: a choice is timed once, written to the cache file, and read back by later
//! contexts (so runs repeat bit for bit); pinning skips it; a bad cache file or directory never
//! stops a run.

mod common;

use std::path::PathBuf;

use vae_wgpu::gpu::{ContextOptions, GpuContext};
use vae_wgpu::kernels::matmul::MatmulVariant;
use vae_wgpu::kernels::matmul::{self, Problem, variant_for};
use vae_wgpu::ops::Layout;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vae-wgpu-autotune-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A context with its own cache directory; `matmul` overrides `VAE_WGPU_MATMUL` either way.
fn context(cache_dir: PathBuf, matmul: Option<MatmulVariant>) -> GpuContext {
    let opts = ContextOptions {
        matmul: matmul.map(|v| v.to_string()),
        cache_dir: Some(cache_dir),
        ..ContextOptions::from_env().unwrap()
    };
    GpuContext::new(&opts).unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"))
}

fn problem(layout: Layout, m: usize, n: usize, k: usize, row_sums: bool) -> Problem {
    Problem {
        row_sums,
        ..Problem::bare(layout, m, n, k)
    }
}

fn cache_text(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("matmul-autotune.tsv")).unwrap_or_default()
}

#[test]
fn a_tuned_choice_is_written_once_and_read_back_by_later_contexts() {
    let dir = temp_dir("reuse");
    let ctx = context(dir.clone(), None);
    let v = variant_for(&ctx, problem(Layout::NT, 64, 48, 36, false)).unwrap();
    let text = cache_text(&dir);
    let line = text
        .lines()
        .find(|l| l.contains("\tNT 64x48x36\t"))
        .unwrap_or_else(|| panic!("no cache line for the tuned problem in:\n{text}"));
    // key, problem, the choice, and the timings it was made from (the chosen one among them).
    let fields: Vec<&str> = line.split('\t').collect();
    assert_eq!(fields.len(), 4, "{line}");
    assert_eq!(fields[2], v.to_string(), "{line}");
    assert!(
        fields[3].contains(&format!("{v}=")) && fields[3].ends_with("us"),
        "{line}"
    );
    assert!(line.contains(&ctx.adapter.name), "{line}");
    // The same context asks again: no second line.
    assert_eq!(
        variant_for(&ctx, problem(Layout::NT, 64, 48, 36, false)).unwrap(),
        v
    );
    assert_eq!(cache_text(&dir).matches("NT 64x48x36").count(), 1);

    // Rewrite the recorded choice: a new context must take the file's word, not time again.
    let other = if v == MatmulVariant::TILED {
        MatmulVariant::Direct
    } else {
        MatmulVariant::TILED
    };
    let edited = text.replace(
        line,
        &line.replace(&format!("\t{v}\t"), &format!("\t{other}\t")),
    );
    std::fs::write(dir.join("matmul-autotune.tsv"), edited).unwrap();
    let ctx2 = context(dir.clone(), None);
    assert_eq!(
        variant_for(&ctx2, problem(Layout::NT, 64, 48, 36, false)).unwrap(),
        other
    );
    assert!(
        matmul::summary(&ctx2).contains("autotuned")
            && matmul::summary(&ctx2).contains("1 products"),
        "{}",
        matmul::summary(&ctx2)
    );

    // --retune times the problem again and replaces its line (one line, the new choice).
    let ctx3 = GpuContext::new(&ContextOptions {
        retune: true,
        cache_dir: Some(dir.clone()),
        matmul: None,
        ..ContextOptions::from_env().unwrap()
    })
    .unwrap();
    let v3 = variant_for(&ctx3, problem(Layout::NT, 64, 48, 36, false)).unwrap();
    let text = cache_text(&dir);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\tNT 64x48x36\t"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(
        lines[0].split('\t').nth(2),
        Some(v3.to_string().as_str()),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_pinned_variant_is_used_without_tuning() {
    let dir = temp_dir("pinned");
    let ctx = context(dir.clone(), Some(MatmulVariant::TILED));
    assert_eq!(
        variant_for(&ctx, problem(Layout::TN, 40, 20, 12, true)).unwrap(),
        MatmulVariant::TILED
    );
    assert!(
        cache_text(&dir).is_empty(),
        "pinning must not write the cache"
    );
    assert!(matmul::summary(&ctx).contains("pinned"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn foreign_and_malformed_cache_lines_are_ignored_and_kept() {
    let dir = temp_dir("foreign");
    let junk = "not a cache line\nsome other gpu | Vulkan | x | kernels 0\tNN 32x32x32\ttiled\n\u{0}\u{1}\n";
    std::fs::write(dir.join("matmul-autotune.tsv"), junk).unwrap();
    let ctx = context(dir.clone(), None);
    variant_for(&ctx, problem(Layout::NN, 32, 32, 32, false)).unwrap();
    let text = cache_text(&dir);
    assert!(text.contains("some other gpu"), "{text}");
    let ours = text
        .lines()
        .filter(|l| l.contains(&ctx.adapter.name) && l.contains("\tNN 32x32x32\t"))
        .count();
    assert_eq!(ours, 1, "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unwritable_cache_directory_does_not_stop_a_run() {
    let dir = temp_dir("unwritable");
    // A directory "inside" a regular file can never be created.
    let file = dir.join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let ctx = context(file.join("cache"), None);
    let v = variant_for(&ctx, problem(Layout::NT, 16, 16, 16, false)).unwrap();
    assert_eq!(
        variant_for(&ctx, problem(Layout::NT, 16, 16, 16, false)).unwrap(),
        v
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// An exported plan binds buffers only: on a context that records its buffers, a texture-fed
/// choice (pinned matmul kernels, Adam's recorded read path) is planned as its storage twin, in
/// every dispatch and every candidate — the logits product with its fused BCE included, which
/// is planned apart from the other products.
#[test]
fn a_recording_context_never_plans_texture_reads() {
    use vae_wgpu::model::{GpuVae, VaeConfig};

    let dir = temp_dir("recording");
    let probe = context(dir.clone(), Some(MatmulVariant::Direct));
    // Where subgroups are usable, pin the texture-fed subgroup kernels; else plain autotuning.
    let pin = matmul::select::subgroups_usable(&probe).then_some(MatmulVariant::SubgroupTexture);
    drop(probe);
    let opts = ContextOptions {
        matmul: pin.map(|v| v.to_string()),
        cache_dir: Some(dir.clone()),
        record_buffers: true,
        ..ContextOptions::from_env().unwrap()
    };
    let ctx = GpuContext::new(&opts).unwrap();
    let vae = GpuVae::new(&ctx, VaeConfig::default(), 128, 0).unwrap();
    ctx.tune_store.record(
        &format!("adam reads, {} parameters", vae.layout.len),
        "texture",
        "",
    );
    let g = common::plan_train_step(&ctx, &vae);
    let mut entries: Vec<&str> = Vec::new();
    for d in g.dispatches() {
        entries.push(d.desc.entry);
        entries.extend(d.candidates.iter().map(|c| c.desc.entry));
        assert!(
            d.candidates
                .iter()
                .all(|c| c.variant != MatmulVariant::SubgroupTexture),
            "{}: a texture-fed candidate in an exported plan",
            d.desc.entry
        );
    }
    assert!(
        entries.iter().all(|e| !e.ends_with("_tex")),
        "texture reads planned on a recording context: {entries:?}"
    );
    assert!(entries.contains(&"adam_step"));
    if pin.is_some() {
        // The pinned kernels did run, as their storage twins.
        assert!(
            entries.iter().any(|e| e.starts_with("matmul_sg_")),
            "{entries:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_key_holds_the_epilogue_and_the_rows_are_bucketed() {
    use vae_wgpu::kernels::matmul::EpilogueKind;
    let dir = temp_dir("epilogue");
    let ctx = context(dir.clone(), None);
    // A forward product with its bias and ReLU, and a logits product with the fused BCE, are
    // timed as they run: their keys say so.
    let forward = Problem {
        epilogue: EpilogueKind {
            bias: true,
            act: vae_wgpu::ops::Act::Relu,
            ..EpilogueKind::NONE
        },
        ..Problem::bare(Layout::NT, 64, 40, 36)
    };
    let logits = Problem {
        epilogue: EpilogueKind {
            bias: true,
            recon: Some("bernoulli"),
            ..EpilogueKind::NONE
        },
        ..Problem::bare(Layout::NT, 64, 36, 40)
    };
    let grad = Problem {
        epilogue: EpilogueKind {
            act_grad: Some(vae_wgpu::ops::Act::Tanh),
            ..EpilogueKind::NONE
        },
        ..Problem::bare(Layout::NN, 64, 40, 36)
    };
    for p in [forward, logits, grad] {
        variant_for(&ctx, p).unwrap();
    }
    let text = cache_text(&dir);
    for key in [
        "\tNT 64x40x36 +bias +relu\t",
        "\tNT 64x36x40 +bias +bernoulli loss\t",
        "\tNN 64x40x36 +tanh grad\t",
    ] {
        assert_eq!(text.matches(key).count(), 1, "{key} in:\n{text}");
    }
    // An epoch's short last batch (48 rows; 44 for a TN product's summed K) takes the choice
    // timed for the bucket's power of two: nothing more is timed or written.
    let lines = text.lines().count();
    assert_eq!(
        variant_for(&ctx, Problem { m: 48, ..forward }).unwrap(),
        variant_for(&ctx, forward).unwrap()
    );
    let tn = problem(Layout::TN, 40, 36, 64, true);
    let v = variant_for(&ctx, tn).unwrap();
    assert_eq!(variant_for(&ctx, Problem { k: 44, ..tn }).unwrap(), v);
    let text = cache_text(&dir);
    assert_eq!(text.lines().count(), lines + 1, "{text}");
    assert!(!text.contains("48x") && !text.contains("x44"), "{text}");
    assert_eq!(Problem { m: 48, ..forward }.key(), forward.key());
    assert_eq!(
        Problem { m: 65, ..forward }.key(),
        "NT 128x40x36 +bias +relu"
    );
}

/// The one tuner (`kernels::tuner`): the first candidate is the reference, one whose output
/// disagrees is dropped, one far behind the fastest rough time keeps that time untimed, the rest
/// keep the best of the rounds; a raised cancel token stops it, naming the problem.
#[test]
fn the_one_tuner_checks_skips_times_and_stops_by_one_rule() {
    use std::cell::{Cell, RefCell};
    use vae_wgpu::kernels::tuner::{Candidate, Check, measure};
    let out = RefCell::new(Vec::new());
    let calls = [Cell::new(0), Cell::new(0), Cell::new(0), Cell::new(0)];
    // (choice, the value it computes, its seconds: rough, then in the rounds)
    let spec = [
        ("reference", 1.0, [1e-3, 9e-4]),
        ("same", 1.0, [5e-4, 4e-4]),
        ("wrong", 2.0, [1e-4, 1e-4]),
        ("far", 1.0, [0.5, 0.5]),
    ];
    let candidates = || {
        spec.iter()
            .zip(&calls)
            .map(|(&(choice, value, secs), n)| {
                let out = &out;
                Candidate {
                    choice,
                    time: Box::new(move |_reps| {
                        n.set(n.get() + 1);
                        *out.borrow_mut() = vec![value; 4];
                        // The compile run and the rough time, then the rounds.
                        Ok(if n.get() <= 2 { secs[0] } else { secs[1] })
                    }),
                }
            })
            .collect::<Vec<_>>()
    };
    let check = Check {
        reset: Box::new(|| {
            *out.borrow_mut() = vec![f32::NAN; 4];
            Ok(())
        }),
        read: Box::new(|| Ok(out.borrow().clone())),
    };
    let ctx = common::ctx();
    let got = measure(ctx, "a test problem", candidates(), Some(&check)).unwrap();
    assert_eq!(
        got,
        [("reference", 9e-4), ("same", 4e-4), ("far", 0.5)],
        "the disagreeing candidate is dropped, the far one keeps its rough time"
    );
    let rounds = vae_wgpu::kernels::AUTOTUNE.rounds;
    let counts: Vec<usize> = calls.iter().map(Cell::get).collect();
    assert_eq!(
        counts,
        [2 + rounds, 2 + rounds, 2, 2],
        "only the close ones are timed"
    );

    let cancel = vae_wgpu::gpu::Cancel::new();
    let stopping = GpuContext::new(&ContextOptions {
        cancel: cancel.clone(),
        ..common::ctx_options()
    })
    .unwrap();
    cancel.cancel();
    let e = measure(&stopping, "a test problem", candidates(), None).unwrap_err();
    assert!(
        e.to_string()
            .contains("stopped while timing the candidates for a test problem"),
        "{e}"
    );
}
