//! Checkpoints as safetensors files.
//!
//! Model tensors carry exactly the names, shapes and layout of the model's PyTorch `state_dict`
//! (the notebook's `linear_enc.weight` [200, 784], …; deeper models as `nn.Sequential`s, see
//! [`crate::model::ParamLayout`]), all f32, so the weights move to PyTorch and back. The
//! architecture (widths, activation) and the images' shape are in the metadata of both files;
//! `scripts/torch_reference.py` builds the module from it.
//! Two files are written:
//! - `model.safetensors`: the state_dict alone, for
//!   `model.load_state_dict(safetensors.torch.load_file(path))` (strict loading rejects extra keys);
//! - `checkpoint.safetensors`: the same tensors plus the optimizer's state under PyTorch's
//!   `optimizer.state_dict()` names (`optimizer.exp_avg.<name>`, `optimizer.exp_avg_sq.<name>` for
//!   Adam and AdamW, `optimizer.momentum_buffer.<name>` for SGD with momentum; the step in the
//!   metadata), the loss accumulator of a half-done epoch, and metadata (sizes, the optimizer and its
//!   settings and learning-rate schedule, step, epoch, seed), so `--resume` continues exactly where
//!   training stopped.
//!
//! Writes are atomic: a temporary file in the same directory, flushed to disk, then renamed over
//! the old one, so a crash never leaves a half-written checkpoint in place of a good one.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::kernels::reduce::LossSlots;
use crate::model::autoencoder_kl::KlConfig;
use crate::model::{ParamLayout, VaeConfig};
use crate::optim::{LrSchedule, LrShape, OptimizerConfig, OptimizerKind};

/// Format tag in the metadata of files this crate writes.
pub const FORMAT: &str = "vae-wgpu/1";

/// Where training stands.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// Epochs completed.
    pub epoch: usize,
    /// Steps done in the epoch after `epoch` (0 at an epoch boundary).
    pub step_in_epoch: usize,
    pub seed: u64,
    pub batch_size: usize,
    /// Training images the run's epochs cover (0: unknown, in files from before it was kept).
    pub train_len: usize,
    /// The images' shape (channels, rows, cols); zeros when unknown (e.g. a PyTorch state_dict).
    pub image: [usize; 3],
    /// For an image folder without a train/test split: the share held out as the test set
    /// (0 when the data came split).
    pub test_fraction: f64,
    /// The seed that chose the held-out images (the run's first seed: a later `--seed` does not
    /// move images between the splits).
    pub split_seed: u64,
    /// The data the run trained on, as given to `--data-dir` (made absolute); empty when unknown.
    /// `eval` and `pictures` read it when no `--data-dir` is given.
    pub data_dir: String,
    /// A conditional model's class names by label (`0`–`9` for MNIST, an image folder's class
    /// folders); empty when unknown.
    pub class_names: Vec<String>,
    /// The KL warm-up in training steps, as the run that started it counted them (`--kl-warmup`
    /// epochs × its steps per epoch), so a resume at another batch size keeps the ramp; `None`
    /// when unknown.
    pub kl_warmup_steps: Option<f64>,
}

/// The optimizer's state (PyTorch's `exp_avg`, `exp_avg_sq`, `momentum_buffer`, `step`), arenas in
/// [`ParamLayout`] order.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState {
    pub config: OptimizerConfig,
    /// Training steps taken (PyTorch's `step`; the schedule's position).
    pub steps: u64,
    /// One arena per [`OptimizerConfig::state_names`], in that order.
    pub state: Vec<Vec<f32>>,
    /// The trainer's loss accumulator (sums of the epoch in progress).
    pub loss_accumulator: Vec<f32>,
}

/// The largest weight or bias magnitude a checkpoint may hold: a trained VAE's are of order 1;
/// past ±1e6 the file is damaged or from a diverged run.
pub const MAX_PARAM_MAGNITUDE: f32 = 1e6;

#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub cfg: VaeConfig,
    /// Parameter arena laid out by [`ParamLayout::new`] (padding 0).
    pub params: Vec<f32>,
    /// Absent in a plain state_dict (e.g. one saved from PyTorch).
    pub optimizer: Option<OptimizerState>,
    pub progress: Progress,
    /// The activation came from the file's metadata (false for a bare PyTorch state_dict, whose
    /// tensors cannot say: the activation is then ReLU unless a flag says otherwise).
    pub activation_recorded: bool,
}

