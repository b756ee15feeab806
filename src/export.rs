//! The training step as data: a plan that another runtime replays (the WebGPU page in `web/`).
//!
//! The host stays the single source of truth: it plans the model's graphs with the same launchers
//! the native trainer uses, on a context that logs its buffers ([`ContextOptions::record_buffers`]),
//! then writes every dispatch ([`DispatchDesc`]), every buffer and its initial contents, the
//! per-step uniform's layout and rules, and the data. The format is `docs/PLAN_FORMAT.md`.
//!
//! [`ContextOptions::record_buffers`]: crate::gpu::ContextOptions::record_buffers

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::data::ImageSet;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuTensor, Shader};
use crate::kernels::AUTOTUNE;
use crate::kernels::matmul::SUBGROUP_LANES;
use crate::kernels::reduce::LossSlots;
use crate::kernels::reparam_kl::EpsSource;
use crate::kernels::{DispatchDesc, StepParams};
use crate::model::KlWeight;
use crate::model::gpu::{EpochPlan, StepGraph};
use crate::model::{GpuDataset, GpuVae, TrainSettings, VaeConfig};
use crate::optim::Optimizer;
use crate::rng::{Philox, domain};

pub mod schema;

/// The plan format's name and version (`plan.json`'s `format` and `version`).
pub const FORMAT: &str = "vae-wgpu-plan";
pub const VERSION: u32 = 4;

/// Test images reconstructed by the page after each epoch, and decoded samples drawn.
pub const RECONSTRUCTIONS: usize = 10;
pub const SAMPLES: usize = 64;
/// The most bytes of shuffled indices a plan carries (`indices.bin`, every epoch's order).
pub const MAX_INDEX_BYTES: u64 = 1 << 30;

/// What to export.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    pub cfg: VaeConfig,
    pub settings: TrainSettings,
    /// Epochs of shuffled index lists to include (the page can train at most this many).
    pub epochs: usize,
    /// The images (IDX or an image folder, read by the caller: see `crate::data::load_data`).
    pub train: ImageSet,
    pub test: ImageSet,
    pub out: PathBuf,
    /// Also run this many training steps natively and write `reference.json` (0: none).
    pub reference_steps: usize,
}

/// What [`export_plan`] wrote.
#[derive(Clone, Debug)]
pub struct ExportSummary {
    pub dispatches_per_step: usize,
    pub buffers: usize,
    /// Bytes of `buffers.bin`, `indices.bin` and the compressed images.
    pub bytes: u64,
    /// The native engine's batch losses per image of the reference steps.
    pub reference_losses: Vec<f64>,
}

/// Buffers in the order the plan first refers to them; ids are positions.
#[derive(Default)]
struct BufferTable {
    ids: HashMap<wgpu::Buffer, usize>,
    list: Vec<wgpu::Buffer>,
}

impl BufferTable {
    fn id(&mut self, b: &wgpu::Buffer) -> usize {
        *self.ids.entry(b.clone()).or_insert_with(|| {
            self.list.push(b.clone());
            self.list.len() - 1
        })
    }

    fn dispatch(&mut self, d: &DispatchDesc) -> schema::Dispatch {
        schema::Dispatch {
            label: d.label,
            shader: d.shader.name,
            entry: d.entry,
            constants: d.constants.iter().copied().collect(),
            bindings: (d.bindings.iter().enumerate())
                .map(|(i, (b, offset, size))| schema::Binding {
                    binding: i,
                    buffer: self.id(b),
                    offset: *offset,
                    size: *size,
                })
                .collect(),
            workgroups: d.workgroups,
            problem: None,
            candidates: None,
        }
    }

