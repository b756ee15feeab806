//! `C = act(op(A)·op(B) + bias + [C])` — launcher for `shaders/matmul.wgsl`.

use super::{Bind, Candidate, Dispatch, expect_2d};
use crate::error::{Error, Result};
use crate::gpu::context::SUBGROUP_LANES;
use crate::gpu::{GpuContext, GpuTensor, MatmulVariant, Shader};
use crate::ops::{Act, Layout};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    /// BCE epilogue: the targets' rows B.
    target_rows: u32,
}

/// Everything about a product besides its operands.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a GpuTensor>,
    pub act: Act,
    /// Add the product to C's current contents instead of overwriting them.
    pub accumulate: bool,
    /// Zero C where this tensor (C's shape, a ReLU's saved output) is not positive: the ReLU
    /// backward fused into the product that computes the ReLU input's gradient.
    pub relu_mask: Option<&'a GpuTensor>,
    /// Also write `Σ_k op(A)[i, k]` for every row i of C into this `[M]` tensor: for a weight
    /// gradient `dW = dYᵀ·X` (TN) that is the bias gradient `colsum(dY)`, fused.
    pub row_sums: Option<&'a GpuTensor>,
    /// The BCE loss fused into the logits product (see `shaders/matmul.wgsl`, BCE): C receives
    /// dlogits instead of the logits.
    pub bce: Option<BceEpilogue<'a>>,
}

/// Targets and loss-partial output of a BCE epilogue.
#[derive(Clone, Copy, Debug)]
pub struct BceEpilogue<'a> {
    /// `[B, N]`; row i of C is compared with target row `i mod B` (`M = L·B`), and loss and
    /// gradient are divided by L.
    pub targets: &'a GpuTensor,
    /// At least [`bce_partials_len`] values: one loss partial per thread of the kernel.
    pub partials: &'a GpuTensor,
}

impl Epilogue<'_> {
    pub const NONE: Epilogue<'static> = Epilogue {
        bias: None,
        act: Act::Identity,
        accumulate: false,
        relu_mask: None,
        row_sums: None,
        bce: None,
    };
}

/// A product as the kernels see it: `C [M, N] = op(A)·op(B)` over K in `layout`, and whether the
/// row sums of op(A) are kept. Autotune choices are recorded per problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Problem {
    pub layout: Layout,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub row_sums: bool,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Problem {
            layout, m, n, k, ..
        } = self;
        write!(f, "{layout:?} {m}x{n}x{k}")?;
        if self.row_sums {
            f.write_str(" +row sums")?;
        }
        Ok(())
    }
}

/// The direct kernel for a product: a vec4-loading one when the dimensions that are contiguous in
/// memory are multiples of 4 (then every row starts 16-byte aligned), else the scalar one. Loads,
/// not arithmetic, bound the direct kernel on CPU drivers: vec4 loads make it ~1.8x faster there.
fn direct_entry(p: Problem) -> &'static str {
    let Problem {
        layout,
        m,
        n,
        k,
        row_sums,
    } = p;
    match layout {
        // The NT/NN vec4 kernels load A along K in vec4s and do not keep row sums.
        Layout::NT | Layout::NN if row_sums => "matmul_direct",
        Layout::NT if k.is_multiple_of(4) => "matmul_nt4",
        Layout::NN if k.is_multiple_of(4) && n.is_multiple_of(4) => "matmul_nn4",
        Layout::TN if m.is_multiple_of(4) && n.is_multiple_of(4) => "matmul_tn4",
        _ => "matmul_direct",
    }
}

/// The subgroup kernel for a product, where one fits: C, bias and mask are read and written as
/// vec4s (N % 4 == 0), and the operands as the vec4 kernels read them.
fn subgroup_entry(p: Problem) -> Option<&'static str> {
    let Problem {
        layout,
        m,
        n,
        k,
        row_sums,
    } = p;
    if !n.is_multiple_of(4) {
        return None;
    }
    match layout {
        Layout::NT | Layout::NN if row_sums => None,
        Layout::NT if k.is_multiple_of(4) => Some("matmul_sg_nt"),
        Layout::NN if k.is_multiple_of(4) => Some("matmul_sg_nn"),
        Layout::TN if m.is_multiple_of(4) => Some("matmul_sg_tn"),
        _ => None,
    }
}

