//! The whole VAE step on the CPU, in f64, with the GPU's arena layout: the oracle of the
//! whole-model parity test. Written with the same helpers in the same order as `model/gpu.rs`'s
//! `plan_step`, so the two read side by side; unfused: the GPU's fused epilogues (bias gradients as
//! row sums, activation backward masks, the likelihood in the logits product) are separate ops here.

use super::ops;
use crate::model::{Layer, Objective, ParamLayout, VaeConfig};
use crate::ops::Act;
use crate::optim::OptimizerConfig;

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
    /// The reconstruction term, -log p(x | z) averaged over the L samples.
    pub recon: f64,
    pub kl: f64,
    /// The -ELBO, `recon + kl`.
    pub loss: f64,
    /// What the gradients are of: `recon + kl_weight·kl`.
    pub objective: f64,
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
    pub optimizer: OptimizerConfig,
    pub params: Vec<f64>,
    /// The optimizer's state arenas ([`OptimizerConfig::state_names`]).
    pub state: Vec<Vec<f64>>,
    /// Training steps taken, t.
    pub train_steps: u64,
    /// The KL's weight in the objective (β; a warm-up step's value): `cfg.beta` to begin with.
    pub kl_weight: f64,
    /// A conditional model's classes of the batch's images (`[B]`; decoder row l·B + b reads
    /// entry b).
    pub labels: Vec<u32>,
}

/// The twin of `model::gpu::layer_forward` (`model::layers::cpu_forward`).
fn layer_forward(
    params: &[f64],
    l: &Layer,
    x: &[f64],
    rows: usize,
    act: Act,
    labels: &[u32],
) -> Vec<f64> {
    crate::model::layers::cpu_forward(params, l, x, rows, act, labels)
}

/// The twin of `model::gpu::layer_backward`: writes the weight and bias gradients into `grads`;
/// returns `dx ⊙ act′(x)` when asked (`Some(act)`, with `act` the activation whose output `x` is,
/// `None` inside for an `x` no activation produced). A conditional Linear's label columns get
/// their gradient from `dy` and the rows' classes.
#[allow(clippy::too_many_arguments)]
fn layer_backward(
    params: &[f64],
    grads: &mut [f64],
    l: &Layer,
    dy: &[f64],
    x: &[f64],
    rows: usize,
    dx: Option<Option<Act>>,
    labels: &[u32],
) -> Option<Vec<f64>> {
    let g = crate::model::layers::cpu_backward(params, l, dy, x, rows, dx.is_some(), labels);
    if let Some(dl) = g.dlabels {
        grads[l.label_weight_range()].copy_from_slice(&dl);
    }
    grads[l.weight_range()].copy_from_slice(&g.dw);
    grads[l.bias_range()].copy_from_slice(&g.db);
    g.dx.map(|g| match dx.flatten() {
        Some(act) => ops::act_backward(&g, x, act),
        None => g,
    })
}

/// The twin of `GpuVae::backward_chain`: layer j read `xs[j]`, its output's gradient is `dys[j]`;
/// returns the input gradients (`dxs[j]` of layer j; layer 0's only with `first_dx`).
#[allow(clippy::too_many_arguments)]
fn backward_chain(
    params: &[f64],
    grads: &mut [f64],
    layers: &[&Layer],
    xs: &[&[f64]],
    last_dy: &[f64],
    rows: usize,
    first_dx: bool,
    labels: &[u32],
) -> Vec<Vec<f64>> {
    let n = layers.len();
    let mut dxs = vec![Vec::new(); n];
    let mut dy = last_dy.to_vec();
    for j in (0..n).rev() {
        let dx = match j {
            0 => first_dx.then_some(None),
            _ => Some(Some(layers[j - 1].act)),
        };
        let g = layer_backward(params, grads, layers[j], &dy, xs[j], rows, dx, labels);
        dy = g.clone().unwrap_or_default();
        dxs[j] = g.unwrap_or_default();
    }
    dxs
}

impl CpuVae {
    pub fn new(cfg: VaeConfig, optimizer: OptimizerConfig, params: &[f32]) -> Self {
        let layout = ParamLayout::new(&cfg);
        assert_eq!(params.len(), layout.len, "parameter arena length");
        let n = layout.len;
        let cfg_beta = cfg.beta;
        CpuVae {
            cfg,
            layout,
            optimizer,
            params: params.iter().map(|&p| p as f64).collect(),
            state: vec![vec![0.0; n]; optimizer.state_names().len()],
            train_steps: 0,
            kl_weight: cfg_beta,
            labels: Vec::new(),
        }
    }

