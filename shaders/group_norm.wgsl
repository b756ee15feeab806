// Launcher: src/kernels/group_norm.rs · CPU twin: cpu::ops::{group_norm_forward, group_norm_backward} · parity: tests/parity_group_norm.rs
// GroupNorm (PyTorch's nn.GroupNorm, diffusers' norms) over NCHW tensors [B, C, H·W]: for image b
// and group g of C/G channels, the n = (C/G)·H·W values x of the group (contiguous in NCHW) give
//   mean, rstd = 1/sqrt(var + eps)   (var the biased variance, as PyTorch's)
//   x̂ = (x − mean)·rstd,   a = x̂·γ[c] + β[c],   y = a, or with SILU y = a·σ(a) (diffusers' norm
//   then SiLU, fused: the backward recomputes a from x, so nothing more is kept)
// and the backward, from the output's gradient dy, with g = dy·silu′(a) (or dy):
//   dx    = rstd·(g·γ − Σ(g·γ)/n − x̂·Σ(g·γ·x̂)/n)      (sums over the group)
//   dγ[c] = Σ_{b, pixel} g·x̂,   dβ[c] = Σ_{b, pixel} g
// Entry points, in the order a pass runs them:
//   forward:  gn_stats (a workgroup per image and group: the mean, then Σ(x − mean)², two passes
//             for accuracy), gn_apply (a thread per value)
//   backward: gn_backward_sums (a workgroup per image and group: Σ g·γ and Σ g·γ·x̂),
//             gn_input_grad (a thread per value), gn_param_grad (a workgroup per channel)
// Every sum is a fixed tree over 256 threads, so results are reproducible bit for bit. Each entry
// point binds 0..k contiguously (x, the statistics, γ, β, then its own); variables of one type
// at one binding are shared between them.

struct GnParams {
    batch: u32,
    channels: u32,
    groups: u32,
    plane: u32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override SILU: bool = false;
// The geometry, set by the launcher from the shape (the uniform's copies are the contract's): no
// division by a run-time size in any loop.
override CHANNELS: u32 = 1u;
override GROUPS: u32 = 1u;
override PLANE: u32 = 1u;

@group(0) @binding(0) var<storage, read> gn_x: array<f32>;
// gn_stats: x, the statistics (written), params.
@group(0) @binding(1) var<storage, read_write> gn_stats_out: array<f32>; // [B·G, 2]: mean, rstd
@group(0) @binding(2) var<uniform> gn_p2: GnParams;
// The others: x, the statistics, γ, β, then
//   gn_apply          y (written), params
//   gn_backward_sums  dy, the sums (written, [B·G, 2]), params
//   gn_input_grad     dy, the sums, dx (written), params
//   gn_param_grad     dy, dγ (written, [C]), dβ (written, [C]), params (apart: a layer's γ and
//                     β are two tensors of the gradient arena)
@group(0) @binding(1) var<storage, read> gn_st: array<f32>;
@group(0) @binding(2) var<storage, read> gn_gamma: array<f32>;
@group(0) @binding(3) var<storage, read> gn_beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> gn_y: array<f32>;
@group(0) @binding(4) var<storage, read> gn_dy: array<f32>;
@group(0) @binding(5) var<uniform> gn_p5: GnParams;
@group(0) @binding(5) var<storage, read_write> gn_out5: array<f32>;
@group(0) @binding(5) var<storage, read> gn_sums: array<f32>;
@group(0) @binding(6) var<uniform> gn_p6: GnParams;
@group(0) @binding(6) var<storage, read_write> gn_dx: array<f32>;
@group(0) @binding(7) var<uniform> gn_p7: GnParams;

fn gn_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

// Image b's group of value i (NCHW index) and its channel.
fn gn_group_of(i: u32) -> vec2<u32> {
    let c = (i / PLANE) % CHANNELS;
    let b = i / (PLANE * CHANNELS);
    return vec2<u32>(b * GROUPS + c / (CHANNELS / GROUPS), c);
}

// x̂ of value i of group bg.
fn gn_xhat(i: u32, bg: u32) -> f32 {
    return (gn_x[i] - gn_st[2u * bg]) * gn_st[2u * bg + 1u];
}

// The output's gradient dy of value i (channel c, normalised x̂) taken back through SiLU: the
// pre-activation a = x̂·γ + β recomputed.
fn gn_grad(i: u32, c: u32, xhat: f32) -> f32 {
    let dy = gn_dy[i];
    if (SILU) {
        let a = xhat * gn_gamma[c] + gn_beta[c];
        let s = sigmoid(a);
        return dy * s * (1.0 + a * (1.0 - s));
    }
    return dy;
}

@compute @workgroup_size(256, 1, 1)
fn gn_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let p = gn_p2;
    let bg = wid.x;
    let n = (CHANNELS / GROUPS) * PLANE;
    let base = bg * n;
    var s = 0.0;
    for (var j = t; j < n; j += 256u) {
        s += gn_x[base + j];
    }
    let mean = workgroup_sum(t, s) / f32(n);
    var q = 0.0;
    for (var j = t; j < n; j += 256u) {
        let d = gn_x[base + j] - mean;
        q += d * d;
    }
    let var_ = workgroup_sum(t, q) / f32(n);
    if (t == 0u) {
        gn_stats_out[2u * bg] = mean;
        gn_stats_out[2u * bg + 1u] = inverseSqrt(var_ + p.eps);
    }
}

