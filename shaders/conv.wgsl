// Launcher: src/kernels/conv.rs · CPU twin: cpu::ops::{conv_to_lo, conv_to_hi, conv_weight_grad} · parity: tests/parity_conv.rs
// 2-D convolutions in NCHW, direct: one thread per output element (one workgroup per weight for
// the weight gradient, so its long sums are split over 256 threads and added in a fixed tree).
//
// One geometry serves both layer kinds. The "lo" side is the one whose pixel (y, x) sees the
// window hi[y·s − p + ky, x·s − p + kx] of the "hi" side; the weight is [C_lo, C_hi, k, k]:
//   Conv2d           lo = output, hi = input   (weight [c_out, c_in, k, k] as PyTorch stores it)
//   ConvTranspose2d  lo = input,  hi = output  (weight [c_in, c_out, k, k] as PyTorch stores it)
// so each of the three entry points is a forward of one kind and a backward of the other:
//   conv_to_lo       lo[b,o,y,x] = Σ_{i,ky,kx} W[o,i,ky,kx] · hi[b,i,y·s−p+ky,x·s−p+kx]
//                    Conv2d forward (bias, activation), ConvTranspose2d input gradient (ACT_GRAD)
//   conv_to_hi       hi[b,i,Y,X] = Σ_{o,ky,kx: Y+p−ky = y·s} W[o,i,ky,kx] · lo[b,o,y,x]
//                    ConvTranspose2d forward (bias, activation), Conv2d input gradient (ACT_GRAD)
//   conv_weight_grad dW[o,i,ky,kx] = Σ_{b,y,x} lo[b,o,y,x] · hi[b,i,y·s−p+ky,x·s−p+kx], and the
//                    bias gradient as the channel sums of the output side's gradient (BIAS_SIDE)

struct ConvParams {
    batch: u32,
    c_lo: u32,
    h_lo: u32,
    w_lo: u32,
    c_hi: u32,
    h_hi: u32,
    w_hi: u32,
    kernel: u32,
    stride: u32,
    padding: u32,
    row0: u32,      // the GEMM formulation's first row (lo pixel) in this chunk: im2col, rows_to_lo
    rows: u32,      // its rows (all of them, batch·h·w, unless the scratch is split in chunks)
}

override ACT: u32 = 0u;       // the output's activation, an ACT_* code of common.wgsl
override HAS_BIAS: bool = false;
override ACT_GRAD: u32 = 0u;  // times the derivative of this ACT_* activation at aux (its output)
override BIAS_SIDE: u32 = 0u; // conv_weight_grad: 0 no bias, 1 Σ lo per channel, 2 Σ hi per channel

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read> wt: array<f32>;
@group(0) @binding(2) var<storage, read> aux: array<f32>;     // bias [C_out], or the saved output
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
@group(0) @binding(4) var<uniform> p: ConvParams;

fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

// Bias, activation or activation backward on one output value (element i of channel ch).
fn epilogue(v0: f32, i: u32, ch: u32) -> f32 {
    var v = v0;
    if (HAS_BIAS) {
        v = v + aux[ch];
    }
    v = activate(v, ACT);
    if (ACT_GRAD != ACT_IDENTITY) {
        v = act_backward(v, aux[i], ACT_GRAD);
    }
    return v;
}

@compute @workgroup_size(256, 1, 1)
fn conv_to_lo(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat_index(gid, nwg);
    let plane = p.h_lo * p.w_lo;
    if (idx >= p.batch * p.c_lo * plane) {
        return;
    }
    let x = idx % p.w_lo;
    let y = (idx / p.w_lo) % p.h_lo;
    let o = (idx / plane) % p.c_lo;
    let b = idx / (plane * p.c_lo);
    let k = p.kernel;
    let y0 = i32(y * p.stride) - i32(p.padding);
    let x0 = i32(x * p.stride) - i32(p.padding);
    var acc = 0.0;
    for (var i = 0u; i < p.c_hi; i++) {
        let hi_base = (b * p.c_hi + i) * p.h_hi * p.w_hi;
        let w_base = (o * p.c_hi + i) * k * k;
        for (var ky = 0u; ky < k; ky++) {
            let yy = y0 + i32(ky);
            if (yy < 0 || yy >= i32(p.h_hi)) {
                continue;
            }
            for (var kx = 0u; kx < k; kx++) {
                let xx = x0 + i32(kx);
                if (xx < 0 || xx >= i32(p.w_hi)) {
                    continue;
                }
                acc += wt[w_base + ky * k + kx] * src[hi_base + u32(yy) * p.w_hi + u32(xx)];
            }
        }
    }
    dst[idx] = epilogue(acc, idx, o);
}