/// Plan `C = act(op(A)·op(B) + bias + [C])` with the context's pinned matmul variant, or else
/// the one autotuned for this problem (see [`variant_for`]).
pub fn matmul(
    ctx: &GpuContext,
    layout: Layout,
    a: &GpuTensor,
    b: &GpuTensor,
    c: &GpuTensor,
    epi: Epilogue<'_>,
) -> Result<Dispatch> {
    let (m, n) = expect_2d("matmul", "C", c)?;
    let k = match layout {
        Layout::NN | Layout::NT => expect_2d("matmul", "A", a)?.1,
        Layout::TN => expect_2d("matmul", "A", a)?.0,
    };
    let problem = Problem {
        layout,
        m,
        n,
        k,
        row_sums: epi.row_sums.is_some(),
    };
    with_candidates(ctx, problem, variant_for(ctx, problem)?, |v| {
        matmul_with(ctx, v, layout, a, b, c, epi)
    })
}

/// The dispatch `build(chosen)`; when the context records buffers (to export the plan), it also
/// carries the same product by every candidate variant, the reference (direct) first, so another
/// runtime can choose among them by the same rule.
pub fn with_candidates(
    ctx: &GpuContext,
    problem: Problem,
    chosen: MatmulVariant,
    build: impl Fn(MatmulVariant) -> Result<Dispatch>,
) -> Result<Dispatch> {
    let mut d = build(chosen)?;
    if ctx.records_buffers() {
        for variant in candidates(ctx, problem) {
            d.candidates.push(Candidate {
                variant,
                problem: problem.to_string(),
                desc: build(variant)?.desc,
                set: Vec::new(),
            });
        }
    }
    Ok(d)
}

/// The matmul variant for a problem: the pinned one if any; else the autotune cache's choice;
/// else the candidates are timed now, on this device, and the fastest is recorded.
pub fn variant_for(ctx: &GpuContext, problem: Problem) -> Result<MatmulVariant> {
    if let Some(v) = ctx.matmul_pinned {
        return Ok(v);
    }
    let key = problem.to_string();
    // A recorded choice this device cannot run (a subgroup kernel on a device created without
    // subgroups) counts as none.
    let usable = |v: MatmulVariant| v != MatmulVariant::Subgroup || ctx.subgroups;
    if let Some(v) = ctx.tune_cache.get(&key).filter(|&v| usable(v)) {
        return Ok(v);
    }
    let _one_at_a_time = ctx
        .tune_cache
        .tuning
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(v) = ctx.tune_cache.get(&key).filter(|&v| usable(v)) {
        return Ok(v);
    }
    let best = tune(ctx, problem)?;
    Ok(ctx.tune_cache.record(&key, best))
}

/// The candidates for a problem, the reference first: the direct kernel; the subgroup one where
/// the device has subgroups and the shape fits it (else it is the direct one); the tiled one.
fn candidates(ctx: &GpuContext, problem: Problem) -> Vec<MatmulVariant> {
    let mut v = vec![MatmulVariant::Direct];
    if ctx.subgroups && subgroup_entry(problem).is_some() {
        v.push(MatmulVariant::Subgroup);
    }
    v.push(MatmulVariant::Tiled);
    v
}

