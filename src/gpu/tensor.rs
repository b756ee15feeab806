//! Typed GPU tensors: a buffer, a byte offset into it, a shape and a dtype.
//!
//! A tensor may be a view into a larger arena (parameters, gradients, Adam moments); views start on
//! 256-byte boundaries, WebGPU's largest `min_storage_buffer_offset_alignment`, so any view can be
//! bound on any adapter. Upload and readback are explicit: nothing is read back unless asked.

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::context::GpuContext;

/// Storage-binding alignment in bytes that arena views respect on every adapter.
pub const VIEW_ALIGN_BYTES: u64 = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    U32,
    /// Bytes packed four to a 32-bit word (WGSL has no 8-bit storage type).
    U8,
}

impl DType {
    pub fn bytes_for(self, elems: usize) -> u64 {
        let raw = match self {
            DType::F32 | DType::U32 => elems as u64 * 4,
            DType::U8 => elems as u64,
        };
        raw.div_ceil(4) * 4
    }
}

#[derive(Clone, Debug)]
pub struct GpuTensor {
    pub buffer: wgpu::Buffer,
    /// Byte offset of element 0 within `buffer`.
    pub offset: u64,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl GpuTensor {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn size_bytes(&self) -> u64 {
        self.dtype.bytes_for(self.len())
    }

    /// The tensor as a bind-group resource (exactly its own bytes of the buffer).
    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: wgpu::BufferSize::new(self.size_bytes()),
        })
    }

    /// A view of `shape` starting `elem_offset` f32/u32 elements into this tensor.
    pub fn view(&self, elem_offset: usize, shape: &[usize]) -> Result<GpuTensor> {
        let n: usize = shape.iter().product();
        let off = self.offset + self.dtype.bytes_for(elem_offset);
        if elem_offset + n > self.len() || !off.is_multiple_of(VIEW_ALIGN_BYTES) {
            return Err(Error::shape(
                "view",
                format!(
                    "view {shape:?} at element {elem_offset} of a tensor {:?} (views need 256-byte alignment)",
                    self.shape
                ),
            ));
        }
        Ok(GpuTensor {
            buffer: self.buffer.clone(),
            offset: off,
            shape: shape.to_vec(),
            dtype: self.dtype,
        })
    }

    /// The same storage with another shape of the same element count.
    pub fn reshaped(&self, shape: &[usize]) -> Result<GpuTensor> {
        if shape.iter().product::<usize>() != self.len() {
            return Err(Error::shape(
                "reshape",
                format!("{:?} -> {shape:?}", self.shape),
            ));
        }
        Ok(GpuTensor {
            shape: shape.to_vec(),
            ..self.clone()
        })
    }
}

