// Launcher: src/kernels/adam.rs · CPU twin: cpu::ops::adam_step · parity: tests/parity_kernels.rs adam_matches_pytorch_formula (both entry points)
// Adam and AdamW over a flat parameter arena, with PyTorch's semantics (torch.optim.Adam and
// torch.optim.AdamW, single-tensor form):
//   g  = grad + weight_decay·param                  (Adam's L2; 0 for AdamW and by default)
//   param = decay·param                             (AdamW's decoupled decay, step.decay =
//                                                    1 - lr_t·λ from the host; 1 for Adam)
//   m  = β1·m + (1-β1)·g
//   v  = β2·v + (1-β2)·g²
//   param -= (lr / (1-β1^t)) · m / (sqrt(v) / sqrt(1-β2^t) + ε)
// The step-dependent factors come from the per-step uniform, so the recorded step never changes.
// Four elements per thread (the arena is padded to a multiple of 64 floats).

struct AdamParams {
    n4: u32,            // number of vec4s
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    one_minus_beta1: f32, // 1 - β1 and 1 - β2 computed in f64 on the host, as PyTorch does in
    one_minus_beta2: f32, // Python floats (in f32, 1 - β2 would be off by 1.3e-5 relative)
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read_write> param: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> grad: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> m: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> v: array<vec4<f32>>;
@group(0) @binding(4) var<uniform> p: AdamParams;
@group(0) @binding(5) var<uniform> step: StepParams;

// One thread's update of vec4 i from the old values w, g, m0, v0.
fn adam_update(i: u32, w0: vec4<f32>, grad_i: vec4<f32>, m0: vec4<f32>, v0: vec4<f32>) {
    let g = grad_i + p.weight_decay * w0;
    let w = w0 * step.decay;
    let m1 = p.beta1 * m0 + p.one_minus_beta1 * g;
    let v1 = p.beta2 * v0 + p.one_minus_beta2 * g * g;
    m[i] = m1;
    v[i] = v1;
    let denom = sqrt(v1) / step.bc2_sqrt + vec4<f32>(p.eps);
    param[i] = w - step.step_size * m1 / denom;
}

fn thread_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

@compute @workgroup_size(256, 1, 1)
fn adam_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = thread_index(gid, nwg);
    if (i >= p.n4) {
        return;
    }
    adam_update(i, param[i], grad[i], m[i], v[i]);
}

// adam_step_tex: the same update reading param, grad, m and v from textures the launcher fills
// from them just before the dispatch (vec4 i at texel (i % 256, i / 256); see
// src/kernels/texture.rs: on lavapipe a storage load is a per-lane loop, a texel fetch a gather;
// 4.6 ms -> 1.1 ms for the default model's 320k parameters). The writes stay storage writes.
// Binding 1 is the gradient's texture here (the storage view above belongs to adam_step).
@group(0) @binding(1) var grad_tex: texture_2d<f32>;
@group(0) @binding(6) var param_tex: texture_2d<f32>;
@group(0) @binding(7) var m_tex: texture_2d<f32>;
@group(0) @binding(8) var v_tex: texture_2d<f32>;

@compute @workgroup_size(256, 1, 1)
fn adam_step_tex(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = thread_index(gid, nwg);
    if (i >= p.n4) {
        return;
    }
    let t = vec2<u32>(i & 255u, i >> 8u);
    adam_update(i, textureLoad(param_tex, t, 0), textureLoad(grad_tex, t, 0), textureLoad(m_tex, t, 0), textureLoad(v_tex, t, 0));
}
