//! `C = act(op(A)·op(B) + bias)` — launchers for `shaders/matmul.wgsl` (with the direct kernels of
//! `shaders/matmul_direct.wgsl`) and `shaders/matmul_subgroup.wgsl`. Which kernel runs a product is
//! [`select`]'s business, and timing the candidates `tune`'s.

pub mod select;
mod tune;

pub use select::{MatmulEntry, MatmulVariant, SUBGROUP_LANES, fixed_layout, summary, variant_for};
use select::{candidates, kernel_for, tiles_64};

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuTensor};
use crate::kernels::{Bind, Candidate, Dispatch, TextureOperand, dispatch, expect_2d, uniform};
use crate::ops::likelihood::{LIKELIHOOD_NONE, Likelihood};
use crate::ops::{Act, Layout};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    /// Likelihood epilogue: the targets' rows B.
    target_rows: u32,
}

/// Everything about a product besides its operands.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a GpuTensor>,
    pub act: Act,
    /// Multiply C by the derivative of a hidden activation, computed from its saved output y (a
    /// tensor of C's shape): ReLU's `[y > 0]`, tanh's `1 − y²`. The activation's backward fused
    /// into the product that computes its input's gradient.
    pub act_grad: Option<(Act, &'a GpuTensor)>,
    /// Also write `Σ_k op(A)[i, k]` for every row i of C into this `[M]` tensor: for a weight
    /// gradient `dW = dYᵀ·X` (TN) that is the bias gradient `colsum(dY)`, fused.
    pub row_sums: Option<&'a GpuTensor>,
    /// The reconstruction term -log p(x | logits) fused into the logits product (see
    /// `shaders/matmul.wgsl`, LIKELIHOOD): C receives dlogits instead of the logits.
    pub recon: Option<ReconEpilogue<'a>>,
}

/// Likelihood, targets and loss-partial output of a reconstruction epilogue.
#[derive(Clone, Copy, Debug)]
pub struct ReconEpilogue<'a> {
    /// One that fuses ([`Likelihood::fuses`]: it needs nothing but the logit and the target).
    pub likelihood: Likelihood,
    /// `[B, N]`; row i of C is compared with target row `i mod B` (`M = L·B`), and loss and
    /// gradient are divided by L.
    pub targets: &'a GpuTensor,
    /// At least [`recon_partials_len`] values: one loss partial per thread of the kernel.
    pub partials: &'a GpuTensor,
}

impl Epilogue<'_> {
    pub const NONE: Epilogue<'static> = Epilogue {
        bias: None,
        act: Act::Identity,
        act_grad: None,
        row_sums: None,
        recon: None,
    };
}

/// A product as the kernels see it: `C [M, N] = op(A)·op(B) + epilogue` over K in `layout`, and
/// whether the row sums of op(A) are kept. Autotune choices are recorded per [`Problem::key`]:
/// the product with its epilogue (which can cost as much as the product: the fused BCE's exp and
/// log per element), its batch-like rows bucketed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Problem {
    pub layout: Layout,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub row_sums: bool,
    pub epilogue: EpilogueKind,
}

/// What an epilogue adds to a product's cost, as the autotune keys and times it (the tensors
/// aside: the timing makes its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EpilogueKind {
    pub bias: bool,
    /// The activation applied to C (`Identity`: none).
    pub act: Act,
    /// The activation whose derivative multiplies C.
    pub act_grad: Option<Act>,
    /// The fused likelihood's name (`Likelihood::name`).
    pub recon: Option<&'static str>,
}

impl EpilogueKind {
    pub const NONE: EpilogueKind = EpilogueKind {
        bias: false,
        act: Act::Identity,
        act_grad: None,
        recon: None,
    };
}

impl Epilogue<'_> {
    /// What this epilogue costs, as [`Problem::epilogue`] records it.
    pub fn kind(&self) -> EpilogueKind {
        EpilogueKind {
            bias: self.bias.is_some(),
            act: self.act,
            act_grad: self.act_grad.map(|(a, _)| a),
            recon: self.recon.map(|r| r.likelihood.name()),
        }
    }
}

