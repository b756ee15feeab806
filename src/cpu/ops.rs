//! Reference forward/backward math for every kernel family, in f64, row-major, same layouts as
//! the WGSL kernels. Each function names the shader entry point it mirrors.

use crate::ops::Likelihood;
use crate::ops::{Act, ConvShape, GroupNormShape, Layout, meant};
use crate::optim::{OptimizerConfig, OptimizerKind};

// ---- matmul.wgsl ------------------------------------------------------------------------------

/// `C[M,N] = op(A)·op(B)` (see [`Layout`] for operand shapes).
pub fn matmul(layout: Layout, a: &[f64], b: &[f64], m: usize, n: usize, k: usize) -> Vec<f64> {
    assert_eq!(a.len(), m * k, "A length");
    assert_eq!(b.len(), k * n, "B length");
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0;
            for kk in 0..k {
                let av = match layout {
                    Layout::TN => a[kk * m + i],
                    _ => a[i * k + kk],
                };
                let bv = match layout {
                    Layout::NT => b[j * k + kk],
                    _ => b[kk * n + j],
                };
                s += av * bv;
            }
            c[i * n + j] = s;
        }
    }
    c
}

/// The matmul epilogue: `C = act(P + bias)`.
pub fn epilogue(p: &[f64], n: usize, bias: Option<&[f64]>, act: Act) -> Vec<f64> {
    p.iter()
        .enumerate()
        .map(|(i, &v)| activate(act, v + bias.map_or(0.0, |b| b[i % n])))
        .collect()
}

// ---- add.wgsl ---------------------------------------------------------------------------------

/// `add_act`: `y = act(a + b)`.
pub fn add_act(a: &[f64], b: &[f64], act: Act) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| activate(act, x + y)).collect()
}

/// `grad_act`: `g ⊙ act′(h)` written into `out`, or added to it with `accumulate`.
pub fn grad_act(g: &[f64], h: &[f64], out: &mut [f64], act: Act, accumulate: bool) {
    let v = act_backward(g, h, act);
    for (o, v) in out.iter_mut().zip(v) {
        *o = if accumulate { *o + v } else { v };
    }
}

/// `upsample_nearest`: each `[H, W]` plane of `x` (`planes` of them) doubled on both axes.
pub fn upsample_nearest(x: &[f64], [h, w]: [usize; 2]) -> Vec<f64> {
    let mut y = Vec::with_capacity(4 * x.len());
    for plane in x.chunks_exact(h * w) {
        for yy in 0..2 * h {
            for xx in 0..2 * w {
                y.push(plane[(yy / 2) * w + xx / 2]);
            }
        }
    }
    y
}

/// `upsample_nearest_grad`: each input value's gradient, the sum of its 2x2 copies' in `dy`.
pub fn upsample_nearest_grad(dy: &[f64], [h, w]: [usize; 2]) -> Vec<f64> {
    let mut dx = vec![0.0; dy.len() / 4];
    for (p, plane) in dy.chunks_exact(4 * h * w).enumerate() {
        for (i, g) in plane.iter().enumerate() {
            let (yy, xx) = (i / (2 * w), i % (2 * w));
            dx[p * h * w + (yy / 2) * w + xx / 2] += g;
        }
    }
    dx
}

// ---- bias_act.wgsl ----------------------------------------------------------------------------

pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

pub fn activate(act: Act, v: f64) -> f64 {
    match act {
        Act::Identity => v,
        Act::Relu => v.max(0.0),
        Act::Sigmoid => sigmoid(v),
        Act::Tanh => v.tanh(),
    }
}

/// `act_forward`: `y = act(x + bias[col])` over `[rows, cols]`.
pub fn act_forward(x: &[f64], cols: usize, bias: Option<&[f64]>, act: Act) -> Vec<f64> {
    epilogue(x, cols, bias, act)
}

