//! The audit tap's statement tracking, driven message by message.
#![allow(clippy::unwrap_used)]

use portcullis_protocol::pg::Bind;

use super::*;

mod rollback;

/// The event of a finished statement, as the log will hold it.
fn m(t: &Tracker, f: &Finished) -> serde_json::Map<String, Value> {
    map(&t.payload(f))
}

/// An event as the log will hold it.
fn map(p: &Payload) -> serde_json::Map<String, Value> {
    match p {
        Payload::Json(j) => j.to_map(),
        Payload::Map(e) => e.0.clone(),
    }
}

fn common() -> Common {
    Common {
        session: "s_1".into(),
        user: "alice".into(),
        target: "pg".into(),
        role: "read".into(),
        grant: "g_1".into(),
        client: "127.0.0.1:1".into(),
    }
}

#[test]
fn pipelined_extended_batches_and_skips() {
    let mut t = Tracker::new(&common(), false);
    let mut out = Vec::new();
    let parse = |sql: &'static [u8]| {
        FrontendMessage::Parse(portcullis_protocol::pg::Parse {
            name: b"",
            sql,
            param_types: &[],
        })
    };
    let values = [0, 0, 0, 1, b'7'];
    let bind = FrontendMessage::Bind(Bind {
        portal: b"",
        statement: b"",
        param_formats: &[],
        param_count: 1,
        param_values: &values,
        result_formats: &[],
    });
    let exec = FrontendMessage::Execute {
        portal: b"",
        max_rows: 0,
    };
    for m in [parse(b"select $1"), bind, exec, FrontendMessage::Sync] {
        t.frontend(&m);
    }
    for m in [
        parse(b"select 1/0"),
        bind,
        exec,
        parse(b"select 2"),
        bind,
        exec,
        FrontendMessage::Sync,
    ] {
        t.frontend(&m);
    }
    t.backend(
        &BackendMessage::CommandComplete { tag: b"SELECT 1" },
        &mut out,
    );
    t.backend(&BackendMessage::ReadyForQuery { status: b'I' }, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(m(&t, &out[0])["sql"], "select $1");
    assert_eq!(m(&t, &out[0])["params"], serde_json::json!(["7"]));
    assert_eq!(m(&t, &out[0])["tag"], "SELECT 1");
    let mut err = Vec::new();
    portcullis_protocol::pg::encode_error_response(&mut err, "ERROR", "22012", "division by zero");
    let (f, _) = portcullis_protocol::pg::next_frame(&err).unwrap().unwrap();
    t.backend(&BackendMessage::decode(f.tag, f.body).unwrap(), &mut out);
    t.backend(&BackendMessage::ReadyForQuery { status: b'I' }, &mut out);
    assert_eq!(out.len(), 3);
    assert_eq!(m(&t, &out[1])["sql"], "select 1/0");
    assert_eq!(m(&t, &out[1])["error"], "22012");
    assert_eq!(m(&t, &out[2])["sql"], "select 2");
    assert_eq!(m(&t, &out[2])["error"], "skipped");
}

#[test]
fn simple_query_with_copy() {
    let mut t = Tracker::new(&common(), false);
    let mut out = Vec::new();
    t.frontend(&FrontendMessage::Query {
        sql: b"copy t from stdin",
    });
    t.backend(
        &BackendMessage::CopyResponse {
            tag: b'G',
            format: 0,
            columns: &[0, 0],
        },
        &mut out,
    );
    t.copy_bytes(10);
    t.copy_bytes(5);
    t.backend(
        &BackendMessage::CommandComplete { tag: b"COPY 2" },
        &mut out,
    );
    assert!(out.is_empty());
    t.backend(&BackendMessage::ReadyForQuery { status: b'I' }, &mut out);
    assert_eq!(m(&t, &out[0])["copy_bytes"], 15);
    assert_eq!(m(&t, &out[0])["tag"], "COPY 2");
    assert_eq!(m(&t, &out[0])["session"], "s_1");
}

