//! Typed launchers, one module per shader family. A launcher checks shapes, builds the bind group
//! and the kernel's uniform, and returns a [`Dispatch`]: a recorded kernel that can be encoded into
//! any number of command encoders. The trainer plans its dispatches once and replays them every
//! step; tests plan one and [`run`] it.

/// `(struct name, size, [(field, offset)])` of a `#[repr(C)]` uniform struct, for the test that
/// holds it to the WGSL struct of the same name (`kernels::contracts`).
#[cfg(test)]
macro_rules! uniform_layout {
    ($t:ident $(, $f:ident)*) => {
        (
            stringify!($t),
            std::mem::size_of::<$t>(),
            &[$((stringify!($f), std::mem::offset_of!($t, $f))),*],
        )
    };
}

/// A uniform struct's layout as `uniform_layout!` writes it.
#[cfg(test)]
pub(crate) type UniformLayout = (&'static str, usize, &'static [(&'static str, usize)]);

#[cfg(test)]
mod contracts;

pub mod adam;
pub mod add;
pub mod attention;
pub mod bias_act;
pub mod clip_grad;
pub mod condition;
pub mod conv;
pub mod gather;
pub mod group_norm;
pub mod iwae;
pub mod likelihood;
pub mod matmul;
pub mod reduce;
pub mod reparam_kl;
pub mod sgd;
pub mod step;
pub mod texture;
pub mod tuner;

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuTensor, Shader};

pub use step::{StepParams, StepUniform};
pub use texture::TextureOperand;

/// Every override-constant combination the launchers use with `entry` of `shader` (one empty set:
/// the shader's defaults). The cross-compilation and browser portability tests walk these.
pub fn override_sets(shader: &Shader, entry: &str) -> Vec<Vec<(&'static str, f64)>> {
    let mut sets = epilogue_sets(shader);
    // The vec4 and subgroup kernels are each written for one layout (`matmul_nt4`,
    // `matmul_sg_nn_tex`, ...) and never read LAYOUT: only that layout's sets are used.
    if let Some(layout) = matmul::fixed_layout(entry) {
        sets.retain(|s| s.contains(&("LAYOUT", layout.code() as f64)));
    }
    if shader.name == "condition" && entry != "label_forward" {
        return vec![vec![]];
    }
    if entry == "conv_weight_grad" {
        return (0..3)
            .map(|side| vec![("BIAS_SIDE", side as f64)])
            .collect();
    }
    if entry != "matmul_tiled" {
        return sets;
    }
    // The tiled kernel with every tile shape the autotune tries.
    matmul::select::TileShape::ALL
        .iter()
        .flat_map(|tile| {
            sets.iter().map(move |set| {
                let mut s = set.clone();
                s.extend(tile.constants());
                s
            })
        })
        .collect()
}

/// The override sets each shader is compiled with, derived from the enums the launchers read
/// (every activation, the hidden activations' fused backward, every likelihood and which of them
/// the logits product fuses), so a new activation or likelihood is covered without an edit here.
fn epilogue_sets(shader: &Shader) -> Vec<Vec<(&'static str, f64)>> {
    use crate::ops::{Act, Likelihood};
    let code = |a: Act| a.code() as f64;
    let acts = Act::ALL.map(code);
    let act_grads = Act::HIDDEN.map(|(a, _)| code(a));
    let fused = Likelihood::KINDS.into_iter().filter(Likelihood::fuses);
    match shader.name {
        "matmul" | "matmul_subgroup" | "matmul_subgroup_tex" => {
            // Per layout: each forward activation with and without bias (Linear forward,
            // decoding), each fused activation backward (input gradients), row sums (weight
            // gradients), the bare product, and each fused likelihood's epilogue (the logits,
            // with and without bias). Each feature is one `if` on its constant, so this covers
            // every branch.
            let mut v = Vec::new();
            for layout in crate::ops::Layout::ALL {
                let l = ("LAYOUT", layout.code() as f64);
                for act in acts {
                    for bias in [0.0, 1.0] {
                        v.push(vec![l, ("ACT", act), ("HAS_BIAS", bias)]);
                    }
                }
                for grad in act_grads {
                    v.push(vec![l, ("ACT_GRAD", grad)]);
                }
                v.push(vec![l, ("ROW_SUM", 1.0)]);
                for lik in fused.clone() {
                    for bias in [0.0, 1.0] {
                        v.push(vec![
                            l,
                            ("HAS_BIAS", bias),
                            ("LIKELIHOOD", lik.code() as f64),
                        ]);
                    }
                }
            }
            v
        }
        "bias_act" => acts
            .into_iter()
            .flat_map(|a| [0.0, 1.0].map(|b| vec![("ACT", a), ("HAS_BIAS", b)]))
            .collect(),
        // conv_to_lo / conv_to_hi: forward with bias and each activation, a fused activation
        // backward, or bare; conv_weight_grad: the bias gradient from either side.
        "conv" => {
            let mut v = vec![vec![("ACT", 0.0), ("HAS_BIAS", 0.0)]];
            for act in acts {
                v.push(vec![("ACT", act), ("HAS_BIAS", 1.0)]);
            }
            for grad in act_grads {
                v.push(vec![("ACT", 0.0), ("HAS_BIAS", 0.0), ("ACT_GRAD", grad)]);
            }
            v
        }
        // Each likelihood (a Gaussian with and without log σ's gradient), each also with the
        // IWAE objective's per-row weights.
        "likelihood" => {
            let mut v = Vec::new();
            for lik in Likelihood::KINDS {
                let code = ("LIKELIHOOD", lik.code() as f64);
                let grads: &[f64] = if lik.is_scaled() { &[0.0, 1.0] } else { &[0.0] };
                for &g in grads {
                    for weights in [0.0, 1.0] {
                        let mut set = vec![code, ("ROW_WEIGHTS", weights)];
                        if lik.is_scaled() {
                            set.push(("SIGMA_GRAD", g));
                        }
                        v.push(set);
                    }
                }
            }
            v
        }
        // label_forward after each layer activation (the others read no constant).
        "condition" => acts.into_iter().map(|a| vec![("ACT", a)]).collect(),
        "reparam_kl" => vec![
            vec![("EPS_FROM_BUFFER", 0.0)],
            vec![("EPS_FROM_BUFFER", 1.0)],
            vec![("IWAE", 1.0)],
        ],
        _ => vec![vec![]],
    }
}

/// One kernel launch: pipeline, bindings and grid, and the same as data ([`DispatchDesc`]).
pub struct Dispatch {
    pub label: &'static str,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    workgroups: [u32; 3],
    /// What this launch is, as data: what the plan exporter writes for other runtimes.
    pub desc: DispatchDesc,
    /// For a matmul planned with recording on: the same product by every usable kernel variant,
    /// the reference (direct) first (see [`crate::export`]).
    pub candidates: Vec<Candidate>,
    /// Operands bound as textures, copied from their tensors before each launch.
    copies: Vec<TextureOperand>,
}

/// A dispatch described as data: shader, entry point, override constants, bindings, grid.
#[derive(Clone, Debug)]
pub struct DispatchDesc {
    pub label: &'static str,
    pub shader: Shader,
    pub entry: &'static str,
    pub constants: Vec<(&'static str, f64)>,
    /// Binding i of group 0: (buffer, byte offset, byte size).
    pub bindings: Vec<(wgpu::Buffer, u64, u64)>,
    pub workgroups: [u32; 3],
}

/// One kernel variant of a matmul dispatch, and the buffer writes that go with choosing it (a loss
/// reduction whose partial count depends on the kernel's grid).
#[derive(Clone, Debug)]
pub struct Candidate {
    pub variant: matmul::MatmulVariant,
    /// The product's problem key, as the autotune cache names it.
    pub problem: String,
    pub desc: DispatchDesc,
    /// (buffer, byte offset, u32 values) to write when this candidate is chosen.
    pub set: Vec<(wgpu::Buffer, u64, Vec<u32>)>,
}

impl Dispatch {
    fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        let [x, y, z] = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }
}

/// Encode dispatches in order: runs of them share a compute pass (wgpu orders them with barriers
/// between dispatches); a dispatch that reads operand textures gets their copies first, between
/// passes, after everything before it.
pub fn encode_all(encoder: &mut wgpu::CommandEncoder, dispatches: &[&Dispatch]) {
    let mut rest = dispatches;
    while let Some((first, _)) = rest.split_first() {
        for t in &first.copies {
            t.encode_copy(encoder);
        }
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("vae-wgpu"),
            timestamp_writes: None,
        });
        first.encode(&mut pass);
        rest = &rest[1..];
        while let Some((d, tail)) = rest.split_first()
            && d.copies.is_empty()
        {
            d.encode(&mut pass);
            rest = tail;
        }
    }
}