    fn graph(&mut self, g: &StepGraph) -> schema::Graph {
        let dispatches = g
            .dispatches()
            .iter()
            .map(|d| {
                let mut v = self.dispatch(&d.desc);
                if let Some(first) = d.candidates.first() {
                    let candidates = (d.candidates.iter())
                        .map(|c| schema::Candidate {
                            dispatch: self.dispatch(&c.desc),
                            variant: c.variant.to_string(),
                            requires: c.desc.shader.features,
                            // The subgroup kernels broadcast across this many lanes.
                            min_subgroup_size: c.variant.uses_subgroups().then_some(SUBGROUP_LANES),
                            set: (c.set.iter())
                                .map(|(b, off, words)| schema::SetWords {
                                    buffer: self.id(b),
                                    offset: *off,
                                    u32: words.clone(),
                                })
                                .collect(),
                        })
                        .collect();
                    v.problem = Some(first.problem.clone());
                    v.candidates = Some(candidates);
                }
                v
            })
            .collect();
        schema::Graph {
            rows: g.batch,
            train: g.train,
            dispatches,
        }
    }

    fn region(&mut self, t: &GpuTensor, rows: usize) -> schema::Region {
        schema::Region {
            buffer: self.id(&t.buffer),
            offset: t.offset,
            rows,
            cols: t.shape[1],
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `bytes` to `dir/name` atomically; returns the byte count.
fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<u64> {
    crate::files::write_atomic(&dir.join(name), bytes)?;
    Ok(bytes.len() as u64)
}

/// An IDX file of `data`'s images, gzip-compressed: what the page inflates. Grayscale images are
/// IDX3 `[count, rows, cols]` (MNIST's own format); colour images IDX4 `[count, channels, rows,
/// cols]`, channel-planar. Returns the bytes and the header's length.
fn idx_images_gz(data: &ImageSet) -> Result<(Vec<u8>, usize)> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let dims: Vec<usize> = if data.channels == 1 {
        vec![data.count, data.rows, data.cols]
    } else {
        vec![data.count, data.channels, data.rows, data.cols]
    };
    let mut header = vec![0, 0, 8, dims.len() as u8];
    for d in &dims {
        header.extend((*d as u32).to_be_bytes());
    }
    let io = |e| Error::Io {
        path: PathBuf::from("<gzip encoder>"),
        source: e,
    };
    enc.write_all(&header).map_err(io)?;
    enc.write_all(&data.images).map_err(io)?;
    Ok((enc.finish().map_err(io)?, header.len()))
}

fn usage_names(u: wgpu::BufferUsages) -> Vec<&'static str> {
    [
        (wgpu::BufferUsages::STORAGE, "storage"),
        (wgpu::BufferUsages::UNIFORM, "uniform"),
        (wgpu::BufferUsages::COPY_SRC, "copy_src"),
        (wgpu::BufferUsages::COPY_DST, "copy_dst"),
    ]
    .into_iter()
    .filter(|(f, _)| u.contains(*f))
    .map(|(_, n)| n)
    .collect()
}

/// Every (module, entry point, override constants) combination the launchers use, each entry point
/// once (the subgroup module also carries matmul.wgsl's tiled kernel).
fn pipelines() -> Vec<schema::Pipeline> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for shader in Shader::ALL.into_iter().chain(Shader::SUBGROUP_MODULES) {
        for entry in shader.entry_points() {
            if !seen.insert(entry) {
                continue;
            }
            for set in crate::kernels::override_sets(&shader, entry) {
                out.push(schema::Pipeline {
                    shader: shader.name,
                    entry,
                    constants: set.into_iter().collect(),
                });
            }
        }
    }
    out
}

