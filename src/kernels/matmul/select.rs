//! Which matmul kernel runs a product: the kernel families ([`MatmulVariant`]), the entry point
//! and grid of each for a problem, and the choice — pinned (`VAE_WGPU_MATMUL`), else recorded in
//! the device's tune store, else timed now by [`super::tune`] and recorded.

use std::fmt;
use std::str::FromStr;

use super::Problem;
use crate::error::{Error, Result};
use crate::gpu::context::MATMUL_ENV;
use crate::gpu::{GpuContext, Shader};
use crate::ops::Layout;

/// Lanes the subgroup matmul kernels broadcast across (their workgroup size).
pub const SUBGROUP_LANES: u32 = 8;

/// The matmul kernel families (all three are under the parity tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulVariant {
    /// Workgroup-memory tiles: the fast path on real GPUs.
    Tiled,
    /// Register blocks read straight from storage: ~2.5x faster than tiling on CPU adapters (lavapipe).
    Direct,
    /// The direct kernels with the rows' operand shared across a subgroup by broadcasts (needs
    /// the `SUBGROUP` feature and subgroups of at least 8 lanes; see `matmul_subgroup.wgsl`).
    Subgroup,
}

impl MatmulVariant {
    pub const ALL: [MatmulVariant; 3] = [
        MatmulVariant::Direct,
        MatmulVariant::Tiled,
        MatmulVariant::Subgroup,
    ];
}

impl fmt::Display for MatmulVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MatmulVariant::Tiled => "tiled",
            MatmulVariant::Direct => "direct",
            MatmulVariant::Subgroup => "subgroup",
        })
    }
}

impl FromStr for MatmulVariant {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tiled" => Ok(MatmulVariant::Tiled),
            "direct" => Ok(MatmulVariant::Direct),
            "subgroup" => Ok(MatmulVariant::Subgroup),
            other => Err(Error::Config(format!(
                "unknown matmul variant '{other}': expected tiled, direct or subgroup \
                 ({MATMUL_ENV} also takes auto)"
            ))),
        }
    }
}

/// Whether the device can run the subgroup kernels: created with subgroups, none narrower than
/// the kernels' 8 lanes.
pub fn subgroups_usable(ctx: &GpuContext) -> bool {
    ctx.subgroups && ctx.subgroup_min_size >= SUBGROUP_LANES
}

/// The variant pinned for every product (`VAE_WGPU_MATMUL` / [`crate::gpu::ContextOptions::matmul`]),
/// checked against what the device can run.
pub fn pinned(ctx: &GpuContext) -> Result<Option<MatmulVariant>> {
    let Some(text) = ctx.tune_store.pin() else {
        return Ok(None);
    };
    let v: MatmulVariant = text.parse()?;
    if v == MatmulVariant::Subgroup && !subgroups_usable(ctx) {
        return Err(Error::Config(format!(
            "matmul variant 'subgroup' needs subgroups of at least {SUBGROUP_LANES} lanes; {} has {}",
            ctx.adapter.name,
            if ctx.subgroups {
                format!("subgroups of {} lanes or more", ctx.subgroup_min_size)
            } else {
                "no subgroup support".to_string()
            }
        )));
    }
    Ok(Some(v))
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

/// The matmul variant for a problem: the pinned one if any; else the autotune cache's choice;
/// else the candidates are timed now, on this device, and the fastest is recorded.
pub fn variant_for(ctx: &GpuContext, problem: Problem) -> Result<MatmulVariant> {
    if let Some(v) = pinned(ctx)? {
        return Ok(v);
    }
    let key = problem.to_string();
    // A recorded choice this device cannot run (a subgroup kernel on a device without usable
    // subgroups), or one this version does not know, counts as none.
    let recorded = || {
        ctx.tune_store
            .get(&key)
            .and_then(|v| v.parse::<MatmulVariant>().ok())
            .filter(|&v| v != MatmulVariant::Subgroup || subgroups_usable(ctx))
    };
    if let Some(v) = recorded() {
        return Ok(v);
    }
    let _one_at_a_time = ctx
        .tune_store
        .tuning
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(v) = recorded() {
        return Ok(v);
    }
    let tuned = super::tune::tune(ctx, problem)?;
    let chosen = ctx
        .tune_store
        .record(&key, &tuned.best.to_string(), &tuned.timings_text());
    Ok(chosen.parse().unwrap_or(tuned.best))
}

/// The candidates for a problem, the reference first: the direct kernel; the subgroup one where
/// the device has subgroups and the shape fits it (else it is the direct one); the tiled one.
pub(super) fn candidates(ctx: &GpuContext, problem: Problem) -> Vec<MatmulVariant> {
    let mut v = vec![MatmulVariant::Direct];
    if subgroups_usable(ctx) && subgroup_entry(problem).is_some() {
        v.push(MatmulVariant::Subgroup);
    }
    v.push(MatmulVariant::Tiled);
    v
}

/// The shader, entry point and grid of a variant for a problem.
pub(super) fn kernel_for(
    ctx: &GpuContext,
    variant: MatmulVariant,
    problem: Problem,
) -> Result<(Shader, &'static str, [u32; 3])> {
    let (m, n) = (problem.m, problem.n);
    Ok(match variant {
        // Every kernel of Shader::MATMUL (matmul.wgsl, matmul_direct.wgsl) covers a 64x64 tile of C
        // per workgroup.
        MatmulVariant::Tiled => (Shader::MATMUL, "matmul_tiled", tiles_64(m, n)),
        MatmulVariant::Direct => (Shader::MATMUL, direct_entry(problem), tiles_64(m, n)),
        MatmulVariant::Subgroup => {
            if !subgroups_usable(ctx) {
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

pub(super) fn tiles_64(m: usize, n: usize) -> [u32; 3] {
    [n.div_ceil(64) as u32, m.div_ceil(64) as u32, 1]
}

/// One line on the matmul kernels in use: pinned, or the autotuned choices made so far.
pub fn summary(ctx: &GpuContext) -> String {
    if let Some(v) = ctx.tune_store.pin() {
        return format!("matmul kernels: {v} (pinned)");
    }
    let choices = ctx.tune_store.choices();
    let mut counts: Vec<(MatmulVariant, usize)> = MatmulVariant::ALL
        .iter()
        .map(|&v| {
            (
                v,
                choices
                    .iter()
                    .filter(|c| c.1.variant == v.to_string())
                    .count(),
            )
        })
        .filter(|&(_, n)| n > 0)
        .collect();
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    let counts: Vec<String> = counts.iter().map(|(v, n)| format!("{v} {n}")).collect();
    format!(
        "matmul kernels: autotuned per shape, {} products ({}); cache {}; {MATMUL_ENV}=direct|tiled|subgroup pins one",
        choices.len(),
        counts.join(", "),
        ctx.tune_store
            .file()
            .map_or("in memory only".to_string(), |p| p.display().to_string())
    )
}
