// Matrix multiply C = op(A) · op(B) for the three layouts training needs, with a fused epilogue:
//   C = act(op(A)·op(B) + bias + (ACCUMULATE ? C_old : 0)) ⊙ (RELU_MASK ? [mask > 0] : 1)
// The mask fuses a ReLU's backward into the product that computes its input gradient:
// dX = (dY·W) ⊙ [h > 0] with h the ReLU's saved output. ROW_SUM also writes
// rowsum[i] = Σ_k op(A)[i, k] — for the weight gradient dW = dYᵀ·X that is the bias gradient
// colsum(dY), computed from the A values the product loads anyway (direct, tn4 and tiled kernels).
// BCE fuses the loss into the logits product: C receives dlogits = (σ(l) - x)/L instead of the
// logits l, against targets x (binding 5, [B, N], row i compared with target row i mod B, L = M/B),
// and each thread writes the sum of its elements' losses / L to one slot of binding 6 (loss partials,
// summed by reduce.wgsl's loss_reduce). It saves the BCE pass and the logits' round trip in memory.
// Bindings 5 and 6 serve RELU_MASK / ROW_SUM or BCE, never both (the launcher checks).
//
// Layouts (row-major everywhere, weights stored as PyTorch does, [out, in]):
//   NN (0): A [M,K], B [K,N]   e.g. dX = dY · W
//   NT (1): A [M,K], B [N,K]   e.g. Y  = X · Wᵀ          (Linear forward)
//   TN (2): A [K,M], B [K,N]   e.g. dW = dYᵀ · X         (weight gradient)
//
// Two kernels share the epilogue:
//   matmul_tiled  — workgroup-memory tiles with 4x4 register blocking; the right choice on real GPUs.
//   matmul_direct — 8x8 outputs per thread read straight from storage; on CPU rasterisers such as
//                   lavapipe, where "workgroup memory" is ordinary memory plus barriers, it is ~2.5x faster.
// Both handle any M, N, K: out-of-range rows/columns are clamped on load (direct) or zero-filled
// (tiled), and masked on store.

struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    target_rows: u32,  // BCE: B, the targets' rows
}

override LAYOUT: u32 = 1u;      // 0 NN, 1 NT, 2 TN
override ACT: u32 = 0u;         // 0 identity, 1 ReLU, 2 sigmoid
override HAS_BIAS: bool = false;
override ACCUMULATE: bool = false;
override RELU_MASK: bool = false;
override ROW_SUM: bool = false;
override BCE: bool = false;

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<uniform> p: MatmulParams;
@group(0) @binding(5) var<storage, read> mask: array<f32>;
@group(0) @binding(6) var<storage, read_write> rowsum: array<f32>;

// Row sums of op(A) for rows row0 .. row0+7, written by the threads of the first column block.
fn store_row_sums(row0: u32, first_block: bool, lo: vec4<f32>, hi: vec4<f32>) {
    if (!ROW_SUM || !first_block) {
        return;
    }
    let v = array<f32, 8>(lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w);
    for (var r = 0u; r < 8u; r++) {
        if (row0 + r < p.m) {
            rowsum[row0 + r] = v[r];
        }
    }
}

fn a_at(i: u32, kk: u32) -> f32 {
    if (LAYOUT == 2u) {
        return a[kk * p.m + i];
    }
    return a[i * p.k + kk];
}

fn b_at(kk: u32, j: u32) -> f32 {
    if (LAYOUT == 1u) {
        return b[j * p.k + kk];
    }
    return b[kk * p.n + j];
}

// Stores C[i, j] through the epilogue; returns the element's BCE loss / L (0 unless BCE).
fn epilogue_store(i: u32, j: u32, acc: f32) -> f32 {
    let idx = i * p.n + j;
    var v = acc;
    if (HAS_BIAS) {
        v = v + bias[j];
    }
    if (BCE) {
        let r = bce_with_logits(v, mask[(i % p.target_rows) * p.n + j]);
        let inv_l = 1.0 / f32(p.m / p.target_rows);
        c[idx] = r.y * inv_l;
        return r.x * inv_l;
    }
    if (ACCUMULATE) {
        v = v + c[idx];
    }
    if (ACT == 1u) {
        v = max(v, 0.0);
    } else if (ACT == 2u) {
        v = sigmoid(v);
    }
    if (RELU_MASK) {
        v = select(0.0, v, mask[idx] > 0.0);
    }
    c[idx] = v;
    return 0.0;
}