/// Plan the model of `opts` on `ctx` (which must log its buffers) and write the plan directory:
/// the graphs, the buffers and their contents, the limits the plan needs, the uniform's rules,
/// and the native engine's first steps for the page's parity test.
pub fn export_plan(ctx: &GpuContext, opts: &ExportOptions) -> Result<ExportSummary> {
    let cfg = check_export(ctx, opts)?;
    let (train, test) = (&opts.train, &opts.test);
    let mut p = Planned::new(ctx, opts, &cfg)?;

    // Every graph of the plan, by name (the last-batch graphs only where the split needs them).
    let named: Vec<(&str, &StepGraph)> = [
        ("train", Some(p.training.full())),
        ("train_last", p.training.last()),
        ("test", Some(p.testing.full())),
        ("test_last", p.testing.last()),
        ("reconstruct", Some(&p.reconstruct)),
        ("decode", Some(&p.decode)),
    ]
    .into_iter()
    .filter_map(|(name, g)| Some((name, g?)))
    .collect();
    let mut table = BufferTable::default();
    let mut graphs = std::collections::BTreeMap::new();
    for &(name, g) in &named {
        graphs.insert(name, table.graph(g));
    }
    let outputs = p.outputs(&cfg, &mut table);
    let slots: std::collections::BTreeMap<&'static str, usize> =
        LossSlots::NAMES.iter().copied().collect();
    let mut accumulator = |t: &GpuTensor| schema::Accumulator {
        buffer: table.id(&t.buffer),
        len: LossSlots::LEN,
        slots: slots.clone(),
    };
    let accumulators = [
        ("train", accumulator(&p.acc_train)),
        ("test", accumulator(&p.acc_test)),
        ("scratch", accumulator(&p.acc_scratch)),
    ]
    .into_iter()
    .collect();
    let uniform_id = table.id(&p.vae.step_uniform().buffer);
    let index_id = table.id(&p.train_gpu.index.buffer);
    let params_id = table.id(&p.vae.params.buffer);

    // The per-epoch shuffles, exactly as the trainer draws them.
    let s = &opts.settings;
    let mut indices = Vec::with_capacity(opts.epochs * train.count * 4);
    for epoch in 1..=opts.epochs {
        let perm = Philox::stream(s.seed, domain::SHUFFLE, epoch as u32).permutation(train.count);
        indices.extend(bytemuck::cast_slice::<u32, u8>(&perm));
    }
    let mut bytes = write_file(&opts.out, "indices.bin", &indices)?;
    let images = [
        (
            &p.train_gpu.pixels.buffer,
            "train-images-idx3-ubyte.gz",
            train,
        ),
        (&p.test_gpu.pixels.buffer, "t10k-images-idx3-ubyte.gz", test),
    ];
    let (buffers, written) = write_buffers(ctx, &opts.out, &table, &images)?;
    bytes += written;
    let plan = schema::Plan {
        format: FORMAT,
        version: VERSION,
        engine: format!("vae-wgpu {}", env!("CARGO_PKG_VERSION")),
        planned_on: ctx.adapter.short(),
        model: p.model_section(&cfg, train),
        train: p.train_section(opts),
        image: schema::Image {
            width: train.cols,
            height: train.rows,
            channels: train.channels,
        },
        // The native autotune's rule, which the page follows when it picks kernels itself.
        autotune: AUTOTUNE,
        limits: limits(&named, &table),
        shaders: Shader::ALL
            .into_iter()
            .chain(Shader::SUBGROUP_MODULES)
            .map(|sh| schema::ShaderSource {
                name: sh.name,
                source: sh.webgpu_source(),
                features: sh.features,
            })
            .collect(),
        pipelines: pipelines(),
        buffers,
        uniform: schema::Uniform {
            buffer: uniform_id,
            size: std::mem::size_of::<StepParams>(),
            // Each training step's values follow from its step t by the field's rule (the
            // runtime supplies batch_offset; evaluation steps write their own counter).
            fields: StepParams::FIELDS
                .iter()
                .map(|&(name, offset, ty)| schema::UniformField {
                    name,
                    offset,
                    ty,
                    rule: (p.schedule.rules.iter())
                        .find(|(n, _)| *n == name)
                        .map(|(_, r)| r.to_json()),
                })
                .collect(),
        },
        accumulators,
        epoch_input: schema::EpochInput {
            buffer: index_id,
            blob: "indices.bin",
            count: train.count,
        },
        evaluation: schema::Evaluation {
            rng_flag: crate::model::gpu::EVAL_DRAWS.flag,
            epoch_stride: crate::model::gpu::EVAL_DRAWS.epoch_stride,
        },
        graphs,
        outputs,
    };
    let dispatches_per_step = p.training.dispatch_count();
    let buffer_count = table.list.len();
    drop(named);
    let reference_losses = p.write_reference(ctx, opts, &indices, params_id)?;
    let text =
        serde_json::to_string(&plan).map_err(|e| Error::Config(format!("plan.json: {e}")))?;
    bytes += write_file(&opts.out, "plan.json", text.as_bytes())?;
    Ok(ExportSummary {
        dispatches_per_step,
        buffers: buffer_count,
        bytes,
        reference_losses,
    })
}

