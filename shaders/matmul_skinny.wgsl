// Launcher: src/kernels/matmul/select.rs (MatmulEntry::SubgroupSkinny, the `subgroup` variant of a
// product with N <= 12) · CPU twin: cpu::ops::matmul + cpu::ops::epilogue · parity:
// tests/parity_kernels.rs matmul_* (every variant, layout and epilogue) and
// subgroup_kernels_match_the_direct_variant_bit_for_bit
//
// matmul_sg_skinny: products with at most 12 columns (the latent code's: dz = dh·W_dec [128x10],
// dW_dec = dhᵀ·z [200x10]), any layout (LAYOUT) and any M, K. Appended to the subgroup module after
// matmul.wgsl, whose bindings, a_at / b_at and epilogue it uses.
//
// Why: the direct kernel gives each thread an 8x8 block, so with N = 10 six of every eight threads
// only clamp and idle, and each k costs 16 scalar loads for 16 multiply-adds; on CPU drivers every
// load is a loop over the SIMD lanes. Here each lane of an 8-lane workgroup owns one row of C and
// all its N columns (three vec4 accumulators); for 8 k at a time lane l loads row k0 + l of op(B)
// and broadcasts it, so per 8 k a lane makes 8 + 12 loads for 96 multiply-adds. The same
// multiply-adds in the same order as matmul_direct (k ascending, one fma per k), so the same
// C bit for bit; ROW_SUM's sums likewise.

fn skinny_b(kk: u32) -> array<vec4<f32>, 3> {
    let k = min(kk, p.k - 1u);
    let j = p.n - 1u;
    return array<vec4<f32>, 3>(
        vec4<f32>(b_at(k, 0u), b_at(k, min(1u, j)), b_at(k, min(2u, j)), b_at(k, min(3u, j))),
        vec4<f32>(b_at(k, min(4u, j)), b_at(k, min(5u, j)), b_at(k, min(6u, j)), b_at(k, min(7u, j))),
        vec4<f32>(b_at(k, min(8u, j)), b_at(k, min(9u, j)), b_at(k, min(10u, j)), b_at(k, min(11u, j))),
    );
}

@compute @workgroup_size(8, 1, 1)
fn matmul_sg_skinny(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    // Past 65535 workgroups the grid spills into y (kernels::spill_groups): 8·65535 rows is a
    // Linear layer's weight gradient of 524k outputs, which a 1024x512 RGB decoder reaches.
    let g = wid.y * groups.x + wid.x;
    let row = g * 8u + lane;
    let i = min(row, p.m - 1u);
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var rs = 0.0;
    let k8 = p.k / 8u * 8u;
    for (var k0 = 0u; k0 < k8; k0 += 8u) {
        let bl = skinny_b(k0 + lane);
        // Unrolled by drivers (a constant trip count), so each shuffle reads a constant lane.
        for (var kk = 0u; kk < 8u; kk++) {
            let s = a_at(i, k0 + kk);
            c0 = fma(vec4<f32>(s), subgroupShuffle(bl[0], kk), c0);
            c1 = fma(vec4<f32>(s), subgroupShuffle(bl[1], kk), c1);
            c2 = fma(vec4<f32>(s), subgroupShuffle(bl[2], kk), c2);
            rs += s;
        }
    }
    for (var k = k8; k < p.k; k++) {
        let bk = skinny_b(k);
        let s = a_at(i, k);
        c0 = fma(vec4<f32>(s), bk[0], c0);
        c1 = fma(vec4<f32>(s), bk[1], c1);
        c2 = fma(vec4<f32>(s), bk[2], c2);
        rs += s;
    }
    // The row's columns through one epilogue store, shifting the accumulators down one column at a
    // time (one copy of the epilogue to compile, and no array indexed by the loop counter).
    var loss = 0.0;
    if (row < p.m) {
        if (ROW_SUM) {
            rowsum[row] = rs;
        }
        for (var j = 0u; j < p.n; j++) {
            loss += epilogue_store(row, j, c0.x);
            c0 = vec4<f32>(c0.yzw, c1.x);
            c1 = vec4<f32>(c1.yzw, c2.x);
            c2 = vec4<f32>(c2.yzw, 0.0);
        }
    }
    store_recon_partial(row, loss);
}