// One thread's BCE loss partial (BCE only), to slot `slot` of binding 6.
fn store_bce_partial(slot: u32, loss: f32) {
    if (BCE) {
        rowsum[slot] = loss;
    }
}

// A direct-kernel thread's loss-partial slot: threads are numbered row-major over the grid.
fn direct_slot(gid: vec3<u32>) -> u32 {
    return gid.y * ((p.n + 63u) / 64u * 8u) + gid.x;
}

// ---------------------------------------------------------------------------------------------
// matmul_direct: an 8x8 thread grid, each thread owning an 8x8 block of C (a 64x64 tile) held in
// sixteen vec4 accumulators. Written out by hand rather than as arrays and loops: CPU drivers keep
// named vectors in registers, while a dynamically indexed 64-element array ends up in memory.

// Row i, columns col0..col0+7 through the epilogue; returns their BCE loss (0 unless BCE).
fn store_row(i: u32, col0: u32, lo: vec4<f32>, hi: vec4<f32>) -> f32 {
    var loss = 0.0;
    if (i >= p.m) {
        return loss;
    }
    let v = array<f32, 8>(lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w);
    for (var s = 0u; s < 8u; s++) {
        if (col0 + s < p.n) {
            loss += epilogue_store(i, col0 + s, v[s]);
        }
    }
    return loss;
}