/// The model of an export for its images, its settings and epochs checked (every epoch's
/// shuffle must fit the plan before it is allocated), and the plan's folder made.
fn check_export(ctx: &GpuContext, opts: &ExportOptions) -> Result<VaeConfig> {
    if !ctx.records_buffers() {
        return Err(Error::Config(
            "exporting a plan needs a context created with record_buffers".into(),
        ));
    }
    let train = &opts.train;
    let cfg = opts
        .cfg
        .clone()
        .for_images(train.channels, train.rows, train.cols);
    opts.settings.validate(train.count)?;
    if opts.epochs == 0 {
        return Err(Error::setting("epochs", "must be at least 1"));
    }
    // The plan carries every epoch's shuffle (4 bytes an image).
    let per_epoch = train.count as u64 * 4;
    let max_epochs = (MAX_INDEX_BYTES / per_epoch.max(1)).max(1);
    if opts.epochs as u64 > max_epochs {
        return Err(Error::setting(
            "epochs",
            format!(
                "{} is too many to export: the plan carries each epoch's shuffle of the {} \
                 training images ({per_epoch} bytes an epoch), and at most {max_epochs} epochs fit \
                 its {} MiB; the page trains at most the exported epochs",
                opts.epochs,
                train.count,
                MAX_INDEX_BYTES >> 20
            ),
        ));
    }
    std::fs::create_dir_all(&opts.out).map_err(io_err(&opts.out))?;
    Ok(cfg)
}

/// The graphs of an exported plan and everything they run on.
struct Planned {
    vae: GpuVae,
    /// The optimizer as the plan's schedule runs it (over the exported epochs).
    opt_cfg: crate::optim::OptimizerConfig,
    /// Holds the optimizer's state buffers, which the training graphs bind.
    _optimizer: Optimizer,
    train_gpu: GpuDataset,
    test_gpu: GpuDataset,
    acc_train: GpuTensor,
    acc_test: GpuTensor,
    acc_scratch: GpuTensor,
    training: EpochPlan,
    testing: EpochPlan,
    reconstruct: StepGraph,
    decode: StepGraph,
    recon_rows: usize,
    decode_rows: usize,
    schedule: crate::model::Schedule,
}

