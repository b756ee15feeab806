//! The whole VAE step on the CPU, in f64, with the GPU's arena layout: the oracle of the
//! whole-model parity test. The same math as `model/gpu.rs`'s planned step, unfused: the GPU's
//! fused epilogues (bias gradients as row sums, ReLU masks, BCE in the logits product) are separate
//! ops here, and the two heads are two products.

use super::ops;
use crate::model::params::idx;
use crate::model::{ParamLayout, VaeConfig};
use crate::ops::{Act, AdamConfig, Layout};

/// Every intermediate and gradient of one step (activations row-major as on the GPU).
#[derive(Clone, Debug, Default)]
pub struct Trace {
    pub h_enc: Vec<f64>,
    pub mu: Vec<f64>,
    pub logvar: Vec<f64>,
    pub z: Vec<f64>,
    pub h_dec: Vec<f64>,
    pub logits: Vec<f64>,
    pub bce: f64,
    pub kl: f64,
    pub loss: f64,
    pub dlogits: Vec<f64>,
    pub dh_dec: Vec<f64>,
    pub dz: Vec<f64>,
    pub dmu: Vec<f64>,
    pub dlogvar: Vec<f64>,
    pub dh_enc: Vec<f64>,
    /// Gradient arena (same layout as the parameters; padding 0).
    pub grads: Vec<f64>,
}

#[derive(Clone, Debug)]
pub struct CpuVae {
    pub cfg: VaeConfig,
    pub layout: ParamLayout,
    pub adam: AdamConfig,
    pub params: Vec<f64>,
    pub m: Vec<f64>,
    pub v: Vec<f64>,
    pub adam_steps: u64,
}

impl CpuVae {
    pub fn new(cfg: VaeConfig, adam: AdamConfig, params: &[f32]) -> Self {
        let layout = ParamLayout::new(&cfg);
        assert_eq!(params.len(), layout.len, "parameter arena length");
        let n = layout.len;
        CpuVae {
            cfg,
            layout,
            adam,
            params: params.iter().map(|&p| p as f64).collect(),
            m: vec![0.0; n],
            v: vec![0.0; n],
            adam_steps: 0,
        }
    }

    fn p(&self, i: usize) -> &[f64] {
        &self.params[self.layout.specs[i].range()]
    }

    /// Forward and backward for a batch `x` `[B, D]` with noise `eps` `[L·B, K]`.
    pub fn forward_backward(&self, x: &[f64], eps: &[f64]) -> Trace {
        let VaeConfig {
            input: d,
            hidden: h,
            latent: k,
            samples: l,
        } = self.cfg;
        let b = x.len() / d;
        let lb = l * b;
        assert_eq!(eps.len(), lb * k, "eps length");
        let linear = |inp: &[f64],
                      rows: usize,
                      w: usize,
                      bias: usize,
                      out: usize,
                      fan_in: usize,
                      act: Act| {
            let pre = ops::matmul(Layout::NT, inp, self.p(w), rows, out, fan_in);
            ops::epilogue(&pre, out, Some(self.p(bias)), act)
        };
        let mut t = Trace::default();
        // forward
        t.h_enc = linear(x, b, idx::ENC_W, idx::ENC_B, h, d, Act::Relu);
        t.mu = linear(&t.h_enc, b, idx::MU_W, idx::MU_B, k, h, Act::Identity);
        t.logvar = linear(&t.h_enc, b, idx::LV_W, idx::LV_B, k, h, Act::Identity);
        let (z, kl) = ops::reparam_forward(&t.mu, &t.logvar, eps, 1.0);
        t.z = z;
        t.kl = kl;
        t.h_dec = linear(&t.z, lb, idx::DEC_W, idx::DEC_B, h, k, Act::Relu);
        t.logits = linear(&t.h_dec, lb, idx::OUT_W, idx::OUT_B, d, h, Act::Identity);
        let (bce, dlogits) = ops::bce_forward_backward(&t.logits, x);
        t.bce = bce;
        t.loss = bce + kl;
        t.dlogits = dlogits;

        // backward
        let mut grads = vec![0.0; self.layout.len];
        let mut put =
            |i: usize, g: Vec<f64>| grads[self.layout.specs[i].range()].copy_from_slice(&g);
        put(
            idx::OUT_W,
            ops::matmul(Layout::TN, &t.dlogits, &t.h_dec, d, h, lb),
        );
        put(idx::OUT_B, ops::column_sum(&t.dlogits, lb, d));
        let dh_dec = ops::matmul(Layout::NN, &t.dlogits, self.p(idx::OUT_W), lb, h, d);
        t.dh_dec = ops::act_backward(&dh_dec, &t.h_dec, Act::Relu);
        put(
            idx::DEC_W,
            ops::matmul(Layout::TN, &t.dh_dec, &t.z, h, k, lb),
        );
        put(idx::DEC_B, ops::column_sum(&t.dh_dec, lb, h));
        t.dz = ops::matmul(Layout::NN, &t.dh_dec, self.p(idx::DEC_W), lb, k, h);
        let (dmu, dlogvar) = ops::reparam_backward(&t.mu, &t.logvar, eps, &t.dz, 1.0);
        t.dmu = dmu;
        t.dlogvar = dlogvar;
        put(
            idx::MU_W,
            ops::matmul(Layout::TN, &t.dmu, &t.h_enc, k, h, b),
        );
        put(idx::MU_B, ops::column_sum(&t.dmu, b, k));
        put(
            idx::LV_W,
            ops::matmul(Layout::TN, &t.dlogvar, &t.h_enc, k, h, b),
        );
        put(idx::LV_B, ops::column_sum(&t.dlogvar, b, k));
        let from_mu = ops::matmul(Layout::NN, &t.dmu, self.p(idx::MU_W), b, h, k);
        let from_lv = ops::matmul(Layout::NN, &t.dlogvar, self.p(idx::LV_W), b, h, k);
        let dh_enc: Vec<f64> = from_mu.iter().zip(&from_lv).map(|(a, c)| a + c).collect();
        t.dh_enc = ops::act_backward(&dh_enc, &t.h_enc, Act::Relu);
        put(idx::ENC_W, ops::matmul(Layout::TN, &t.dh_enc, x, h, d, b));
        put(idx::ENC_B, ops::column_sum(&t.dh_enc, b, h));
        t.grads = grads;
        t
    }

    /// The batch loss (BCE averaged over L samples + KL) of a full forward and backward pass, for
    /// finite differences.
    pub fn loss(&self, x: &[f64], eps: &[f64]) -> f64 {
        self.forward_backward(x, eps).loss
    }

    /// One training step: forward, backward, Adam. Returns the trace of the step.
    pub fn step(&mut self, x: &[f64], eps: &[f64]) -> Trace {
        let t = self.forward_backward(x, eps);
        self.adam_steps += 1;
        ops::adam_step(
            &mut self.params,
            &t.grads,
            &mut self.m,
            &mut self.v,
            &self.adam,
            self.adam_steps,
        );
        t
    }
}