/// `act_backward`: `dx = dy ⊙ act'(y)` from the forward output `y`.
pub fn act_backward(dy: &[f64], y: &[f64], act: Act) -> Vec<f64> {
    dy.iter()
        .zip(y)
        .map(|(&g, &out)| match act {
            Act::Identity => g,
            Act::Relu => {
                if out > 0.0 {
                    g
                } else {
                    0.0
                }
            }
            Act::Sigmoid => g * out * (1.0 - out),
            Act::Tanh => g * (1.0 - out * out),
        })
        .collect()
}

// ---- condition.wgsl ---------------------------------------------------------------------------

/// `gather_labels`: the batch's classes, `labels[index[offset + b]]`.
pub fn gather_labels(labels: &[u32], index: &[u32], offset: usize, b: usize) -> Vec<u32> {
    (0..b).map(|i| labels[index[offset + i] as usize]).collect()
}

/// `label_forward`: `y[r, j] = act(pre[r, j] + wc[j, labels[r % period]])` over `[rows, cols]`,
/// `wc` `[cols, classes]` (`pre`: the product with its bias).
pub fn label_forward(pre: &[f64], cols: usize, wc: &[f64], labels: &[u32], act: Act) -> Vec<f64> {
    let classes = wc.len() / cols;
    pre.iter()
        .enumerate()
        .map(|(i, &v)| {
            let (r, j) = (i / cols, i % cols);
            let c = labels[r % labels.len()] as usize;
            activate(act, v + wc[j * classes + c])
        })
        .collect()
}

/// `label_grad`: `dwc[j, c] = Σ_{r : labels[r % period] = c} dy[r, j]`, `[cols, classes]`.
pub fn label_grad(dy: &[f64], cols: usize, classes: usize, labels: &[u32]) -> Vec<f64> {
    let mut g = vec![0.0; cols * classes];
    for (r, row) in dy.chunks(cols).enumerate() {
        let c = labels[r % labels.len()] as usize;
        for (j, &v) in row.iter().enumerate() {
            g[j * classes + c] += v;
        }
    }
    g
}

// ---- reduce.wgsl ------------------------------------------------------------------------------

/// `column_sum`: `db[j] = Σ_i dy[i, j]`.
pub fn column_sum(dy: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut s = vec![0.0; cols];
    for i in 0..rows {
        for j in 0..cols {
            s[j] += dy[i * cols + j];
        }
    }
    s
}

// ---- likelihood.wgsl (and the fused epilogue of matmul.wgsl) ----------------------------------

/// One element of BCE with logits: `max(l,0) - l·x + ln(1 + e^-|l|)`.
pub fn bce_elem(l: f64, x: f64) -> f64 {
    l.max(0.0) - l * x + (-l.abs()).exp().ln_1p()
}

/// The continuous Bernoulli's log-partition `A(l) = ln((e^l − 1)/l)` (its −log C is A − softplus),
/// in f64: a series where both forms are 0/0.
pub fn cb_log_partition(l: f64) -> f64 {
    if l.abs() < 1e-3 {
        return l / 2.0 + l * l / 24.0 - l.powi(4) / 2880.0;
    }
    l.max(0.0) + (-(-l.abs()).exp_m1()).ln() - l.abs().ln()
}

/// The continuous Bernoulli's mean `A′(l) = 1/(1 − e^{−l}) − 1/l` (½ at l = 0).
pub fn cb_mean(l: f64) -> f64 {
    if l.abs() < 1e-3 {
        return 0.5 + l / 12.0 - l.powi(3) / 720.0;
    }
    -1.0 / (-l).exp_m1() - 1.0 / l
}

/// The logits beyond which PyTorch's float32 `ContinuousBernoulli` clamps λ = σ(l) to
/// [ε, 1 − ε] (ε = f32::EPSILON) inside its log-normaliser and mean: `(−logit(1 − ε),
/// ln(2²³ / 1.5))`, the second where its float32 σ(l) rounds to 1 − ε (see `CB_LIMIT_HIGH` in
/// shaders/common.wgsl).
pub fn cb_limits() -> (f64, f64) {
    let eps = f32::EPSILON as f64;
    (-((1.0 - eps) / eps).ln(), (2f64.powi(23) / 1.5).ln())
}

