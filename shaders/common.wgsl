// Prepended to every shader of this directory (see src/gpu/pipeline.rs; line numbers in shader
// errors count these lines too): the per-step uniform's layout, the stable sigmoid, and the
// workgroup sum that every reducing kernel uses.

// Values that change every step, written once per step (src/kernels/reparam.rs, StepParams).
struct StepParams {
    batch_offset: u32,   // first index of this batch in the epoch's index list (gather, iwae)
    rng_step: u32,       // step counter in the Philox counter (reparam_kl)
    seed_lo: u32,
    seed_hi: u32,
    adam_step_size: f32, // lr / (1 - beta1^t) (adam)
    adam_bc2_sqrt: f32,  // sqrt(1 - beta2^t)
    _pad0: u32,
    _pad1: u32,
}

// σ(x), stable for both signs: never exp of a large positive number.
fn sigmoid(x: f32) -> f32 {
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

var<workgroup> wg_partial: array<f32, 256>;

// Σ v over the 256 threads of a workgroup, in a fixed tree order (bit-for-bit reproducible).
// Every thread must call it, from uniform control flow; every thread gets the total. The leading
// barrier lets a kernel call it twice in a row.
fn workgroup_sum(t: u32, v: f32) -> f32 {
    workgroupBarrier();
    wg_partial[t] = v;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if (t < stride) {
            wg_partial[t] += wg_partial[t + stride];
        }
        workgroupBarrier();
    }
    return wg_partial[0];
}

