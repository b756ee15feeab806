// Matrix multiply C = op(A) · op(B) for the three layouts training needs, with a fused epilogue:
//   C = act(op(A)·op(B) + bias + (ACCUMULATE ? C_old : 0))
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
    _pad: u32,
}

override LAYOUT: u32 = 1u;      // 0 NN, 1 NT, 2 TN
override ACT: u32 = 0u;         // 0 identity, 1 ReLU, 2 sigmoid
override HAS_BIAS: bool = false;
override ACCUMULATE: bool = false;

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<uniform> p: MatmulParams;

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

fn sigmoid(x: f32) -> f32 {
    // Stable for both signs: never exp of a large positive number.
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

fn epilogue_store(i: u32, j: u32, acc: f32) {
    let idx = i * p.n + j;
    var v = acc;
    if (HAS_BIAS) {
        v = v + bias[j];
    }
    if (ACCUMULATE) {
        v = v + c[idx];
    }
    if (ACT == 1u) {
        v = max(v, 0.0);
    } else if (ACT == 2u) {
        v = sigmoid(v);
    }
    c[idx] = v;
}

// ---------------------------------------------------------------------------------------------
// matmul_direct: an 8x8 thread grid, each thread owning an 8x8 block of C (a 64x64 tile).

const DT: u32 = 8u;

@compute @workgroup_size(8, 8, 1)
fn matmul_direct(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row0 = gid.y * DT;
    let col0 = gid.x * DT;
    if (row0 >= p.m || col0 >= p.n) {
        return;
    }
    // Clamp indices so every load is in bounds; the extra rows/columns are never stored.
    var rows: array<u32, 8>;
    var cols: array<u32, 8>;
    for (var r = 0u; r < DT; r++) {
        rows[r] = min(row0 + r, p.m - 1u);
        cols[r] = min(col0 + r, p.n - 1u);
    }
    var acc: array<f32, 64>;
    for (var t = 0u; t < 64u; t++) {
        acc[t] = 0.0;
    }
    for (var kk = 0u; kk < p.k; kk++) {
        var av: array<f32, 8>;
        var bv: array<f32, 8>;
        for (var r = 0u; r < DT; r++) {
            av[r] = a_at(rows[r], kk);
            bv[r] = b_at(kk, cols[r]);
        }
        for (var r = 0u; r < DT; r++) {
            for (var s = 0u; s < DT; s++) {
                acc[r * DT + s] = fma(av[r], bv[s], acc[r * DT + s]);
            }
        }
    }
    for (var r = 0u; r < DT; r++) {
        let i = row0 + r;
        if (i >= p.m) {
            break;
        }
        for (var s = 0u; s < DT; s++) {
            let j = col0 + s;
            if (j < p.n) {
                epilogue_store(i, j, acc[r * DT + s]);
            }
        }
    }
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
        }
        workgroupBarrier();
    }
    for (var r = 0u; r < 4u; r++) {
        let i = tile_row + lid.y + r * TT;
        for (var s = 0u; s < 4u; s++) {
            let j = tile_col + lid.x + s * TT;
            if (i < p.m && j < p.n) {
                epilogue_store(i, j, acc[r * 4u + s]);
            }
        }
    }
}
