// Launcher: src/kernels/reduce.rs · CPU twin: the sums in cpu::model · parity: tests/parity_kernels.rs matmul_bce_epilogue, reparam_kl_forward_backward (loss_reduce)
// Reductions.
//   loss_reduce: one workgroup sums the BCE and KL partials a step produced, writes the batch loss and
//                adds it to the epoch accumulator; it raises a flag when a sum is not finite, so a
//                diverging run is caught at the next readback without reading every step.
// It sums in a fixed order, so results are bit-for-bit reproducible run to run.

struct LossReduceParams {
    n_bce: u32,     // BCE partial sums to add
    n_kl: u32,      // KL partial sums to add
    _pad0: u32,
    _pad1: u32,
}

// Accumulator slots (f32): see src/kernels/reduce.rs, `LossSlots`.
const SLOT_EPOCH_TOTAL: u32 = 0u;
const SLOT_BATCH_TOTAL: u32 = 1u;
const SLOT_BATCH_BCE: u32 = 2u;
const SLOT_BATCH_KL: u32 = 3u;
const SLOT_EPOCH_BCE: u32 = 4u;
const SLOT_EPOCH_KL: u32 = 5u;
const SLOT_NONFINITE: u32 = 6u;
const SLOT_BATCHES: u32 = 7u;

@group(0) @binding(0) var<storage, read> bce_partials: array<f32>;
@group(0) @binding(1) var<storage, read> kl_partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> acc: array<f32>;
@group(0) @binding(3) var<uniform> lp: LossReduceParams;

fn is_finite(x: f32) -> bool {
    // Exponent bits all ones means Inf or NaN; a bit test, because compilers may fold `x != x`.
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

@compute @workgroup_size(256, 1, 1)
fn loss_reduce(@builtin(local_invocation_index) t: u32) {
    var s_bce = 0.0;
    for (var i = t; i < lp.n_bce; i += 256u) {
        s_bce += bce_partials[i];
    }
    var s_kl = 0.0;
    for (var i = t; i < lp.n_kl; i += 256u) {
        s_kl += kl_partials[i];
    }
    let bce = workgroup_sum(t, s_bce);
    let kl = workgroup_sum(t, s_kl);
    if (t == 0u) {
        let total = bce + kl;
        acc[SLOT_BATCH_TOTAL] = total;
        acc[SLOT_BATCH_BCE] = bce;
        acc[SLOT_BATCH_KL] = kl;
        acc[SLOT_EPOCH_TOTAL] += total;
        acc[SLOT_EPOCH_BCE] += bce;
        acc[SLOT_EPOCH_KL] += kl;
        acc[SLOT_BATCHES] += 1.0;
        if (!is_finite(total)) {
            acc[SLOT_NONFINITE] = 1.0;
        }
    }
}
