//! The model as a list of layers. A [`Layer`] is one parameterised operation with its activation:
//! `Linear`, `Conv2d` or `ConvTranspose2d` ([`LayerKind`]). Each kind is one module holding side by
//! side its parameter shapes, its GPU forward and backward plans and their f64 CPU twins
//! ([`linear`], [`conv`]); this module reaches them only through exhaustive `match`es on
//! [`LayerKind`] ([`layer_forward`], [`layer_backward`], [`cpu_forward`], [`cpu_backward`] and the
//! shapes), so a kind without its arms is a compile error.
//!
//! Every activation tensor is `[rows, features]` with an image's features in NCHW order
//! (`c·H·W + y·W + x`), so the reshapes between dense and image layers (PyTorch's `Flatten` and
//! `Unflatten`) are the same buffer read with another shape: they plan nothing and are not
//! entries of the list; they only take an index in the `nn.Sequential` names.

pub mod conv;
pub mod group_norm;
pub mod linear;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuTensor};
use crate::kernels::Dispatch;
use crate::kernels::conv::ConvScratch;
use crate::ops::{Act, ConvShape};
pub use group_norm::NormGeom;

/// How a parameter tensor starts, as PyTorch initialises the module that owns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// U(−1/√fan_in, 1/√fan_in): `nn.Linear`'s and the convolutions' weight (kaiming_uniform with
    /// a = √5) and bias.
    FanInUniform(usize),
    /// Every value 1 (a norm's scale).
    Ones,
    /// Every value 0 (a norm's shift, a learned log σ).
    Zeros,
}

/// One parameter tensor a layer declares: its state_dict name's last part, PyTorch's shape, and
/// how it starts. The arena, the state_dict's names and order and the initialisation are derived
/// from these (`ParamLayout::new`, `ParamLayout::init`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamDecl {
    pub suffix: &'static str,
    pub shape: Vec<usize>,
    pub init: Init,
}

