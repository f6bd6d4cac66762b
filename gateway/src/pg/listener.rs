//! Accepting clients and the untagged startup phase: SSLRequest (TLS via tokio-rustls),
//! PostgreSQL 17 direct TLS (first byte 0x16, ALPN `postgresql`), GSSENCRequest (refused
//! with 'N'), CancelRequest (forwarded) and the StartupMessage itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use portcullis_protocol::pg::{
    MAX_STARTUP_LEN, PROTOCOL_3_0, PgError, StartupPacket, encode_negotiate_protocol_version,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use super::auth::{send_fatal, sqlstate};
use super::cancel::{CancelRegistry, send_cancel};
use super::logging_in::{LoggingIn, Slot};
use super::tls::{ALPN_POSTGRESQL, with_alpn};
use super::{BoxIo, PgShared, SessionError, session};
use crate::context::Shared;
use crate::cores::Cores;

/// Most concurrent client connections; further ones wait in the accept backlog.
const MAX_CONNECTIONS: usize = 4096;
/// Time a client has from connect to a finished login.
pub(crate) const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts PostgreSQL clients until shutdown.
pub async fn listen(listener: TcpListener, gw: Shared, tls: Arc<rustls::ServerConfig>) {
    let shared = Arc::new(PgShared {
        gw: gw.clone(),
        tls: with_alpn(&tls),
        cancels: Arc::new(CancelRegistry::default()),
        large_statements: Semaphore::new(super::relay::LARGE_STATEMENT_BUDGET),
        logging_in: Arc::default(),
    });
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let cores = match Cores::start("pg") {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the postgres session threads");
            return;
        }
    };
    loop {
        let permit = tokio::select! {
            _ = gw.shutdown.cancelled() => break,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = gw.shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "postgres accept failed");
                    continue;
                }
            },
        };
        let Some(slot) = LoggingIn::enter(&shared.logging_in, peer.ip()) else {
            tracing::warn!(client = %peer, "postgres connection closed: too many from this client still logging in");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let span = tracing::info_span!(
            "pg_session",
            proto = "postgres",
            client = %peer,
            session = tracing::field::Empty,
            user = tracing::field::Empty,
            target = tracing::field::Empty,
        );
        let shared = shared.clone();
        // The socket moves to the session's runtime and registers with its reactor there.
        let moved = cores.spawn_with_socket(tcp, move |tcp| {
            async move {
                connection(shared, tcp, peer, slot).await;
                drop(permit);
            }
            .instrument(span)
        });
        if let Err(e) = moved {
            tracing::warn!(error = %e, "postgres accept failed");
        }
    }
    cores.close();
}

/// A client past the startup phase.
pub(crate) struct Started {
    pub io: BoxIo,
    pub params: Vec<(Vec<u8>, Vec<u8>)>,
    /// `_pq_.` options and a minor version above 0 to decline with
    /// NegotiateProtocolVersion.
    pub minor: u16,
    pub unknown_options: Vec<Vec<u8>>,
    pub tls: bool,
}

