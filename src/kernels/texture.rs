//! Operands read through textures. On Mesa's lavapipe (22.3) every storage-buffer load is a loop
//! over the SIMD lanes, one element at a time behind a branch, while a texel fetch is one
//! straight-line gather: kernels with a texture-fed twin (`matmul_subgroup_tex.wgsl`,
//! `adam_step_tex`) read copies of their inputs made just before the dispatch. Measured there
//! (2 vCPUs, AVX2): 8 vec4 FMAs per vec4 loaded run at 4.6 GFLOP/s from storage, 26 from a
//! texture; Adam over 320k parameters takes 4.6 ms reading storage, 1.1 ms reading textures
//! (copies included). Writes stay storage writes (no per-lane reload there: ~4x cheaper).
//!
//! Layout: vec4 i of a tensor is texel (i % TEX_WIDTH, i / TEX_WIDTH) of an rgba32float texture.

use crate::gpu::{GpuContext, GpuTensor};

/// Texels per texture row: 4 KiB, a multiple of the 256-byte row pitch buffer-to-texture copies
/// need (the WGSL side hard-codes it: `i & 255u, i >> 8u`).
pub const TEX_WIDTH: u32 = 256;

/// The texture a tensor of `len` floats needs: (width, height) in texels.
pub fn texture_extent(len: usize) -> (u32, u32) {
    (
        TEX_WIDTH,
        len.div_ceil(4 * TEX_WIDTH as usize).max(1) as u32,
    )
}

/// Whether a tensor of `len` floats fits the device's largest 2D texture.
pub fn texture_fits(ctx: &GpuContext, len: usize) -> bool {
    texture_extent(len).1 <= ctx.limits().max_texture_dimension_2d
}

/// An operand a kernel reads as an rgba32float texture (the texture-fed matmul kernels, Adam's
/// texture reads): the texture, and the tensor it is filled from before every launch — vec4 i at
/// texel (i % TEX_WIDTH, i / TEX_WIDTH), whole rows in one copy and the last, partial row in
/// another.
#[derive(Clone, Debug)]
pub struct TextureOperand {
    pub(super) tensor: GpuTensor,
    texture: wgpu::Texture,
    pub(super) view: wgpu::TextureView,
}

impl TextureOperand {
    /// A texture for `tensor` (f32, a multiple of 4 elements within the device's texture size:
    /// the launchers choose texture reads only then; anything else would drop the tail).
    pub(crate) fn new(ctx: &GpuContext, tensor: &GpuTensor) -> TextureOperand {
        assert!(
            tensor.len().is_multiple_of(4) && texture_fits(ctx, tensor.len()),
            "texture operand of {} floats",
            tensor.len()
        );
        let (width, height) = texture_extent(tensor.len());
        let texture = ctx.device.create_texture(&wgpu::TextureDescriptor {
            label: Some("operand texture"),
            size: wgpu::Extent3d {
                width,
                height,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Float,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        let view = texture.create_view(&Default::default());
        TextureOperand {
            tensor: tensor.clone(),
            texture,
            view,
        }
    }

    pub(super) fn encode_copy(&self, encoder: &mut wgpu::CommandEncoder) {
        const TEXEL: u64 = 16;
        let width = TEX_WIDTH;
        let texels = (self.tensor.len() / 4) as u32;
        let (rows, rest) = (texels / width, texels % width);
        let mut copy = |row: u32, columns: u32, height: u32| {
            encoder.copy_buffer_to_texture(
                wgpu::TexelCopyBufferInfo {
                    buffer: &self.tensor.buffer,
                    layout: wgpu::TexelCopyBufferLayout {
                        offset: self.tensor.offset + row as u64 * width as u64 * TEXEL,
                        bytes_per_row: Some(width * TEXEL as u32),
                        rows_per_image: None,
                    },
                },
                wgpu::TexelCopyTextureInfo {
                    texture: &self.texture,
                    mip_level: 0,
                    origin: wgpu::Origin3d { x: 0, y: row, z: 0 },
                    aspect: wgpu::TextureAspect::All,
                },
                wgpu::Extent3d {
                    width: columns,
                    height,
                    depth_or_array_layers: 1,
                },
            );
        };
        if rows > 0 {
            copy(0, width, rows);
        }
        if rest > 0 {
            copy(rows, rest, 1);
        }
    }
}
