//! Frontend messages whose length field says more than their type may carry: each is refused
//! from its header alone, as PostgreSQL refuses it (`SocketBackend`'s per-type limits), with
//! a FATAL the client can read, while the upstream session ends and everyone else is served.
#![allow(clippy::unwrap_used)]

mod pg_support;

use std::time::Duration;

use pg_support::raw::{exchange, raw_login, read_error, wait_no_backend};
use pg_support::{ALICE_PW, Harness};
use portcullis_protocol::pg::FrontendMessage;
use tokio::io::AsyncWriteExt as _;

/// PostgreSQL's `PQ_SMALL_MESSAGE_LIMIT`: the longest length field it takes for a Describe,
/// Close, Execute, Flush, Sync, Terminate, CopyDone or CopyFail.
const SMALL_MESSAGE_LIMIT: usize = 10_000;

/// Long enough for a gateway that waits for the body to be seen hanging, and far longer
/// than a refusal takes.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// A header of type `tag` whose length field says `len`, and the first bytes of a body (only
/// a few: the refusal comes from the header, and a client still sending when the gateway
/// closes could see a reset instead of the FATAL).
fn declaring(tag: u8, len: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A Describe of statement `x…` whose length field is `len` (at least 6).
fn describe_of_length(len: usize) -> Vec<u8> {
    let name = vec![b'x'; len - 6];
    let mut out = Vec::new();
    FrontendMessage::Describe {
        kind: b'S',
        name: &name,
    }
    .encode(&mut out);
    assert_eq!(out.len(), len + 1);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_declaring_more_than_its_type_allows_is_refused_at_once() {
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("alice", "pg", "rw", Duration::from_secs(3600))
        .await;
    // The healthy client, connected first and used after every refusal.
    let (healthy, _conn) = h.client("alice", ALICE_PW, "pg+rw").await;
    let over = SMALL_MESSAGE_LIMIT as u32 + 1;
    let cases: [(&str, Vec<u8>, &str); 6] = [
        (
            "a Describe declaring 1 MiB",
            declaring(b'D', 1 << 20, b"Sx\0"),
            "invalid message length 1048576: Describe messages may be at most 10000 bytes long",
        ),
        (
            "a Close declaring 1 GiB",
            declaring(b'C', 1 << 30, b"S"),
            "invalid message length 1073741824: Close messages may be at most 10000 bytes long",
        ),
        (
            "a Sync one byte over",
            declaring(b'S', over, b""),
            "Sync messages may be at most 10000 bytes long",
        ),
        (
            "an Execute one byte over",
            declaring(b'E', over, b"\0"),
            "Execute messages may be at most 10000 bytes long",
        ),
        (
            "a Flush declaring 1 MiB (a type the relay streams)",
            declaring(b'H', 1 << 20, b""),
            "Flush messages may be at most 10000 bytes long",
        ),
        (
            "a Query declaring more than PostgreSQL's 1 GiB",
            declaring(b'Q', 0x4000_0000, b"select"),
            "Query messages may be at most 1073741822 bytes long",
        ),
    ];
    for (i, (what, bytes, said)) in cases.iter().enumerate() {
        let mut s = raw_login(&h, "pg+rw").await;
        s.write_all(bytes).await.unwrap();
        let e = tokio::time::timeout(ANSWER_WITHIN, read_error(&mut s))
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer, the gateway waits for the body"))
            .unwrap_or_else(|| panic!("{what}: closed without an error"));
        assert_eq!(
            (e.0.as_str(), e.1.as_str()),
            ("FATAL", "08P01"),
            "{what}: {e:?}"
        );
        assert!(e.2.contains(said), "{what}: {e:?}");
        let round = i32::try_from(i).unwrap();
        let row = healthy
            .query_one("select $1::int + 1", &[&round])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), round + 1, "{what}");
    }
    drop(healthy);

    // Each refused session ended in error, and its backend with it.
    wait_no_backend(&h, "app_rw").await;
    let ended = h.ended_reasons().await;
    let errors = ended.iter().filter(|r| *r == "error").count();
    assert_eq!(errors, cases.len(), "{ended:?}");
}

/// The gateway is no stricter than PostgreSQL: a Describe whose length is exactly the limit
/// goes upstream, which answers it (the statement does not exist) and the session goes on;
/// one byte more is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_at_its_types_limit_goes_upstream_and_one_byte_more_does_not() {
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("alice", "pg", "rw", Duration::from_secs(3600))
        .await;
    let mut s = raw_login(&h, "pg+rw").await;
    let mut at_limit = describe_of_length(SMALL_MESSAGE_LIMIT);
    FrontendMessage::Sync.encode(&mut at_limit);
    s.write_all(&at_limit).await.unwrap();
    assert_eq!(exchange(&mut s, &[], 1).await, ["26000"]);
    let q = FrontendMessage::Query { sql: b"select 1" };
    assert_eq!(exchange(&mut s, &[q], 1).await, ["SELECT 1"]);

    // Only its start: the refusal comes from the header, and a client still sending when
    // the gateway closes could see a reset instead of the FATAL.
    let over = describe_of_length(SMALL_MESSAGE_LIMIT + 1);
    s.write_all(&over[..16]).await.unwrap();
    let e = tokio::time::timeout(ANSWER_WITHIN, read_error(&mut s))
        .await
        .expect("an answer")
        .expect("an error before the close");
    assert_eq!((e.0.as_str(), e.1.as_str()), ("FATAL", "08P01"), "{e:?}");
    assert!(
        e.2.contains("invalid message length 10001: Describe messages"),
        "{e:?}"
    );
}
