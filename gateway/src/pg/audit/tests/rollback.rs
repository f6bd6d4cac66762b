//! The error that ends an implicit transaction says how many statements before it were
//! rolled back: a pipeline (pgjdbc's `executeBatch`, say) runs up to its Sync as one
//! transaction, and each statement was logged with its tag as it completed.

use super::*;
use serde_json::Map;

/// One step of a pipelined batch: a statement and how the server answered it.
enum Step {
    Ok(&'static [u8], &'static [u8]),
    Fails(&'static [u8]),
}

/// Sends `sql` as an unnamed Parse, Bind and Execute.
fn execute(t: &mut Tracker, sql: &'static [u8]) {
    t.frontend(&FrontendMessage::Parse(portcullis_protocol::pg::Parse {
        name: b"",
        sql,
        param_types: &[],
    }));
    t.frontend(&FrontendMessage::Bind(Bind {
        portal: b"",
        statement: b"",
        param_formats: &[],
        param_count: 0,
        param_values: &[],
        result_formats: &[],
    }));
    t.frontend(&FrontendMessage::Execute {
        portal: b"",
        max_rows: 0,
    });
}

/// The server's answer to a statement that failed: a duplicate key.
fn failure(t: &mut Tracker, out: &mut Vec<Finished>) {
    let mut err = Vec::new();
    portcullis_protocol::pg::encode_error_response(&mut err, "ERROR", "23505", "duplicate key");
    let (f, _) = portcullis_protocol::pg::next_frame(&err).unwrap().unwrap();
    t.backend(&BackendMessage::decode(f.tag, f.body).unwrap(), out);
}

/// Sends each step as Parse/Bind/Execute, then one Sync, after a simple Query `before`
/// (if any) answered with its status; the server answers in order (after a failure, it
/// skips the rest). Returns the events of the batch.
fn batch(before: Before, steps: &[Step]) -> Vec<Map<String, Value>> {
    let mut t = Tracker::new(&common(), false);
    let mut out = Vec::new();
    if let Some((sql, status)) = before {
        t.frontend(&FrontendMessage::Query { sql });
        t.backend(&BackendMessage::CommandComplete { tag: b"BEGIN" }, &mut out);
        t.backend(&BackendMessage::ReadyForQuery { status }, &mut out);
        out.clear();
    }
    for step in steps {
        let (Step::Ok(sql, _) | Step::Fails(sql)) = step;
        execute(&mut t, sql);
    }
    t.frontend(&FrontendMessage::Sync);
    let mut status = b'I';
    for step in steps {
        match step {
            Step::Ok(_, tag) => t.backend(&BackendMessage::CommandComplete { tag }, &mut out),
            Step::Fails(_) => {
                failure(&mut t, &mut out);
                status = b'E';
                break;
            }
        }
    }
    t.backend(&BackendMessage::ReadyForQuery { status }, &mut out);
    out.iter().map(|f| m(&t, f)).collect()
}

/// A simple Query run before the batch, and the transaction status it left.
type Before = Option<(&'static [u8], u8)>;

/// The failing statement's `rolled_back`, and that no other event has one.
fn rolled_back(events: &[Map<String, Value>]) -> Option<u64> {
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.get("error").is_some_and(|c| c != "skipped"))
        .collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    for e in events {
        if e.get("error").is_none_or(|c| c == "skipped") {
            assert!(e.get("rolled_back").is_none(), "{e:?}");
        }
    }
    failed[0].get("rolled_back").and_then(Value::as_u64)
}

#[test]
fn an_error_in_a_pipeline_says_what_it_rolled_back() {
    use Step::{Fails, Ok};
    let ins = b"insert into t values (1)".as_slice();
    let cases: [(&str, Before, Vec<Step>, Option<u64>); 8] = [
        (
            "two inserts then a failure: both undone",
            None,
            vec![
                Ok(ins, b"INSERT 0 1"),
                Ok(ins, b"INSERT 0 1"),
                Fails(ins),
                Ok(ins, b""),
            ],
            Some(2),
        ),
        (
            "the first statement fails: nothing undone",
            None,
            vec![Fails(ins)],
            None,
        ),
        (
            "a COMMIT in the pipeline keeps what came before it",
            None,
            vec![
                Ok(ins, b"INSERT 0 1"),
                Ok(b"commit", b"COMMIT"),
                Ok(ins, b"INSERT 0 1"),
                Fails(ins),
            ],
            Some(1),
        ),
        (
            "a PREPARE TRANSACTION ends the transaction begun in the pipeline",
            None,
            vec![
                Ok(b"begin", b"BEGIN"),
                Ok(ins, b"INSERT 0 1"),
                Ok(b"prepare transaction 'x'", b"PREPARE TRANSACTION"),
                Ok(ins, b"INSERT 0 1"),
                Fails(ins),
            ],
            Some(1),
        ),
        (
            "an explicit transaction ends with its own ROLLBACK, logged",
            None,
            vec![Ok(b"begin", b"BEGIN"), Ok(ins, b"INSERT 0 1"), Fails(ins)],
            None,
        ),
        (
            "inside a transaction begun earlier: its ROLLBACK is logged",
            Some((b"begin", b'T')),
            vec![Ok(ins, b"INSERT 0 1"), Fails(ins)],
            None,
        ),
        (
            "a transaction begun earlier and committed in the pipeline",
            Some((b"begin", b'T')),
            vec![
                Ok(ins, b"INSERT 0 1"),
                Ok(b"commit", b"COMMIT"),
                Ok(ins, b"INSERT 0 1"),
                Fails(ins),
            ],
            Some(1),
        ),
        (
            "a SET and a SELECT are undone too (SET is transactional)",
            None,
            vec![
                Ok(b"set x.y = 1", b"SET"),
                Ok(b"select 1", b"SELECT 1"),
                Fails(ins),
            ],
            Some(2),
        ),
    ];
    for (what, before, steps, want) in cases {
        let events = batch(before, &steps);
        assert_eq!(rolled_back(&events), want, "{what}: {events:?}");
    }
}

#[test]
fn each_batch_starts_a_new_count() {
    let mut t = Tracker::new(&common(), false);
    let mut out = Vec::new();
    // A statement completed alone in its batch is committed by its Sync.
    for _ in 0..2 {
        execute(&mut t, b"insert into t values (1)");
        t.frontend(&FrontendMessage::Sync);
    }
    t.backend(
        &BackendMessage::CommandComplete { tag: b"INSERT 0 1" },
        &mut out,
    );
    t.backend(&BackendMessage::ReadyForQuery { status: b'I' }, &mut out);
    failure(&mut t, &mut out);
    t.backend(&BackendMessage::ReadyForQuery { status: b'I' }, &mut out);
    let events: Vec<_> = out.iter().map(|f| m(&t, f)).collect();
    assert_eq!(events.len(), 2);
    assert_eq!(rolled_back(&events), None, "{events:?}");
}