/// The continuous Bernoulli's `(−log p(x | l), its gradient in l)` as PyTorch's float32
/// `ContinuousBernoulli` defines it: `A(l) − l·x` and `mean(l) − x` within [`cb_limits`];
/// beyond, BCE minus the clamped log-normaliser `log C(1 − ε)`, whose gradient is 0.
pub fn cb_nll(l: f64, x: f64) -> (f64, f64) {
    let (low, high) = cb_limits();
    if l < low || l > high {
        let eps = f32::EPSILON as f64;
        let log_norm = (-low).ln() - (-2.0 * eps).ln_1p();
        return (bce_elem(l, x) - log_norm, sigmoid(l) - x);
    }
    (cb_log_partition(l) - l * x, cb_mean(l) - x)
}

/// The mean PyTorch's float32 `ContinuousBernoulli` gives: [`cb_mean`], held beyond
/// [`cb_limits`] at its value for λ = 1 − ε (or ε).
pub fn cb_mean_clamped(l: f64) -> f64 {
    let (low, high) = cb_limits();
    if l > high {
        cb_mean(-low)
    } else if l < low {
        cb_mean(low)
    } else {
        cb_mean(l)
    }
}

/// `-log p(x | l)` of one value, its gradient in l and in log s (a Gaussian's σ or a Laplace's b;
/// 0 otherwise): the twin of `recon_with_logits` and `dlog_scale` in shaders/common.wgsl.
pub fn recon_elem(lik: Likelihood, l: f64, x: f64, log_sigma: f64) -> (f64, f64, f64) {
    // A scaled likelihood's location: μ = σ(l), or l itself; dμ/dl accordingly.
    let location = || match lik.identity_mean() {
        true => (l, 1.0),
        false => (sigmoid(l), sigmoid(l) * (1.0 - sigmoid(l))),
    };
    match lik {
        Likelihood::Bernoulli => (bce_elem(l, x), sigmoid(l) - x, 0.0),
        Likelihood::ContinuousBernoulli => {
            let (nll, d) = cb_nll(l, x);
            (nll, d, 0.0)
        }
        Likelihood::Gaussian { .. } | Likelihood::GaussianIdentity { .. } => {
            let (mu, dmu) = location();
            let inv_s = (-log_sigma).exp();
            let r = (x - mu) * inv_s;
            let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
            (
                0.5 * r * r + log_sigma + half_log_2pi,
                -r * inv_s * dmu,
                1.0 - r * r,
            )
        }
        Likelihood::Laplace { .. } | Likelihood::LaplaceIdentity { .. } => {
            let (mu, dmu) = location();
            let inv_b = (-log_sigma).exp();
            let a = (x - mu).abs() * inv_b;
            // sign(μ − x), 0 where they are equal (PyTorch's gradient of |·| at 0).
            let sign = if mu > x {
                1.0
            } else if mu < x {
                -1.0
            } else {
                0.0
            };
            (
                a + log_sigma + std::f64::consts::LN_2,
                sign * inv_b * dmu,
                1.0 - a,
            )
        }
    }
}

/// The likelihood's mean from a logit (what the pictures draw).
pub fn likelihood_mean(lik: Likelihood, l: f64) -> f64 {
    match lik {
        Likelihood::ContinuousBernoulli => cb_mean_clamped(l),
        l_ if l_.identity_mean() => l,
        _ => sigmoid(l),
    }
}

/// `recon_forward_backward`: logits `[L·B, D]` against targets `[B, D]` (row r uses target row
/// r mod B); returns (Σ -log p / L, dlogits / L, ∂/∂log σ of the sum / L).
pub fn recon_forward_backward(
    lik: Likelihood,
    logits: &[f64],
    target: &[f64],
    log_sigma: f64,
) -> (f64, Vec<f64>, f64) {
    assert!(
        !target.is_empty() && logits.len().is_multiple_of(target.len()),
        "logits must be L copies of target's size"
    );
    let scale = target.len() as f64 / logits.len() as f64;
    let (mut loss, mut dls) = (0.0, 0.0);
    let d: Vec<f64> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            let (v, dl, ds) = recon_elem(lik, l, target[i % target.len()], log_sigma);
            loss += v * scale;
            dls += ds * scale;
            dl * scale
        })
        .collect();
    (loss, d, dls)
}

