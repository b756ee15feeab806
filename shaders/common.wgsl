// Prepended to every shader of this directory (see src/gpu/pipeline.rs; line numbers in shader
// errors count these lines too): the per-step uniform's layout, the stable sigmoid, BCE with
// logits, and the workgroup sum that every reducing kernel uses.

// Values that change every step, written once per step (src/kernels/step.rs, StepParams).
struct StepParams {
    batch_offset: u32,   // first index of this batch in the epoch's index list (gather, iwae)
    rng_step: u32,       // step counter in the Philox counter (reparam_kl)
    seed_lo: u32,
    seed_hi: u32,
    step_size: f32,      // the optimizer's step: Adam's lr_t / (1 - beta1^t), SGD's lr_t (adam, sgd)
    bc2_sqrt: f32,       // Adam's sqrt(1 - beta2^t)
    kl_weight: f32,      // the KL term's weight in the objective (reparam_backward, loss_reduce)
    decay: f32,          // AdamW's decoupled decay 1 - lr_t * weight_decay (1 for the others)
}

// Activation codes (the `ACT` and `ACT_GRAD` override constants) and operand layouts (`LAYOUT`):
// the values of `Act::code` and `Layout::code` in src/ops.rs (tested: kernels::contracts).
const ACT_IDENTITY: u32 = 0u;
const ACT_RELU: u32 = 1u;
const ACT_SIGMOID: u32 = 2u;
const ACT_TANH: u32 = 3u;
const LAYOUT_NN: u32 = 0u;
const LAYOUT_NT: u32 = 1u;
const LAYOUT_TN: u32 = 2u;

// tanh from exp(-2|x|), which never overflows (a driver's tanh may be built from exp(2x), inf
// past |x| ≈ 44, giving inf/inf), with a Taylor polynomial near 0, where 1 - e would cancel.
fn tanh_act(x: f32) -> f32 {
    let ax = abs(x);
    if (ax < 0.125) {
        let x2 = x * x;
        return x * (1.0 - x2 * (0.33333333 - x2 * (0.13333333 - x2 * 0.053968254)));
    }
    let e = exp(-2.0 * ax);
    return sign(x) * ((1.0 - e) / (1.0 + e));
}

