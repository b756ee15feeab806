//! Optimizers as values, each in a few lines (tinygrad's `nn.optim`, PyTorch's `torch.optim`):
//! an [`Optimizer`] owns its state arenas on the device, the rules of its fields of the per-step
//! uniform ([`OptimizerConfig::rules`]) and its kernel; the model owns parameters and gradients
//! only.
//!
//! - **Adam** (`torch.optim.Adam`): moments `exp_avg`, `exp_avg_sq`; `--weight-decay` is L2 (added
//!   to the gradient).
//! - **AdamW** (`torch.optim.AdamW`): Adam with decoupled weight decay, the weights multiplied by
//!   `1 − lr_t·λ` before the update (λ 0.01 by default, as PyTorch's).
//! - **SGD** (`torch.optim.SGD`): `momentum_buffer` when `--momentum` > 0 (dampening 0), Nesterov's
//!   form with `--nesterov`; `--weight-decay` is L2.
//!
//! Each takes the learning rate through an [`LrSchedule`] and may clip the gradients by their
//! global norm first (`--clip-grad-norm`, [`crate::kernels::clip_grad`]). The step-dependent
//! factors are computed on the host in f64, as PyTorch computes them in Python floats.

use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext, GpuTensor};
pub use crate::kernels::step::{LrSchedule, LrShape, Rule};
use crate::kernels::{Dispatch, StepUniform, adam, clip_grad, sgd};

/// Which optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerKind {
    Adam,
    AdamW,
    Sgd,
}

impl OptimizerKind {
    pub const ALL: [(OptimizerKind, &'static str); 3] = [
        (OptimizerKind::Adam, "adam"),
        (OptimizerKind::AdamW, "adamw"),
        (OptimizerKind::Sgd, "sgd"),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map_or("?", |(_, n)| n)
    }

    pub fn parse(name: &str) -> Option<OptimizerKind> {
        (Self::ALL.iter())
            .find(|(_, n)| n.eq_ignore_ascii_case(name.trim()))
            .map(|(k, _)| *k)
    }

    /// PyTorch's default weight decay: AdamW's 0.01, the others' 0.
    pub fn default_weight_decay(self) -> f32 {
        match self {
            OptimizerKind::AdamW => 0.01,
            _ => 0.0,
        }
    }
}

impl std::fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An optimizer's hyperparameters (Adam with PyTorch's defaults but for the notebook's lr 0.01).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub lr: f32,
    /// Adam's and AdamW's.
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// L2 for Adam and SGD, decoupled for AdamW.
    pub weight_decay: f32,
    /// SGD's (0: no momentum buffer).
    pub momentum: f32,
    pub nesterov: bool,
    pub schedule: LrSchedule,
    /// Clip the gradients to this global L2 norm before each update.
    pub clip_grad_norm: Option<f32>,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            kind: OptimizerKind::Adam,
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            nesterov: false,
            schedule: LrSchedule::CONSTANT,
            clip_grad_norm: None,
        }
    }
}

impl OptimizerConfig {
    /// `kind` with PyTorch's defaults for it (the lr the notebook's).
    pub fn of(kind: OptimizerKind) -> Self {
        OptimizerConfig {
            kind,
            weight_decay: kind.default_weight_decay(),
            ..Self::default()
        }
    }

    /// The decimal value an f32 hyperparameter stands for ([`crate::ops::meant`]).
    pub fn meant(value: f32) -> f64 {
        crate::ops::meant(value)
    }

    /// The learning rate at step `t` (1-based): the base lr times the schedule's factor.
    pub fn lr_at(&self, t: u64) -> f64 {
        Self::meant(self.lr) * self.schedule.factor(t)
    }

    /// Adam's step-dependent factors for step `t` (1-based): `lr_t / (1 - β1^t)` and
    /// `sqrt(1 - β2^t)`, computed in f64 on the host as PyTorch does in Python floats.
    pub fn step_factors(&self, t: u64) -> (f64, f64) {
        let t32 = t as i32;
        let bc1 = 1.0 - Self::meant(self.beta1).powi(t32);
        let bc2 = 1.0 - Self::meant(self.beta2).powi(t32);
        (self.lr_at(t) / bc1, bc2.sqrt())
    }