/// The Bernoulli's [`recon_forward_backward`]: (Σ BCE / L, (σ(l) − x) / L).
pub fn bce_forward_backward(logits: &[f64], target: &[f64]) -> (f64, Vec<f64>) {
    let (loss, d, _) = recon_forward_backward(Likelihood::Bernoulli, logits, target, 0.0);
    (loss, d)
}

// ---- reparam_kl.wgsl --------------------------------------------------------------------------

/// `reparam_forward`: `z[l·BK + e] = mu[e] + exp(logvar[e]/2)·eps[l·BK + e]`, and the KL
/// `Σ_e -½(1 + logvar - mu² - e^logvar)` (times `kl_weight`).
pub fn reparam_forward(mu: &[f64], logvar: &[f64], eps: &[f64], kl_weight: f64) -> (Vec<f64>, f64) {
    let bk = mu.len();
    let z = eps
        .iter()
        .enumerate()
        .map(|(i, &n)| mu[i % bk] + (0.5 * logvar[i % bk]).exp() * n)
        .collect();
    let kl: f64 = mu
        .iter()
        .zip(logvar)
        .map(|(&m, &lv)| -0.5 * (1.0 + lv - m * m - lv.exp()))
        .sum();
    (z, kl * kl_weight)
}

/// `reparam_backward` with the KL gradient fused in: returns (dmu, dlogvar).
pub fn reparam_backward(
    mu: &[f64],
    logvar: &[f64],
    eps: &[f64],
    dz: &[f64],
    kl_weight: f64,
) -> (Vec<f64>, Vec<f64>) {
    let bk = mu.len();
    let mut dmu: Vec<f64> = mu.iter().map(|&m| kl_weight * m).collect();
    let mut dlv: Vec<f64> = logvar
        .iter()
        .map(|&lv| kl_weight * 0.5 * (lv.exp() - 1.0))
        .collect();
    for (i, (&g, &n)) in dz.iter().zip(eps).enumerate() {
        let e = i % bk;
        dmu[e] += g;
        dlv[e] += g * n * 0.5 * (0.5 * logvar[e]).exp();
    }
    (dmu, dlv)
}

// ---- adam.wgsl --------------------------------------------------------------------------------

/// `adam_step` at step `t` (1-based), PyTorch's formula, in place: Adam (`weight_decay` as L2) or
/// AdamW (the weights first multiplied by `1 − lr_t·weight_decay`).
pub fn adam_step(
    params: &mut [f64],
    grads: &[f64],
    m: &mut [f64],
    v: &mut [f64],
    cfg: &OptimizerConfig,
    t: u64,
) {
    let (step_size, bc2_sqrt) = cfg.step_factors(t);
    let (b1, b2, eps, wd) = (
        meant(cfg.beta1),
        meant(cfg.beta2),
        meant(cfg.eps),
        meant(cfg.weight_decay),
    );
    let (l2, decay) = match cfg.kind {
        OptimizerKind::AdamW => (0.0, 1.0 - cfg.lr_at(t) * wd),
        _ => (wd, 1.0),
    };
    for i in 0..params.len() {
        let g = grads[i] + l2 * params[i];
        let w = params[i] * decay;
        m[i] = b1 * m[i] + (1.0 - b1) * g;
        v[i] = b2 * v[i] + (1.0 - b2) * g * g;
        let denom = v[i].sqrt() / bc2_sqrt + eps;
        params[i] = w - step_size * m[i] / denom;
    }
}

// ---- sgd.wgsl ---------------------------------------------------------------------------------