impl Problem {
    /// A product with no epilogue.
    pub fn bare(layout: Layout, m: usize, n: usize, k: usize) -> Problem {
        Problem {
            layout,
            m,
            n,
            k,
            row_sums: false,
            epilogue: EpilogueKind::NONE,
        }
    }

    /// The problem whose timing stands for this one: the batch-like dimension (the rows M of an
    /// NN or NT product, the summed K of a TN one) rounded up to a power of two, as cubecl
    /// anchors shapes, so an epoch's short last batch (96 rows of MNIST's 60 000 at 128) runs the
    /// kernel timed for the full one. Which kernels fit does not depend on that dimension.
    pub fn bucketed(self) -> Problem {
        let up = |r: usize| r.max(1).next_power_of_two();
        match self.layout {
            Layout::NN | Layout::NT => Problem {
                m: up(self.m),
                ..self
            },
            Layout::TN => Problem {
                k: up(self.k),
                ..self
            },
        }
    }

    /// The autotune's key: the bucketed problem as text (`NT 128x784x200 +bias +bernoulli loss`).
    pub fn key(&self) -> String {
        self.bucketed().to_string()
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Problem {
            layout,
            m,
            n,
            k,
            epilogue: e,
            ..
        } = self;
        write!(f, "{layout:?} {m}x{n}x{k}")?;
        if self.row_sums {
            f.write_str(" +row sums")?;
        }
        if e.bias {
            f.write_str(" +bias")?;
        }
        if e.act != Act::Identity {
            write!(f, " +{}", e.act)?;
        }
        if let Some(a) = e.act_grad {
            write!(f, " +{a} grad")?;
        }
        if let Some(l) = e.recon {
            write!(f, " +{l} loss")?;
        }
        Ok(())
    }
}

/// Plan `C = act(op(A)·op(B) + bias)` with the context's pinned matmul variant, or else
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
        epilogue: epi.kind(),
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
        for variant in candidates(ctx, problem, true) {
            d.candidates.push(Candidate {
                variant,
                problem: problem.key(),
                desc: build(variant)?.desc,
                set: Vec::new(),
            });
        }
    }
    Ok(d)
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
    if let Some((act, mask)) = epi.act_grad {
        if mask.shape != c.shape {
            return Err(Error::shape(
                OP,
                format!(
                    "{act} backward mask has shape {:?}, C has {:?}",
                    mask.shape, c.shape
                ),
            ));
        }
        if !matches!(act, Act::Relu | Act::Tanh) {
            return Err(Error::Config(format!(
                "the matmul epilogue fuses the backward of relu and tanh, not of {act}"
            )));
        }
    }
    if let Some(rs) = epi.row_sums
        && rs.shape != [m]
    {
        return Err(Error::shape(
            OP,
            format!("row sums have shape {:?}, expected [{m}]", rs.shape),
        ));
    }
    if let Some(bias) = epi.bias
        && bias.shape != [n]
    {
        return Err(Error::shape(
            OP,
            format!("bias has shape {:?}, expected [{n}]", bias.shape),
        ));
    }
    let params = uniform(
        ctx,
        "matmul params",
        &MatmulParams {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            target_rows: epi.recon.map_or(0, |r| r.targets.shape[0] as u32),
        },
    );
    let mut constants = vec![
        ("LAYOUT", layout.code() as f64),
        ("ACT", epi.act.code() as f64),
        ("HAS_BIAS", epi.bias.is_some() as u32 as f64),
        ("ACT_GRAD", epi.act_grad.map_or(0, |(a, _)| a.code()) as f64),
        ("ROW_SUM", epi.row_sums.is_some() as u32 as f64),
        (
            "LIKELIHOOD",
            epi.recon.map_or(LIKELIHOOD_NONE, |r| r.likelihood.code()) as f64,
        ),
    ];
    let bias = match epi.bias {
        Some(t) => Bind::Tensor(t),
        None => Bind::Buffer(&ctx.dummy),
    };
    // Binding 5: the activation's saved output or the likelihood's targets; 6: the row sums or
    // the loss partials.
    let mask = match (epi.act_grad, epi.recon) {
        (Some((_, t)), _) => Bind::Tensor(t),
        (None, Some(b)) => Bind::Tensor(b.targets),
        (None, None) => Bind::Buffer(&ctx.dummy),
    };
    // A separate writable placeholder: one buffer may not be bound read-only and read-write at once.
    let row_sums = match (epi.row_sums, epi.recon) {
        (Some(t), _) => Bind::Tensor(t),
        (None, Some(b)) => Bind::Tensor(b.partials),
        (None, None) => Bind::Buffer(&ctx.dummy_rw),
    };
    let kernel = kernel_for(
        ctx,
        variant,
        Problem {
            row_sums: epi.row_sums.is_some(),
            ..Problem::bare(layout, m, n, k)
        },
    )?;
    let (entry, groups) = (kernel.entry, kernel.groups);
    constants.extend(kernel.constants.iter().copied());
    if let Some(b) = epi.recon {
        check_recon(b, epi, m, n)?;
        let need = recon_partials_for(entry, groups);
        if b.partials.len() < need {
            return Err(Error::shape(
                OP,
                format!(
                    "{} loss partials, the {} kernel writes {need}",
                    b.partials.len(),
                    entry.name()
                ),
            ));
        }
    }
    // The texture-fed kernels read A and B from textures filled from them before each launch.
    let operand = |t| {
        if entry.reads_textures() {
            Bind::Texture(Box::new(TextureOperand::new(ctx, t)))
        } else {
            Bind::Tensor(t)
        }
    };
    dispatch(
        ctx,
        "matmul",
        entry.shader(),
        entry.name(),
        &constants,
        &[
            operand(a),
            operand(b),
            bias,
            Bind::Tensor(c),
            Bind::Buffer(&params),
            mask,
            row_sums,
        ],
        groups,
    )
}

