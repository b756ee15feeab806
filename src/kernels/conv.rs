//! 2-D convolutions in NCHW — launchers for `shaders/conv.wgsl`. One geometry ([`ConvShape`]: a
//! "lo" side whose pixels see windows of a "hi" side, weight `[C_lo, C_hi, k, k]`) gives both
//! layer kinds: a `Conv2d`'s output is its lo side, a `ConvTranspose2d`'s input is. So
//! [`conv_to_lo`] is a Conv2d's forward and a ConvTranspose2d's input gradient, [`conv_to_hi`] a
//! ConvTranspose2d's forward and a Conv2d's input gradient, and [`conv_weight_grad`] both weight
//! gradients with the bias gradient fused ([`BiasSide`]).

use super::matmul::{Epilogue, matmul};
use super::{Bind, Dispatch, dispatch, grid_1d, uniform};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuTensor, Shader};
pub use crate::ops::ConvShape;
use crate::ops::{Act, Layout};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ConvParams {
    batch: u32,
    c_lo: u32,
    h_lo: u32,
    w_lo: u32,
    c_hi: u32,
    h_hi: u32,
    w_hi: u32,
    kernel: u32,
    stride: u32,
    padding: u32,
    /// The GEMM formulation's chunk of rows (lo pixels) for `im2col` and `rows_to_lo`.
    row0: u32,
    rows: u32,
}

impl ConvShape {
    fn params(&self) -> Result<ConvParams> {
        let u = |v: usize| -> Result<u32> {
            u32::try_from(v).map_err(|_| Error::shape("conv", format!("{v} exceeds u32")))
        };
        // Every flat index the kernels compute must fit in u32.
        if self.lo_len().max(self.hi_len()).max(self.weight_len()) > u32::MAX as usize {
            return Err(Error::shape(
                "conv",
                format!("{self:?} has more than 2^32 elements on one side"),
            ));
        }
        if self.kernel == 0 || self.stride == 0 || self.lo.contains(&0) || self.hi.contains(&0) {
            return Err(Error::shape(
                "conv",
                format!("{self:?} has an empty dimension"),
            ));
        }
        Ok(ConvParams {
            batch: u(self.batch)?,
            c_lo: u(self.lo[0])?,
            h_lo: u(self.lo[1])?,
            w_lo: u(self.lo[2])?,
            c_hi: u(self.hi[0])?,
            h_hi: u(self.hi[1])?,
            w_hi: u(self.hi[2])?,
            kernel: u(self.kernel)?,
            stride: u(self.stride)?,
            padding: u(self.padding)?,
            row0: 0,
            rows: u(self.gemm_rows())?,
        })
    }

    /// [`ConvShape::params`] for the GEMM rows `chunk` alone.
    fn chunk_params(&self, chunk: &std::ops::Range<usize>) -> Result<ConvParams> {
        Ok(ConvParams {
            row0: chunk.start as u32,
            rows: chunk.len() as u32,
            ..self.params()?
        })
    }

    /// The layout kernels' override constants: the geometry but the batch (see
    /// `shaders/conv.wgsl`), so one pipeline serves every batch of a shape.
    fn geometry(&self) -> Vec<(&'static str, f64)> {
        let [lc, lh, lw] = self.lo.map(|v| v as f64);
        let [hc, hh, hw] = self.hi.map(|v| v as f64);
        vec![
            ("LO_C", lc),
            ("LO_H", lh),
            ("LO_W", lw),
            ("HI_C", hc),
            ("HI_H", hh),
            ("HI_W", hw),
            ("KERNEL", self.kernel as f64),
            ("STRIDE", self.stride as f64),
            ("PADDING", self.padding as f64),
            ("PIXELS_PER_THREAD", PIXELS_PER_THREAD as f64),
        ]
    }

    /// Threads of `lo_to_rows` and `rows_to_lo`: one per [`PIXELS_PER_THREAD`] pixels of a
    /// channel.
    fn blocked_threads(&self) -> usize {
        self.batch * self.lo[0] * (self.lo[1] * self.lo[2]).div_ceil(PIXELS_PER_THREAD)
    }