/// Submit dispatches in order and wait for them.
pub fn run(ctx: &GpuContext, dispatches: &[&Dispatch]) -> Result<()> {
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    encode_all(&mut encoder, dispatches);
    ctx.queue.submit([encoder.finish()]);
    ctx.wait_idle("kernel run")
}

/// Seconds per run of the sequence `seq`, from one submit of `reps` runs (their texture copies
/// included), waited for: what the autotune and the speed report time (enough runs amortise the
/// submit).
pub fn time_runs(ctx: &GpuContext, seq: &[&Dispatch], reps: usize) -> Result<f64> {
    let all: Vec<&Dispatch> = (0..reps).flat_map(|_| seq.iter().copied()).collect();
    let start = std::time::Instant::now();
    run(ctx, &all)?;
    Ok(start.elapsed().as_secs_f64() / reps as f64)
}

/// Seconds per launch of `d`, from one submit of `reps` launches ([`time_runs`] of one dispatch).
pub fn time_launches(ctx: &GpuContext, d: &Dispatch, reps: usize) -> Result<f64> {
    time_runs(ctx, &[d], reps)
}

/// Seconds per run of the sequence `seq` (a conv pass, a training step): the best of 5 submits of
/// enough runs to fill about `budget` seconds each, after one run to compile and warm up (the
/// speed report and the per-dispatch examples time with it).
pub fn time_sequence(ctx: &GpuContext, seq: &[&Dispatch], budget: f64) -> Result<f64> {
    run(ctx, seq)?;
    let once = |reps: usize| time_runs(ctx, seq, reps);
    let first = once(1)?;
    let reps = (budget / first.max(1e-7)).ceil().clamp(1.0, 64.0) as usize;
    let mut best = first;
    for _ in 0..5 {
        best = best.min(once(reps)?);
    }
    Ok(best)
}

