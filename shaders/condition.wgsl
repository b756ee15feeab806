// Launcher: src/kernels/condition.rs · CPU twin: cpu::ops::{label_forward, label_grad} · parity: tests/parity_kernels.rs condition_kernels_match
// A class-conditional model's label input, with no one-hot tensor. Its first encoder and first
// decoder Linear take [input, onehot(c)]; their weight [out, in + C] is kept as the input columns
// (which the product reads) and the label columns W_c [out, C] (read here), so the one-hot's
// contribution is column c of W_c:
//   gather_labels: labels[b] = data_labels[index[step.batch_offset + b]]     (the batch's classes)
//   label_forward: y[r, j] = act(y[r, j] + W_c[j, labels[r % period]])       (after the bias)
//   label_grad:    dW_c[j, c] = Σ over rows r of class c of dy[r, j]          (the one-hot's gradient)
// Decoder rows are sample-major (row l·B + b): with period = B each row finds its image's label.

struct LabelParams {
    rows: u32,
    cols: u32,      // the layer's outputs
    classes: u32,
    period: u32,    // row r's label is labels[r % period]
}

override ACT: u32 = 0u;   // an ACT_* code of common.wgsl: the layer's activation

fn label_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

@group(0) @binding(0) var<storage, read> data_labels: array<u32>;
@group(0) @binding(1) var<storage, read> index: array<u32>;
@group(0) @binding(2) var<storage, read_write> g_labels: array<u32>;
@group(0) @binding(3) var<uniform> gp: LabelParams;
@group(0) @binding(4) var<uniform> step: StepParams;

// One thread per batch row (rows = B), as the pixels' gather reads the same index list.
@compute @workgroup_size(256, 1, 1)
fn gather_labels(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = label_index(gid, nwg);
    if (b >= gp.rows) {
        return;
    }
    g_labels[b] = data_labels[index[step.batch_offset + b]];
}

@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read> label_w: array<f32>;   // W_c [cols, classes]
@group(0) @binding(2) var<storage, read> f_labels: array<u32>;
@group(0) @binding(3) var<uniform> fp: LabelParams;

// In place over the product's output (its bias added, no activation yet).
@compute @workgroup_size(256, 1, 1)
fn label_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = label_index(gid, nwg);
    if (i >= fp.rows * fp.cols) {
        return;
    }
    let r = i / fp.cols;
    let j = i % fp.cols;
    let c = f_labels[r % fp.period];
    y[i] = activate(y[i] + label_w[j * fp.classes + c], ACT);
}

@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read_write> d_label_w: array<f32>;   // dW_c [cols, classes]
@group(0) @binding(2) var<storage, read> b_labels: array<u32>;
@group(0) @binding(3) var<uniform> bp: LabelParams;

// One thread per (j, c), j fastest so neighbours read neighbouring dy; rows in order (the CPU twin
// adds in the same order). Each thread writes its own value: no atomics, the same sum every run.
@compute @workgroup_size(256, 1, 1)
fn label_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = label_index(gid, nwg);
    if (i >= bp.cols * bp.classes) {
        return;
    }
    let j = i % bp.cols;
    let c = i / bp.cols;
    var s = 0.0;
    for (var r = 0u; r < bp.rows; r++) {
        if (b_labels[r % bp.period] == c) {
            s += dy[r * bp.cols + j];
        }
    }
    d_label_w[j * bp.classes + c] = s;
}