impl Planned {
    fn new(ctx: &GpuContext, opts: &ExportOptions, cfg: &VaeConfig) -> Result<Self> {
        let (s, train, test) = (&opts.settings, &opts.train, &opts.test);
        let mut vae = GpuVae::new(ctx, cfg.clone(), s.batch_size, s.seed)?;
        // The schedule spans the exported epochs.
        let mut opt_cfg = s.optimizer;
        opt_cfg.schedule.total_steps = (opts.epochs as u64)
            .checked_mul(train.count.div_ceil(s.batch_size) as u64)
            .ok_or_else(|| Error::setting("epochs", format!("{} is too many", opts.epochs)))?;
        let optimizer = Optimizer::new(ctx, opt_cfg, vae.layout.len)?;
        let train_gpu = GpuDataset::upload(ctx, "train pixels", train)?;
        let test_gpu = GpuDataset::upload(ctx, "test pixels", test)?;
        let acc_train = vae.new_accumulator(ctx)?;
        let acc_test = vae.new_accumulator(ctx)?;
        let acc_scratch = vae.new_accumulator(ctx)?;
        let b = s.batch_size;
        let (train_in, test_in) = (train_gpu.input(), test_gpu.input());
        let training = EpochPlan::new(train.count, b, |rows| {
            let update = Some(&optimizer);
            vae.plan_step(ctx, rows, train_in, EpsSource::Philox, update, &acc_train)
        })?;
        // As `Trainer` sets it.
        vae.kl = KlWeight::of(cfg, training.steps());
        let schedule = vae.schedule(&opt_cfg.rules());
        // A test set smaller than a batch is one smaller batch (as the native evaluation does).
        let testing = EpochPlan::new(test.count, b.min(test.count), |rows| {
            vae.plan_step(ctx, rows, test_in, EpsSource::Philox, None, &acc_test)
        })?;
        let recon_rows = RECONSTRUCTIONS.min(b).min(test.count);
        let reconstruct = vae.plan_reconstruct(ctx, recon_rows, test_in, &acc_scratch)?;
        let decode_rows = SAMPLES.min(cfg.samples * b);
        let decode = vae.plan_decode(ctx, decode_rows)?;
        Ok(Planned {
            vae,
            opt_cfg,
            _optimizer: optimizer,
            train_gpu,
            test_gpu,
            acc_train,
            acc_test,
            acc_scratch,
            training,
            testing,
            reconstruct,
            decode,
            recon_rows,
            decode_rows,
            schedule,
        })
    }

    /// The plan's `model` section: the architecture and objective, for display.
    fn model_section(&self, cfg: &VaeConfig, train: &ImageSet) -> schema::Model {
        schema::Model {
            input: cfg.input,
            hidden: cfg.hidden.clone(),
            decoder_hidden: cfg.decoder_hidden.clone(),
            conv: cfg.conv.as_ref().map(|c| c.widths.clone()),
            describe: cfg.describe(),
            activation: cfg.activation.name(),
            latent: cfg.latent,
            likelihood: cfg.likelihood.name(),
            beta: cfg.beta,
            kl_warmup: cfg.kl_warmup,
            objective: cfg.objective.name(),
            classes: cfg.classes,
            class_names: match cfg.is_conditional() {
                true => train.classes.clone(),
                false => Vec::new(),
            },
            samples: cfg.samples,
            params: self.vae.layout.num_params(),
        }
    }

    /// The plan's `train` section: the run's settings, the reals as the decimal values meant.
    fn train_section(&self, opts: &ExportOptions) -> schema::Train {
        let (s, train, test) = (&opts.settings, &opts.train, &opts.test);
        let (o, meant) = (&self.opt_cfg, crate::ops::meant);
        schema::Train {
            batch: s.batch_size,
            epochs: opts.epochs,
            optimizer: o.kind.name(),
            lr: meant(o.lr),
            beta1: meant(o.beta1),
            beta2: meant(o.beta2),
            eps: meant(o.eps),
            weight_decay: meant(o.weight_decay),
            momentum: meant(o.momentum),
            nesterov: o.nesterov,
            lr_schedule: o.schedule.to_json(),
            clip_grad_norm: o.clip_grad_norm.map(meant),
            seed: s.seed,
            train_len: train.count,
            test_len: test.count,
            log_every: s.log_every,
            steps_per_epoch: self.training.steps(),
        }
    }

