//! Asynchronous double-buffered readback: values come back in request order, each as the tensor was
//! when its request was queued, a third request in flight waits for the first, and `poll` never
//! blocks.

mod common;

use common::ctx;
use vae_wgpu::gpu::readback::AsyncReadback;

#[test]
fn readbacks_arrive_in_order_with_the_values_of_their_time() {
    let ctx = ctx();
    let t = ctx.upload_f32("t", &[8], &[0.0; 8]).unwrap();
    let mut reader = AsyncReadback::new(ctx, &t);
    let mut got = Vec::new();
    for tag in 1..=5usize {
        ctx.write_f32(&t, &[tag as f32; 8]).unwrap();
        got.extend(reader.request(ctx, &t, tag).unwrap());
        got.extend(reader.poll(ctx).unwrap());
    }
    got.extend(reader.finish(ctx).unwrap());
    let tags: Vec<usize> = got.iter().map(|(tag, _)| *tag).collect();
    assert_eq!(tags, [1, 2, 3, 4, 5]);
    for (tag, values) in &got {
        assert_eq!(values, &vec![*tag as f32; 8], "request {tag}");
    }
    assert!(reader.poll(ctx).unwrap().is_empty());
    assert!(reader.finish(ctx).unwrap().is_empty());
    // A tensor of another size is refused, not copied past the staging buffer.
    let other = ctx.upload_f32("other", &[9], &[0.0; 9]).unwrap();
    assert!(reader.request(ctx, &other, 6).is_err());
}