fn data_err(path: &Path, detail: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// One tensor of an arena in PyTorch's order, as little-endian bytes (a conditional layer's weight
/// is two pieces of the arena, see [`crate::model::ParamSpec::read`]).
fn tensor_bytes(arena: &[f32], spec: &crate::model::ParamSpec) -> Vec<u8> {
    bytemuck::cast_slice(&spec.read(arena)).to_vec()
}

impl Checkpoint {
    fn layout(&self) -> ParamLayout {
        ParamLayout::new(&self.cfg)
    }

    fn serialize(&self, with_state: bool) -> Result<Vec<u8>> {
        let layout = self.layout();
        // (name, shape, bytes) of every tensor; the views below borrow them.
        let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for spec in &layout.specs {
            owned.push((
                spec.name.to_string(),
                spec.shape.clone(),
                tensor_bytes(&self.params, spec),
            ));
        }
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), FORMAT.to_string());
        meta.insert("input".to_string(), self.cfg.input.to_string());
        let list = super::config::width_list;
        meta.insert("hidden".to_string(), list(&self.cfg.hidden));
        meta.insert("decoder_hidden".to_string(), list(&self.cfg.decoder_hidden));
        meta.insert("activation".to_string(), self.cfg.activation.to_string());
        meta.insert("latent".to_string(), self.cfg.latent.to_string());
        meta.insert("samples".to_string(), self.cfg.samples.to_string());
        // The objective: always recorded, so a resumed run minimises what the first one did.
        meta.insert(
            "likelihood".to_string(),
            self.cfg.likelihood.name().to_string(),
        );
        if let Some(Some(s)) = self.cfg.likelihood.scale() {
            meta.insert("sigma".to_string(), s.to_string());
        }
        meta.insert("beta".to_string(), self.cfg.beta.to_string());
        meta.insert("kl_warmup".to_string(), self.cfg.kl_warmup.to_string());
        meta.insert(
            "objective".to_string(),
            self.cfg.objective.name().to_string(),
        );
        if self.cfg.classes > 0 {
            // A conditional model: the class count, and the names the labels stand for.
            meta.insert("classes".to_string(), self.cfg.classes.to_string());
            if !self.progress.class_names.is_empty() {
                let names = serde_json::to_string(&self.progress.class_names)
                    .map_err(|e| Error::Config(format!("cannot serialise class names: {e}")))?;
                meta.insert("class_names".to_string(), names);
            }
        }
        if !self.cfg.res_blocks.is_empty() {
            meta.insert("res_blocks".to_string(), list(&self.cfg.res_blocks));
        }
        let mut image = self.progress.image;
        if let Some(k) = &self.cfg.kl {
            // An AutoencoderKL: diffusers' config, and the images it was built for.
            meta.insert("arch".to_string(), KL_ARCH.to_string());
            meta.insert("kl_config".to_string(), k.config.to_json().to_string());
            image = k.image;
        }
        if let Some(c) = &self.cfg.conv {
            // A conv model's layers depend on the image's shape: always recorded.
            meta.insert("conv".to_string(), list(&c.widths));
            image = c.image;
        }
        let [c, r, w] = image;
        if c > 0 {
            meta.insert("channels".to_string(), c.to_string());
            meta.insert("image_rows".to_string(), r.to_string());
            meta.insert("image_cols".to_string(), w.to_string());
        }
        if !self.progress.data_dir.is_empty() {
            meta.insert("data_dir".to_string(), self.progress.data_dir.clone());
        }
        if self.progress.test_fraction > 0.0 {
            meta.insert(
                "test_fraction".to_string(),
                self.progress.test_fraction.to_string(),
            );
            meta.insert(
                "split_seed".to_string(),
                self.progress.split_seed.to_string(),
            );
        }
        if with_state {
            let p = &self.progress;
            meta.insert("epoch".to_string(), p.epoch.to_string());
            meta.insert("step_in_epoch".to_string(), p.step_in_epoch.to_string());
            meta.insert("seed".to_string(), p.seed.to_string());
            meta.insert("batch_size".to_string(), p.batch_size.to_string());
            meta.insert("train_len".to_string(), p.train_len.to_string());
            if let Some(s) = p.kl_warmup_steps {
                meta.insert("kl_warmup_steps".to_string(), s.to_string());
            }
            if let Some(o) = &self.optimizer {
                let c = &o.config;
                for (k, v) in [
                    ("optimizer", c.kind.name().to_string()),
                    ("step", o.steps.to_string()),
                    ("lr", c.lr.to_string()),
                    ("beta1", c.beta1.to_string()),
                    ("beta2", c.beta2.to_string()),
                    ("eps", c.eps.to_string()),
                    ("weight_decay", c.weight_decay.to_string()),
                    ("momentum", c.momentum.to_string()),
                    ("nesterov", c.nesterov.to_string()),
                    ("lr_schedule", c.schedule.shape.name().to_string()),
                    ("warmup_steps", c.schedule.warmup_steps.to_string()),
                    ("total_steps", c.schedule.total_steps.to_string()),
                ] {
                    meta.insert(k.to_string(), v);
                }
                if let Some(x) = c.clip_grad_norm {
                    meta.insert("clip_grad_norm".to_string(), x.to_string());
                }
                for spec in &layout.specs {
                    for (name, arena) in c.state_names().iter().zip(&o.state) {
                        owned.push((
                            format!("optimizer.{name}.{}", spec.name),
                            spec.shape.clone(),
                            tensor_bytes(arena, spec),
                        ));
                    }
                }
                owned.push((
                    "trainer.loss_accumulator".to_string(),
                    vec![o.loss_accumulator.len()],
                    bytemuck::cast_slice(&o.loss_accumulator).to_vec(),
                ));
            }
        }
        serialize_f32(&owned, meta, "checkpoint")
    }

    /// Write the full checkpoint (weights, optimizer state, progress) atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.serialize(true)?)
    }

    /// Write the weights alone, as a PyTorch state_dict, atomically.
    pub fn save_state_dict(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.serialize(false)?)
    }

    /// Write an AutoencoderKL as diffusers' model folder into `dir`: `config.json` (its config,
    /// `sample_size` the trained images' side) and `diffusion_pytorch_model.safetensors` (every
    /// tensor under diffusers' name; a learned σ is the engine's, not diffusers', and stays out),
    /// the files `save_pretrained` writes, so `AutoencoderKL.from_pretrained(dir)` loads them.
    pub fn save_diffusers(&self, dir: &Path) -> Result<()> {
        let Some(k) = &self.cfg.kl else {
            return Err(Error::Config(format!(
                "a {} model is not an AutoencoderKL: diffusers has no folder for it",
                self.cfg.describe()
            )));
        };
        let layout = self.layout();
        let mut owned = Vec::new();
        for spec in layout.specs.iter().filter(|s| s.name != "log_sigma") {
            owned.push((
                spec.name.clone(),
                spec.shape.clone(),
                tensor_bytes(&self.params, spec),
            ));
        }
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        let weights = serialize_f32(&owned, meta, "the diffusers weights")?;
        let mut config = k.config.clone();
        config.sample_size = k.image[1];
        let mut json = config.to_json();
        json["_diffusers_version"] = serde_json::json!(DIFFUSERS_VERSION);
        let text = serde_json::to_string_pretty(&json)
            .map_err(|e| Error::Config(format!("cannot serialise config.json: {e}")))?;
        // As save_pretrained, the folder is made if it is not there.
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        write_atomic(&dir.join(DIFFUSERS_WEIGHTS), &weights)?;
        write_atomic(&dir.join(DIFFUSERS_CONFIG), format!("{text}\n").as_bytes())
    }

    /// Read diffusers' AutoencoderKL folder `dir` (`config.json` and
    /// `diffusion_pytorch_model.safetensors`, f32, f16 or bf16): the model its config builds, on
    /// images of its `sample_size`, with a learned σ starting at 1 (diffusers has none). Returns
    /// it with the names of the tensors the model does not use (a VAE's training extras, such as
    /// an LPIPS or discriminator's), which are ignored.
    pub fn load_diffusers(dir: &Path) -> Result<(Checkpoint, Vec<String>)> {
        let config_path = dir.join(DIFFUSERS_CONFIG);
        let text = crate::files::read_bounded(&config_path, 1 << 20, "diffusers config")?;
        let value: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| data_err(&config_path, format!("not JSON: {e}")))?;
        let source = config_path.display().to_string();
        let config = KlConfig::from_json(&value, &source)?;
        let image = [config.in_channels, config.sample_size, config.sample_size];
        let cfg = VaeConfig::autoencoder_kl(config, image);
        cfg.validate()
            .map_err(|e| data_err(&config_path, e.to_string()))?;
        let weights_path = dir.join(DIFFUSERS_WEIGHTS);
        let bytes = crate::files::read_bounded(&weights_path, MAX_FILE_BYTES, "diffusers weights")?;
        refuse_duplicate_names(&bytes, &weights_path)?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| {
            data_err(
                &weights_path,
                format!("not a readable safetensors file: {e}"),
            )
        })?;
        let layout = ParamLayout::new(&cfg);
        let mut params = layout.init(0);
        for spec in layout.specs.iter().filter(|s| s.name != "log_sigma") {
            let t = st.tensor(&spec.name).map_err(|_| {
                data_err(
                    &weights_path,
                    format!(
                        "missing tensor '{}', which the config's {} needs",
                        spec.name,
                        cfg.describe()
                    ),
                )
            })?;
            if t.shape() != spec.shape.as_slice() {
                return Err(data_err(
                    &weights_path,
                    format!(
                        "tensor '{}' has shape {:?}; the config builds {:?}",
                        spec.name,
                        t.shape(),
                        spec.shape
                    ),
                ));
            }
            let values: Vec<f32> = match t.dtype() {
                Dtype::F32 => le_f32s(t.data()).collect(),
                Dtype::F16 => (t.data().chunks_exact(2))
                    .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                    .collect(),
                Dtype::BF16 => (t.data().chunks_exact(2))
                    .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
                    .collect(),
                d => {
                    return Err(data_err(
                        &weights_path,
                        format!("tensor '{}' is {d:?}; f32, f16 or bf16 are read", spec.name),
                    ));
                }
            };
            spec.write(&mut params, &values);
        }
        let ignored: Vec<String> = (st.names().into_iter())
            .filter(|n| layout.get(n).is_none())
            .map(|n| n.to_string())
            .collect();
        let ckpt = Checkpoint {
            cfg,
            params,
            optimizer: None,
            progress: Progress {
                image,
                ..Progress::default()
            },
            activation_recorded: true,
        };
        ckpt.check_values(&weights_path, &layout)?;
        Ok((ckpt, ignored))
    }

    /// Read a checkpoint or a plain state_dict. Sizes come from the metadata when present, else from
    /// the tensor shapes; every model tensor must be present, f32, with the shape the sizes imply.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes = crate::files::read_bounded(path, MAX_FILE_BYTES, "checkpoint")?;
        Self::from_bytes(&bytes, path)
    }

    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Checkpoint> {
        let file = FileReader::open(bytes, path)?;
        let (cfg, activation_recorded) = file.architecture()?;
        cfg.validate().map_err(|e| file.err(e.to_string()))?;
        let layout = ParamLayout::new(&cfg);
        let params = file.arena(&layout, "", &cfg)?;
        let optimizer = file.optimizer_state(&layout, &cfg)?;
        let progress = file.progress(&cfg)?;
        let ckpt = Checkpoint {
            cfg,
            params,
            optimizer,
            progress,
            activation_recorded,
        };
        ckpt.check_values(path, &layout)?;
        Ok(ckpt)
    }

    /// Refuse values no training run writes: non-finite weights or moments, weights past
    /// [`MAX_PARAM_MAGNITUDE`], a negative second moment, Adam settings out of range, progress
    /// counters past any real run. Each message names the tensor (and first bad index) or
    /// metadata key.
    fn check_values(&self, path: &Path, layout: &ParamLayout) -> Result<()> {
        let scan = |arena: &[f32], prefix: &str, ok: fn(f32) -> bool, what: &str| {
            scan_arena(layout, path, arena, prefix, ok, what)
        };
        scan(&self.params, "", f32::is_finite, "a non-finite value")?;
        // Finite but absurd: such weights overflow the first products (exp of a log-variance
        // past 88 is infinite in f32), so pictures would be blank and training diverge at once.
        scan(
            &self.params,
            "",
            |v| v.abs() <= MAX_PARAM_MAGNITUDE,
            "a value past ±1e6",
        )?;
        if let Some(o) = &self.optimizer {
            check_optimizer(o, path, layout)?;
        }
        let p = &self.progress;
        for (key, v, max) in [
            ("epoch", p.epoch as u64, MAX_EPOCHS),
            ("step_in_epoch", p.step_in_epoch as u64, MAX_STEPS),
            ("batch_size", p.batch_size as u64, MAX_STEPS),
            ("train_len", p.train_len as u64, MAX_STEPS),
        ] {
            if v > max {
                return Err(data_err(
                    path,
                    format!("metadata '{key}' = {v} is out of range (at most {max})"),
                ));
            }
        }
        let [c, r, w] = p.image;
        if c > 0 && c.checked_mul(r).and_then(|v| v.checked_mul(w)) != Some(self.cfg.input) {
            return Err(data_err(
                path,
                format!(
                    "metadata says images of {c} channels, {r}x{w}, but the model takes {} inputs",
                    self.cfg.input
                ),
            ));
        }
        if !(0.0..1.0).contains(&p.test_fraction) {
            return Err(data_err(
                path,
                format!(
                    "metadata 'test_fraction' = {} is out of range (0 ≤ f < 1)",
                    p.test_fraction
                ),
            ));
        }
        if p.step_in_epoch > 0 && p.batch_size == 0 {
            return Err(data_err(
                path,
                "metadata 'step_in_epoch' is set but 'batch_size' is missing",
            ));
        }
        Ok(())
    }
}