// σ(x), stable for both signs: never exp of a large positive number.
fn sigmoid(x: f32) -> f32 {
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

// Binary cross-entropy of σ(l) against a target x in [0, 1] and its gradient in l:
// (max(l, 0) - l·x + log(1 + exp(-|l|)), σ(l) - x). One exp serves both, e = exp(-|l|) ≤ 1 never
// overflows; see likelihood.wgsl for why this form and how it relates to PyTorch's BCELoss.
fn bce_with_logits(l: f32, x: f32) -> vec2<f32> {
    let e = exp(-abs(l));
    let sig = select(e / (1.0 + e), 1.0 / (1.0 + e), l >= 0.0);
    return vec2<f32>(max(l, 0.0) - l * x + log(1.0 + e), sig - x);
}

// The decoder's likelihoods (the `LIKELIHOOD` override constants): the values of
// `Likelihood::code` in src/ops/likelihood.rs (tested: kernels::contracts).
const LIKELIHOOD_NONE: u32 = 0u;
const LIKELIHOOD_BERNOULLI: u32 = 1u;
const LIKELIHOOD_CONTINUOUS_BERNOULLI: u32 = 2u;
const LIKELIHOOD_GAUSSIAN: u32 = 3u;
const LIKELIHOOD_GAUSSIAN_IDENTITY: u32 = 4u; // μ = l: an AutoencoderKL's output is the mean
const LIKELIHOOD_LAPLACE: u32 = 5u;
const LIKELIHOOD_LAPLACE_IDENTITY: u32 = 6u; // μ = l, as the Gaussian's

// The continuous Bernoulli's log-partition A(l) = log((e^l - 1)/l) and its derivative, the mean
// E[x] = 1/(1 - e^-l) - 1/l: both 0/0 at l = 0 (λ = ½), so a Taylor series below |l| = ½ (next
// terms < 1e-8); above, max(l, 0) + log(1 - e^-|l|) - log|l|, which never overflows.
fn cb_log_partition(l: f32) -> f32 {
    let al = abs(l);
    if (al < 0.5) {
        let l2 = l * l;
        return 0.5 * l + l2 * (1.0 / 24.0 - l2 * (1.0 / 2880.0 - l2 * (1.0 / 181440.0)));
    }
    return max(l, 0.0) + log(1.0 - exp(-al)) - log(al);
}

fn cb_mean(l: f32) -> f32 {
    if (abs(l) < 0.5) {
        let l2 = l * l;
        return 0.5 + l * (1.0 / 12.0 - l2 * (1.0 / 720.0 - l2 * (1.0 / 30240.0)));
    }
    // 1/(1 - e^-l): e^-l may overflow to inf for l < -88, giving 1/(1 - inf) = -0, the limit.
    return 1.0 / (1.0 - exp(-l)) - 1.0 / l;
}

// PyTorch's ContinuousBernoulli in float32 clamps λ = σ(l) to [ε, 1 − ε] (ε = 2^-23, float32's
// eps) inside its log-normaliser and its mean, so beyond the clamp the normaliser stops growing
// (its gradient is 0) and the mean stops moving: on exact 0 and 1 pixels the exact density would
// grow without bound as the logits run off, and training finds that. PyTorch's float32 σ(l)
// reaches 1 − ε at l = ln(2^23 / 1.5) (CB_LIMIT_HIGH: 1 + e^-l rounds to 1 + ε there) and ε at
// l = −logit(1 − ε) (CB_LIMIT_LOW). Between, both are the exact A(l) and mean(l) above; beyond,
// −log p is softplus(l) − l·x − CB_LOG_NORM_CLAMPED (BCE minus log C(1 − ε)).
const CB_LIMIT_HIGH: f32 = 15.53692;
const CB_LIMIT_LOW: f32 = -15.942385;
const CB_LOG_NORM_CLAMPED: f32 = 2.7689815;
const CB_MEAN_CLAMPED_HIGH: f32 = 0.9372742;
const CB_MEAN_CLAMPED_LOW: f32 = 0.06272575;

fn cb_clamped(l: f32) -> bool {
    return l > CB_LIMIT_HIGH || l < CB_LIMIT_LOW;
}

// The mean PyTorch's ContinuousBernoulli gives: mean(l), held beyond the clamp.
fn cb_mean_clamped(l: f32) -> f32 {
    if (l > CB_LIMIT_HIGH) {
        return CB_MEAN_CLAMPED_HIGH;
    }
    if (l < CB_LIMIT_LOW) {
        return CB_MEAN_CLAMPED_LOW;
    }
    return cb_mean(l);
}

// -log p(x | l) of one value and its gradient in the logit l, for likelihood `kind`:
//   Bernoulli:            softplus(l) - l·x                              σ(l) - x
//   continuous Bernoulli: A(l) - l·x                                     mean(l) - x
//                         (clamped: softplus(l) - l·x - CB_LOG_NORM_CLAMPED, σ(l) - x)
//   Gaussian:             ½((x - μ)/s)² + log s + ½log 2π, μ = σ(l)      (μ - x)·μ(1 - μ)/s²
//   Gaussian, identity:   the same with μ = l                              (μ - x)/s²
//   Laplace:              |x - μ|/s + log s + log 2, μ = σ(l)            sign(μ - x)·μ(1 - μ)/s
//   Laplace, identity:    the same with μ = l                              sign(μ - x)/s
// with log s = `log_sigma` (σ, or the Laplace's b). See src/ops/likelihood.rs.
fn recon_with_logits(kind: u32, l: f32, x: f32, log_sigma: f32) -> vec2<f32> {
    if (kind == LIKELIHOOD_CONTINUOUS_BERNOULLI) {
        if (cb_clamped(l)) {
            let b = bce_with_logits(l, x);
            return vec2<f32>(b.x - CB_LOG_NORM_CLAMPED, b.y);
        }
        return vec2<f32>(cb_log_partition(l) - l * x, cb_mean(l) - x);
    }
    if (kind == LIKELIHOOD_GAUSSIAN) {
        let mu = sigmoid(l);
        let inv_s = exp(-log_sigma);
        let r = (x - mu) * inv_s;
        return vec2<f32>(0.5 * r * r + log_sigma + 0.91893853, -r * inv_s * mu * (1.0 - mu));
    }
    if (kind == LIKELIHOOD_GAUSSIAN_IDENTITY) {
        let inv_s = exp(-log_sigma);
        let r = (x - l) * inv_s;
        return vec2<f32>(0.5 * r * r + log_sigma + 0.91893853, -r * inv_s);
    }
    if (kind == LIKELIHOOD_LAPLACE || kind == LIKELIHOOD_LAPLACE_IDENTITY) {
        let mu = likelihood_mean_of(kind, l);
        let inv_s = exp(-log_sigma);
        // sign() is 0 at μ = x: PyTorch's gradient of |·| there.
        var dmu = sign(mu - x) * inv_s;
        if (kind == LIKELIHOOD_LAPLACE) {
            dmu *= mu * (1.0 - mu);
        }
        return vec2<f32>(abs(x - mu) * inv_s + log_sigma + 0.69314718, dmu);
    }
    return bce_with_logits(l, x);
}

// A scaled likelihood's ∂(-log p)/∂log s of one value: 1 - ((x - μ)/s)² (Gaussian), 1 - |x - μ|/s
// (Laplace).
fn dlog_scale(kind: u32, l: f32, x: f32, log_sigma: f32) -> f32 {
    let r = (x - likelihood_mean_of(kind, l)) * exp(-log_sigma);
    if (kind == LIKELIHOOD_LAPLACE || kind == LIKELIHOOD_LAPLACE_IDENTITY) {
        return 1.0 - abs(r);
    }
    return 1.0 - r * r;
}

// The likelihood's mean (what the pictures draw) from the logit.
fn likelihood_mean_of(kind: u32, l: f32) -> f32 {
    if (kind == LIKELIHOOD_CONTINUOUS_BERNOULLI) {
        return cb_mean_clamped(l);
    }
    if (kind == LIKELIHOOD_GAUSSIAN_IDENTITY || kind == LIKELIHOOD_LAPLACE_IDENTITY) {
        return l;
    }
    return sigmoid(l);
}

// The activation `act` of v (identity for ACT_IDENTITY).
fn activate(v: f32, act: u32) -> f32 {
    if (act == ACT_RELU) {
        return max(v, 0.0);
    } else if (act == ACT_SIGMOID) {
        return sigmoid(v);
    } else if (act == ACT_TANH) {
        return tanh_act(v);
    }
    return v;
}

// A gradient v through the activation `act` whose output was h: ReLU's [h > 0], tanh's 1 − h²
// (v unchanged for any other code).
fn act_backward(v: f32, h: f32, act: u32) -> f32 {
    if (act == ACT_RELU) {
        return select(0.0, v, h > 0.0);
    } else if (act == ACT_TANH) {
        return v * (1.0 - h * h);
    }
    return v;
}

var<workgroup> wg_partial: array<f32, 256>;

// Σ v over the 256 threads of a workgroup, in a fixed tree order (bit-for-bit reproducible).
// Every thread must call it, from uniform control flow; every thread gets the total. The leading
// barrier lets a kernel call it twice in a row.
fn workgroup_sum(t: u32, v: f32) -> f32 {
    workgroupBarrier();
    wg_partial[t] = v;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if (t < stride) {
            wg_partial[t] += wg_partial[t + stride];
        }
        workgroupBarrier();
    }
    return wg_partial[0];
}

