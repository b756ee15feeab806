// Launcher: src/kernels/clip_grad.rs · CPU twin: cpu::ops::clip_grad_norm · parity: tests/parity_kernels.rs clip_grad_norm_matches_pytorch_formula
// Gradient clipping by the global norm, as torch.nn.utils.clip_grad_norm_ over every parameter:
//   total = sqrt(Σ grad²) over the whole gradient arena (its padding is 0)
//   coef  = min(1, max_norm / (total + 1e-6))
//   grad *= coef                                   (in place, before the optimizer reads it)
// Two passes and no read-back: grad_sq_partials writes one sum of squares per workgroup; in
// clip_grads every workgroup adds those partials up in the same fixed order (so all agree bit for
// bit) and scales its own part of the arena.

struct ClipParams {
    n4: u32,            // number of vec4s in the gradient arena
    groups: u32,        // workgroups of grad_sq_partials (at most 256): the partials to add
    max_norm: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read_write> c_grad: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> c_partials: array<f32>;
@group(0) @binding(2) var<uniform> cp: ClipParams;

@compute @workgroup_size(256, 1, 1)
fn grad_sq_partials(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    var s = 0.0;
    for (var i = wg.x * 256u + t; i < cp.n4; i += cp.groups * 256u) {
        let g = c_grad[i];
        s += dot(g, g);
    }
    let total = workgroup_sum(t, s);
    if (t == 0u) {
        c_partials[wg.x] = total;
    }
}

@compute @workgroup_size(256, 1, 1)
fn clip_grads(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) t: u32) {
    var s = 0.0;
    if (t < cp.groups) {
        s = c_partials[t];
    }
    let total = workgroup_sum(t, s);
    let coef = min(1.0, cp.max_norm / (sqrt(total) + 1e-6));
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i < cp.n4) {
        c_grad[i] = c_grad[i] * coef;
    }
}
