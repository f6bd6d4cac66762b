//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, sans-IO.
//!
//! Owns three things: the stored verifier in PostgreSQL's exact text form
//! (`SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`), a server state machine that checks
//! a psql user's password against such a verifier, and a client state machine that logs in
//! upstream with a role's password. Channel binding is not offered (only `SCRAM-SHA-256` is
//! advertised), so the gs2 headers `n,,` and `y,,` are accepted and `p=` is refused.
//!
//! Passwords are used as their UTF-8 bytes without SASLprep. PostgreSQL falls back to the raw
//! bytes too whenever SASLprep fails, and for ASCII passwords the two are identical; a
//! non-ASCII password that SASLprep would change needs the same spelling on both sides.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{KeyInit as _, Mac as _};
use sha2::{Digest as _, Sha256};

type HmacSha256 = hmac::Hmac<Sha256>;

/// The mechanism name, as advertised in AuthenticationSASL.
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// PostgreSQL's default iteration count, used for new verifiers.
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// The most iterations a client will compute for a server; a hostile upstream must not be
/// able to pin a gateway core for minutes.
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// Upper bound on any SCRAM message we accept, well above any legitimate one.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// Why a SCRAM exchange or verifier was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The stored verifier is not in PostgreSQL's format.
    #[error("malformed scram verifier: {0}")]
    BadVerifier(&'static str),
    /// The peer sent a message that does not follow RFC 5802.
    #[error("malformed scram message: {0}")]
    Malformed(&'static str),
    /// The client asked for channel binding, which the gateway does not offer.
    #[error("channel binding is not supported")]
    ChannelBinding,
    /// The nonce in the final message does not continue the one from the first messages.
    #[error("scram nonce mismatch")]
    NonceMismatch,
    /// The client's proof does not match: wrong password.
    #[error("password authentication failed")]
    InvalidProof,
    /// The server's signature does not match: the upstream does not know the password.
    #[error("server signature mismatch")]
    InvalidServerSignature,
    /// The server reported an error (`e=...`).
    #[error("server refused scram: {0}")]
    ServerError(String),
    /// The server asked for more iterations than [`MAX_ITERATIONS`].
    #[error("server asks for {0} iterations, more than the {MAX_ITERATIONS} allowed")]
    TooManyIterations(u32),
    /// A method was called in the wrong state.
    #[error("scram message out of order")]
    OutOfOrder,
}

/// A parsed stored verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for Verifier {
    // The keys are password-equivalent for a server, so they stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier no password matches, for unknown users: the exchange runs to the end and
    /// fails like a wrong password, so the client cannot tell which users exist.
    pub fn mock() -> Verifier {
        let mut salt = vec![0u8; 16];
        let mut stored_key = [0u8; 32];
        let mut server_key = [0u8; 32];
        rand::fill(&mut salt[..]);
        rand::fill(&mut stored_key[..]);
        rand::fill(&mut server_key[..]);
        Verifier {
            iterations: DEFAULT_ITERATIONS,
            salt,
            stored_key,
            server_key,
        }
    }
}

/// A new verifier for `password`, with a random 16-byte salt and 4096 iterations.
pub fn generate_verifier(password: &str) -> String {
    let mut salt = [0u8; 16];
    rand::fill(&mut salt[..]);
    make_verifier(password, &salt, DEFAULT_ITERATIONS)
}

/// The verifier for `password` with the given salt and iteration count, in PostgreSQL's
/// `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>` form.
pub fn make_verifier(password: &str, salt: &[u8], iterations: u32) -> String {
    let keys = Keys::derive(&prepare(password), salt, iterations);
    format!(
        "{MECHANISM}${iterations}:{}${}:{}",
        B64.encode(salt),
        B64.encode(keys.stored_key),
        B64.encode(keys.server_key)
    )
}

