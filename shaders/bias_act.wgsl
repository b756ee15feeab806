// Launcher: src/kernels/bias_act.rs · CPU twin: cpu::ops::act_forward · parity: tests/parity_kernels.rs bias_act_forward
// Bias + activation over a row-major [rows, cols] tensor, in place:
//   act_forward:  y = act(y + bias[col])
// The training step fuses bias and activation into the matmul epilogue (and their backward into
// the input-gradient product's); this standalone pass serves evaluation (the decoder's sigmoid).

struct ActParams {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

override ACT: u32 = 1u;   // an ACT_* code of common.wgsl (ACT_RELU)
override HAS_BIAS: bool = true;

@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read> aux: array<f32>;   // the bias
@group(0) @binding(2) var<uniform> p: ActParams;

// Row-major index from a 2-D dispatch: large tensors exceed 65535 workgroups in x alone.
fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

@compute @workgroup_size(256, 1, 1)
fn act_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.rows * p.cols) {
        return;
    }
    var v = y[i];
    if (HAS_BIAS) {
        v = v + aux[i % p.cols];
    }
    y[i] = activate(v, ACT);
}
