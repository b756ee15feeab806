//! The one tuner: every choice the engine makes by measurement (a product's matmul kernel, a
//! convolution's formulation, Adam's read path, the training steps per submit) is
//! [`choose`]: recorded in the device's tune store, else measured now by the one rule
//! ([`AUTOTUNE`]) and recorded. `web/runtime.js`'s `autotune` follows the same loop for the
//! page's products.
//!
//! The rule, for a problem's candidates (the first one the reference):
//! 1. each runs once to compile and warm up, then once for a rough time (a first run past
//!    [`SLOW_FIRST_RUN`] seconds is its rough time: compiling is a small part of it); where the problem has
//!    an output, each candidate's must agree with the reference's within
//!    `AUTOTUNE.tolerance`·(1 + max|value|), or it is dropped with a warning (a kernel's lane
//!    layout is proven on each device, not assumed);
//! 2. a candidate far behind the fastest rough time is kept with that time, not timed closely;
//! 3. the others are timed in `AUTOTUNE.rounds` interleaved rounds of `AUTOTUNE.reps` runs each
//!    (a burst of load slows a round's candidates alike), each keeping its best;
//! 4. the fastest is the choice, stored with every candidate's time.
//!
//! A raised [`crate::gpu::Cancel`] ends the measurement between runs, nothing recorded.

use super::{AUTOTUNE, Dispatch, disagreement, time_runs};
use crate::error::Error;
use crate::error::Result;
use crate::gpu::GpuContext;

/// Seconds past which a candidate's first run is taken as its rough time rather than run again:
/// a pipeline compiles in a second or two even on lavapipe, while the direct convolution of a
/// 256x256 AutoencoderKL layer runs 20 s, and each second run of such a candidate is a cold
/// start's wait.
pub const SLOW_FIRST_RUN: f64 = 5.0;

/// One way of computing a tuned problem: the choice it stands for, and its timer.
pub struct Candidate<'a, T> {
    pub choice: T,
    /// Runs the candidate `reps` times (in one submit where it can) and waits: seconds per run.
    pub time: Box<dyn FnMut(usize) -> Result<f64> + 'a>,
}

impl<'a, T> Candidate<'a, T> {
    /// A candidate that is a sequence of dispatches (a product, a conv pass's kernels, an
    /// optimizer step): `reps` runs of it in one submit.
    pub fn dispatches(ctx: &'a GpuContext, choice: T, seq: Vec<Dispatch>) -> Self {
        Candidate {
            choice,
            time: Box::new(move |reps| time_runs(ctx, &seq.iter().collect::<Vec<_>>(), reps)),
        }
    }
}

/// What the candidates of a problem compute, for the check against the reference: `reset` puts
/// the output where each candidate's first run starts from (NaN where the candidate writes it
/// all, so one that leaves some of it unwritten cannot pass on the reference's leftovers; the
/// state an update reads, for an optimizer step), `read` reads it back after that run.
pub struct Check<'a> {
    pub reset: Box<dyn Fn() -> Result<()> + 'a>,
    pub read: Box<dyn Fn() -> Result<Vec<f32>> + 'a>,
}

/// Between two runs of a measurement: a raised cancel token ends it here (nothing is recorded:
/// the tune store records only whole measurements).
pub fn stop_point(ctx: &GpuContext, key: &str) -> Result<()> {
    match ctx.cancel.is_cancelled() {
        true => Err(Error::Interrupted(format!(
            "stopped while timing the candidates for {key} (nothing recorded)"
        ))),
        false => Ok(()),
    }
}

/// The choice for `key`: the tune store's, if `parse` accepts it; else the candidates `make`
/// builds are measured by the rule above and the fastest recorded.
pub fn choose<'a, T: Copy + std::fmt::Display>(
    ctx: &'a GpuContext,
    key: &str,
    parse: impl Fn(&str) -> Option<T>,
    make: impl FnOnce() -> Result<(Vec<Candidate<'a, T>>, Option<Check<'a>>)>,
) -> Result<T> {
    ctx.tune_store.get_or_measure(key, parse, || {
        let (candidates, check) = make()?;
        measure(ctx, key, candidates, check.as_ref())
    })
}

/// Every candidate's seconds per run by the rule (those that fail the check left out).
pub fn measure<T: Copy + std::fmt::Display>(
    ctx: &GpuContext,
    key: &str,
    mut candidates: Vec<Candidate<'_, T>>,
    check: Option<&Check<'_>>,
) -> Result<Vec<(T, f64)>> {
    let first = candidates.first().map(|c| c.choice.to_string());
    let mut reference: Option<Vec<f32>> = None;
    let mut rough = Vec::with_capacity(candidates.len());
    let mut passed = vec![true; candidates.len()];
    for (i, c) in candidates.iter_mut().enumerate() {
        stop_point(ctx, key)?;
        if let Some(check) = check {
            (check.reset)()?;
        }
        // The first run compiles the pipelines on drivers that compile at first use (lavapipe
        // does: seconds for a large unrolled kernel) and warms up; the second is a rough time
        // of the candidate alone.
        let warm = (c.time)(1)?;
        rough.push(if warm > SLOW_FIRST_RUN {
            warm
        } else {
            (c.time)(1)?
        });
        let Some(check) = check else { continue };
        let got = (check.read)()?;
        match &reference {
            None => reference = Some(got),
            Some(want) => {
                if let Some(worst) = disagreement(want, &got) {
                    log::warn!(
                        "autotune: the {} candidate disagrees with the {} one on {key} (max \
                         error {worst:e}) on {}; not using it",
                        c.choice,
                        first.as_deref().unwrap_or_default(),
                        ctx.adapter.name
                    );
                    passed[i] = false;
                }
            }
        }
    }
    let fastest = (rough.iter().zip(&passed))
        .filter(|(_, ok)| **ok)
        .map(|(r, _)| *r)
        .fold(f64::INFINITY, f64::min);
    let timed: Vec<bool> = (rough.iter().zip(&passed))
        .map(|(&r, &ok)| ok && AUTOTUNE.worth_timing(r, fastest))
        .collect();
    // The timed ones keep their rounds' best; the others their rough time.
    let mut best: Vec<f64> = (rough.iter().zip(&timed))
        .map(|(&r, &t)| if t { f64::INFINITY } else { r })
        .collect();
    for _ in 0..AUTOTUNE.rounds {
        for (i, c) in candidates.iter_mut().enumerate() {
            if timed[i] {
                stop_point(ctx, key)?;
                best[i] = best[i].min((c.time)(AUTOTUNE.reps(rough[i]))?);
            }
        }
    }
    Ok(candidates
        .iter()
        .enumerate()
        .filter(|(i, _)| passed[*i])
        .map(|(i, c)| (c.choice, best[i]))
        .collect())
}