@compute @workgroup_size(256, 1, 1)
fn conv_to_hi(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat_index(gid, nwg);
    let plane = p.h_hi * p.w_hi;
    if (idx >= p.batch * p.c_hi * plane) {
        return;
    }
    let xx = idx % p.w_hi;
    let yy = (idx / p.w_hi) % p.h_hi;
    let i = (idx / plane) % p.c_hi;
    let b = idx / (plane * p.c_hi);
    let k = p.kernel;
    let s = i32(p.stride);
    var acc = 0.0;
    for (var o = 0u; o < p.c_lo; o++) {
        let lo_base = (b * p.c_lo + o) * p.h_lo * p.w_lo;
        let w_base = (o * p.c_hi + i) * k * k;
        for (var ky = 0u; ky < k; ky++) {
            // The lo row y with y·s − p + ky = yy, when there is one.
            let ty = i32(yy) + i32(p.padding) - i32(ky);
            if (ty < 0 || ty % s != 0 || ty / s >= i32(p.h_lo)) {
                continue;
            }
            let y = u32(ty / s);
            for (var kx = 0u; kx < k; kx++) {
                let tx = i32(xx) + i32(p.padding) - i32(kx);
                if (tx < 0 || tx % s != 0 || tx / s >= i32(p.w_lo)) {
                    continue;
                }
                acc += wt[w_base + ky * k + kx] * src[lo_base + y * p.w_lo + u32(tx / s)];
            }
        }
    }
    dst[idx] = epilogue(acc, idx, i);
}

// conv_weight_grad's operands: the lo side (binding 0) and the hi side (binding 1); the weight
// gradient and the bias gradient are written.
@group(0) @binding(0) var<storage, read> g_lo: array<f32>;
@group(0) @binding(1) var<storage, read> g_hi: array<f32>;
@group(0) @binding(2) var<storage, read_write> dw: array<f32>;
@group(0) @binding(3) var<storage, read_write> db: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn conv_weight_grad(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let g = wid.x + wid.y * nwg.x;
    let k = p.kernel;
    let n_w = p.c_lo * p.c_hi * k * k;
    var n_b = 0u;
    if (BIAS_SIDE == 1u) {
        n_b = p.c_lo;
    } else if (BIAS_SIDE == 2u) {
        n_b = p.c_hi;
    }
    if (g >= n_w + n_b) {
        return;
    }
    let lo_plane = p.h_lo * p.w_lo;
    let hi_plane = p.h_hi * p.w_hi;
    var acc = 0.0;
    if (g < n_w) {
        let kx = g % k;
        let ky = (g / k) % k;
        let i = (g / (k * k)) % p.c_hi;
        let o = g / (k * k * p.c_hi);
        // Σ over every (b, y, x) of the lo side, 256 threads interleaved.
        for (var n = t; n < p.batch * lo_plane; n += 256u) {
            let x = n % p.w_lo;
            let y = (n / p.w_lo) % p.h_lo;
            let b = n / lo_plane;
            let yy = i32(y * p.stride + ky) - i32(p.padding);
            let xx = i32(x * p.stride + kx) - i32(p.padding);
            if (yy < 0 || yy >= i32(p.h_hi) || xx < 0 || xx >= i32(p.w_hi)) {
                continue;
            }
            let lo = g_lo[(b * p.c_lo + o) * lo_plane + y * p.w_lo + x];
            acc += lo * g_hi[(b * p.c_hi + i) * hi_plane + u32(yy) * p.w_hi + u32(xx)];
        }
    } else {
        // The bias gradient: Σ over (b, pixel) of one channel of the output side's gradient.
        let ch = g - n_w;
        if (BIAS_SIDE == 1u) {
            for (var n = t; n < p.batch * lo_plane; n += 256u) {
                acc += g_lo[((n / lo_plane) * p.c_lo + ch) * lo_plane + n % lo_plane];
            }
        } else {
            for (var n = t; n < p.batch * hi_plane; n += 256u) {
                acc += g_hi[((n / hi_plane) * p.c_hi + ch) * hi_plane + n % hi_plane];
            }
        }
    }
    let total = workgroup_sum(t, acc);
    if (t == 0u) {
        if (g < n_w) {
            dw[g] = total;
        } else {
            db[g - n_w] = total;
        }
    }
}

