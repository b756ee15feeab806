// Launcher: src/kernels/add.rs · CPU twin: cpu::ops::add_act, cpu::ops::grad_act · parity: tests/parity_kernels.rs add_kernels_match
// The tensor operations of a model graph (src/model/body.rs) besides its layers, over [rows, cols]
// tensors seen as flat arrays:
//   add_act:  y = act(a + b)                       (a residual block's sum, ACT its activation)
//   grad_act: out = g ⊙ act′(h)    (ACCUMULATE: out += g ⊙ act′(h))
//             a gradient g passed to a tensor h that the activation ACT produced; with
//             ACCUMULATE, a tensor read by several nodes sums their gradients in place.

struct AddParams {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override ACT: u32 = 0u;          // an ACT_* code of common.wgsl
override ACCUMULATE: bool = false;

@group(0) @binding(0) var<storage, read> add_x: array<f32>;    // add_act: a; grad_act: g
@group(0) @binding(1) var<storage, read> add_h: array<f32>;    // add_act: b; grad_act: h
@group(0) @binding(2) var<storage, read_write> add_y: array<f32>;
@group(0) @binding(3) var<uniform> ap: AddParams;

fn add_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

@compute @workgroup_size(256, 1, 1)
fn add_act(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = add_index(gid, nwg);
    if (i >= ap.n) {
        return;
    }
    add_y[i] = activate(add_x[i] + add_h[i], ACT);
}

@compute @workgroup_size(256, 1, 1)
fn grad_act(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = add_index(gid, nwg);
    if (i >= ap.n) {
        return;
    }
    let v = act_backward(add_x[i], add_h[i], ACT);
    if (ACCUMULATE) {
        add_y[i] = add_y[i] + v;
    } else {
        add_y[i] = v;
    }
}