/// `sgd_step` / `sgd_momentum` at step `t` (1-based), PyTorch's formula (dampening 0), in place;
/// `buf` is the momentum buffer (starting at zeros) when `cfg.momentum` > 0.
pub fn sgd_step(
    params: &mut [f64],
    grads: &[f64],
    buf: Option<&mut [f64]>,
    cfg: &OptimizerConfig,
    t: u64,
) {
    let (lr, wd, mom) = (cfg.lr_at(t), meant(cfg.weight_decay), meant(cfg.momentum));
    let mut buf = buf;
    for i in 0..params.len() {
        let mut g = grads[i] + wd * params[i];
        if let Some(b) = buf.as_deref_mut() {
            b[i] = mom * b[i] + g;
            g = if cfg.nesterov { g + mom * b[i] } else { b[i] };
        }
        params[i] -= lr * g;
    }
}

// ---- clip_grad.wgsl ---------------------------------------------------------------------------

/// `clip_grad_norm`: scale `grads` in place by `min(1, max_norm / (‖grads‖₂ + 1e-6))`; returns the
/// norm before clipping.
pub fn clip_grad_norm(grads: &mut [f64], max_norm: f64) -> f64 {
    let norm = grads.iter().map(|g| g * g).sum::<f64>().sqrt();
    let coef = (max_norm / (norm + 1e-6)).min(1.0);
    for g in grads.iter_mut() {
        *g *= coef;
    }
    norm
}

/// One update of `cfg`'s optimizer at step `t`: clipping (if asked for), then its rule, `state`
/// holding its arenas (as [`OptimizerConfig::state_names`] lists them).
pub fn optimizer_step(
    cfg: &OptimizerConfig,
    t: u64,
    params: &mut [f64],
    grads: &[f64],
    state: &mut [Vec<f64>],
) {
    let mut g = grads.to_vec();
    if let Some(x) = cfg.clip_grad_norm {
        clip_grad_norm(&mut g, meant(x));
    }
    match (cfg.kind, state) {
        (OptimizerKind::Adam | OptimizerKind::AdamW, [m, v]) => adam_step(params, &g, m, v, cfg, t),
        (OptimizerKind::Sgd, [b]) => sgd_step(params, &g, Some(b), cfg, t),
        (OptimizerKind::Sgd, []) => sgd_step(params, &g, None, cfg, t),
        (k, s) => panic!("{k} with {} state arenas", s.len()),
    }
}

// ---- gather.wgsl ------------------------------------------------------------------------------

/// `gather_batch`: rows `index[offset..offset+b]` of a u8 image set, scaled to [0, 1].
pub fn gather(pixels: &[u8], dim: usize, index: &[u32], offset: usize, b: usize) -> Vec<f64> {
    gather_scaled(pixels, dim, index, offset, b, false)
}

/// `gather_batch` with its `signed` choice: [0, 1], or then `(v − 0.5)/0.5` in [−1, 1].
pub fn gather_scaled(
    pixels: &[u8],
    dim: usize,
    index: &[u32],
    offset: usize,
    b: usize,
    signed: bool,
) -> Vec<f64> {
    let mut x = Vec::with_capacity(b * dim);
    for &img in &index[offset..offset + b] {
        let row = &pixels[img as usize * dim..(img as usize + 1) * dim];
        x.extend(row.iter().map(|&p| {
            let unit = p as f64 / 255.0;
            if signed { (unit - 0.5) / 0.5 } else { unit }
        }));
    }
    x
}

// ---- iwae.wgsl --------------------------------------------------------------------------------

/// `recon_rows`: per-row sums of -log p(x | l), logits `[L·B, D]` against targets `[B, D]`.
pub fn recon_rows(
    lik: Likelihood,
    logits: &[f64],
    target: &[f64],
    dim: usize,
    log_sigma: f64,
) -> Vec<f64> {
    let tr = target.len() / dim;
    logits
        .chunks(dim)
        .enumerate()
        .map(|(r, row)| {
            row.iter()
                .enumerate()
                .map(|(d, &l)| recon_elem(lik, l, target[(r % tr) * dim + d], log_sigma).0)
                .sum()
        })
        .collect()
}

/// `iwae_estimate`: per image, `-(logsumexp_l log w_l - log L)` with
/// `log w_l = -rowloss[l·B+b] + Σ_k ½(eps² - z² + logvar)`.
pub fn iwae_estimate(
    rowloss: &[f64],
    z: &[f64],
    eps: &[f64],
    logvar: &[f64],
    batch: usize,
    latent: usize,
) -> Vec<f64> {
    iwae_weights(rowloss, z, eps, logvar, batch, latent).1
}