/// Refuse a value of `arena` that is not `ok`, naming its tensor (`prefix` + the layout's name)
/// and first bad index.
fn scan_arena(
    layout: &ParamLayout,
    path: &Path,
    arena: &[f32],
    prefix: &str,
    ok: fn(f32) -> bool,
    what: &str,
) -> Result<()> {
    for spec in &layout.specs {
        let t = spec.read(arena);
        if let Some(i) = t.iter().position(|&v| !ok(v)) {
            return Err(data_err(
                path,
                format!(
                    "tensor '{prefix}{}' holds {what} ({}) at index {i}: the file is damaged or \
                     comes from a diverged run; use an earlier checkpoint",
                    spec.name, t[i]
                ),
            ));
        }
    }
    Ok(())
}

/// An optimizer state no run writes: non-finite moments, a negative second moment, settings
/// out of range, a step count past the noise counter, a malformed loss accumulator.
fn check_optimizer(o: &OptimizerState, path: &Path, layout: &ParamLayout) -> Result<()> {
    let scan = |arena: &[f32], prefix: &str, ok: fn(f32) -> bool, what: &str| {
        scan_arena(layout, path, arena, prefix, ok, what)
    };
    for (name, arena) in o.config.state_names().iter().zip(&o.state) {
        match *name {
            "exp_avg_sq" => scan(
                arena,
                "optimizer.exp_avg_sq.",
                |v| v.is_finite() && v >= 0.0,
                "a negative or non-finite value",
            )?,
            _ => scan(
                arena,
                &format!("optimizer.{name}."),
                f32::is_finite,
                "a non-finite value",
            )?,
        }
    }
    let c = &o.config;
    for (key, v, ok, range) in [
        ("lr", c.lr, c.lr.is_finite() && c.lr > 0.0, "0 < lr"),
        (
            "beta1",
            c.beta1,
            (0.0..1.0).contains(&c.beta1),
            "0 ≤ beta1 < 1",
        ),
        (
            "beta2",
            c.beta2,
            (0.0..1.0).contains(&c.beta2),
            "0 ≤ beta2 < 1",
        ),
        ("eps", c.eps, c.eps > 0.0 && c.eps <= 1.0, "0 < eps ≤ 1"),
        (
            "weight_decay",
            c.weight_decay,
            c.weight_decay.is_finite() && c.weight_decay >= 0.0,
            "0 ≤ weight_decay < ∞",
        ),
        (
            "momentum",
            c.momentum,
            (0.0..1.0).contains(&c.momentum),
            "0 ≤ momentum < 1",
        ),
        (
            "clip_grad_norm",
            c.clip_grad_norm.unwrap_or(1.0),
            c.clip_grad_norm.is_none_or(|x| x.is_finite() && x > 0.0),
            "0 < clip_grad_norm < ∞",
        ),
    ] {
        if !ok {
            return Err(data_err(
                path,
                format!(
                    "metadata '{key}' = {v} is out of range: {} needs {range}",
                    c.kind
                ),
            ));
        }
    }
    // The noise counter of a training step is 32 bits wide.
    if o.steps > u32::MAX as u64 / 2 {
        return Err(data_err(
            path,
            format!(
                "metadata 'step' = {} is out of range (at most {})",
                o.steps,
                u32::MAX / 2
            ),
        ));
    }
    let acc = &o.loss_accumulator;
    if acc.len() != LossSlots::LEN || acc.iter().any(|v| !v.is_finite()) {
        return Err(data_err(
            path,
            format!(
                "trainer.loss_accumulator must hold {} finite values, found {:?}",
                LossSlots::LEN,
                acc
            ),
        ));
    }
    Ok(())
}