/// Each launch's fastest seconds per launch over `rounds` interleaved rounds of
/// [`time_launches`] (`(dispatch, launches per submit)`): every round times each in turn, so a
/// burst of load from another process slows all of them alike instead of deciding between them.
pub fn best_of_rounds(
    ctx: &GpuContext,
    launches: &[(&Dispatch, usize)],
    rounds: usize,
) -> Result<Vec<f64>> {
    let mut best = vec![f64::INFINITY; launches.len()];
    for _ in 0..rounds {
        for (b, &(d, reps)) in best.iter_mut().zip(launches) {
            tuner::stop_point(ctx, "timed launches")?;
            *b = b.min(time_launches(ctx, d, reps)?);
        }
    }
    Ok(best)
}

/// Deterministic operands for the autotunes, in [-1, 1): `((i·mul) mod 97) / 48.5 − 1`, so a
/// sum of K products stays below K in magnitude.
pub(crate) fn tune_operand(len: usize, mul: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * mul) % 97) as f32 / 48.5 - 1.0)
        .collect()
}

/// How every autotune chooses ([`tuner`]: the matmul kernel, the convolution's formulation,
/// Adam's read path, the steps per submit; the page's from the exported plan's copy, so there is
/// one rule): run each candidate (once to compile, once for a rough time), drop one whose output
/// disagrees with the reference's by more than `tolerance`·(1 + max|reference|), keep one whose
/// rough time is beyond `skip_factor`·fastest + `skip_slack_secs` with that time (not worth
/// timing closely), time the rest over `rounds` interleaved rounds of `reps` runs (enough for
/// `target_secs`, at most `max_reps`) and keep the fastest.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct AutotuneRule {
    pub rounds: usize,
    pub target_secs: f64,
    pub max_reps: usize,
    pub skip_factor: f64,
    pub skip_slack_secs: f64,
    pub tolerance: f64,
}