#[test]
fn strict_records_the_statement_first_and_its_outcome_after() {
    let mut t = Tracker::new(&common(), true);
    let mut out = Vec::new();
    let rec = t
        .frontend(&FrontendMessage::Query { sql: b"select 1" })
        .unwrap();
    assert_eq!(map(&rec)["type"], "pg.query");
    assert_eq!(map(&rec)["sql"], "select 1");
    assert_eq!(map(&rec)["stmt"], 1);
    assert!(!map(&rec).contains_key("tag"));
    let rec = t
        .frontend(&FrontendMessage::Execute {
            portal: b"",
            max_rows: 0,
        })
        .unwrap();
    assert_eq!(map(&rec)["stmt"], 2);
    assert_eq!(map(&rec)["params"], serde_json::json!([]));
    assert!(t.frontend(&FrontendMessage::Sync).is_none());
    t.backend(
        &BackendMessage::CommandComplete { tag: b"SELECT 1" },
        &mut out,
    );
    t.backend(&BackendMessage::ReadyForQuery { status: b'I' }, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(m(&t, &out[0])["type"], "pg.result");
    assert_eq!(m(&t, &out[0])["stmt"], 1);
    assert_eq!(m(&t, &out[0])["tag"], "SELECT 1");
    assert!(!m(&t, &out[0]).contains_key("sql"));
    t.backend(
        &BackendMessage::CommandComplete { tag: b"SELECT 2" },
        &mut out,
    );
    assert_eq!(m(&t, &out[1])["stmt"], 2);
    // Batched mode returns no statement record.
    let mut b = Tracker::new(&common(), false);
    assert!(
        b.frontend(&FrontendMessage::Query { sql: b"select 1" })
            .is_none()
    );
}

/// Binary parameters are rendered by the types the Parse declared or, when it left them
/// to the server, by the ParameterDescription that answers the statement's Describe.
#[test]
fn binary_params_are_rendered_by_their_types() {
    let mut t = Tracker::new(&common(), false);
    let mut out = Vec::new();
    let values = [0, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0, 2, b'n', b'2'];
    let bind = |statement| {
        FrontendMessage::Bind(Bind {
            portal: b"",
            statement,
            param_formats: &[0, 1],
            param_count: 2,
            param_values: &values,
            result_formats: &[],
        })
    };
    let exec = FrontendMessage::Execute {
        portal: b"",
        max_rows: 0,
    };
    let int4_text = [0, 0, 0, 23, 0, 0, 0, 25];
    let parse = |name, param_types| {
        FrontendMessage::Parse(portcullis_protocol::pg::Parse {
            name,
            sql: b"select $1, $2",
            param_types,
        })
    };
    let describe = |name| FrontendMessage::Describe { kind: b'S', name };
    let described = BackendMessage::ParameterDescription { types: &int4_text };
    let done = BackendMessage::CommandComplete { tag: b"SELECT 1" };
    let parsed = BackendMessage::ParseComplete;
    let ready = BackendMessage::ReadyForQuery { status: b'I' };
    let mut err = Vec::new();
    portcullis_protocol::pg::encode_error_response(&mut err, "ERROR", "26000", "no such");
    let (f, _) = portcullis_protocol::pg::next_frame(&err).unwrap().unwrap();
    let error = BackendMessage::decode(f.tag, f.body).unwrap();
    let mut round = |front: &[FrontendMessage<'_>], back: &[&BackendMessage<'_>]| {
        for m in front {
            t.frontend(m);
        }
        for m in back {
            t.backend(m, &mut out);
        }
    };
    // Declared in the Parse (pgjdbc).
    round(
        &[
            parse(b"a", &int4_text),
            bind(b"a"),
            exec,
            FrontendMessage::Sync,
        ],
        &[&parsed, &done, &ready],
    );
    // Left to the server, described first (tokio-postgres). An unknown statement's
    // Describe, answered by an error, leaves nothing behind to shift a later match.
    round(
        &[parse(b"b", &[]), describe(b"b"), FrontendMessage::Sync],
        &[&parsed, &described, &ready],
    );
    round(
        &[describe(b"nope"), FrontendMessage::Sync],
        &[&error, &ready],
    );
    round(&[describe(b"c"), FrontendMessage::Sync], &[&error, &ready]);
    round(&[bind(b"b"), exec, FrontendMessage::Sync], &[&done, &ready]);
    // Never described: unknown types, hex.
    round(
        &[parse(b"c", &[]), bind(b"c"), exec, FrontendMessage::Sync],
        &[&parsed, &done, &ready],
    );
    let params: Vec<_> = out.iter().map(|e| m(&t, e)["params"].clone()).collect();
    assert_eq!(
        params,
        [
            serde_json::json!(["2", "n2"]),
            serde_json::json!(["2", "n2"]),
            serde_json::json!(["\\x00000002", "\\x6e32"]),
        ]
    );
}

/// The steps of describing statement `s`, whose Parse left its type to the server.
fn parse_s(t: &mut Tracker) {
    t.frontend(&FrontendMessage::Parse(portcullis_protocol::pg::Parse {
        name: b"s",
        sql: b"select $1",
        param_types: &[],
    }));
}

fn describe_s(t: &mut Tracker) {
    t.frontend(&FrontendMessage::Describe {
        kind: b'S',
        name: b"s",
    });
}

fn server(t: &mut Tracker, msg: &BackendMessage<'_>) {
    t.backend(msg, &mut Vec::new());
}

const INT4: BackendMessage<'static> = BackendMessage::ParameterDescription {
    types: &[0, 0, 0, 23],
};
const READY: BackendMessage<'static> = BackendMessage::ReadyForQuery { status: b'I' };
const PARSED: BackendMessage<'static> = BackendMessage::ParseComplete;