/// Time every candidate on operands of the problem's shape and return the fastest. A candidate
/// whose product disagrees with the direct kernel's is dropped with a warning: the subgroup kernels
/// assume a lane layout that the spec does not promise, so each device proves it here first.
fn tune(ctx: &GpuContext, problem: Problem) -> Result<MatmulVariant> {
    let Problem {
        layout,
        m,
        n,
        k,
        row_sums,
    } = problem;
    // Past ~1024 rows of the batch-like dimension (M; for TN also the summed K) a product is more
    // of the same workgroups, so a 1024-row slice ranks the kernels as well and keeps tuning short
    // (the evaluation's 10000-row products would take seconds per slow candidate).
    let m = m.min(TUNE_ROWS);
    let k = if layout == Layout::TN {
        k.min(TUNE_ROWS)
    } else {
        k
    };
    let (sa, sb) = layout.operand_shapes(m, n, k);
    // Deterministic operands in [-1, 1): a product of K terms each |a·b| < 1.
    let fill = |len: usize, mul: usize| -> Vec<f32> {
        (0..len)
            .map(|i| ((i * mul) % 97) as f32 / 48.5 - 1.0)
            .collect()
    };
    let a = ctx.upload_f32("autotune a", &sa, &fill(m * k, 31))?;
    let b = ctx.upload_f32("autotune b", &sb, &fill(k * n, 17))?;
    let c = ctx.zeros("autotune c", &[m, n], crate::gpu::DType::F32)?;
    let rs = ctx.zeros("autotune row sums", &[m], crate::gpu::DType::F32)?;
    let epi = Epilogue {
        row_sums: row_sums.then_some(&rs),
        ..Epilogue::NONE
    };
    let mut reference: Option<Vec<f32>> = None;
    let mut best: Option<(MatmulVariant, f64)> = None;
    for variant in candidates(ctx, problem) {
        let d = matmul_with(ctx, variant, layout, &a, &b, &c, epi)?;
        // NaN in every output first: a candidate that leaves some of C (or of the row sums)
        // unwritten cannot pass the comparison on the reference's leftovers.
        ctx.write_f32(&c, &vec![f32::NAN; m * n])?;
        ctx.write_f32(&rs, &vec![f32::NAN; m])?;
        // The first run (pipeline already compiled) warms up and gives a rough time.
        let start = std::time::Instant::now();
        super::run(ctx, &[&d])?;
        let first = start.elapsed().as_secs_f64();
        let mut out = ctx.read_f32(&c)?;
        if row_sums {
            out.extend(ctx.read_f32(&rs)?);
        }
        match &reference {
            None => reference = Some(out),
            Some(want) => {
                // f32 products of K terms of size < 1 agree to ~K·2^-24 each; a wrong lane
                // layout is wrong by O(1).
                let scale = 1.0 + want.iter().fold(0f32, |acc, v| acc.max(v.abs()));
                let worst =
                    want.iter()
                        .zip(&out)
                        .map(|(x, y)| (x - y).abs())
                        .fold(0f32, |acc, e| {
                            if e.is_nan() {
                                f32::INFINITY
                            } else {
                                acc.max(e)
                            }
                        });
                if worst > 1e-3 * scale {
                    eprintln!(
                        "warning: matmul autotune: the {variant} kernel disagrees with the direct \
                         one on {layout:?} {m}x{n}x{k} (max error {worst:e}) on {}; not using it",
                        ctx.adapter.name
                    );
                    continue;
                }
            }
        }
        // Far behind the best already (tiling on a CPU driver, say): not worth timing closely.
        if best.is_some_and(|(_, t)| first > 4.0 * t + 1e-3) {
            continue;
        }
        let secs = time_dispatch(ctx, &d)?;
        if best.is_none_or(|(_, t)| secs < t) {
            best = Some((variant, secs));
        }
    }
    Ok(best.map_or(MatmulVariant::Direct, |(v, _)| v))
}

/// Rows of the batch-like dimension a tuning problem is capped at.
const TUNE_ROWS: usize = 1024;

/// Seconds per launch of `d`: the best of 3 submits of enough launches to fill ~2 ms (so the
/// submit and wait, ~50 µs, do not decide between kernels of a few µs).
fn time_dispatch(ctx: &GpuContext, d: &Dispatch) -> Result<f64> {
    let submit = |reps: usize| -> Result<f64> {
        let start = std::time::Instant::now();
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for _ in 0..reps {
                d.encode(&mut pass);
            }
        }
        ctx.queue.submit([encoder.finish()]);
        ctx.wait_idle("matmul autotune")?;
        Ok(start.elapsed().as_secs_f64())
    };
    let once = submit(1)?;
    let reps = (2e-3 / once.max(1e-6)).ceil().clamp(1.0, 64.0) as usize;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        best = best.min(submit(reps)? / reps as f64);
    }
    Ok(best)
}

