// Launcher: src/kernels/sgd.rs · CPU twin: cpu::ops::sgd_step · parity: tests/parity_kernels.rs sgd_matches_pytorch_formula (both entry points)
// SGD over a flat parameter arena, with PyTorch's semantics (torch.optim.SGD, single-tensor form,
// dampening 0):
//   g   = grad + weight_decay·param               (L2; 0 by default)
//   buf = momentum·buf + g                        (sgd_momentum; the buffer starts at 0, so the
//                                                  first step's buf is g, as PyTorch's clone)
//   g   = g + momentum·buf  (Nesterov)   or   g = buf
//   param -= lr_t · g                             (lr_t: step.step_size, scheduled on the host)
// Plain SGD (momentum 0) keeps no buffer: sgd_step binds none. Four elements per thread.

struct SgdParams {
    n4: u32,            // number of vec4s
    momentum: f32,
    weight_decay: f32,
    nesterov: u32,      // 1: Nesterov momentum
}

@group(0) @binding(0) var<storage, read_write> sgd_param: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> sgd_grad: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> sp: SgdParams;
@group(0) @binding(3) var<uniform> step: StepParams;
@group(0) @binding(4) var<storage, read_write> sgd_buf: array<vec4<f32>>;

fn sgd_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

@compute @workgroup_size(256, 1, 1)
fn sgd_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = sgd_index(gid, nwg);
    if (i >= sp.n4) {
        return;
    }
    let w = sgd_param[i];
    let g = sgd_grad[i] + sp.weight_decay * w;
    sgd_param[i] = w - step.step_size * g;
}

@compute @workgroup_size(256, 1, 1)
fn sgd_momentum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = sgd_index(gid, nwg);
    if (i >= sp.n4) {
        return;
    }
    let w = sgd_param[i];
    var g = sgd_grad[i] + sp.weight_decay * w;
    let b = sp.momentum * sgd_buf[i] + g;
    sgd_buf[i] = b;
    if (sp.nesterov == 1u) {
        g = g + sp.momentum * b;
    } else {
        g = b;
    }
    sgd_param[i] = w - step.step_size * g;
}
