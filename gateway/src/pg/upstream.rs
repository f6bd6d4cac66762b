//! The upstream side: connecting to a target (TLS per its mode), logging in with the role's
//! credentials (SCRAM-SHA-256, md5 or cleartext, as the server asks), and collecting the
//! session parameters and the real BackendKeyData.

use std::time::Duration;

use portcullis_config::{PgTlsMode, Role, Target};
use portcullis_protocol::pg::{
    Authentication, BackendMessage, FrontendMessage, encode_password, encode_sasl_initial_response,
    encode_sasl_response, encode_startup, encode_terminate, md5_password,
};
use portcullis_protocol::scram::{MECHANISM, ScramClient, ScramError};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::tls::{TlsError, upstream_config};
use super::{BoxIo, ReadError, read_message};

/// How long connecting and logging in upstream may take.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest message accepted from the upstream during login.
const MAX_LOGIN_MESSAGE: usize = 64 * 1024;

/// Why the upstream could not be reached or logged in to. Display is shown to the user, so
/// it never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect failed.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    /// The socket failed during login.
    #[error("connection lost: {0}")]
    Io(std::io::Error),
    /// The target requires TLS but the server does not offer it.
    #[error("server does not support TLS but the target requires it")]
    TlsRefused,
    /// The TLS configuration could not be built.
    #[error("{0}")]
    TlsConfig(#[from] TlsError),
    /// The TLS handshake failed.
    #[error("tls handshake: {0}")]
    TlsHandshake(std::io::Error),
    /// The server sent something we cannot parse.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server refused the login (wrong password, unknown database...).
    #[error("server refused the login: {message} (SQLSTATE {code})")]
    Refused { code: String, message: String },
    /// The server asked for an authentication method we do not speak.
    #[error("server asks for unsupported authentication method {0}")]
    UnsupportedAuth(i32),
    /// The role has no password but the server asks for one.
    #[error("role has no password configured but the server asks for one")]
    NoPassword,
    /// SCRAM with the server failed.
    #[error("scram: {0}")]
    Scram(#[from] ScramError),
    /// Connecting and logging in took too long.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

impl From<ReadError> for UpstreamError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Io(e) => UpstreamError::Io(e),
            ReadError::Protocol(e) => UpstreamError::Protocol(e.to_string()),
        }
    }
}

