//! Crash test: a child process appends in strict mode and is SIGKILLed mid-stream, again and
//! again (every fourth round a torn write is also left behind). After every kill the log is reopened (recovering a torn tail), verify passes, every
//! seq the child saw acknowledged is present, and a cut is recorded as `audit.recovered`.
//!
//! One binary plays both parts (`harness = false`): with `PORTCULLIS_CRASH_CHILD=<dir>` it is
//! the appender, printing each acknowledged seq on stdout; otherwise it runs the kills.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use portcullis_recorder::{AuditLog, Durability, Event, Options, records, verify};

const CHILD_ENV: &str = "PORTCULLIS_CRASH_CHILD";
const ROUNDS: usize = 25;

fn options() -> Options {
    Options {
        // Small segments, so kills also land in the middle of rotations and seals.
        segment_max_bytes: 256 << 10,
        ..Options::new(Durability::Strict)
    }
}

fn child(dir: &Path) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let log = AuditLog::open_with(&dir.join("audit"), &dir.join("audit.key"), options())
            .expect("open");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for worker in 0..4u32 {
            let log = log.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                for i in 0u64.. {
                    // Some large events make writes long enough for a kill to tear them.
                    let pad = match i % 16 {
                        0 => 4 << 20,
                        1..=3 => 48 << 10,
                        _ => 64,
                    };
                    let ev = Event::new("pg.query")
                        .with("worker", worker)
                        .with("i", i)
                        .with("sql", "x".repeat(pad));
                    let seq = log.append(ev).await.expect("append");
                    if tx.send(seq).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        while let Some(seq) = rx.recv().await {
            // Printed only after append returned, i.e. after fsync.
            writeln!(out, "{seq}").expect("stdout");
            out.flush().expect("flush");
        }
    });
}

/// A SIGKILL rarely lands inside a write(2), so every few rounds the test also leaves what a
/// torn write leaves: the first half of one more record at the end of the open segment.
fn tear_tail(audit: &Path) {
    let segs = portcullis_recorder::segment::list(audit).expect("list");
    let Some(last) = segs.last().filter(|s| !s.seal_path.exists()) else {
        return;
    };
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&last.path)
        .expect("open segment");
    use std::io::Write;
    f.write_all(br#"{"seq":999999999,"ts":"2026-11-29T10:00:00.000000001Z","prev":"00"#)
        .expect("tear");
}

fn main() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let audit = dir.join("audit");
    let me = std::env::current_exe().expect("current exe");
    let mut acked = BTreeSet::new();
    let mut cuts = 0;
    for round in 0..ROUNDS {
        let mut c = Command::new(&me)
            .env(CHILD_ENV, dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let mut lines = BufReader::new(c.stdout.take().expect("stdout")).lines();
        // Kill at a different point each round, never before the child made progress.
        let kill_after = 5 + (round * 37) % 150;
        for _ in 0..kill_after {
            let line = lines.next().expect("child output").expect("line");
            acked.insert(line.parse::<u64>().expect("seq"));
        }
        c.kill().expect("SIGKILL");
        // Everything printed before the kill was acknowledged too.
        for line in lines {
            acked.insert(line.expect("line").parse::<u64>().expect("seq"));
        }
        c.wait().expect("wait");

        if round % 4 == 3 {
            tear_tail(&audit);
        }
        let torn = verify(&audit, None).err();
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let log =
                AuditLog::open_with(&audit, &dir.join("audit.key"), options()).expect("reopen");
            log.close().await.expect("close");
        });
        let summary = verify(&audit, None)
            .unwrap_or_else(|e| panic!("round {round}: verify after reopen: {e}"));
        let all: Vec<_> = records(&audit)
            .expect("records")
            .collect::<Result<_, _>>()
            .expect("read");
        assert_eq!(all.len() as u64, summary.records);
        let present: BTreeSet<u64> = all.iter().map(|r| r.seq).collect();
        let missing: Vec<_> = acked.difference(&present).collect();
        assert!(
            missing.is_empty(),
            "round {round}: acknowledged seqs missing: {missing:?}"
        );
        if let Some(e) = torn {
            let last = all.last().expect("a record");
            assert_eq!(
                last.kind(),
                "audit.recovered",
                "round {round}: cut after {e} not recorded"
            );
            assert_eq!(
                last.event["file"].as_str(),
                Some(e.file.as_str()),
                "round {round}"
            );
            assert_eq!(
                last.event["offset"].as_u64(),
                Some(e.offset),
                "round {round}"
            );
            cuts += 1;
        }
    }
    println!(
        "crash test: {ROUNDS} kills, {} acknowledged seqs all present, {cuts} torn tails cut and recorded",
        acked.len()
    );
}
