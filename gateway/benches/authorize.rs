//! `Grants::authorize` on a table of 1,000,000 live grants: ns per call (lease registered
//! and dropped each time) and resident bytes per grant, for three sets of users: 4,096
//! spread over the table (their lines miss L1 and the TLB; a machine with a large L2 may
//! still keep them there), all 1,000,000 in a scrambled order (each connect finds its
//! user's slot and grant in DRAM, as a connect on a busy gateway would), and 16 (warm).
//! Baseline rows time a bare map probe (foldhash `HashMap<Arc<str>, u32>` of 1,000,000 user
//! names, same keys, same order): back to back, where the CPU overlaps consecutive probes,
//! and one at a time, the latency floor any lookup by user name pays on a table this size.
//!
//! The grants are bulk-written to a SQLite store in a temp dir and loaded by `start_with`,
//! which is the same rebuild-from-store path a restart takes.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_config as cfg;
use portcullis_gateway::grants::{
    AuditSink, GrantRecord, GrantStatus, Grants, Proto, SessionInfo, SqliteStore,
};
use portcullis_recorder::{AuditError, Event};

const GRANTS: usize = 1_000_000;
const TARGETS: usize = 100;

/// The bench measures the table, not the audit log: events are dropped.
#[derive(Debug)]
struct NullAudit;

impl AuditSink for NullAudit {
    fn append(&self, _e: Event) -> futures::future::BoxFuture<'_, Result<u64, AuditError>> {
        Box::pin(async { Ok(0) })
    }
}

