//! Users' gateway passwords, as both password logins check them: PostgreSQL's SCRAM exchange
//! (`pg/auth.rs`) and the admin API's HTTP Basic (`api/auth.rs`).
//!
//! Owns one rule: a login for a user who does not exist, or who has no password, does the
//! same work as one with a wrong password and fails the same way, so neither the answer nor
//! its timing tells a caller which users exist.

use portcullis_config::Config;
use portcullis_protocol::scram::{Verifier, make_verifier, parse_verifier};

/// The verifier to check `user` against, and whether it is the user's own. Unknown users,
/// users without a password and (defensively; the config refuses them) users whose verifier
/// does not parse get a mock one, so the check runs to the end and fails like a wrong
/// password.
///
/// The SCRAM exchange shows the client the verifier's salt before any password is checked,
/// and a real user's salt never changes. So a mock's salt must not change either, or two
/// logins would tell a name that exists from one that does not: it is derived from the
/// user name and `secret` (a gateway secret that survives restarts, as PostgreSQL derives
/// its mock salt from the cluster's nonce).
pub(crate) fn verifier_for(config: &Config, secret: &[u8], user: &str) -> (Verifier, bool) {
    match config
        .user(user)
        .and_then(|u| u.password_scram.as_deref())
        .and_then(|v| parse_verifier(v).ok())
    {
        Some(v) => (v, true),
        None => {
            let mut mock = Verifier::mock();
            mock.salt = mock_salt(secret, user);
            (mock, false)
        }
    }
}

/// The salt a mock verifier shows for `user`: 16 bytes of SHA-256 over a label, `secret`
/// and the name, so it is the same on every login and says nothing about the secret.
fn mock_salt(secret: &[u8], user: &str) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"portcullis scram mock salt\0")
        .chain_update((secret.len() as u64).to_be_bytes())
        .chain_update(secret)
        .chain_update(user.as_bytes())
        .finalize();
    digest[..16].to_vec()
}

/// Does `password` match `verifier`?
///
/// Derives the verifier for the password with the stored salt and iteration count (PBKDF2:
/// milliseconds, so call it off the async workers) and compares the StoredKeys in constant
/// time.
pub(crate) fn password_matches(verifier: &Verifier, password: &str) -> bool {
    let Ok(mine) = parse_verifier(&make_verifier(
        password,
        &verifier.salt,
        verifier.iterations,
    )) else {
        return false;
    };
    ct_eq(&mine.stored_key, &verifier.stored_key)
}

/// Is `password` `user`'s? The password is derived against [`verifier_for`]'s verifier
/// whoever the user is, so an unknown user or one without a password costs the same PBKDF2
/// as a known one, and all three refusals are the same `false`.
pub(crate) fn check_password(config: &Config, secret: &[u8], user: &str, password: &str) -> bool {
    check_with(config, secret, user, password, password_matches)
}

/// [`check_password`] with the derivation passed in, so a test can see what it is run on.
fn check_with(
    config: &Config,
    secret: &[u8],
    user: &str,
    password: &str,
    matches: impl FnOnce(&Verifier, &str) -> bool,
) -> bool {
    let (verifier, known) = verifier_for(config, secret, user);
    // The derivation comes first and always runs: `known && matches(..)` would skip it for
    // exactly the users whose absence it must hide.
    matches(&verifier, password) && known
}

/// Constant-time equality, so a secret is not guessable byte by byte from timing.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use portcullis_protocol::scram::{DEFAULT_ITERATIONS, generate_verifier};

    use super::*;

    const SECRET: &[u8] = b"the gateway's secret";

    /// alice has a password (`s3cret`), bob none.
    fn config() -> Config {
        let text = format!(
            "[[users]]\nname = \"alice\"\npassword_scram = \"{}\"\n\n\
             [[users]]\nname = \"bob\"\n",
            generate_verifier("s3cret")
        );
        portcullis_config::load_str(&text, std::path::Path::new("/nonexistent")).unwrap()
    }

    #[test]
    fn passwords_are_checked_against_the_verifier() {
        let v = parse_verifier(&generate_verifier("s3cret")).unwrap();
        assert!(password_matches(&v, "s3cret"));
        assert!(!password_matches(&v, "s3cret "));
        assert!(!password_matches(&v, ""));
        assert!(!password_matches(&Verifier::mock(), "s3cret"));
        assert!(!password_matches(&Verifier::mock(), ""));
    }

    #[test]
    fn only_the_right_password_of_a_known_user_passes() {
        let cfg = config();
        assert!(check_password(&cfg, SECRET, "alice", "s3cret"));
        assert!(!check_password(&cfg, SECRET, "alice", "wrong"));
        assert!(!check_password(&cfg, SECRET, "bob", ""));
        assert!(!check_password(&cfg, SECRET, "nobody", "s3cret"));
        // A verifier that does not parse (the config refuses one; a later change might not)
        // is no password at all, never a match.
        let mut cfg = cfg;
        cfg.users[0].password_scram = Some("garbage".into());
        assert!(!check_password(&cfg, SECRET, "alice", "s3cret"));
        assert!(!check_password(&cfg, SECRET, "alice", ""));
    }

    /// Whoever the user, the password is derived once against a verifier with the same
    /// iteration count as a real one: the unknown and password-less users cost the PBKDF2 of
    /// a wrong password. (How long that takes belongs in a benchmark, not here.)
    #[test]
    fn unknown_and_passwordless_users_cost_a_derivation_like_a_wrong_password() {
        let cfg = config();
        let real = verifier_for(&cfg, SECRET, "alice").0;
        assert_eq!(real.iterations, DEFAULT_ITERATIONS);
        for (user, password) in [("alice", "wrong"), ("nobody", "x"), ("bob", "x")] {
            let mut derived = vec![];
            let ok = check_with(&cfg, SECRET, user, password, |v, p| {
                derived.push((v.iterations, v.salt.len()));
                password_matches(v, p)
            });
            assert!(!ok, "{user}");
            assert_eq!(derived, [(real.iterations, real.salt.len())], "{user}");
        }
        let (_, known) = verifier_for(&cfg, SECRET, "nobody");
        assert!(!known);
        let (_, known) = verifier_for(&cfg, SECRET, "bob");
        assert!(!known);
    }

    /// Even a derivation that reports a match (a mock verifier's StoredKey guessed by chance,
    /// 2^-256) does not let an unknown user in.
    #[test]
    fn a_mock_verifier_never_lets_anyone_in() {
        let cfg = config();
        assert!(!check_with(&cfg, SECRET, "nobody", "x", |_, _| true));
        assert!(!check_with(&cfg, SECRET, "bob", "x", |_, _| true));
        assert!(check_with(&cfg, SECRET, "alice", "x", |_, _| true));
    }

    /// The salt the exchange shows before any password is checked: a user who does not
    /// exist, or has no password, shows the same one on every login, as a real user does,
    /// and another gateway (another secret) shows another.
    #[test]
    fn a_mock_salt_is_the_same_on_every_login() {
        let cfg = config();
        let salt = |secret: &[u8], user: &str| verifier_for(&cfg, secret, user).0.salt;
        for user in ["nobody", "bob"] {
            assert_eq!(salt(SECRET, user), salt(SECRET, user), "{user}");
            assert_eq!(salt(SECRET, user).len(), 16);
            assert_ne!(salt(SECRET, user), salt(b"another gateway", user), "{user}");
        }
        assert_ne!(salt(SECRET, "nobody"), salt(SECRET, "nobody2"));
        assert_eq!(salt(SECRET, "alice"), salt(b"another gateway", "alice"));
    }
}
