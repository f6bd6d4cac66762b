//! Byte fixtures and property tests for the pg codec.

use proptest::prelude::*;

use super::*;

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&(i32::try_from(body.len()).unwrap() + 4).to_be_bytes());
    v.extend_from_slice(body);
    v
}

#[test]
fn splits_frames_and_waits_for_more() {
    let mut buf = frame(b'Q', b"select 1\0");
    buf.extend(frame(b'X', b""));
    let (f, used) = next_frame(&buf).unwrap().unwrap();
    assert_eq!((f.tag, f.body, used), (b'Q', &b"select 1\0"[..], 14));
    assert_eq!(f.raw, &buf[..14]);
    let (f, used) = next_frame(&buf[14..]).unwrap().unwrap();
    assert_eq!((f.tag, used), (b'X', 5));
    for cut in 0..14 {
        assert_eq!(next_frame(&buf[..cut]).unwrap(), None, "cut {cut}");
    }
}

#[test]
fn bad_lengths_are_refused_before_allocating() {
    let huge = [b'Q', 0x7f, 0xff, 0xff, 0xff];
    assert_eq!(
        next_frame(&huge),
        Err(PgError::TooLong {
            len: 0x7fff_fffb,
            max: MAX_MESSAGE_LEN
        })
    );
    assert_eq!(next_frame(&[b'Q', 0, 0, 0, 3]), Err(PgError::BadLength(3)));
    assert_eq!(
        next_frame(&[b'Q', 0xff, 0xff, 0xff, 0xff]),
        Err(PgError::BadLength(-1))
    );
    assert_eq!(
        next_startup(&[0x7f, 0xff, 0xff, 0xff]),
        Err(PgError::TooLong {
            len: 0x7fff_ffff,
            max: MAX_STARTUP_LEN
        })
    );
}

/// A header of type `tag` whose length field says `len`.
fn header(tag: u8, len: u32) -> [u8; 5] {
    let [a, b, c, d] = len.to_be_bytes();
    [tag, a, b, c, d]
}

/// Frontend lengths are judged per type, as PostgreSQL 15's `SocketBackend` and
/// `pq_getmessage` judge them (the length field counts itself), from the header alone.
#[test]
fn frontend_lengths_are_judged_by_type_from_the_header() {
    let small = SMALL_MESSAGE_LIMIT as u32;
    let large = LARGE_MESSAGE_LIMIT as u32;
    let too_long = |name, len: u32, max| {
        Err(PgError::FrontendTooLong {
            name,
            len: len as usize,
            max,
        })
    };
    let ok = |tag, len: u32| {
        Ok(Some(Header {
            tag,
            body_len: len as usize - 4,
        }))
    };
    #[rustfmt::skip]
    type Read = Result<Option<Header>, PgError>;
    let cases: &[([u8; 5], Read)] = &[
        (
            header(b'D', 1 << 20),
            too_long("Describe", 1 << 20, SMALL_MESSAGE_LIMIT),
        ),
        (
            header(b'C', 1 << 30),
            too_long("Close", 1 << 30, SMALL_MESSAGE_LIMIT),
        ),
        (header(b'D', small), ok(b'D', small)),
        (
            header(b'D', small + 1),
            too_long("Describe", small + 1, SMALL_MESSAGE_LIMIT),
        ),
        (
            header(b'E', small + 1),
            too_long("Execute", small + 1, SMALL_MESSAGE_LIMIT),
        ),
        (
            header(b'H', small + 1),
            too_long("Flush", small + 1, SMALL_MESSAGE_LIMIT),
        ),
        (
            header(b'S', small + 1),
            too_long("Sync", small + 1, SMALL_MESSAGE_LIMIT),
        ),
        (
            header(b'X', small + 1),
            too_long("Terminate", small + 1, SMALL_MESSAGE_LIMIT),
        ),
        (
            header(b'c', small + 1),
            too_long("CopyDone", small + 1, SMALL_MESSAGE_LIMIT),
        ),
        (
            header(b'f', small + 1),
            too_long("CopyFail", small + 1, SMALL_MESSAGE_LIMIT),
        ),
        (header(b'Q', large), ok(b'Q', large)),
        (
            header(b'Q', large + 1),
            too_long("Query", large + 1, LARGE_MESSAGE_LIMIT),
        ),
        (
            header(b'P', large + 1),
            too_long("Parse", large + 1, LARGE_MESSAGE_LIMIT),
        ),
        (header(b'B', large), ok(b'B', large)),
        (header(b'F', large), ok(b'F', large)),
        (header(b'd', large), ok(b'd', large)),
        (
            header(b'd', 0x7fff_ffff),
            too_long("CopyData", 0x7fff_ffff, LARGE_MESSAGE_LIMIT),
        ),
        (header(b'S', 4), ok(b'S', 4)),
        (header(b'S', 3), Err(PgError::BadLength(3))),
        (header(b'Q', u32::MAX), Err(PgError::BadLength(-1))),
        // Types PostgreSQL refuses after the startup phase, a password message included.
        (header(b'z', 4), Err(PgError::UnknownFrontendType(b'z'))),
        (header(b'p', 8), Err(PgError::UnknownFrontendType(b'p'))),
        (header(0, 4), Err(PgError::UnknownFrontendType(0))),
    ];
    for (bytes, want) in cases {
        assert_eq!(&read_frontend_header(bytes), want, "{bytes:?}");
    }
    // Nothing of the body is needed to refuse, and the type alone decides an unknown one.
    assert_eq!(read_frontend_header(b"D\0\0"), Ok(None));
    assert_eq!(
        read_frontend_header(b"z"),
        Err(PgError::UnknownFrontendType(b'z'))
    );
    assert_eq!(read_frontend_header(b""), Ok(None));
    let e = read_frontend_header(&header(b'D', 1 << 20)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid message length 1048576: Describe messages may be at most 10000 bytes long"
    );
    assert_eq!(
        PgError::UnknownFrontendType(b'z').to_string(),
        "invalid frontend message type 122"
    );
}

