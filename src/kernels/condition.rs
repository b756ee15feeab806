//! A class-conditional model's label input — launchers for `shaders/condition.wgsl`: the batch's
//! labels gathered beside its pixels, the label columns added to a conditional Linear's output
//! (its activation applied after them), and their gradient. No one-hot tensor exists: see
//! the model's `Layer::labels`.

use super::step::StepUniform;
use super::{Bind, Dispatch, dispatch, expect_2d, grid_1d, uniform};
use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext, GpuTensor, Shader};
use crate::ops::Act;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LabelParams {
    rows: u32,
    cols: u32,
    classes: u32,
    period: u32,
}

fn params(
    ctx: &GpuContext,
    rows: usize,
    cols: usize,
    classes: usize,
    period: usize,
) -> wgpu::Buffer {
    uniform(
        ctx,
        "label params",
        &LabelParams {
            rows: rows as u32,
            cols: cols as u32,
            classes: classes as u32,
            period: period as u32,
        },
    )
}

/// One launch of `entry` with its tensors, then its uniforms, one thread per `threads`.
fn launch(
    ctx: &GpuContext,
    entry: &'static str,
    constants: &[(&'static str, f64)],
    tensors: &[&GpuTensor],
    uniforms: &[&wgpu::Buffer],
    threads: usize,
) -> Result<Dispatch> {
    let binds: Vec<Bind<'_>> = (tensors.iter().map(|t| Bind::Tensor(t)))
        .chain(uniforms.iter().map(|b| Bind::Buffer(b)))
        .collect();
    dispatch(
        ctx,
        entry,
        Shader::CONDITION,
        entry,
        constants,
        &binds,
        grid_1d(threads),
    )
}

/// `labels[b] = data_labels[index[step.batch_offset + b]]` for the `B` entries of `labels`.
pub fn gather_labels(
    ctx: &GpuContext,
    data_labels: &GpuTensor,
    index: &GpuTensor,
    labels: &GpuTensor,
    step: &StepUniform,
) -> Result<Dispatch> {
    const OP: &str = "gather_labels";
    let b = labels.len();
    let u32s = [data_labels, index, labels]
        .iter()
        .all(|t| t.dtype == DType::U32);
    if !u32s || index.len() < b || b == 0 {
        return Err(Error::shape(
            OP,
            format!(
                "data labels {:?} {:?}, index {:?}, labels {:?} {:?}: need u32 labels [N], an index of at least B, labels [B]",
                data_labels.shape, data_labels.dtype, index.shape, labels.shape, labels.dtype
            ),
        ));
    }
    let p = params(ctx, b, 1, 1, b);
    launch(
        ctx,
        OP,
        &[],
        &[data_labels, index, labels],
        &[&p, &step.buffer],
        b,
    )
}

/// Checks `y` `[rows, cols]`, the label columns `[cols, classes]` and `labels` (u32, `period`
/// entries, `rows` a multiple of it); returns (rows, cols, classes, period).
fn check(
    op: &'static str,
    y: &GpuTensor,
    label_w: &GpuTensor,
    labels: &GpuTensor,
) -> Result<(usize, usize, usize, usize)> {
    let (rows, cols) = expect_2d(op, "y", y)?;
    let (wc, classes) = expect_2d(op, "label columns", label_w)?;
    let period = labels.len();
    if wc != cols || labels.dtype != DType::U32 || period == 0 || rows % period != 0 {
        return Err(Error::shape(
            op,
            format!(
                "y {:?}, label columns {:?}, labels {:?} {:?}: need y [rows, out], label columns \
                 [out, classes], u32 labels with rows a multiple of their count",
                y.shape, label_w.shape, labels.shape, labels.dtype
            ),
        ));
    }
    Ok((rows, cols, classes, period))
}

/// In place: `y[r, j] = act(y[r, j] + label_w[j, labels[r % period]])`, y `[rows, out]` (a
/// conditional Linear's product with its bias), `label_w` `[out, classes]`, `labels` the
/// `period` rows' classes (each must be below `classes`).
pub fn label_forward(
    ctx: &GpuContext,
    y: &GpuTensor,
    label_w: &GpuTensor,
    labels: &GpuTensor,
    act: Act,
) -> Result<Dispatch> {
    const OP: &str = "label_forward";
    let (rows, cols, classes, period) = check(OP, y, label_w, labels)?;
    let p = params(ctx, rows, cols, classes, period);
    let act = [("ACT", act.code() as f64)];
    launch(ctx, OP, &act, &[y, label_w, labels], &[&p], rows * cols)
}

/// `d_label_w[j, c] = Σ_{r : labels[r % period] = c} dy[r, j]`, dy `[rows, out]`, `d_label_w`
/// `[out, classes]` (overwritten).
pub fn label_grad(
    ctx: &GpuContext,
    dy: &GpuTensor,
    d_label_w: &GpuTensor,
    labels: &GpuTensor,
) -> Result<Dispatch> {
    const OP: &str = "label_grad";
    let (rows, cols, classes, period) = check(OP, dy, d_label_w, labels)?;
    let p = params(ctx, rows, cols, classes, period);
    launch(
        ctx,
        OP,
        &[],
        &[dy, d_label_w, labels],
        &[&p],
        cols * classes,
    )
}

/// This module's uniform structs, as `kernels::contracts` checks them against `Shader::CONDITION`.
#[cfg(test)]
pub(crate) const UNIFORMS: &[crate::kernels::UniformLayout] =
    &[uniform_layout!(LabelParams, rows, cols, classes, period)];
