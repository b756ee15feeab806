//! Device trouble becomes an error value with advice, never a panic or a hang: a shader the device
//! rejects, a buffer beyond the adapter's limits, a validation error raised inside wgpu, and a
//! request for an adapter that does not exist.

mod common;

use common::ctx;
use vae_wgpu::Error;
use vae_wgpu::gpu::{BackendChoice, ContextOptions, DType, GpuContext, Shader};

#[test]
fn a_rejected_shader_is_an_error() {
    let ctx = ctx();
    let bad = Shader {
        name: "broken",
        source: "@compute @workgroup_size(1) fn main() { let x: f32 = ; }",
        features: &[],
    };
    let e = ctx.pipeline(bad, "main", &[]).unwrap_err().to_string();
    assert!(e.contains("shader 'broken' failed to compile"), "{e}");
    let e = ctx
        .pipeline(Shader::MATMUL, "no_such_entry", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("could not be created") && e.contains("no_such_entry"),
        "{e}"
    );
    ctx.check_errors().unwrap();
}

#[test]
fn oversized_buffers_are_refused_with_the_limit() {
    let ctx = ctx();
    let max = ctx
        .limits()
        .max_storage_buffer_binding_size
        .min(ctx.limits().max_buffer_size);
    let n = (max / 4 + 1) as usize;
    let e = ctx.zeros("huge", &[n], DType::F32).unwrap_err();
    assert!(matches!(e, Error::AdapterLimit { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("huge") && msg.contains("max_storage_buffer_binding_size"),
        "{msg}"
    );
}

#[test]
fn wgpu_validation_errors_are_collected_not_panicked() {
    // A device of its own: the error must not leak into other tests sharing the common one.
    let own = GpuContext::from_env().unwrap();
    let ctx = &own;
    // A mapped-for-read buffer cannot be a storage buffer: wgpu reports it through the error
    // handler the context installed, and check_errors turns it into a value with advice.
    let _b = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("invalid usage"),
        size: 16,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let e = ctx.check_errors().unwrap_err().to_string();
    assert!(e.contains("GPU error") && e.contains("--backend"), "{e}");
    ctx.check_errors().unwrap();
}

#[test]
fn an_unknown_adapter_is_named_with_the_ones_seen() {
    let opts = ContextOptions {
        backend: BackendChoice::Auto,
        adapter: Some("no-such-gpu-9000".into()),
        ..ContextOptions::default()
    };
    let e = GpuContext::new(&opts)
        .err()
        .expect("no adapter has that name")
        .to_string();
    assert!(
        e.contains("no-such-gpu-9000")
            && e.contains("Adapters seen")
            && e.contains("mesa-vulkan-drivers"),
        "{e}"
    );
}