@compute @workgroup_size(8, 8, 1)
fn matmul_direct(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row0 = gid.y * 8u;
    let col0 = gid.x * 8u;
    if (row0 >= p.m || col0 >= p.n) {
        store_bce_partial(direct_slot(gid), 0.0);
        return;
    }
    // Clamp indices so every load is in bounds; the extra rows/columns are never stored.
    let i0 = min(row0 + 0u, p.m - 1u);
    let i1 = min(row0 + 1u, p.m - 1u);
    let i2 = min(row0 + 2u, p.m - 1u);
    let i3 = min(row0 + 3u, p.m - 1u);
    let i4 = min(row0 + 4u, p.m - 1u);
    let i5 = min(row0 + 5u, p.m - 1u);
    let i6 = min(row0 + 6u, p.m - 1u);
    let i7 = min(row0 + 7u, p.m - 1u);
    let j0 = min(col0 + 0u, p.n - 1u);
    let j1 = min(col0 + 1u, p.n - 1u);
    let j2 = min(col0 + 2u, p.n - 1u);
    let j3 = min(col0 + 3u, p.n - 1u);
    let j4 = min(col0 + 4u, p.n - 1u);
    let j5 = min(col0 + 5u, p.n - 1u);
    let j6 = min(col0 + 6u, p.n - 1u);
    let j7 = min(col0 + 7u, p.n - 1u);
    var c0l = vec4<f32>(0.0);
    var c0h = vec4<f32>(0.0);
    var c1l = vec4<f32>(0.0);
    var c1h = vec4<f32>(0.0);
    var c2l = vec4<f32>(0.0);
    var c2h = vec4<f32>(0.0);
    var c3l = vec4<f32>(0.0);
    var c3h = vec4<f32>(0.0);
    var c4l = vec4<f32>(0.0);
    var c4h = vec4<f32>(0.0);
    var c5l = vec4<f32>(0.0);
    var c5h = vec4<f32>(0.0);
    var c6l = vec4<f32>(0.0);
    var c6h = vec4<f32>(0.0);
    var c7l = vec4<f32>(0.0);
    var c7h = vec4<f32>(0.0);
    var sl = vec4<f32>(0.0);
    var sh = vec4<f32>(0.0);
    for (var kk = 0u; kk < p.k; kk++) {
        let bl = vec4<f32>(b_at(kk, j0), b_at(kk, j1), b_at(kk, j2), b_at(kk, j3));
        let bh = vec4<f32>(b_at(kk, j4), b_at(kk, j5), b_at(kk, j6), b_at(kk, j7));
        let s0 = a_at(i0, kk);
        let a0 = vec4<f32>(s0);
        c0l = fma(a0, bl, c0l);
        c0h = fma(a0, bh, c0h);
        let s1 = a_at(i1, kk);
        let a1 = vec4<f32>(s1);
        c1l = fma(a1, bl, c1l);
        c1h = fma(a1, bh, c1h);
        let s2 = a_at(i2, kk);
        let a2 = vec4<f32>(s2);
        c2l = fma(a2, bl, c2l);
        c2h = fma(a2, bh, c2h);
        let s3 = a_at(i3, kk);
        let a3 = vec4<f32>(s3);
        c3l = fma(a3, bl, c3l);
        c3h = fma(a3, bh, c3h);
        let s4 = a_at(i4, kk);
        let a4 = vec4<f32>(s4);
        c4l = fma(a4, bl, c4l);
        c4h = fma(a4, bh, c4h);
        let s5 = a_at(i5, kk);
        let a5 = vec4<f32>(s5);
        c5l = fma(a5, bl, c5l);
        c5h = fma(a5, bh, c5h);
        let s6 = a_at(i6, kk);
        let a6 = vec4<f32>(s6);
        c6l = fma(a6, bl, c6l);
        c6h = fma(a6, bh, c6h);
        let s7 = a_at(i7, kk);
        let a7 = vec4<f32>(s7);
        c7l = fma(a7, bl, c7l);
        c7h = fma(a7, bh, c7h);
        if (ROW_SUM) {
            sl += vec4<f32>(s0, s1, s2, s3);
            sh += vec4<f32>(s4, s5, s6, s7);
        }
    }
    store_row_sums(row0, gid.x == 0u, sl, sh);
    var loss = 0.0;
    loss += store_row(row0 + 0u, col0, c0l, c0h);
    loss += store_row(row0 + 1u, col0, c1l, c1h);
    loss += store_row(row0 + 2u, col0, c2l, c2h);
    loss += store_row(row0 + 3u, col0, c3l, c3h);
    loss += store_row(row0 + 4u, col0, c4l, c4h);
    loss += store_row(row0 + 5u, col0, c5l, c5h);
    loss += store_row(row0 + 6u, col0, c6l, c6h);
    loss += store_row(row0 + 7u, col0, c7l, c7h);
    store_bce_partial(direct_slot(gid), loss);
}


// matmul_nt4: NT with K a multiple of 4 — both operands are K-contiguous, so each thread reads
// vec4s along K (one 16-byte load where the scalar kernel makes four).
@group(0) @binding(0) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> b4: array<vec4<f32>>;