    /// Forward and backward for a batch `x` `[B, D]` with noise `eps` `[L·B, K]`.
    pub fn forward_backward(&self, x: &[f64], eps: &[f64]) -> Trace {
        let (d, k) = (self.cfg.input, self.cfg.latent);
        let b = x.len() / d;
        let lb = self.cfg.samples * b;
        assert_eq!(eps.len(), lb * k, "eps length");
        let (p, layout) = (&self.params[..], &self.layout);
        let mut t = Trace::default();
        let labels = &self.labels[..];
        assert!(
            !self.cfg.is_conditional() || labels.len() == b,
            "a conditional model needs the batch's {b} labels"
        );

        // ---- forward: encoder layers, heads, reparameterize, decoder layers, loss
        let mut h = x.to_vec();
        for l in &layout.encoder {
            h = layer_forward(p, l, &h, b, l.act, labels);
            t.enc.push(h.clone());
        }
        let heads = layer_forward(p, &layout.heads, &h, b, Act::Identity, labels);
        (t.mu, t.logvar) = crate::ops::split_heads(&heads, k);
        (t.z, t.kl) = ops::reparam_forward(&t.mu, &t.logvar, eps, 1.0);
        let mut h = t.z.clone();
        for l in &layout.decoder {
            h = layer_forward(p, l, &h, lb, l.act, labels);
            t.dec.push(h.clone());
        }
        t.logits = layer_forward(p, &layout.output, &h, lb, Act::Identity, labels);
        let log_sigma = match (layout.log_sigma, self.cfg.likelihood) {
            (Some(o), _) => p[o],
            (None, l) => l.fixed_log_sigma() as f64,
        };
        let lik = self.cfg.likelihood;
        let mut d_log_sigma;
        (t.recon, t.dlogits, d_log_sigma) =
            ops::recon_forward_backward(lik, &t.logits, x, log_sigma);
        t.loss = t.recon + t.kl;
        t.objective = t.recon + self.kl_weight * t.kl;
        // The IWAE objective: the likelihood's gradients weighted per row by w̃ instead of 1/L.
        let iwae = (self.cfg.objective == Objective::Iwae).then(|| {
            let rowloss = ops::recon_rows(lik, &t.logits, x, d, log_sigma);
            ops::iwae_weights(&rowloss, &t.z, eps, &t.logvar, b, k)
        });
        if let Some((w, obj)) = &iwae {
            t.objective = obj.iter().sum();
            d_log_sigma = 0.0;
            for (i, g) in t.dlogits.iter_mut().enumerate() {
                let (_, dl, ds) = ops::recon_elem(lik, t.logits[i], x[i % x.len()], log_sigma);
                *g = w[i / d] * dl;
                d_log_sigma += w[i / d] * ds;
            }
        }

        // ---- backward: the same layers in reverse order
        let mut g = vec![0.0; layout.len];
        if let Some(o) = layout.log_sigma {
            g[o] = d_log_sigma;
        }
        let layers: Vec<&Layer> = layout.decoder.iter().chain([&layout.output]).collect();
        let xs: Vec<&[f64]> = [&t.z[..]]
            .into_iter()
            .chain(t.dec.iter().map(|v| &v[..]))
            .collect();
        let mut dxs = backward_chain(p, &mut g, &layers, &xs, &t.dlogits, lb, true, labels);
        t.dz = std::mem::take(&mut dxs[0]);
        t.d_dec = dxs.into_iter().skip(1).collect();
        (t.dmu, t.dlogvar) = match &iwae {
            Some((w, _)) => ops::reparam_backward_iwae(&t.mu, &t.logvar, eps, &t.dz, w, k),
            None => ops::reparam_backward(&t.mu, &t.logvar, eps, &t.dz, self.kl_weight),
        };
        let dheads: Vec<f64> = t
            .dmu
            .chunks(k)
            .zip(t.dlogvar.chunks(k))
            .flat_map(|(m, v)| m.iter().chain(v).copied())
            .collect();
        let layers: Vec<&Layer> = layout.encoder.iter().chain([&layout.heads]).collect();
        let xs: Vec<&[f64]> = [x]
            .into_iter()
            .chain(t.enc.iter().map(|v| &v[..]))
            .collect();
        // No gradient for the data.
        let dxs = backward_chain(p, &mut g, &layers, &xs, &dheads, b, false, labels);
        t.d_enc = dxs.into_iter().skip(1).collect();
        t.grads = g;
        t
    }

    /// The batch objective (the reconstruction term averaged over L samples + the weighted KL) of
    /// a full forward and backward pass: what the gradients are of, for finite differences.
    pub fn loss(&self, x: &[f64], eps: &[f64]) -> f64 {
        self.forward_backward(x, eps).objective
    }

    /// One training step: forward, backward, the optimizer. Returns the trace of the step.
    pub fn step(&mut self, x: &[f64], eps: &[f64]) -> Trace {
        let t = self.forward_backward(x, eps);
        self.train_steps += 1;
        ops::optimizer_step(
            &self.optimizer,
            self.train_steps,
            &mut self.params,
            &t.grads,
            &mut self.state,
        );
        t
    }
}