/// Parses a verifier in PostgreSQL's form.
pub fn parse_verifier(text: &str) -> Result<Verifier, ScramError> {
    let rest = text
        .strip_prefix("SCRAM-SHA-256$")
        .ok_or(ScramError::BadVerifier(
            "does not start with SCRAM-SHA-256$",
        ))?;
    let (iter_salt, keys) = rest
        .split_once('$')
        .ok_or(ScramError::BadVerifier("missing '$' before the keys"))?;
    let (iter, salt) = iter_salt.split_once(':').ok_or(ScramError::BadVerifier(
        "missing ':' after the iteration count",
    ))?;
    let (stored, server) = keys
        .split_once(':')
        .ok_or(ScramError::BadVerifier("missing ':' between the keys"))?;
    let iterations: u32 = iter
        .parse()
        .map_err(|_| ScramError::BadVerifier("iteration count is not a number"))?;
    if iterations == 0 {
        return Err(ScramError::BadVerifier("iteration count is zero"));
    }
    let salt = B64
        .decode(salt)
        .map_err(|_| ScramError::BadVerifier("salt is not base64"))?;
    if salt.is_empty() {
        return Err(ScramError::BadVerifier("salt is empty"));
    }
    Ok(Verifier {
        iterations,
        salt,
        stored_key: decode_key(stored)?,
        server_key: decode_key(server)?,
    })
}

fn decode_key(text: &str) -> Result<[u8; 32], ScramError> {
    let bytes = B64
        .decode(text)
        .map_err(|_| ScramError::BadVerifier("key is not base64"))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| ScramError::BadVerifier("key is not 32 bytes"))
}

/// The password bytes SCRAM hashes: SASLprep (RFC 4013) of the password, as libpq and
/// PostgreSQL apply it (RFC 5802 §2.2), so a password typed with a different Unicode
/// composition, or with a non-ASCII space, still matches. Like PostgreSQL, a password that
/// SASLprep refuses (prohibited or unassigned characters, bad bidi) is used as it is.
fn prepare(password: &str) -> Vec<u8> {
    match stringprep::saslprep(password) {
        Ok(p) => p.as_bytes().to_vec(),
        Err(_) => password.as_bytes().to_vec(),
    }
}

/// The keys derived from a password (RFC 5802 §3).
struct Keys {
    client_key: [u8; 32],
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl Keys {
    fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Keys {
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut salted);
        let client_key = hmac(&salted, &[b"Client Key"]);
        let server_key = hmac(&salted, &[b"Server Key"]);
        Keys {
            client_key,
            stored_key: Sha256::digest(client_key).into(),
            server_key,
        }
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length (long ones are hashed), so this never fails; falling back
    // to an all-zero MAC would only make verification fail, never succeed.
    match HmacSha256::new_from_slice(key) {
        Ok(mut mac) => {
            for part in parts {
                mac.update(part);
            }
            mac.finalize().into_bytes().into()
        }
        Err(_) => [0u8; 32],
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn xor32(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x ^ y;
    }
    out
}

/// A printable random nonce (base64 of 18 random bytes, no commas).
fn random_nonce() -> String {
    let mut raw = [0u8; 18];
    rand::fill(&mut raw[..]);
    B64.encode(raw)
}

/// Splits `k=value` attributes; values may contain '=' but not ','.
fn attr(part: Option<&str>, key: char) -> Result<&str, ScramError> {
    let part = part.ok_or(ScramError::Malformed("missing attribute"))?;
    let mut chars = part.chars();
    if chars.next() != Some(key) || chars.next() != Some('=') {
        return Err(ScramError::Malformed("unexpected attribute"));
    }
    Ok(part.get(2..).unwrap_or(""))
}

fn text(msg: &[u8]) -> Result<&str, ScramError> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(ScramError::Malformed("message too long"));
    }
    std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not utf-8"))
}

fn is_printable_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

#[derive(Debug)]
enum ServerState {
    Initial,
    SentFirst {
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Done,
}

/// The gateway as SCRAM server, checking a client's password against a [`Verifier`].
#[derive(Debug)]
pub struct ScramServer {
    verifier: Verifier,
    server_nonce: String,
    state: ServerState,
}

impl ScramServer {
    /// A server with a random nonce.
    pub fn new(verifier: Verifier) -> ScramServer {
        Self::with_nonce(verifier, random_nonce())
    }

    /// A server with a chosen nonce part (for test vectors).
    pub fn with_nonce(verifier: Verifier, server_nonce: String) -> ScramServer {
        ScramServer {
            verifier,
            server_nonce,
            state: ServerState::Initial,
        }
    }

