//! GroupNorm (`shaders/group_norm.wgsl`, launchers in `src/kernels/group_norm.rs`): the f64 CPU
//! twin (`cpu::ops::group_norm_forward`, `group_norm_backward`) against PyTorch's own
//! `nn.GroupNorm` and autograd (`scripts/torch_group_norm.py`: a group per channel, one group,
//! diffusers' 32 groups of 4 channels at eps 1e-6, ragged sides, inputs of mean 50; GroupNorm then
//! SiLU, fused, as diffusers' blocks use it), then the GPU
//! kernels against the twin on the same cases: the output, the statistics, the input gradient and
//! the parameters' gradients. Bad shapes are errors, not panics.

#[macro_use]
mod common;

use common::assert_close;
use safetensors::SafeTensors;
use std::path::Path;
use vae_wgpu::cpu::ops as cpu;
use vae_wgpu::gpu::DType;
use vae_wgpu::kernels::{self, group_norm, group_norm::GroupNormShape};

struct Case {
    shape: GroupNormShape,
    /// y = silu(groupnorm(x)).
    silu: bool,
    x: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    dy: Vec<f32>,
    /// PyTorch's y, dx, dγ, dβ (float64 on the f32 inputs).
    torch: [Vec<f64>; 4],
}

fn cases() -> Vec<Case> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_group_norm.safetensors");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (scripts/torch_group_norm.py writes it)",
            path.display()
        )
    });
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let f32s = |name: &str| -> (Vec<f32>, Vec<usize>) {
        let t = st.tensor(name).unwrap();
        let v = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()));
        (v.collect(), t.shape().to_vec())
    };
    let f64s = |name: &str| -> Vec<f64> {
        let t = st.tensor(name).unwrap();
        let v = t
            .data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()));
        v.collect()
    };
    let n: usize = meta["cases"].parse().unwrap();
    (0..n)
        .map(|i| {
            let p = format!("case{i}");
            let (x, shape) = f32s(&format!("{p}.x"));
            Case {
                shape: GroupNormShape {
                    batch: shape[0],
                    channels: shape[1],
                    groups: meta[&format!("{p}.groups")].parse().unwrap(),
                    plane: shape[2] * shape[3],
                    eps: meta[&format!("{p}.eps")].parse().unwrap(),
                },
                silu: meta[&format!("{p}.silu")] == "1",
                x,
                gamma: f32s(&format!("{p}.gamma")).0,
                beta: f32s(&format!("{p}.beta")).0,
                dy: f32s(&format!("{p}.dy")).0,
                torch: ["y", "dx", "dgamma", "dbeta"].map(|t| f64s(&format!("{p}.{t}"))),
            }
        })
        .collect()
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&a| a as f64).collect()
}

/// The twin's y, stats, dx, dγ, dβ on a case's inputs.
type Twin = (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>);

fn twin(c: &Case) -> Twin {
    let (x, gamma) = (f64s(&c.x), f64s(&c.gamma));
    let beta = f64s(&c.beta);
    let (y, stats) = cpu::group_norm_forward(&c.shape, c.silu, &x, &gamma, &beta);
    let (dx, dg, db) =
        cpu::group_norm_backward(&c.shape, c.silu, &f64s(&c.dy), &x, (&gamma, &beta), &stats);
    (y, stats, dx, dg, db)
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0f64, |a, b| a.max(b.abs()))
}

