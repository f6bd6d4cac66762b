//! Checks of single values: durations, addresses, names, SSH public keys, SCRAM verifiers and
//! URLs. Each returns a message suitable for a problem; none quotes a secret.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// A humantime duration (`90s`, `15m`, `2h`, `1d`), more than zero and at most 1000 years.
pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        format!("invalid duration {text:?} ({e}); use e.g. \"90s\", \"15m\", \"8h\"")
    })?;
    if d.is_zero() {
        return Err("must be more than zero".to_string());
    }
    if d > MAX_DURATION {
        return Err(format!(
            "{text:?} is too long: at most {}",
            humantime::format_duration(MAX_DURATION)
        ));
    }
    Ok(d)
}

/// The longest duration a config may name, as the admin API bounds a grant's: far beyond any
/// policy, and far inside what a timestamp holds, so a deadline minus `warn_before` cannot
/// overflow (a `warn_before = "300000y"` once panicked every grant add and then the restart).
const MAX_DURATION: Duration = Duration::from_secs(1000 * 31_557_600);

/// A listener address: an IP and a port, e.g. `127.0.0.1:2222` or `[::]:6432`.
pub(crate) fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!("invalid socket address {text:?}; expected IP:PORT such as \"127.0.0.1:2222\"")
    })
}

/// An upstream `host:port`, resolved only when connecting, so only its form is checked.
pub(crate) fn host_port(text: &str) -> Result<(), String> {
    let bad = || format!("invalid address {text:?}; expected HOST:PORT such as \"10.0.0.5:5432\"");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').ok_or_else(bad)?,
        None if host.contains(':') => return Err(bad()),
        None => host,
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad()),
    }
}

/// A user, target or role name: it becomes part of a login name `USER+TARGET+ROLE`, so it
/// cannot be empty nor contain `+`, whitespace or control characters.
pub(crate) fn name(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("must not be empty".to_string());
    }
    if text.contains('+') {
        return Err(format!(
            "{text:?} must not contain '+' (it separates USER+TARGET+ROLE in login names)"
        ));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{text:?} must not contain whitespace or control characters"
        ));
    }
    Ok(())
}

/// An OpenSSH public key line (`ssh-ed25519 AAAA... comment`).
pub(crate) fn ssh_public_key(line: &str) -> Result<ssh_key::PublicKey, String> {
    ssh_key::PublicKey::from_openssh(line.trim())
        .map_err(|e| format!("not a valid OpenSSH public key line ({e})"))
}

/// `SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>`, as
/// printed by `portcullis user scram` and stored by PostgreSQL.
pub(crate) fn scram_verifier(text: &str) -> Result<(), String> {
    let bad = |why: &str| {
        format!(
            "{why}; expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> \
             (generate one with `portcullis user scram`)"
        )
    };
    let rest = text
        .strip_prefix("SCRAM-SHA-256$")
        .ok_or_else(|| bad("does not start with SCRAM-SHA-256$"))?;
    let (params, keys) = rest
        .split_once('$')
        .ok_or_else(|| bad("missing '$' before the keys"))?;
    let (iterations, salt) = params
        .split_once(':')
        .ok_or_else(|| bad("missing ':' between iterations and salt"))?;
    match iterations.parse::<u32>() {
        Ok(n) if n > 0 => {}
        _ => return Err(bad("iterations is not a positive number")),
    }
    match STANDARD.decode(salt) {
        Ok(bytes) if !bytes.is_empty() => {}
        _ => return Err(bad("salt is not base64")),
    }
    let (stored, server) = keys
        .split_once(':')
        .ok_or_else(|| bad("missing ':' between StoredKey and ServerKey"))?;
    for (label, key) in [("StoredKey", stored), ("ServerKey", server)] {
        match STANDARD.decode(key) {
            Ok(bytes) if bytes.len() == 32 => {}
            _ => return Err(bad(&format!("{label} is not 32 bytes of base64"))),
        }
    }
    Ok(())
}

/// The notification webhook: plain `http://host[:port]/path` (the gateway speaks no TLS
/// as a client for webhooks).
pub(crate) fn webhook_url(text: &str) -> Result<(), String> {
    let rest = text.strip_prefix("http://").ok_or_else(|| {
        format!("{text:?} must be an http:// URL (https is not supported for webhooks)")
    })?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || authority.chars().any(char::is_whitespace) {
        return Err(format!("{text:?} has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHQmmt3IKmY/Sm+Tn1xPOBQE3yRvZQ9wUXMhoyvSbHCM example-only";

    #[test]
    fn durations() {
        assert_eq!(duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(duration("1d"), Ok(Duration::from_secs(86_400)));
        for bad in ["", "15", "fortnight", "0s", "-1h"] {
            assert!(duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn addresses() {
        for good in [
            "10.0.0.5:5432",
            "db.internal:5432",
            "[::1]:22",
            "localhost:1",
        ] {
            assert_eq!(host_port(good), Ok(()), "{good}");
        }
        for bad in [
            "10.0.0.5", ":22", "h:0", "h:70000", "::1:22", "[::1:22", "a b:1",
        ] {
            assert!(host_port(bad).is_err(), "{bad:?} accepted");
        }
        assert!(socket_addr("127.0.0.1:0").is_ok());
        assert!(socket_addr("localhost:22").is_err());
    }

    #[test]
    fn names() {
        assert_eq!(name("web-1"), Ok(()));
        for bad in ["", "a+b", "a b", "a\tb"] {
            assert!(name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn public_keys() {
        assert!(ssh_public_key(KEY).is_ok());
        assert!(ssh_public_key("ssh-ed25519 AAAAnotbase64!").is_err());
        assert!(ssh_public_key("ssh-ed25519").is_err());
    }

    #[test]
    fn scram_verifiers() {
        let key = STANDARD.encode([7u8; 32]);
        let good = format!("SCRAM-SHA-256$4096:c2FsdHNhbHQ=${key}:{key}");
        assert_eq!(scram_verifier(&good), Ok(()));
        let short = STANDARD.encode([7u8; 31]);
        for bad in [
            "md5abc".to_string(),
            format!("SCRAM-SHA-256$0:c2FsdA==${key}:{key}"),
            format!("SCRAM-SHA-256$4096:!!${key}:{key}"),
            format!("SCRAM-SHA-256$4096:c2FsdA==${short}:{key}"),
            format!("SCRAM-SHA-256$4096:c2FsdA==${key}"),
            format!("SCRAM-SHA-256$4096${key}:{key}"),
        ] {
            assert!(scram_verifier(&bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn webhooks() {
        assert_eq!(webhook_url("http://127.0.0.1:9000/hook"), Ok(()));
        assert!(webhook_url("https://example.com/").is_err());
        assert!(webhook_url("http:///x").is_err());
    }
}