/// A reconstruction epilogue applies to the plain product plus bias: no activation, mask or row
/// sums (they share its bindings); targets `[B, N]` with B dividing M; a likelihood that fuses.
fn check_recon(b: ReconEpilogue<'_>, epi: Epilogue<'_>, m: usize, n: usize) -> Result<()> {
    if epi.act != Act::Identity || epi.act_grad.is_some() || epi.row_sums.is_some() {
        return Err(Error::Config(
            "a likelihood epilogue takes the logits as they are: no activation, activation mask or row sums"
                .into(),
        ));
    }
    if !b.likelihood.fuses() {
        return Err(Error::Config(format!(
            "the {} likelihood does not fuse into the logits product (it reads σ): plan the \
             standalone kernel (kernels::likelihood)",
            b.likelihood
        )));
    }
    match b.targets.shape[..] {
        [rows, cols] if cols == n && rows > 0 && m.is_multiple_of(rows) => Ok(()),
        _ => Err(Error::shape(
            "matmul",
            format!(
                "likelihood targets {:?} for logits [{m}, {n}]: need [B, {n}] with B dividing {m}",
                b.targets.shape
            ),
        )),
    }
}

/// How many loss partials a kernel writes: one per thread of its grid.
fn recon_partials_for(entry: MatmulEntry, groups: [u32; 3]) -> usize {
    groups[0] as usize * groups[1] as usize * entry.threads_per_group()
}

/// A partials buffer this long fits the likelihood epilogue of every variant on an `[M, N]` product:
/// the tiled kernel's grid in its smallest shape (256 threads per 64x64 tile) has the most threads.
pub fn recon_partials_capacity(m: usize, n: usize) -> usize {
    recon_partials_for(MatmulEntry::Tiled, tiles_64(m, n))
}

/// How many loss partials the `variant` kernel for an `[M, N]` product over K writes (what
/// `loss_reduce` must add up; at most [`recon_partials_capacity`]).
pub fn recon_partials_len(
    ctx: &GpuContext,
    variant: MatmulVariant,
    problem: Problem,
) -> Result<usize> {
    let kernel = kernel_for(ctx, variant, problem)?;
    Ok(recon_partials_for(kernel.entry, kernel.groups))
}

/// This module's uniform structs, as `kernels::contracts` checks them against `Shader::MATMUL`.
#[cfg(test)]
pub(crate) const UNIFORMS: &[crate::kernels::UniformLayout] =
    &[uniform_layout!(MatmulParams, m, n, k, target_rows)];