    /// Takes the client-first-message (the SASLInitialResponse data) and returns the
    /// server-first-message to send in AuthenticationSASLContinue.
    pub fn client_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, ServerState::Initial) {
            return Err(ScramError::OutOfOrder);
        }
        self.state = ServerState::Done;
        let msg = text(msg)?;
        let mut parts = msg.splitn(3, ',');
        let cbind = parts.next().unwrap_or("");
        match cbind {
            "n" | "y" => {}
            c if c.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("bad gs2 channel binding flag")),
        }
        let authzid = parts
            .next()
            .ok_or(ScramError::Malformed("missing gs2 header"))?;
        if !authzid.is_empty() && !authzid.starts_with("a=") {
            return Err(ScramError::Malformed("bad authzid"));
        }
        let bare = parts
            .next()
            .ok_or(ScramError::Malformed("missing client-first-bare"))?;
        let gs2_header = format!("{cbind},{authzid},");
        let mut attrs = bare.split(',');
        let first = attrs.next();
        if first.is_some_and(|a| a.starts_with("m=")) {
            return Err(ScramError::Malformed(
                "mandatory extensions are not supported",
            ));
        }
        // PostgreSQL clients send an empty user name here; the startup packet names the user.
        attr(first, 'n')?;
        let client_nonce = attr(attrs.next(), 'r')?;
        if !is_printable_nonce(client_nonce) {
            return Err(ScramError::Malformed("bad client nonce"));
        }
        let nonce = format!("{client_nonce}{}", self.server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&self.verifier.salt),
            self.verifier.iterations
        );
        let out = server_first.clone().into_bytes();
        self.state = ServerState::SentFirst {
            gs2_header,
            client_first_bare: bare.to_owned(),
            server_first,
            nonce,
        };
        Ok(out)
    }

    /// Takes the client-final-message (SASLResponse data), checks the proof and returns the
    /// server-final-message to send in AuthenticationSASLFinal. `Err(InvalidProof)` means a
    /// wrong password.
    pub fn client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let ServerState::SentFirst {
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, ServerState::Done)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let msg = text(msg)?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("missing proof"))?;
        let mut attrs = without_proof.split(',');
        let cbind = attr(attrs.next(), 'c')?;
        let cbind = B64
            .decode(cbind)
            .map_err(|_| ScramError::Malformed("channel binding is not base64"))?;
        if cbind != gs2_header.as_bytes() {
            return Err(ScramError::ChannelBinding);
        }
        if attr(attrs.next(), 'r')? != nonce {
            return Err(ScramError::NonceMismatch);
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let proof = <[u8; 32]>::try_from(proof.as_slice())
            .map_err(|_| ScramError::Malformed("proof is not 32 bytes"))?;
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = hmac(&self.verifier.stored_key, &[auth_message.as_bytes()]);
        let client_key = xor32(&proof, &client_signature);
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        if !ct_eq(&stored, &self.verifier.stored_key) {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = hmac(&self.verifier.server_key, &[auth_message.as_bytes()]);
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

#[derive(Debug)]
enum ClientState {
    Initial,
    SentFirst { client_first_bare: String },
    SentFinal { server_signature: [u8; 32] },
    Done,
}

/// The gateway as SCRAM client, logging in upstream with a role's password.
pub struct ScramClient {
    password: Vec<u8>,
    nonce: String,
    state: ClientState,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// A client with a random nonce.
    pub fn new(password: &str) -> ScramClient {
        Self::with_nonce(password, random_nonce())
    }

    /// A client with a chosen nonce (for test vectors).
    pub fn with_nonce(password: &str, nonce: String) -> ScramClient {
        ScramClient {
            password: prepare(password),
            nonce,
            state: ClientState::Initial,
        }
    }

    /// The client-first-message for SASLInitialResponse. The user name is left empty, as
    /// libpq does: the server takes it from the startup packet.
    pub fn client_first(&mut self) -> Vec<u8> {
        self.client_first_for("")
    }

    /// The client-first-message naming `user` (RFC test vectors name one).
    pub fn client_first_for(&mut self, user: &str) -> Vec<u8> {
        let bare = format!("n={user},r={}", self.nonce);
        let out = format!("n,,{bare}").into_bytes();
        self.state = ClientState::SentFirst {
            client_first_bare: bare,
        };
        out
    }

    /// Takes the server-first-message (AuthenticationSASLContinue data) and returns the
    /// client-final-message for SASLResponse.
    pub fn server_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let ClientState::SentFirst { client_first_bare } =
            std::mem::replace(&mut self.state, ClientState::Done)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let server_first = text(msg)?;
        let mut attrs = server_first.split(',');
        let first = attrs.next();
        if first.is_some_and(|a| a.starts_with("m=")) {
            return Err(ScramError::Malformed(
                "mandatory extensions are not supported",
            ));
        }
        let nonce = attr(first, 'r')?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::NonceMismatch);
        }
        let salt = B64
            .decode(attr(attrs.next(), 's')?)
            .map_err(|_| ScramError::Malformed("salt is not base64"))?;
        let iterations: u32 = attr(attrs.next(), 'i')?
            .parse()
            .map_err(|_| ScramError::Malformed("iteration count is not a number"))?;
        if iterations == 0 {
            return Err(ScramError::Malformed("iteration count is zero"));
        }
        if iterations > MAX_ITERATIONS {
            return Err(ScramError::TooManyIterations(iterations));
        }
        let keys = Keys::derive(&self.password, &salt, iterations);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = hmac(&keys.stored_key, &[auth_message.as_bytes()]);
        let proof = xor32(&keys.client_key, &client_signature);
        self.state = ClientState::SentFinal {
            server_signature: hmac(&keys.server_key, &[auth_message.as_bytes()]),
        };
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final-message (AuthenticationSASLFinal data): the server must prove
    /// that it knows the password too.
    pub fn server_final(&mut self, msg: &[u8]) -> Result<(), ScramError> {
        let ClientState::SentFinal { server_signature } =
            std::mem::replace(&mut self.state, ClientState::Done)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let msg = text(msg)?;
        if let Some(err) = msg.strip_prefix("e=") {
            return Err(ScramError::ServerError(err.to_owned()));
        }
        let v = attr(msg.split(',').next(), 'v')?;
        let v = B64
            .decode(v)
            .map_err(|_| ScramError::Malformed("server signature is not base64"))?;
        if !ct_eq(&v, &server_signature) {
            return Err(ScramError::InvalidServerSignature);
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // RFC 7677 §3: user "user", password "pencil".
    const CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SALT_B64: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_verifier() -> Verifier {
        let salt = B64.decode(SALT_B64).unwrap();
        parse_verifier(&make_verifier("pencil", &salt, 4096)).unwrap()
    }

    #[test]
    fn client_follows_rfc7677() {
        let mut c = ScramClient::with_nonce("pencil", CLIENT_NONCE.into());
        assert_eq!(c.client_first_for("user"), CLIENT_FIRST.as_bytes());
        let fin = c.server_first(SERVER_FIRST.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(fin).unwrap(), CLIENT_FINAL);
        c.server_final(SERVER_FINAL.as_bytes()).unwrap();
    }

    #[test]
    fn server_follows_rfc7677() {
        let mut s = ScramServer::with_nonce(rfc_verifier(), SERVER_NONCE.into());
        let first = s.client_first(CLIENT_FIRST.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(first).unwrap(), SERVER_FIRST);
        let fin = s.client_final(CLIENT_FINAL.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(fin).unwrap(), SERVER_FINAL);
    }

    #[test]
    fn verifier_round_trips_and_matches_known_form() {
        let v = make_verifier("pencil", &B64.decode(SALT_B64).unwrap(), 4096);
        assert!(
            v.starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"),
            "{v}"
        );
        let parsed = parse_verifier(&v).unwrap();
        assert_eq!(parsed.iterations, 4096);
        let again = make_verifier("pencil", &parsed.salt, parsed.iterations);
        assert_eq!(again, v);
        let g = generate_verifier("pencil");
        assert_ne!(g, generate_verifier("pencil"), "salt must be random");
        parse_verifier(&g).unwrap();
    }

    #[test]
    fn bad_verifiers_are_rejected() {
        for bad in [
            "",
            "md5abc",
            "SCRAM-SHA-256$",
            "SCRAM-SHA-256$x:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$0:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$4096:!!$AAAA:AAAA",
        ] {
            assert!(parse_verifier(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn client_and_server_agree_and_wrong_password_fails() {
        let verifier = parse_verifier(&generate_verifier("s3cret")).unwrap();
        for (password, ok) in [("s3cret", true), ("wrong", false)] {
            let mut server = ScramServer::new(verifier.clone());
            let mut client = ScramClient::new(password);
            let first = server.client_first(&client.client_first()).unwrap();
            let fin = client.server_first(&first).unwrap();
            match server.client_final(&fin) {
                Ok(v) => {
                    assert!(ok);
                    client.server_final(&v).unwrap();
                }
                Err(e) => {
                    assert!(!ok);
                    assert_eq!(e, ScramError::InvalidProof);
                }
            }
        }
    }

    #[test]
    fn server_accepts_y_header_and_refuses_binding() {
        let verifier = parse_verifier(&generate_verifier("pw")).unwrap();
        let mut s = ScramServer::new(verifier.clone());
        let first = String::from_utf8(s.client_first(b"y,,n=,r=abc").unwrap()).unwrap();
        let nonce = first.split(',').next().unwrap().strip_prefix("r=").unwrap();
        // "eSws" is base64 of "y,,"; with a wrong password the proof check is what fails.
        let fin = format!("c=eSws,r={nonce},p={}", B64.encode([0u8; 32]));
        assert_eq!(
            s.client_final(fin.as_bytes()),
            Err(ScramError::InvalidProof)
        );
        let mut s = ScramServer::new(verifier.clone());
        assert_eq!(
            s.client_first(b"p=tls-server-end-point,,n=,r=abc"),
            Err(ScramError::ChannelBinding)
        );
        let mut s = ScramServer::new(verifier);
        let first = String::from_utf8(s.client_first(b"n,,n=,r=abc").unwrap()).unwrap();
        let nonce = first.split(',').next().unwrap().strip_prefix("r=").unwrap();
        let fin = format!("c=eSws,r={nonce},p={}", B64.encode([0u8; 32]));
        assert_eq!(
            s.client_final(fin.as_bytes()),
            Err(ScramError::ChannelBinding)
        );
    }

    #[test]
    fn mock_verifier_refuses_everything() {
        let mut server = ScramServer::new(Verifier::mock());
        let mut client = ScramClient::new("anything");
        let first = server.client_first(&client.client_first()).unwrap();
        let fin = client.server_first(&first).unwrap();
        assert_eq!(server.client_final(&fin), Err(ScramError::InvalidProof));
    }

    #[test]
    fn client_refuses_bad_server_messages() {
        let mut c = ScramClient::with_nonce("pencil", CLIENT_NONCE.into());
        c.client_first();
        assert_eq!(
            c.server_first(b"r=other,s=AAAA,i=4096"),
            Err(ScramError::NonceMismatch)
        );
        let mut c = ScramClient::with_nonce("pencil", CLIENT_NONCE.into());
        c.client_first();
        let huge = format!("r={CLIENT_NONCE}x,s=AAAA,i=4000000000");
        assert_eq!(
            c.server_first(huge.as_bytes()),
            Err(ScramError::TooManyIterations(4_000_000_000))
        );
        let mut c = ScramClient::with_nonce("pencil", CLIENT_NONCE.into());
        c.client_first_for("user");
        c.server_first(SERVER_FIRST.as_bytes()).unwrap();
        assert_eq!(
            c.server_final(b"v=AAAA"),
            Err(ScramError::InvalidServerSignature)
        );
    }

    #[test]
    fn passwords_are_saslprepped() {
        let salt = b"0123456789abcdef";
        for (typed, prepared) in [
            // Non-ASCII space maps to a space.
            ("a\u{00A0}b", "a b"),
            // ROMAN NUMERAL NINE normalises (NFKC) to "IX".
            ("\u{2168}-pw", "IX-pw"),
            // A soft hyphen maps to nothing.
            ("pa\u{00AD}ss", "pass"),
            // Composed and decomposed forms of the same text are the same password.
            ("p\u{00E4}ss", "pa\u{0308}ss"),
        ] {
            assert_eq!(
                make_verifier(typed, salt, 4096),
                make_verifier(prepared, salt, 4096),
                "{typed:?}"
            );
        }
        // A password SASLprep refuses (a control character) is used as it is.
        assert_ne!(
            make_verifier("a\u{0007}b", salt, 4096),
            make_verifier("ab", salt, 4096)
        );
        assert_eq!(prepare("a\u{0007}b"), "a\u{0007}b".as_bytes());
        // The client side prepares the same way.
        assert_eq!(ScramClient::new("\u{2168}").password, b"IX".to_vec());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(a in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
                                       b in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut s = ScramServer::with_nonce(Verifier::mock(), "srv".into());
            let _ = s.client_first(&a);
            let _ = s.client_final(&b);
            let mut c = ScramClient::with_nonce("pw", "cli".into());
            c.client_first();
            let _ = c.server_first(&a);
            let _ = c.server_final(&b);
            let _ = parse_verifier(&String::from_utf8_lossy(&a));
        }
    }
}