    /// Where the page reads the reconstructions and the decoded samples.
    fn outputs(&self, cfg: &VaeConfig, table: &mut BufferTable) -> schema::Outputs {
        let a = &self.vae.acts;
        let lb = cfg.samples * self.recon_rows;
        schema::Outputs {
            reconstruct: schema::Reconstruct {
                originals: table.region(&a.x, self.recon_rows),
                // Sample 0's rows of sigmoid(logits) (rows are sample-major).
                reconstructions: table.region(&a.logits, self.recon_rows.min(lb)),
            },
            decode: schema::Decode {
                z: table.region(&a.z, self.decode_rows),
                means: table.region(&a.logits, self.decode_rows),
                // A conditional model decodes each code with a class: u32 per row, written by
                // the page.
                labels: cfg.is_conditional().then(|| schema::Labels {
                    buffer: table.id(&a.labels.buffer),
                    offset: a.labels.offset,
                    rows: self.decode_rows,
                }),
            },
        }
    }

    /// The native engine's first `reference_steps` steps of the plan (epoch 1's shuffle), for
    /// the page's parity test: every batch loss, the weights after them and the uniform each
    /// step was given, field by field, in `reference.json` and `reference_params.bin`.
    fn write_reference(
        &mut self,
        ctx: &GpuContext,
        opts: &ExportOptions,
        indices: &[u8],
        params_id: usize,
    ) -> Result<Vec<f64>> {
        let mut reference_losses = Vec::new();
        if opts.reference_steps > self.training.steps() {
            return Err(Error::setting(
                "reference steps",
                format!(
                    "{} exceeds the first epoch's {} steps, within which the reference runs",
                    opts.reference_steps,
                    self.training.steps()
                ),
            ));
        }
        if opts.reference_steps == 0 {
            return Ok(reference_losses);
        }
        let (steps, b) = (opts.reference_steps, opts.settings.batch_size);
        let perm = &indices[..opts.train.count * 4];
        ctx.write_u32(&self.train_gpu.index, bytemuck::cast_slice(perm))?;
        self.vae.reset_losses(ctx, &self.acc_train)?;
        for step in 0..steps {
            let g = self.training.graph(step);
            self.vae.run_step(ctx, g, step * b)?;
            let r = self.vae.read_losses(ctx, &self.acc_train)?;
            reference_losses.push(r.batch_total / g.batch as f64);
        }
        let params = self.vae.read_params(ctx)?;
        write_file(
            &opts.out,
            "reference_params.bin",
            bytemuck::cast_slice(&params),
        )?;
        let matmul = crate::kernels::matmul::select::pinned(ctx)?
            .map_or("auto".to_string(), |v| v.to_string());
        let schedule = &self.schedule;
        let uniforms: Vec<Value> = (1..=steps as u64)
            .map(|t| {
                let p = schedule.params(t, 0);
                let bytes = bytemuck::bytes_of(&p);
                let fields: serde_json::Map<String, Value> = StepParams::FIELDS
                    .iter()
                    .filter(|(n, _, _)| schedule.rules.iter().any(|(r, _)| r == n))
                    .map(|(n, off, ty)| {
                        let w: [u8; 4] = bytes[*off..off + 4].try_into().unwrap_or_default();
                        let v = match *ty {
                            "u32" => json!(u32::from_le_bytes(w)),
                            _ => json!(f32::from_le_bytes(w) as f64),
                        };
                        (n.to_string(), v)
                    })
                    .collect();
                Value::Object(fields)
            })
            .collect();
        // The first evaluation steps' noise counters after epochs 1 and 2, as the native model
        // writes them, for the page's evaluation schedule.
        let mut eval_rng_steps = Vec::new();
        for epoch in [1, 2] {
            self.vae.start_eval_draws(epoch);
            for step in 0..3 {
                eval_rng_steps.push(json!([epoch, step, self.vae.next_eval_rng_step()]));
            }
        }
        self.vae.start_eval_draws(0);
        let reference = json!({
            "steps": steps,
            "uniforms": uniforms,
            "eval_rng_steps": eval_rng_steps,
            "matmul": matmul,
            "adapter": ctx.adapter.short(),
            "batch_losses": reference_losses,
            "params": {"buffer": params_id, "blob": "reference_params.bin", "size": params.len() * 4},
        });
        write_file(
            &opts.out,
            "reference.json",
            serde_json::to_string_pretty(&reference)
                .map_err(|e| Error::Config(format!("reference.json: {e}")))?
                .as_bytes(),
        )?;
        Ok(reference_losses)
    }
}