    /// Bytes of the GEMM formulation's larger scratch buffer (`cols` or `rows`), which must fit
    /// one storage binding.
    fn gemm_scratch_bytes(&self) -> u64 {
        let (cols, rows) = self.scratch_len();
        4 * cols.max(rows) as u64
    }
}

/// Neighbouring pixels of one channel that a thread of `lo_to_rows` and `rows_to_lo` moves. On
/// lavapipe (Xeon VM, `cargo run --release --example conv_passes`), moving the 800 K values of a
/// 32x14x14 side at batch 128 took 2.24 ms at 1 pixel a thread, 1.46 ms at 4, 1.34–1.58 at 8.
const PIXELS_PER_THREAD: usize = 4;

/// What the forward-direction kernels do to each output value: a bias per output channel and an
/// activation (a layer's forward), or the derivative of the activation that produced the saved
/// tensor (an input gradient, the producing layer's activation backward fused).
#[derive(Clone, Copy, Debug)]
pub struct ConvEpilogue<'a> {
    pub bias: Option<&'a GpuTensor>,
    pub act: Act,
    pub act_grad: Option<(Act, &'a GpuTensor)>,
}

impl ConvEpilogue<'_> {
    pub const NONE: ConvEpilogue<'static> = ConvEpilogue {
        bias: None,
        act: Act::Identity,
        act_grad: None,
    };
}

/// Which side's channel sums are the bias gradient: a Conv2d's output is its lo side, a
/// ConvTranspose2d's its hi side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BiasSide {
    Lo,
    Hi,
}

fn check_len(op: &'static str, name: &str, t: &GpuTensor, want: usize) -> Result<()> {
    if t.len() != want {
        return Err(Error::shape(
            op,
            format!(
                "{name} {:?} holds {} values; the shape needs {want}",
                t.shape,
                t.len()
            ),
        ));
    }
    Ok(())
}