fn config() -> Arc<cfg::Config> {
    let role = cfg::Role {
        user: "app".into(),
        password: None,
        private_key_file: None,
        private_key: None,
        allow: vec![],
    };
    let targets = (0..TARGETS)
        .map(|i| cfg::Target {
            name: format!("t{i}"),
            kind: cfg::TargetKind::Postgres,
            address: "127.0.0.1:1".into(),
            database: None,
            tls: cfg::PgTlsMode::Disable,
            ca_file: None,
            host_key: None,
            max_grant: None,
            approvers: vec![],
            roles: BTreeMap::from([("read".to_string(), role.clone())]),
        })
        .collect();
    Arc::new(cfg::Config {
        gateway: cfg::GatewaySection {
            data_dir: "/nonexistent".into(),
        },
        listen: cfg::Listen {
            ssh: ([127, 0, 0, 1], 0).into(),
            postgres: ([127, 0, 0, 1], 0).into(),
            admin: ([127, 0, 0, 1], 0).into(),
        },
        tls: None,
        policy: cfg::Policy {
            max_grant: Duration::from_secs(8 * 3600),
            warn_before: Duration::from_secs(300),
            approvers: vec![],
        },
        audit: cfg::AuditSection {
            durability: cfg::Durability::Batched,
        },
        notify: cfg::Notify::default(),
        warnings: vec![],
        users: vec![],
        targets,
    })
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn fill(store: &SqliteStore) {
    let now = chrono::Utc::now();
    let mut batch = Vec::with_capacity(50_000);
    for i in 0..GRANTS {
        batch.push(GrantRecord {
            id: format!("g_{i:016x}"),
            user: format!("u{i}"),
            target: format!("t{}", i % TARGETS),
            role: "read".into(),
            status: GrantStatus::Live,
            created_at: now,
            // Spread deadlines over the next hours so the scheduler holds them all.
            expires_at: now + chrono::Duration::seconds(3600 + (i % 7200) as i64),
            reason: Some("bench".into()),
            created_by: "admin".into(),
            approved_by: None,
            request_id: None,
            revoked_at: None,
            revoked_by: None,
            version: 1,
        });
        if batch.len() == batch.capacity() {
            store.insert_grants(&batch).expect("insert");
            batch.clear();
        }
    }
    store.insert_grants(&batch).expect("insert");
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _enter = rt.enter();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("grants.db");
    fill(&SqliteStore::open(&path).expect("store"));

    let before = rss_bytes();
    let store = SqliteStore::open(&path).expect("store");
    let grants = Grants::start_with(config(), Box::new(store), Arc::new(NullAudit)).expect("start");
    let after = rss_bytes();
    assert_eq!(grants.live_count().0, GRANTS);
    println!(
        "table of {GRANTS} grants: {} bytes resident per grant (table, indexes, scheduler)",
        after.saturating_sub(before) / GRANTS as u64
    );

    // Connects cycle through 4,096 users spread over the table: more than L1 and the TLB
    // keep, so each connect walks the page tables for its user's slot and grant. The whole
    // table in a scrambled order is cold in every cache. 16 users show the same call with
    // those lines in cache.
    let cold = keys(4096);
    let all = keys(GRANTS);
    let warm = keys(16);
    // The baseline's map is built after the table so the table's bytes are measured alone.
    let bare: foldhash::HashMap<Arc<str>, u32> = (0..GRANTS)
        .map(|i| (Arc::from(format!("u{i}")), i as u32))
        .collect();
    let info = SessionInfo {
        proto: Proto::Postgres,
        client: ([127, 0, 0, 1], 50000).into(),
    };
    let found = |(u, t): &(String, String)| {
        grants
            .authorize(u, t, None, info.clone())
            .expect("live grant")
    };
    // Another key's target: almost always one this user holds no grant on.
    let refused = |keys: &[(String, String)], i: usize| {
        let (u, _) = &keys[i % keys.len()];
        let (_, t) = &keys[(i + 1) % keys.len()];
        grants.authorize(u, t, None, info.clone()).is_err()
    };
    // CPU time per call first: the figure to compare across runs on a shared machine.
    const N: usize = 4_000_000;
    cpu_ns_per_op("authorize, grant found", N, |i| {
        black_box(found(&cold[i % cold.len()]));
    });
    cpu_ns_per_op("authorize, grant found, 16 users (warm)", N, |i| {
        black_box(found(&warm[i % warm.len()]));
    });
    cpu_ns_per_op("authorize, grant found, all 1M users (DRAM)", N, |i| {
        black_box(found(&all[i % all.len()]));
    });
    cpu_ns_per_op("baseline: bare map probe", N, |i| {
        black_box(bare.get(cold[i % cold.len()].0.as_str()));
    });
    // The same probes one at a time: each key's index depends on the previous probe's
    // value, so the CPU cannot overlap one probe's cache misses with the next one's (a
    // connect does not overlap with another connect either). This is the latency floor of
    // a cold lookup by name in a table of this size on this machine.
    let zero = black_box(0usize);
    let mut last = 0usize;
    cpu_ns_per_op("baseline: bare map probe, one at a time", N, |i| {
        let (u, _) = &cold[(i + (last & zero)) % cold.len()];
        last = bare.get(u.as_str()).map_or(0, |&v| v as usize);
    });
    cpu_ns_per_op(
        "baseline: bare map probe, one at a time, all 1M users",
        N,
        |i| {
            let (u, _) = &all[(i + (last & zero)) % all.len()];
            last = bare.get(u.as_str()).map_or(0, |&v| v as usize);
        },
    );
    cpu_ns_per_op("authorize, refused", N, |i| {
        black_box(refused(&cold, i));
    });

    let mut n = 0usize;
    c.bench_function("authorize (1M grants, lease created and dropped)", |b| {
        b.iter(|| {
            n += 1;
            black_box(found(&cold[n % cold.len()]))
        })
    });
    c.bench_function("authorize, 16 users (warm)", |b| {
        b.iter(|| {
            n += 1;
            black_box(found(&warm[n % warm.len()]))
        })
    });
    c.bench_function("baseline: bare map probe (1M user names)", |b| {
        b.iter(|| {
            n += 1;
            black_box(bare.get(cold[n % cold.len()].0.as_str()))
        })
    });
    c.bench_function("authorize refused (1M grants, no grant)", |b| {
        b.iter(|| {
            n += 1;
            black_box(refused(&cold, n))
        })
    });
}

/// `count` (user, target) pairs of live grants, spread over the whole table.
fn keys(count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|k| {
            let i = (k * 7919) % GRANTS;
            (format!("u{i}"), format!("t{}", i % TARGETS))
        })
        .collect()
}

/// This thread's CPU time (user + system) in clock ticks, from /proc. Unlike wall time it
/// does not count time spent waiting for a core, so it holds up on a loaded machine.
fn thread_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

/// Runs `op` `n` times; prints CPU ns per call (ticks are 10 ms, so n must make seconds).
fn cpu_ns_per_op(what: &str, n: usize, mut op: impl FnMut(usize)) {
    let t0 = thread_cpu_ticks();
    let w0 = std::time::Instant::now();
    for i in 0..n {
        op(i);
    }
    let ticks = thread_cpu_ticks() - t0;
    let wall = w0.elapsed();
    println!(
        "{what}: {:.0} ns/op CPU time ({n} calls, wall {:.0} ns/op)",
        ticks as f64 * 1e7 / n as f64,
        wall.as_nanos() as f64 / n as f64
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
