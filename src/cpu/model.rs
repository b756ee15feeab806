//! The whole VAE step on the CPU, in f64, with the GPU's arena layout: the oracle of the
//! whole-model parity test. Written with the same helpers in the same order as `model/gpu.rs`'s
//! `plan_step`, so the two read side by side; unfused: the GPU's fused epilogues (bias gradients as
//! row sums, activation backward masks, the likelihood in the logits product) are separate ops here.

use super::ops;
use crate::kernels::reparam_kl::Logvar;
use crate::model::body::{Body, Op};
use crate::model::layers::cpu_forward as layer_forward;
use crate::model::{Layer, Objective, ParamLayout, VaeConfig};
use crate::ops::Act;
use crate::optim::OptimizerConfig;

/// Every intermediate and gradient of one step (activations row-major as on the GPU).
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// Each tensor the encoder's graph writes `[B, w_t]` (a chain's: each hidden layer's output).
    pub enc: Vec<Vec<f64>>,
    pub mu: Vec<f64>,
    pub logvar: Vec<f64>,
    pub z: Vec<f64>,
    /// Each tensor the decoder's graph writes `[L·B, w_t]`.
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

/// The attention core on `rows` images of `[C, h, w]`: its output and each image's probabilities.
fn attention_forward(
    [q, k, v]: [&[f64]; 3],
    [c, h, w]: [usize; 3],
    rows: usize,
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let (n, per) = (h * w, c * h * w);
    let scale = 1.0 / (c as f64).sqrt();
    let mut out = Vec::with_capacity(rows * per);
    let mut probs = Vec::with_capacity(rows);
    for b in 0..rows {
        let r = b * per..(b + 1) * per;
        let (o, p) = ops::attention_forward(&q[r.clone()], &k[r.clone()], &v[r], c, n, scale);
        out.extend(o);
        probs.push(p);
    }
    (out, probs)
}

/// The twin of `GpuVae::forward_body`: every tensor the side's graph writes, from its input `x`.
fn forward_body(
    params: &[f64],
    body: &Body,
    layers: &[Layer],
    x: &[f64],
    rows: usize,
    labels: &[u32],
) -> Vec<Vec<f64>> {
    let mut outs: Vec<Vec<f64>> = Vec::with_capacity(body.nodes.len());
    for node in &body.nodes {
        let value = |t: usize| if t == 0 { x } else { &outs[t - 1][..] };
        let y = match node.op {
            Op::Layer(j) => {
                let l = &layers[j];
                layer_forward(params, l, value(node.inputs[0]), rows, l.act, labels)
            }
            Op::Add(act) => ops::add_act(value(node.inputs[0]), value(node.inputs[1]), act),
            Op::Upsample([_, h, w]) => ops::upsample_nearest(value(node.inputs[0]), [h, w]),
            Op::Attention(image) => {
                attention_forward([0, 1, 2].map(|j| value(node.inputs[j])), image, rows).0
            }
        };
        outs.push(y);
    }
    outs
}

