//! Login names: SSH `USER+TARGET[+ROLE]` and PostgreSQL dbname `TARGET[+ROLE]`.
//!
//! The user's client only lets them type one name, so the gateway packs who they are, where
//! they go and as which role into it, separated by `+`.

/// The longest accepted login name or dbname, in bytes. PostgreSQL itself truncates
/// identifiers at 63 bytes; a few times that leaves room for `user+target+role`.
pub const MAX_LOGIN_LEN: usize = 255;

/// Why a login name could not be parsed. Display is the sentence shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// Nothing was given.
    #[error("empty login name; use {expected}")]
    Empty {
        /// The accepted form, for the message.
        expected: &'static str,
    },
    /// One of the `+`-separated parts is empty, e.g. `alice++read`.
    #[error("login name {given:?} has an empty {part}; use {expected}")]
    EmptyPart {
        given: String,
        part: &'static str,
        expected: &'static str,
    },
    /// More parts than the form allows.
    #[error("login name {given:?} has too many '+'; use {expected}")]
    TooManyParts {
        given: String,
        expected: &'static str,
    },
    /// The SSH form needs at least the user and the target.
    #[error("login name {given:?} names no target; use {expected}")]
    MissingTarget {
        given: String,
        expected: &'static str,
    },
    /// Longer than [`MAX_LOGIN_LEN`].
    #[error("login name is {len} bytes long; at most {max} are accepted")]
    TooLong { len: usize, max: usize },
    /// Control characters have no business in a name and would garble logs.
    #[error("login name contains a control character")]
    ControlChar,
}

const SSH_FORM: &str = "USER+TARGET or USER+TARGET+ROLE";
const PG_FORM: &str = "dbname=TARGET or dbname=TARGET+ROLE";

/// A parsed SSH login name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshLogin {
    pub user: String,
    pub target: String,
    /// `None` when the user left it out (allowed when exactly one role is held).
    pub role: Option<String>,
}

/// A parsed PostgreSQL dbname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgDatabase {
    pub target: String,
    pub role: Option<String>,
}

/// Parses `USER+TARGET` or `USER+TARGET+ROLE`.
pub fn parse_ssh_login(given: &str) -> Result<SshLogin, LoginError> {
    let parts = split(given, SSH_FORM, &["user", "target", "role"])?;
    match parts.as_slice() {
        [user, target] => Ok(SshLogin {
            user: (*user).to_owned(),
            target: (*target).to_owned(),
            role: None,
        }),
        [user, target, role] => Ok(SshLogin {
            user: (*user).to_owned(),
            target: (*target).to_owned(),
            role: Some((*role).to_owned()),
        }),
        _ => Err(LoginError::MissingTarget {
            given: given.to_owned(),
            expected: SSH_FORM,
        }),
    }
}

/// Parses a PostgreSQL dbname `TARGET` or `TARGET+ROLE`.
pub fn parse_pg_database(given: &str) -> Result<PgDatabase, LoginError> {
    let parts = split(given, PG_FORM, &["target", "role"])?;
    match parts.as_slice() {
        [target] => Ok(PgDatabase {
            target: (*target).to_owned(),
            role: None,
        }),
        [target, role] => Ok(PgDatabase {
            target: (*target).to_owned(),
            role: Some((*role).to_owned()),
        }),
        _ => Err(LoginError::Empty { expected: PG_FORM }),
    }
}

/// Splits on `+` and checks each part against `names` (which also caps the count).
fn split<'a>(
    given: &'a str,
    expected: &'static str,
    names: &[&'static str],
) -> Result<Vec<&'a str>, LoginError> {
    if given.is_empty() {
        return Err(LoginError::Empty { expected });
    }
    if given.len() > MAX_LOGIN_LEN {
        return Err(LoginError::TooLong {
            len: given.len(),
            max: MAX_LOGIN_LEN,
        });
    }
    if given.chars().any(char::is_control) {
        return Err(LoginError::ControlChar);
    }
    let parts: Vec<&str> = given.split('+').collect();
    if parts.len() > names.len() {
        return Err(LoginError::TooManyParts {
            given: given.to_owned(),
            expected,
        });
    }
    for (part, name) in parts.iter().zip(names) {
        if part.is_empty() {
            return Err(LoginError::EmptyPart {
                given: given.to_owned(),
                part: name,
                expected,
            });
        }
    }
    Ok(parts)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ssh(user: &str, target: &str, role: Option<&str>) -> SshLogin {
        SshLogin {
            user: user.into(),
            target: target.into(),
            role: role.map(Into::into),
        }
    }

    #[test]
    fn ssh_login_table() {
        let long = "a".repeat(MAX_LOGIN_LEN + 1);
        let cases: Vec<(&str, Result<SshLogin, LoginError>)> = vec![
            ("alice+web-1", Ok(ssh("alice", "web-1", None))),
            (
                "alice+web-1+deploy",
                Ok(ssh("alice", "web-1", Some("deploy"))),
            ),
            (
                "alice",
                Err(LoginError::MissingTarget {
                    given: "alice".into(),
                    expected: SSH_FORM,
                }),
            ),
            ("", Err(LoginError::Empty { expected: SSH_FORM })),
            (
                "alice++deploy",
                Err(LoginError::EmptyPart {
                    given: "alice++deploy".into(),
                    part: "target",
                    expected: SSH_FORM,
                }),
            ),
            (
                "+web-1",
                Err(LoginError::EmptyPart {
                    given: "+web-1".into(),
                    part: "user",
                    expected: SSH_FORM,
                }),
            ),
            (
                "alice+web-1+",
                Err(LoginError::EmptyPart {
                    given: "alice+web-1+".into(),
                    part: "role",
                    expected: SSH_FORM,
                }),
            ),
            (
                "a+b+c+d",
                Err(LoginError::TooManyParts {
                    given: "a+b+c+d".into(),
                    expected: SSH_FORM,
                }),
            ),
            ("al\nice+web", Err(LoginError::ControlChar)),
            (
                long.as_str(),
                Err(LoginError::TooLong {
                    len: MAX_LOGIN_LEN + 1,
                    max: MAX_LOGIN_LEN,
                }),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_ssh_login(input), want, "input {input:?}");
        }
    }

    #[test]
    fn pg_database_table() {
        assert_eq!(
            parse_pg_database("pg-prod"),
            Ok(PgDatabase {
                target: "pg-prod".into(),
                role: None
            })
        );
        assert_eq!(
            parse_pg_database("pg-prod+read"),
            Ok(PgDatabase {
                target: "pg-prod".into(),
                role: Some("read".into())
            })
        );
        assert!(matches!(
            parse_pg_database("a+b+c"),
            Err(LoginError::TooManyParts { .. })
        ));
        assert!(matches!(
            parse_pg_database("pg-prod+"),
            Err(LoginError::EmptyPart { part: "role", .. })
        ));
        assert!(matches!(
            parse_pg_database(""),
            Err(LoginError::Empty { .. })
        ));
    }

    #[test]
    fn messages_are_one_clear_sentence() {
        let e = parse_ssh_login("a+b+c+d").unwrap_err().to_string();
        assert_eq!(
            e,
            "login name \"a+b+c+d\" has too many '+'; use USER+TARGET or USER+TARGET+ROLE"
        );
    }
}
