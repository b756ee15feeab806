//! What `encode` and `decode` share: the model they read (a diffusers folder or a checkpoint) and
//! the latents file (`latents` `[N, C, h, w]` for an AutoencoderKL, `[N, K]` otherwise).

use std::collections::HashMap;
use std::path::Path;

use super::out::note;
use crate::error::{Error, Result};
use crate::model::{Checkpoint, VaeConfig};

/// `--model`: a folder is diffusers' model folder (its unused tensors named), a file a checkpoint
/// or state_dict of the engine.
pub fn load_model(path: &Path) -> Result<Checkpoint> {
    if path.is_dir() {
        let (c, ignored) = Checkpoint::load_diffusers(path)?;
        if !ignored.is_empty() {
            note!(
                "{}: {} tensor(s) the model does not use are ignored: {}",
                path.display(),
                ignored.len(),
                ignored.join(", ")
            );
        }
        return Ok(c);
    }
    Checkpoint::load(path)
}

/// The shape of one image's latent: `[C, h, w]` for an AutoencoderKL, `[K]` otherwise.
pub fn latent_shape(cfg: &VaeConfig) -> Vec<usize> {
    match &cfg.kl {
        Some(k) => k.config.latent_image(k.image).to_vec(),
        None => vec![cfg.latent],
    }
}

/// diffusers' latent scaling: `(z − shift_factor)·scaling_factor` (`--scale`); (1, 0) for a model
/// without them.
pub fn scaling(cfg: &VaeConfig) -> (f32, f32) {
    let Some(k) = &cfg.kl else {
        return (1.0, 0.0);
    };
    let num = |key: &str, default: f64| {
        k.config
            .extra
            .get(key)
            .and_then(|v| v.as_f64())
            .unwrap_or(default) as f32
    };
    (num("scaling_factor", 1.0), num("shift_factor", 0.0))
}

/// The metadata key saying the latents were scaled (`decode` undoes it).
pub const SCALED: &str = "scaled";

/// Write `latents` (`[N, …shape]`) with their image names and whether they are scaled.
pub fn write_latents(
    path: &Path,
    latents: &[f32],
    shape: &[usize],
    names: &[String],
    scaled: bool,
) -> Result<()> {
    let tensor = (
        "latents".to_string(),
        shape.to_vec(),
        bytemuck::cast_slice(latents).to_vec(),
    );
    let files = serde_json::to_string(names)
        .map_err(|e| Error::Config(format!("cannot serialise the image names: {e}")))?;
    let meta = HashMap::from([
        ("images".to_string(), files),
        (SCALED.to_string(), scaled.to_string()),
    ]);
    let out = crate::model::checkpoint::serialize_f32(&[tensor], meta, "the latents")?;
    crate::files::write_atomic(path, &out)
}

/// A latents file's contents.
pub struct Latents {
    pub values: Vec<f32>,
    /// `[N, …]`.
    pub shape: Vec<usize>,
    /// The images they were encoded from (empty if not recorded).
    pub names: Vec<String>,
    /// Scaled by `encode --scale`.
    pub scaled: bool,
}

/// Read a latents file.
pub fn read_latents(path: &Path) -> Result<Latents> {
    let bytes = crate::files::read_bounded(path, 1 << 34, "latents")?;
    let bad = |why: String| Error::Config(format!("{}: {why}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a readable safetensors file: {e}")))?;
    let t = st
        .tensor("latents")
        .map_err(|_| bad("no tensor 'latents' (what `vae-wgpu encode` writes)".into()))?;
    if t.dtype() != safetensors::Dtype::F32 {
        return Err(bad(format!("'latents' is {:?}, not F32", t.dtype())));
    }
    let values = (t.data().chunks_exact(4))
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("not a readable safetensors file: {e}")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let names = meta
        .get("images")
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default();
    let scaled = meta.get(SCALED).is_some_and(|v| v == "true");
    Ok(Latents {
        values,
        shape: t.shape().to_vec(),
        names,
        scaled,
    })
}
