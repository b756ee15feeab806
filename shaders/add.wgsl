// Launcher: src/kernels/add.rs · CPU twin: cpu::ops::add_act, cpu::ops::grad_act · parity: tests/parity_kernels.rs add_kernels_match
// The tensor operations of a model graph (src/model/body.rs) besides its layers, over [rows, cols]
// tensors seen as flat arrays:
//   add_act:  y = act(a + b)                       (a residual block's sum, ACT its activation)
//   grad_act: out = g ⊙ act′(h)    (ACCUMULATE: out += g ⊙ act′(h))
//             a gradient g passed to a tensor h that the activation ACT produced; with
//             ACCUMULATE, a tensor read by several nodes sums their gradients in place.
//   upsample_nearest:      y[p, Y, X] = x[p, Y/2, X/2]   (diffusers' Upsample2D before its
//                          convolution: nearest-neighbour 2x of every plane p = image·channel)
//   upsample_nearest_grad: dx[p, y, x] = Σ of dy over the 2x2 pixels x[p, y, x] was copied to
//   (the input's sides UP_H, UP_W are override constants: no division by a run-time size)

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

override UP_H: u32 = 1u;
override UP_W: u32 = 1u;

@group(0) @binding(1) var<storage, read_write> up_dst: array<f32>;
@group(0) @binding(2) var<uniform> up_p: AddParams; // n: the values written

@compute @workgroup_size(256, 1, 1)
fn upsample_nearest(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = add_index(gid, nwg);
    if (i >= up_p.n) {
        return;
    }
    let plane = i / (4u * UP_H * UP_W);
    let r = i % (4u * UP_H * UP_W);
    let y = r / (2u * UP_W);
    let x = r % (2u * UP_W);
    up_dst[i] = add_x[(plane * UP_H + y / 2u) * UP_W + x / 2u];
}

@compute @workgroup_size(256, 1, 1)
fn upsample_nearest_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = add_index(gid, nwg);
    if (i >= up_p.n) {
        return;
    }
    let plane = i / (UP_H * UP_W);
    let y = (i / UP_W) % UP_H;
    let x = i % UP_W;
    let w2 = 2u * UP_W;
    let top = (plane * 2u * UP_H + 2u * y) * w2 + 2u * x;
    up_dst[i] = (add_x[top] + add_x[top + 1u]) + (add_x[top + w2] + add_x[top + w2 + 1u]);
}
