// Launcher: src/kernels/bce.rs · CPU twin: cpu::ops::bce_forward_backward · parity: tests/parity_kernels.rs bce_forward_backward_matches_including_extremes
// Binary cross-entropy of sigmoid(logits) against targets x in [0, 1], forward and backward in one pass.
//
//   loss_i = -(x·log σ(l) + (1-x)·log(1-σ(l))) = max(l, 0) - l·x + log(1 + exp(-|l|))
//   dl_i   = σ(l) - x
//
// The right-hand form never takes exp of a positive number nor log of zero, so it is finite and
// accurate for every finite logit. PyTorch's `BCELoss` on σ(l) instead clamps each log at -100: in f32
// σ(l) rounds to exactly 1 for l ≳ 17, so its loss saturates (at 100·(1-x) per element) where ours keeps
// growing linearly in l, the exact value. For |l| ≲ 15 the two agree to f32 rounding.
//
// With L reparameterised samples the logits have L·B rows; row r is compared with target row r mod B,
// and `scale` = 1/L averages the reconstruction term over the samples (loss and gradient alike).
// Each workgroup writes one partial sum; reduce.wgsl adds the partials in a fixed order.
// (Training fuses the same math into the logits product's epilogue instead: matmul.wgsl, BCE.)

struct BceParams {
    n: u32,          // L·B·D logits
    n_target: u32,   // B·D targets
    scale: f32,      // 1/L
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<f32>;
@group(0) @binding(2) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(3) var<storage, read_write> partials: array<f32>;
@group(0) @binding(4) var<uniform> p: BceParams;

// Each thread takes ITEMS consecutive-by-stride elements before the workgroup reduction, so the
// reduction's barriers (costly on CPU drivers) are paid once per 2048 elements, not per 256.
const ITEMS: u32 = 8u;

@compute @workgroup_size(256, 1, 1)
fn bce_forward_backward(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let group = wid.x + wid.y * nwg.x;
    let base = group * 256u * ITEMS + t;
    var loss = 0.0;
    for (var q = 0u; q < ITEMS; q++) {
        let i = base + q * 256u;
        if (i < p.n) {
            let r = bce_with_logits(logits[i], targets[i % p.n_target]);
            loss += r.x;
            dlogits[i] = r.y * p.scale;
        }
    }
    let total = workgroup_sum(t, loss * p.scale);
    if (t == 0u) {
        partials[group] = total;
    }
}
