// Launcher: src/kernels/reduce.rs · CPU twin: the sums in cpu::model · parity: tests/parity_kernels.rs matmul_bce_epilogue, reparam_kl_forward_backward (loss_reduce)
// Reductions.
//   loss_reduce: one workgroup sums the reconstruction and KL partials a step produced, writes the
//                batch's -ELBO (reconstruction + KL), its parts and the KL weighted by the step's
//                kl_weight (the objective minimised is reconstruction + weighted KL), and adds
//                them to the epoch's slots; it raises a flag when a sum is not finite, so a
//                diverging run is caught at the next readback without reading every step.
//   objective_reduce: after loss_reduce, replaces the batch's objective (recon + weighted KL) by
//                the sum of per-image objectives (the IWAE bound's: iwae.wgsl's iwae_weights).
//   sum_to:      one workgroup writes out[0] = Σ values[..n] (a scalar parameter's gradient from a
//                kernel's per-workgroup partials: a learned-σ Gaussian's log σ).
// It sums in a fixed order, so results are bit-for-bit reproducible run to run.

struct LossReduceParams {
    n_recon: u32,   // reconstruction-term partial sums to add (-log p(x|z))
    n_kl: u32,      // KL partial sums to add
    _pad0: u32,
    _pad1: u32,
}

// Accumulator slots (f32): see src/kernels/reduce.rs, `LossSlots`.
const SLOT_EPOCH_TOTAL: u32 = 0u;
const SLOT_BATCH_TOTAL: u32 = 1u;
const SLOT_BATCH_RECON: u32 = 2u;
const SLOT_BATCH_KL: u32 = 3u;
const SLOT_EPOCH_RECON: u32 = 4u;
const SLOT_EPOCH_KL: u32 = 5u;
const SLOT_NONFINITE: u32 = 6u;
const SLOT_BATCHES: u32 = 7u;
const SLOT_BATCH_KL_WEIGHTED: u32 = 8u;
const SLOT_EPOCH_KL_WEIGHTED: u32 = 9u;
const SLOT_BATCH_OBJECTIVE: u32 = 10u;
const SLOT_EPOCH_OBJECTIVE: u32 = 11u;

@group(0) @binding(0) var<storage, read> recon_partials: array<f32>;
@group(0) @binding(1) var<storage, read> kl_partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> acc: array<f32>;
@group(0) @binding(3) var<uniform> lp: LossReduceParams;
@group(0) @binding(4) var<uniform> step: StepParams;

struct SumParams {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> s_values: array<f32>;
@group(0) @binding(1) var<storage, read_write> s_out: array<f32>;
@group(0) @binding(2) var<uniform> sp: SumParams;

@compute @workgroup_size(256, 1, 1)
fn sum_to(@builtin(local_invocation_index) t: u32) {
    var s = 0.0;
    for (var i = t; i < sp.n; i += 256u) {
        s += s_values[i];
    }
    let total = workgroup_sum(t, s);
    if (t == 0u) {
        s_out[0] = total;
    }
}

@group(0) @binding(0) var<storage, read> o_values: array<f32>;
@group(0) @binding(1) var<storage, read_write> o_acc: array<f32>;
@group(0) @binding(2) var<uniform> op: SumParams;

@compute @workgroup_size(256, 1, 1)
fn objective_reduce(@builtin(local_invocation_index) t: u32) {
    var s = 0.0;
    for (var i = t; i < op.n; i += 256u) {
        s += o_values[i];
    }
    let total = workgroup_sum(t, s);
    if (t == 0u) {
        // Undo loss_reduce's objective for this batch, then count this one.
        o_acc[SLOT_EPOCH_OBJECTIVE] += total - o_acc[SLOT_BATCH_OBJECTIVE];
        o_acc[SLOT_BATCH_OBJECTIVE] = total;
        if (!is_finite(total)) {
            o_acc[SLOT_NONFINITE] = 1.0;
        }
    }
}

fn is_finite(x: f32) -> bool {
    // Exponent bits all ones means Inf or NaN; a bit test, because compilers may fold `x != x`.
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

@compute @workgroup_size(256, 1, 1)
fn loss_reduce(@builtin(local_invocation_index) t: u32) {
    var s_recon = 0.0;
    for (var i = t; i < lp.n_recon; i += 256u) {
        s_recon += recon_partials[i];
    }
    var s_kl = 0.0;
    for (var i = t; i < lp.n_kl; i += 256u) {
        s_kl += kl_partials[i];
    }
    let recon = workgroup_sum(t, s_recon);
    let kl = workgroup_sum(t, s_kl);
    if (t == 0u) {
        let total = recon + kl;
        let kl_weighted = step.kl_weight * kl;
        acc[SLOT_BATCH_TOTAL] = total;
        acc[SLOT_BATCH_RECON] = recon;
        acc[SLOT_BATCH_KL] = kl;
        acc[SLOT_BATCH_KL_WEIGHTED] = kl_weighted;
        acc[SLOT_EPOCH_TOTAL] += total;
        acc[SLOT_EPOCH_RECON] += recon;
        acc[SLOT_EPOCH_KL] += kl;
        acc[SLOT_EPOCH_KL_WEIGHTED] += kl_weighted;
        acc[SLOT_BATCH_OBJECTIVE] = recon + kl_weighted;
        acc[SLOT_EPOCH_OBJECTIVE] += recon + kl_weighted;
        acc[SLOT_BATCHES] += 1.0;
        if (!is_finite(total) || !is_finite(kl_weighted)) {
            acc[SLOT_NONFINITE] = 1.0;
        }
    }
}