/// A logged-in upstream connection, ready for queries.
pub(crate) struct Upstream {
    pub io: BoxIo,
    /// The real backend pid and cancel key.
    pub pid: i32,
    pub secret: Vec<u8>,
    /// ParameterStatus messages, raw, to replay to the client.
    pub parameter_status: Vec<u8>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

/// TCP to the target, then TLS as its mode says (SSLRequest first, as libpq does).
pub(crate) async fn open_stream(target: &Target) -> Result<BoxIo, UpstreamError> {
    let mut tcp = TcpStream::connect(&target.address)
        .await
        .map_err(|source| UpstreamError::Connect {
            address: target.address.clone(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let Some((config, name)) = upstream_config(target)? else {
        return Ok(Box::new(tcp));
    };
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .map_err(UpstreamError::Io)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)
        .await
        .map_err(UpstreamError::Io)?;
    match (answer[0], target.tls) {
        (b'S', _) => {
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(UpstreamError::TlsHandshake)?;
            Ok(Box::new(tls))
        }
        (b'N', PgTlsMode::Prefer) => Ok(Box::new(tcp)),
        (b'N', _) => Err(UpstreamError::TlsRefused),
        (b'E', _) => Err(UpstreamError::Protocol(
            "server answered the SSLRequest with an error".into(),
        )),
        _ => Err(UpstreamError::Protocol(
            "unexpected answer to SSLRequest".into(),
        )),
    }
}

/// The client's startup parameters that go on to the upstream: all but `user` and
/// `database`, which the gateway sets, and `_pq_.` protocol options, which it declined.
/// `session.started` lists exactly these, so what a login set (`options=-c role=...`,
/// say) is in the log.
pub(crate) fn forwarded(
    client_params: &[(Vec<u8>, Vec<u8>)],
) -> impl Iterator<Item = (&[u8], &[u8])> {
    client_params
        .iter()
        .filter(|(k, _)| k != b"user" && k != b"database" && !k.starts_with(b"_pq_."))
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
}

/// Connects and logs in as the role, passing the client's [`forwarded`] startup
/// parameters through.
pub(crate) async fn connect(
    target: &Target,
    role: &Role,
    client_params: &[(Vec<u8>, Vec<u8>)],
) -> Result<Upstream, UpstreamError> {
    tokio::time::timeout(LOGIN_TIMEOUT, login(target, role, client_params))
        .await
        .map_err(|_| UpstreamError::Timeout(LOGIN_TIMEOUT))?
}

async fn login(
    target: &Target,
    role: &Role,
    client_params: &[(Vec<u8>, Vec<u8>)],
) -> Result<Upstream, UpstreamError> {
    let mut io = open_stream(target).await?;
    let database = target.database.as_deref().unwrap_or(&role.user);
    let mut params: Vec<(&[u8], &[u8])> = vec![
        (b"user", role.user.as_bytes()),
        (b"database", database.as_bytes()),
    ];
    params.extend(forwarded(client_params));
    let mut out = Vec::with_capacity(256);
    encode_startup(&mut out, params);
    io.write_all(&out).await.map_err(UpstreamError::Io)?;

    let mut scram: Option<ScramClient> = None;
    let mut pid = 0;
    let mut secret = Vec::new();
    let mut parameter_status = Vec::new();
    loop {
        let (tag, body) = read_message(&mut io, MAX_LOGIN_MESSAGE).await?;
        let msg = BackendMessage::decode(tag, &body)
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        out.clear();
        match msg {
            BackendMessage::Authentication(a) => match a {
                Authentication::Ok => {}
                Authentication::CleartextPassword => {
                    encode_password(&mut out, password(role)?.as_bytes());
                }
                Authentication::Md5Password { salt } => {
                    let hash = md5_password(role.user.as_bytes(), password(role)?.as_bytes(), salt);
                    encode_password(&mut out, hash.as_bytes());
                }
                Authentication::Sasl { .. } => {
                    if !a.mechanisms().any(|m| m == MECHANISM.as_bytes()) {
                        return Err(UpstreamError::UnsupportedAuth(10));
                    }
                    let mut client = ScramClient::new(password(role)?);
                    encode_sasl_initial_response(&mut out, MECHANISM, &client.client_first());
                    scram = Some(client);
                }
                Authentication::SaslContinue(data) => {
                    let client = scram
                        .as_mut()
                        .ok_or(UpstreamError::Protocol("sasl continue before sasl".into()))?;
                    encode_sasl_response(&mut out, &client.server_first(data)?);
                }
                Authentication::SaslFinal(data) => {
                    let client = scram
                        .as_mut()
                        .ok_or(UpstreamError::Protocol("sasl final before sasl".into()))?;
                    client.server_final(data)?;
                }
                Authentication::Other { code, .. } => {
                    return Err(UpstreamError::UnsupportedAuth(code));
                }
            },
            BackendMessage::ErrorResponse(f) => {
                return Err(UpstreamError::Refused {
                    code: String::from_utf8_lossy(f.code().unwrap_or_default()).into_owned(),
                    message: String::from_utf8_lossy(f.message().unwrap_or_default()).into_owned(),
                });
            }
            BackendMessage::BackendKeyData { pid: p, secret: s } => {
                pid = p;
                secret = s.to_vec();
            }
            BackendMessage::ParameterStatus { .. } => {
                BackendMessage::decode(tag, &body)
                    .map_err(|e| UpstreamError::Protocol(e.to_string()))?
                    .encode(&mut parameter_status);
            }
            BackendMessage::ReadyForQuery { .. } => {
                return Ok(Upstream {
                    io,
                    pid,
                    secret,
                    parameter_status,
                });
            }
            // Notices and NegotiateProtocolVersion during login carry nothing we need.
            _ => {}
        }
        if !out.is_empty() {
            io.write_all(&out).await.map_err(UpstreamError::Io)?;
        }
    }
}

fn password(role: &Role) -> Result<&str, UpstreamError> {
    role.password
        .as_ref()
        .map(|s| s.expose())
        .ok_or(UpstreamError::NoPassword)
}

/// Makes sure a backend is gone: logs in as the same role on a separate connection and runs
/// `pg_terminate_backend(pid, 2000)`, which waits up to 2 s for the backend to exit. A role
/// may always signal its own backends.
pub(crate) async fn terminate_backend(
    target: &Target,
    role: &Role,
    pid: i32,
) -> Result<(), UpstreamError> {
    let mut up = connect(target, role, &[]).await?;
    let sql =
        format!("select pg_terminate_backend(pid, 2000) from pg_stat_activity where pid = {pid}");
    let mut out = Vec::new();
    FrontendMessage::Query {
        sql: sql.as_bytes(),
    }
    .encode(&mut out);
    up.io.write_all(&out).await.map_err(UpstreamError::Io)?;
    loop {
        let (tag, _) = read_message(&mut up.io, MAX_LOGIN_MESSAGE).await?;
        if tag == b'Z' {
            break;
        }
    }
    out.clear();
    encode_terminate(&mut out);
    let _ = up.io.write_all(&out).await;
    let _ = up.io.shutdown().await;
    Ok(())
}