fn epilogue_binds<'a>(
    ctx: &'a GpuContext,
    op: &'static str,
    epi: &ConvEpilogue<'a>,
    out_channels: usize,
    out_len: usize,
) -> Result<(Vec<(&'static str, f64)>, Bind<'a>)> {
    if epi.bias.is_some() && epi.act_grad.is_some() {
        return Err(Error::shape(
            op,
            "a bias and an activation backward together",
        ));
    }
    let mut constants = vec![
        ("ACT", epi.act.code() as f64),
        ("HAS_BIAS", epi.bias.is_some() as u32 as f64),
    ];
    let aux = match (epi.bias, epi.act_grad) {
        (Some(b), _) => {
            check_len(op, "bias", b, out_channels)?;
            Bind::Tensor(b)
        }
        (None, Some((act, saved))) => {
            if !matches!(act, Act::Relu | Act::Tanh) {
                return Err(Error::shape(op, format!("no fused backward for {act}")));
            }
            check_len(op, "saved output", saved, out_len)?;
            constants.push(("ACT_GRAD", act.code() as f64));
            Bind::Tensor(saved)
        }
        (None, None) => Bind::Buffer(&ctx.dummy),
    };
    Ok((constants, aux))
}

/// `lo = epilogue(Σ W · windows of hi)`: a Conv2d's forward (`hi` its input), or a
/// ConvTranspose2d's input gradient (`hi` the gradient of its output).
pub fn conv_to_lo(
    ctx: &GpuContext,
    shape: &ConvShape,
    hi: &GpuTensor,
    weight: &GpuTensor,
    lo: &GpuTensor,
    epi: ConvEpilogue<'_>,
) -> Result<Dispatch> {
    let out = (shape.lo[0], shape.lo_len());
    direct_pass(
        ctx,
        "conv_to_lo",
        shape,
        (hi, shape.hi_len()),
        weight,
        lo,
        out,
        epi,
    )
}

/// `hi = epilogue(Σ W · lo spread over windows)`: a ConvTranspose2d's forward (`lo` its input),
/// or a Conv2d's input gradient (`lo` the gradient of its output).
pub fn conv_to_hi(
    ctx: &GpuContext,
    shape: &ConvShape,
    lo: &GpuTensor,
    weight: &GpuTensor,
    hi: &GpuTensor,
    epi: ConvEpilogue<'_>,
) -> Result<Dispatch> {
    let out = (shape.hi[0], shape.hi_len());
    direct_pass(
        ctx,
        "conv_to_hi",
        shape,
        (lo, shape.lo_len()),
        weight,
        hi,
        out,
        epi,
    )
}

/// One of the two direct passes: `src` (with its expected length) and the weight in, `dst` (its
/// channels and length) out through the epilogue, one thread per output value.
#[allow(clippy::too_many_arguments)]
fn direct_pass(
    ctx: &GpuContext,
    entry: &'static str,
    shape: &ConvShape,
    (src, src_len): (&GpuTensor, usize),
    weight: &GpuTensor,
    dst: &GpuTensor,
    (out_channels, out_len): (usize, usize),
    epi: ConvEpilogue<'_>,
) -> Result<Dispatch> {
    let params = shape.params()?;
    check_len(entry, "input", src, src_len)?;
    check_len(entry, "weight", weight, shape.weight_len())?;
    check_len(entry, "output", dst, out_len)?;
    let (constants, aux) = epilogue_binds(ctx, entry, &epi, out_channels, out_len)?;
    let params = uniform(ctx, "conv params", &params);
    dispatch(
        ctx,
        entry,
        Shader::CONV,
        entry,
        &constants,
        &[
            Bind::Tensor(src),
            Bind::Tensor(weight),
            aux,
            Bind::Tensor(dst),
            Bind::Buffer(&params),
        ],
        grid_1d(out_len),
    )
}

/// `dW[o, i, ky, kx] = Σ_{b,y,x} lo[b,o,y,x] · hi[b,i,y·s−p+ky,x·s−p+kx]` (for a Conv2d, `lo` is
/// the output's gradient and `hi` the input; for a ConvTranspose2d, `lo` is the input and `hi`
/// the output's gradient), with the bias gradient, the channel sums of the `side` operand, fused.
pub fn conv_weight_grad(
    ctx: &GpuContext,
    shape: &ConvShape,
    lo: &GpuTensor,
    hi: &GpuTensor,
    dw: &GpuTensor,
    db: Option<(&GpuTensor, BiasSide)>,
) -> Result<Dispatch> {
    let params = shape.params()?;
    check_len("conv_weight_grad", "lo", lo, shape.lo_len())?;
    check_len("conv_weight_grad", "hi", hi, shape.hi_len())?;
    check_len("conv_weight_grad", "dW", dw, shape.weight_len())?;
    let (side, n_bias) = match db {
        None => (0, 0),
        Some((_, BiasSide::Lo)) => (1, shape.lo[0]),
        Some((_, BiasSide::Hi)) => (2, shape.hi[0]),
    };
    if let Some((b, _)) = db {
        check_len("conv_weight_grad", "db", b, n_bias)?;
    }
    let params = uniform(ctx, "conv params", &params);
    let db_bind = match db {
        Some((b, _)) => Bind::Tensor(b),
        None => Bind::Buffer(&ctx.dummy_rw),
    };
    // One workgroup per weight and per bias value.
    dispatch(
        ctx,
        "conv_weight_grad",
        Shader::CONV,
        "conv_weight_grad",
        &[("BIAS_SIDE", side as f64)],
        &[
            Bind::Tensor(lo),
            Bind::Tensor(hi),
            Bind::Tensor(dw),
            db_bind,
            Bind::Buffer(&params),
        ],
        grid_1d((shape.weight_len() + n_bias) * 256),
    )
}

// ---- Formulations -------------------------------------------------------------------------------

/// How a convolution pass is computed: the direct kernels above, or as one product on the tuned
/// matmul kernels between layout kernels (`im2col`, `col2im`, `lo_to_rows`, `rows_to_lo`; see
/// `shaders/conv.wgsl`). Chosen per pass and shape by measurement ([`formulation_for`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvFormulation {
    Direct,
    Gemm,
}

impl ConvFormulation {
    pub const ALL: [ConvFormulation; 2] = [ConvFormulation::Direct, ConvFormulation::Gemm];
}

impl std::fmt::Display for ConvFormulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConvFormulation::Direct => "direct",
            ConvFormulation::Gemm => "gemm",
        })
    }
}

