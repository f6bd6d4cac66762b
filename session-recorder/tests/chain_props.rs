//! Property tests of the chain and seals through the pure [`Verifier`]: a valid log always
//! verifies; a flipped byte, a deleted record, a swapped pair or a cut anywhere is caught,
//! naming the seq where the chain breaks; a segment re-signed with another key fails
//! against the expected key.

use ed25519_dalek::SigningKey;
use portcullis_recorder::Event;
use portcullis_recorder::record::{self, Chain};
use portcullis_recorder::seal::Seal;
use portcullis_recorder::segment::segment_name;
use portcullis_recorder::verify::{Summary, Verifier, VerifyError};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

/// One in-memory segment: name, bytes, seal, and (seq, start, end) of each line.
#[derive(Debug, Clone)]
struct Seg {
    name: String,
    data: Vec<u8>,
    seal: Option<Vec<u8>>,
    lines: Vec<(u64, usize, usize)>,
}

fn build(events: &[(String, u32)], sizes: &[usize], key: &SigningKey, seal_last: bool) -> Vec<Seg> {
    let mut chain = Chain::default();
    let mut segs = Vec::new();
    let mut it = events.iter();
    for (index, &size) in (1..).zip(sizes) {
        let mut seg = Seg {
            name: segment_name(index),
            data: Vec::new(),
            seal: None,
            lines: Vec::new(),
        };
        let first = chain.last_seq + 1;
        for (text, n) in it.by_ref().take(size) {
            let ev = Event::new("pg.query").with("sql", text).with("n", n);
            let seq = chain.last_seq + 1;
            let start = seg.data.len();
            let h = record::encode(
                seq,
                "2026-11-29T10:00:00.000000001Z",
                &chain.last_hash,
                &ev.0,
                &mut seg.data,
            );
            seg.lines.push((seq, start, seg.data.len()));
            chain = Chain {
                last_seq: seq,
                last_hash: h,
            };
        }
        if seg.lines.is_empty() {
            break;
        }
        let digest: [u8; 32] = Sha256::digest(&seg.data).into();
        seg.seal = Some(
            Seal::sign(
                key,
                &seg.name,
                &digest,
                first,
                chain.last_seq,
                &chain.last_hash,
            )
            .to_bytes(),
        );
        segs.push(seg);
    }
    if !seal_last && let Some(last) = segs.last_mut() {
        last.seal = None;
    }
    segs
}

fn run(segs: &[Seg], key: Option<ed25519_dalek::VerifyingKey>) -> Result<Summary, VerifyError> {
    let mut v = Verifier::new(key);
    for s in segs {
        v.segment(&s.name, &s.data, s.seal.as_deref())?;
    }
    Ok(v.finish())
}

fn key(b: u8) -> SigningKey {
    SigningKey::from_bytes(&[b; 32])
}

