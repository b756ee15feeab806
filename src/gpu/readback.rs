//! Reading a small tensor back without stalling the queue.
//!
//! [`GpuContext::read_f32`] waits for the device to go idle: fine at an epoch's end, but at every
//! log point it would drain the queue and leave the device idle while the host catches up. Here a
//! copy into one of two staging buffers is queued behind the work submitted so far and mapped
//! asynchronously; the training loop keeps submitting steps and [`AsyncReadback::poll`] hands the
//! values over once the device has got there (a step or two later). With both buffers in flight, a
//! third request waits for the oldest.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, TryRecvError, channel};

use super::{GpuContext, GpuTensor};
use crate::error::{Error, Result};

type MapResult = std::result::Result<(), wgpu::BufferAsyncError>;

struct Pending {
    slot: usize,
    tag: usize,
    mapped: Receiver<MapResult>,
}

/// Double-buffered asynchronous readback of one f32 tensor's size.
pub struct AsyncReadback {
    staging: Vec<wgpu::Buffer>,
    free: Vec<usize>,
    /// Requests in flight, oldest first (values are handed over in request order).
    pending: VecDeque<Pending>,
    bytes: u64,
}

impl AsyncReadback {
    /// Two staging buffers for tensors like `like`.
    pub fn new(ctx: &GpuContext, like: &GpuTensor) -> Self {
        let bytes = like.size_bytes();
        let staging = (0..2)
            .map(|_| {
                ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("async readback"),
                    size: bytes,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
            .collect();
        AsyncReadback {
            staging,
            free: vec![1, 0],
            pending: VecDeque::new(),
            bytes,
        }
    }

    /// Queue a copy of `t` (as it will be after everything submitted so far), labelled `tag`.
    /// Returns the values of requests that had to be waited for to free a buffer (oldest first).
    pub fn request(
        &mut self,
        ctx: &GpuContext,
        t: &GpuTensor,
        tag: usize,
    ) -> Result<Vec<(usize, Vec<f32>)>> {
        if t.size_bytes() != self.bytes {
            return Err(Error::shape(
                "AsyncReadback::request",
                format!(
                    "tensor of {} bytes, staging of {}",
                    t.size_bytes(),
                    self.bytes
                ),
            ));
        }
        let mut done = Vec::new();
        if self.free.is_empty() {
            done.push(self.wait_oldest(ctx)?);
        }
        let slot = self.free.pop().expect("a staging buffer was just freed");
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&t.buffer, t.offset, &self.staging[slot], 0, self.bytes);
        ctx.queue.submit([enc.finish()]);
        let (tx, rx) = channel();
        self.staging[slot]
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
        self.pending.push_back(Pending {
            slot,
            tag,
            mapped: rx,
        });
        Ok(done)
    }

    /// The values of the requests the device has finished, oldest first; never blocks.
    pub fn poll(&mut self, ctx: &GpuContext) -> Result<Vec<(usize, Vec<f32>)>> {
        let mut done = Vec::new();
        while let Some(v) = self.poll_front(ctx)? {
            done.push(v);
        }
        Ok(done)
    }

    /// Wait for every request in flight; their values, oldest first.
    pub fn finish(&mut self, ctx: &GpuContext) -> Result<Vec<(usize, Vec<f32>)>> {
        let mut done = Vec::new();
        while !self.pending.is_empty() {
            done.push(self.wait_oldest(ctx)?);
        }
        Ok(done)
    }

    /// The oldest request's values, waiting for the device (called with a request in flight).
    fn wait_oldest(&mut self, ctx: &GpuContext) -> Result<(usize, Vec<f32>)> {
        let deadline = std::time::Instant::now() + super::context::WAIT_TIMEOUT;
        loop {
            if let Some(v) = self.poll_front(ctx)? {
                return Ok(v);
            }
            if self.pending.is_empty() || std::time::Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: "a loss readback".into(),
                    seconds: super::context::WAIT_TIMEOUT.as_secs(),
                });
            }
            ctx.wait_idle("a loss readback")?;
        }
    }

    /// The oldest request's values if the device has finished it (`None`: not yet, or nothing in
    /// flight); never blocks.
    fn poll_front(&mut self, ctx: &GpuContext) -> Result<Option<(usize, Vec<f32>)>> {
        let Some(front) = self.pending.front() else {
            return Ok(None);
        };
        // Runs the map callbacks of finished work; returns at once.
        let _ = ctx.device.poll(wgpu::PollType::Poll);
        match front.mapped.try_recv() {
            Ok(r) => {
                let p = self.pending.pop_front().expect("front exists");
                Ok(Some(self.take(p, r)?))
            }
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(Error::Device(
                "an asynchronous readback was dropped (device lost?)".into(),
            )),
        }
    }

    fn take(&mut self, p: Pending, mapped: MapResult) -> Result<(usize, Vec<f32>)> {
        mapped.map_err(|e| Error::Device(format!("readback mapping failed: {e}")))?;
        let buffer = &self.staging[p.slot];
        let values = {
            let view = buffer
                .get_mapped_range(..)
                .map_err(|e| Error::Device(format!("readback range: {e}")))?;
            bytemuck::cast_slice::<u8, f32>(&view).to_vec()
        };
        buffer.unmap();
        self.free.push(p.slot);
        Ok((p.tag, values))
    }
}
