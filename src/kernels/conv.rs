//! 2-D convolutions in NCHW — launchers for `shaders/conv.wgsl`. One geometry ([`ConvShape`]: a
//! "lo" side whose pixels see windows of a "hi" side, weight `[C_lo, C_hi, k, k]`) gives both
//! layer kinds: a `Conv2d`'s output is its lo side, a `ConvTranspose2d`'s input is. So
//! [`conv_to_lo`] is a Conv2d's forward and a ConvTranspose2d's input gradient, [`conv_to_hi`] a
//! ConvTranspose2d's forward and a Conv2d's input gradient, and [`conv_weight_grad`] both weight
//! gradients with the bias gradient fused ([`BiasSide`]).

use super::{Bind, Dispatch, dispatch, grid_1d, uniform};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuTensor, Shader};
use crate::model::ConvGeom;
use crate::ops::Act;

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
    _pad: [u32; 2],
}

/// A convolution's shape as the kernels see it: `batch` images, the lo side `[C, H, W]` (each
/// pixel (y, x) sees `hi[y·s − p + ky, x·s − p + kx]`), the hi side, and the weight
/// `[lo[0], hi[0], kernel, kernel]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvShape {
    pub batch: usize,
    pub lo: [usize; 3],
    pub hi: [usize; 3],
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvShape {
    /// A layer's geometry on `batch` rows: a Conv2d's output is the lo side, a
    /// ConvTranspose2d's input.
    pub fn of(g: &ConvGeom, transposed: bool, batch: usize) -> Self {
        let (lo, hi) = if transposed {
            (g.input, g.output)
        } else {
            (g.output, g.input)
        };
        ConvShape {
            batch,
            lo,
            hi,
            kernel: g.kernel,
            stride: g.stride,
            padding: g.padding,
        }
    }

    pub fn lo_len(&self) -> usize {
        self.batch * self.lo.iter().product::<usize>()
    }

    pub fn hi_len(&self) -> usize {
        self.batch * self.hi.iter().product::<usize>()
    }

    pub fn weight_len(&self) -> usize {
        self.lo[0] * self.hi[0] * self.kernel * self.kernel
    }

    /// Multiply-adds of one pass (any of the three: each pairs every weight with every lo pixel).
    pub fn macs(&self) -> u64 {
        (self.weight_len() * self.batch * self.lo[1] * self.lo[2]) as u64
    }

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
            _pad: [0; 2],
        })
    }
}

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    let params = shape.params()?;
    check_len("conv_to_lo", "hi", hi, shape.hi_len())?;
    check_len("conv_to_lo", "weight", weight, shape.weight_len())?;
    check_len("conv_to_lo", "lo", lo, shape.lo_len())?;
    let (constants, aux) = epilogue_binds(ctx, "conv_to_lo", &epi, shape.lo[0], shape.lo_len())?;
    let params = uniform(ctx, "conv params", &params);
    dispatch(
        ctx,
        "conv_to_lo",
        Shader::CONV,
        "conv_to_lo",
        &constants,
        &[
            Bind::Tensor(hi),
            Bind::Tensor(weight),
            aux,
            Bind::Tensor(lo),
            Bind::Buffer(&params),
        ],
        grid_1d(shape.lo_len()),
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
    let params = shape.params()?;
    check_len("conv_to_hi", "lo", lo, shape.lo_len())?;
    check_len("conv_to_hi", "weight", weight, shape.weight_len())?;
    check_len("conv_to_hi", "hi", hi, shape.hi_len())?;
    let (constants, aux) = epilogue_binds(ctx, "conv_to_hi", &epi, shape.hi[0], shape.hi_len())?;
    let params = uniform(ctx, "conv params", &params);
    dispatch(
        ctx,
        "conv_to_hi",
        Shader::CONV,
        "conv_to_hi",
        &constants,
        &[
            Bind::Tensor(lo),
            Bind::Tensor(weight),
            aux,
            Bind::Tensor(hi),
            Bind::Buffer(&params),
        ],
        grid_1d(shape.hi_len()),
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