/// The NegotiateProtocolVersion owed to a client that asked for a minor version above 3.0
/// or sent `_pq_.` options, or none when it asked for exactly what we speak.
///
/// The version is 3.0 written whole (`3 << 16`), as PostgreSQL writes it: libpq 18 asking
/// for up to 3.2 reads a bare 0 as a demand to go below 3.0 and drops the connection.
pub(super) fn negotiation(minor: u16, unknown_options: &[Vec<u8>]) -> Option<Vec<u8>> {
    if minor == 0 && unknown_options.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    let opts: Vec<&[u8]> = unknown_options.iter().map(Vec::as_slice).collect();
    encode_negotiate_protocol_version(&mut out, PROTOCOL_3_0, &opts);
    Some(out)
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

async fn connection(shared: Arc<PgShared>, tcp: TcpStream, peer: SocketAddr, slot: Slot) {
    let started = tokio::time::timeout(STARTUP_TIMEOUT, startup(&shared, tcp)).await;
    match started {
        Ok(Ok(Some(started))) => session::run(shared, started, peer, slot).await,
        Ok(Ok(None)) => {}
        Ok(Err(e)) => tracing::info!(error = %e, "postgres client refused during startup"),
        Err(_) => tracing::info!("postgres client did not finish startup in time"),
    }
}

/// Runs the startup phase. `Ok(None)` when the connection was a CancelRequest (handled) or
/// was answered with an error already.
async fn startup(shared: &PgShared, tcp: TcpStream) -> Result<Option<Started>, SessionError> {
    let mut first = [0u8; 1];
    let n = tcp.peek(&mut first).await.map_err(SessionError::ClientIo)?;
    let mut tls = false;
    let mut io: BoxIo = if n == 1 && first[0] == 0x16 {
        // PostgreSQL 17 `sslnegotiation=direct`: TLS from the first byte, ALPN required.
        let stream = tokio_rustls::TlsAcceptor::from(shared.tls.clone())
            .accept(tcp)
            .await
            .map_err(SessionError::ClientTls)?;
        if stream.get_ref().1.alpn_protocol() != Some(ALPN_POSTGRESQL) {
            return Err(SessionError::Client(
                "direct TLS without the postgresql ALPN".into(),
            ));
        }
        tls = true;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    loop {
        let body = match read_startup(&mut io).await {
            Ok(b) => b,
            Err(SessionError::ClientProtocol(e)) => {
                send_fatal(&mut io, sqlstate::PROTOCOL_VIOLATION, &e.to_string()).await;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let packet = match StartupPacket::decode(&body) {
            Ok(p) => p,
            Err(e) => {
                let code = match e {
                    PgError::UnsupportedProtocol { .. } => sqlstate::FEATURE_NOT_SUPPORTED,
                    _ => sqlstate::PROTOCOL_VIOLATION,
                };
                send_fatal(&mut io, code, &e.to_string()).await;
                return Ok(None);
            }
        };
        match packet {
            StartupPacket::SslRequest if !tls => {
                io.write_all(b"S").await.map_err(SessionError::ClientIo)?;
                // Nothing may follow the SSLRequest before the handshake; anything already
                // buffered would be a man-in-the-middle injection (CVE-2021-23214), and we
                // read exactly one packet so nothing is.
                let tcp = downcast_tcp(io)?;
                let stream = tokio_rustls::TlsAcceptor::from(shared.tls.clone())
                    .accept(tcp)
                    .await
                    .map_err(SessionError::ClientTls)?;
                tls = true;
                io = Box::new(stream);
            }
            StartupPacket::SslRequest => {
                send_fatal(
                    &mut io,
                    sqlstate::PROTOCOL_VIOLATION,
                    "SSLRequest inside TLS",
                )
                .await;
                return Ok(None);
            }
            StartupPacket::GssEncRequest => {
                // GSSAPI encryption is not offered: decline, as PostgreSQL does, and let the
                // client go on (in the clear or with an SSLRequest).
                io.write_all(b"N").await.map_err(SessionError::ClientIo)?;
            }
            StartupPacket::Cancel { pid, secret } => {
                // PostgreSQL never answers a CancelRequest; it just closes.
                if let Some(target) = shared.cancels.lookup(pid, secret) {
                    if let Err(e) = send_cancel(&target).await {
                        tracing::warn!(error = %e, "forwarding cancel request failed");
                    }
                } else {
                    tracing::info!("cancel request with an unknown key ignored");
                }
                // Closed as PostgreSQL closes it: over TLS with close_notify first. libpq
                // 17's encrypted cancel reads to the end and reports a bare EOF as failure.
                let _ = io.shutdown().await;
                return Ok(None);
            }
            StartupPacket::Startup { minor, params } => {
                let mut unknown = Vec::new();
                for (k, _) in params.iter() {
                    if k.starts_with(b"_pq_.") {
                        unknown.push(k.to_vec());
                    }
                }
                return Ok(Some(Started {
                    io,
                    params: last_values(params.iter().filter(|(k, _)| !k.starts_with(b"_pq_."))),
                    minor,
                    unknown_options: unknown,
                    tls,
                }));
            }
        }
    }
}

/// The startup parameters as PostgreSQL takes them: a name sent more than once counts once,
/// with its last value. The gateway must judge (`replication`, `user`, `database`) exactly
/// what the upstream will act on; judging the first of two `replication` values while the
/// upstream acts on the second would let a walsender through.
fn last_values<'a>(params: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut at: HashMap<&[u8], usize> = HashMap::new();
    for (k, v) in params {
        match at.get(k) {
            Some(&i) => {
                if let Some(slot) = out.get_mut(i) {
                    slot.1 = v.to_vec();
                }
            }
            None => {
                at.insert(k, out.len());
                out.push((k.to_vec(), v.to_vec()));
            }
        }
    }
    out
}

/// Does PostgreSQL read `v` as false (its `parse_bool`)? Any other `replication` value asks
/// for a walsender (true, `database`) or is refused by the server anyway.
pub(super) fn pg_false(v: &str) -> bool {
    let v = v.to_ascii_lowercase();
    let prefix_of = |word: &str, min: usize| v.len() >= min && word.starts_with(v.as_str());
    prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) || v == "0"
}

/// The plain TCP stream behind a not-yet-encrypted connection.
fn downcast_tcp(io: BoxIo) -> Result<TcpStream, SessionError> {
    let any: Box<dyn std::any::Any + Send> = io.into_any();
    any.downcast::<TcpStream>()
        .map(|b| *b)
        .map_err(|_| SessionError::Client("SSLRequest on an encrypted connection".into()))
}

/// Reads one length-prefixed startup packet, exactly, so no byte after it is consumed.
async fn read_startup(io: &mut BoxIo) -> Result<Vec<u8>, SessionError> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len)
        .await
        .map_err(SessionError::ClientIo)?;
    let len = i32::from_be_bytes(len);
    if len < 8 {
        return Err(PgError::BadLength(len.into()).into());
    }
    let len = usize::try_from(len).map_err(|_| PgError::BadLength(len.into()))?;
    if len > MAX_STARTUP_LEN {
        return Err(PgError::TooLong {
            len,
            max: MAX_STARTUP_LEN,
        }
        .into());
    }
    let mut body = vec![0u8; len - 4];
    io.read_exact(&mut body)
        .await
        .map_err(SessionError::ClientIo)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn false_is_read_as_postgresql_reads_it() {
        for v in ["false", "FALSE", "f", "fa", "No", "n", "off", "OF", "0"] {
            assert!(pg_false(v), "{v}");
        }
        for v in [
            "true", "database", "on", "o", "yes", "1", "", "falsey", "0 ", " false", "nope",
        ] {
            assert!(!pg_false(v), "{v}");
        }
    }

    #[test]
    fn a_parameter_sent_twice_counts_once_with_its_last_value() {
        let sent: [(&[u8], &[u8]); 5] = [
            (b"user", b"alice"),
            (b"replication", b"false"),
            (b"database", b"pg"),
            (b"replication", b"database"),
            (b"user", b"bob"),
        ];
        let want: Vec<(Vec<u8>, Vec<u8>)> = [
            (&b"user"[..], &b"bob"[..]),
            (b"replication", b"database"),
            (b"database", b"pg"),
        ]
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
        assert_eq!(last_values(sent.into_iter()), want);
    }

    /// The whole reply, byte for byte, for each way a client can ask for more than 3.0.
    #[test]
    fn negotiation_offers_protocol_3_0_whole() {
        let v = |rest: &[u8]| {
            let mut m = vec![b'v'];
            m.extend_from_slice(&(4 + u32::try_from(rest.len()).expect("short")).to_be_bytes());
            m.extend_from_slice(rest);
            m
        };
        // (minor version asked for, `_pq_.` options sent, the reply)
        type Case = (u16, &'static [&'static str], Option<Vec<u8>>);
        let cases: [Case; 5] = [
            // Exactly 3.0 and no options: nothing to negotiate.
            (0, &[], None),
            // libpq 18 with max_protocol_version=3.2.
            (2, &[], Some(v(&[0, 3, 0, 0, 0, 0, 0, 0]))),
            (1, &[], Some(v(&[0, 3, 0, 0, 0, 0, 0, 0]))),
            (0, &["_pq_.x"], Some(v(b"\0\x03\0\0\0\0\0\x01_pq_.x\0"))),
            (
                2,
                &["_pq_.a", "_pq_.b"],
                Some(v(b"\0\x03\0\0\0\0\0\x02_pq_.a\0_pq_.b\0")),
            ),
        ];
        for (minor, opts, want) in cases {
            let opts: Vec<Vec<u8>> = opts.iter().map(|o| o.as_bytes().to_vec()).collect();
            assert_eq!(negotiation(minor, &opts), want, "3.{minor} {opts:?}");
        }
    }
}