@compute @workgroup_size(8, 8, 1)
fn matmul_nt4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row0 = gid.y * 8u;
    let col0 = gid.x * 8u;
    if (row0 >= p.m || col0 >= p.n) {
        store_bce_partial(direct_slot(gid), 0.0);
        return;
    }
    let k4 = p.k / 4u;
    let i0 = min(row0 + 0u, p.m - 1u) * k4;
    let i1 = min(row0 + 1u, p.m - 1u) * k4;
    let i2 = min(row0 + 2u, p.m - 1u) * k4;
    let i3 = min(row0 + 3u, p.m - 1u) * k4;
    let i4 = min(row0 + 4u, p.m - 1u) * k4;
    let i5 = min(row0 + 5u, p.m - 1u) * k4;
    let i6 = min(row0 + 6u, p.m - 1u) * k4;
    let i7 = min(row0 + 7u, p.m - 1u) * k4;
    let j0 = min(col0 + 0u, p.n - 1u) * k4;
    let j1 = min(col0 + 1u, p.n - 1u) * k4;
    let j2 = min(col0 + 2u, p.n - 1u) * k4;
    let j3 = min(col0 + 3u, p.n - 1u) * k4;
    let j4 = min(col0 + 4u, p.n - 1u) * k4;
    let j5 = min(col0 + 5u, p.n - 1u) * k4;
    let j6 = min(col0 + 6u, p.n - 1u) * k4;
    let j7 = min(col0 + 7u, p.n - 1u) * k4;
    var c0l = vec4<f32>(0.0);
    var c0h = vec4<f32>(0.0);
    var c1l = vec4<f32>(0.0);
    var c1h = vec4<f32>(0.0);
    var c2l = vec4<f32>(0.0);
    var c2h = vec4<f32>(0.0);
    var c3l = vec4<f32>(0.0);
    var c3h = vec4<f32>(0.0);
    var c4l = vec4<f32>(0.0);
    var c4h = vec4<f32>(0.0);
    var c5l = vec4<f32>(0.0);
    var c5h = vec4<f32>(0.0);
    var c6l = vec4<f32>(0.0);
    var c6h = vec4<f32>(0.0);
    var c7l = vec4<f32>(0.0);
    var c7h = vec4<f32>(0.0);
    for (var q = 0u; q < k4; q++) {
        let v0 = b4[j0 + q];
        let v1 = b4[j1 + q];
        let v2 = b4[j2 + q];
        let v3 = b4[j3 + q];
        let v4 = b4[j4 + q];
        let v5 = b4[j5 + q];
        let v6 = b4[j6 + q];
        let v7 = b4[j7 + q];
        let u0 = a4[i0 + q];
        c0l += vec4<f32>(dot(u0, v0), dot(u0, v1), dot(u0, v2), dot(u0, v3));
        c0h += vec4<f32>(dot(u0, v4), dot(u0, v5), dot(u0, v6), dot(u0, v7));
        let u1 = a4[i1 + q];
        c1l += vec4<f32>(dot(u1, v0), dot(u1, v1), dot(u1, v2), dot(u1, v3));
        c1h += vec4<f32>(dot(u1, v4), dot(u1, v5), dot(u1, v6), dot(u1, v7));
        let u2 = a4[i2 + q];
        c2l += vec4<f32>(dot(u2, v0), dot(u2, v1), dot(u2, v2), dot(u2, v3));
        c2h += vec4<f32>(dot(u2, v4), dot(u2, v5), dot(u2, v6), dot(u2, v7));
        let u3 = a4[i3 + q];
        c3l += vec4<f32>(dot(u3, v0), dot(u3, v1), dot(u3, v2), dot(u3, v3));
        c3h += vec4<f32>(dot(u3, v4), dot(u3, v5), dot(u3, v6), dot(u3, v7));
        let u4 = a4[i4 + q];
        c4l += vec4<f32>(dot(u4, v0), dot(u4, v1), dot(u4, v2), dot(u4, v3));
        c4h += vec4<f32>(dot(u4, v4), dot(u4, v5), dot(u4, v6), dot(u4, v7));
        let u5 = a4[i5 + q];
        c5l += vec4<f32>(dot(u5, v0), dot(u5, v1), dot(u5, v2), dot(u5, v3));
        c5h += vec4<f32>(dot(u5, v4), dot(u5, v5), dot(u5, v6), dot(u5, v7));
        let u6 = a4[i6 + q];
        c6l += vec4<f32>(dot(u6, v0), dot(u6, v1), dot(u6, v2), dot(u6, v3));
        c6h += vec4<f32>(dot(u6, v4), dot(u6, v5), dot(u6, v6), dot(u6, v7));
        let u7 = a4[i7 + q];
        c7l += vec4<f32>(dot(u7, v0), dot(u7, v1), dot(u7, v2), dot(u7, v3));
        c7h += vec4<f32>(dot(u7, v4), dot(u7, v5), dot(u7, v6), dot(u7, v7));
    }
    var loss = 0.0;
    loss += store_row(row0 + 0u, col0, c0l, c0h);
    loss += store_row(row0 + 1u, col0, c1l, c1h);
    loss += store_row(row0 + 2u, col0, c2l, c2h);
    loss += store_row(row0 + 3u, col0, c3l, c3h);
    loss += store_row(row0 + 4u, col0, c4l, c4h);
    loss += store_row(row0 + 5u, col0, c5l, c5h);
    loss += store_row(row0 + 6u, col0, c6l, c6h);
    loss += store_row(row0 + 7u, col0, c7l, c7h);
    store_bce_partial(direct_slot(gid), loss);
}