    /// The rules of the optimizer's fields of the per-step uniform (`step_size`, `bc2_sqrt`,
    /// `decay`; see `kernels::StepParams`).
    pub fn rules(&self) -> Vec<(&'static str, Rule)> {
        let (lr, schedule) = (Self::meant(self.lr), self.schedule);
        match self.kind {
            OptimizerKind::Adam | OptimizerKind::AdamW => vec![
                (
                    "step_size",
                    Rule::LrOverOneMinusPow {
                        lr,
                        base: Self::meant(self.beta1),
                        schedule,
                    },
                ),
                (
                    "bc2_sqrt",
                    Rule::SqrtOneMinusPow {
                        base: Self::meant(self.beta2),
                    },
                ),
                (
                    "decay",
                    match self.kind {
                        OptimizerKind::AdamW => Rule::OneMinusLrTimes {
                            lr,
                            times: Self::meant(self.weight_decay),
                            schedule,
                        },
                        _ => Rule::Const(1.0),
                    },
                ),
            ],
            OptimizerKind::Sgd => vec![
                ("step_size", Rule::Lr { lr, schedule }),
                ("bc2_sqrt", Rule::Const(1.0)),
                ("decay", Rule::Const(1.0)),
            ],
        }
    }

    /// The names of its state arenas, as PyTorch's `optimizer.state_dict()` names them.
    pub fn state_names(&self) -> &'static [&'static str] {
        match self.kind {
            OptimizerKind::Adam | OptimizerKind::AdamW => &["exp_avg", "exp_avg_sq"],
            OptimizerKind::Sgd if self.momentum > 0.0 => &["momentum_buffer"],
            OptimizerKind::Sgd => &[],
        }
    }

    /// Refuse values PyTorch's optimizer would refuse (or that make no update), naming the flag.
    pub fn validate(&self) -> Result<()> {
        let c = self;
        let flag = |name: &'static str, detail: String| Err(Error::setting(name, detail));
        if !(c.lr.is_finite() && c.lr > 0.0) {
            return flag("lr", format!("must be a finite number > 0, got {}", c.lr));
        }
        if !(c.weight_decay.is_finite() && c.weight_decay >= 0.0) {
            return flag(
                "weight decay",
                format!("must be a finite number ≥ 0, got {}", c.weight_decay),
            );
        }
        match c.kind {
            OptimizerKind::Sgd => {
                if !(0.0..1.0).contains(&c.momentum) {
                    return flag("momentum", format!("must be in [0, 1), got {}", c.momentum));
                }
                if c.nesterov && c.momentum == 0.0 {
                    return flag(
                        "nesterov",
                        "needs a momentum > 0 (add --momentum 0.9, say)".to_string(),
                    );
                }
            }
            _ => {
                if c.momentum != 0.0 || c.nesterov {
                    return flag(
                        if c.nesterov { "nesterov" } else { "momentum" },
                        format!(
                            "is SGD's; {} keeps moments of its own (--beta1, --beta2): use \
                             --optimizer sgd, or drop the flag",
                            c.kind
                        ),
                    );
                }
                for (name, v) in [("beta1", c.beta1), ("beta2", c.beta2)] {
                    if !(0.0..1.0).contains(&v) {
                        return flag(name, format!("must be in [0, 1), got {v}"));
                    }
                }
                if !(c.eps > 0.0 && c.eps <= 1.0) {
                    return flag("eps", format!("must be in (0, 1], got {}", c.eps));
                }
            }
        }
        if let Some(x) = c.clip_grad_norm
            && !(x.is_finite() && x > 0.0)
        {
            return flag(
                "clip grad norm",
                format!("must be a finite number > 0, got {x}"),
            );
        }
        Ok(())
    }

    /// One line for the run's header: `adam lr 0.01`, `sgd lr 3e-5 momentum 0.9 (nesterov), …`.
    pub fn describe(&self) -> String {
        let mut s = format!("{} lr {}", self.kind, self.lr);
        if self.weight_decay != 0.0 {
            s += &format!(" weight decay {}", self.weight_decay);
        }
        if self.momentum != 0.0 {
            s += &format!(" momentum {}", self.momentum);
            if self.nesterov {
                s += " (nesterov)";
            }
        }
        let sch = self.schedule;
        if sch.shape != LrShape::Constant || sch.warmup_steps > 0 {
            s += &format!(
                ", {} schedule over {} steps",
                sch.shape.name(),
                sch.total_steps
            );
            if sch.warmup_steps > 0 {
                s += &format!(" ({} warm-up)", sch.warmup_steps);
            }
        }
        if let Some(x) = self.clip_grad_norm {
            s += &format!(", gradients clipped to norm {x}");
        }
        s
    }
}