@compute @workgroup_size(256, 1, 1)
fn gn_apply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let p = gn_p5;
    let i = gn_index(gid, nwg);
    if (i >= p.batch * CHANNELS * PLANE) {
        return;
    }
    let g = gn_group_of(i);
    let a = gn_xhat(i, g.x) * gn_gamma[g.y] + gn_beta[g.y];
    if (SILU) {
        gn_y[i] = a * sigmoid(a);
    } else {
        gn_y[i] = a;
    }
}

@compute @workgroup_size(256, 1, 1)
fn gn_backward_sums(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let p = gn_p6;
    let bg = wid.x;
    if (bg >= p.batch * GROUPS) {
        return;
    }
    let cpg = CHANNELS / GROUPS;
    let n = cpg * PLANE;
    let base = bg * n;
    let c0 = (bg % GROUPS) * cpg;
    var s1 = 0.0;
    var s2 = 0.0;
    for (var j = t; j < n; j += 256u) {
        let c = c0 + j / PLANE;
        let xhat = gn_xhat(base + j, bg);
        let g = gn_grad(base + j, c, xhat) * gn_gamma[c];
        s1 += g;
        s2 += g * xhat;
    }
    let sum1 = workgroup_sum(t, s1);
    let sum2 = workgroup_sum(t, s2);
    if (t == 0u) {
        gn_out5[2u * bg] = sum1;
        gn_out5[2u * bg + 1u] = sum2;
    }
}

@compute @workgroup_size(256, 1, 1)
fn gn_input_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let p = gn_p7;
    let i = gn_index(gid, nwg);
    if (i >= p.batch * CHANNELS * PLANE) {
        return;
    }
    let g = gn_group_of(i);
    let n = f32((CHANNELS / GROUPS) * PLANE);
    let xhat = gn_xhat(i, g.x);
    let gg = gn_grad(i, g.y, xhat) * gn_gamma[g.y];
    let rstd = gn_st[2u * g.x + 1u];
    gn_dx[i] = rstd * (gg - gn_sums[2u * g.x] / n - xhat * gn_sums[2u * g.x + 1u] / n);
}

@compute @workgroup_size(256, 1, 1)
fn gn_param_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let p = gn_p7;
    let c = wid.x;
    var sg = 0.0;
    var sb = 0.0;
    let group = c / (CHANNELS / GROUPS);
    for (var j = t; j < p.batch * PLANE; j += 256u) {
        let b = j / PLANE;
        let i = (b * CHANNELS + c) * PLANE + j % PLANE;
        let xhat = gn_xhat(i, b * GROUPS + group);
        let g = gn_grad(i, c, xhat);
        sg += g * xhat;
        sb += g;
    }
    let dgamma = workgroup_sum(t, sg);
    let dbeta = workgroup_sum(t, sb);
    if (t == 0u) {
        gn_out5[c] = dgamma;
        gn_dx[c] = dbeta;
    }
}