/// The geometry of a 2-D convolution in NCHW (square kernel; the same stride and padding on both
/// axes). For a `Conv2d` the input is the larger side; for a `ConvTranspose2d` the output is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvGeom {
    /// Input channels, rows, columns.
    pub input: [usize; 3],
    /// Output channels, rows, columns.
    pub output: [usize; 3],
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvGeom {
    /// `Conv2d(c_in, c_out, kernel, stride, padding)` on `[c_in, h, w]` images; `None` when the
    /// kernel does not fit the padded image.
    pub fn conv2d(
        input: [usize; 3],
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Option<Self> {
        Self::conv2d_padded(input, c_out, kernel, stride, [padding, padding])
    }

    /// `Conv2d(c_in, c_out, kernel, stride, padding = 0)` after padding the input's bottom and right
    /// by `pad_end` (diffusers' `Downsample2D`: `F.pad(x, (0, 1, 0, 1))`, then a 3x3 stride-2
    /// convolution). The kernels read the padding as zeros past the input's sides, so the extra
    /// padding is only the larger output; `None` when the kernel does not fit.
    pub fn conv2d_padded_end(
        input: [usize; 3],
        c_out: usize,
        kernel: usize,
        stride: usize,
        pad_end: usize,
    ) -> Option<Self> {
        Self::conv2d_padded(input, c_out, kernel, stride, [0, pad_end])
    }

    /// A Conv2d padded by `begin` before each side and `end` after it.
    fn conv2d_padded(
        input: [usize; 3],
        c_out: usize,
        kernel: usize,
        stride: usize,
        [begin, end]: [usize; 2],
    ) -> Option<Self> {
        let side = |n: usize| {
            let padded = n + begin + end;
            (padded >= kernel && stride > 0).then(|| (padded - kernel) / stride + 1)
        };
        Some(ConvGeom {
            input,
            output: [c_out, side(input[1])?, side(input[2])?],
            kernel,
            stride,
            padding: begin,
        })
    }

    /// The padding past the input's bottom and right that its output implies: `padding` but for
    /// [`ConvGeom::conv2d_padded_end`]'s (a Conv2d's only).
    pub fn padding_end(&self) -> usize {
        let needed = (self.output[1].max(1) - 1) * self.stride + self.kernel;
        needed.saturating_sub(self.input[1] + self.padding)
    }

    /// `ConvTranspose2d(c_in, c_out, kernel, stride, padding)` on `[c_in, h, w]` images (no
    /// output padding): the output side is `(n − 1)·stride − 2·padding + kernel`.
    pub fn conv_transpose2d(
        input: [usize; 3],
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Option<Self> {
        let side = |n: usize| ((n.max(1) - 1) * stride + kernel).checked_sub(2 * padding);
        Some(ConvGeom {
            input,
            output: [c_out, side(input[1])?, side(input[2])?],
            kernel,
            stride,
            padding,
        })
    }
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
}

/// What a layer computes (its activation is [`Layer::act`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerKind {
    /// `y = x·Wᵀ + b`, weight `[out, in]`.
    Linear,
    /// `nn.Conv2d`, weight `[c_out, c_in, k, k]`.
    Conv2d(ConvGeom),
    /// `nn.ConvTranspose2d`, weight `[c_in, c_out, k, k]`.
    ConvTranspose2d(ConvGeom),
    /// `nn.GroupNorm`, weight γ and bias β `[C]`, with diffusers' SiLU inside when the geometry
    /// says so (its [`Layer::act`] is then still `Identity`: the graph sees one tensor).
    GroupNorm(NormGeom),
    /// `nn.Linear(c_in, c_out)` applied at every pixel of `[c_in, h, w]` images (diffusers'
    /// attention projections `to_q`, `to_k`, `to_v`, `to_out.0`): a 1x1 convolution of geometry
    /// `g` whose weight PyTorch stores as `[c_out, c_in]`.
    PixelLinear(ConvGeom),
}

/// One layer and where its parameters live in the arenas (the same offsets in the parameter,
/// gradient and both moment arenas).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// The state_dict prefix (`encoder.2`, `dec_mu`; `enc_mu|enc_logvar` for the joint heads).
    pub name: String,
    pub kind: LayerKind,
    /// Features per row in (`C·H·W` for an image).
    pub inputs: usize,
    /// Features per row out.
    pub outputs: usize,
    /// The activation applied to the output (the backward of the next layer down fuses its
    /// derivative).
    pub act: Act,
    /// Arena offsets of the weight and the bias.
    pub weight: usize,
    pub bias: usize,
    /// Classes a conditional model's first encoder or decoder Linear also takes as a one-hot
    /// input (0: none). PyTorch's weight is then `[out, in + classes]`; the arena keeps its input
    /// columns `[out, in]` at `weight` (what the products read) and its label columns
    /// `[out, classes]` at `label_weight`, so no one-hot tensor exists: a row of class c adds
    /// column c of the label columns (`kernels::condition`).
    pub labels: usize,
    pub label_weight: usize,
}

impl Layer {
    /// A layer of `kind` at arena offset 0 (placed by [`crate::model::ParamLayout`]).
    pub fn new(
        name: impl Into<String>,
        kind: LayerKind,
        inputs: usize,
        outputs: usize,
        act: Act,
    ) -> Self {
        Layer {
            name: name.into(),
            kind,
            inputs,
            outputs,
            act,
            weight: 0,
            bias: 0,
            labels: 0,
            label_weight: 0,
        }
    }

    /// The same Linear taking a one-hot label of `classes` as well (see [`Layer::labels`]).
    pub fn with_labels(mut self, classes: usize) -> Self {
        debug_assert!(self.kind == LayerKind::Linear || classes == 0);
        self.labels = classes;
        self
    }

    /// The weight's shape in PyTorch's state_dict: [`Layer::weight_shape`] with a conditional
    /// Linear's label columns, `[out, in + classes]`.
    pub fn torch_weight_shape(&self) -> Vec<usize> {
        let mut s = self.weight_shape();
        s[1] += self.labels;
        s
    }

    /// The label columns `[out, classes]` (empty unless conditional).
    pub fn label_weight_len(&self) -> usize {
        self.outputs * self.labels
    }

    pub fn label_weight_range(&self) -> std::ops::Range<usize> {
        self.label_weight..self.label_weight + self.label_weight_len()
    }

    /// A `Linear(inputs, outputs)`.
    pub fn linear(name: impl Into<String>, inputs: usize, outputs: usize, act: Act) -> Self {
        Self::new(name, LayerKind::Linear, inputs, outputs, act)
    }