/// An optimizer on the device: its configuration and its state arenas (one per
/// [`OptimizerConfig::state_names`], each as long as the parameter arena).
pub struct Optimizer {
    pub config: OptimizerConfig,
    pub state: Vec<GpuTensor>,
    /// The gradient clipping's partial sums (when clipping).
    clip_partials: Option<GpuTensor>,
}

impl Optimizer {
    /// Fresh state (zeros) for an arena of `n` parameters.
    pub fn new(ctx: &GpuContext, config: OptimizerConfig, n: usize) -> Result<Self> {
        config.validate()?;
        let state = (config.state_names().iter())
            .map(|name| ctx.zeros(name, &[n], DType::F32))
            .collect::<Result<Vec<_>>>()?;
        let clip_partials = match config.clip_grad_norm {
            Some(_) => Some(clip_grad::partials(ctx, n)?),
            None => None,
        };
        Ok(Optimizer {
            config,
            state,
            clip_partials,
        })
    }

    /// The update of `params` from `grads` (clipping first, if asked for), reading its
    /// step-dependent factors from `step`.
    pub fn plan(
        &self,
        ctx: &GpuContext,
        params: &GpuTensor,
        grads: &GpuTensor,
        step: &StepUniform,
    ) -> Result<Vec<Dispatch>> {
        let c = &self.config;
        let mut d = Vec::new();
        if let (Some(max_norm), Some(partials)) = (c.clip_grad_norm, &self.clip_partials) {
            d.extend(clip_grad::clip_grad_norm(ctx, grads, partials, max_norm)?);
        }
        d.push(match c.kind {
            OptimizerKind::Adam | OptimizerKind::AdamW => {
                let coupled = match c.kind {
                    OptimizerKind::Adam => c.weight_decay,
                    _ => 0.0,
                };
                let hyper = adam::AdamHyper {
                    beta1: c.beta1,
                    beta2: c.beta2,
                    eps: c.eps,
                    weight_decay: coupled,
                };
                adam::adam_step(
                    ctx,
                    params,
                    grads,
                    &self.state[0],
                    &self.state[1],
                    &hyper,
                    step,
                )?
            }
            OptimizerKind::Sgd => sgd::sgd_step(
                ctx,
                params,
                grads,
                self.state.first(),
                (c.momentum, c.nesterov, c.weight_decay),
                step,
            )?,
        });
        Ok(d)
    }

    /// Bytes of its state on the device.
    pub fn device_bytes(&self) -> u64 {
        let clip = self.clip_partials.as_ref().map_or(0, |t| t.len());
        (self.state.iter().map(|t| t.len()).sum::<usize>() + clip) as u64 * 4
    }

    /// The state arenas, read back (in [`OptimizerConfig::state_names`] order).
    pub fn read_state(&self, ctx: &GpuContext) -> Result<Vec<Vec<f32>>> {
        self.state.iter().map(|t| ctx.read_f32(t)).collect()
    }

    /// Restore the state arenas (as [`Optimizer::read_state`] gives them).
    pub fn write_state(&self, ctx: &GpuContext, state: &[Vec<f32>]) -> Result<()> {
        if state.len() != self.state.len() {
            return Err(Error::Config(format!(
                "{} keeps {} state arenas ({}), {} given",
                self.config.kind,
                self.state.len(),
                self.config.state_names().join(", "),
                state.len()
            )));
        }
        for (t, v) in self.state.iter().zip(state) {
            ctx.write_f32(t, v)?;
        }
        Ok(())
    }
}