// matmul_nn4: NN with K and N multiples of 4: A rows read as vec4s along K, B rows as vec4s along N.
@compute @workgroup_size(8, 8, 1)
fn matmul_nn4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row0 = gid.y * 8u;
    let col0 = gid.x * 8u;
    if (row0 >= p.m || col0 >= p.n) {
        store_bce_partial(direct_slot(gid), 0.0);
        return;
    }
    let k4 = p.k / 4u;
    let n4 = p.n / 4u;
    // Column vec4s of B: col0/4 and col0/4 + 1, clamped (clamped loads are never stored).
    let jl = min(col0 / 4u, n4 - 1u);
    let jh = min(col0 / 4u + 1u, n4 - 1u);
    let i0 = min(row0 + 0u, p.m - 1u) * k4;
    let i1 = min(row0 + 1u, p.m - 1u) * k4;
    let i2 = min(row0 + 2u, p.m - 1u) * k4;
    let i3 = min(row0 + 3u, p.m - 1u) * k4;
    let i4 = min(row0 + 4u, p.m - 1u) * k4;
    let i5 = min(row0 + 5u, p.m - 1u) * k4;
    let i6 = min(row0 + 6u, p.m - 1u) * k4;
    let i7 = min(row0 + 7u, p.m - 1u) * k4;
    var c0l = vec4<f32>(0.0);
    var c0h = vec4<f32>(0.0);
    var c1l = vec4<f32>(0.0);
    var c1h = vec4<f32>(0.0);
    var c2l = vec4<f32>(0.0);
    var c2h = vec4<f32>(0.0);
    var c3l = vec4<f32>(0.0);
    var c3h = vec4<f32>(0.0);
    var c4l = vec4<f32>(0.0);
    var c4h = vec4<f32>(0.0);
    var c5l = vec4<f32>(0.0);
    var c5h = vec4<f32>(0.0);
    var c6l = vec4<f32>(0.0);
    var c6h = vec4<f32>(0.0);
    var c7l = vec4<f32>(0.0);
    var c7h = vec4<f32>(0.0);
    for (var q = 0u; q < k4; q++) {
        let v0l = b4[(q * 4u + 0u) * n4 + jl];
        let v0h = b4[(q * 4u + 0u) * n4 + jh];
        let v1l = b4[(q * 4u + 1u) * n4 + jl];
        let v1h = b4[(q * 4u + 1u) * n4 + jh];
        let v2l = b4[(q * 4u + 2u) * n4 + jl];
        let v2h = b4[(q * 4u + 2u) * n4 + jh];
        let v3l = b4[(q * 4u + 3u) * n4 + jl];
        let v3h = b4[(q * 4u + 3u) * n4 + jh];
        let u0 = a4[i0 + q];
        c0l = fma(vec4<f32>(u0.x), v0l, c0l);
        c0h = fma(vec4<f32>(u0.x), v0h, c0h);
        c0l = fma(vec4<f32>(u0.y), v1l, c0l);
        c0h = fma(vec4<f32>(u0.y), v1h, c0h);
        c0l = fma(vec4<f32>(u0.z), v2l, c0l);
        c0h = fma(vec4<f32>(u0.z), v2h, c0h);
        c0l = fma(vec4<f32>(u0.w), v3l, c0l);
        c0h = fma(vec4<f32>(u0.w), v3h, c0h);
        let u1 = a4[i1 + q];
        c1l = fma(vec4<f32>(u1.x), v0l, c1l);
        c1h = fma(vec4<f32>(u1.x), v0h, c1h);
        c1l = fma(vec4<f32>(u1.y), v1l, c1l);
        c1h = fma(vec4<f32>(u1.y), v1h, c1h);
        c1l = fma(vec4<f32>(u1.z), v2l, c1l);
        c1h = fma(vec4<f32>(u1.z), v2h, c1h);
        c1l = fma(vec4<f32>(u1.w), v3l, c1l);
        c1h = fma(vec4<f32>(u1.w), v3h, c1h);
        let u2 = a4[i2 + q];
        c2l = fma(vec4<f32>(u2.x), v0l, c2l);
        c2h = fma(vec4<f32>(u2.x), v0h, c2h);
        c2l = fma(vec4<f32>(u2.y), v1l, c2l);
        c2h = fma(vec4<f32>(u2.y), v1h, c2h);
        c2l = fma(vec4<f32>(u2.z), v2l, c2l);
        c2h = fma(vec4<f32>(u2.z), v2h, c2h);
        c2l = fma(vec4<f32>(u2.w), v3l, c2l);
        c2h = fma(vec4<f32>(u2.w), v3h, c2h);
        let u3 = a4[i3 + q];
        c3l = fma(vec4<f32>(u3.x), v0l, c3l);
        c3h = fma(vec4<f32>(u3.x), v0h, c3h);
        c3l = fma(vec4<f32>(u3.y), v1l, c3l);
        c3h = fma(vec4<f32>(u3.y), v1h, c3h);
        c3l = fma(vec4<f32>(u3.z), v2l, c3l);
        c3h = fma(vec4<f32>(u3.z), v2h, c3h);
        c3l = fma(vec4<f32>(u3.w), v3l, c3l);
        c3h = fma(vec4<f32>(u3.w), v3h, c3h);
        let u4 = a4[i4 + q];
        c4l = fma(vec4<f32>(u4.x), v0l, c4l);
        c4h = fma(vec4<f32>(u4.x), v0h, c4h);
        c4l = fma(vec4<f32>(u4.y), v1l, c4l);
        c4h = fma(vec4<f32>(u4.y), v1h, c4h);
        c4l = fma(vec4<f32>(u4.z), v2l, c4l);
        c4h = fma(vec4<f32>(u4.z), v2h, c4h);
        c4l = fma(vec4<f32>(u4.w), v3l, c4l);
        c4h = fma(vec4<f32>(u4.w), v3h, c4h);
        let u5 = a4[i5 + q];
        c5l = fma(vec4<f32>(u5.x), v0l, c5l);
        c5h = fma(vec4<f32>(u5.x), v0h, c5h);
        c5l = fma(vec4<f32>(u5.y), v1l, c5l);
        c5h = fma(vec4<f32>(u5.y), v1h, c5h);
        c5l = fma(vec4<f32>(u5.z), v2l, c5l);
        c5h = fma(vec4<f32>(u5.z), v2h, c5h);
        c5l = fma(vec4<f32>(u5.w), v3l, c5l);
        c5h = fma(vec4<f32>(u5.w), v3h, c5h);
        let u6 = a4[i6 + q];
        c6l = fma(vec4<f32>(u6.x), v0l, c6l);
        c6h = fma(vec4<f32>(u6.x), v0h, c6h);
        c6l = fma(vec4<f32>(u6.y), v1l, c6l);
        c6h = fma(vec4<f32>(u6.y), v1h, c6h);
        c6l = fma(vec4<f32>(u6.z), v2l, c6l);
        c6h = fma(vec4<f32>(u6.z), v2h, c6h);
        c6l = fma(vec4<f32>(u6.w), v3l, c6l);
        c6h = fma(vec4<f32>(u6.w), v3h, c6h);
        let u7 = a4[i7 + q];
        c7l = fma(vec4<f32>(u7.x), v0l, c7l);
        c7h = fma(vec4<f32>(u7.x), v0h, c7h);
        c7l = fma(vec4<f32>(u7.y), v1l, c7l);
        c7h = fma(vec4<f32>(u7.y), v1h, c7h);
        c7l = fma(vec4<f32>(u7.z), v2l, c7l);
        c7h = fma(vec4<f32>(u7.z), v2h, c7h);
        c7l = fma(vec4<f32>(u7.w), v3l, c7l);
        c7h = fma(vec4<f32>(u7.w), v3h, c7h);
    }
    var loss = 0.0;
    loss += store_row(row0 + 0u, col0, c0l, c0h);
    loss += store_row(row0 + 1u, col0, c1l, c1h);
    loss += store_row(row0 + 2u, col0, c2l, c2h);
    loss += store_row(row0 + 3u, col0, c3l, c3h);
    loss += store_row(row0 + 4u, col0, c4l, c4h);
    loss += store_row(row0 + 5u, col0, c5l, c5h);
    loss += store_row(row0 + 6u, col0, c6l, c6h);
    loss += store_row(row0 + 7u, col0, c7l, c7h);
    store_bce_partial(direct_slot(gid), loss);
}