/// The three passes of a convolution layer (see the module docs for which is which).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvPass {
    ToLo,
    ToHi,
    WeightGrad(Option<BiasSide>),
}

impl ConvShape {
    /// The tune store's key: `conv to_lo 32x32x14x14 <- 1x28x28 k4 s2 p1`, for the batch the
    /// choice is measured on ([`TUNE_IMAGES`] at most: past that a pass is more of the same work,
    /// so the full batch and an epoch's smaller last one share one choice).
    fn key(&self, pass: ConvPass) -> String {
        let pass = match pass {
            ConvPass::ToLo => "to_lo",
            ConvPass::ToHi => "to_hi",
            ConvPass::WeightGrad(None) => "weight_grad",
            ConvPass::WeightGrad(Some(BiasSide::Lo)) => "weight_grad +lo bias",
            ConvPass::WeightGrad(Some(BiasSide::Hi)) => "weight_grad +hi bias",
        };
        let [cl, hl, wl] = self.lo;
        let [ch, hh, wh] = self.hi;
        format!(
            "conv {pass} {}x{cl}x{hl}x{wl} <- {ch}x{hh}x{wh} k{} s{} p{}",
            self.batch.min(TUNE_IMAGES),
            self.kernel,
            self.stride,
            self.padding
        )
    }
}

/// The GEMM rows of `s`'s forward pass (`conv_to_lo`) one chunk holds: all of them where its
/// scratch fits one storage binding, else the most that fit (a multiple of 64), so that a layer of
/// any image size runs as products of the matmul kernels; 0 where not even 64 rows fit.
pub fn gemm_chunk_rows(ctx: &GpuContext, s: &ConvShape) -> usize {
    let max = ctx.limits().max_storage_buffer_binding_size as usize / 4;
    let per_row = s.window().max(s.lo[0]);
    let fit = max / per_row.max(1);
    if fit >= s.gemm_rows() {
        s.gemm_rows()
    } else {
        fit / 64 * 64
    }
}

/// Scratch of the GEMM formulation, shared by every conv pass of a step (each pass fills what it
/// reads before reading it): `cols` for `[rows, C_hi·k·k]` windows, `rows` for `[rows, C_lo]`. A
/// forward pass whose scratch exceeds one binding runs in chunks of rows ([`gemm_chunk_rows`]).
#[derive(Clone, Debug)]
pub struct ConvScratch {
    pub cols: GpuTensor,
    pub rows: GpuTensor,
}

impl ConvScratch {
    /// Scratch for every shape in `shapes`: its whole GEMM formulation, or a forward pass's
    /// chunk where that exceeds one binding ([`gemm_chunk_rows`]; at least one value each, so
    /// that it can be bound). A backward pass whose scratch exceeds a binding runs the direct
    /// kernel ([`gemm_fits`]), which needs none.
    pub fn new(ctx: &GpuContext, shapes: &[ConvShape]) -> Result<Self> {
        let (c, r) = shapes.iter().fold((1, 1), |(c, r), s| {
            let rows = gemm_chunk_rows(ctx, s);
            (c.max(rows * s.window()), r.max(rows * s.lo[0]))
        });
        Ok(ConvScratch {
            cols: ctx.zeros("conv cols", &[c], crate::gpu::DType::F32)?,
            rows: ctx.zeros("conv rows", &[r], crate::gpu::DType::F32)?,
        })
    }

    fn views(&self, s: &ConvShape) -> Result<(GpuTensor, GpuTensor)> {
        self.chunk_views(s, s.gemm_rows())
    }

    fn chunk_views(&self, s: &ConvShape, r: usize) -> Result<(GpuTensor, GpuTensor)> {
        Ok((
            self.cols.view(0, &[r, s.window()])?,
            self.rows.view(0, &[r, s.lo[0]])?,
        ))
    }
}

