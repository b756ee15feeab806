//! A data split on the GPU, uploaded once: what the trainer's gather and the evaluation read (one
//! home for both, so `train.rs` and `eval.rs` do not import each other for it).

use crate::data::ImageSet;
use crate::error::Result;
use crate::gpu::{GpuContext, GpuTensor};

/// A data split uploaded once: u8 pixels `[N, D]`, u32 class labels `[N]` (what a conditional
/// model's gather reads) and a u32 index list `[N]`.
pub struct GpuDataset {
    pub pixels: GpuTensor,
    pub labels: GpuTensor,
    pub index: GpuTensor,
    /// Class names by label.
    pub classes: Vec<String>,
    pub len: usize,
    pub dim: usize,
    /// Channels, rows, cols of each image.
    pub image: [usize; 3],
}

impl GpuDataset {
    pub fn upload(ctx: &GpuContext, name: &str, data: &ImageSet) -> Result<Self> {
        let dim = data.dim();
        let pixels = ctx.upload_u8(name, &[data.count, dim], &data.images)?;
        let order: Vec<u32> = (0..data.count as u32).collect();
        let index = ctx.upload_u32("index", &[data.count], &order)?;
        let labels: Vec<u32> = data.labels.iter().map(|&l| l as u32).collect();
        let labels = ctx.upload_u32(&format!("{name} labels"), &[data.count], &labels)?;
        Ok(GpuDataset {
            pixels,
            labels,
            index,
            classes: data.classes.clone(),
            len: data.count,
            dim,
            image: data.shape(),
        })
    }

    /// The step input that gathers this split's batches (and labels) on the GPU.
    pub fn input(&self) -> crate::model::graph::Input<'_> {
        crate::model::graph::Input::Gather {
            pixels: &self.pixels,
            labels: &self.labels,
            index: &self.index,
        }
    }
}
