//! Checkpoints as safetensors files.
//!
//! Model tensors carry exactly the names, shapes and layout of the notebook model's PyTorch
//! `state_dict` (`linear_enc.weight` [200, 784], …, all f32), so the weights move to PyTorch and back.
//! Two files are written:
//! - `model.safetensors`: the state_dict alone, for
//!   `model.load_state_dict(safetensors.torch.load_file(path))` (strict loading rejects extra keys);
//! - `checkpoint.safetensors`: the same tensors plus Adam's moments (`optimizer.exp_avg.<name>`,
//!   `optimizer.exp_avg_sq.<name>`), the loss accumulator of a half-done epoch, and metadata (sizes,
//!   Adam settings, step, epoch, seed), so `--resume` continues exactly where training stopped.
//!
//! Writes are atomic: a temporary file in the same directory, flushed to disk, then renamed over
//! the old one, so a crash never leaves a half-written checkpoint in place of a good one.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{Error, Result};
use crate::model::{ParamLayout, VaeConfig};
use crate::ops::AdamConfig;

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
}

/// Adam's state (PyTorch's `exp_avg`, `exp_avg_sq`, `step`), arenas in [`ParamLayout`] order.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState {
    pub config: AdamConfig,
    pub steps: u64,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    /// The trainer's loss accumulator (sums of the epoch in progress).
    pub loss_accumulator: Vec<f32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub cfg: VaeConfig,
    /// Parameter arena laid out by [`ParamLayout::new`] (padding 0).
    pub params: Vec<f32>,
    /// Absent in a plain state_dict (e.g. one saved from PyTorch).
    pub optimizer: Option<OptimizerState>,
    pub progress: Progress,
}

fn data_err(path: &Path, detail: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// One tensor of an arena as a safetensors view.
fn view<'a>(
    arena: &'a [f32],
    spec: &crate::model::ParamSpec,
) -> std::result::Result<TensorView<'a>, safetensors::SafeTensorError> {
    TensorView::new(
        Dtype::F32,
        spec.shape.clone(),
        bytemuck::cast_slice(&arena[spec.range()]),
    )
}

impl Checkpoint {
    fn layout(&self) -> ParamLayout {
        ParamLayout::new(&self.cfg)
    }

