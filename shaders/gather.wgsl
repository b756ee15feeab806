// Launcher: src/kernels/gather.rs · CPU twin: cpu::ops::gather · parity: tests/parity_kernels.rs gather_is_exact
// Batch gather: x[b, d] = dataset[index[batch_offset + b], d] / 255 (SIGNED: then − 0.5 over 0.5,
// torchvision's Normalize([0.5], [0.5]) that diffusers' VAE training applies: [−1, 1]).
// The whole data set lives on the GPU as u8 pixels packed four to a u32 (60000·784 bytes = 47 MB,
// a quarter of f32); the epoch's shuffled index list is uploaded once per epoch, and each step
// only moves `batch_offset` in the per-step uniform. No image crosses the bus during training.

struct GatherParams {
    batch: u32,   // B rows to gather
    dim: u32,     // D bytes per image
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> pixels: array<u32>;
@group(0) @binding(1) var<storage, read> index: array<u32>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<uniform> p: GatherParams;
@group(0) @binding(4) var<uniform> step: StepParams;

override SIGNED: bool = false;

// A pixel's value as the model reads it: as torchvision's ToTensor (u8 / 255), then Normalize.
fn pixel_value(v: u32) -> f32 {
    let unit = f32(v) / 255.0;
    if (SIGNED) {
        return (unit - 0.5) / 0.5;
    }
    return unit;
}

// Four consecutive pixels per thread: one index lookup and mostly one word load serve all four.
// When D % 4 == 0 (MNIST's 784, any RGB image of even side) the four are one whole word of one
// image: one index load and one word load, unpacked, instead of four of each (storage loads are
// the expensive part on CPU drivers, see src/kernels/texture.rs). Same values either way.
@compute @workgroup_size(256, 1, 1)
fn gather_batch(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let first = (gid.x + gid.y * nwg.x * 256u) * 4u;
    let total = p.batch * p.dim;
    if (first >= total) {
        return;
    }
    if (p.dim % 4u == 0u) {
        let b = first / p.dim;
        let d = first % p.dim;
        let word = pixels[(index[step.batch_offset + b] * p.dim + d) / 4u];
        for (var q = 0u; q < 4u; q++) {
            x[first + q] = pixel_value((word >> (8u * q)) & 0xffu);
        }
        return;
    }
    for (var q = 0u; q < 4u; q++) {
        let i = first + q;
        if (i < total) {
            let b = i / p.dim;
            let d = i % p.dim;
            let byte = index[step.batch_offset + b] * p.dim + d;
            let word = pixels[byte / 4u];
            let value = (word >> (8u * (byte % 4u))) & 0xffu;
            x[i] = pixel_value(value);
        }
    }
}