/// As [`matmul`], with an explicit kernel variant (benchmarks and parity tests cover both).
pub fn matmul_with(
    ctx: &GpuContext,
    variant: MatmulVariant,
    layout: Layout,
    a: &GpuTensor,
    b: &GpuTensor,
    c: &GpuTensor,
    epi: Epilogue<'_>,
) -> Result<Dispatch> {
    const OP: &str = "matmul";
    let (ar, ac) = expect_2d(OP, "A", a)?;
    let (br, bc) = expect_2d(OP, "B", b)?;
    let (m, n) = expect_2d(OP, "C", c)?;
    let k = match layout {
        Layout::NN | Layout::NT => ac,
        Layout::TN => ar,
    };
    let (want_a, want_b) = layout.operand_shapes(m, n, k);
    if [ar, ac] != want_a || [br, bc] != want_b {
        return Err(Error::shape(
            OP,
            format!(
                "{layout:?}: A {:?}, B {:?}, C {:?} do not fit (for C [{m},{n}] over K={k} need A {want_a:?}, B {want_b:?})",
                a.shape, b.shape, c.shape
            ),
        ));
    }
    if let Some(mask) = epi.relu_mask {
        if mask.shape != c.shape {
            return Err(Error::shape(
                OP,
                format!("relu mask has shape {:?}, C has {:?}", mask.shape, c.shape),
            ));
        }
    }
    if let Some(rs) = epi.row_sums {
        if rs.shape != [m] {
            return Err(Error::shape(
                OP,
                format!("row sums have shape {:?}, expected [{m}]", rs.shape),
            ));
        }
    }
    if let Some(bias) = epi.bias {
        if bias.shape != [n] {
            return Err(Error::shape(
                OP,
                format!("bias has shape {:?}, expected [{n}]", bias.shape),
            ));
        }
    }
    let params = ctx.uniform(
        "matmul params",
        &MatmulParams {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            target_rows: epi.bce.map_or(0, |b| b.targets.shape[0] as u32),
        },
    );
    let constants = [
        ("LAYOUT", layout.code() as f64),
        ("ACT", epi.act.code() as f64),
        ("HAS_BIAS", epi.bias.is_some() as u32 as f64),
        ("ACCUMULATE", epi.accumulate as u32 as f64),
        ("RELU_MASK", epi.relu_mask.is_some() as u32 as f64),
        ("ROW_SUM", epi.row_sums.is_some() as u32 as f64),
        ("BCE", epi.bce.is_some() as u32 as f64),
    ];
    let bias = match epi.bias {
        Some(t) => Bind::Tensor(t),
        None => Bind::Buffer(&ctx.dummy),
    };
    // Binding 5: the ReLU mask or the BCE targets; 6: the row sums or the BCE loss partials.
    let mask = match (epi.relu_mask, epi.bce) {
        (Some(t), _) => Bind::Tensor(t),
        (None, Some(b)) => Bind::Tensor(b.targets),
        (None, None) => Bind::Buffer(&ctx.dummy),
    };
    // A separate writable placeholder: one buffer may not be bound read-only and read-write at once.
    let row_sums = match (epi.row_sums, epi.bce) {
        (Some(t), _) => Bind::Tensor(t),
        (None, Some(b)) => Bind::Tensor(b.partials),
        (None, None) => Bind::Buffer(&ctx.dummy_rw),
    };
    let (shader, entry, groups) = kernel_for(
        ctx,
        variant,
        Problem {
            layout,
            m,
            n,
            k,
            row_sums: epi.row_sums.is_some(),
        },
    )?;
    if let Some(b) = epi.bce {
        check_bce(b, epi, m, n)?;
        let need = bce_partials_for(entry, groups);
        if b.partials.len() < need {
            return Err(Error::shape(
                OP,
                format!(
                    "{} BCE loss partials, the {entry} kernel writes {need}",
                    b.partials.len()
                ),
            ));
        }
    }
    ctx.dispatch(
        "matmul",
        shader,
        entry,
        &constants,
        &[
            Bind::Tensor(a),
            Bind::Tensor(b),
            bias,
            Bind::Tensor(c),
            Bind::Buffer(&params),
            mask,
            row_sums,
        ],
        groups,
    )
}

