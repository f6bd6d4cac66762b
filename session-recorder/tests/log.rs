//! The audit log end to end on real files: append, rotate, seal, close, reopen, verify,
//! recover a torn tail, refuse inconsistencies, fail closed.

use std::path::Path;
use std::time::Duration;

use portcullis_recorder::{AuditLog, Durability, Event, JsonEvent, Options, records, verify};
use sha2::{Digest, Sha256};

fn opts(d: Durability, max_bytes: u64) -> Options {
    Options {
        segment_max_bytes: max_bytes,
        ..Options::new(d)
    }
}

async fn fill(log: &AuditLog, n: usize) -> Vec<u64> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            log.append(
                Event::new("pg.query")
                    .with("sql", format!("select {i}"))
                    .with("user", "alice"),
            )
            .await
            .expect("append")
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.expect("join"));
    }
    seqs
}

fn paths(d: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    (d.join("audit"), d.join("audit.key"))
}

#[tokio::test]
async fn appends_rotate_seal_and_verify_across_reopen() {
    let d = tempfile::tempdir().expect("tempdir");
    let (dir, key) = paths(d.path());
    for mode in [Durability::Batched, Durability::Strict] {
        let log = AuditLog::open_with(&dir, &key, opts(mode, 4096)).expect("open");
        assert!(log.healthy());
        let mut seqs = fill(&log, 300).await;
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), 300, "every append gets its own seq");
        log.close().await.expect("close");
        assert!(!log.healthy());
        assert!(
            log.append(Event::new("x")).await.is_err(),
            "closed log refuses events"
        );
    }
    let summary = verify(&dir, None).expect("verify");
    assert_eq!(summary.records, 600);
    assert_eq!(summary.last_seq, 600);
    assert!(summary.segments > 2, "rotated: {summary:?}");
    assert_eq!(
        summary.sealed, summary.segments,
        "close seals the open segment"
    );
    let key_hex = std::fs::read_to_string(&key).expect("key");
    let pubkey = ed25519_dalek::SigningKey::from_bytes(
        &hex::decode(key_hex.trim())
            .expect("hex")
            .try_into()
            .expect("32"),
    )
    .verifying_key();
    assert_eq!(summary.pubkey, Some(hex::encode(pubkey.to_bytes())));
    verify(&dir, Some(pubkey)).expect("verify with the right key");
    let other = ed25519_dalek::SigningKey::from_bytes(&[5; 32]).verifying_key();
    let err = verify(&dir, Some(other)).expect_err("another key fails");
    assert!(err.to_string().contains("another key"), "{err}");
    let all: Vec<_> = records(&dir)
        .expect("records")
        .collect::<Result<_, _>>()
        .expect("read");
    assert_eq!(all.len(), 600);
    assert!(all.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_recorded() {
    let d = tempfile::tempdir().expect("tempdir");
    let (dir, key) = paths(d.path());
    let log = AuditLog::open(&dir, &key, Durability::Strict).expect("open");
    fill(&log, 3).await;
    drop(log);
    let seg = dir.join("seg-000001.jsonl");
    // The writer thread syncs and exits after the last handle drops; appending junk now
    // stands for a write that a crash tore in half.
    let before = std::fs::read(&seg).expect("read");
    let mut torn = before.clone();
    torn.extend_from_slice(b"{\"seq\":4,\"ts\":\"2026-");
    std::fs::write(&seg, &torn).expect("write");
    assert!(
        verify(&dir, None).is_err(),
        "a torn tail fails verify until repaired"
    );
    let log = AuditLog::open(&dir, &key, Durability::Strict).expect("reopen repairs");
    let seq = log.append(Event::new("after")).await.expect("append");
    assert_eq!(seq, 5);
    log.close().await.expect("close");
    let all: Vec<_> = records(&dir)
        .expect("records")
        .collect::<Result<_, _>>()
        .expect("read");
    let rec = &all[3];
    assert_eq!(rec.kind(), "audit.recovered");
    assert_eq!(rec.event["file"], "seg-000001.jsonl");
    assert_eq!(rec.event["offset"], before.len() as u64);
    assert_eq!(rec.event["bytes"], (torn.len() - before.len()) as u64);
    let side = format!("seg-000001.jsonl.cut-{}", before.len());
    assert_eq!(rec.event["kept_in"], side.as_str());
    assert_eq!(
        rec.event["sha256"],
        hex::encode(Sha256::digest(&torn[before.len()..]))
    );
    assert_eq!(
        std::fs::read(dir.join(&side)).expect("side file"),
        &torn[before.len()..]
    );
    verify(&dir, None).expect("verify after repair");
}

/// A final record the log's signed head vouches for was durable: altered, it is refused at
/// open and by verify, and nothing is cut.
#[tokio::test]
async fn a_tampered_final_record_the_head_vouches_for_refuses_to_open() {
    let d = tempfile::tempdir().expect("tempdir");
    let (dir, key) = paths(d.path());
    let log = AuditLog::open(&dir, &key, Durability::Strict).expect("open");
    log.append(Event::new("pg.query").with("sql", "select 1"))
        .await
        .expect("append");
    log.append(Event::new("pg.query").with("sql", "drop table audit_me"))
        .await
        .expect("append");
    drop(log);
    let seg = dir.join("seg-000001.jsonl");
    let before = std::fs::read(&seg).expect("read");
    let altered = String::from_utf8(before.clone())
        .expect("utf-8")
        .replace("drop table audit_me", "select 2 -- nothing")
        .into_bytes();
    std::fs::write(&seg, &altered).expect("write");
    let err = AuditLog::open(&dir, &key, Durability::Strict).expect_err("refused");
    assert!(err.to_string().contains("not torn by a crash"), "{err}");
    assert_eq!(std::fs::read(&seg).expect("read"), altered, "nothing cut");
    let err = verify(&dir, None).expect_err("verify fails");
    assert_eq!(err.seq, 2, "{err}");

    // Removing the altered record instead leaves the log short of its head.
    let first = before.iter().position(|&b| b == b'\n').expect("line") + 1;
    std::fs::write(&seg, &before[..first]).expect("write");
    let err = verify(&dir, None).expect_err("verify fails");
    assert!(err.to_string().contains("records were removed"), "{err}");
    let err = AuditLog::open(&dir, &key, Durability::Strict).expect_err("refused");
    assert!(err.to_string().contains("records were removed"), "{err}");
    // And removing the head too is no way out.
    std::fs::remove_file(dir.join("head")).expect("remove the head");
    let err = verify(&dir, None).expect_err("verify fails");
    assert!(err.to_string().contains("no signed head"), "{err}");
    let err = AuditLog::open(&dir, &key, Durability::Strict).expect_err("refused");
    assert!(err.to_string().contains("no signed head"), "{err}");
}

#[tokio::test]
async fn a_tampered_final_record_is_cut_but_kept() {
    let d = tempfile::tempdir().expect("tempdir");
    let (dir, key) = paths(d.path());
    let log = AuditLog::open(&dir, &key, Durability::Strict).expect("open");
    log.append(Event::new("pg.query").with("sql", "select 1"))
        .await
        .expect("append");
    // The head as it stood before the last record was synced: a crash between the record's
    // write and its sync leaves the head here.
    let head = std::fs::read(dir.join("head")).expect("head");
    log.append(Event::new("pg.query").with("sql", "drop table audit_me"))
        .await
        .expect("append");
    drop(log);
    std::fs::write(dir.join("head"), &head).expect("put the older head back");
    // A complete last line the head does not vouch for, altered after it was written:
    // recovery cannot tell this from a torn write, so it cuts it, but the altered bytes must
    // survive for whoever looks.
    let seg = dir.join("seg-000001.jsonl");
    let before = std::fs::read(&seg).expect("read");
    let last = before[..before.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .expect("two lines")
        + 1;
    let altered = String::from_utf8(before.clone())
        .expect("utf-8")
        .replace("drop table audit_me", "select 2 -- nothing")
        .into_bytes();
    assert_eq!(altered.len(), before.len());
    std::fs::write(&seg, &altered).expect("write");
    assert!(verify(&dir, None).is_err(), "the altered line fails verify");

    let log = AuditLog::open(&dir, &key, Durability::Strict).expect("reopen cuts");
    log.close().await.expect("close");
    let all: Vec<_> = records(&dir)
        .expect("records")
        .collect::<Result<_, _>>()
        .expect("read");
    assert_eq!(all.len(), 2);
    let rec = &all[1];
    assert_eq!(rec.kind(), "audit.recovered");
    assert_eq!(rec.event["offset"], last as u64);
    assert!(
        rec.str_field("reason")
            .is_some_and(|r| r.contains("hash mismatch")),
        "{rec:?}"
    );
    let side = format!("seg-000001.jsonl.cut-{last}");
    assert_eq!(rec.event["kept_in"], side.as_str());
    assert_eq!(
        rec.event["sha256"],
        hex::encode(Sha256::digest(&altered[last..]))
    );
    assert_eq!(
        std::fs::read(dir.join(&side)).expect("side file"),
        &altered[last..]
    );
    let summary = verify(&dir, Some(log.public_key())).expect("verify after the cut");
    assert_eq!(summary.kept, std::slice::from_ref(&side));

    // The side file is evidence the chain vouches for (its sha256 is in a record): verify
    // fails when it is altered or removed, naming it and the record.
    let mut changed = altered[last..].to_vec();
    changed[20] ^= 1;
    std::fs::write(dir.join(&side), &changed).expect("alter the side file");
    let err = verify(&dir, Some(log.public_key())).expect_err("an altered side file fails");
    assert_eq!((err.file.as_str(), err.seq), (side.as_str(), 2), "{err}");
    assert!(
        err.to_string().contains("not what this file holds now"),
        "{err}"
    );
    std::fs::remove_file(dir.join(&side)).expect("remove the side file");
    let err = verify(&dir, Some(log.public_key())).expect_err("a removed side file fails");
    assert!(err.to_string().contains("which is gone"), "{err}");
    std::fs::write(dir.join(&side), &altered[last..]).expect("put it back");
    verify(&dir, Some(log.public_key())).expect("verify with the side file back");
}

#[tokio::test]
async fn damage_before_the_last_record_refuses_to_open() {
    let d = tempfile::tempdir().expect("tempdir");
    let (dir, key) = paths(d.path());
    let log = AuditLog::open(&dir, &key, Durability::Strict).expect("open");
    fill(&log, 3).await;
    drop(log);
    let seg = dir.join("seg-000001.jsonl");
    let mut bytes = std::fs::read(&seg).expect("read");
    let at = bytes.iter().position(|&b| b == b'\n').expect("line") + 20;
    bytes[at] ^= 1;
    std::fs::write(&seg, &bytes).expect("write");
    let err = AuditLog::open(&dir, &key, Durability::Strict).expect_err("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("seg-000001.jsonl") && msg.contains("offset"),
        "{msg}"
    );
}

#[tokio::test]
async fn an_io_error_fails_closed() {
    let d = tempfile::tempdir().expect("tempdir");
    let (dir, key) = paths(d.path());
    let log = AuditLog::open_with(&dir, &key, opts(Durability::Batched, 1)).expect("open");
    log.append(Event::new("first")).await.expect("append");
    // The next append must rotate, and creating the next segment fails without the directory.
    std::fs::remove_dir_all(&dir).expect("remove");
    let err = log
        .append(Event::new("second"))
        .await
        .expect_err("rotation fails");
    eprintln!("second: {err}");
    assert!(!log.healthy());
    assert!(log.append(Event::new("third")).await.is_err());
}

#[tokio::test]
async fn age_rotation_seals_old_segments() {
    let d = tempfile::tempdir().expect("tempdir");
    let (dir, key) = paths(d.path());
    let o = Options {
        segment_max_age: Duration::ZERO,
        ..Options::new(Durability::Batched)
    };
    let log = AuditLog::open_with(&dir, &key, o).expect("open");
    for i in 0..3 {
        log.append(Event::new("x").with("i", i))
            .await
            .expect("append");
    }
    let s = verify(&dir, None).expect("verify");
    assert_eq!((s.segments, s.sealed, s.records), (3, 2, 3));
    assert_eq!(s.open_segment.as_deref(), Some("seg-000003.jsonl"));
}

#[tokio::test]
async fn submitted_events_are_written_in_order_before_a_later_append_returns() {
    for d in [Durability::Batched, Durability::Strict] {
        let t = tempfile::tempdir().expect("tempdir");
        let (dir, key) = paths(t.path());
        let log = AuditLog::open_with(&dir, &key, opts(d, 4096)).expect("open");
        for i in 0..500 {
            log.submit(Event::new("pg.query").with("n", i))
                .await
                .expect("submit");
        }
        let last = log.append(Event::new("marker")).await.expect("append");
        // Durable once the append returned: read before close, across rotated segments.
        let ns: Vec<u64> = records(&dir)
            .expect("records")
            .map(|r| r.expect("record"))
            .take_while(|r| r.seq < last)
            .filter_map(|r| r.event.get("n").and_then(|v| v.as_u64()))
            .collect();
        assert_eq!(ns, (0..500).collect::<Vec<_>>(), "{d:?}");
        log.close().await.expect("close");
        verify(&dir, Some(log.public_key())).expect("verify");
        // A closed log refuses submits.
        assert!(log.submit(Event::new("late")).await.is_err());
    }
}

/// 500 events submitted at once are written in a few batches; each record is still stamped
/// as it is written, so the timestamps rise along the chain and none are shared.
#[tokio::test]
async fn records_of_one_batch_have_their_own_rising_timestamps() {
    let t = tempfile::tempdir().expect("tempdir");
    let (dir, key) = paths(t.path());
    let log = AuditLog::open_with(&dir, &key, opts(Durability::Batched, 1 << 20)).expect("open");
    for i in 0..500 {
        log.submit(Event::new("pg.query").with("n", i))
            .await
            .expect("submit");
    }
    log.close().await.expect("close");
    let times: Vec<_> = records(&dir)
        .expect("records")
        .map(|r| r.expect("record"))
        .filter(|r| r.event.contains_key("n"))
        .map(|r| r.time().expect("an RFC 3339 ts"))
        .collect();
    assert_eq!(times.len(), 500);
    for w in times.windows(2) {
        assert!(w[0] < w[1], "{} then {}", w[0], w[1]);
    }
}

/// A typed event, handed over pre-serialised, lands as the same line an `Event` map with the
/// same fields does, interleaved with map events in one chain that verifies and reads back.
#[tokio::test]
async fn typed_events_and_maps_share_one_chain() {
    #[derive(serde::Serialize)]
    struct Typed<'a> {
        n: u64,
        sql: &'a str,
        #[serde(rename = "type")]
        kind: &'a str,
    }
    for d in [Durability::Batched, Durability::Strict] {
        let t = tempfile::tempdir().expect("tempdir");
        let (dir, key) = paths(t.path());
        let log = AuditLog::open_with(&dir, &key, opts(d, 4096)).expect("open");
        let sql = "select 'it''s'\n\u{1}\"é\"";
        for i in 0..200u64 {
            if i % 2 == 0 {
                let ev = JsonEvent::new(&Typed {
                    n: i,
                    sql,
                    kind: "pg.query",
                })
                .expect("object");
                log.submit(ev).await.expect("submit");
            } else {
                let ev = Event::new("pg.query").with("n", i).with("sql", sql);
                log.submit(ev).await.expect("submit");
            }
        }
        log.close().await.expect("close");
        verify(&dir, Some(log.public_key())).expect("verify");
        let lines: Vec<String> = std::fs::read_dir(&dir)
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .flat_map(|p| {
                let text = std::fs::read_to_string(p).expect("read");
                text.lines().map(str::to_owned).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(lines.len(), 200);
        for l in &lines {
            // Same key order and escaping whichever way the event came in.
            let event = &l[l.find(",\"event\":").expect("event") + 9..l.len() - 1];
            let v: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(event).expect("json");
            assert_eq!(serde_json::to_string(&v).expect("json"), event, "{d:?}");
            assert_eq!(v["sql"], sql);
        }
        let ns: Vec<u64> = records(&dir)
            .expect("records")
            .map(|r| r.expect("record"))
            .filter_map(|r| r.event.get("n").and_then(|v| v.as_u64()))
            .collect();
        assert_eq!(ns, (0..200).collect::<Vec<_>>(), "{d:?}");
    }
}

#[test]
fn a_json_event_must_be_an_object() {
    assert!(JsonEvent::new(&"a string").is_err());
    assert!(JsonEvent::new(&[1, 2]).is_err());
    assert!(JsonEvent::new(&serde_json::json!({"type": "x"})).is_ok());
}

/// `verify` names each bad place as it is: an unsealed segment by the seqs it holds (not by
/// the next segment's first seq), the end of a log emptied of its records at the segment
/// where it ends, and a missing head as the file it is, with no offset or seq it lacks. Each
/// of them still fails.
#[tokio::test]
async fn verify_names_the_place_of_a_missing_seal_an_emptied_segment_and_a_missing_head() {
    let d = tempfile::tempdir().expect("tempdir");
    let (dir, key) = paths(d.path());
    let log = AuditLog::open_with(&dir, &key, opts(Durability::Strict, 4096)).expect("open");
    for i in 0..100 {
        log.append(Event::new("pg.query").with("sql", format!("select {i}")))
            .await
            .expect("append");
    }
    log.close().await.expect("close");
    let whole = verify(&dir, None).expect("verify");
    assert!(whole.segments > 2, "{whole:?}");
    let seg1 = std::fs::read(dir.join("seg-000001.jsonl")).expect("segment 1");
    let in_seg1 = seg1.iter().filter(|&&b| b == b'\n').count() as u64;
    assert!(in_seg1 > 1 && in_seg1 < whole.last_seq, "{in_seg1}");

    let seal = dir.join("seg-000001.seal");
    let sealed = std::fs::read(&seal).expect("seal");
    std::fs::remove_file(&seal).expect("remove seal");
    let err = verify(&dir, None).expect_err("an unsealed segment before another fails");
    assert_eq!(
        err.to_string(),
        format!(
            "seg-000001.jsonl (seqs 1 to {in_seg1}): segment is not sealed but is followed by seg-000002.jsonl"
        )
    );
    assert_eq!(err.seq, 1);
    std::fs::write(&seal, sealed).expect("put the seal back");
    verify(&dir, None).expect("whole again");

    let head = std::fs::read(dir.join("head")).expect("head");
    std::fs::remove_file(dir.join("head")).expect("remove head");
    let err = verify(&dir, None).expect_err("no head fails");
    assert!(
        err.to_string()
            .starts_with("head: the log has no signed head"),
        "{err}"
    );
    std::fs::write(dir.join("head"), head).expect("put the head back");

    // A log whose only segment was emptied (and unsealed): it ends at offset 0 of that
    // segment, where seq 1 is missing.
    let one = tempfile::tempdir().expect("tempdir");
    let (dir, key) = paths(one.path());
    let log = AuditLog::open(&dir, &key, Durability::Strict).expect("open");
    log.append(Event::new("pg.query").with("sql", "select 1"))
        .await
        .expect("append");
    log.close().await.expect("close");
    std::fs::write(dir.join("seg-000001.jsonl"), b"").expect("empty it");
    std::fs::remove_file(dir.join("seg-000001.seal")).expect("remove seal");
    let err = verify(&dir, None).expect_err("an emptied log fails");
    assert!(
        err.to_string().starts_with(
            "seg-000001.jsonl at offset 0 (seq 1): the log ends at seq 0 but its signed head vouches for records up to seq "
        ),
        "{err}"
    );
}