// matmul_tn4: TN with M and N multiples of 4: for each k, the thread's 8 rows and 8 columns are
// two vec4s of A's row k and two of B's row k — four loads for 64 multiply-adds.
@compute @workgroup_size(8, 8, 1)
fn matmul_tn4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row0 = gid.y * 8u;
    let col0 = gid.x * 8u;
    if (row0 >= p.m || col0 >= p.n) {
        store_bce_partial(direct_slot(gid), 0.0);
        return;
    }
    let m4 = p.m / 4u;
    let n4 = p.n / 4u;
    let il = min(row0 / 4u, m4 - 1u);
    let ih = min(row0 / 4u + 1u, m4 - 1u);
    let jl = min(col0 / 4u, n4 - 1u);
    let jh = min(col0 / 4u + 1u, n4 - 1u);
    var c0l = vec4<f32>(0.0);
    var c0h = vec4<f32>(0.0);
    var c1l = vec4<f32>(0.0);
    var c1h = vec4<f32>(0.0);
    var c2l = vec4<f32>(0.0);
    var c2h = vec4<f32>(0.0);
    var c3l = vec4<f32>(0.0);
    var c3h = vec4<f32>(0.0);
    var c4l = vec4<f32>(0.0);
    var c4h = vec4<f32>(0.0);
    var c5l = vec4<f32>(0.0);
    var c5h = vec4<f32>(0.0);
    var c6l = vec4<f32>(0.0);
    var c6h = vec4<f32>(0.0);
    var c7l = vec4<f32>(0.0);
    var c7h = vec4<f32>(0.0);
    var sl = vec4<f32>(0.0);
    var sh = vec4<f32>(0.0);
    for (var kk = 0u; kk < p.k; kk++) {
        let al = a4[kk * m4 + il];
        let ah = a4[kk * m4 + ih];
        if (ROW_SUM) {
            sl += al;
            sh += ah;
        }
        let vl = b4[kk * n4 + jl];
        let vh = b4[kk * n4 + jh];
        c0l = fma(vec4<f32>(al.x), vl, c0l);
        c0h = fma(vec4<f32>(al.x), vh, c0h);
        c1l = fma(vec4<f32>(al.y), vl, c1l);
        c1h = fma(vec4<f32>(al.y), vh, c1h);
        c2l = fma(vec4<f32>(al.z), vl, c2l);
        c2h = fma(vec4<f32>(al.z), vh, c2h);
        c3l = fma(vec4<f32>(al.w), vl, c3l);
        c3h = fma(vec4<f32>(al.w), vh, c3h);
        c4l = fma(vec4<f32>(ah.x), vl, c4l);
        c4h = fma(vec4<f32>(ah.x), vh, c4h);
        c5l = fma(vec4<f32>(ah.y), vl, c5l);
        c5h = fma(vec4<f32>(ah.y), vh, c5h);
        c6l = fma(vec4<f32>(ah.z), vl, c6l);
        c6h = fma(vec4<f32>(ah.z), vh, c6h);
        c7l = fma(vec4<f32>(ah.w), vl, c7l);
        c7h = fma(vec4<f32>(ah.w), vh, c7h);
    }
    // With M % 4 == 0 the clamped vec4 `ah` repeats real rows only past M, never stored.
    store_row_sums(row0, gid.x == 0u, sl, sh);
    var loss = 0.0;
    loss += store_row(row0 + 0u, col0, c0l, c0h);
    loss += store_row(row0 + 1u, col0, c1l, c1h);
    loss += store_row(row0 + 2u, col0, c2l, c2h);
    loss += store_row(row0 + 3u, col0, c3l, c3h);
    loss += store_row(row0 + 4u, col0, c4l, c4h);
    loss += store_row(row0 + 5u, col0, c5l, c5h);
    loss += store_row(row0 + 6u, col0, c6l, c6h);
    loss += store_row(row0 + 7u, col0, c7l, c7h);
    store_bce_partial(direct_slot(gid), loss);
}

