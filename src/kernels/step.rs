//! The per-step uniform: the few values that change every step (batch offset, noise counter,
//! seed, the optimizer's step factors, the KL weight), written once per step into one 32-byte
//! buffer that the gather, reparameterisation, optimizer and IWAE kernels read. It mirrors
//! `StepParams` in `shaders/common.wgsl`. The optimizer's three words are its own: each optimizer
//! (`crate::optim`) supplies their rules.

use crate::gpu::GpuContext;
use serde_json::{Value, json};

/// Values that change every step, written once per step into one small uniform buffer that the
/// gather, reparameterisation, optimizer and IWAE kernels read (mirrors `StepParams` in
/// shaders/common.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StepParams {
    /// First position of this batch in the epoch's index list.
    pub batch_offset: u32,
    /// Step counter fed to the Philox counter: same (seed, step, element) → same eps.
    pub rng_step: u32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    /// The optimizer's step: Adam's `lr_t / (1 - β1^t)`, SGD's `lr_t` (`lr_t` the scheduled lr).
    pub step_size: f32,
    /// Adam's `sqrt(1 - β2^t)`.
    pub bc2_sqrt: f32,
    /// The KL term's weight in the objective being minimised (β, ramped up over a warm-up): the
    /// reparameterisation's backward and the loss reduction's weighted KL read it.
    pub kl_weight: f32,
    /// AdamW's decoupled weight decay factor `1 - lr_t·λ`; 1 for the other optimizers.
    pub decay: f32,
}

impl Default for StepParams {
    /// Zeros, but a decay factor of 1 (a factor of 0 would zero every weight it touched).
    fn default() -> Self {
        StepParams {
            batch_offset: 0,
            rng_step: 0,
            seed_lo: 0,
            seed_hi: 0,
            step_size: 0.0,
            bc2_sqrt: 0.0,
            kl_weight: 0.0,
            decay: 1.0,
        }
    }
}

impl StepParams {
    /// (name, byte offset, WGSL type) of every field, for runtimes that write the uniform
    /// themselves (the exported plan).
    pub const FIELDS: [(&'static str, usize, &'static str); 8] = [
        (
            "batch_offset",
            std::mem::offset_of!(StepParams, batch_offset),
            "u32",
        ),
        (
            "rng_step",
            std::mem::offset_of!(StepParams, rng_step),
            "u32",
        ),
        ("seed_lo", std::mem::offset_of!(StepParams, seed_lo), "u32"),
        ("seed_hi", std::mem::offset_of!(StepParams, seed_hi), "u32"),
        (
            "step_size",
            std::mem::offset_of!(StepParams, step_size),
            "f32",
        ),
        (
            "bc2_sqrt",
            std::mem::offset_of!(StepParams, bc2_sqrt),
            "f32",
        ),
        (
            "kl_weight",
            std::mem::offset_of!(StepParams, kl_weight),
            "f32",
        ),
        ("decay", std::mem::offset_of!(StepParams, decay), "f32"),
    ];

    pub fn with_seed(seed: u64) -> Self {
        StepParams {
            seed_lo: seed as u32,
            seed_hi: (seed >> 32) as u32,
            kl_weight: 1.0,
            ..Default::default()
        }
    }
}

/// The per-step uniform buffer.
pub struct StepUniform {
    pub buffer: wgpu::Buffer,
}

impl StepUniform {
    pub fn new(ctx: &GpuContext, value: &StepParams) -> Self {
        StepUniform {
            buffer: super::uniform(ctx, "step params", value),
        }
    }

    /// Queue new values; they apply to every later submit.
    pub fn write(&self, ctx: &GpuContext, value: &StepParams) {
        ctx.queue
            .write_buffer(&self.buffer, 0, bytemuck::bytes_of(value));
    }
}

/// The shape of the learning rate over a run (`--lr-schedule`, `--warmup-steps`): the factor the
/// base lr is multiplied by at each step, as `torch.optim.lr_scheduler.LambdaLR` with that factor
/// (stepped after every optimizer step, so step t uses the factor of t − 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    pub shape: LrShape,
    /// Linear warm-up: the factor is (s + 1)/N over the first N steps (lr/N at the first step, lr
    /// at step N); 0: none.
    pub warmup_steps: u64,
    /// The run's last step (epochs × steps per epoch): a cosine reaches 0 there.
    pub total_steps: u64,
}

/// How the factor goes after the warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LrShape {
    /// 1 throughout.
    Constant,
    /// From 1 at the end of the warm-up (the first step without one) down to 0 at the run's last
    /// step, along half a cosine.
    Cosine,
}

impl LrShape {
    pub const ALL: [(LrShape, &'static str); 2] =
        [(LrShape::Constant, "constant"), (LrShape::Cosine, "cosine")];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("?", |(_, n)| n)
    }

    pub fn parse(name: &str) -> Option<LrShape> {
        (Self::ALL.iter())
            .find(|(_, n)| n.eq_ignore_ascii_case(name.trim()))
            .map(|(s, _)| *s)
    }
}

impl LrSchedule {
    /// No schedule: the factor is 1 at every step.
    pub const CONSTANT: LrSchedule = LrSchedule {
        shape: LrShape::Constant,
        warmup_steps: 0,
        total_steps: 0,
    };