    /// A `Conv2d` or `ConvTranspose2d` of geometry `g`.
    pub fn conv(name: impl Into<String>, transposed: bool, g: ConvGeom, act: Act) -> Self {
        let kind = if transposed {
            LayerKind::ConvTranspose2d(g)
        } else {
            LayerKind::Conv2d(g)
        };
        let n = |s: [usize; 3]| s.iter().product();
        Self::new(name, kind, n(g.input), n(g.output), act)
    }

    /// A Linear over the channels at every pixel of `[c_in, h, w]` images.
    pub fn pixel_linear(name: impl Into<String>, image: [usize; 3], c_out: usize) -> Self {
        let g = ConvGeom {
            input: image,
            output: [c_out, image[1], image[2]],
            kernel: 1,
            stride: 1,
            padding: 0,
        };
        let n = |s: [usize; 3]| s.iter().product();
        Self::new(
            name,
            LayerKind::PixelLinear(g),
            n(g.input),
            n(g.output),
            Act::Identity,
        )
    }

    /// A `GroupNorm` of geometry `g` (SiLU inside when `g.silu`).
    pub fn norm(name: impl Into<String>, g: NormGeom) -> Self {
        let n = g.image.iter().product();
        Self::new(name, LayerKind::GroupNorm(g), n, n, Act::Identity)
    }

    /// The weight's shape as the products read it (PyTorch's but for a conditional Linear's label
    /// columns, see [`Layer::torch_weight_shape`]).
    pub fn weight_shape(&self) -> Vec<usize> {
        match self.kind {
            LayerKind::Linear => linear::weight_shape(self),
            LayerKind::Conv2d(g) => conv::weight_shape(&g, false),
            LayerKind::ConvTranspose2d(g) => conv::weight_shape(&g, true),
            LayerKind::GroupNorm(g) => vec![g.image[0]],
            LayerKind::PixelLinear(g) => vec![g.output[0], g.input[0]],
        }
    }

    pub fn weight_len(&self) -> usize {
        self.weight_shape().iter().product()
    }

    /// One bias per output feature (Linear) or output channel (convolutions).
    pub fn bias_len(&self) -> usize {
        match self.kind {
            LayerKind::Linear => self.outputs,
            LayerKind::Conv2d(g) | LayerKind::ConvTranspose2d(g) | LayerKind::PixelLinear(g) => {
                g.output[0]
            }
            LayerKind::GroupNorm(g) => g.image[0],
        }
    }

    /// `weight` and `bias`, both U(±1/√fan_in): how PyTorch's `nn.Linear` and convolutions
    /// declare theirs.
    fn fan_in_weight_and_bias(&self) -> Vec<ParamDecl> {
        let init = Init::FanInUniform(self.fan_in());
        vec![
            ParamDecl {
                suffix: "weight",
                shape: self.torch_weight_shape(),
                init,
            },
            ParamDecl {
                suffix: "bias",
                shape: vec![self.bias_len()],
                init,
            },
        ]
    }

    /// The layer's parameter tensors, in PyTorch's order, from its kind's module.
    pub fn params(&self) -> Vec<ParamDecl> {
        match self.kind {
            LayerKind::Linear => linear::params(self),
            LayerKind::Conv2d(_) | LayerKind::ConvTranspose2d(_) | LayerKind::PixelLinear(_) => {
                conv::params(self)
            }
            LayerKind::GroupNorm(g) => group_norm::params(&g),
        }
    }

    /// PyTorch's `fan_in` for the default initialisation (`_calculate_fan_in_and_fan_out`: the
    /// weight's dimension 1 times the kernel's area, so a transposed convolution's fan-in counts
    /// its output channels).
    pub fn fan_in(&self) -> usize {
        let s = self.torch_weight_shape();
        s[1..].iter().product()
    }

    pub fn weight_range(&self) -> std::ops::Range<usize> {
        self.weight..self.weight + self.weight_len()
    }

    pub fn bias_range(&self) -> std::ops::Range<usize> {
        self.bias..self.bias + self.bias_len()
    }

    /// A conv layer's kernel geometry on `rows` images and whether it is transposed (a Conv2d's
    /// output is the lo side, a ConvTranspose2d's input); `None` for a Linear.
    pub fn conv_shape(&self, rows: usize) -> Option<(ConvShape, bool)> {
        match self.kind {
            LayerKind::Linear | LayerKind::GroupNorm(_) => None,
            LayerKind::Conv2d(g) | LayerKind::PixelLinear(g) => {
                Some((ConvShape::of(&g, false, rows), false))
            }
            LayerKind::ConvTranspose2d(g) => Some((ConvShape::of(&g, true, rows), true)),
        }
    }

