//! What a planned step is: its input ([`Input`]), its recorded dispatches ([`StepGraph`], planned
//! once per batch size by `model::gpu::GpuVae::plan_step`), and a pass over a dataset in batches
//! ([`EpochPlan`]).

use crate::error::{Error, Result};
use crate::gpu::GpuTensor;
use crate::kernels::Dispatch;
use crate::kernels::step::Rule;

/// Where a step's input batch comes from.
#[derive(Clone, Copy)]
pub enum Input<'a> {
    /// Gathered on the GPU: rows `index[batch_offset..batch_offset + B]` of `pixels` (u8 `[N, D]`),
    /// and of `labels` (u32 `[N]`) for a conditional model.
    Gather {
        pixels: &'a GpuTensor,
        labels: &'a GpuTensor,
        index: &'a GpuTensor,
    },
    /// Already in `acts.x` (and a conditional model's classes in `acts.labels`), written by the
    /// caller, e.g. for parity with a reference batch.
    Given,
}

/// A planned step for one batch size.
pub struct StepGraph {
    pub batch: usize,
    pub train: bool,
    /// The per-step uniform slot its kernels read.
    pub slot: usize,
    dispatches: Vec<Dispatch>,
    /// The rules of the uniform fields of the optimizer that a training step updates with (see
    /// `crate::optim::OptimizerConfig::rules`); empty for a step that updates nothing.
    update_rules: Vec<(&'static str, Rule)>,
}

impl StepGraph {
    pub fn new(batch: usize, train: bool, slot: usize, dispatches: Vec<Dispatch>) -> Self {
        StepGraph {
            batch,
            train,
            slot,
            dispatches,
            update_rules: Vec::new(),
        }
    }

    /// The same step, its optimizer's uniform fields following `rules`.
    pub fn updating(mut self, rules: Vec<(&'static str, Rule)>) -> Self {
        self.update_rules = rules;
        self
    }

    /// The rules of its optimizer's uniform fields (none when it updates nothing).
    pub fn update_rules(&self) -> &[(&'static str, Rule)] {
        &self.update_rules
    }

    pub fn dispatch_count(&self) -> usize {
        self.dispatches.len()
    }

    /// Record the step's dispatches (see [`crate::kernels::encode_all`]).
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder) {
        let refs: Vec<&Dispatch> = self.dispatches.iter().collect();
        crate::kernels::encode_all(encoder, &refs);
    }

    /// The planned dispatches, in order.
    pub fn dispatches(&self) -> &[Dispatch] {
        &self.dispatches
    }

    /// Append a dispatch to run after the planned ones (e.g. evaluation extras).
    pub fn push(&mut self, d: Dispatch) {
        self.dispatches.push(d);
    }
}

/// A pass over `len` rows in batches of `batch`: one planned graph for the full batches and one for
/// the last, smaller batch (as PyTorch's DataLoader without `drop_last`).
pub struct EpochPlan {
    pub batch: usize,
    pub len: usize,
    full: StepGraph,
    last: Option<StepGraph>,
}

impl EpochPlan {
    /// Plan with `plan(rows)`, called for the full batch size and, if `len` is not a multiple of
    /// it, for the remainder.
    pub fn new(
        len: usize,
        batch: usize,
        mut plan: impl FnMut(usize) -> Result<StepGraph>,
    ) -> Result<Self> {
        if batch == 0 || len == 0 {
            return Err(Error::Config(format!(
                "cannot plan {len} rows in batches of {batch}"
            )));
        }
        let full = plan(batch)?;
        let last = match len % batch {
            0 => None,
            rem => Some(plan(rem)?),
        };
        Ok(EpochPlan {
            batch,
            len,
            full,
            last,
        })
    }

    pub fn steps(&self) -> usize {
        self.len.div_ceil(self.batch)
    }

    /// The graph of step `step` (0-based); it starts at row `step * batch`.
    pub fn graph(&self, step: usize) -> &StepGraph {
        if (step + 1) * self.batch <= self.len {
            &self.full
        } else {
            self.last.as_ref().unwrap_or(&self.full)
        }
    }

    /// The graph of a full batch.
    pub fn full(&self) -> &StepGraph {
        &self.full
    }

    /// The graph of the last, smaller batch, when `len` is not a multiple of `batch`.
    pub fn last(&self) -> Option<&StepGraph> {
        self.last.as_ref()
    }

    /// Kernel launches of a full step.
    pub fn dispatch_count(&self) -> usize {
        self.full.dispatch_count()
    }
}
