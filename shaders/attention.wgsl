// Launcher: src/kernels/attention.rs · CPU twin: cpu::ops::{attention_forward, attention_backward} · parity: tests/parity_kernels.rs attention_kernels_match
// The mid block's attention (diffusers' Attention, one head) between its projections: the
// products of two activations batched over images (bmm), the softmax over the keys with the
// 1/√d scaling fused, and its backward, over [rows, n] score matrices (a row per image and query
// position):
//   bmm:               C[b] = op(A[b])·op(B[b]), C[b] [M, N] row-major; A[b] [M, K] or with A_T
//                      [K, M]; B[b] [K, N] or with B_T [N, K]; a thread per 4x4 block of C,
//                      reading A and B from storage (the matmul family has no batch
//                      dimension, and an image's matrices need not start on a binding's 256-byte
//                      alignment: 14x14 positions make 196-value strides)
//   softmax_rows:      p[r, j] = exp(s·x[r, j] − m_r) / Σ_j' exp(s·x[r, j'] − m_r),
//                      m_r = max_j s·x[r, j]   (in place: the scores become the probabilities)
//   softmax_rows_grad: g[r, j] ← s·p[r, j]·(g[r, j] − Σ_j' g[r, j']·p[r, j'])
//                      (in place: the probabilities' gradient becomes the scores')
// A thread per row of scores (sums in order: reproducible bit for bit). On lavapipe (Xeon VM) a
// workgroup per row with tree sums took 100 ms for 6272 rows of 196, its barriers the cost; a
// thread per row takes a few ms, and rows are many (an image's positions times the batch). The
// 16x16-tiled bmm through workgroup memory took 4.2 s of a 7.6 s AutoencoderKL step at batch 32
// (n = 196, C = 64); the direct form below is what the engine's direct matmul kernels do.

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

fn sm_row(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 64u;
}

@compute @workgroup_size(64, 1, 1)
fn softmax_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let p = sm_p1;
    let r = sm_row(gid, nwg);
    if (r >= p.rows) {
        return;
    }
    let base = r * p.n;
    var m = -3.0e38;
    for (var j = 0u; j < p.n; j++) {
        m = max(m, p.scale * sm_x[base + j]);
    }
    var s = 0.0;
    for (var j = 0u; j < p.n; j++) {
        let e = exp(p.scale * sm_x[base + j] - m);
        sm_x[base + j] = e;
        s += e;
    }
    let inv = 1.0 / s;
    for (var j = 0u; j < p.n; j++) {
        sm_x[base + j] = sm_x[base + j] * inv;
    }
}

@compute @workgroup_size(64, 1, 1)
fn softmax_rows_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let p = sm_p2;
    let r = sm_row(gid, nwg);
    if (r >= p.rows) {
        return;
    }
    let base = r * p.n;
    var d = 0.0;
    for (var j = 0u; j < p.n; j++) {
        d += sm_x[base + j] * sm_probs[base + j];
    }
    for (var j = 0u; j < p.n; j++) {
        sm_x[base + j] = p.scale * sm_probs[base + j] * (sm_x[base + j] - d);
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

// A thread per 4x4 block C[b, i0..i0+4, j0..j0+4] (rows and columns past M and N read the last
// one, in range, and are not stored): 8 loads for 16 multiply-adds per step of K.
@compute @workgroup_size(64, 1, 1)
fn bmm(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let qn = (bp.n + 3u) / 4u;
    let qm = (bp.m + 3u) / 4u;
    let t = gid.x + gid.y * nwg.x * 64u;
    if (t >= bp.batch * qm * qn) {
        return;
    }
    let j0 = (t % qn) * 4u;
    let i0 = ((t / qn) % qm) * 4u;
    let b = t / (qn * qm);
    let a_base = b * bp.m * bp.k;
    let b_base = b * bp.k * bp.n;
    let last_i = bp.m - 1u;
    let last_j = bp.n - 1u;
    let is = vec4<u32>(min(i0, last_i), min(i0 + 1u, last_i), min(i0 + 2u, last_i), min(i0 + 3u, last_i));
    let js = vec4<u32>(min(j0, last_j), min(j0 + 1u, last_j), min(j0 + 2u, last_j), min(j0 + 3u, last_j));
    var acc: array<vec4<f32>, 4>;
    for (var kk = 0u; kk < bp.k; kk++) {
        var av: vec4<f32>;
        if (A_T) {
            let row = a_base + kk * bp.m;
            av = vec4<f32>(bmm_a[row + is.x], bmm_a[row + is.y], bmm_a[row + is.z], bmm_a[row + is.w]);
        } else {
            av = vec4<f32>(
                bmm_a[a_base + is.x * bp.k + kk],
                bmm_a[a_base + is.y * bp.k + kk],
                bmm_a[a_base + is.z * bp.k + kk],
                bmm_a[a_base + is.w * bp.k + kk],
            );
        }
        var bv: vec4<f32>;
        if (B_T) {
            bv = vec4<f32>(
                bmm_b[b_base + js.x * bp.k + kk],
                bmm_b[b_base + js.y * bp.k + kk],
                bmm_b[b_base + js.z * bp.k + kk],
                bmm_b[b_base + js.w * bp.k + kk],
            );
        } else {
            let row = b_base + kk * bp.n;
            bv = vec4<f32>(bmm_b[row + js.x], bmm_b[row + js.y], bmm_b[row + js.z], bmm_b[row + js.w]);
        }
        acc[0] += av.x * bv;
        acc[1] += av.y * bv;
        acc[2] += av.z * bv;
        acc[3] += av.w * bv;
    }
    let c0 = b * bp.m * bp.n;
    for (var r = 0u; r < 4u; r++) {
        if (i0 + r < bp.m) {
            for (var q = 0u; q < 4u; q++) {
                if (j0 + q < bp.n) {
                    bmm_c[c0 + (i0 + r) * bp.n + j0 + q] = acc[r][q];
                }
            }
        }
    }
}