#[test]
fn frontend_frames_are_split_like_any_other() {
    let mut buf = frame(b'Q', b"select 1\0");
    buf.extend(frame(b'S', b""));
    let (f, used) = next_frontend_frame(&buf).unwrap().unwrap();
    assert_eq!((f.tag, f.body, used), (b'Q', &b"select 1\0"[..], 14));
    let (f, used) = next_frontend_frame(&buf[14..]).unwrap().unwrap();
    assert_eq!((f.tag, used), (b'S', 5));
    for cut in 0..14 {
        assert_eq!(next_frontend_frame(&buf[..cut]).unwrap(), None, "cut {cut}");
    }
    // A backend type is no frontend message, whatever next_frame makes of it.
    let row = frame(b'T', &[0, 0]);
    assert!(next_frame(&row).unwrap().is_some());
    assert_eq!(
        next_frontend_frame(&row),
        Err(PgError::UnknownFrontendType(b'T'))
    );
}

#[test]
fn startup_packets() {
    let mut out = Vec::new();
    encode_startup(
        &mut out,
        [
            (&b"user"[..], &b"alice"[..]),
            (&b"database"[..], &b"pg-prod+read"[..]),
        ],
    );
    let (p, used) = next_startup(&out).unwrap().unwrap();
    assert_eq!(used, out.len());
    let StartupPacket::Startup { minor, params } = p else {
        panic!("{p:?}")
    };
    assert_eq!(minor, 0);
    assert_eq!(params.get("user"), Some(&b"alice"[..]));
    assert_eq!(params.get("database"), Some(&b"pg-prod+read"[..]));
    assert_eq!(params.iter().count(), 2);

    let ssl = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    assert_eq!(
        next_startup(&ssl).unwrap(),
        Some((StartupPacket::SslRequest, 8))
    );
    let gss = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
    assert_eq!(
        next_startup(&gss).unwrap(),
        Some((StartupPacket::GssEncRequest, 8))
    );

    let mut out = Vec::new();
    encode_cancel_request(&mut out, 4242, &[1, 2, 3, 4]);
    assert_eq!(
        next_startup(&out).unwrap(),
        Some((
            StartupPacket::Cancel {
                pid: 4242,
                secret: &[1, 2, 3, 4]
            },
            16
        ))
    );

    let v2 = [0, 0, 0, 9, 0, 2, 0, 0, 0];
    assert_eq!(
        next_startup(&v2),
        Err(PgError::UnsupportedProtocol { major: 2, minor: 0 })
    );
    // Parameters that are not NUL-terminated.
    let bad = [0, 0, 0, 12, 0, 3, 0, 0, b'u', b's', b'e', b'r'];
    assert!(next_startup(&bad).is_err());
}

