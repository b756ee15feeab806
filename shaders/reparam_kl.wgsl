// Launcher: src/kernels/reparam_kl.rs · CPU twins: cpu::ops::reparam_forward, reparam_backward, rng::normals · parity: tests/parity_kernels.rs reparam_kl_forward_backward, reparam_philox_noise_matches_cpu_generator
// Fused reparameterisation and KL divergence to N(0, I).
//
//   reparam_forward:  eps ~ N(0, 1) from Philox4x32-10 keyed by the seed, counter (element, step);
//                     z = mu + exp(0.5·logvar)·eps; eps is saved for the backward pass; and the KL
//                     term  -0.5·(1 + logvar - mu² - exp(logvar))  is summed into per-workgroup
//                     partials, unweighted (loss_reduce weighs it).
//   reparam_backward: dmu     = Σ_l dz_l + w·mu                                 (KL: ∂/∂mu = mu)
//                     dlogvar = Σ_l dz_l·eps_l·0.5·exp(0.5·logvar) + w·0.5·(exp(logvar) - 1)
//                     with w = step.kl_weight, the step's KL weight (β, warm-up: src/model/schedule.rs).
//                     IWAE: dmu = Σ_l (dz_l + w̃_l z_l), dlogvar = Σ_l (dz_l + w̃_l z_l)·eps_l·½sd − ½.
//
// mu and logvar arrive as one [B, 2K] matrix, row b = (mu_b, logvar_b): the output of the encoder's
// two heads computed as one Linear H -> 2K (one product instead of two); the backward writes dmu and
// dlogvar the same way, ready for the heads' weight- and input-gradient products.
// With L samples z/eps are [L, B, K]: sample l of element e = b·K + j is row-major index l·B·K + e.
// The KL term does not depend on eps, so it is counted once per element.
// EPS_FROM_BUFFER reads eps from the eps buffer instead of drawing it (parity with outside references).
// The CPU twin (src/rng.rs) implements the same generator bit for bit.

struct ReparamParams {
    bk: u32,        // B·K elements of mu / logvar
    samples: u32,   // L
    k: u32,         // K
    _pad: u32,
}

// Indices of mu and logvar of element e = b·K + j in the [B, 2K] heads matrix.
fn mu_index(e: u32, k: u32) -> u32 {
    return (e / k) * 2u * k + e % k;
}
fn logvar_index(e: u32, k: u32) -> u32 {
    return mu_index(e, k) + k;
}

override EPS_FROM_BUFFER: bool = false;
// diffusers' DiagonalGaussianDistribution: logvar clamped to [−30, 20] before use, so its
// gradient is 0 outside (torch.clamp passes it inside and at the bounds).
override LOGVAR_CLAMP: bool = false;

fn logvar_used(lv: f32) -> f32 {
    if (LOGVAR_CLAMP) {
        return clamp(lv, -30.0, 20.0);
    }
    return lv;
}

// 1 where the raw logvar's gradient passes the clamp, else 0.
fn logvar_passes(lv: f32) -> f32 {
    if (LOGVAR_CLAMP) {
        return select(0.0, 1.0, lv >= -30.0 && lv <= 20.0);
    }
    return 1.0;
}
// The IWAE objective's backward (reparam_backward): no analytic KL; each sample's own terms of
// −log w_l, ½z² − ½logvar, weighted by its normalised importance weight w̃_l (binding 6).
override IWAE: bool = false;

@group(0) @binding(0) var<storage, read> heads: array<f32>;
@group(0) @binding(1) var<storage, read_write> eps: array<f32>;
@group(0) @binding(2) var<storage, read_write> z: array<f32>;
@group(0) @binding(3) var<storage, read_write> kl_partials: array<f32>;
@group(0) @binding(4) var<uniform> p: ReparamParams;
@group(0) @binding(5) var<uniform> step: StepParams;

// 32x32 -> 64-bit multiply from 16-bit halves (WGSL has no mulhi).
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
    let al = a & 0xffffu;
    let ah = a >> 16u;
    let bl = b & 0xffffu;
    let bh = b >> 16u;
    let ll = al * bl;
    let lh = al * bh;
    let hl = ah * bl;
    let hh = ah * bh;
    let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
    let hi = hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
    return vec2<u32>(hi, a * b);
}