fn types_of_s(t: &Tracker) -> &[u32] {
    &t.statements.get(b"s").unwrap().types
}

/// A client that describes more statements in one batch than are kept: no description
/// of that batch is matched to a statement (none could be matched right); the next
/// batch's are.
#[test]
fn too_many_describes_match_no_description() {
    let mut t = Tracker::new(&common(), false);
    parse_s(&mut t);
    for _ in 0..=MAX_NAMES {
        describe_s(&mut t);
    }
    t.frontend(&FrontendMessage::Sync);
    server(&mut t, &PARSED);
    server(&mut t, &INT4);
    assert!(types_of_s(&t).is_empty());
    server(&mut t, &READY);
    describe_s(&mut t);
    t.frontend(&FrontendMessage::Sync);
    server(&mut t, &INT4);
    assert_eq!(types_of_s(&t), [23]);
}

/// A Describe sent before the previous batch is answered (tokio-postgres closes one
/// statement and prepares the next in one write) still meets its description.
#[test]
fn a_describe_pipelined_behind_a_sync_meets_its_description() {
    let mut t = Tracker::new(&common(), false);
    t.frontend(&FrontendMessage::Sync);
    parse_s(&mut t);
    describe_s(&mut t);
    t.frontend(&FrontendMessage::Sync);
    server(&mut t, &READY);
    server(&mut t, &PARSED);
    server(&mut t, &INT4);
    assert_eq!(types_of_s(&t), [23]);
}

/// The unnamed statement parsed again before the description of the first one arrives
/// (a pipelining client): the description is not the new statement's, so it is not used.
#[test]
fn a_description_of_a_replaced_statement_is_not_used() {
    let mut t = Tracker::new(&common(), false);
    parse_s(&mut t);
    describe_s(&mut t);
    parse_s(&mut t);
    t.frontend(&FrontendMessage::Sync);
    server(&mut t, &INT4);
    assert!(types_of_s(&t).is_empty());
}