fn log_strategy() -> impl Strategy<Value = (Vec<(String, u32)>, Vec<usize>)> {
    (
        prop::collection::vec((".{0,40}", any::<u32>()), 1..30),
        prop::collection::vec(1usize..8, 1..6),
    )
        .prop_map(|(evs, mut sizes)| {
            // Make the segments cover every event.
            let covered: usize = sizes.iter().sum();
            if covered < evs.len() {
                sizes.push(evs.len() - covered);
            }
            (evs, sizes)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn a_valid_log_verifies((evs, sizes) in log_strategy(), seal_last in any::<bool>()) {
        let segs = build(&evs, &sizes, &key(1), seal_last);
        let s = run(&segs, Some(key(1).verifying_key())).expect("valid log");
        prop_assert_eq!(s.records, evs.len() as u64);
        prop_assert_eq!(s.last_seq, evs.len() as u64);
        prop_assert_eq!(s.open_segment.is_some(), !seal_last);
    }

    #[test]
    fn any_flipped_byte_is_caught_at_its_record(
        (evs, sizes) in log_strategy(), seal_last in any::<bool>(),
        pick in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), mask in 1u8..=255,
    ) {
        let mut segs = build(&evs, &sizes, &key(1), seal_last);
        let s = pick.index(segs.len());
        let off = at.index(segs[s].data.len());
        segs[s].data[off] ^= mask;
        let seq = segs[s].lines.iter().find(|(_, a, b)| (*a..*b).contains(&off)).map(|l| l.0).expect("line");
        let err = run(&segs, Some(key(1).verifying_key())).expect_err("flip caught");
        prop_assert_eq!(err.seq, seq, "{}", err);
        prop_assert_eq!(&err.file, &segs[s].name);
    }

    #[test]
    fn a_deleted_record_is_caught(
        (evs, sizes) in log_strategy(), pick in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(),
    ) {
        let mut segs = build(&evs, &sizes, &key(1), true);
        let s = pick.index(segs.len());
        let (seq, a, b) = segs[s].lines[at.index(segs[s].lines.len())];
        segs[s].data.drain(a..b);
        let err = run(&segs, None).expect_err("deletion caught");
        prop_assert_eq!(err.seq, seq, "{}", err);
    }

    #[test]
    fn a_swapped_pair_is_caught(
        (evs, sizes) in log_strategy(), pick in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(),
    ) {
        let mut segs = build(&evs, &sizes, &key(1), false);
        let s = pick.index(segs.len());
        prop_assume!(segs[s].lines.len() >= 2);
        let i = at.index(segs[s].lines.len() - 1);
        let (seq, a, _) = segs[s].lines[i];
        let (_, m, b) = segs[s].lines[i + 1];
        let swapped = [&segs[s].data[m..b], &segs[s].data[a..m]].concat();
        segs[s].data.splice(a..b, swapped);
        let err = run(&segs, None).expect_err("swap caught");
        prop_assert_eq!(err.seq, seq, "{}", err);
    }

    #[test]
    fn a_cut_anywhere_in_a_sealed_log_is_caught(
        (evs, sizes) in log_strategy(), pick in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(),
    ) {
        let mut segs = build(&evs, &sizes, &key(1), true);
        let s = pick.index(segs.len());
        let cut = at.index(segs[s].data.len());
        // The first record the cut damages or removes is where the chain breaks.
        let seq = segs[s].lines.iter().find(|(_, _, b)| *b > cut).map(|l| l.0).expect("line");
        segs[s].data.truncate(cut);
        let err = run(&segs, None).expect_err("cut caught");
        prop_assert_eq!(err.seq, seq, "{}", err);
    }

    #[test]
    fn a_cut_inside_a_record_of_the_open_segment_is_caught(
        (evs, sizes) in log_strategy(), at in any::<prop::sample::Index>(),
    ) {
        let mut segs = build(&evs, &sizes, &key(1), false);
        let last = segs.len() - 1;
        let cut = at.index(segs[last].data.len());
        let (seq, a, _) = *segs[last].lines.iter().find(|(_, _, b)| *b > cut).expect("line");
        // A cut exactly between records of the unsealed segment is indistinguishable from a
        // log that was not yet written further; every other cut is caught.
        prop_assume!(cut != a);
        segs[last].data.truncate(cut);
        let err = run(&segs, None).expect_err("cut caught");
        prop_assert_eq!(err.seq, seq, "{}", err);
    }

    #[test]
    fn a_segment_resigned_with_another_key_fails(
        (evs, sizes) in log_strategy(), pick in any::<prop::sample::Index>(),
    ) {
        let mut segs = build(&evs, &sizes, &key(1), true);
        let s = pick.index(segs.len());
        let mut seal = Seal::parse(segs[s].seal.as_deref().expect("sealed")).expect("seal");
        let forged = Seal::sign(
            &key(2), &seal.segment,
            &hex::decode(&seal.sha256).expect("hex").try_into().expect("32"),
            seal.first_seq, seal.last_seq,
            &hex::decode(&seal.last_hash).expect("hex").try_into().expect("32"),
        );
        seal = forged;
        segs[s].seal = Some(seal.to_bytes());
        let err = run(&segs, Some(key(1).verifying_key())).expect_err("other key caught");
        prop_assert!(err.to_string().contains("another key"), "{}", err);
        prop_assert_eq!(&err.file, &segs[s].name.replace(".jsonl", ".seal"));
    }
}
