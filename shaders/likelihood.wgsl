// Launcher: src/kernels/likelihood.rs · CPU twins: cpu::ops::recon_forward_backward, recon_rows, likelihood_mean · parity: tests/parity_kernels.rs likelihood_forward_backward_matches_including_extremes
// The decoder's likelihood p(x | logits), standalone (recon_with_logits in common.wgsl has the
// per-value math; src/ops/likelihood.rs the table of formulas):
//
//   recon_forward_backward: dlogits = ∂(-log p)/∂l / L (ROW_WEIGHTS: × w̃_row instead of / L) and
//                           per-workgroup partial sums of -log p / L;
//                           for a learned scale (Gaussian σ, Laplace b) also partial sums of ∂(-log p)/∂log s / L
//                           (reduce.wgsl's sum_to adds them into log σ's gradient).
//   recon_rows:             rowloss[r] = Σ_d -log p(x[r mod B, d] | logits[r, d])  (one workgroup per
//                           row, for the importance-weighted bound: iwae.wgsl).
//   likelihood_mean:        logits -> the likelihood's mean, in place (what the pictures draw).
//
// The Bernoulli's form, max(l, 0) - l·x + log(1 + exp(-|l|)), never takes exp of a positive number
// nor log of zero, so it is finite and accurate for every finite logit. PyTorch's `BCELoss` on σ(l)
// instead clamps each log at -100: in f32 σ(l) rounds to exactly 1 for l ≳ 17, so its loss saturates
// (at 100·(1-x) per element) where ours keeps growing linearly in l, the exact value. For |l| ≲ 15
// the two agree to f32 rounding.
//
// With L reparameterised samples the logits have L·B rows; row r is compared with target row r mod B,
// and `scale` = 1/L averages the reconstruction term over the samples (loss and gradient alike).
// Each workgroup writes one partial sum; reduce.wgsl adds the partials in a fixed order.
// (Training fuses the σ-free likelihoods into the logits product's epilogue instead: matmul.wgsl.)
// log σ is binding `log_sigma`[0]: the parameter arena's `log_sigma` (learned) or a constant
// (--sigma); the other likelihoods ignore it.

struct ReconParams {
    n: u32,          // L·B·D logits
    n_target: u32,   // B·D targets
    scale: f32,      // 1/L
    dim: u32,        // D (ROW_WEIGHTS: row r = i / D)
}

override LIKELIHOOD: u32 = 1u;      // a LIKELIHOOD_* code of common.wgsl
override SIGMA_GRAD: bool = false;  // write the log s gradient's partials (a learned scale)
override ROW_WEIGHTS: bool = false; // the gradients scaled per row by row_weights (the IWAE objective's w̃) instead of 1/L

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<f32>;
@group(0) @binding(2) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(3) var<storage, read_write> partials: array<f32>;
@group(0) @binding(4) var<uniform> p: ReconParams;
@group(0) @binding(5) var<storage, read> log_sigma: array<f32>;
@group(0) @binding(6) var<storage, read_write> sigma_partials: array<f32>;
@group(0) @binding(7) var<storage, read> row_weights: array<f32>;

// Each thread takes ITEMS consecutive-by-stride elements before the workgroup reduction, so the
// reduction's barriers (costly on CPU drivers) are paid once per 2048 elements, not per 256.
const ITEMS: u32 = 8u;

@compute @workgroup_size(256, 1, 1)
fn recon_forward_backward(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let group = wid.x + wid.y * nwg.x;
    let base = group * 256u * ITEMS + t;
    let ls = log_sigma[0];
    var loss = 0.0;
    var dls = 0.0;
    for (var q = 0u; q < ITEMS; q++) {
        let i = base + q * 256u;
        if (i < p.n) {
            let l = logits[i];
            let x = targets[i % p.n_target];
            let r = recon_with_logits(LIKELIHOOD, l, x, ls);
            loss += r.x;
            var g = p.scale;
            if (ROW_WEIGHTS) {
                g = row_weights[i / p.dim];
            }
            dlogits[i] = r.y * g;
            if (SIGMA_GRAD) {
                dls += dlog_scale(LIKELIHOOD, l, x, ls) * g;
            }
        }
    }
    let total = workgroup_sum(t, loss * p.scale);
    if (t == 0u) {
        partials[group] = total;
    }
    if (SIGMA_GRAD) {
        let gs = workgroup_sum(t, dls);
        if (t == 0u) {
            sigma_partials[group] = gs;
        }
    }
}

struct RowParams {
    rows: u32,      // L·B
    dim: u32,       // D
    batch: u32,     // B (target rows)
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> r_logits: array<f32>;
@group(0) @binding(1) var<storage, read> r_targets: array<f32>;
@group(0) @binding(2) var<storage, read_write> rowloss: array<f32>;
@group(0) @binding(3) var<uniform> rp: RowParams;
@group(0) @binding(4) var<storage, read> r_log_sigma: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn recon_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let r = wid.x;
    if (r >= rp.rows) {
        return;
    }
    let target_row = r % rp.batch;
    let ls = r_log_sigma[0];
    var s = 0.0;
    for (var d = t; d < rp.dim; d += 256u) {
        let l = r_logits[r * rp.dim + d];
        let x = r_targets[target_row * rp.dim + d];
        s += recon_with_logits(LIKELIHOOD, l, x, ls).x;
    }
    let total = workgroup_sum(t, s);
    if (t == 0u) {
        rowloss[r] = total;
    }
}

struct MeanParams {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> m_values: array<f32>;
@group(0) @binding(1) var<uniform> mp: MeanParams;

@compute @workgroup_size(256, 1, 1)
fn likelihood_mean(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i < mp.n) {
        m_values[i] = likelihood_mean_of(LIKELIHOOD, m_values[i]);
    }
}