/// The largest checkpoint file: three arenas (weights and two moments) of the largest model.
pub const MAX_FILE_BYTES: u64 = 3 * crate::model::config::MAX_PARAMS * 4 + (64 << 20);
/// Bounds on a checkpoint's progress counters: far past any real run, short of any overflow.
const MAX_EPOCHS: u64 = 1 << 24;
const MAX_STEPS: u64 = 1 << 32;

/// A safetensors header naming a tensor twice is refused outright (the reader would otherwise
/// keep one of them, and which one could differ from run to run).
fn refuse_duplicate_names(bytes: &[u8], path: &Path) -> Result<()> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut dup = None;
            while let Some(k) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if !seen.insert(k.clone()) && dup.is_none() {
                    dup = Some(k);
                }
            }
            Ok(dup)
        }
    }
    let Some(len) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    else {
        return Ok(()); // too short: the safetensors reader says so
    };
    let Some(header) = usize::try_from(len)
        .ok()
        .and_then(|l| bytes.get(8..8usize.checked_add(l)?))
    else {
        return Ok(());
    };
    let mut de = serde_json::Deserializer::from_slice(header);
    if let Ok(Some(name)) = (&mut de).deserialize_map(Keys) {
        return Err(data_err(
            path,
            format!("the header names tensor '{name}' twice: the file is damaged"),
        ));
    }
    Ok(())
}

