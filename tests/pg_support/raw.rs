//! A client speaking the protocol itself over a raw socket, for inputs no driver sends: its
//! login with the real SCRAM client, the exchanges after it, and reading the error the
//! gateway closes with.

use std::time::Duration;

use portcullis_protocol::pg::{
    BackendMessage, FrontendMessage, encode_sasl_initial_response, encode_sasl_response,
    encode_startup, next_frame,
};
use portcullis_protocol::scram::ScramClient;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::{ALICE_PW, Harness};

/// Reads everything until the gateway closes; returns the ErrorResponse fields
/// (severity, code, message) of the first error, if any.
pub async fn read_error(s: &mut TcpStream) -> Option<(String, String, String)> {
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    first_error(&buf)
}

/// The fields (severity, code, message) of the first ErrorResponse among these messages.
pub fn first_error(buf: &[u8]) -> Option<(String, String, String)> {
    let mut rest = buf;
    while let Ok(Some((f, n))) = next_frame(rest) {
        if let Ok(BackendMessage::ErrorResponse(e)) = BackendMessage::decode(f.tag, f.body) {
            let t = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
            return Some((t(e.severity()), t(e.code()), t(e.message())));
        }
        rest = &rest[n..];
    }
    None
}

pub async fn raw(h: &Harness, bytes: &[u8]) -> Option<(String, String, String)> {
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_error(&mut s).await
}

pub fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_startup(
        &mut out,
        params.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
    );
    out
}

/// Logs in as alice over a raw socket with the real SCRAM client.
pub async fn raw_login(h: &Harness, dbname: &str) -> TcpStream {
    raw_login_with_pid(h, dbname).await.0
}

/// [`raw_login`], also returning the process id of the session's BackendKeyData.
pub async fn raw_login_with_pid(h: &Harness, dbname: &str) -> (TcpStream, i32) {
    raw_login_params(h, &[("user", "alice"), ("database", dbname)]).await
}

/// Logs in as alice with these startup parameters; returns the connection and the process
/// id of the session's BackendKeyData.
pub async fn raw_login_params(h: &Harness, params: &[(&str, &str)]) -> (TcpStream, i32) {
    let mut pid = 0;
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(&startup(params)).await.unwrap();
    let mut scram = ScramClient::new(ALICE_PW);
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "gateway closed during login");
        buf.extend_from_slice(&chunk[..n]);
        while let Ok(Some((f, used))) = next_frame(&buf) {
            let msg = BackendMessage::decode(f.tag, f.body).unwrap();
            let mut out = Vec::new();
            match msg {
                BackendMessage::Authentication(a) => match a {
                    portcullis_protocol::pg::Authentication::Sasl { .. } => {
                        encode_sasl_initial_response(
                            &mut out,
                            "SCRAM-SHA-256",
                            &scram.client_first(),
                        )
                    }
                    portcullis_protocol::pg::Authentication::SaslContinue(d) => {
                        encode_sasl_response(&mut out, &scram.server_first(d).unwrap())
                    }
                    portcullis_protocol::pg::Authentication::SaslFinal(d) => {
                        scram.server_final(d).unwrap()
                    }
                    _ => {}
                },
                BackendMessage::BackendKeyData { pid: p, .. } => pid = p,
                BackendMessage::ReadyForQuery { .. } => return (s, pid),
                BackendMessage::ErrorResponse(e) => panic!("{:?}", e.message()),
                _ => {}
            }
            buf.drain(..used);
            s.write_all(&out).await.unwrap();
        }
    }
}

/// Sends `msgs` and reads up to the ReadyForQuery answering the last of `syncs` of them;
/// returns each CommandComplete tag and error code, in order.
pub async fn exchange(
    s: &mut TcpStream,
    msgs: &[FrontendMessage<'_>],
    syncs: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    for m in msgs {
        m.encode(&mut out);
    }
    s.write_all(&out).await.unwrap();
    let (mut buf, mut seen, mut ready) = (Vec::new(), Vec::new(), 0);
    while ready < syncs {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "gateway closed; so far {seen:?}");
        buf.extend_from_slice(&chunk[..n]);
        while let Ok(Some((f, used))) = next_frame(&buf) {
            match BackendMessage::decode(f.tag, f.body).unwrap() {
                BackendMessage::CommandComplete { tag } => {
                    seen.push(String::from_utf8_lossy(tag).into_owned())
                }
                BackendMessage::ErrorResponse(e) => {
                    seen.push(String::from_utf8_lossy(e.code().unwrap_or_default()).into_owned())
                }
                BackendMessage::ReadyForQuery { .. } => ready += 1,
                _ => {}
            }
            buf.drain(..used);
        }
    }
    seen
}

/// Waits (bounded) until the upstream has no backend of `role` left.
pub async fn wait_no_backend(h: &Harness, role: &str) {
    for _ in 0..100 {
        if h.backends_of(role).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("a backend of {role} is still there");
}

/// Starts a SCRAM login as `user` on target `pg` and stops where the client would send its
/// proof: returns the connection and the server's challenge (server-first-message). No
/// password is tried.
pub async fn scram_started(h: &Harness, user: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(&startup(&[("user", user), ("database", "pg")]))
        .await
        .unwrap();
    let mut scram = ScramClient::new("not the password");
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "gateway closed before its challenge");
        buf.extend_from_slice(&chunk[..n]);
        while let Ok(Some((f, used))) = next_frame(&buf) {
            match BackendMessage::decode(f.tag, f.body).unwrap() {
                BackendMessage::Authentication(portcullis_protocol::pg::Authentication::Sasl {
                    ..
                }) => {
                    let mut out = Vec::new();
                    encode_sasl_initial_response(&mut out, "SCRAM-SHA-256", &scram.client_first());
                    s.write_all(&out).await.unwrap();
                }
                BackendMessage::Authentication(
                    portcullis_protocol::pg::Authentication::SaslContinue(d),
                ) => return (s, String::from_utf8_lossy(d).into_owned()),
                other => panic!("unexpected {other:?}"),
            }
            buf.drain(..used);
        }
    }
}