#[test]
fn sql_is_kept_as_lossy_capped_text() {
    let mut t = Tracker::new(&common(), false);
    let mut out = Vec::new();
    let long = vec![b'x'; MAX_SQL + 10];
    let cases: [(&[u8], String); 3] = [
        (
            b"select '\xff' -- \"q\" \\ \n",
            "select '\u{fffd}' -- \"q\" \\ \n".into(),
        ),
        (b"select 1", "select 1".into()),
        (&long, format!("{}\u{2026}[truncated]", "x".repeat(MAX_SQL))),
    ];
    for (sql, want) in cases {
        t.frontend(&FrontendMessage::Query { sql });
        t.backend(
            &BackendMessage::CommandComplete { tag: b"SELECT 1" },
            &mut out,
        );
        t.backend(&BackendMessage::ReadyForQuery { status: b'I' }, &mut out);
        let ev = m(&t, out.last().unwrap());
        assert_eq!(ev["sql"], want.as_str());
        assert!(matches!(
            out.last().map(|f| t.payload(f)),
            Some(Payload::Json(_))
        ));
    }
}

#[test]
fn prepared_statement_sql_is_shared_not_copied() {
    let mut t = Tracker::new(&common(), false);
    t.frontend(&FrontendMessage::Parse(portcullis_protocol::pg::Parse {
        name: b"s1",
        sql: b"select $1",
        param_types: &[],
    }));
    let bind = FrontendMessage::Bind(Bind {
        portal: b"",
        statement: b"s1",
        param_formats: &[],
        param_count: 0,
        param_values: &[],
        result_formats: &[],
    });
    t.frontend(&bind);
    let stmt = t.statements.get(b"s1".as_slice()).unwrap();
    let (_, portal) = t.portals.get(b"".as_slice()).unwrap();
    assert!(stmt.sql.shares_text(&portal.sql));
}

/// A Query too large to buffer is answered by a ReadyForQuery like any other, so it counts
/// as a batch: the Describe after it still meets its description.
#[test]
fn an_oversize_query_counts_as_a_batch() {
    let mut t = Tracker::new(&common(), false);
    t.frontend_oversize(b'Q', b"select 'a very long query'");
    parse_s(&mut t);
    describe_s(&mut t);
    t.frontend(&FrontendMessage::Sync);
    server(
        &mut t,
        &BackendMessage::CommandComplete { tag: b"SELECT 1" },
    );
    server(&mut t, &READY);
    server(&mut t, &PARSED);
    server(&mut t, &INT4);
    assert_eq!(types_of_s(&t), [23]);
}

/// A statement refused as too long to log whole is logged as refused (54000, no tag) with
/// the start of its SQL marked as cut; a Parse's statement name is not taken for SQL.
#[test]
fn a_refused_statement_is_logged_from_its_start_as_cut() {
    let t = Tracker::new(&common(), false);
    let t_mark = portcullis_recorder::TRUNCATED;
    for (tag, prefix) in [
        (b'Q', b"select 'long'".as_slice()),
        (b'P', b"s1\0select 'long'".as_slice()),
    ] {
        let e = map(&t.refused(tag, prefix, 20 << 20));
        assert_eq!(e["type"], "pg.query");
        assert_eq!(e["error"], "54000");
        assert_eq!(e["sql"], format!("select 'long{t_mark}"));
        assert!(
            e["error_message"]
                .as_str()
                .unwrap()
                .contains("20971520 bytes")
        );
        assert!(!e.contains_key("tag"));
    }
}