const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl GpuContext {
    fn check_nonempty(shape: &[usize], label: &str) -> Result<()> {
        if shape.contains(&0) || shape.is_empty() {
            return Err(Error::shape(
                "alloc",
                format!("tensor '{label}' has an empty shape {shape:?}"),
            ));
        }
        Ok(())
    }

    /// A zero-filled tensor.
    pub fn zeros(&self, label: &str, shape: &[usize], dtype: DType) -> Result<GpuTensor> {
        let size = dtype.bytes_for(shape.iter().product());
        self.check_binding_size(label, size)?;
        self.zeros_unchecked(label, shape, dtype)
    }

    /// A zero-filled f32 arena of `n` values, bound only through views of its parts (a layer's
    /// weights): it may exceed one binding, up to `max_buffer_size`. A kernel that binds it whole
    /// is refused at its dispatch, naming it (every binding is checked there).
    pub fn zeros_arena(&self, label: &str, n: usize) -> Result<GpuTensor> {
        self.check_buffer_size(label, DType::F32.bytes_for(n))?;
        self.zeros_unchecked(label, &[n], DType::F32)
    }

    /// [`GpuContext::zeros_arena`] holding `data`.
    pub fn upload_arena(&self, label: &str, data: &[f32]) -> Result<GpuTensor> {
        self.check_buffer_size(label, DType::F32.bytes_for(data.len()))?;
        self.upload_unchecked(label, &[data.len()], DType::F32, bytemuck::cast_slice(data))
    }

    fn zeros_unchecked(&self, label: &str, shape: &[usize], dtype: DType) -> Result<GpuTensor> {
        Self::check_nonempty(shape, label)?;
        let size = dtype.bytes_for(shape.iter().product());
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: STORAGE_USAGE,
            mapped_at_creation: false,
        });
        self.log_buffer(&buffer, label, None);
        Ok(GpuTensor {
            buffer,
            offset: 0,
            shape: shape.to_vec(),
            dtype,
        })
    }

    fn upload_bytes(
        &self,
        label: &str,
        shape: &[usize],
        dtype: DType,
        bytes: &[u8],
    ) -> Result<GpuTensor> {
        self.check_binding_size(label, dtype.bytes_for(shape.iter().product()))?;
        self.upload_unchecked(label, shape, dtype, bytes)
    }

    fn upload_unchecked(
        &self,
        label: &str,
        shape: &[usize],
        dtype: DType,
        bytes: &[u8],
    ) -> Result<GpuTensor> {
        Self::check_nonempty(shape, label)?;
        let size = dtype.bytes_for(shape.iter().product());
        let mut padded;
        let contents = if bytes.len() as u64 == size {
            bytes
        } else {
            padded = bytes.to_vec();
            padded.resize(size as usize, 0);
            &padded[..]
        };
        let buffer = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents,
                usage: STORAGE_USAGE,
            });
        self.log_buffer(&buffer, label, Some(contents));
        Ok(GpuTensor {
            buffer,
            offset: 0,
            shape: shape.to_vec(),
            dtype,
        })
    }

    pub fn upload_f32(&self, label: &str, shape: &[usize], data: &[f32]) -> Result<GpuTensor> {
        check_len(label, shape, data.len())?;
        self.upload_bytes(label, shape, DType::F32, bytemuck::cast_slice(data))
    }

    pub fn upload_u32(&self, label: &str, shape: &[usize], data: &[u32]) -> Result<GpuTensor> {
        check_len(label, shape, data.len())?;
        self.upload_bytes(label, shape, DType::U32, bytemuck::cast_slice(data))
    }

    pub fn upload_u8(&self, label: &str, shape: &[usize], data: &[u8]) -> Result<GpuTensor> {
        check_len(label, shape, data.len())?;
        self.upload_bytes(label, shape, DType::U8, data)
    }

    /// Overwrite a tensor's contents (queued; visible to the next submit).
    pub fn write_f32(&self, t: &GpuTensor, data: &[f32]) -> Result<()> {
        check_len("write", &t.shape, data.len())?;
        self.queue
            .write_buffer(&t.buffer, t.offset, bytemuck::cast_slice(data));
        Ok(())
    }

    pub fn write_u32(&self, t: &GpuTensor, data: &[u32]) -> Result<()> {
        check_len("write", &t.shape, data.len())?;
        self.queue
            .write_buffer(&t.buffer, t.offset, bytemuck::cast_slice(data));
        Ok(())
    }

    /// Copy a tensor back to the host (waits for all submitted work, with a timeout).
    pub fn read_f32(&self, t: &GpuTensor) -> Result<Vec<f32>> {
        if t.dtype != DType::F32 {
            return Err(Error::shape(
                "read_f32",
                format!("tensor is {:?}, not F32", t.dtype),
            ));
        }
        let bytes = self.read_bytes(t)?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }

    pub fn read_u32(&self, t: &GpuTensor) -> Result<Vec<u32>> {
        let bytes = self.read_bytes(t)?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }

    fn read_bytes(&self, t: &GpuTensor) -> Result<Vec<u8>> {
        let size = t.size_bytes();
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&t.buffer, t.offset, &staging, 0, size);
        self.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait_idle("a readback")?;
        // The map callback normally has fired by now; some backends (GL) resolve it on a later
        // poll, or another thread's poll runs it. Keep polling until it arrives or time runs out.
        let deadline = std::time::Instant::now() + super::context::WAIT_TIMEOUT;
        loop {
            match rx.try_recv() {
                Ok(Ok(())) => break,
                Ok(Err(e)) => return Err(Error::Device(format!("readback mapping failed: {e}"))),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    return Err(Error::Device(
                        "readback mapping was dropped (device lost?)".into(),
                    ));
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    if std::time::Instant::now() > deadline {
                        return Err(Error::Timeout {
                            what: "a readback mapping".into(),
                            seconds: super::context::WAIT_TIMEOUT.as_secs(),
                        });
                    }
                    std::thread::sleep(std::time::Duration::from_micros(200));
                    self.wait_idle("a readback")?;
                }
            }
        }
        let view = staging
            .get_mapped_range(..)
            .map_err(|e| Error::Device(format!("readback range: {e}")))?;
        let out = view.to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }
}

fn check_len(label: &str, shape: &[usize], len: usize) -> Result<()> {
    let want: usize = shape.iter().product();
    if want != len {
        return Err(Error::shape(
            "upload",
            format!("'{label}' has shape {shape:?} ({want} elements) but {len} values were given"),
        ));
    }
    Ok(())
}