// ---------------------------------------------------------------------------------------------
// matmul_tiled: 16x16 threads, 4x4 outputs each (strided by 16 so workgroup-memory reads are
// conflict-free), a 64x64 tile of C, K consumed 16 at a time through workgroup memory.

const TS: u32 = 64u;   // tile side in C
const TK: u32 = 16u;   // K step
const TT: u32 = 16u;   // threads per side

var<workgroup> a_tile: array<f32, 1024>;  // [TK][TS], a_tile[kk * TS + i]
var<workgroup> b_tile: array<f32, 1024>;  // [TK][TS], b_tile[kk * TS + j]

@compute @workgroup_size(16, 16, 1)
fn matmul_tiled(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) lidx: u32,
) {
    let tile_row = wid.y * TS;
    let tile_col = wid.x * TS;
    var acc: array<f32, 16>;
    for (var t = 0u; t < 16u; t++) {
        acc[t] = 0.0;
    }
    var rs = vec4<f32>(0.0);  // row sums of op(A) for this thread's 4 rows (ROW_SUM)
    let k_tiles = (p.k + TK - 1u) / TK;
    for (var kt = 0u; kt < k_tiles; kt++) {
        let k0 = kt * TK;
        // 256 threads load 1024 elements of each tile: 4 each, zero outside the matrix.
        for (var q = 0u; q < 4u; q++) {
            let e = lidx + q * 256u;
            let kk = e / TS;
            let x = e % TS;
            let gk = k0 + kk;
            let gi = tile_row + x;
            let gj = tile_col + x;
            var av = 0.0;
            if (gk < p.k && gi < p.m) {
                av = a_at(gi, gk);
            }
            var bv = 0.0;
            if (gk < p.k && gj < p.n) {
                bv = b_at(gk, gj);
            }
            a_tile[e] = av;
            b_tile[e] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var r = 0u; r < 4u; r++) {
                av[r] = a_tile[kk * TS + lid.y + r * TT];
                bv[r] = b_tile[kk * TS + lid.x + r * TT];
            }
            for (var r = 0u; r < 4u; r++) {
                for (var s = 0u; s < 4u; s++) {
                    acc[r * 4u + s] = fma(av[r], bv[s], acc[r * 4u + s]);
                }
            }
            if (ROW_SUM) {
                rs += vec4<f32>(av[0], av[1], av[2], av[3]);
            }
        }
        workgroupBarrier();
    }
    if (ROW_SUM && wid.x == 0u && lid.x == 0u) {
        for (var r = 0u; r < 4u; r++) {
            let i = tile_row + lid.y + r * TT;
            if (i < p.m) {
                rowsum[i] = rs[r];
            }
        }
    }
    var loss = 0.0;
    for (var r = 0u; r < 4u; r++) {
        let i = tile_row + lid.y + r * TT;
        for (var s = 0u; s < 4u; s++) {
            let j = tile_col + lid.x + s * TT;
            if (i < p.m && j < p.n) {
                loss += epilogue_store(i, j, acc[r * 4u + s]);
            }
        }
    }
    store_bce_partial((wid.y * ((p.n + TS - 1u) / TS) + wid.x) * 256u + lidx, loss);
}