/// A BCE epilogue applies to the plain product plus bias: no activation, accumulation, mask or
/// row sums (they share its bindings); targets `[B, N]` with B dividing M.
fn check_bce(b: BceEpilogue<'_>, epi: Epilogue<'_>, m: usize, n: usize) -> Result<()> {
    if epi.act != Act::Identity
        || epi.accumulate
        || epi.relu_mask.is_some()
        || epi.row_sums.is_some()
    {
        return Err(Error::Config(
            "a BCE epilogue takes the logits as they are: no activation, accumulation, ReLU mask or row sums".into(),
        ));
    }
    match b.targets.shape[..] {
        [rows, cols] if cols == n && rows > 0 && m.is_multiple_of(rows) => Ok(()),
        _ => Err(Error::shape(
            "matmul",
            format!(
                "BCE targets {:?} for logits [{m}, {n}]: need [B, {n}] with B dividing {m}",
                b.targets.shape
            ),
        )),
    }
}

/// How many BCE loss partials a kernel writes: one per thread of its grid.
fn bce_partials_for(entry: &str, groups: [u32; 3]) -> usize {
    let per_group = match entry {
        "matmul_tiled" => 256,
        e if e.starts_with("matmul_sg_") => SUBGROUP_LANES as usize,
        _ => 64, // the direct kernels: 8x8 threads
    };
    groups[0] as usize * groups[1] as usize * per_group
}

/// A partials buffer this long fits the BCE epilogue of every variant on an `[M, N]` product:
/// the tiled kernel's grid (256 threads per 64x64 tile) has the most threads.
pub fn bce_partials_capacity(m: usize, n: usize) -> usize {
    bce_partials_for("matmul_tiled", tiles_64(m, n))
}

/// How many BCE loss partials the `variant` kernel for an `[M, N]` product over K writes (what
/// `loss_reduce` must add up; at most [`bce_partials_capacity`]).
pub fn bce_partials_len(
    ctx: &GpuContext,
    variant: MatmulVariant,
    problem: Problem,
) -> Result<usize> {
    let (_, entry, groups) = kernel_for(ctx, variant, problem)?;
    Ok(bce_partials_for(entry, groups))
}

/// The shader, entry point and grid of a variant for a problem.
fn kernel_for(
    ctx: &GpuContext,
    variant: MatmulVariant,
    problem: Problem,
) -> Result<(Shader, &'static str, [u32; 3])> {
    let (m, n) = (problem.m, problem.n);
    Ok(match variant {
        // Every matmul.wgsl kernel covers a 64x64 tile of C per workgroup.
        MatmulVariant::Tiled => (Shader::MATMUL, "matmul_tiled", tiles_64(m, n)),
        MatmulVariant::Direct => (Shader::MATMUL, direct_entry(problem), tiles_64(m, n)),
        MatmulVariant::Subgroup => {
            if !ctx.subgroups {
                return Err(Error::Config(format!(
                    "the subgroup matmul kernels need subgroups, which this device ({}) was created without",
                    ctx.adapter.name
                )));
            }
            match subgroup_entry(problem) {
                // One 8-lane workgroup per 32x32 tile of C.
                Some(e) => (
                    Shader::MATMUL_SUBGROUP,
                    e,
                    [n.div_ceil(32) as u32, m.div_ceil(32) as u32, 1],
                ),
                None => (Shader::MATMUL, direct_entry(problem), tiles_64(m, n)),
            }
        }
    })
}

fn tiles_64(m: usize, n: usize) -> [u32; 3] {
    [n.div_ceil(64) as u32, m.div_ceil(64) as u32, 1]
}
