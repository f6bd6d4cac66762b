//! Frame splitting and Query decoding over a buffer of pipelined messages, the relay's hot
//! path.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis_protocol::pg::{BackendMessage, FrontendMessage, next_frame, next_frontend_frame};
use std::hint::black_box;

fn frames(c: &mut Criterion) {
    // 1000 simple queries as psql would send them.
    let mut client = Vec::new();
    for i in 0..1000 {
        FrontendMessage::Query {
            sql: format!("select * from pgbench_accounts where aid = {i}").as_bytes(),
        }
        .encode(&mut client);
    }
    // 1000 DataRows of 100 bytes followed by a CommandComplete, as a server answers.
    let mut server = Vec::new();
    for _ in 0..1000 {
        BackendMessage::Other {
            tag: b'D',
            body: &[7u8; 100],
        }
        .encode(&mut server);
    }
    BackendMessage::CommandComplete {
        tag: b"SELECT 1000",
    }
    .encode(&mut server);

    let mut g = c.benchmark_group("pg");
    g.throughput(Throughput::Bytes(client.len() as u64));
    g.bench_function("split_and_decode_1000_queries", |b| {
        b.iter(|| {
            let mut rest = black_box(&client[..]);
            let mut n = 0usize;
            while let Ok(Some((f, used))) = next_frontend_frame(rest) {
                if let Ok(FrontendMessage::Query { sql }) = FrontendMessage::decode(f.tag, f.body) {
                    n += sql.len();
                }
                rest = rest.get(used..).unwrap_or_default();
            }
            n
        })
    });
    g.throughput(Throughput::Bytes(server.len() as u64));
    g.bench_function("split_1000_data_rows", |b| {
        b.iter(|| {
            let mut rest = black_box(&server[..]);
            let mut n = 0usize;
            while let Ok(Some((f, used))) = next_frame(rest) {
                n += usize::from(f.tag);
                rest = rest.get(used..).unwrap_or_default();
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, frames);
criterion_main!(benches);
