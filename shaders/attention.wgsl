// Launcher: src/kernels/attention.rs · CPU twin: cpu::ops::{attention_forward, attention_backward} · parity: tests/parity_kernels.rs attention_kernels_match
// The mid block's attention (diffusers' Attention, one head) between its products, which run on
// the matmul kernels image by image: the softmax over the keys with the 1/√d scaling fused, and
// its backward, over [rows, n] score matrices (a row per image and query position):
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
