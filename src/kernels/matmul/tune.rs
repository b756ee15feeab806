//! Timing the matmul candidates for a problem on this device (the autotune), each checked
//! against the direct kernel first.

use super::select::{MatmulVariant, candidates};
use super::{Epilogue, Problem, matmul_with};
use crate::error::Result;
use crate::gpu::GpuContext;
use crate::kernels::tuner::{Candidate, Check};
use crate::ops::Layout;

/// Time every candidate on operands of the problem's shape by the one rule
/// (`kernels::tuner::measure`): each with its seconds per launch (the tune store records the
/// fastest). A candidate whose product disagrees with the direct kernel's (the first) is dropped
/// with a warning: the subgroup kernels assume a lane layout that the spec does not promise, so
/// each device proves it here first.
pub(super) fn tune(ctx: &GpuContext, problem: Problem) -> Result<Vec<(MatmulVariant, f64)>> {
    let Problem {
        layout,
        m,
        n,
        k,
        row_sums,
        epilogue: kind,
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
    let fill = crate::kernels::tune_operand;
    let a = ctx.upload_f32("autotune a", &sa, &fill(m * k, 31))?;
    let b = ctx.upload_f32("autotune b", &sb, &fill(k * n, 17))?;
    let c = ctx.zeros("autotune c", &[m, n], crate::gpu::DType::F32)?;
    let rs = ctx.zeros("autotune row sums", &[m], crate::gpu::DType::F32)?;
    // The epilogue the product runs with, on operands of its shapes: the time is what runs.
    let tuned = Problem { m, k, ..problem };
    let bias = match kind.bias {
        true => Some(ctx.upload_f32("autotune bias", &[n], &fill(n, 7))?),
        false => None,
    };
    // The saved activation output (half of it positive) or the likelihood's targets in [0, 1].
    let y = match kind.act_grad.is_some() || kind.recon.is_some() {
        true => {
            let v: Vec<f32> = fill(m * n, 5).iter().map(|x| (x + 1.0) / 2.0).collect();
            Some(ctx.upload_f32("autotune saved output", &[m, n], &v)?)
        }
        false => None,
    };
    let recon = match kind.recon {
        Some(name) => {
            let likelihood = crate::ops::Likelihood::parse(name, None)?;
            let mut need = 1;
            for v in candidates(ctx, problem, false) {
                need = need.max(super::recon_partials_len(ctx, v, tuned)?);
            }
            let partials = ctx.zeros("autotune loss partials", &[need], crate::gpu::DType::F32)?;
            Some((likelihood, partials))
        }
        None => None,
    };
    let epi = Epilogue {
        bias: bias.as_ref(),
        act: kind.act,
        act_grad: kind.act_grad.zip(y.as_ref()),
        row_sums: row_sums.then_some(&rs),
        recon: match (&recon, &y) {
            (Some((likelihood, partials)), Some(targets)) => Some(super::ReconEpilogue {
                likelihood: *likelihood,
                targets,
                partials,
            }),
            _ => None,
        },
    };
    let candidates = candidates(ctx, problem, false)
        .into_iter()
        .map(|v| {
            let d = matmul_with(ctx, v, layout, &a, &b, &c, epi)?;
            Ok(Candidate::dispatches(ctx, v, vec![d]))
        })
        .collect::<Result<Vec<_>>>()?;
    // C and the row sums, against the direct kernel's (the first candidate).
    let check = Check {
        reset: Box::new(|| {
            ctx.write_f32(&c, &vec![f32::NAN; m * n])?;
            ctx.write_f32(&rs, &vec![f32::NAN; m])
        }),
        read: Box::new(|| {
            let mut out = ctx.read_f32(&c)?;
            if row_sums {
                out.extend(ctx.read_f32(&rs)?);
            }
            Ok(out)
        }),
    };
    let key = format!("{layout:?} {m}x{n}x{k}");
    crate::kernels::tuner::measure(ctx, &key, candidates, Some(&check))
}

/// Rows of the batch-like dimension a tuning problem is capped at.
const TUNE_ROWS: usize = 1024;
