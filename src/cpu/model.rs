//! The whole VAE step on the CPU, in f64, with the GPU's arena layout: the oracle of the
//! whole-model parity test. Written with the same helpers in the same order as `model/gpu.rs`'s
//! `plan_step`, so the two read side by side; unfused: the GPU's fused epilogues (bias gradients as
//! row sums, activation backward masks, BCE in the logits product) are separate ops here.

use super::ops;
use crate::model::gpu::Activations;
use crate::model::params::Linear;
use crate::model::{ParamLayout, VaeConfig};
use crate::ops::{Act, AdamConfig, Layout};

/// Every intermediate and gradient of one step (activations row-major as on the GPU).
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// Each encoder hidden layer's output `[B, h_i]`.
    pub enc: Vec<Vec<f64>>,
    pub mu: Vec<f64>,
    pub logvar: Vec<f64>,
    pub z: Vec<f64>,
    /// Each decoder hidden layer's output `[L·B, g_i]`.
    pub dec: Vec<Vec<f64>>,
    pub logits: Vec<f64>,
    pub bce: f64,
    pub kl: f64,
    pub loss: f64,
    pub dlogits: Vec<f64>,
    pub d_dec: Vec<Vec<f64>>,
    pub dz: Vec<f64>,
    pub dmu: Vec<f64>,
    pub dlogvar: Vec<f64>,
    pub d_enc: Vec<Vec<f64>>,
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

/// `y = act(x·Wᵀ + b)` for `rows` rows of `x`.
fn linear_forward(params: &[f64], l: &Linear, x: &[f64], rows: usize, act: Act) -> Vec<f64> {
    let pre = ops::matmul(
        Layout::NT,
        x,
        &params[l.weight_range()],
        rows,
        l.outputs,
        l.inputs,
    );
    ops::epilogue(&pre, l.outputs, Some(&params[l.bias_range()]), act)
}

/// The backward of `y = x·Wᵀ + b` given `dy`: writes `dW = dyᵀ·x` and `db = colsum(dy)` into
/// `grads`; returns `dx = (dy·W) ⊙ act′(x)` when asked (`Some(act)`, with `act` the activation
/// whose output `x` is, `None` inside for an `x` no activation produced).
fn linear_backward(
    params: &[f64],
    grads: &mut [f64],
    l: &Linear,
    dy: &[f64],
    x: &[f64],
    rows: usize,
    dx: Option<Option<Act>>,
) -> Option<Vec<f64>> {
    let (i, o) = (l.inputs, l.outputs);
    grads[l.weight_range()].copy_from_slice(&ops::matmul(Layout::TN, dy, x, o, i, rows));
    grads[l.bias_range()].copy_from_slice(&ops::column_sum(dy, rows, o));
    dx.map(|act| {
        let g = ops::matmul(Layout::NN, dy, &params[l.weight_range()], rows, i, o);
        match act {
            Some(act) => ops::act_backward(&g, x, act),
            None => g,
        }
    })
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

    /// Forward and backward for a batch `x` `[B, D]` with noise `eps` `[L·B, K]`.
    pub fn forward_backward(&self, x: &[f64], eps: &[f64]) -> Trace {
        let (d, k, act) = (self.cfg.input, self.cfg.latent, self.cfg.activation);
        let b = x.len() / d;
        let lb = self.cfg.samples * b;
        assert_eq!(eps.len(), lb * k, "eps length");
        let (p, layout) = (&self.params[..], &self.layout);
        let mut t = Trace::default();

        // ---- forward: encoder layers, heads, reparameterize, decoder layers, loss
        let mut h = x.to_vec();
        for l in &layout.encoder {
            h = linear_forward(p, l, &h, b, act);
            t.enc.push(h.clone());
        }
        let heads = linear_forward(p, &layout.heads, &h, b, Act::Identity);
        (t.mu, t.logvar) = Activations::split_heads(&heads, k);
        (t.z, t.kl) = ops::reparam_forward(&t.mu, &t.logvar, eps, 1.0);
        let mut h = t.z.clone();
        for l in &layout.decoder {
            h = linear_forward(p, l, &h, lb, act);
            t.dec.push(h.clone());
        }
        t.logits = linear_forward(p, &layout.output, &h, lb, Act::Identity);
        (t.bce, t.dlogits) = ops::bce_forward_backward(&t.logits, x);
        t.loss = t.bce + t.kl;

        // ---- backward: the same layers in reverse order
        let mut g = vec![0.0; layout.len];
        let n = layout.decoder.len();
        t.d_dec = vec![Vec::new(); n];
        t.d_dec[n - 1] = linear_backward(
            p,
            &mut g,
            &layout.output,
            &t.dlogits,
            &t.dec[n - 1],
            lb,
            Some(Some(act)),
        )
        .unwrap_or_default();
        for i in (0..n).rev() {
            let (below, below_act) = if i == 0 {
                (&t.z, None)
            } else {
                (&t.dec[i - 1], Some(act))
            };
            let dx = linear_backward(
                p,
                &mut g,
                &layout.decoder[i],
                &t.d_dec[i],
                below,
                lb,
                Some(below_act),
            )
            .unwrap_or_default();
            if i == 0 {
                t.dz = dx;
            } else {
                t.d_dec[i - 1] = dx;
            }
        }
        (t.dmu, t.dlogvar) = ops::reparam_backward(&t.mu, &t.logvar, eps, &t.dz, 1.0);
        let dheads: Vec<f64> = t
            .dmu
            .chunks(k)
            .zip(t.dlogvar.chunks(k))
            .flat_map(|(m, v)| m.iter().chain(v).copied())
            .collect();
        let n = layout.encoder.len();
        t.d_enc = vec![Vec::new(); n];
        t.d_enc[n - 1] = linear_backward(
            p,
            &mut g,
            &layout.heads,
            &dheads,
            &t.enc[n - 1],
            b,
            Some(Some(act)),
        )
        .unwrap_or_default();
        for i in (0..n).rev() {
            let below = if i == 0 { x } else { &t.enc[i - 1] };
            let dx = linear_backward(
                p,
                &mut g,
                &layout.encoder[i],
                &t.d_enc[i],
                below,
                b,
                (i > 0).then_some(Some(act)),
            );
            if let Some(dx) = dx {
                t.d_enc[i - 1] = dx;
            }
        }
        t.grads = g;
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
