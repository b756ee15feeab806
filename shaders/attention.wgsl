// Launcher: src/kernels/attention.rs · CPU twin: cpu::ops::{attention_forward, attention_backward} · parity: tests/parity_kernels.rs attention_kernels_match
// The mid block's attention (diffusers' Attention, one head) between its projections: the
// products of two activations batched over images (bmm), the softmax over the keys with the
// 1/√d scaling fused, and its backward, over [rows, n] score matrices (a row per image and query
// position):
//   bmm:               C[b] = op(A[b])·op(B[b]), C[b] [M, N] row-major; A[b] [M, K] or with A_T
//                      [K, M]; B[b] [K, N] or with B_T [N, K]; image b = workgroup z. 16x16 tiles
//                      through workgroup memory, a thread per element of C (the matmul family
//                      has no batch dimension, and an image's matrices need not start on a
//                      binding's 256-byte alignment: 14x14 positions make 196-value strides)
//   softmax_rows:      p[r, j] = exp(s·x[r, j] − m_r) / Σ_j' exp(s·x[r, j'] − m_r),
//                      m_r = max_j s·x[r, j]   (in place: the scores become the probabilities)
//   softmax_rows_grad: g[r, j] ← s·p[r, j]·(g[r, j] − Σ_j' g[r, j']·p[r, j'])
//                      (in place: the probabilities' gradient becomes the scores')
// A workgroup per row; its max and sums are fixed trees over 256 threads (reproducible bit for
// bit).

struct SoftmaxParams {
    rows: u32,
    n: u32,
    scale: f32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> sm_x: array<f32>; // scores → p; or dp → dscores
@group(0) @binding(1) var<uniform> sm_p1: SoftmaxParams;
@group(0) @binding(1) var<storage, read> sm_probs: array<f32>;    // softmax_rows_grad: p
@group(0) @binding(2) var<uniform> sm_p2: SoftmaxParams;

var<workgroup> sm_partial: array<f32, 256>;

fn workgroup_max(t: u32, v: f32) -> f32 {
    workgroupBarrier();
    sm_partial[t] = v;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if (t < stride) {
            sm_partial[t] = max(sm_partial[t], sm_partial[t + stride]);
        }
        workgroupBarrier();
    }
    return sm_partial[0];
}

// Row r of a grid that spills into y past 65535 workgroups.
fn sm_row(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

@compute @workgroup_size(256, 1, 1)
fn softmax_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let p = sm_p1;
    let r = sm_row(wid, nwg);
    // Uniform control flow: every thread of a workgroup past the last row still joins the sums.
    let live = r < p.rows;
    let base = min(r, p.rows - 1u) * p.n;
    var m = -3.0e38;
    for (var j = t; j < p.n; j += 256u) {
        m = max(m, p.scale * sm_x[base + j]);
    }
    m = workgroup_max(t, m);
    var s = 0.0;
    for (var j = t; j < p.n; j += 256u) {
        s += exp(p.scale * sm_x[base + j] - m);
    }
    s = workgroup_sum(t, s);
    if (live) {
        for (var j = t; j < p.n; j += 256u) {
            sm_x[base + j] = exp(p.scale * sm_x[base + j] - m) / s;
        }
    }
}

@compute @workgroup_size(256, 1, 1)
fn softmax_rows_grad(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let p = sm_p2;
    let r = sm_row(wid, nwg);
    let live = r < p.rows;
    let base = min(r, p.rows - 1u) * p.n;
    var d = 0.0;
    for (var j = t; j < p.n; j += 256u) {
        d += sm_x[base + j] * sm_probs[base + j];
    }
    d = workgroup_sum(t, d);
    if (live) {
        for (var j = t; j < p.n; j += 256u) {
            sm_x[base + j] = p.scale * sm_probs[base + j] * (sm_x[base + j] - d);
        }
    }
}

struct BmmParams {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
}

override A_T: bool = false;
override B_T: bool = false;

@group(0) @binding(0) var<storage, read> bmm_a: array<f32>;
@group(0) @binding(1) var<storage, read> bmm_b: array<f32>;
@group(0) @binding(2) var<storage, read_write> bmm_c: array<f32>;
@group(0) @binding(3) var<uniform> bp: BmmParams;

var<workgroup> tile_a: array<array<f32, 16>, 16>;
var<workgroup> tile_b: array<array<f32, 16>, 16>;

// op(A)[i, kk] of image b (0 outside the matrix).
fn bmm_a_at(b: u32, i: u32, kk: u32) -> f32 {
    if (i >= bp.m || kk >= bp.k) {
        return 0.0;
    }
    let base = b * bp.m * bp.k;
    if (A_T) {
        return bmm_a[base + kk * bp.m + i];
    }
    return bmm_a[base + i * bp.k + kk];
}

// op(B)[kk, j] of image b (0 outside the matrix).
fn bmm_b_at(b: u32, kk: u32, j: u32) -> f32 {
    if (kk >= bp.k || j >= bp.n) {
        return 0.0;
    }
    let base = b * bp.k * bp.n;
    if (B_T) {
        return bmm_b[base + j * bp.k + kk];
    }
    return bmm_b[base + kk * bp.n + j];
}

@compute @workgroup_size(16, 16, 1)
fn bmm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = wid.z;
    let row = wid.y * 16u + lid.y;
    let col = wid.x * 16u + lid.x;
    var acc = 0.0;
    for (var k0 = 0u; k0 < bp.k; k0 += 16u) {
        tile_a[lid.y][lid.x] = bmm_a_at(b, row, k0 + lid.x);
        tile_b[lid.y][lid.x] = bmm_b_at(b, k0 + lid.y, col);
        workgroupBarrier();
        for (var t = 0u; t < 16u; t++) {
            acc += tile_a[lid.y][t] * tile_b[t][lid.x];
        }
        workgroupBarrier();
    }
    if (row < bp.m && col < bp.n) {
        bmm_c[b * bp.m * bp.n + row * bp.n + col] = acc;
    }
}