/// A layout kernel of the GEMM formulation with no epilogue (`im2col`, `lo_to_rows`,
/// `channel_sum`), on `grid`, over the GEMM rows `chunk` (all of them but for a chunked `im2col`).
fn layout_kernel(
    ctx: &GpuContext,
    entry: &'static str,
    s: &ConvShape,
    src: &GpuTensor,
    dst: &GpuTensor,
    (grid, chunk): ([u32; 3], std::ops::Range<usize>),
) -> Result<Dispatch> {
    let params = uniform(ctx, "conv params", &s.chunk_params(&chunk)?);
    dispatch(
        ctx,
        entry,
        Shader::CONV,
        entry,
        &s.geometry(),
        &[Bind::Tensor(src), Bind::Tensor(dst), Bind::Buffer(&params)],
        grid,
    )
}

/// `cols` = the windows of `hi` for the GEMM rows `chunk` (a thread per window channel).
fn im2col(
    ctx: &GpuContext,
    s: &ConvShape,
    hi: &GpuTensor,
    cols: &GpuTensor,
    chunk: std::ops::Range<usize>,
) -> Result<Dispatch> {
    let grid = grid_1d(chunk.len() * s.hi[0]);
    layout_kernel(ctx, "im2col", s, hi, cols, (grid, chunk))
}

/// `rows` = `lo` as `[(b, y, x), channel]`.
fn lo_to_rows(
    ctx: &GpuContext,
    s: &ConvShape,
    lo: &GpuTensor,
    rows: &GpuTensor,
) -> Result<Dispatch> {
    let grid = grid_1d(s.blocked_threads());
    layout_kernel(ctx, "lo_to_rows", s, lo, rows, (grid, 0..s.gemm_rows()))
}

/// A layout kernel with the forward kernels' epilogue (`col2im`, `rows_to_lo`), writing `dst`'s
/// `out_channels` channels with `threads` threads over the GEMM rows `chunk`.
fn epilogue_kernel(
    ctx: &GpuContext,
    entry: &'static str,
    s: &ConvShape,
    src: &GpuTensor,
    dst: &GpuTensor,
    epi: &ConvEpilogue<'_>,
    (out_channels, threads, chunk): (usize, usize, std::ops::Range<usize>),
) -> Result<Dispatch> {
    let (mut constants, aux) = epilogue_binds(ctx, entry, epi, out_channels, dst.len())?;
    constants.extend(s.geometry());
    let params = uniform(ctx, "conv params", &s.chunk_params(&chunk)?);
    dispatch(
        ctx,
        entry,
        Shader::CONV,
        entry,
        &constants,
        &[
            Bind::Tensor(src),
            aux,
            Bind::Tensor(dst),
            Bind::Buffer(&params),
        ],
        grid_1d(threads),
    )
}

/// [`conv_to_lo`] by `formulation`.
#[allow(clippy::too_many_arguments)]
pub fn plan_to_lo(
    ctx: &GpuContext,
    formulation: ConvFormulation,
    s: &ConvShape,
    hi: &GpuTensor,
    weight: &GpuTensor,
    lo: &GpuTensor,
    epi: ConvEpilogue<'_>,
    scratch: &ConvScratch,
) -> Result<Vec<Dispatch>> {
    if formulation == ConvFormulation::Direct {
        return Ok(vec![conv_to_lo(ctx, s, hi, weight, lo, epi)?]);
    }
    check_len("conv_to_lo", "hi", hi, s.hi_len())?;
    check_len("conv_to_lo", "lo", lo, s.lo_len())?;
    let w = weight.reshaped(&[s.lo[0], s.window()])?;
    // Bias and activation in the product's epilogue (per column = channel); the activation
    // backward in rows_to_lo, where the saved tensor's NCHW layout is the output's.
    let product = Epilogue {
        bias: epi.bias,
        act: epi.act,
        ..Epilogue::NONE
    };
    let back = ConvEpilogue {
        act_grad: epi.act_grad,
        ..ConvEpilogue::NONE
    };
    // In chunks of rows where the whole scratch exceeds one binding.
    gemm_to_lo_in_chunks(
        ctx,
        s,
        hi,
        &w,
        lo,
        product,
        back,
        scratch,
        gemm_chunk_rows(ctx, s),
    )
}