// ---- The GEMM formulation's layout kernels ---------------------------------------------------
// A pass as one matrix product on the tuned matmul kernels (`kernels::conv::ConvFormulation::Gemm`):
// the lo side's pixels become rows, r = (b, y, x), and a window of the hi side becomes a row of
// `cols` [B·H_lo·W_lo, C_hi·k·k] (im2col), so
//   conv_to_lo        t = cols · Wᵀ (NT, bias and activation in the product's epilogue), then
//                     rows_to_lo (the activation backward fused there: the saved tensor is NCHW)
//   conv_to_hi        t = lo_to_rows(lo); cols = t · W (NN); col2im (bias, activation, backward)
//   conv_weight_grad  dW = lo_to_rows(lo)ᵀ · im2col(hi) (TN; its row sums are the lo side's
//                     channel sums), hi's channel sums by channel_sum where the bias is there.
// Every output is written by one thread (col2im gathers, it never scatters), so the results are
// reproducible bit for bit.

// The layout kernels' geometry is override constants, set by the launcher from the shape, so that
// every division and remainder in them is by a constant (a multiply and a shift; a division by a
// run-time size costs a CPU driver a scalar loop per lane). Only the batch is read at run time,
// so one pipeline serves a step's full batch and an epoch's smaller last one.
override LO_C: u32 = 1u;
override LO_H: u32 = 1u;
override LO_W: u32 = 1u;
override HI_C: u32 = 1u;
override HI_H: u32 = 1u;
override HI_W: u32 = 1u;
override KERNEL: u32 = 1u;
override STRIDE: u32 = 1u;
override PADDING: u32 = 0u;

// The plain permutations (im2col, lo_to_rows, channel_sum).
@group(0) @binding(0) var<storage, read> s_src: array<f32>;
@group(0) @binding(1) var<storage, read_write> s_dst: array<f32>;
@group(0) @binding(2) var<uniform> s_p: ConvParams;
// The ones with an epilogue (col2im, rows_to_lo): aux is the bias [C] or the saved output.
@group(0) @binding(0) var<storage, read> e_src: array<f32>;
@group(0) @binding(1) var<storage, read> e_aux: array<f32>;
@group(0) @binding(2) var<storage, read_write> e_dst: array<f32>;
@group(0) @binding(3) var<uniform> e_p: ConvParams;

fn e_epilogue(v0: f32, i: u32, ch: u32) -> f32 {
    var v = v0;
    if (HAS_BIAS) {
        v = v + e_aux[ch];
    }
    v = activate(v, ACT);
    if (ACT_GRAD != ACT_IDENTITY) {
        v = act_backward(v, e_aux[i], ACT_GRAD);
    }
    return v;
}

// cols[(b,y,x) − row0, (i,ky,kx)] = hi[b, i, y·s − p + ky, x·s − p + kx], 0 outside the image,
// for the chunk's rows (b,y,x) in [row0, row0 + rows): one thread per (b, y, x, i), writing that
// channel's k·k window values (contiguous in cols).
@compute @workgroup_size(256, 1, 1)
fn im2col(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = flat_index(gid, nwg);
    if (t >= s_p.rows * HI_C) {
        return;
    }
    let i = t % HI_C;
    let r = s_p.row0 + t / HI_C;
    let x = r % LO_W;
    let y = (r / LO_W) % LO_H;
    let b = r / (LO_H * LO_W);
    let y0 = i32(y * STRIDE) - i32(PADDING);
    let x0 = i32(x * STRIDE) - i32(PADDING);
    let src = (b * HI_C + i) * HI_H * HI_W;
    // Row r of cols starts at r·C_hi·k·k, channel i's taps at i·k·k within it: t·k·k.
    let dst = t * KERNEL * KERNEL;
    // Every lane runs the same unrolled code: a tap outside the image loads a clamped index and
    // writes 0.
    for (var ky = 0u; ky < KERNEL; ky++) {
        let yy = y0 + i32(ky);
        let row_in = yy >= 0 && yy < i32(HI_H);
        let row = src + u32(clamp(yy, 0, i32(HI_H) - 1)) * HI_W;
        for (var kx = 0u; kx < KERNEL; kx++) {
            let xx = x0 + i32(kx);
            let v = s_src[row + u32(clamp(xx, 0, i32(HI_W) - 1))];
            s_dst[dst + ky * KERNEL + kx] = select(0.0, v, row_in && xx >= 0 && xx < i32(HI_W));
        }
    }
}