/// `iwae_weights`: the normalised importance weights w̃ per row `l·B + b` (the softmax over each
/// image's L samples of `log w_l = -rowloss + Σ_k ½(eps² − z² + logvar)`) and each image's
/// `-(logsumexp_l log w_l − log L)`.
pub fn iwae_weights(
    rowloss: &[f64],
    z: &[f64],
    eps: &[f64],
    logvar: &[f64],
    batch: usize,
    latent: usize,
) -> (Vec<f64>, Vec<f64>) {
    let samples = rowloss.len() / batch;
    let mut weights = vec![0.0; rowloss.len()];
    let obj = (0..batch)
        .map(|b| {
            let w: Vec<f64> = (0..samples)
                .map(|l| {
                    let row = l * batch + b;
                    -rowloss[row]
                        + (0..latent)
                            .map(|k| {
                                let (zv, e) = (z[row * latent + k], eps[row * latent + k]);
                                0.5 * (e * e - zv * zv + logvar[b * latent + k])
                            })
                            .sum::<f64>()
                })
                .collect();
            let m = w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = w.iter().map(|v| (v - m).exp()).sum();
            for (l, v) in w.iter().enumerate() {
                weights[l * batch + b] = (v - m).exp() / s;
            }
            -(m + s.ln() - (samples as f64).ln())
        })
        .collect();
    (weights, obj)
}

/// `reparam_backward` for the IWAE objective: `dmu = Σ_l (dz_l + w̃_l z_l)`,
/// `dlogvar = Σ_l (dz_l + w̃_l z_l)·eps_l·sd/2 − 1/2`, w̃ per row `l·B + b`.
pub fn reparam_backward_iwae(
    mu: &[f64],
    logvar: &[f64],
    eps: &[f64],
    dz: &[f64],
    weights: &[f64],
    latent: usize,
) -> (Vec<f64>, Vec<f64>) {
    let bk = mu.len();
    let mut dmu = vec![0.0; bk];
    let mut dlv = vec![-0.5; bk];
    for (i, (&g, &n)) in dz.iter().zip(eps).enumerate() {
        let e = i % bk;
        let sd = (0.5 * logvar[e]).exp();
        let w = weights[(i / bk) * (bk / latent) + e / latent];
        let g = g + w * (mu[e] + sd * n);
        dmu[e] += g;
        dlv[e] += g * n * 0.5 * sd;
    }
    (dmu, dlv)
}

// ---- conv.wgsl --------------------------------------------------------------------------------

impl ConvShape {
    /// Every (b, o, y, x, i, ky, kx) that pairs a lo pixel with an in-range hi pixel, as
    /// (lo index, hi index, weight index): the one loop all three twins share.
    fn pairs(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        let [cl, hl, wl] = self.lo;
        let [ch, hh, wh] = self.hi;
        let (k, s, p) = (self.kernel, self.stride as isize, self.padding as isize);
        (0..self.batch).flat_map(move |b| {
            (0..cl).flat_map(move |o| {
                (0..hl * wl).flat_map(move |yx| {
                    let (y, x) = ((yx / wl) as isize, (yx % wl) as isize);
                    (0..ch * k * k).filter_map(move |ikk| {
                        let (i, ky, kx) = (ikk / (k * k), (ikk / k) % k, ikk % k);
                        let yy = y * s - p + ky as isize;
                        let xx = x * s - p + kx as isize;
                        if yy < 0 || xx < 0 || yy >= hh as isize || xx >= wh as isize {
                            return None;
                        }
                        let lo = ((b * cl + o) * hl + y as usize) * wl + x as usize;
                        let hi = ((b * ch + i) * hh + yy as usize) * wh + xx as usize;
                        Some((lo, hi, (o * ch + i) * k * k + ky * k + kx))
                    })
                })
            })
        })
    }
}