    fn serialize(&self, with_state: bool) -> Result<Vec<u8>> {
        let layout = self.layout();
        let mut tensors: Vec<(String, TensorView<'_>)> = Vec::new();
        let ser = |e| Error::Config(format!("cannot serialise checkpoint: {e}"));
        for spec in &layout.specs {
            tensors.push((
                spec.name.to_string(),
                view(&self.params, spec).map_err(ser)?,
            ));
        }
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), FORMAT.to_string());
        meta.insert("input".to_string(), self.cfg.input.to_string());
        meta.insert("hidden".to_string(), self.cfg.hidden.to_string());
        meta.insert("latent".to_string(), self.cfg.latent.to_string());
        meta.insert("samples".to_string(), self.cfg.samples.to_string());
        if with_state {
            let p = &self.progress;
            meta.insert("epoch".to_string(), p.epoch.to_string());
            meta.insert("step_in_epoch".to_string(), p.step_in_epoch.to_string());
            meta.insert("seed".to_string(), p.seed.to_string());
            meta.insert("batch_size".to_string(), p.batch_size.to_string());
            if let Some(o) = &self.optimizer {
                let c = &o.config;
                for (k, v) in [
                    ("adam_steps", o.steps.to_string()),
                    ("lr", c.lr.to_string()),
                    ("beta1", c.beta1.to_string()),
                    ("beta2", c.beta2.to_string()),
                    ("eps", c.eps.to_string()),
                    ("weight_decay", c.weight_decay.to_string()),
                ] {
                    meta.insert(k.to_string(), v);
                }
                for spec in &layout.specs {
                    tensors.push((
                        format!("optimizer.exp_avg.{}", spec.name),
                        view(&o.m, spec).map_err(ser)?,
                    ));
                    tensors.push((
                        format!("optimizer.exp_avg_sq.{}", spec.name),
                        view(&o.v, spec).map_err(ser)?,
                    ));
                }
                let acc = TensorView::new(
                    Dtype::F32,
                    vec![o.loss_accumulator.len()],
                    bytemuck::cast_slice(&o.loss_accumulator),
                )
                .map_err(ser)?;
                tensors.push(("trainer.loss_accumulator".to_string(), acc));
            }
        }
        safetensors::tensor::serialize(tensors, Some(meta)).map_err(ser)
    }

    /// Write the full checkpoint (weights, optimizer state, progress) atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.serialize(true)?)
    }

    /// Write the weights alone, as a PyTorch state_dict, atomically.
    pub fn save_state_dict(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.serialize(false)?)
    }

    /// Read a checkpoint or a plain state_dict. Sizes come from the metadata when present, else from
    /// the tensor shapes; every model tensor must be present, f32, with the shape the sizes imply.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Checkpoint> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| data_err(path, format!("not a readable safetensors file: {e}")))?;
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| data_err(path, format!("not a readable safetensors file: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |name: &str| -> Result<TensorView<'_>> {
            st.tensor(name).map_err(|_| {
                data_err(
                    path,
                    format!(
                        "missing tensor '{name}' (tensors present: {})",
                        sorted_names(&st)
                    ),
                )
            })
        };
        let shape_of = |name: &str| -> Result<Vec<usize>> { Ok(get(name)?.shape().to_vec()) };
        let meta_num = |key: &str| meta_value::<u64>(&meta, key, path);
        // Sizes: metadata first, else from the encoder and head shapes (a PyTorch state_dict).
        let enc = shape_of("linear_enc.weight")?;
        let mu = shape_of("enc_mu.weight")?;
        if enc.len() != 2 || mu.len() != 2 {
            return Err(data_err(
                path,
                format!("linear_enc.weight {enc:?} and enc_mu.weight {mu:?} must be 2-D"),
            ));
        }
        let cfg = VaeConfig {
            input: meta_num("input")?.map_or(enc[1], |v| v as usize),
            hidden: meta_num("hidden")?.map_or(enc[0], |v| v as usize),
            latent: meta_num("latent")?.map_or(mu[0], |v| v as usize),
            samples: meta_num("samples")?.map_or(1, |v| v as usize),
        };
        cfg.validate().map_err(|e| data_err(path, e.to_string()))?;
        let layout = ParamLayout::new(&cfg);
        let read_arena = |prefix: &str| -> Result<Vec<f32>> {
            // Check every tensor before allocating: the arena's size then follows from data that
            // is really in the file, never from a header alone.
            let mut views = Vec::with_capacity(layout.specs.len());
            for spec in &layout.specs {
                let name = format!("{prefix}{}", spec.name);
                let t = get(&name)?;
                if t.dtype() != Dtype::F32 {
                    return Err(data_err(
                        path,
                        format!("tensor '{name}' is {:?}, expected F32", t.dtype()),
                    ));
                }
                if t.shape() != spec.shape.as_slice() {
                    return Err(data_err(
                        path,
                        format!(
                            "tensor '{name}' has shape {:?}, expected {:?} for a {}-{}-{} model",
                            t.shape(),
                            spec.shape,
                            cfg.input,
                            cfg.hidden,
                            cfg.latent
                        ),
                    ));
                }
                views.push(t);
            }
            let mut arena = vec![0.0f32; layout.len];
            for (spec, t) in layout.specs.iter().zip(&views) {
                for (dst, v) in arena[spec.range()].iter_mut().zip(le_f32s(t.data())) {
                    *dst = v;
                }
            }
            Ok(arena)
        };
        let params = read_arena("")?;
        let has_state = st.tensor("optimizer.exp_avg.linear_enc.weight").is_ok();
        let optimizer = if has_state {
            let f = |key: &str, default: f32| -> Result<f32> {
                Ok(meta_value::<f32>(&meta, key, path)?.unwrap_or(default))
            };
            let d = AdamConfig::default();
            let acc = get("trainer.loss_accumulator")?;
            if acc.dtype() != Dtype::F32 {
                return Err(data_err(path, "trainer.loss_accumulator must be F32"));
            }
            Some(OptimizerState {
                config: AdamConfig {
                    lr: f("lr", d.lr)?,
                    beta1: f("beta1", d.beta1)?,
                    beta2: f("beta2", d.beta2)?,
                    eps: f("eps", d.eps)?,
                    weight_decay: f("weight_decay", d.weight_decay)?,
                },
                steps: meta_num("adam_steps")?.unwrap_or(0),
                m: read_arena("optimizer.exp_avg.")?,
                v: read_arena("optimizer.exp_avg_sq.")?,
                loss_accumulator: le_f32s(acc.data()).collect(),
            })
        } else {
            None
        };
        let progress = Progress {
            epoch: meta_num("epoch")?.unwrap_or(0) as usize,
            step_in_epoch: meta_num("step_in_epoch")?.unwrap_or(0) as usize,
            seed: meta_num("seed")?.unwrap_or(0),
            batch_size: meta_num("batch_size")?.unwrap_or(0) as usize,
        };
        Ok(Checkpoint {
            cfg,
            params,
            optimizer,
            progress,
        })
    }
}

/// Little-endian f32 values of a tensor's bytes, copied through bytes because the file's data need
/// not be 4-byte aligned.
fn le_f32s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
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

/// Write `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per process and call: two threads may write the same file (the autotune cache).
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp: PathBuf = dir.join(format!(".{file_name}.tmp-{}-{n}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))?;
        // Make the rename itself durable (best effort: not every platform opens directories).
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