/// Once as many named portals are known as are kept (a client can leave that many behind:
/// the server drops those bound after a savepoint when the client rolls back to it, the
/// tap does not see it), a portal bound again under a known name runs its new statement,
/// and is logged so; never with the SQL the name was bound to before.
#[test]
fn a_portal_bound_again_past_the_limit_is_logged_with_its_new_sql() {
    let mut t = Tracker::new(&common(), false);
    let parse = |sql: &'static [u8]| {
        FrontendMessage::Parse(portcullis_protocol::pg::Parse {
            name: b"",
            sql,
            param_types: &[],
        })
    };
    let names: Vec<Vec<u8>> = (0..MAX_NAMES)
        .map(|i| format!("p{i}").into_bytes())
        .collect();
    let bind = |portal: &'static [u8]| {
        FrontendMessage::Bind(Bind {
            portal,
            statement: b"",
            param_formats: &[],
            param_count: 0,
            param_values: &[],
            result_formats: &[],
        })
    };
    t.frontend(&parse(b"select 1"));
    for name in &names {
        t.frontend(&FrontendMessage::Bind(Bind {
            portal: name,
            statement: b"",
            param_formats: &[],
            param_count: 0,
            param_values: &[],
            result_formats: &[],
        }));
    }
    t.frontend(&FrontendMessage::Sync);
    server(&mut t, &PARSED);
    for _ in &names {
        server(&mut t, &BackendMessage::BindComplete);
    }
    // Inside a transaction block; then ROLLBACK TO SAVEPOINT (not shown to the tap).
    server(&mut t, &BackendMessage::ReadyForQuery { status: b'T' });
    assert_eq!(&*t.portals.get(b"p0").unwrap().1.sql, "select 1");

    t.frontend(&parse(b"delete from accounts"));
    t.frontend(&bind(b"p0"));
    t.frontend(&FrontendMessage::Execute {
        portal: b"p0",
        max_rows: 0,
    });
    t.frontend(&FrontendMessage::Sync);
    server(&mut t, &PARSED);
    server(&mut t, &BackendMessage::BindComplete);
    let mut out = Vec::new();
    t.backend(
        &BackendMessage::CommandComplete { tag: b"DELETE 9" },
        &mut out,
    );
    t.backend(&READY, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(m(&t, &out[0])["sql"], "delete from accounts");
}

/// A Bind the server refuses (`cursor "p" already exists`) changes no portal: after a
/// rollback to a savepoint, an Execute of `p` runs what `p` was bound to first, and is
/// logged so, not with the SQL of the refused Bind.
#[test]
fn a_refused_bind_does_not_rename_the_portal_that_runs() {
    let mut t = Tracker::new(&common(), false);
    let named = |name: &'static [u8], sql: &'static [u8]| {
        FrontendMessage::Parse(portcullis_protocol::pg::Parse {
            name,
            sql,
            param_types: &[],
        })
    };
    let bind = |portal: &'static [u8], statement: &'static [u8]| {
        FrontendMessage::Bind(Bind {
            portal,
            statement,
            param_formats: &[],
            param_count: 0,
            param_values: &[],
            result_formats: &[],
        })
    };
    let mut out = Vec::new();
    // Inside a transaction (BEGIN, SAVEPOINT as simple queries, not shown to the tap).
    t.frontend(&named(b"del", b"delete from accounts"));
    t.frontend(&bind(b"p", b"del"));
    t.frontend(&FrontendMessage::Sync);
    server(&mut t, &PARSED);
    server(&mut t, &BackendMessage::BindComplete);
    server(&mut t, &BackendMessage::ReadyForQuery { status: b'T' });

    t.frontend(&named(b"harmless", b"select 'harmless'"));
    t.frontend(&bind(b"p", b"harmless"));
    t.frontend(&FrontendMessage::Sync);
    server(&mut t, &PARSED);
    let mut err = Vec::new();
    portcullis_protocol::pg::encode_error_response(
        &mut err,
        "ERROR",
        "42P03",
        "cursor \"p\" already exists",
    );
    let (f, _) = portcullis_protocol::pg::next_frame(&err).unwrap().unwrap();
    t.backend(&BackendMessage::decode(f.tag, f.body).unwrap(), &mut out);
    t.backend(&BackendMessage::ReadyForQuery { status: b'E' }, &mut out);
    assert!(out.is_empty());

    // ROLLBACK TO SAVEPOINT, then the portal is executed.
    t.frontend(&FrontendMessage::Execute {
        portal: b"p",
        max_rows: 0,
    });
    t.frontend(&FrontendMessage::Sync);
    t.backend(
        &BackendMessage::CommandComplete { tag: b"DELETE 3" },
        &mut out,
    );
    t.backend(&BackendMessage::ReadyForQuery { status: b'T' }, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(m(&t, &out[0])["sql"], "delete from accounts");
}

/// A transaction's end drops the portals bound in it (the server drops them at the
/// ReadyForQuery that says no transaction is open), but not those bound in a batch sent
/// behind it: a portal name used again (a cursor declared in SQL, say) is logged by name,
/// never with what the name was bound to in a transaction that has ended.
#[test]
fn portals_end_with_their_transaction() {
    let mut t = Tracker::new(&common(), false);
    let parse = |sql: &'static [u8]| {
        FrontendMessage::Parse(portcullis_protocol::pg::Parse {
            name: b"",
            sql,
            param_types: &[],
        })
    };
    let bind = |portal: &'static [u8]| {
        FrontendMessage::Bind(Bind {
            portal,
            statement: b"",
            param_formats: &[],
            param_count: 0,
            param_values: &[],
            result_formats: &[],
        })
    };
    let exec = |portal: &'static [u8]| FrontendMessage::Execute {
        portal,
        max_rows: 0,
    };
    let sql_of = |t: &mut Tracker, portal: &'static [u8]| {
        let mut out = Vec::new();
        t.frontend(&exec(portal));
        t.frontend(&FrontendMessage::Sync);
        t.backend(
            &BackendMessage::CommandComplete { tag: b"SELECT 1" },
            &mut out,
        );
        t.backend(&READY, &mut out);
        m(t, &out[0])["sql"].clone()
    };
    for msg in [parse(b"select 'c'"), bind(b"c"), FrontendMessage::Sync] {
        t.frontend(&msg);
    }
    // Sent before the answer to the first batch came.
    for msg in [parse(b"select 'q'"), bind(b"q"), FrontendMessage::Sync] {
        t.frontend(&msg);
    }
    server(&mut t, &PARSED);
    server(&mut t, &BackendMessage::BindComplete);
    server(&mut t, &READY);
    assert!(t.portals.get(b"c").is_none());
    assert_eq!(&*t.portals.get(b"q").unwrap().1.sql, "select 'q'");
    server(&mut t, &PARSED);
    server(&mut t, &BackendMessage::BindComplete);
    server(&mut t, &READY);
    assert_eq!(sql_of(&mut t, b"c"), "<portal \"c\">");
    // Inside a transaction block the portal stays.
    for msg in [parse(b"select 'q'"), bind(b"q"), FrontendMessage::Sync] {
        t.frontend(&msg);
    }
    server(&mut t, &PARSED);
    server(&mut t, &BackendMessage::BindComplete);
    server(&mut t, &BackendMessage::ReadyForQuery { status: b'T' });
    assert_eq!(sql_of(&mut t, b"q"), "select 'q'");
}