fn philox4x32_10(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var r = 0u; r < 10u; r++) {
        let p0 = mulhilo(0xD2511F53u, c.x);
        let p1 = mulhilo(0xCD9E8D57u, c.z);
        c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
        k = k + vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
    }
    return c;
}

// A uniform in the open interval (0, 1) from the top 24 bits: exact in f32, never 0, so log is finite.
fn to_unit(x: u32) -> f32 {
    return (f32(x >> 8u) + 0.5) * (1.0 / 16777216.0);
}

// One standard normal per element: Box–Muller on the first two Philox outputs of counter
// (element, step, 0, 0). Drawing 4 words for 1 normal wastes 3, but keeps the element -> eps map
// trivial to mirror on the CPU; B·K·L is a few thousand elements, so the cost is negligible.
fn normal_at(element: u32) -> f32 {
    let r = philox4x32_10(vec4<u32>(element, step.rng_step, 0u, 0u), vec2<u32>(step.seed_lo, step.seed_hi));
    let u1 = to_unit(r.x);
    let u2 = to_unit(r.y);
    // cos of an angle in (-π, π), the range where Vulkan/Metal bound cos's error; exact in the
    // input: 2·u2 - 1 is representable, so only π·(…) rounds.
    return sqrt(-2.0 * log(u1)) * cos(3.1415927 * (2.0 * u2 - 1.0));
}

@compute @workgroup_size(256, 1, 1)
fn reparam_forward(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let i = gid.x;               // over L·B·K
    let e = i % max(p.bk, 1u);   // element of mu / logvar
    var kl = 0.0;
    if (i < p.bk * p.samples) {
        let m = heads[mu_index(e, p.k)];
        let lv = logvar_used(heads[logvar_index(e, p.k)]);
        var n: f32;
        if (EPS_FROM_BUFFER) {
            n = eps[i];
        } else {
            n = normal_at(i);
            eps[i] = n;
        }
        z[i] = m + exp(0.5 * lv) * n;
        if (i < p.bk) {
            kl = -0.5 * (1.0 + lv - m * m - exp(lv));
        }
    }
    let total = workgroup_sum(t, kl);
    if (t == 0u) {
        kl_partials[wid.x] = total;
    }
}

@group(0) @binding(0) var<storage, read> b_heads: array<f32>;
@group(0) @binding(1) var<storage, read> b_eps: array<f32>;
@group(0) @binding(2) var<storage, read> b_dz: array<f32>;
@group(0) @binding(3) var<storage, read_write> b_dheads: array<f32>;
@group(0) @binding(4) var<uniform> bp: ReparamParams;
@group(0) @binding(5) var<uniform> b_step: StepParams;
@group(0) @binding(6) var<storage, read> b_weights: array<f32>;  // IWAE: w̃ per row l·B + b

@compute @workgroup_size(256, 1, 1)
fn reparam_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = gid.x;
    if (e >= bp.bk) {
        return;
    }
    let m = b_heads[mu_index(e, bp.k)];
    let raw_lv = b_heads[logvar_index(e, bp.k)];
    let lv = logvar_used(raw_lv);
    let sd = exp(0.5 * lv);
    var gmu = 0.0;
    var gsd = 0.0;
    for (var l = 0u; l < bp.samples; l++) {
        let i = l * bp.bk + e;
        var dz = b_dz[i];
        if (IWAE) {
            // ∂(w̃_l·½z²)/∂z = w̃_l·z, z = m + sd·eps.
            dz += b_weights[l * (bp.bk / bp.k) + e / bp.k] * (m + sd * b_eps[i]);
        }
        gmu += dz;
        gsd += dz * b_eps[i];
    }
    if (IWAE) {
        // −½logvar per sample, the weights summing to 1.
        b_dheads[mu_index(e, bp.k)] = gmu;
        b_dheads[logvar_index(e, bp.k)] = (gsd * 0.5 * sd - 0.5) * logvar_passes(raw_lv);
        return;
    }
    let w = b_step.kl_weight;
    b_dheads[mu_index(e, bp.k)] = gmu + w * m;
    b_dheads[logvar_index(e, bp.k)] = (gsd * 0.5 * sd + w * 0.5 * (exp(lv) - 1.0)) * logvar_passes(raw_lv);
}