/// The rule every autotune follows (a burst of load from another process slows every candidate
/// of a round alike, so 5 rounds keep it from deciding the choice).
pub const AUTOTUNE: AutotuneRule = AutotuneRule {
    rounds: 5,
    target_secs: 2e-3,
    max_reps: 64,
    skip_factor: 4.0,
    skip_slack_secs: 1e-3,
    tolerance: 1e-3,
};

impl AutotuneRule {
    /// Whether a candidate whose rough time is `first` is timed closely, the fastest rough time
    /// being `fastest`.
    pub fn worth_timing(&self, first: f64, fastest: f64) -> bool {
        first <= self.skip_factor * fastest + self.skip_slack_secs
    }

    /// Launches per timed round for a candidate whose rough time is `first`.
    pub fn reps(&self, first: f64) -> usize {
        (self.target_secs / first.max(1e-6))
            .ceil()
            .clamp(1.0, self.max_reps as f64) as usize
    }
}

/// The examples `web/tests/autotune.test.mjs` holds the page's copy of the rule to.
#[test]
fn autotune_rule_examples() {
    for (first, reps) in [
        (1e-9, 64),
        (1e-5, 64),
        (1e-4, 20),
        (3e-4, 7),
        (2e-3, 1),
        (0.5, 1),
    ] {
        assert_eq!(AUTOTUNE.reps(first), reps, "reps({first})");
    }
    let fastest = 1e-3;
    let timed: Vec<bool> = [4e-3, 1e-3, 5e-3, 5.1e-3]
        .iter()
        .map(|&f| AUTOTUNE.worth_timing(f, fastest))
        .collect();
    assert_eq!(timed, [true, true, true, false]);
    assert!(disagreement(&[1.0, -3.0], &[1.0, -3.0 + 3.9e-3]).is_none());
    assert!(disagreement(&[1.0, -3.0], &[1.0, -3.0 + 4.1e-3]).is_some());
    assert!(disagreement(&[1.0, -3.0], &[1.0, f32::NAN]).is_some());
}

/// How far a tuning candidate's output is from the reference kernel's, when farther than a right
/// one can be: sums of tuning operands agree to ~n·2^-24 of the largest value, a wrong index or
/// lane layout is off by O(1), so the bound is `AUTOTUNE.tolerance`·(1 + max|want|). A NaN (a
/// value the candidate never wrote) is infinitely far.
pub(crate) fn disagreement(want: &[f32], got: &[f32]) -> Option<f32> {
    let scale = 1.0 + want.iter().fold(0f32, |a, v| a.max(v.abs()));
    let worst = want.iter().zip(got).fold(0f32, |a, (x, y)| {
        let e = (x - y).abs();
        if e.is_nan() { f32::INFINITY } else { a.max(e) }
    });
    (worst > AUTOTUNE.tolerance as f32 * scale).then_some(worst)
}

/// Resources bound to one dispatch, in binding order.
pub enum Bind<'a> {
    Tensor(&'a GpuTensor),
    Buffer(&'a wgpu::Buffer),
    /// A tensor read through a texture (copied before each launch).
    Texture(Box<TextureOperand>),
}

/// A uniform buffer holding one `#[repr(C)]` params struct (logged for export, see
/// [`crate::gpu::ContextOptions::record_buffers`]).
pub fn uniform<T: bytemuck::Pod>(ctx: &GpuContext, label: &str, value: &T) -> wgpu::Buffer {
    let contents = bytemuck::bytes_of(value);
    let buffer = ctx
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        });
    ctx.log_buffer(&buffer, label, Some(contents));
    buffer
}