/// The Execute of a portal sent before the server refused the portal's re-Bind runs what
/// the portal was bound to before: in strict mode, its `pg.result` says which SQL that was.
#[test]
fn an_execute_sent_behind_a_refused_bind_is_corrected() {
    let mut t = Tracker::new(&common(), true);
    let named = |name: &'static [u8], sql: &'static [u8]| {
        FrontendMessage::Parse(portcullis_protocol::pg::Parse {
            name,
            sql,
            param_types: &[],
        })
    };
    let bind = |statement: &'static [u8]| {
        FrontendMessage::Bind(Bind {
            portal: b"p",
            statement,
            param_formats: &[],
            param_count: 0,
            param_values: &[],
            result_formats: &[],
        })
    };
    for msg in [
        named(b"del", b"delete from accounts"),
        named(b"harmless", b"select 'harmless'"),
        bind(b"del"),
        FrontendMessage::Sync,
    ] {
        t.frontend(&msg);
    }
    server(&mut t, &PARSED);
    server(&mut t, &PARSED);
    server(&mut t, &BackendMessage::BindComplete);
    server(&mut t, &BackendMessage::ReadyForQuery { status: b'T' });

    t.frontend(&bind(b"harmless"));
    t.frontend(&FrontendMessage::Sync);
    let record = t.frontend(&FrontendMessage::Execute {
        portal: b"p",
        max_rows: 0,
    });
    assert_eq!(map(&record.unwrap())["sql"], "select 'harmless'");
    t.frontend(&FrontendMessage::Sync);
    let mut err = Vec::new();
    portcullis_protocol::pg::encode_error_response(&mut err, "ERROR", "42P03", "exists");
    let (f, _) = portcullis_protocol::pg::next_frame(&err).unwrap().unwrap();
    let mut out = Vec::new();
    t.backend(&BackendMessage::decode(f.tag, f.body).unwrap(), &mut out);
    t.backend(&BackendMessage::ReadyForQuery { status: b'E' }, &mut out);
    t.backend(
        &BackendMessage::CommandComplete { tag: b"DELETE 3" },
        &mut out,
    );
    t.backend(&BackendMessage::ReadyForQuery { status: b'T' }, &mut out);
    assert_eq!(out.len(), 1);
    let result = m(&t, &out[0]);
    assert_eq!(result["type"], "pg.result");
    assert_eq!(result["sql"], "delete from accounts");
    assert_eq!(&*t.portals.get(b"p").unwrap().1.sql, "delete from accounts");
}