/// The GEMM formulation of [`conv_to_lo`] in chunks of `step` rows (lo pixels): each chunk's
/// windows, their product with the weights (bias and activation in its epilogue), and the
/// product's rows moved into `lo` (the activation backward there). Any `step` gives the same
/// values (tests/parity_conv.rs).
#[allow(clippy::too_many_arguments)]
pub fn gemm_to_lo_in_chunks(
    ctx: &GpuContext,
    s: &ConvShape,
    hi: &GpuTensor,
    w: &GpuTensor,
    lo: &GpuTensor,
    product: Epilogue<'_>,
    back: ConvEpilogue<'_>,
    scratch: &ConvScratch,
    step: usize,
) -> Result<Vec<Dispatch>> {
    if step == 0 {
        return Err(Error::AdapterLimit {
            adapter: ctx.adapter.name.clone(),
            what: format!(
                "the GEMM formulation of {}: not even 64 windows of {} values fit one binding",
                s.key(ConvPass::ToLo),
                s.window()
            ),
        });
    }
    let mut d = Vec::new();
    for start in (0..s.gemm_rows()).step_by(step) {
        let chunk = start..(start + step).min(s.gemm_rows());
        let (cols, rows) = scratch.chunk_views(s, chunk.len())?;
        let threads = s.lo[0] * chunk.len().div_ceil(PIXELS_PER_THREAD);
        d.push(im2col(ctx, s, hi, &cols, chunk.clone())?);
        d.push(matmul(ctx, Layout::NT, &cols, w, &rows, product)?);
        d.push(epilogue_kernel(
            ctx,
            "rows_to_lo",
            s,
            &rows,
            lo,
            &back,
            (s.lo[0], threads, chunk),
        )?);
    }
    Ok(d)
}

/// [`conv_to_hi`] by `formulation`.
#[allow(clippy::too_many_arguments)]
pub fn plan_to_hi(
    ctx: &GpuContext,
    formulation: ConvFormulation,
    s: &ConvShape,
    lo: &GpuTensor,
    weight: &GpuTensor,
    hi: &GpuTensor,
    epi: ConvEpilogue<'_>,
    scratch: &ConvScratch,
) -> Result<Vec<Dispatch>> {
    if formulation == ConvFormulation::Direct {
        return Ok(vec![conv_to_hi(ctx, s, lo, weight, hi, epi)?]);
    }
    check_len("conv_to_hi", "lo", lo, s.lo_len())?;
    check_len("conv_to_hi", "hi", hi, s.hi_len())?;
    let (cols, rows) = scratch.views(s)?;
    let w = weight.reshaped(&[s.lo[0], s.window()])?;
    Ok(vec![
        lo_to_rows(ctx, s, lo, &rows)?,
        matmul(ctx, Layout::NN, &rows, &w, &cols, Epilogue::NONE)?,
        epilogue_kernel(
            ctx,
            "col2im",
            s,
            &cols,
            hi,
            &epi,
            (s.hi[0], s.hi_len(), 0..s.gemm_rows()),
        )?,
    ])
}

/// [`conv_weight_grad`] by `formulation`.
#[allow(clippy::too_many_arguments)]
pub fn plan_weight_grad(
    ctx: &GpuContext,
    formulation: ConvFormulation,
    s: &ConvShape,
    lo: &GpuTensor,
    hi: &GpuTensor,
    dw: &GpuTensor,
    db: Option<(&GpuTensor, BiasSide)>,
    scratch: &ConvScratch,
) -> Result<Vec<Dispatch>> {
    if formulation == ConvFormulation::Direct {
        return Ok(vec![conv_weight_grad(ctx, s, lo, hi, dw, db)?]);
    }
    check_len("conv_weight_grad", "lo", lo, s.lo_len())?;
    check_len("conv_weight_grad", "hi", hi, s.hi_len())?;
    let (cols, rows) = scratch.views(s)?;
    let dw2 = dw.reshaped(&[s.lo[0], s.window()])?;
    // dW = rowsᵀ·cols: the row sums of rowsᵀ are the lo side's channel sums.
    let row_sums = match db {
        Some((b, BiasSide::Lo)) => Some(b),
        _ => None,
    };
    let mut d = vec![
        lo_to_rows(ctx, s, lo, &rows)?,
        im2col(ctx, s, hi, &cols, 0..s.gemm_rows())?,
        matmul(
            ctx,
            Layout::TN,
            &rows,
            &cols,
            &dw2,
            Epilogue {
                row_sums,
                ..Epilogue::NONE
            },
        )?,
    ];
    if let Some((b, BiasSide::Hi)) = db {
        check_len("conv_weight_grad", "db", b, s.hi[0])?;
        d.push(layout_kernel(
            ctx,
            "channel_sum",
            s,
            hi,
            b,
            ([s.hi[0] as u32, 1, 1], 0..s.gemm_rows()),
        )?);
    }
    Ok(d)
}