    /// A `ConvTranspose2d` (whose input is the lo side of its kernels, not its output).
    pub fn is_transposed(&self) -> bool {
        matches!(self.kind, LayerKind::ConvTranspose2d(_))
    }

    /// Multiply-adds of the forward pass per row (the backward costs twice that).
    pub fn macs_per_row(&self) -> u64 {
        let w = self.weight_len() as u64;
        match self.kind {
            LayerKind::Linear => w,
            LayerKind::Conv2d(g) | LayerKind::PixelLinear(g) => conv::macs_per_row(&g, false, w),
            LayerKind::ConvTranspose2d(g) => conv::macs_per_row(&g, true, w),
            // A few operations per value, no products.
            LayerKind::GroupNorm(_) => self.inputs as u64,
        }
    }

    /// `Linear 784->200`, `Conv2d 1x28x28->32x14x14 k4 s2 p1`, as the trainer and errors describe it.
    pub fn describe(&self) -> String {
        let img = |s: [usize; 3]| format!("{}x{}x{}", s[0], s[1], s[2]);
        match self.kind {
            LayerKind::Linear => format!("{} Linear {}->{}", self.name, self.inputs, self.outputs),
            LayerKind::Conv2d(g) | LayerKind::ConvTranspose2d(g) => {
                let end = g.padding_end();
                let padding = match self.kind {
                    LayerKind::Conv2d(_) if g.padding == 0 && end > 0 => format!("p(0,{end})"),
                    _ => format!("p{}", g.padding),
                };
                format!(
                    "{} {} {}->{} k{} s{} {padding}",
                    self.name,
                    if self.is_transposed() {
                        "ConvTranspose2d"
                    } else {
                        "Conv2d"
                    },
                    img(g.input),
                    img(g.output),
                    g.kernel,
                    g.stride,
                )
            }
            LayerKind::PixelLinear(g) => format!(
                "{} Linear {}->{} at every pixel of {}",
                self.name,
                g.input[0],
                g.output[0],
                img(g.input)
            ),
            LayerKind::GroupNorm(g) => format!(
                "{} GroupNorm({}, {}, eps={}){} on {}",
                self.name,
                g.groups,
                g.image[0],
                g.eps(),
                if g.silu { " + SiLU" } else { "" },
                img(g.image)
            ),
        }
    }
}

/// A layer's weight and bias views in the parameter arena and in the gradient arena.
pub struct LayerViews {
    pub w: GpuTensor,
    pub b: GpuTensor,
    pub dw: GpuTensor,
    pub db: GpuTensor,
    /// A conditional Linear's label columns `[out, classes]` and their gradient.
    pub label_cols: Option<(GpuTensor, GpuTensor)>,
}

impl LayerViews {
    /// A conditional layer's label columns, with the rows' classes they are read by.
    pub(crate) fn conditioned<'a>(
        &'a self,
        l: &Layer,
        labels: Option<&'a GpuTensor>,
    ) -> Result<Option<(&'a GpuTensor, &'a GpuTensor, &'a GpuTensor)>> {
        match (&self.label_cols, labels) {
            (None, _) => Ok(None),
            (Some((wc, dwc)), Some(labels)) => Ok(Some((wc, dwc, labels))),
            (Some(_), None) => Err(Error::Config(format!(
                "{} is conditional: its rows' class labels are needed",
                l.describe()
            ))),
        }
    }
}

/// The layer's forward, `y = act(layer(x) + b)` (bias and activation fused), by its kind's
/// module. `x` and `y` are `[rows, features]`, images in NCHW; `labels` are the rows' classes for
/// a conditional Linear; `scratch` serves the convolutions' GEMM formulation.
#[allow(clippy::too_many_arguments)]
pub fn layer_forward(
    ctx: &GpuContext,
    l: &Layer,
    v: &LayerViews,
    x: &GpuTensor,
    y: &GpuTensor,
    act: Act,
    labels: Option<&GpuTensor>,
    scratch: &LayerScratch,
) -> Result<Vec<Dispatch>> {
    let rows = x.shape[0];
    match l.kind {
        LayerKind::Linear => linear::forward(ctx, l, v, x, y, act, labels),
        LayerKind::Conv2d(g) | LayerKind::ConvTranspose2d(g) | LayerKind::PixelLinear(g) => {
            let t = l.is_transposed();
            let shape = ConvShape::of(&g, t, rows);
            conv::forward(ctx, &shape, t, v, x, y, act, &scratch.conv)
        }
        LayerKind::GroupNorm(g) => group_norm::forward(ctx, l, &g, v, x, y, scratch),
    }
}