/// Little-endian f32 values of a tensor's bytes, copied through bytes because the file's data need
/// not be 4-byte aligned.
fn le_f32s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// A safetensors file of f32 tensors `(name, shape, little-endian bytes)` with metadata `meta`
/// (`what` names it in an error).
pub(crate) fn serialize_f32(
    tensors: &[(String, Vec<usize>, Vec<u8>)],
    meta: HashMap<String, String>,
    what: &str,
) -> Result<Vec<u8>> {
    let ser = |e| Error::Config(format!("cannot serialise {what}: {e}"));
    let views = (tensors.iter())
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes).map(|v| (name.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(ser)?;
    safetensors::tensor::serialize(views, Some(meta)).map_err(ser)
}

/// diffusers' model folder: its config and weights (what `save_pretrained` writes).
pub const DIFFUSERS_CONFIG: &str = "config.json";
pub const DIFFUSERS_WEIGHTS: &str = "diffusion_pytorch_model.safetensors";
/// The diffusers release whose folders these are written as (and checked against).
const DIFFUSERS_VERSION: &str = "0.42.1";

/// An IEEE half-precision value as f32 (diffusers' fp16 weights).
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        // Subnormal: frac · 2^-24.
        (0, f) => {
            let v = f as f32 * 2f32.powi(-24);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// A safetensors file read as a checkpoint, step by step ([`Checkpoint::from_bytes`]): its
/// metadata, then the architecture (recorded, else inferred from the tensors' names and shapes),
/// then the arenas and the optimizer's state, then the progress. Every error names the file.
struct FileReader<'a> {
    st: SafeTensors<'a>,
    meta: HashMap<String, String>,
    path: &'a Path,
}

/// The dense layers' weight shapes of each side, and the convolutions' widths and the images'
/// shape where the model has them, as the tensors show them.
type Sides = (
    Vec<Vec<usize>>,
    Vec<Vec<usize>>,
    Option<(Vec<usize>, [usize; 3])>,
);

impl<'a> FileReader<'a> {
    fn open(bytes: &'a [u8], path: &'a Path) -> Result<Self> {
        refuse_duplicate_names(bytes, path)?;
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| data_err(path, format!("not a readable safetensors file: {e}")))?;
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| data_err(path, format!("not a readable safetensors file: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        Ok(FileReader { st, meta, path })
    }

    fn err(&self, detail: impl Into<String>) -> Error {
        data_err(self.path, detail)
    }

    /// A tensor by our name. One hidden layer a side is saved under the notebook's names; a
    /// PyTorch module built with one-layer Sequentials names the same tensors `encoder.0` /
    /// `decoder.0`: either is read.
    fn tensor(&self, name: &str) -> Result<TensorView<'_>> {
        let alias = [("linear_enc.", "encoder.0."), ("linear_dec.", "decoder.0.")]
            .iter()
            .find_map(|(ours, seq)| {
                let at = name.find(ours)?;
                Some(format!("{}{seq}{}", &name[..at], &name[at + ours.len()..]))
            });
        self.st
            .tensor(name)
            .or_else(|e| alias.map_or(Err(e), |a| self.st.tensor(&a)))
            .map_err(|_| {
                self.err(format!(
                    "missing tensor '{name}' (tensors present: {})",
                    sorted_names(&self.st)
                ))
            })
    }

    fn has(&self, name: &str) -> bool {
        self.st.tensor(name).is_ok()
    }

    fn shape_of(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.tensor(name)?.shape().to_vec())
    }

    fn four_d(&self, name: &str) -> bool {
        self.st.tensor(name).is_ok_and(|t| t.shape().len() == 4)
    }

    fn two_d(&self, name: &str) -> Option<TensorView<'_>> {
        self.st.tensor(name).ok().filter(|t| t.shape().len() == 2)
    }

    /// A Linear layer's weight shape, `[out, in]`.
    fn weight_shape(&self, name: &str) -> Result<Vec<usize>> {
        let s = self.shape_of(name)?;
        if s.len() != 2 {
            return Err(self.err(format!(
                "tensor '{name}' has shape {s:?}: a Linear weight is 2-D"
            )));
        }
        Ok(s)
    }

    fn num(&self, key: &str) -> Result<Option<u64>> {
        meta_value::<u64>(&self.meta, key, self.path)
    }

    fn value<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>> {
        meta_value::<T>(&self.meta, key, self.path)
    }

    /// Widths from metadata `key`, else those `found` in the tensors.
    fn widths(&self, key: &str, found: Vec<usize>, conv_model: bool) -> Result<Vec<usize>> {
        match self.meta.get(key) {
            None => Ok(found),
            // A conv model may have no dense hidden layers.
            Some(v) if conv_model && v.trim().is_empty() => Ok(Vec::new()),
            Some(v) => super::config::parse_widths(v)
                .map_err(|e| self.err(format!("metadata '{key}': {e}"))),
        }
    }

    /// The model the file holds, and whether its activation was recorded: an AutoencoderKL's
    /// from its recorded config; the others' from the metadata, else from the tensors' names
    /// and shapes (a PyTorch state_dict: the notebook's `linear_enc`/`linear_dec`, or
    /// `encoder.{0,2,…}` and `decoder.{0,2,…}` Sequentials).
    fn architecture(&self) -> Result<(VaeConfig, bool)> {
        if let Some(cfg) = kl_config(&self.meta, self.path)? {
            return Ok((cfg, true));
        }
        // Residual blocks in the tensors: the `enc_blocks.{j}` modules' second layers, fc2's
        // weight `[w, w]` (dense) or conv2's `[w, w, 3, 3]` (conv).
        let found_blocks: Vec<usize> = (0..1024)
            .map_while(|j| {
                let b = format!("enc_blocks.{j}");
                self.two_d(&format!("{b}.fc2.weight"))
                    .or_else(|| self.st.tensor(&format!("{b}.conv2.weight")).ok())
            })
            .map(|t| t.shape()[0])
            .collect();
        // A conv model (metadata 'conv', or a 4-D first encoder weight) names its layers by
        // their nn.Sequential indices around a Flatten and an Unflatten (see `ParamLayout`).
        let (enc, dec, conv) = if self.meta.contains_key("conv") || self.four_d("encoder.0.weight")
        {
            self.conv_sides(&found_blocks)?
        } else {
            (
                self.dense_side("linear_enc", "encoder")?,
                self.dense_side("linear_dec", "decoder")?,
                None,
            )
        };
        let mu = self.weight_shape("enc_mu.weight")?;
        let conv_model = conv.is_some();
        let res_blocks = self.widths("res_blocks", found_blocks, conv_model)?;
        let conv = match conv {
            None => None,
            Some((found, image)) => Some(self.conv_net(found, image, &res_blocks)?),
        };
        let activation = match self.meta.get("activation") {
            None => None,
            Some(v) => Some(crate::ops::Act::hidden_from_name(v).ok_or_else(|| {
                self.err(format!(
                    "metadata 'activation' = '{v}' is not one of relu, tanh"
                ))
            })?),
        };
        // A conditional model's first layers take the one-hot label too: the decoder's first
        // weight is [g0, K + classes], so a bare state_dict says how many.
        let classes = match self.num("classes")? {
            Some(c) => c as usize,
            None if conv.is_none() => dec.first().map_or(0, |s| s[1].saturating_sub(mu[0])),
            None => 0,
        };
        let found_input = match &conv {
            Some(c) => c.image.iter().product(),
            None => enc[0][1].saturating_sub(classes),
        };
        let cfg = VaeConfig {
            res_blocks,
            input: self.num("input")?.map_or(found_input, |v| v as usize),
            hidden: self.widths("hidden", enc.iter().map(|s| s[0]).collect(), conv_model)?,
            decoder_hidden: self.widths(
                "decoder_hidden",
                dec.iter().map(|s| s[0]).collect(),
                conv_model,
            )?,
            latent: self.num("latent")?.map_or(mu[0], |v| v as usize),
            samples: self.num("samples")?.map_or(1, |v| v as usize),
            activation: activation.unwrap_or(crate::ops::Act::Relu),
            conv,
            likelihood: self.likelihood()?,
            beta: self.value::<f64>("beta")?.unwrap_or(1.0),
            kl_warmup: self.value::<f64>("kl_warmup")?.unwrap_or(0.0),
            objective: match self.meta.get("objective") {
                None => super::config::Objective::Elbo,
                Some(o) => super::config::Objective::parse(o)
                    .map_err(|e| self.err(format!("metadata 'objective': {e}")))?,
            },
            classes,
            kl: None,
        };
        Ok((cfg, activation.is_some()))
    }

    /// A dense side's weight shapes: the notebook's one layer (`{notebook}.weight`), else the
    /// `{prefix}.{0,2,…}` Sequential's.
    fn dense_side(&self, notebook: &str, prefix: &str) -> Result<Vec<Vec<usize>>> {
        if self.has(&format!("{notebook}.weight")) {
            return Ok(vec![self.weight_shape(&format!("{notebook}.weight"))?]);
        }
        let mut v = Vec::new();
        // Count every layer there is (capped far past the limit), so the error gives the file's
        // real depth.
        while v.len() < 1024 {
            let name = format!("{prefix}.{}.weight", 2 * v.len());
            if !self.has(&name) {
                break;
            }
            v.push(self.weight_shape(&name)?);
        }
        if v.is_empty() {
            // Names the tensor the notebook's layout expects.
            self.tensor(&format!("{notebook}.weight"))?;
        }
        Ok(v)
    }

    /// A conv model's sides: the convolutions' widths and input channels, the dense layers
    /// after them, and the image side the features imply.
    fn conv_sides(&self, found_blocks: &[usize]) -> Result<Sides> {
        let mut widths = Vec::new();
        let mut channels = 0;
        while widths.len() < 1024 && self.four_d(&format!("encoder.{}.weight", 2 * widths.len())) {
            let s = self.shape_of(&format!("encoder.{}.weight", 2 * widths.len()))?;
            if widths.is_empty() {
                channels = s[1];
            }
            widths.push(s[0]);
        }
        let n = widths.len();
        let dense = |prefix: &str, first: usize| -> Vec<Vec<usize>> {
            (0..1024)
                .map_while(|j| self.two_d(&format!("{prefix}.{}.weight", first + 2 * j)))
                .map(|t| t.shape().to_vec())
                .collect()
        };
        let enc = dense("encoder", 2 * n + 1);
        let mut dec = dense("decoder", 0);
        // The decoder's last dense layer maps to the last conv's features.
        dec.pop();
        // The features the convolutions hand the dense layers: C_last · side², side = S / 2^n.
        let features = match enc.first() {
            Some(s) => s[1],
            None => self.weight_shape("enc_mu.weight")?[1],
        };
        // The channels the dense layers see: the last residual block's, or the last
        // convolution's.
        let c_last = found_blocks
            .last()
            .or(widths.last())
            .copied()
            .unwrap_or(1)
            .max(1);
        let cells = features / c_last;
        let side = ((cells as f64).sqrt().round() as usize) << n.min(32);
        Ok((enc, dec, Some((widths, [channels, side, side]))))
    }

    /// The conv layers, their widths and image shape from the metadata where recorded, which
    /// must be the shape the tensors were trained on: the dense layers after the convolutions
    /// take c_last · (rows/2^n) · (cols/2^n) features.
    fn conv_net(
        &self,
        found: Vec<usize>,
        image: [usize; 3],
        res_blocks: &[usize],
    ) -> Result<super::config::ConvNet> {
        let dim = |key: &str, found: usize| -> Result<usize> {
            Ok(self.num(key)?.map_or(found, |v| v as usize))
        };
        let net = super::config::ConvNet {
            widths: self.widths("conv", found, true)?,
            image: [
                dim("channels", image[0])?,
                dim("image_rows", image[1])?,
                dim("image_cols", image[2])?,
            ],
        };
        let heads_in = self.weight_shape("enc_mu.weight")?[1];
        let dense_in = self
            .two_d(&format!("encoder.{}.weight", 2 * net.widths.len() + 1))
            .map_or(heads_in, |t| t.shape()[1]);
        let n = net.widths.len().min(32);
        let [_, r, c] = net.image;
        // The channels the dense layers see: the last residual block's, or the last
        // convolution's.
        let c_last = res_blocks
            .last()
            .or(net.widths.last())
            .copied()
            .unwrap_or(1);
        let fits = r % (1 << n) == 0 && c % (1 << n) == 0;
        if !fits || c_last * (r >> n) * (c >> n) != dense_in {
            return Err(self.err(format!(
                "metadata 'image_rows' = {r}, 'image_cols' = {c} contradict the tensors: after \
                 {} conv layers the dense layers take {dense_in} features, not {c_last} channels \
                 of {}x{}; the file is inconsistent",
                net.widths.len(),
                r >> n,
                c >> n
            )));
        }
        Ok(net)
    }

    /// The likelihood: metadata, else a `log_sigma` tensor says a learned-σ Gaussian (a bare
    /// state_dict cannot tell a continuous Bernoulli from a Bernoulli: the flag decides). A
    /// learned σ is a tensor: metadata that says otherwise contradicts the file.
    fn likelihood(&self) -> Result<crate::model::Likelihood> {
        let sigma = self.value::<f32>("sigma")?;
        let learned = self.has("log_sigma");
        let likelihood = match self.meta.get("likelihood") {
            Some(name) => crate::model::Likelihood::parse(name, sigma)
                .map_err(|e| self.err(format!("metadata 'likelihood': {e}")))?,
            None if learned => crate::model::Likelihood::Gaussian { sigma: None },
            None => crate::model::Likelihood::Bernoulli,
        };
        if learned && !likelihood.learns_scale() {
            return Err(self.err(format!(
                "holds a learned σ (tensor 'log_sigma') but its metadata says the likelihood is \
                 {}: the file is inconsistent (a Gaussian with a learned σ has no 'sigma' \
                 metadata)",
                likelihood.describe()
            )));
        }
        Ok(likelihood)
    }

    /// An arena of `layout` from the tensors named `{prefix}{name}`. Every tensor is checked
    /// before allocating: the arena's size then follows from data that is really in the file,
    /// never from a header alone.
    fn arena(&self, layout: &ParamLayout, prefix: &str, cfg: &VaeConfig) -> Result<Vec<f32>> {
        let mut views = Vec::with_capacity(layout.specs.len());
        for spec in &layout.specs {
            let name = format!("{prefix}{}", spec.name);
            let t = self.tensor(&name)?;
            if t.dtype() != Dtype::F32 {
                return Err(self.err(format!("tensor '{name}' is {:?}, expected F32", t.dtype())));
            }
            if t.shape() != spec.shape.as_slice() {
                return Err(self.err(format!(
                    "tensor '{name}' has shape {:?}, expected {:?} for a {} model",
                    t.shape(),
                    spec.shape,
                    cfg.describe()
                )));
            }
            views.push(t);
        }
        let mut arena = vec![0.0f32; layout.len];
        for (spec, t) in layout.specs.iter().zip(&views) {
            let values: Vec<f32> = le_f32s(t.data()).collect();
            spec.write(&mut arena, &values);
        }
        Ok(arena)
    }

    /// A training checkpoint's optimizer state, or `None` for a plain state_dict. A training
    /// checkpoint has the loss accumulator (files from before SGD existed: Adam's moments, and
    /// the step as 'adam_steps').
    fn optimizer_state(
        &self,
        layout: &ParamLayout,
        cfg: &VaeConfig,
    ) -> Result<Option<OptimizerState>> {
        let has_state = self.has("trainer.loss_accumulator")
            || self
                .tensor(&format!("optimizer.exp_avg.{}", layout.specs[0].name))
                .is_ok();
        if !has_state {
            return Ok(None);
        }
        let kind = match self.meta.get("optimizer") {
            None => OptimizerKind::Adam,
            Some(k) => OptimizerKind::parse(k).ok_or_else(|| {
                self.err(format!(
                    "metadata 'optimizer' = '{k}' is not one of adam, adamw, sgd"
                ))
            })?,
        };
        let d = OptimizerConfig::of(kind);
        let f = |key: &str, default: f32| -> Result<f32> {
            Ok(self.value::<f32>(key)?.unwrap_or(default))
        };
        let shape = match self.meta.get("lr_schedule") {
            None => LrShape::Constant,
            Some(v) => LrShape::parse(v).ok_or_else(|| {
                self.err(format!(
                    "metadata 'lr_schedule' = '{v}' is not one of constant, cosine"
                ))
            })?,
        };
        let config = OptimizerConfig {
            kind,
            lr: f("lr", d.lr)?,
            beta1: f("beta1", d.beta1)?,
            beta2: f("beta2", d.beta2)?,
            eps: f("eps", d.eps)?,
            weight_decay: f("weight_decay", d.weight_decay)?,
            momentum: f("momentum", d.momentum)?,
            nesterov: self.value::<bool>("nesterov")?.unwrap_or(false),
            schedule: LrSchedule {
                shape,
                warmup_steps: self.num("warmup_steps")?.unwrap_or(0),
                total_steps: self.num("total_steps")?.unwrap_or(0),
            },
            clip_grad_norm: self.value::<f32>("clip_grad_norm")?,
        };
        let acc = self.tensor("trainer.loss_accumulator")?;
        if acc.dtype() != Dtype::F32 {
            return Err(self.err("trainer.loss_accumulator must be F32"));
        }
        let state = (config.state_names().iter())
            .map(|name| self.arena(layout, &format!("optimizer.{name}."), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(OptimizerState {
            config,
            steps: match self.num("step")? {
                Some(s) => Some(s),
                None => self.num("adam_steps")?,
            }
            .unwrap_or(0),
            state,
            loss_accumulator: upgrade_accumulator(le_f32s(acc.data()).collect()),
        }))
    }

    /// Where training stood, from the metadata (zeros and empties where a file has none).
    fn progress(&self, cfg: &VaeConfig) -> Result<Progress> {
        let n = |key: &str| -> Result<usize> { Ok(self.num(key)?.unwrap_or(0) as usize) };
        let progress = Progress {
            epoch: n("epoch")?,
            step_in_epoch: n("step_in_epoch")?,
            seed: self.num("seed")?.unwrap_or(0),
            batch_size: n("batch_size")?,
            train_len: n("train_len")?,
            image: [n("channels")?, n("image_rows")?, n("image_cols")?],
            test_fraction: self.value::<f64>("test_fraction")?.unwrap_or(0.0),
            split_seed: self.num("split_seed")?.unwrap_or(0),
            kl_warmup_steps: self
                .value::<f64>("kl_warmup_steps")?
                .filter(|s| s.is_finite() && *s >= 0.0),
            data_dir: self.meta.get("data_dir").cloned().unwrap_or_default(),
            class_names: match self.meta.get("class_names") {
                None => Vec::new(),
                Some(v) => serde_json::from_str::<Vec<String>>(v).map_err(|e| {
                    self.err(format!(
                        "metadata 'class_names' is not a JSON list of names: {e}"
                    ))
                })?,
            },
        };
        if !progress.class_names.is_empty() && progress.class_names.len() != cfg.classes {
            return Err(self.err(format!(
                "metadata 'class_names' lists {} names for a model of {} classes",
                progress.class_names.len(),
                cfg.classes
            )));
        }
        Ok(progress)
    }
}

