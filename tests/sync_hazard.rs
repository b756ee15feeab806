//! The validated run's synchronization check can fail: with the settings `scripts/test.sh` uses
//! (`tests/validation/vk_layer_settings.txt`, set here by the test itself), a deliberately introduced hazard — a copy that
//! reads a buffer right after a fill writes it, with no barrier between — must be reported by
//! the Khronos layer's synchronization validation. wgpu inserts every barrier itself, so the
//! hazard is recorded through the Vulkan API underneath it (`ash`, on the device and buffers wgpu
//! made); with the barrier in place the same commands must report nothing.

// Vulkan-only (the Khronos layer through Vulkan, `ash` on wgpu's Vulkan device): the platform
// CI runs, with Mesa's lavapipe; elsewhere (Metal, DX12) there is no such layer to check.
#![cfg(target_os = "linux")]

mod common;

use ash::vk;

/// Record `fill a; [barrier;] copy a → b` on `ctx`'s Vulkan device and submit it; returns the
/// validation messages it caused.
fn fill_then_copy(ctx: &vae_wgpu::gpu::GpuContext, barrier: bool) -> Vec<String> {
    let a = ctx.zeros("a", &[256], vae_wgpu::gpu::DType::F32).unwrap();
    let b = ctx.zeros("b", &[256], vae_wgpu::gpu::DType::F32).unwrap();
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .unwrap();
    common::take_validation_messages();
    // SAFETY: the handles come from wgpu's own Vulkan device and outlive the commands, which are
    // waited for before returning; nothing else uses the queue meanwhile (this binary's one test).
    unsafe {
        let dev = ctx
            .device
            .as_hal::<wgpu::hal::api::Vulkan>()
            .expect("a Vulkan device");
        let raw = dev.raw_device();
        let buf = |t: &vae_wgpu::gpu::GpuTensor| {
            t.buffer
                .as_hal::<wgpu::hal::api::Vulkan>()
                .expect("a Vulkan buffer")
                .raw_handle()
        };
        let (ra, rb) = (buf(&a), buf(&b));
        let pool = raw
            .create_command_pool(
                &vk::CommandPoolCreateInfo::default().queue_family_index(dev.queue_family_index()),
                None,
            )
            .unwrap();
        let cb = raw
            .allocate_command_buffers(
                &vk::CommandBufferAllocateInfo::default()
                    .command_pool(pool)
                    .command_buffer_count(1),
            )
            .unwrap()[0];
        raw.begin_command_buffer(cb, &vk::CommandBufferBeginInfo::default())
            .unwrap();
        raw.cmd_fill_buffer(cb, ra, 0, 1024, 0x3f80_0000);
        if barrier {
            let b = vk::MemoryBarrier::default()
                .src_access_mask(vk::AccessFlags::TRANSFER_WRITE)
                .dst_access_mask(vk::AccessFlags::TRANSFER_READ);
            raw.cmd_pipeline_barrier(
                cb,
                vk::PipelineStageFlags::TRANSFER,
                vk::PipelineStageFlags::TRANSFER,
                vk::DependencyFlags::empty(),
                &[b],
                &[],
                &[],
            );
        }
        raw.cmd_copy_buffer(cb, ra, rb, &[vk::BufferCopy::default().size(1024)]);
        raw.end_command_buffer(cb).unwrap();
        let fence = raw
            .create_fence(&vk::FenceCreateInfo::default(), None)
            .unwrap();
        raw.queue_submit(
            dev.raw_queue(),
            &[vk::SubmitInfo::default().command_buffers(&[cb])],
            fence,
        )
        .unwrap();
        raw.wait_for_fences(&[fence], true, u64::MAX).unwrap();
        raw.destroy_fence(fence, None);
        raw.destroy_command_pool(pool, None);
    }
    common::take_validation_messages()
}

#[test]
fn synchronization_validation_reports_a_missing_barrier() {
    // The layer with the validated run's own settings file; this binary's one test, so nothing
    // else reads the environment meanwhile.
    unsafe {
        std::env::set_var("WGPU_VALIDATION", "1");
        std::env::set_var(
            "VK_LAYER_SETTINGS_PATH",
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validation"),
        );
    }
    let opts = vae_wgpu::gpu::ContextOptions {
        backend: vae_wgpu::gpu::BackendChoice::Vulkan,
        ..Default::default()
    };
    common::install_validation_log();
    let ctx = vae_wgpu::gpu::GpuContext::new(&opts).expect("a Vulkan adapter (lavapipe)");
    let hazard = fill_then_copy(&ctx, false);
    assert!(
        hazard
            .iter()
            .any(|m| m.contains("SYNC-HAZARD-READ-AFTER-WRITE")),
        "a copy reading what a fill just wrote, with no barrier, was not reported: is \
         synchronization validation on (VK_LAYER_SETTINGS_PATH=tests/validation)? messages: \
         {hazard:?}"
    );
    let clean = fill_then_copy(&ctx, true);
    assert!(clean.is_empty(), "with the barrier: {clean:?}");
}