// hi[b,i,Y,X] = epilogue(Σ cols[(b,y,x), (i,ky,kx)] over the (y, x, ky, kx) with y·s − p + ky = Y
// and x·s − p + kx = X): im2col's transpose, as a gather. Only the taps that land are visited:
// ky ≡ Y + p (mod s), ascending, so the sum's order is the direct kernel's.
@compute @workgroup_size(256, 1, 1)
fn col2im(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat_index(gid, nwg);
    let plane = HI_H * HI_W;
    if (idx >= e_p.batch * HI_C * plane) {
        return;
    }
    let xx = idx % HI_W;
    let yy = (idx / HI_W) % HI_H;
    let i = (idx / plane) % HI_C;
    let b = idx / (plane * HI_C);
    let width = HI_C * KERNEL * KERNEL;
    let ty = yy + PADDING;
    let tx = xx + PADDING;
    // A constant trip count (⌈k/s⌉ taps a side), so the loops unroll and every lane runs the same
    // code; a tap that does not land loads a clamped index and adds nothing.
    let taps = (KERNEL + STRIDE - 1u) / STRIDE;
    var acc = 0.0;
    for (var jy = 0u; jy < taps; jy++) {
        let ky = ty % STRIDE + jy * STRIDE;
        let y = (ty - min(ky, ty)) / STRIDE;
        let y_in = ky < KERNEL && ky <= ty && y < LO_H;
        for (var jx = 0u; jx < taps; jx++) {
            let kx = tx % STRIDE + jx * STRIDE;
            let x = (tx - min(kx, tx)) / STRIDE;
            let tap_in = y_in && kx < KERNEL && kx <= tx && x < LO_W;
            let r = (b * LO_H + min(y, LO_H - 1u)) * LO_W + min(x, LO_W - 1u);
            let c = (i * KERNEL + min(ky, KERNEL - 1u)) * KERNEL + min(kx, KERNEL - 1u);
            acc += select(0.0, e_src[r * width + c], tap_in);
        }
    }
    e_dst[idx] = e_epilogue(acc, idx, i);
}

// The permutations between lo (NCHW) and rows ([(b,y,x), o]): a thread moves PIXELS_PER_THREAD
// neighbouring pixels of one channel, since on CPU drivers a thread's fixed cost is more than that
// of moving one value (set by the launcher, `kernels::conv::PIXELS_PER_THREAD`).
override PIXELS_PER_THREAD: u32 = 1u;

// (b, o, first pixel) of thread idx.
fn pixel_run(idx: u32) -> vec3<u32> {
    let plane = LO_H * LO_W;
    let runs = (plane + PIXELS_PER_THREAD - 1u) / PIXELS_PER_THREAD;
    let run = idx % runs;
    let o = (idx / runs) % LO_C;
    let b = idx / (runs * LO_C);
    return vec3<u32>(b, o, run * PIXELS_PER_THREAD);
}

// rows[(b,y,x), o] = lo[b, o, y, x].
@compute @workgroup_size(256, 1, 1)
fn lo_to_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let plane = LO_H * LO_W;
    let v = pixel_run(flat_index(gid, nwg));
    if (v.x >= s_p.batch) {
        return;
    }
    for (var j = 0u; j < PIXELS_PER_THREAD; j++) {
        let pix = v.z + j;
        if (pix < plane) {
            s_dst[(v.x * plane + pix) * LO_C + v.y] = s_src[(v.x * LO_C + v.y) * plane + pix];
        }
    }
}

// lo[b, o, y, x] = epilogue(rows[(b,y,x) − row0, o]) for the chunk's rows (b,y,x) in
// [row0, row0 + rows): a thread per PIXELS_PER_THREAD neighbouring rows of one channel.
@compute @workgroup_size(256, 1, 1)
fn rows_to_lo(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let plane = LO_H * LO_W;
    let runs = (e_p.rows + PIXELS_PER_THREAD - 1u) / PIXELS_PER_THREAD;
    let idx = flat_index(gid, nwg);
    let o = idx / runs;
    if (o >= LO_C) {
        return;
    }
    let first = (idx % runs) * PIXELS_PER_THREAD;
    for (var j = 0u; j < PIXELS_PER_THREAD; j++) {
        let local = first + j;
        if (local < e_p.rows) {
            let r = e_p.row0 + local;
            let out = ((r / plane) * LO_C + o) * plane + r % plane;
            e_dst[out] = e_epilogue(e_src[local * LO_C + o], out, o);
        }
    }
}

// The hi side's channel sums (a ConvTranspose2d's bias gradient): one workgroup per channel.
@compute @workgroup_size(256, 1, 1)
fn channel_sum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let ch = wid.x;
    let plane = HI_H * HI_W;
    var acc = 0.0;
    for (var n = t; n < s_p.batch * plane; n += 256u) {
        acc += s_src[((n / plane) * HI_C + ch) * plane + n % plane];
    }
    let total = workgroup_sum(t, acc);
    if (t == 0u) {
        s_dst[ch] = total;
    }
}