/// SQL sent in a client_encoding other than UTF-8 (here LATIN1 `é`) is logged as lossy text
/// and, so that nothing is lost, as its bytes in `sql_bytes` (base64): for a simple Query and
/// for a prepared statement executed later, in both durabilities.
#[test]
fn sql_that_is_not_utf8_keeps_its_bytes() {
    use base64::Engine as _;
    let latin1: &[u8] = b"select 'caf\xe9'";
    let b64 = base64::engine::general_purpose::STANDARD.encode(latin1);
    for strict in [false, true] {
        let mut t = Tracker::new(&common(), strict);
        let mut out = Vec::new();
        let pre = t.frontend(&FrontendMessage::Query { sql: latin1 });
        t.backend(
            &BackendMessage::CommandComplete { tag: b"SELECT 1" },
            &mut out,
        );
        t.backend(&BackendMessage::ReadyForQuery { status: b'I' }, &mut out);
        let pre_parse = [
            FrontendMessage::Parse(portcullis_protocol::pg::Parse {
                name: b"s",
                sql: latin1,
                param_types: &[],
            }),
            FrontendMessage::Bind(Bind {
                portal: b"",
                statement: b"s",
                param_formats: &[],
                param_count: 0,
                param_values: &[],
                result_formats: &[],
            }),
            FrontendMessage::Execute {
                portal: b"",
                max_rows: 0,
            },
            FrontendMessage::Sync,
        ]
        .iter()
        .filter_map(|msg| t.frontend(msg))
        .collect::<Vec<_>>();
        t.backend(&BackendMessage::ParseComplete, &mut out);
        t.backend(&BackendMessage::BindComplete, &mut out);
        t.backend(
            &BackendMessage::CommandComplete { tag: b"SELECT 1" },
            &mut out,
        );
        t.backend(&BackendMessage::ReadyForQuery { status: b'I' }, &mut out);
        assert_eq!(out.len(), 2);
        // The statement's record: the outcome in batched mode, written before it ran in
        // strict mode.
        let records: Vec<_> = if strict {
            pre.iter().chain(&pre_parse).map(map).collect()
        } else {
            out.iter().map(|f| m(&t, f)).collect()
        };
        assert_eq!(records.len(), 2, "strict {strict}");
        for r in records {
            assert_eq!(r["sql"], "select 'caf\u{fffd}'", "strict {strict}: {r:?}");
            assert_eq!(r["sql_bytes"], b64.as_str(), "strict {strict}: {r:?}");
        }
    }
    // UTF-8 SQL has no sql_bytes.
    let mut t = Tracker::new(&common(), false);
    let mut out = Vec::new();
    t.frontend(&FrontendMessage::Query {
        sql: "select 'café'".as_bytes(),
    });
    t.backend(
        &BackendMessage::CommandComplete { tag: b"SELECT 1" },
        &mut out,
    );
    t.backend(&BackendMessage::ReadyForQuery { status: b'I' }, &mut out);
    let r = m(&t, &out[0]);
    assert_eq!(r["sql"], "select 'café'");
    assert!(!r.contains_key("sql_bytes"), "{r:?}");
}
