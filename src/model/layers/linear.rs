//! `Linear`: `y = act(x·Wᵀ + b)`, weight `[out, in]` (PyTorch's `nn.Linear`). Its GPU forward and
//! backward plans and their f64 CPU twins, side by side; the backward reads as the forward in
//! reverse. A conditional Linear also takes each row's class as a one-hot input, stored as label
//! columns (`Layer::labels`) that `kernels::condition` adds before the activation.

use super::{Layer, LayerViews, ParamDecl};
use crate::cpu::ops;
use crate::error::Result;
use crate::gpu::{GpuContext, GpuTensor};
use crate::kernels::matmul::{Epilogue, matmul};
use crate::kernels::{Dispatch, condition};
use crate::ops::{Act, Layout};

/// `weight [out, in + classes]` and `bias [out]`, both U(±1/√fan_in) as `nn.Linear`'s.
pub fn params(l: &Layer) -> Vec<ParamDecl> {
    l.fan_in_weight_and_bias()
}

/// The weight's shape as the products read it: `[out, in]`.
pub fn weight_shape(l: &Layer) -> Vec<usize> {
    vec![l.outputs, l.inputs]
}

/// Forward: one NT product, bias and activation fused; a conditional Linear applies its
/// activation after its label columns (`labels`: the rows' classes).
pub fn forward(
    ctx: &GpuContext,
    l: &Layer,
    v: &LayerViews,
    x: &GpuTensor,
    y: &GpuTensor,
    act: Act,
    labels: Option<&GpuTensor>,
) -> Result<Vec<Dispatch>> {
    let conditioned = v.conditioned(l, labels)?;
    let epi = Epilogue {
        bias: Some(&v.b),
        act: if conditioned.is_some() {
            Act::Identity
        } else {
            act
        },
        ..Epilogue::NONE
    };
    let mut d = vec![matmul(ctx, Layout::NT, x, &v.w, y, epi)?];
    if let Some((wc, _, labels)) = conditioned {
        d.push(condition::label_forward(ctx, y, wc, labels, act)?);
    }
    Ok(d)
}

/// Backward: `dW = dyᵀ·x` (TN, `db = colsum(dy)` as its row sums), the label columns' gradient
/// of a conditional Linear, then, if asked, `dx = (dy·W) ⊙ act′(x)` (NN, `act` the activation
/// that produced `x`).
pub fn backward(
    ctx: &GpuContext,
    l: &Layer,
    v: &LayerViews,
    dy: &GpuTensor,
    x: &GpuTensor,
    dx: Option<(&GpuTensor, Option<Act>)>,
    labels: Option<&GpuTensor>,
) -> Result<Vec<Dispatch>> {
    let with_bias_grad = Epilogue {
        row_sums: Some(&v.db),
        ..Epilogue::NONE
    };
    let mut d = vec![matmul(ctx, Layout::TN, dy, x, &v.dw, with_bias_grad)?];
    if let Some((_, dwc, labels)) = v.conditioned(l, labels)? {
        d.push(condition::label_grad(ctx, dy, dwc, labels)?);
    }
    if let Some((dx, act)) = dx {
        let epi = Epilogue {
            act_grad: act.map(|a| (a, x)),
            ..Epilogue::NONE
        };
        d.push(matmul(ctx, Layout::NN, dy, &v.w, dx, epi)?);
    }
    Ok(d)
}

/// The CPU twin of [`forward`] on `rows` rows of `x`.
pub fn cpu_forward(
    params: &[f64],
    l: &Layer,
    x: &[f64],
    rows: usize,
    act: Act,
    labels: &[u32],
) -> Vec<f64> {
    let (w, b) = (&params[l.weight_range()], &params[l.bias_range()]);
    let pre = ops::matmul(Layout::NT, x, w, rows, l.outputs, l.inputs);
    if l.labels > 0 {
        let pre = ops::epilogue(&pre, l.outputs, Some(b), Act::Identity);
        let wc = &params[l.label_weight_range()];
        return ops::label_forward(&pre, l.outputs, wc, labels, act);
    }
    ops::epilogue(&pre, l.outputs, Some(b), act)
}

/// The CPU twin of [`backward`]: the weight, bias (and label columns') gradients, and the input
/// gradient before the activation's backward when `want_dx`.
pub fn cpu_backward(
    params: &[f64],
    l: &Layer,
    dy: &[f64],
    x: &[f64],
    rows: usize,
    want_dx: bool,
    labels: &[u32],
) -> super::CpuGrads {
    let (i, o) = (l.inputs, l.outputs);
    let w = &params[l.weight_range()];
    super::CpuGrads {
        dw: ops::matmul(Layout::TN, dy, x, o, i, rows),
        db: ops::column_sum(dy, rows, o),
        dlabels: (l.labels > 0).then(|| ops::label_grad(dy, o, l.labels, labels)),
        dx: want_dx.then(|| ops::matmul(Layout::NN, dy, w, rows, i, o)),
    }
}