/// `conv_to_lo` before its epilogue: `lo[b,o,y,x] = Σ_{i,ky,kx} W[o,i,ky,kx] · hi[b,i,y·s−p+ky,
/// x·s−p+kx]` (a Conv2d's forward; a ConvTranspose2d's input gradient).
pub fn conv_to_lo(d: &ConvShape, hi: &[f64], w: &[f64]) -> Vec<f64> {
    assert_eq!(hi.len(), d.hi_len(), "hi length");
    let mut lo = vec![0.0; d.lo_len()];
    for (l, h, wi) in d.pairs() {
        lo[l] += w[wi] * hi[h];
    }
    lo
}

/// `conv_to_hi` before its epilogue: the transpose of [`conv_to_lo`], `hi[b,i,Y,X] = Σ W[o,i,ky,kx]
/// · lo[b,o,y,x]` over the (y, x, ky, kx) with `y·s − p + ky = Y` (a ConvTranspose2d's forward; a
/// Conv2d's input gradient).
pub fn conv_to_hi(d: &ConvShape, lo: &[f64], w: &[f64]) -> Vec<f64> {
    assert_eq!(lo.len(), d.lo_len(), "lo length");
    let mut hi = vec![0.0; d.hi_len()];
    for (l, h, wi) in d.pairs() {
        hi[h] += w[wi] * lo[l];
    }
    hi
}

/// `conv_weight_grad` without the bias: `dW[o,i,ky,kx] = Σ_{b,y,x} lo[b,o,y,x] · hi[b,i,y·s−p+ky,
/// x·s−p+kx]`.
pub fn conv_weight_grad(d: &ConvShape, lo: &[f64], hi: &[f64]) -> Vec<f64> {
    let mut dw = vec![0.0; d.lo[0] * d.hi[0] * d.kernel * d.kernel];
    for (l, h, wi) in d.pairs() {
        dw[wi] += lo[l] * hi[h];
    }
    dw
}

/// The bias gradient of a convolution: per channel, the sum over images and pixels of the
/// output's gradient `[B, C, H, W]`.
pub fn channel_sums(t: &[f64], channels: usize, plane: usize) -> Vec<f64> {
    let mut s = vec![0.0; channels];
    for (n, &v) in t.iter().enumerate() {
        s[(n / plane) % channels] += v;
    }
    s
}

/// A convolution's epilogue: `act(v + bias[channel])` over `[B, C, plane]`.
pub fn conv_epilogue(
    v: &[f64],
    channels: usize,
    plane: usize,
    bias: Option<&[f64]>,
    act: Act,
) -> Vec<f64> {
    v.iter()
        .enumerate()
        .map(|(n, &x)| activate(act, x + bias.map_or(0.0, |b| b[(n / plane) % channels])))
        .collect()
}

// ---- group_norm.wgsl ----------------------------------------------------------------------------

/// `gn_stats` then `gn_apply`: y = (x − mean)·rstd·γ\[c\] + β\[c\] per image and group (then SiLU
/// with `silu`), with the statistics `[B·G, 2]` (mean, rstd = 1/√(biased var + eps)) the
/// backward reads.
pub fn group_norm_forward(
    s: &GroupNormShape,
    silu: bool,
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let n = s.group_len();
    let mut stats = Vec::with_capacity(2 * s.stats_rows());
    let mut y = vec![0.0; x.len()];
    for (bg, group) in x.chunks_exact(n).enumerate() {
        let mean = group.iter().sum::<f64>() / n as f64;
        let var = group.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        let rstd = 1.0 / (var + s.eps as f64).sqrt();
        stats.extend([mean, rstd]);
        for (j, v) in group.iter().enumerate() {
            let c = (bg % s.groups) * (s.channels / s.groups) + j / s.plane;
            let a = (v - mean) * rstd * gamma[c] + beta[c];
            y[bg * n + j] = if silu { a * sigmoid(a) } else { a };
        }
    }
    (y, stats)
}