/// The layer's backward given `dy`, its forward read in reverse: the weight gradient with the
/// bias gradient fused, then, if `dx` is asked for, the input gradient with the backward of the
/// activation that produced `x` fused (`None` for an `x` no activation produced, such as z).
#[allow(clippy::too_many_arguments)]
pub fn layer_backward(
    ctx: &GpuContext,
    l: &Layer,
    v: &LayerViews,
    dy: &GpuTensor,
    x: &GpuTensor,
    dx: Option<(&GpuTensor, Option<Act>)>,
    labels: Option<&GpuTensor>,
    scratch: &LayerScratch,
) -> Result<Vec<Dispatch>> {
    let rows = x.shape[0];
    match l.kind {
        LayerKind::Linear => linear::backward(ctx, l, v, dy, x, dx, labels),
        LayerKind::Conv2d(g) | LayerKind::ConvTranspose2d(g) | LayerKind::PixelLinear(g) => {
            let t = l.is_transposed();
            let shape = ConvShape::of(&g, t, rows);
            conv::backward(ctx, &shape, t, v, dy, x, dx, &scratch.conv)
        }
        LayerKind::GroupNorm(g) => group_norm::backward(ctx, l, &g, v, dy, x, dx, scratch),
    }
}

/// What a layer's CPU backward gives: its parameters' gradients and, when asked, the input
/// gradient before the backward of the activation that produced the input.
pub struct CpuGrads {
    pub dw: Vec<f64>,
    pub db: Vec<f64>,
    /// A conditional Linear's label columns' gradient.
    pub dlabels: Option<Vec<f64>>,
    pub dx: Option<Vec<f64>>,
}

/// The f64 CPU twin of [`layer_forward`] for `rows` rows of `x`.
pub fn cpu_forward(
    params: &[f64],
    l: &Layer,
    x: &[f64],
    rows: usize,
    act: Act,
    labels: &[u32],
) -> Vec<f64> {
    match l.kind {
        LayerKind::Linear => linear::cpu_forward(params, l, x, rows, act, labels),
        LayerKind::Conv2d(g) | LayerKind::ConvTranspose2d(g) | LayerKind::PixelLinear(g) => {
            let (t, w, b) = (
                l.is_transposed(),
                &params[l.weight_range()],
                &params[l.bias_range()],
            );
            conv::cpu_forward(&ConvShape::of(&g, t, rows), t, w, b, x, act)
        }
        LayerKind::GroupNorm(g) => {
            let (w, b) = (&params[l.weight_range()], &params[l.bias_range()]);
            group_norm::cpu_forward(&g, w, b, x, rows)
        }
    }
}

/// The f64 CPU twin of [`layer_backward`] (unfused: the activation's backward is the caller's).
pub fn cpu_backward(
    params: &[f64],
    l: &Layer,
    dy: &[f64],
    x: &[f64],
    rows: usize,
    want_dx: bool,
    labels: &[u32],
) -> CpuGrads {
    match l.kind {
        LayerKind::Linear => linear::cpu_backward(params, l, dy, x, rows, want_dx, labels),
        LayerKind::Conv2d(g) | LayerKind::ConvTranspose2d(g) | LayerKind::PixelLinear(g) => {
            let (t, w) = (l.is_transposed(), &params[l.weight_range()]);
            conv::cpu_backward(&ConvShape::of(&g, t, rows), t, w, dy, x, want_dx)
        }
        LayerKind::GroupNorm(g) => {
            let wb = (&params[l.weight_range()], &params[l.bias_range()]);
            group_norm::cpu_backward(&g, wb, dy, x, rows, want_dx)
        }
    }
}

