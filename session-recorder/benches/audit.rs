//! Audit log benchmarks: append throughput in batched and strict mode (64 concurrent
//! appenders, as many sessions would be), and verify throughput in bytes per second.
//!
//! Run: `cargo bench -p portcullis-recorder --bench audit`. The log lives under the target
//! dir (a real disk), not /tmp, which may be tmpfs where fsync costs nothing.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis_recorder::{AuditLog, Durability, Event, verify};

const APPENDERS: u64 = 64;

fn event(i: u64) -> Event {
    Event::new("pg.query")
        .with("session", "s_01HZX3K9Q")
        .with("user", "alice")
        .with("target", "pg-prod")
        .with("role", "read")
        .with("sql", "select id, email from users where id = $1")
        .with("params", [i.to_string()])
        .with("duration_us", 412)
        .with("tag", "SELECT 1")
}

fn append(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(10));
    for (name, mode) in [
        ("batched", Durability::Batched),
        ("strict", Durability::Strict),
    ] {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
        let log =
            AuditLog::open(&dir.path().join("audit"), &dir.path().join("key"), mode).expect("open");
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let per = iters.div_ceil(APPENDERS);
                rt.block_on(async {
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..APPENDERS)
                        .map(|t| {
                            let log = log.clone();
                            tokio::spawn(async move {
                                for i in 0..per {
                                    log.append(event(t * per + i)).await.expect("append");
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("join");
                    }
                    // Report the time per requested iteration, although per*64 >= iters ran.
                    start
                        .elapsed()
                        .mul_f64(iters as f64 / (per * APPENDERS) as f64)
                })
            })
        });
        rt.block_on(log.close()).expect("close");
    }
    g.finish();
}

fn verify_log(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let audit = dir.path().join("audit");
    rt.block_on(async {
        let log =
            AuditLog::open(&audit, &dir.path().join("key"), Durability::Batched).expect("open");
        let tasks: Vec<_> = (0..APPENDERS)
            .map(|t| {
                let log = log.clone();
                tokio::spawn(async move {
                    for i in 0..1000 {
                        log.append(event(t * 1000 + i)).await.expect("append");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("join");
        }
        log.close().await.expect("close");
    });
    let bytes = verify(&audit, None).expect("valid").bytes;
    let mut g = c.benchmark_group("verify");
    g.throughput(Throughput::Bytes(bytes));
    g.sample_size(20);
    g.bench_function("64k_records", |b| {
        b.iter(|| verify(&audit, None).expect("valid"))
    });
    g.finish();
}

criterion_group!(benches, append, verify_log);
criterion_main!(benches);