/// `gn_backward_sums`, `gn_input_grad`, `gn_param_grad`: (dx, dγ, dβ) from the output's
/// gradient `dy` (through SiLU with `silu`), the input and the forward's statistics.
pub fn group_norm_backward(
    s: &GroupNormShape,
    silu: bool,
    dy: &[f64],
    x: &[f64],
    (gamma, beta): (&[f64], &[f64]),
    stats: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let n = s.group_len();
    let cpg = s.channels / s.groups;
    let mut dx = vec![0.0; x.len()];
    let mut dgamma = vec![0.0; s.channels];
    let mut dbeta = vec![0.0; s.channels];
    for bg in 0..s.stats_rows() {
        let (mean, rstd) = (stats[2 * bg], stats[2 * bg + 1]);
        let c0 = (bg % s.groups) * cpg;
        // (index, channel, x̂, the gradient before the activation)
        let at = |j: usize| {
            let i = bg * n + j;
            let c = c0 + j / s.plane;
            let xhat = (x[i] - mean) * rstd;
            let g = if silu {
                let a = xhat * gamma[c] + beta[c];
                let sg = sigmoid(a);
                dy[i] * sg * (1.0 + a * (1.0 - sg))
            } else {
                dy[i]
            };
            (i, c, xhat, g)
        };
        let (mut s1, mut s2) = (0.0, 0.0);
        for j in 0..n {
            let (_, c, xhat, g) = at(j);
            s1 += g * gamma[c];
            s2 += g * gamma[c] * xhat;
            dgamma[c] += g * xhat;
            dbeta[c] += g;
        }
        for j in 0..n {
            let (i, c, xhat, g) = at(j);
            dx[i] = rstd * (g * gamma[c] - s1 / n as f64 - xhat * s2 / n as f64);
        }
    }
    (dx, dgamma, dbeta)
}

// ---- attention.wgsl (and the products around it, kernels::attention) ---------------------------

/// One image's attention core: `q`, `k`, `v` `[C, n]` (NCHW, n = h·w); returns `o` `[C, n]` and
/// `P` `[n, n]` = softmax(qᵀk·scale) by rows, `o = v·Pᵀ`.
pub fn attention_forward(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    c: usize,
    n: usize,
    scale: f64,
) -> (Vec<f64>, Vec<f64>) {
    let mut p = vec![0.0; n * n];
    for i in 0..n {
        let row = &mut p[i * n..(i + 1) * n];
        for (j, r) in row.iter_mut().enumerate() {
            *r = scale * (0..c).map(|ch| q[ch * n + i] * k[ch * n + j]).sum::<f64>();
        }
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = row.iter().map(|s| (s - m).exp()).sum();
        row.iter_mut().for_each(|s| *s = (*s - m).exp() / z);
    }
    let mut o = vec![0.0; c * n];
    for ch in 0..c {
        for i in 0..n {
            o[ch * n + i] = (0..n).map(|j| v[ch * n + j] * p[i * n + j]).sum();
        }
    }
    (o, p)
}

/// The backward of [`attention_forward`] from `dout` `[C, n]`: (dq, dk, dv).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    p: &[f64],
    dout: &[f64],
    c: usize,
    n: usize,
    scale: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut dv = vec![0.0; c * n];
    let mut ds = vec![0.0; n * n];
    for ch in 0..c {
        for j in 0..n {
            dv[ch * n + j] = (0..n).map(|i| dout[ch * n + i] * p[i * n + j]).sum();
        }
    }
    for i in 0..n {
        let dp: Vec<f64> = (0..n)
            .map(|j| (0..c).map(|ch| dout[ch * n + i] * v[ch * n + j]).sum())
            .collect();
        let dot: f64 = (0..n).map(|j| dp[j] * p[i * n + j]).sum();
        for j in 0..n {
            ds[i * n + j] = scale * p[i * n + j] * (dp[j] - dot);
        }
    }
    let mut dq = vec![0.0; c * n];
    let mut dk = vec![0.0; c * n];
    for ch in 0..c {
        for i in 0..n {
            dq[ch * n + i] = (0..n).map(|j| k[ch * n + j] * ds[i * n + j]).sum();
            dk[ch * n + i] = (0..n).map(|j| q[ch * n + j] * ds[j * n + i]).sum();
        }
    }
    (dq, dk, dv)
}