/// The `arch` metadata of an AutoencoderKL's files.
pub const KL_ARCH: &str = "autoencoder-kl";

/// An AutoencoderKL's configuration from a file's metadata (`arch` = `autoencoder-kl`: its
/// `kl_config`, the images' shape, the likelihood and β); `None` for the other models.
fn kl_config(meta: &HashMap<String, String>, path: &Path) -> Result<Option<VaeConfig>> {
    if meta.get("arch").map(String::as_str) != Some(KL_ARCH) {
        return Ok(None);
    }
    let json = meta
        .get("kl_config")
        .ok_or_else(|| data_err(path, "an autoencoder-kl file without metadata 'kl_config'"))?;
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| data_err(path, format!("metadata 'kl_config' is not JSON: {e}")))?;
    let config = KlConfig::from_json(
        &value,
        &format!("{} (metadata 'kl_config')", path.display()),
    )?;
    let num = |key: &str| -> Result<usize> {
        meta_value::<usize>(meta, key, path)?.ok_or_else(|| {
            data_err(
                path,
                format!("an autoencoder-kl file without metadata '{key}'"),
            )
        })
    };
    let image = [num("channels")?, num("image_rows")?, num("image_cols")?];
    let mut cfg = VaeConfig::autoencoder_kl(config, image);
    let sigma = meta_value::<f32>(meta, "sigma", path)?;
    if let Some(name) = meta.get("likelihood") {
        cfg.likelihood = crate::model::Likelihood::parse(name, sigma)
            .map_err(|e| data_err(path, format!("metadata 'likelihood': {e}")))?
            .with_identity_mean();
    }
    cfg.beta = meta_value::<f64>(meta, "beta", path)?.unwrap_or(1.0);
    cfg.kl_warmup = meta_value::<f64>(meta, "kl_warmup", path)?.unwrap_or(0.0);
    cfg.samples = meta_value::<usize>(meta, "samples", path)?.unwrap_or(1);
    Ok(Some(cfg))
}

