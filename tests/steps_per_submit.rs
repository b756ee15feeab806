//! Several training steps per submit: each step of a submit reads its own slot of the per-step
//! uniform ring, so recording k steps into one submit must give exactly the results of one submit
//! per step — the same batch losses at every log point and the same weights, bit for bit — for any
//! k, with log points that cut the submits short (log every 7 steps, k = 3 and 8).

mod common;

use common::ctx;
use vae_wgpu::data::{ImageSet, Split};
use vae_wgpu::model::train::STEPS_PER_SUBMIT_ENV;
use vae_wgpu::model::{EpochEnd, Event, TrainSettings, Trainer, VaeConfig};

#[test]
fn k_steps_per_submit_equal_one_step_per_submit() {
    let ctx = ctx();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let mut data = ImageSet::load_idx(&dir, Split::Train).unwrap();
    let n = 1000; // 15 full batches of 64 and one of 40
    data.images.truncate(n * 784);
    data.labels.truncate(n);
    data.count = n;
    let settings = TrainSettings {
        batch_size: 64,
        seed: 4,
        log_every: 7,
        ..TrainSettings::default()
    };
    let cfg = VaeConfig::mirrored(784, &[64], 10);
    let run = |k: usize| {
        // The only test of this binary: nothing else reads the environment meanwhile.
        unsafe { std::env::set_var(STEPS_PER_SUBMIT_ENV, k.to_string()) };
        let mut t = Trainer::new(ctx, cfg.clone(), settings.clone(), &data).unwrap();
        assert_eq!(t.steps_per_submit, k);
        let mut losses = Vec::new();
        for _ in 0..2 {
            let mut on = |e: Event| {
                if let Event::BatchLoss { step, loss, .. } = e {
                    losses.push((step, loss));
                }
            };
            match t.train_epoch(ctx, &mut on, &mut || false).unwrap() {
                EpochEnd::Completed(_) => {}
                EpochEnd::Stopped { .. } => panic!("nothing asked to stop"),
            }
        }
        (losses, ctx.read_f32(&t.vae.params).unwrap())
    };
    let (l1, p1) = run(1);
    assert_eq!(
        l1.iter().map(|l| l.0).collect::<Vec<_>>(),
        [0, 7, 14, 0, 7, 14],
        "every log point reports"
    );
    // A stop asked for mid-submit: the steps before it run, the rest do not.
    unsafe { std::env::set_var(STEPS_PER_SUBMIT_ENV, "8") };
    let mut t = Trainer::new(ctx, cfg.clone(), settings.clone(), &data).unwrap();
    let mut asked = 0;
    let end = t
        .train_epoch(ctx, &mut |_| {}, &mut || {
            asked += 1;
            asked > 5
        })
        .unwrap();
    assert!(
        matches!(end, EpochEnd::Stopped { epoch: 1, step: 5 }),
        "{end:?}"
    );
    assert_eq!((t.step_in_epoch, t.vae.train_steps), (5, 5));

    for k in [3, 8] {
        let (lk, pk) = run(k);
        assert_eq!(lk, l1, "batch losses with {k} steps per submit");
        assert!(
            pk.iter().zip(&p1).all(|(a, b)| a.to_bits() == b.to_bits()),
            "weights after 2 epochs differ with {k} steps per submit"
        );
    }
    common::assert_no_validation_messages("k_steps_per_submit_equal_one_step_per_submit");
}