/// The `to_lo` or `to_hi` pass (`pass`) from `src` into `dst`, by its measured formulation
/// ([`formulation_for`]); the weight gradient has its own operands ([`plan_weight_grad_tuned`]).
#[allow(clippy::too_many_arguments)]
pub fn plan_pass_tuned(
    ctx: &GpuContext,
    pass: ConvPass,
    s: &ConvShape,
    src: &GpuTensor,
    weight: &GpuTensor,
    dst: &GpuTensor,
    epi: ConvEpilogue<'_>,
    scratch: &ConvScratch,
) -> Result<Vec<Dispatch>> {
    let f = formulation_for(ctx, pass, s)?;
    match pass {
        ConvPass::ToLo => plan_to_lo(ctx, f, s, src, weight, dst, epi, scratch),
        ConvPass::ToHi => plan_to_hi(ctx, f, s, src, weight, dst, epi, scratch),
        ConvPass::WeightGrad(_) => Err(Error::shape(
            "plan_pass_tuned",
            "the weight gradient takes (lo, hi, dW, db): plan it with plan_weight_grad_tuned",
        )),
    }
}

/// [`plan_weight_grad`] by its measured formulation.
pub fn plan_weight_grad_tuned(
    ctx: &GpuContext,
    s: &ConvShape,
    lo: &GpuTensor,
    hi: &GpuTensor,
    dw: &GpuTensor,
    db: Option<(&GpuTensor, BiasSide)>,
    scratch: &ConvScratch,
) -> Result<Vec<Dispatch>> {
    let f = formulation_for(ctx, ConvPass::WeightGrad(db.map(|(_, side)| side)), s)?;
    plan_weight_grad(ctx, f, s, lo, hi, dw, db, scratch)
}

/// Whether the GEMM formulation's scratch for `s` (its windows, `[rows, C_hi·k·k]`) fits one
/// storage binding of this adapter: past that it is not a candidate, and the direct kernels,
/// which need no scratch, serve the shape.
pub fn gemm_fits(ctx: &GpuContext, pass: ConvPass, s: &ConvShape) -> bool {
    match pass {
        // The forward pass runs in chunks of rows.
        ConvPass::ToLo => gemm_chunk_rows(ctx, s) > 0,
        _ => ctx
            .check_binding_size("conv scratch", s.gemm_scratch_bytes())
            .is_ok(),
    }
}

/// The formulation of `pass` on shape `s`: `VAE_WGPU_CONV=direct|gemm` pins one; else the direct
/// one where the GEMM formulation's scratch does not fit the adapter ([`gemm_fits`], said once
/// per shape); else the tune store's recorded choice; else both are run on the same operands, the
/// GEMM one checked against the direct one (dropped with a warning if it disagrees), timed in
/// interleaved rounds, and the fastest recorded.
pub fn formulation_for(ctx: &GpuContext, pass: ConvPass, s: &ConvShape) -> Result<ConvFormulation> {
    let fits = gemm_fits(ctx, pass, s);
    if let Ok(pin) = std::env::var("VAE_WGPU_CONV")
        && !pin.is_empty()
    {
        let f = ConvFormulation::ALL
            .into_iter()
            .find(|f| f.to_string() == pin)
            .ok_or_else(|| {
                Error::setting(
                    "VAE_WGPU_CONV",
                    format!("'{pin}' is not one of direct, gemm"),
                )
            })?;
        if f == ConvFormulation::Gemm && !fits {
            let what = format!("VAE_WGPU_CONV=gemm on {}", s.key(pass));
            ctx.check_binding_size(&what, s.gemm_scratch_bytes())?;
        }
        return Ok(f);
    }
    if !fits {
        let key = format!("{}, gemm scratch at batch {}", s.key(pass), s.batch);
        if ctx.tune_store.get(&key).is_none() {
            let mib = s.gemm_scratch_bytes() >> 20;
            log::warn!(
                "conv: {}: the GEMM formulation needs {mib} MiB of scratch, more than one binding \
                 of {} holds; the direct kernel runs it",
                s.key(pass),
                ctx.adapter.name
            );
            ctx.tune_store.record(
                &key,
                "direct",
                &format!("gemm needs {mib} MiB, past the binding limit"),
            );
        }
        return Ok(ConvFormulation::Direct);
    }
    ctx.tune_store.get_or_measure(
        &s.key(pass),
        |v| {
            ConvFormulation::ALL
                .into_iter()
                .find(|f| f.to_string() == v)
        },
        || measure(ctx, pass, s),
    )
}

