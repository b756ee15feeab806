// Launcher: src/kernels/iwae.rs · CPU twin: cpu::ops::iwae_estimate · parity: tests/eval_pictures.rs evaluation_matches_cpu_reference
// Per-image quantities for evaluating a trained model.
//
//   iwae_estimate: for image b with L samples z_l = mu + sd·eps_l, and rowloss[r] = -log p(x | z_r)
//                  from likelihood.wgsl's recon_rows,
//                    log w_l = -rowloss[l·B + b] + Σ_k (½eps² - ½z² + ½logvar)
//                            = log p(x|z_l) + log p(z_l) - log q(z_l|x)   (the 2π terms cancel)
//                  nll[offset + b] = -(logsumexp_l log w_l - log L), the importance-weighted bound
//                  on -log p(x) of Burda et al. (2016); it tightens as L grows.
//   iwae_weights:  training on that bound: each sample's normalised importance weight and each
//                  image's objective (below).

struct IwaeParams {
    batch: u32,     // B
    latent: u32,    // K
    samples: u32,   // L
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> i_rowloss: array<f32>;
@group(0) @binding(1) var<storage, read> i_z: array<f32>;
@group(0) @binding(2) var<storage, read> i_eps: array<f32>;
@group(0) @binding(3) var<storage, read> i_heads: array<f32>;  // [B, 2K]: mu_b, logvar_b
@group(0) @binding(4) var<storage, read_write> nll: array<f32>;
@group(0) @binding(5) var<uniform> ip: IwaeParams;
@group(0) @binding(6) var<uniform> step: StepParams;

fn log_weight(b: u32, l: u32) -> f32 {
    let row = l * ip.batch + b;
    var s = -i_rowloss[row];
    for (var k = 0u; k < ip.latent; k++) {
        let z = i_z[row * ip.latent + k];
        let e = i_eps[row * ip.latent + k];
        s += 0.5 * (e * e - z * z + i_heads[(2u * b + 1u) * ip.latent + k]);
    }
    return s;
}

// (max_l log w_l, Σ_l exp(log w_l − max)) of image b: two passes keep logsumexp finite whatever
// the weights' scale.
fn max_and_sum(b: u32) -> vec2<f32> {
    var m = log_weight(b, 0u);
    for (var l = 1u; l < ip.samples; l++) {
        m = max(m, log_weight(b, l));
    }
    var s = 0.0;
    for (var l = 0u; l < ip.samples; l++) {
        s += exp(log_weight(b, l) - m);
    }
    return vec2<f32>(m, s);
}

@compute @workgroup_size(64, 1, 1)
fn iwae_estimate(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = gid.x;
    if (b >= ip.batch) {
        return;
    }
    let ms = max_and_sum(b);
    nll[step.batch_offset + b] = -(ms.x + log(ms.y) - log(f32(ip.samples)));
}

// iwae_weights (training with --objective iwae): for image b, the softmax over its L samples of
// log w_l, w̃_l = exp(log w_l − logsumexp), into weights[l·B + b] — the IWAE objective's gradient is
// Σ_l w̃_l ∇(−log w_l), so w̃ scales the likelihood's dlogits and the reparameterisation's terms —
// and the image's objective −(logsumexp_l log w_l − log L) into obj[b] (summed by objective_reduce).
@group(0) @binding(4) var<storage, read_write> w_weights: array<f32>;
@group(0) @binding(6) var<storage, read_write> w_obj: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn iwae_weights(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = gid.x;
    if (b >= ip.batch) {
        return;
    }
    let ms = max_and_sum(b);
    for (var l = 0u; l < ip.samples; l++) {
        w_weights[l * ip.batch + b] = exp(log_weight(b, l) - ms.x) / ms.y;
    }
    w_obj[b] = -(ms.x + log(ms.y) - log(f32(ip.samples)));
}
