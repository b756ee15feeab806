//! `C = act(op(A)·op(B) + bias + [C])` — launcher for `shaders/matmul.wgsl`.

use super::{Bind, Dispatch, expect_2d};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuTensor, MatmulVariant, Shader};
use crate::ops::{Act, Layout};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
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
}

impl Epilogue<'_> {
    pub const NONE: Epilogue<'static> = Epilogue {
        bias: None,
        act: Act::Identity,
        accumulate: false,
        relu_mask: None,
        row_sums: None,
    };
}

/// The direct kernel for a product: a vec4-loading one when the dimensions that are contiguous in
/// memory are multiples of 4 (then every row starts 16-byte aligned), else the scalar one. Loads,
/// not arithmetic, bound the direct kernel on CPU drivers: vec4 loads make it ~1.8x faster there.
fn direct_entry(layout: Layout, m: usize, n: usize, k: usize, row_sums: bool) -> &'static str {
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
fn subgroup_entry(
    layout: Layout,
    m: usize,
    n: usize,
    k: usize,
    row_sums: bool,
) -> Option<&'static str> {
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

/// Plan `C = act(op(A)·op(B) + bias + [C])` with the context's matmul variant.
pub fn matmul(
    ctx: &GpuContext,
    layout: Layout,
    a: &GpuTensor,
    b: &GpuTensor,
    c: &GpuTensor,
    epi: Epilogue<'_>,
) -> Result<Dispatch> {
    matmul_with(ctx, ctx.matmul_variant, layout, a, b, c, epi)
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
            _pad: 0,
        },
    );
    let constants = [
        ("LAYOUT", layout.code() as f64),
        ("ACT", epi.act.code() as f64),
        ("HAS_BIAS", epi.bias.is_some() as u32 as f64),
        ("ACCUMULATE", epi.accumulate as u32 as f64),
        ("RELU_MASK", epi.relu_mask.is_some() as u32 as f64),
        ("ROW_SUM", epi.row_sums.is_some() as u32 as f64),
    ];
    let bias = match epi.bias {
        Some(t) => Bind::Tensor(t),
        None => Bind::Buffer(&ctx.dummy),
    };
    let mask = match epi.relu_mask {
        Some(t) => Bind::Tensor(t),
        None => Bind::Buffer(&ctx.dummy),
    };
    // A separate writable placeholder: one buffer may not be bound read-only and read-write at once.
    let row_sums = match epi.row_sums {
        Some(t) => Bind::Tensor(t),
        None => Bind::Buffer(&ctx.dummy_rw),
    };
    let keeps_row_sums = epi.row_sums.is_some();
    let (shader, entry, groups) = match variant {
        // Every matmul.wgsl kernel covers a 64x64 tile of C per workgroup.
        MatmulVariant::Tiled => (Shader::MATMUL, "matmul_tiled", tiles_64(m, n)),
        MatmulVariant::Direct => (
            Shader::MATMUL,
            direct_entry(layout, m, n, k, keeps_row_sums),
            tiles_64(m, n),
        ),
        MatmulVariant::Subgroup => {
            if !ctx.subgroups {
                return Err(Error::Config(format!(
                    "the subgroup matmul kernels need subgroups, which this device ({}) was created without",
                    ctx.adapter.name
                )));
            }
            match subgroup_entry(layout, m, n, k, keeps_row_sums) {
                // One 8-lane workgroup per 8x64 tile of C.
                // One 8-lane workgroup per 32x32 tile of C.
                Some(e) => (
                    Shader::MATMUL_SUBGROUP,
                    e,
                    [n.div_ceil(32) as u32, m.div_ceil(32) as u32, 1],
                ),
                None => (
                    Shader::MATMUL,
                    direct_entry(layout, m, n, k, keeps_row_sums),
                    tiles_64(m, n),
                ),
            }
        }
    };
    // The NT/NN vec4 kernels never touch the row-sum output, so their layouts lack its binding.
    let binds_used = if matches!(
        entry,
        "matmul_nt4" | "matmul_nn4" | "matmul_sg_nt" | "matmul_sg_nn"
    ) {
        6
    } else {
        7
    };
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
        ][..binds_used],
        groups,
    )
}

fn tiles_64(m: usize, n: usize) -> [u32; 3] {
    [n.div_ceil(64) as u32, m.div_ceil(64) as u32, 1]
}