/// What the layers need besides their tensors, shared by a step's passes: the convolutions' GEMM
/// scratch, each GroupNorm's statistics (its forward's, kept for its backward; by layer name,
/// for the largest batch) and the norms' backward sums.
#[derive(Clone, Debug)]
pub struct LayerScratch {
    pub conv: ConvScratch,
    pub norm_stats: Vec<(String, GpuTensor)>,
    pub norm_sums: GpuTensor,
    /// Each attention core's probabilities (its forward's, kept for its backward), by
    /// [`LayerScratch::attention_key`], and one scratch for their gradients.
    pub attn_probs: Vec<(String, GpuTensor)>,
    pub attn_grad: GpuTensor,
}

impl LayerScratch {
    /// Scratch for `layout`'s layers: encoder layers on `batch` rows, decoder layers on `lb`.
    pub fn new(
        ctx: &GpuContext,
        layout: &crate::model::ParamLayout,
        batch: usize,
        lb: usize,
    ) -> Result<Self> {
        let mut norm_stats = Vec::new();
        let mut sums = 4;
        for (l, rows) in layout.layers_with_rows(batch, lb) {
            if let LayerKind::GroupNorm(g) = l.kind {
                let n = 2 * g.shape(rows).stats_rows();
                let t = ctx.zeros(&format!("{} stats", l.name), &[n], crate::gpu::DType::F32)?;
                norm_stats.push((l.name.clone(), t));
                sums = sums.max(n);
            }
        }
        let mut attn_probs = Vec::new();
        let mut attn = 4;
        for (side, body, rows) in [
            ("encoder", &layout.enc_body, batch),
            ("decoder", &layout.dec_body, lb),
        ] {
            for (i, node) in body.nodes.iter().enumerate() {
                if let crate::model::body::Op::Attention(image) = node.op {
                    let n = crate::kernels::attention::AttnShape { image }.probs_len(rows);
                    let key = Self::attention_key(side, i);
                    let t = ctx.zeros(&key, &[n], crate::gpu::DType::F32)?;
                    attn_probs.push((key, t));
                    attn = attn.max(n);
                }
            }
        }
        Ok(LayerScratch {
            conv: ConvScratch::new(ctx, &conv_shapes(layout, batch, lb))?,
            norm_sums: ctx.zeros("group norm sums", &[sums], crate::gpu::DType::F32)?,
            norm_stats,
            attn_probs,
            attn_grad: ctx.zeros("attention gradient", &[attn], crate::gpu::DType::F32)?,
        })
    }

    /// The name of the attention probabilities of node `node` of a side's graph.
    pub fn attention_key(side: &str, node: usize) -> String {
        format!("{side} attention probabilities (node {node})")
    }

    /// The probabilities' buffer of `side`'s attention node `node`.
    pub fn attention_probs(&self, side: &str, node: usize) -> Result<GpuTensor> {
        let key = Self::attention_key(side, node);
        match self.attn_probs.iter().find(|(n, _)| *n == key) {
            Some((_, t)) => Ok(t.clone()),
            None => Err(Error::Config(format!("no buffer for the {key}"))),
        }
    }

    /// The first `len` values of GroupNorm layer `name`'s statistics.
    pub fn norm_stats(&self, name: &str, len: usize) -> Result<GpuTensor> {
        match self.norm_stats.iter().find(|(n, _)| n == name) {
            Some((_, t)) => t.view(0, &[len]),
            None => Err(Error::Config(format!(
                "{name} has no statistics buffer: it is not a GroupNorm of this model"
            ))),
        }
    }

    /// Every buffer it holds.
    pub fn tensors(&self) -> Vec<&GpuTensor> {
        let mut v = vec![
            &self.conv.cols,
            &self.conv.rows,
            &self.norm_sums,
            &self.attn_grad,
        ];
        v.extend(self.norm_stats.iter().map(|(_, t)| t));
        v.extend(self.attn_probs.iter().map(|(_, t)| t));
        v
    }
}

/// The kernels' shape of every conv layer of `layout`: encoder layers on `batch` rows, decoder
/// layers on `lb` (L·B).
pub fn conv_shapes(layout: &crate::model::ParamLayout, batch: usize, lb: usize) -> Vec<ConvShape> {
    let side = |ls: &[Layer], rows: usize| -> Vec<ConvShape> {
        ls.iter()
            .filter_map(|l| l.conv_shape(rows).map(|(s, _)| s))
            .collect()
    };
    let mut v = side(&layout.encoder, batch);
    v.extend(side(&layout.decoder, lb));
    v.extend(side(std::slice::from_ref(&layout.output), lb));
    v
}