#[test]
fn frontend_fixtures() {
    // A Bind as tokio-postgres sends it: one text and one binary param, one NULL.
    let mut body = b"portal\0stmt\0".to_vec();
    body.extend([0, 3, 0, 0, 0, 1, 0, 0]); // 3 formats: text, binary, text
    body.extend([0, 3]);
    body.extend([0, 0, 0, 2, b'4', b'2']);
    body.extend([0, 0, 0, 4, 0, 0, 0, 7]);
    body.extend([0xff, 0xff, 0xff, 0xff]);
    body.extend([0, 1, 0, 1]);
    let FrontendMessage::Bind(b) = FrontendMessage::decode(b'B', &body).unwrap() else {
        panic!()
    };
    assert_eq!((b.portal, b.statement), (&b"portal"[..], &b"stmt"[..]));
    let params: Vec<_> = b.params().collect();
    assert_eq!(
        params,
        vec![Some(&b"42"[..]), Some(&[0, 0, 0, 7][..]), None]
    );
    assert_eq!((b.param_format(0), b.param_format(1)), (0, 1));
    assert_eq!(b.result_formats().collect::<Vec<_>>(), vec![1]);

    // A FunctionCall as libpq's lo_write sends it: oid 955, binary args (fd 0, 3 bytes),
    // binary result; it encodes back to the same bytes.
    let mut body = vec![0, 0, 0x03, 0xbb, 0, 1, 0, 1, 0, 2];
    body.extend([0, 0, 0, 4, 0, 0, 0, 0]);
    body.extend([0, 0, 0, 3, b'a', b'b', b'c']);
    body.extend([0, 1]);
    let call = FrontendMessage::decode(b'F', &body).unwrap();
    let FrontendMessage::FunctionCall { oid, args } = call else {
        panic!("{call:?}")
    };
    assert_eq!(oid, 955);
    let params: Vec<_> = args.params().collect();
    assert_eq!(params, vec![Some(&[0, 0, 0, 0][..]), Some(&b"abc"[..])]);
    assert_eq!(args.param_format(1), 1);
    let mut out = Vec::new();
    call.encode(&mut out);
    assert_eq!(out.get(5..), Some(&body[..]));
    // A truncated argument is malformed, not a panic.
    assert!(FrontendMessage::decode(b'F', &body[..body.len() - 4]).is_err());

    let p = FrontendMessage::decode(b'P', b"s1\0select $1\0\0\x01\0\0\0\x17").unwrap();
    let FrontendMessage::Parse(p) = p else {
        panic!()
    };
    assert_eq!(p.sql, b"select $1");
    assert_eq!(p.param_types().collect::<Vec<_>>(), vec![23]);

    let table: &[(u8, &[u8], FrontendMessage<'_>)] = &[
        (
            b'Q',
            b"select 1\0",
            FrontendMessage::Query { sql: b"select 1" },
        ),
        (
            b'E',
            b"\0\0\0\0\0",
            FrontendMessage::Execute {
                portal: b"",
                max_rows: 0,
            },
        ),
        (
            b'C',
            b"Sx\0",
            FrontendMessage::Close {
                kind: b'S',
                name: b"x",
            },
        ),
        (b'S', b"", FrontendMessage::Sync),
        (b'X', b"", FrontendMessage::Terminate),
        (
            b'f',
            b"oops\0",
            FrontendMessage::CopyFail { message: b"oops" },
        ),
    ];
    for (tag, body, want) in table {
        assert_eq!(FrontendMessage::decode(*tag, body).unwrap(), *want);
    }
    // Truncated and trailing bytes are errors, not panics.
    assert!(FrontendMessage::decode(b'Q', b"select 1").is_err());
    assert!(FrontendMessage::decode(b'S', b"x").is_err());
    assert!(FrontendMessage::decode(b'C', b"Zx\0").is_err());
}

#[test]
fn backend_fixtures() {
    let mut out = Vec::new();
    encode_error_response(&mut out, "FATAL", "28000", "no live grant");
    let (f, _) = next_frame(&out).unwrap().unwrap();
    let BackendMessage::ErrorResponse(e) = BackendMessage::decode(f.tag, f.body).unwrap() else {
        panic!()
    };
    assert_eq!(e.code(), Some(&b"28000"[..]));
    assert_eq!(e.severity(), Some(&b"FATAL"[..]));
    assert_eq!(e.message(), Some(&b"no live grant"[..]));

    // The first bytes of an error too long to read whole: the fields before the cut, and
    // the one cut, as far as it goes; a cut inside a field's type byte ends the list.
    let body = f.body;
    let cut = Fields::prefix(&body[..body.len() - 8]);
    assert_eq!(cut.code(), Some(&b"28000"[..]));
    assert_eq!(cut.message(), Some(&b"no live"[..]));
    assert_eq!(Fields::prefix(&body[..1]).code(), None);
    assert_eq!(Fields::prefix(&[]).code(), None);

    let mut out = Vec::new();
    encode_authentication_sasl(&mut out, &["SCRAM-SHA-256"]);
    let (f, _) = next_frame(&out).unwrap().unwrap();
    let BackendMessage::Authentication(a) = BackendMessage::decode(f.tag, f.body).unwrap() else {
        panic!()
    };
    assert_eq!(
        a.mechanisms().collect::<Vec<_>>(),
        vec![&b"SCRAM-SHA-256"[..]]
    );

    let md5 = BackendMessage::decode(b'R', &[0, 0, 0, 5, 1, 2, 3, 4]).unwrap();
    assert_eq!(
        md5,
        BackendMessage::Authentication(Authentication::Md5Password { salt: [1, 2, 3, 4] })
    );
    assert_eq!(
        BackendMessage::decode(b'K', &[0, 0, 0, 7, 9, 9, 9, 9]).unwrap(),
        BackendMessage::BackendKeyData {
            pid: 7,
            secret: &[9, 9, 9, 9]
        }
    );
    assert_eq!(
        BackendMessage::decode(b'C', b"SELECT 1\0").unwrap(),
        BackendMessage::CommandComplete { tag: b"SELECT 1" }
    );
    assert!(BackendMessage::decode(b'Z', b"Q").is_err());

    let described = BackendMessage::decode(b't', &[0, 2, 0, 0, 0, 23, 0, 0, 0, 25]).unwrap();
    assert_eq!(described.param_types().collect::<Vec<_>>(), [23, 25]);
    assert!(BackendMessage::decode(b't', &[0, 2, 0, 0, 0, 23]).is_err());
    assert!(BackendMessage::decode(b't', &[0xff, 0xff]).is_err());
}

#[test]
fn md5_matches_postgres() {
    // Computed independently with Python's hashlib, following PostgreSQL's documentation.
    assert_eq!(
        md5_password(b"postgres", b"secret", [1, 2, 3, 4]),
        "md5bb41a296aab6baccb36ff243a562abff"
    );
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(buf in bytes(300)) {
        let _ = next_frame(&buf);
        let _ = next_frontend_frame(&buf);
        let _ = next_startup(&buf);
        if let Some(&tag) = buf.first() {
            let _ = FrontendMessage::decode(tag, &buf[1..]);
            let _ = BackendMessage::decode(tag, &buf[1..]);
        }
        let _ = SaslInitialResponse::decode(&buf);
    }

    /// A frontend header is taken exactly when its type is one a client may send and its
    /// length is within that type's limit; the body is never needed to decide.
    #[test]
    fn frontend_headers_are_taken_only_within_their_type_limit(
        tag in any::<u8>(),
        len in prop_oneof![any::<u32>(), 0..20_000u32, 0x3fff_fff0..0x4000_0010u32],
    ) {
        let got = read_frontend_header(&header(tag, len));
        let max = match tag {
            b'Q' | b'P' | b'B' | b'F' | b'd' => Some(LARGE_MESSAGE_LIMIT),
            b'E' | b'D' | b'C' | b'H' | b'S' | b'X' | b'c' | b'f' => Some(SMALL_MESSAGE_LIMIT),
            _ => None,
        };
        let len = len as usize;
        match (max, got) {
            (None, got) => prop_assert_eq!(got, Err(PgError::UnknownFrontendType(tag))),
            (Some(max), Ok(Some(h))) => {
                prop_assert!((4..=max).contains(&len), "{len} taken");
                prop_assert_eq!(h, Header { tag, body_len: len - 4 });
            }
            (Some(max), got) => prop_assert!(!(4..=max).contains(&len), "{len}: {got:?}"),
        }
    }

    /// Whatever decodes re-encodes to exactly the bytes it came from.
    #[test]
    fn decode_then_encode_is_identity(tag in proptest::sample::select(
        b"QPBEDCSHXdcfpFRKSZCENTAGHWdc123nIsvDt".to_vec()), body in bytes(120)) {
        let raw = frame(tag, &body);
        if let Ok(m) = FrontendMessage::decode(tag, &body) {
            let mut out = Vec::new();
            m.encode(&mut out);
            prop_assert_eq!(&out, &raw);
        }
        if let Ok(m) = BackendMessage::decode(tag, &body) {
            let mut out = Vec::new();
            m.encode(&mut out);
            prop_assert_eq!(&out, &raw);
        }
    }

    /// Encoded messages decode to what was encoded.
    #[test]
    fn encode_then_decode_is_identity(sql in bytes(64).prop_map(|v| v.into_iter().filter(|b| *b != 0).collect::<Vec<u8>>()),
                                      params in proptest::collection::vec(proptest::option::of(bytes(16)), 0..5),
                                      pid in any::<i32>(), secret in proptest::collection::vec(any::<u8>(), 4..9)) {
        let mut out = Vec::new();
        FrontendMessage::Query { sql: &sql }.encode(&mut out);
        let mut values = Vec::new();
        for p in &params {
            match p {
                Some(v) => { values.extend((v.len() as i32).to_be_bytes()); values.extend(v); }
                None => values.extend((-1i32).to_be_bytes()),
            }
        }
        let bind = Bind { portal: b"", statement: &sql, param_formats: &[0, 1], param_count: params.len(),
            param_values: &values, result_formats: &[] };
        FrontendMessage::Bind(bind).encode(&mut out);
        let mut rest = &out[..];
        let (f, n) = next_frame(rest).unwrap().unwrap();
        prop_assert_eq!(FrontendMessage::decode(f.tag, f.body).unwrap(), FrontendMessage::Query { sql: &sql });
        rest = &rest[n..];
        let (f, _) = next_frame(rest).unwrap().unwrap();
        let FrontendMessage::Bind(b) = FrontendMessage::decode(f.tag, f.body).unwrap() else { panic!() };
        prop_assert_eq!(b, bind);
        let got: Vec<Option<Vec<u8>>> = b.params().map(|p| p.map(<[u8]>::to_vec)).collect();
        prop_assert_eq!(got, params);

        let mut out = Vec::new();
        encode_backend_key_data(&mut out, pid, &secret);
        let (f, _) = next_frame(&out).unwrap().unwrap();
        prop_assert_eq!(BackendMessage::decode(f.tag, f.body).unwrap(),
            BackendMessage::BackendKeyData { pid, secret: &secret });
        let mut out = Vec::new();
        encode_cancel_request(&mut out, pid, &secret);
        prop_assert_eq!(next_startup(&out).unwrap(), Some((StartupPacket::Cancel { pid, secret: &secret }, out.len())));
    }
}
