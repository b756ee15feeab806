//! The validated run's own check (`scripts/test.sh` runs the parity suites under
//! `WGPU_VALIDATION=1` with the Khronos layer's synchronization validation, and any message fails
//! the test that sees it): the layer is installed, loaded, and what it reports reaches the tests.
//! Here it is made to report something — its best-practices checks, which warn about ordinary
//! API use — and the messages must arrive. Without the layer (Debian: `vulkan-validationlayers`,
//! which test.sh installs) this fails; a validated run that checks nothing cannot pass.

// Vulkan-only (the Khronos layer through Vulkan, `ash` on wgpu's Vulkan device): the platform
// CI runs, with Mesa's lavapipe; elsewhere (Metal, DX12) there is no such layer to check.
#![cfg(target_os = "linux")]

mod common;

#[test]
fn the_validation_layer_is_loaded_and_its_messages_reach_the_tests() {
    let dir = std::env::temp_dir().join(format!("vae-wgpu-vk-settings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("vk_layer_settings.txt"),
        "khronos_validation.enables = VK_VALIDATION_FEATURE_ENABLE_BEST_PRACTICES_EXT\n\
         khronos_validation.report_flags = error,warn\n\
         khronos_validation.debug_action = VK_DBG_LAYER_ACTION_IGNORE\n",
    )
    .unwrap();
    // This binary's one test: nothing else reads the environment meanwhile.
    unsafe {
        std::env::set_var("WGPU_VALIDATION", "1");
        std::env::set_var("VK_LAYER_SETTINGS_PATH", &dir);
    }
    common::install_validation_log();
    let opts = vae_wgpu::gpu::ContextOptions {
        backend: vae_wgpu::gpu::BackendChoice::Vulkan,
        ..Default::default()
    };
    let ctx = vae_wgpu::gpu::GpuContext::new(&opts).expect("a Vulkan adapter (lavapipe)");
    let a = ctx.upload_f32("a", &[4, 4], &[1.0; 16]).unwrap();
    let c = ctx.zeros("c", &[4, 4], vae_wgpu::gpu::DType::F32).unwrap();
    let d = vae_wgpu::kernels::matmul::matmul_with(
        &ctx,
        vae_wgpu::kernels::matmul::MatmulVariant::Direct,
        vae_wgpu::ops::Layout::NN,
        &a,
        &a,
        &c,
        vae_wgpu::kernels::matmul::Epilogue::NONE,
    )
    .unwrap();
    vae_wgpu::kernels::run(&ctx, &[&d]).unwrap();
    let msgs = common::take_validation_messages();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        msgs.iter().any(|m| m.contains("BestPractices")),
        "the Khronos validation layer reported nothing: is it installed (apt-get install \
         vulkan-validationlayers)? messages: {msgs:?}"
    );
}