/// The twin of `GpuVae::backward_body`: the side's graph and the layer `last` that reads its last
/// tensor, in reverse, from `last_dy`; writes the parameters' gradients into `grads` and returns
/// every tensor's gradient (before the activation that produced it; the input's only when
/// `input_grad`, else empty). A tensor read by several nodes sums their contributions.
#[allow(clippy::too_many_arguments)]
fn backward_body(
    params: &[f64],
    grads: &mut [f64],
    body: &Body,
    layers: &[Layer],
    last: &Layer,
    last_dy: &[f64],
    x: &[f64],
    outs: &[Vec<f64>],
    rows: usize,
    input_grad: bool,
    labels: &[u32],
) -> Vec<Vec<f64>> {
    let n = body.widths.len();
    let mut dts: Vec<Option<Vec<f64>>> = vec![None; n];
    let value = |t: usize| if t == 0 { x } else { &outs[t - 1][..] };
    let wants = |t: usize| t > 0 || input_grad;
    // Add a contribution to tensor t's gradient.
    let give = |dts: &mut Vec<Option<Vec<f64>>>, t: usize, g: Vec<f64>| match &mut dts[t] {
        Some(acc) => acc.iter_mut().zip(g).for_each(|(a, v)| *a += v),
        None => dts[t] = Some(g),
    };
    let mut back = |l: &Layer, dy: &[f64], t: usize, dts: &mut Vec<Option<Vec<f64>>>| {
        let dx = wants(t).then_some(body.acts[t]);
        if let Some(g) = layer_backward(params, grads, l, dy, value(t), rows, dx, labels) {
            give(dts, t, g);
        }
    };
    back(last, last_dy, body.output(), &mut dts);
    for (i, node) in body.nodes.iter().enumerate().rev() {
        let dy = dts[i + 1].clone().unwrap_or_default();
        match node.op {
            Op::Layer(j) => back(&layers[j], &dy, node.inputs[0], &mut dts),
            Op::Add(_) => {
                for &t in &node.inputs {
                    if wants(t) {
                        let act = body.acts[t].unwrap_or(Act::Identity);
                        give(&mut dts, t, ops::act_backward(&dy, value(t), act));
                    }
                }
            }
            Op::Upsample([_, h, w]) => {
                let t = node.inputs[0];
                if wants(t) {
                    give(&mut dts, t, ops::upsample_nearest_grad(&dy, [h, w]));
                }
            }
            Op::Attention(image) => {
                let ins = [0, 1, 2].map(|j| node.inputs[j]);
                let qkv = ins.map(value);
                let (_, probs) = attention_forward(qkv, image, rows);
                let [c, h, w] = image;
                let (n, per) = (h * w, c * h * w);
                let scale = 1.0 / (c as f64).sqrt();
                let mut grads = [0, 1, 2].map(|_| vec![0.0; rows * per]);
                for (b, p) in probs.iter().enumerate() {
                    let at = |t: &[f64]| t[b * per..(b + 1) * per].to_vec();
                    let (q, k, v) = (at(qkv[0]), at(qkv[1]), at(qkv[2]));
                    let (dq, dk, dv) =
                        ops::attention_backward(&q, &k, &v, p, &at(&dy), c, n, scale);
                    for (g, d) in grads.iter_mut().zip([dq, dk, dv]) {
                        g[b * per..(b + 1) * per].copy_from_slice(&d);
                    }
                }
                for (t, g) in ins.into_iter().zip(grads) {
                    if wants(t) {
                        give(&mut dts, t, g);
                    }
                }
            }
        }
    }
    dts.into_iter().map(Option::unwrap_or_default).collect()
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
        t.enc = forward_body(p, &layout.enc_body, &layout.encoder, x, b, labels);
        let h = t.enc.last().map_or(x, |v| &v[..]);
        let heads = layer_forward(p, &layout.heads, h, b, Act::Identity, labels);
        (t.mu, t.logvar) = crate::ops::split_heads(&heads, k);
        // An AutoencoderKL's posterior reads its logvar clamped to [−30, 20].
        let clamped = self.cfg.logvar() == Logvar::Clamped;
        let lv_used: Vec<f64> = match clamped {
            true => t.logvar.iter().map(|v| v.clamp(-30.0, 20.0)).collect(),
            false => t.logvar.clone(),
        };
        (t.z, t.kl) = ops::reparam_forward(&t.mu, &lv_used, eps, 1.0);
        t.dec = forward_body(p, &layout.dec_body, &layout.decoder, &t.z, lb, labels);
        let h = t.dec.last().map_or(&t.z[..], |v| &v[..]);
        t.logits = layer_forward(p, &layout.output, h, lb, Act::Identity, labels);
        let log_sigma = match (layout.log_sigma, self.cfg.likelihood) {
            (Some(o), _) => p[o],
            (None, l) => l.fixed_log_scale() as f64,
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
        let (body, layers) = (&layout.dec_body, &layout.decoder[..]);
        let mut dxs = backward_body(
            p,
            &mut g,
            body,
            layers,
            &layout.output,
            &t.dlogits,
            &t.z,
            &t.dec,
            lb,
            true,
            labels,
        );
        t.dz = std::mem::take(&mut dxs[0]);
        t.d_dec = dxs.into_iter().skip(1).collect();
        (t.dmu, t.dlogvar) = match &iwae {
            Some((w, _)) => ops::reparam_backward_iwae(&t.mu, &t.logvar, eps, &t.dz, w, k),
            None => ops::reparam_backward(&t.mu, &lv_used, eps, &t.dz, self.kl_weight),
        };
        if clamped {
            // torch.clamp's gradient: passed inside the bounds and at them, 0 outside.
            for (g, v) in t.dlogvar.iter_mut().zip(&t.logvar) {
                if !(-30.0..=20.0).contains(v) {
                    *g = 0.0;
                }
            }
        }
        let dheads: Vec<f64> = t
            .dmu
            .chunks(k)
            .zip(t.dlogvar.chunks(k))
            .flat_map(|(m, v)| m.iter().chain(v).copied())
            .collect();
        let (body, layers) = (&layout.enc_body, &layout.encoder[..]);
        // No gradient for the data.
        let dxs = backward_body(
            p,
            &mut g,
            body,
            layers,
            &layout.heads,
            &dheads,
            x,
            &t.enc,
            b,
            false,
            labels,
        );
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