/// Every launcher ends here: check the grid against the adapter's limits, fetch the pipeline
/// from the context's cache, build the bind group inside an error scope, and keep the launch
/// both as wgpu objects and as data ([`DispatchDesc`]). A free function of `kernels`, not a method
/// of [`GpuContext`], so that `gpu/` never depends on `kernels/`. Public, so that a kernel of
/// your own runs through the same path (`examples/own_kernel.rs`).
pub fn dispatch(
    ctx: &GpuContext,
    label: &'static str,
    shader: Shader,
    entry: &'static str,
    constants: &[(&'static str, f64)],
    binds: &[Bind<'_>],
    workgroups: [u32; 3],
) -> Result<Dispatch> {
    let max = ctx.limits().max_compute_workgroups_per_dimension;
    if workgroups.iter().any(|&w| w > max) {
        return Err(Error::AdapterLimit {
            adapter: ctx.adapter.name.clone(),
            what: format!("{label} needs {workgroups:?} workgroups; at most {max} per dimension"),
        });
    }
    // An arena may exceed one binding (GpuContext::zeros_arena); a kernel binding it whole is
    // refused here, by name, rather than by the driver's validation.
    let max_binding = ctx.limits().max_storage_buffer_binding_size;
    for (i, b) in binds.iter().enumerate() {
        if let Bind::Tensor(t) = b
            && t.size_bytes() > max_binding
        {
            return Err(Error::AdapterLimit {
                adapter: ctx.adapter.name.clone(),
                what: format!(
                    "{label} binds {} bytes at binding {i}; max_storage_buffer_binding_size is \
                     {max_binding} bytes",
                    t.size_bytes()
                ),
            });
        }
    }
    let pipeline = ctx.pipelines.get(&ctx.device, shader, entry, constants)?;
    let entries: Vec<wgpu::BindGroupEntry<'_>> = binds
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource: match b {
                Bind::Tensor(t) => t.binding(),
                Bind::Buffer(buf) => buf.as_entire_binding(),
                Bind::Texture(t) => wgpu::BindingResource::TextureView(&t.view),
            },
        })
        .collect();
    let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(label),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &entries,
    });
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(Error::Device(format!("{label}: bind group rejected: {e}")));
    }
    let bindings = binds
        .iter()
        .map(|b| match b {
            Bind::Tensor(t) => (t.buffer.clone(), t.offset, t.size_bytes()),
            Bind::Texture(op) => (
                op.tensor.buffer.clone(),
                op.tensor.offset,
                op.tensor.size_bytes(),
            ),
            Bind::Buffer(buf) => ((*buf).clone(), 0, buf.size()),
        })
        .collect();
    let copies = binds
        .iter()
        .filter_map(|b| match b {
            Bind::Texture(t) => Some((**t).clone()),
            _ => None,
        })
        .collect();
    Ok(Dispatch {
        label,
        pipeline,
        bind_group,
        workgroups,
        desc: DispatchDesc {
            label,
            shader,
            entry,
            constants: constants.to_vec(),
            bindings,
            workgroups,
        },
        candidates: Vec::new(),
        copies,
    })
}

/// A grid of 256-thread workgroups covering `n` threads, spilling into y past 65535 in x.
/// Kernels index `gid.x + gid.y * num_workgroups.x * 256` and bounds-check against `n`.
pub fn grid_1d(n: usize) -> [u32; 3] {
    spill_groups(n.div_ceil(256))
}

/// A grid of `groups` workgroups (at least one), spilling into y past 65535 in x; kernels number
/// their workgroup `wid.x + wid.y * num_workgroups.x` and bounds-check the rows past the end.
pub fn spill_groups(groups: usize) -> [u32; 3] {
    let groups = groups.max(1);
    if groups <= 65535 {
        [groups as u32, 1, 1]
    } else {
        let y = groups.div_ceil(65535);
        [groups.div_ceil(y) as u32, y as u32, 1]
    }
}

/// Number of workgroups (and so of partial sums) [`grid_1d`] launches for `n` threads.
pub(crate) fn grid_1d_groups(n: usize) -> usize {
    let [x, y, _] = grid_1d(n);
    x as usize * y as usize
}

pub(crate) fn expect_2d(op: &'static str, name: &str, t: &GpuTensor) -> Result<(usize, usize)> {
    match t.shape[..] {
        [r, c] => Ok((r, c)),
        _ => Err(Error::shape(
            op,
            format!("{name} must be 2-D, got {:?}", t.shape),
        )),
    }
}