    /// The factor at training step `t` (1-based): LambdaLR's `lr_lambda(t − 1)`.
    pub fn factor(&self, t: u64) -> f64 {
        let s = t.saturating_sub(1);
        let n = self.warmup_steps;
        if s + 1 < n {
            return (s + 1) as f64 / n as f64;
        }
        match self.shape {
            LrShape::Constant => 1.0,
            LrShape::Cosine => {
                // The peak: the warm-up's last step (or the first step without one).
                let peak = n.max(1) - 1;
                let span = self.total_steps.saturating_sub(1).saturating_sub(peak);
                if span == 0 {
                    return 1.0;
                }
                let progress = ((s - peak) as f64 / span as f64).min(1.0);
                0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }

    /// A schedule that changes nothing (the factor is exactly 1 at every step).
    pub fn is_constant(&self) -> bool {
        self.shape == LrShape::Constant && self.warmup_steps <= 1
    }

    /// As the exported plan writes it (`docs/PLAN_FORMAT.md`, "uniform").
    pub fn to_json(&self) -> Value {
        json!({"shape": self.shape.name(), "warmup_steps": self.warmup_steps,
               "total_steps": self.total_steps})
    }
}

/// How one field's value follows from the training step t (f64 arithmetic, rounded to the field's
/// type once at the end, as PyTorch computes its step factors in Python floats).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    /// The same value every step.
    Const(f64),
    /// t itself.
    Step,
    /// `lr_t`: the base lr times the schedule's factor at t (SGD's step).
    Lr { lr: f64, schedule: LrSchedule },
    /// `lr_t / (1 − base^t)` (Adam's bias-corrected step size; `powi`, square and multiply).
    LrOverOneMinusPow {
        lr: f64,
        base: f64,
        schedule: LrSchedule,
    },
    /// `1 − lr_t·times` (AdamW's decoupled weight decay factor, `times` = λ).
    OneMinusLrTimes {
        lr: f64,
        times: f64,
        schedule: LrSchedule,
    },
    /// `sqrt(1 − base^t)`.
    SqrtOneMinusPow { base: f64 },
    /// `to · min(1, (t − 1) / steps)`: 0 at the first step, `to` from step `steps + 1` on, linear
    /// between; `to` throughout when `steps` is 0 (the KL warm-up).
    Ramp { to: f64, steps: f64 },
}

impl Rule {
    /// The rule's value at step `t`.
    pub fn at(&self, t: u64) -> f64 {
        match *self {
            Rule::Const(v) => v,
            Rule::Step => t as f64,
            Rule::Lr { lr, schedule } => lr * schedule.factor(t),
            // PyTorch: group['lr'] = base · factor, then step_size = lr / (1 − β1^t), in f64.
            Rule::LrOverOneMinusPow { lr, base, schedule } => {
                lr * schedule.factor(t) / (1.0 - base.powi(t as i32))
            }
            Rule::OneMinusLrTimes {
                lr,
                times,
                schedule,
            } => 1.0 - lr * schedule.factor(t) * times,
            Rule::SqrtOneMinusPow { base } => (1.0 - base.powi(t as i32)).sqrt(),
            Rule::Ramp { to, steps } => {
                if steps <= 0.0 {
                    to
                } else {
                    to * ((t.saturating_sub(1)) as f64 / steps).min(1.0)
                }
            }
        }
    }

    /// The rule as the exported plan writes it (`docs/PLAN_FORMAT.md`, "uniform").
    pub fn to_json(&self) -> Value {
        match *self {
            Rule::Const(value) => json!({"rule": "const", "value": value}),
            Rule::Step => json!({"rule": "step"}),
            Rule::Lr { lr, schedule } => {
                json!({"rule": "lr", "lr": lr, "schedule": schedule.to_json()})
            }
            Rule::LrOverOneMinusPow { lr, base, schedule } => json!({
                "rule": "lr_over_one_minus_pow", "lr": lr, "base": base,
                "schedule": schedule.to_json()
            }),
            Rule::OneMinusLrTimes {
                lr,
                times,
                schedule,
            } => json!({
                "rule": "one_minus_lr_times", "lr": lr, "times": times,
                "schedule": schedule.to_json()
            }),
            Rule::SqrtOneMinusPow { base } => json!({"rule": "sqrt_one_minus_pow", "base": base}),
            Rule::Ramp { to, steps } => json!({"rule": "ramp", "to": to, "steps": steps}),
        }
    }
}

/// This module's uniform structs, as `kernels::contracts` checks them against `Shader::ADAM`.
#[cfg(test)]
pub(crate) const UNIFORMS: &[crate::kernels::UniformLayout] = &[uniform_layout!(
    StepParams,
    batch_offset,
    rng_step,
    seed_lo,
    seed_hi,
    step_size,
    bc2_sqrt,
    kl_weight,
    decay
)];