/// Images a formulation is measured on (the key's batch).
pub const TUNE_IMAGES: usize = 32;

/// Run and time both formulations of `pass` on deterministic operands, by the one rule
/// (`kernels::tuner::measure`; the direct kernel is the reference).
fn measure(ctx: &GpuContext, pass: ConvPass, s: &ConvShape) -> Result<Vec<(ConvFormulation, f64)>> {
    let s = &ConvShape {
        batch: s.batch.min(TUNE_IMAGES),
        ..*s
    };
    let fill = |name: &str, len: usize, mul: usize| -> Result<GpuTensor> {
        ctx.upload_f32(name, &[len], &super::tune_operand(len, mul))
    };
    let lo = fill("conv tune lo", s.lo_len(), 31)?;
    let hi = fill("conv tune hi", s.hi_len(), 17)?;
    let w = fill("conv tune weight", s.weight_len(), 13)?;
    let out_len = match pass {
        ConvPass::ToLo => s.lo_len(),
        ConvPass::ToHi => s.hi_len(),
        ConvPass::WeightGrad(_) => s.weight_len(),
    };
    let out = ctx.zeros("conv tune out", &[out_len], crate::gpu::DType::F32)?;
    let bias_len = match pass {
        ConvPass::WeightGrad(Some(BiasSide::Hi)) => s.hi[0],
        _ => s.lo[0],
    };
    let db = ctx.zeros("conv tune db", &[bias_len], crate::gpu::DType::F32)?;
    let scratch = ConvScratch::new(ctx, &[*s])?;
    let mut plans = Vec::new();
    for f in ConvFormulation::ALL {
        let d = match pass {
            ConvPass::ToLo => plan_to_lo(ctx, f, s, &hi, &w, &out, ConvEpilogue::NONE, &scratch)?,
            ConvPass::ToHi => plan_to_hi(ctx, f, s, &lo, &w, &out, ConvEpilogue::NONE, &scratch)?,
            ConvPass::WeightGrad(side) => {
                plan_weight_grad(ctx, f, s, &lo, &hi, &out, side.map(|b| (&db, b)), &scratch)?
            }
        };
        plans.push((f, d));
    }
    let candidates = plans
        .into_iter()
        .map(|(f, d)| super::tuner::Candidate::dispatches(ctx, f, d))
        .collect();
    // The pass's output (and a weight gradient's bias gradient), against the direct kernel's.
    let check = super::tuner::Check {
        reset: Box::new(|| {
            ctx.write_f32(&out, &vec![f32::NAN; out_len])?;
            ctx.write_f32(&db, &vec![f32::NAN; bias_len])
        }),
        read: Box::new(|| {
            let mut got = ctx.read_f32(&out)?;
            if matches!(pass, ConvPass::WeightGrad(Some(_))) {
                got.extend(ctx.read_f32(&db)?);
            }
            Ok(got)
        }),
    };
    super::tuner::measure(ctx, &s.key(pass), candidates, Some(&check))
}

/// This module's uniform structs, as `kernels::contracts` checks them against `Shader::CONV`.
#[cfg(test)]
pub(crate) const UNIFORMS: &[crate::kernels::UniformLayout] = &[uniform_layout!(
    ConvParams, batch, c_lo, h_lo, w_lo, c_hi, h_hi, w_hi, kernel, stride, padding, row0, rows
)];