/// An accumulator of a checkpoint written before the weighted-KL and objective slots existed
/// (8 slots: β = 1 and the ELBO, so the weighted KL is the KL and the objective the -ELBO).
fn upgrade_accumulator(mut acc: Vec<f32>) -> Vec<f32> {
    if acc.len() == LossSlots::BATCH_KL_WEIGHTED {
        acc.push(acc[LossSlots::BATCH_KL]);
        acc.push(acc[LossSlots::EPOCH_KL]);
        acc.push(acc[LossSlots::BATCH_TOTAL]);
        acc.push(acc[LossSlots::EPOCH_TOTAL]);
    }
    acc
}

/// A metadata value parsed as `T`; absent is `None`, unparsable is an error naming key and value.
fn meta_value<T: std::str::FromStr>(
    meta: &HashMap<String, String>,
    key: &str,
    path: &Path,
) -> Result<Option<T>> {
    match meta.get(key) {
        None => Ok(None),
        Some(v) => v
            .parse::<T>()
            .map(Some)
            .map_err(|_| data_err(path, format!("metadata '{key}' = '{v}' is not a number"))),
    }
}

fn sorted_names(st: &SafeTensors<'_>) -> String {
    let mut names = st.names();
    names.sort_unstable();
    names.join(", ")
}