#[test]
fn cpu_twin_matches_pytorch() {
    for (i, c) in cases().iter().enumerate() {
        let (y, _, dx, dg, db) = twin(c);
        for (name, got, want) in [
            ("y", &y, &c.torch[0]),
            ("dx", &dx, &c.torch[1]),
            ("dγ", &dg, &c.torch[2]),
            ("dβ", &db, &c.torch[3]),
        ] {
            // Both f64 on the same inputs: only the order of the sums differs.
            let tol = 1e-10 * max_abs(want);
            let worst = got
                .iter()
                .zip(want.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(
                worst <= tol,
                "case {i} {:?} {name}: max error {worst:e} > {tol:e}",
                c.shape
            );
        }
    }
}

backend_test!(group_norm_kernels_match_cpu, |ctx| {
    for (i, c) in cases().iter().enumerate() {
        let s = c.shape;
        let (y, stats, dx, dg, db) = twin(c);
        let up = |name: &str, v: &[f32]| ctx.upload_f32(name, &[v.len()], v).unwrap();
        let zeros = |name: &str, n: usize| ctx.zeros(name, &[n], DType::F32).unwrap();
        let (x_g, gamma_g, beta_g, dy_g) = (
            up("x", &c.x),
            up("γ", &c.gamma),
            up("β", &c.beta),
            up("dy", &c.dy),
        );
        let (stats_g, y_g) = (zeros("stats", 2 * s.stats_rows()), zeros("y", s.len()));
        let (sums_g, dx_g, dg_g, db_g) = (
            zeros("sums", 2 * s.stats_rows()),
            zeros("dx", s.len()),
            zeros("dγ", s.channels),
            zeros("dβ", s.channels),
        );
        let silu = c.silu;
        let mut d =
            group_norm::forward(ctx, &s, silu, &x_g, &gamma_g, &beta_g, &stats_g, &y_g).unwrap();
        let params = (&gamma_g, &beta_g);
        d.extend(
            group_norm::backward(
                ctx,
                &s,
                silu,
                &dy_g,
                &x_g,
                params,
                &stats_g,
                &sums_g,
                Some(&dx_g),
                (&dg_g, &db_g),
            )
            .unwrap(),
        );
        let refs: Vec<&kernels::Dispatch> = d.iter().collect();
        kernels::run(ctx, &refs).unwrap();
        let read = |t| ctx.read_f32(t).unwrap();
        let name = |what: &str| {
            let act = if silu { " + SiLU" } else { "" };
            format!(
                "{} case {i} {s:?}{act} {what}",
                ctx.adapter.backend.to_str()
            )
        };
        // f32 sums of n = (C/G)·H·W terms (at most 512 here) in a tree: each statistic within a
        // few ulps of its magnitude; x̂ then carries the mean's absolute error over σ (the
        // mean-50 case: 50·2⁻²⁴·√n relative to σ ≈ 2). Tolerances: 1e-5 of the largest value for
        // the forward, 1e-4 for the gradients (their group sums cancel).
        let mean_rstd = read(&stats_g);
        assert_close(&name("mean, rstd"), &mean_rstd, &stats, |k| {
            1e-5 * stats[k].abs().max(1.0)
        });
        assert_close(&name("y"), &read(&y_g), &y, |_| 1e-5 * max_abs(&y));
        assert_close(&name("dx"), &read(&dx_g), &dx, |_| 1e-4 * max_abs(&dx));
        assert_close(&name("dγ"), &read(&dg_g), &dg, |_| 1e-4 * max_abs(&dg));
        assert_close(&name("dβ"), &read(&db_g), &db, |_| 1e-4 * max_abs(&db));
    }
});

backend_test!(group_norm_bad_shapes_are_errors, |ctx| {
    let s = GroupNormShape {
        batch: 2,
        channels: 6,
        groups: 4,
        plane: 9,
        eps: 1e-6,
    };
    let t = ctx.zeros("t", &[s.len()], DType::F32).unwrap();
    let c = ctx.zeros("c", &[6], DType::F32).unwrap();
    let st = ctx.zeros("st", &[16], DType::F32).unwrap();
    let err = group_norm::forward(ctx, &s, false, &t, &c, &c, &st, &t)
        .err()
        .expect("6 channels, 4 groups");
    assert!(
        err.to_string().contains("do not split into 4 groups"),
        "{err}"
    );
    let ok = GroupNormShape { groups: 3, ..s };
    let err = group_norm::forward(ctx, &ok, false, &t, &c, &c, &st, &t)
        .err()
        .expect("16 stats for 6");
    assert!(err.to_string().contains("stats"), "{err}");
});
