//! The per-step schedule: how every field of the per-step uniform (`kernels::StepParams`) follows
//! from the training step t (1-based over the run): the Philox counter, the seed, the KL weight (β,
//! ramped up over a warm-up) and the optimizer's own fields (`crate::optim`: Adam's bias-corrected
//! step size under a learning-rate schedule, AdamW's decay, SGD's lr). It is data — a rule per field — so
//! the native engine ([`GpuVae::run_steps`](crate::model::GpuVae::run_steps)) and the exported
//! plan's runtime (`web/app.js`, `evalRule`) evaluate the same rules instead of each keeping a copy
//! of the arithmetic. The batch offset is not scheduled: the runner knows where the batch starts.

use crate::kernels::StepParams;
pub use crate::kernels::step::{LrSchedule, LrShape, Rule};

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
    /// The training run's schedule: the noise counter, the seed and the KL weight, then the
    /// optimizer's own fields (`update`: [`crate::optim::OptimizerConfig::rules`]; none for a run
    /// that updates nothing).
    pub fn new(kl: KlWeight, seed: u64, update: &[(&'static str, Rule)]) -> Self {
        let mut rules = vec![
            ("rng_step", Rule::Step),
            ("seed_lo", Rule::Const((seed as u32) as f64)),
            ("seed_hi", Rule::Const(((seed >> 32) as u32) as f64)),
            (
                "kl_weight",
                Rule::Ramp {
                    to: kl.beta,
                    steps: kl.warmup_steps,
                },
            ),
        ];
        rules.extend_from_slice(update);
        Schedule { rules }
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

    use crate::optim::OptimizerConfig;

    #[test]
    fn adam_factors_are_the_optimizer_s_bit_for_bit() {
        let adam = OptimizerConfig::default();
        let s = Schedule::new(KlWeight::default(), 0x1234_5678_9abc_def0, &adam.rules());
        for t in [1u64, 2, 7, 100, 2345] {
            let p = s.params(t, 17);
            let (ss, bc2) = adam.step_factors(t);
            assert_eq!(p.step_size, ss as f32, "t = {t}");
            assert_eq!(p.bc2_sqrt, bc2 as f32, "t = {t}");
            assert_eq!(p.decay, 1.0, "Adam decays nothing");
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
        let s = Schedule::new(kl, 0, &[]);
        let w: Vec<f64> = (1..=13).map(|t| s.kl_weight(t)).collect();
        assert_eq!(w[0], 0.0);
        assert_eq!(w[5], 4.0 * 0.5);
        assert_eq!(w[10], 4.0);
        assert_eq!(w[12], 4.0);
        assert!(w.windows(2).all(|p| p[1] >= p[0]));
        // A fractional warm-up: steps need not be whole.
        let s = Schedule::new(
            KlWeight {
                beta: 1.0,
                warmup_steps: 2.5,
            },
            0,
            &[],
        );
        assert_eq!(s.kl_weight(2), 0.4);
        assert_eq!(s.kl_weight(4), 1.0);
    }

    #[test]
    fn lr_schedules_warm_up_then_follow_their_shape() {
        let cos = LrSchedule {
            shape: LrShape::Cosine,
            warmup_steps: 4,
            total_steps: 14,
        };
        let f: Vec<f64> = (1..=14).map(|t| cos.factor(t)).collect();
        // lr/N at the first step, lr at step N, then half a cosine to 0 at the last step.
        assert_eq!(&f[..4], &[0.25, 0.5, 0.75, 1.0]);
        assert!((f[8] - 0.5).abs() < 1e-12, "the cosine's middle: {}", f[8]);
        assert!(f[13].abs() < 1e-15, "0 at the run's last step: {}", f[13]);
        assert!(f[3..].windows(2).all(|w| w[1] < w[0]));
        // Without a warm-up the cosine starts at 1.
        let cos0 = LrSchedule {
            warmup_steps: 0,
            ..cos
        };
        assert_eq!(cos0.factor(1), 1.0);
        assert!(cos0.factor(14).abs() < 1e-15);
        let warm = LrSchedule {
            shape: LrShape::Constant,
            warmup_steps: 3,
            total_steps: 10,
        };
        assert_eq!(
            (1..=5).map(|t| warm.factor(t)).collect::<Vec<_>>(),
            [1.0 / 3.0, 2.0 / 3.0, 1.0, 1.0, 1.0]
        );
        assert!((1..100).all(|t| LrSchedule::CONSTANT.factor(t) == 1.0));
    }
}
