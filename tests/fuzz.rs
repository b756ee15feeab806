//! Property-based fuzzing (proptest) of the two parsers that read untrusted files: the IDX reader
//! (raw and gzip) and the checkpoint loader. Random bytes and mutations of valid files must give
//! `Ok` with consistent contents or an `Err` — never a panic, never an allocation sized by a header
//! alone. Case counts are modest here; `PROPTEST_CASES=200000 cargo test --release --test fuzz`
//! runs longer campaigns (see the closing note of the reliability issue for what ran).

mod common;

use common::{gz, idx_bytes};
use std::path::Path;

use proptest::prelude::*;
use vae_wgpu::data::decode_idx;
use vae_wgpu::model::{Checkpoint, ParamLayout, VaeConfig};

fn valid_checkpoint() -> Vec<u8> {
    let cfg = VaeConfig {
        samples: 1,
        ..VaeConfig::mirrored(6, &[5], 2)
    };
    let ckpt = Checkpoint {
        params: ParamLayout::new(&cfg).init(1),
        cfg,
        optimizer: None,
        progress: Default::default(),
        activation_recorded: true,
    };
    let p = std::env::temp_dir().join(format!("vae-wgpu-fuzz-{}.safetensors", std::process::id()));
    ckpt.save_state_dict(&p).unwrap();
    let b = std::fs::read(&p).unwrap();
    let _ = std::fs::remove_file(&p);
    b
}

/// A mutation: flip bytes, truncate, or splice random bytes in.
fn mutate(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let n = base.len();
    prop_oneof![
        prop::collection::vec((0..n, any::<u8>()), 1..8).prop_map({
            let base = base.clone();
            move |flips| {
                let mut b = base.clone();
                for (i, v) in flips {
                    b[i] = v;
                }
                b
            }
        }),
        (0..n).prop_map({
            let base = base.clone();
            move |cut| base[..cut].to_vec()
        }),
        (0..n, prop::collection::vec(any::<u8>(), 1..16)).prop_map(move |(at, ins)| {
            let mut b = base.clone();
            b.splice(at..at, ins);
            b
        }),
    ]
}

fn check_idx(bytes: &[u8]) {
    if let Ok(a) = decode_idx(bytes, Path::new("fuzz.idx")) {
        assert_eq!(
            a.data.len() as u64,
            a.dims.iter().map(|&d| d as u64).product::<u64>()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(3000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn idx_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        check_idx(&bytes);
    }

    #[test]
    fn idx_mutated_raw(bytes in mutate(idx_bytes(&[3, 4, 5], &(0..60).collect::<Vec<u8>>()))) {
        check_idx(&bytes);
    }

    #[test]
    fn idx_mutated_gzip(bytes in mutate(gz(&idx_bytes(&[2, 28, 28], &[9u8; 1568])))) {
        check_idx(&bytes);
    }

    #[test]
    fn idx_header_claims(dims in prop::collection::vec(any::<u32>(), 0..5), extra in 0usize..64) {
        check_idx(&idx_bytes(&dims, &vec![1u8; extra]));
    }

    #[test]
    fn checkpoint_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Checkpoint::from_bytes(&bytes, Path::new("fuzz.safetensors"));
    }

    #[test]
    fn checkpoint_mutated(bytes in mutate(valid_checkpoint())) {
        if let Ok(c) = Checkpoint::from_bytes(&bytes, Path::new("fuzz.safetensors")) {
            prop_assert_eq!(c.params.len(), ParamLayout::new(&c.cfg).len);
        }
    }
}

/// Regression: a safetensors header whose metadata claims a gigantic model must be refused from
/// the shapes actually present, without allocating arenas for the claimed sizes.
#[test]
fn metadata_cannot_claim_a_huge_model() {
    let good = valid_checkpoint();
    let text = String::from_utf8_lossy(&good);
    assert!(text.contains("\"hidden\":\"5\""));
    let hlen = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&good[8..8 + hlen]).unwrap().replacen(
        "\"hidden\":\"5\"",
        "\"hidden\":\"1048576\"",
        1,
    );
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(&good[8 + hlen..]);
    let e = Checkpoint::from_bytes(&b, Path::new("huge.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("huge.safetensors"), "{e}");
}
