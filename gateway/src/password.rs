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
pub(crate) fn verifier_for(config: &Config, user: &str) -> (Verifier, bool) {
    match config
        .user(user)
        .and_then(|u| u.password_scram.as_deref())
        .and_then(|v| parse_verifier(v).ok())
    {
        Some(v) => (v, true),
        None => (Verifier::mock(), false),
    }
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
pub(crate) fn check_password(config: &Config, user: &str, password: &str) -> bool {
    check_with(config, user, password, password_matches)
}

/// [`check_password`] with the derivation passed in, so a test can see what it is run on.
fn check_with(
    config: &Config,
    user: &str,
    password: &str,
    matches: impl FnOnce(&Verifier, &str) -> bool,
) -> bool {
    let (verifier, known) = verifier_for(config, user);
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
        assert!(check_password(&cfg, "alice", "s3cret"));
        assert!(!check_password(&cfg, "alice", "wrong"));
        assert!(!check_password(&cfg, "bob", ""));
        assert!(!check_password(&cfg, "nobody", "s3cret"));
        // A verifier that does not parse (the config refuses one; a later change might not)
        // is no password at all, never a match.
        let mut cfg = cfg;
        cfg.users[0].password_scram = Some("garbage".into());
        assert!(!check_password(&cfg, "alice", "s3cret"));
        assert!(!check_password(&cfg, "alice", ""));
    }

    /// Whoever the user, the password is derived once against a verifier with the same
    /// iteration count as a real one: the unknown and password-less users cost the PBKDF2 of
    /// a wrong password. (How long that takes belongs in a benchmark, not here.)
    #[test]
    fn unknown_and_passwordless_users_cost_a_derivation_like_a_wrong_password() {
        let cfg = config();
        let real = verifier_for(&cfg, "alice").0;
        assert_eq!(real.iterations, DEFAULT_ITERATIONS);
        for (user, password) in [("alice", "wrong"), ("nobody", "x"), ("bob", "x")] {
            let mut derived = vec![];
            let ok = check_with(&cfg, user, password, |v, p| {
                derived.push((v.iterations, v.salt.len()));
                password_matches(v, p)
            });
            assert!(!ok, "{user}");
            assert_eq!(derived, [(real.iterations, real.salt.len())], "{user}");
        }
        let (_, known) = verifier_for(&cfg, "nobody");
        assert!(!known);
        let (_, known) = verifier_for(&cfg, "bob");
        assert!(!known);
    }

    /// Even a derivation that reports a match (a mock verifier's StoredKey guessed by chance,
    /// 2^-256) does not let an unknown user in.
    #[test]
    fn a_mock_verifier_never_lets_anyone_in() {
        let cfg = config();
        assert!(!check_with(&cfg, "nobody", "x", |_, _| true));
        assert!(!check_with(&cfg, "bob", "x", |_, _| true));
        assert!(check_with(&cfg, "alice", "x", |_, _| true));
    }
}