/// Every buffer of the plan with its initial contents: the images as gzip IDX files, other
/// non-zero contents in `buffers.bin` (4-byte aligned ranges), zeros as nothing. Returns the
/// buffers and the bytes written.
fn write_buffers(
    ctx: &GpuContext,
    out: &Path,
    table: &BufferTable,
    images: &[(&wgpu::Buffer, &'static str, &ImageSet)],
) -> Result<(Vec<schema::Buffer>, u64)> {
    let mut bytes = 0;
    let mut blob = Vec::new();
    let mut buffers = Vec::new();
    for (id, buf) in table.list.iter().enumerate() {
        let info = ctx.buffer_info(buf).ok_or_else(|| {
            Error::Config(format!(
                "buffer {id} of the plan was not created through this context"
            ))
        })?;
        let init = if let Some((_, file, data)) = images.iter().find(|(b, _, _)| *b == buf) {
            let (gz, skip) = idx_images_gz(data)?;
            bytes += write_file(out, file, &gz)?;
            Some(schema::Init::Gzip {
                gzip: file,
                skip,
                size: data.images.len(),
            })
        } else {
            match &info.contents {
                Some(c) if c.iter().any(|&x| x != 0) => {
                    let offset = blob.len();
                    blob.extend_from_slice(c);
                    // Keep every blob range 4-byte aligned (WebGPU's writeBuffer granule).
                    blob.resize(blob.len().next_multiple_of(4), 0);
                    Some(schema::Init::Blob {
                        blob: "buffers.bin",
                        offset,
                        size: c.len(),
                    })
                }
                _ => None,
            }
        };
        buffers.push(schema::Buffer {
            id,
            name: info.name.clone(),
            size: info.size,
            usage: usage_names(info.usage),
            init,
        });
    }
    bytes += write_file(out, "buffers.bin", &blob)?;
    Ok((buffers, bytes))
}

/// The limits the plan needs, from its dispatches (and the candidates it may choose).
fn limits(named: &[(&str, &StepGraph)], table: &BufferTable) -> schema::Limits {
    let mut max_binding = 0u64;
    let mut max_groups = 0u32;
    let mut max_storage = 0usize;
    let mut max_uniform = 0usize;
    for d in named.iter().flat_map(|(_, g)| g.dispatches()) {
        for desc in std::iter::once(&d.desc).chain(d.candidates.iter().map(|c| &c.desc)) {
            let (mut st, mut un) = (0, 0);
            for (buf, _, size) in &desc.bindings {
                if buf.usage().contains(wgpu::BufferUsages::UNIFORM) {
                    un += 1;
                } else {
                    st += 1;
                    max_binding = max_binding.max(*size);
                }
            }
            max_storage = max_storage.max(st);
            max_uniform = max_uniform.max(un);
            max_groups = max_groups.max(desc.workgroups.into_iter().max().unwrap_or(1));
        }
    }
    schema::Limits {
        max_storage_buffer_binding_size: max_binding,
        max_buffer_size: table.list.iter().map(|b| b.size()).max().unwrap_or(0),
        max_compute_workgroups_per_dimension: max_groups,
        max_storage_buffers_per_shader_stage: max_storage,
        max_uniform_buffers_per_shader_stage: max_uniform,
        // Every kernel's workgroup has at most 256 invocations (shaders/*.wgsl).
        max_compute_invocations_per_workgroup: 256,
        max_compute_workgroup_size_x: 256,
    }
}
