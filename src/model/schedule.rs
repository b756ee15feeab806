//! The per-step schedule: how every field of the per-step uniform (`kernels::StepParams`) follows
//! from the training step t (1-based over the run): the Philox counter, the seed, Adam's bias
//! corrections and the KL weight (β, ramped up over a warm-up). It is data — a rule per field — so
//! the native engine ([`GpuVae::run_steps`](crate::model::GpuVae::run_steps)) and the exported
//! plan's runtime (`web/app.js`, `evalRule`) evaluate the same rules instead of each keeping a copy
//! of the arithmetic. The batch offset is not scheduled: the runner knows where the batch starts.

use crate::kernels::StepParams;
use crate::ops::AdamConfig;
use serde_json::{Value, json};

/// How one field's value follows from the training step t (f64 arithmetic, rounded to the field's
/// type once at the end, as PyTorch computes its step factors in Python floats).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    /// The same value every step.
    Const(f64),
    /// t itself.
    Step,
    /// `scale / (1 − base^t)` (Adam's bias-corrected step size; `powi`, square and multiply).
    ScaleOverOneMinusPow { scale: f64, base: f64 },
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
            Rule::ScaleOverOneMinusPow { scale, base } => scale / (1.0 - base.powi(t as i32)),
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
            Rule::ScaleOverOneMinusPow { scale, base } => {
                json!({"rule": "scale_over_one_minus_pow", "scale": scale, "base": base})
            }
            Rule::SqrtOneMinusPow { base } => json!({"rule": "sqrt_one_minus_pow", "base": base}),
            Rule::Ramp { to, steps } => json!({"rule": "ramp", "to": to, "steps": steps}),
        }
    }
}

/// The KL term's weight in the objective: β (`--beta`, 1 for the ELBO), reached linearly over the
/// first `warmup_steps` training steps (`--kl-warmup` epochs × steps per epoch; 0: none).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KlWeight {
    pub beta: f64,
    pub warmup_steps: f64,
}

impl KlWeight {
    /// The KL weight of `cfg` (`--beta`, `--kl-warmup` in epochs) for epochs of `steps_per_epoch`.
    pub fn of(cfg: &crate::model::VaeConfig, steps_per_epoch: usize) -> Self {
        KlWeight {
            beta: cfg.beta,
            warmup_steps: cfg.kl_warmup * steps_per_epoch as f64,
        }
    }
}

impl Default for KlWeight {
    fn default() -> Self {
        KlWeight {
            beta: 1.0,
            warmup_steps: 0.0,
        }
    }
}

/// A rule for every scheduled field of the per-step uniform, by field name (`StepParams::FIELDS`).
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub rules: Vec<(&'static str, Rule)>,
}

impl Schedule {
    /// The training run's schedule.
    pub fn new(adam: &AdamConfig, kl: KlWeight, seed: u64) -> Self {
        let meant = AdamConfig::meant;
        Schedule {
            rules: vec![
                ("rng_step", Rule::Step),
                ("seed_lo", Rule::Const((seed as u32) as f64)),
                ("seed_hi", Rule::Const(((seed >> 32) as u32) as f64)),
                (
                    "adam_step_size",
                    Rule::ScaleOverOneMinusPow {
                        scale: meant(adam.lr),
                        base: meant(adam.beta1),
                    },
                ),
                (
                    "adam_bc2_sqrt",
                    Rule::SqrtOneMinusPow {
                        base: meant(adam.beta2),
                    },
                ),
                (
                    "kl_weight",
                    Rule::Ramp {
                        to: kl.beta,
                        steps: kl.warmup_steps,
                    },
                ),
            ],
        }
    }

    /// The uniform of training step `t` for a batch starting at `batch_offset`.
    pub fn params(&self, t: u64, batch_offset: u32) -> StepParams {
        let mut p = StepParams {
            batch_offset,
            ..StepParams::default()
        };
        let bytes = bytemuck::bytes_of_mut(&mut p);
        for (name, rule) in &self.rules {
            let (_, offset, ty) = StepParams::FIELDS
                .iter()
                .find(|(n, _, _)| n == name)
                .copied()
                .unwrap_or_else(|| panic!("schedule field {name} is not a StepParams field"));
            let v = rule.at(t);
            let word = match ty {
                "u32" => (v as u32).to_le_bytes(),
                _ => (v as f32).to_le_bytes(),
            };
            bytes[offset..offset + 4].copy_from_slice(&word);
        }
        p
    }

    /// The KL weight at step `t`.
    pub fn kl_weight(&self, t: u64) -> f64 {
        (self.rules.iter())
            .find(|(n, _)| *n == "kl_weight")
            .map_or(1.0, |(_, r)| r.at(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_factors_are_the_optimizer_s_bit_for_bit() {
        let adam = AdamConfig::default();
        let s = Schedule::new(&adam, KlWeight::default(), 0x1234_5678_9abc_def0);
        for t in [1u64, 2, 7, 100, 2345] {
            let p = s.params(t, 17);
            let (ss, bc2) = adam.step_factors(t);
            assert_eq!(p.adam_step_size, ss as f32, "t = {t}");
            assert_eq!(p.adam_bc2_sqrt, bc2 as f32, "t = {t}");
            assert_eq!(p.rng_step, t as u32);
            assert_eq!((p.seed_lo, p.seed_hi), (0x9abc_def0, 0x1234_5678));
            assert_eq!(p.batch_offset, 17);
            assert_eq!(p.kl_weight, 1.0);
        }
    }

    #[test]
    fn kl_warmup_ramps_from_zero_to_beta() {
        let kl = KlWeight {
            beta: 4.0,
            warmup_steps: 10.0,
        };
        let s = Schedule::new(&AdamConfig::default(), kl, 0);
        let w: Vec<f64> = (1..=13).map(|t| s.kl_weight(t)).collect();
        assert_eq!(w[0], 0.0);
        assert_eq!(w[5], 4.0 * 0.5);
        assert_eq!(w[10], 4.0);
        assert_eq!(w[12], 4.0);
        assert!(w.windows(2).all(|p| p[1] >= p[0]));
        // A fractional warm-up: steps need not be whole.
        let s = Schedule::new(
            &AdamConfig::default(),
            KlWeight {
                beta: 1.0,
                warmup_steps: 2.5,
            },
            0,
        );
        assert_eq!(s.kl_weight(2), 0.4);
        assert_eq!(s.kl_weight(4), 1.0);
    }
}
