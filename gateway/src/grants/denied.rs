//! Why `authorize` said no, and the sentence each refusal shows the user: what is missing
//! and the command or login that gets them in.

use super::Proto;

/// Why `authorize` said no. Display is the sentence shown to the user.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Denied {
    /// No such target in the config.
    #[error("unknown target {target}")]
    UnknownTarget { target: String },
    /// The login named a role the target does not have.
    #[error("target {target} has no role {role} (its roles: {roles})")]
    UnknownRole {
        target: String,
        role: String,
        roles: String,
    },
    /// The user holds no live grant on the target.
    #[error("no live grant for {user} on {target}; request access with: {request}")]
    NoGrant {
        user: String,
        target: String,
        request: Box<RequestHint>,
    },
    /// The user's grant on the target has expired.
    #[error("your grant on {target} has expired; request access again with: {request}")]
    Expired {
        user: String,
        target: String,
        request: Box<RequestHint>,
    },
    /// The user holds grants on the target, but not for this role.
    #[error(
        "no live grant for {user} on {target} with role {role}; roles held: {held}; request access with: {request}"
    )]
    RoleNotHeld {
        user: String,
        target: String,
        role: String,
        held: String,
        request: Box<RequestHint>,
    },
    /// More than one role is held and none was named.
    #[error(
        "{user} holds several roles on {target} ({held}); name one: {}",
        role_named(.proto, .user, .target)
    )]
    AmbiguousRole {
        user: String,
        target: String,
        held: String,
        /// Where the role is named differs: the SSH login name or the PostgreSQL dbname.
        proto: Proto,
    },
}

/// The `portcullis request create` line a refusal suggests, as the user runs it: with
/// `--as` (a request is always someone's), the role when the target needs one named, and
/// a duration the target allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHint {
    pub user: String,
    pub target: String,
    pub role: RoleHint,
    /// One hour, or the target's `max_grant` when that is shorter.
    pub duration: std::time::Duration,
}

/// What the suggested request says about the role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleHint {
    /// The target has one role: `request create` takes it without `--role`.
    Only,
    /// The role the user named.
    Named(String),
    /// The target has several and the user named none: `--role ROLE`, one of these.
    OneOf(Vec<String>),
}

/// A target's role names, sorted, as refusals list them.
pub(super) fn role_names(target: &portcullis_config::Target) -> Vec<String> {
    let mut roles: Vec<String> = target.roles.keys().cloned().collect();
    roles.sort_unstable();
    roles
}

impl RequestHint {
    /// The request for `user` on `target` under `config`: the role the user named, or none
    /// when the target has one (`request create` then takes it), or a placeholder with the
    /// target's roles; for an hour, or the target's `max_grant` when shorter.
    pub fn new(
        config: &portcullis_config::Config,
        user: &str,
        target: &str,
        role: Option<&str>,
    ) -> Self {
        let t = config.target(target);
        let role = match (role, t) {
            (Some(r), _) => RoleHint::Named(r.to_owned()),
            (None, Some(t)) if t.roles.len() > 1 => RoleHint::OneOf(role_names(t)),
            (None, _) => RoleHint::Only,
        };
        let hour = std::time::Duration::from_secs(3600);
        let duration = t.map_or(hour, |t| t.max_grant(&config.policy).min(hour));
        RequestHint {
            user: user.to_owned(),
            target: target.to_owned(),
            role,
            duration,
        }
    }
}

impl std::fmt::Display for RequestHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "portcullis request create --target {}", self.target)?;
        match &self.role {
            RoleHint::Only => {}
            RoleHint::Named(r) => write!(f, " --role {r}")?,
            RoleHint::OneOf(_) => f.write_str(" --role ROLE")?,
        }
        write!(
            f,
            " --for {} --reason \"...\" --as {}",
            super::engine::fmt_dur(self.duration),
            self.user
        )?;
        if let RoleHint::OneOf(roles) = &self.role {
            write!(f, " (ROLE: one of {})", roles.join(", "))?;
        }
        Ok(())
    }
}

/// How a client of `proto` names a role (SPEC §5): in the SSH login name, or in the
/// PostgreSQL database name, where the user name has a parameter of its own.
fn role_named(proto: &Proto, user: &str, target: &str) -> String {
    match proto {
        Proto::Ssh => format!("{user}+{target}+ROLE"),
        Proto::Postgres => format!("dbname={target}+ROLE"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every refusal's sentence, whole, for both protocols where they differ.
    #[test]
    fn each_refusal_says_how_to_get_in() {
        let user = || "demo".to_owned();
        let target = || "pg-demo".to_owned();
        let ambiguous = |proto| Denied::AmbiguousRole {
            user: user(),
            target: target(),
            held: "admin, app".into(),
            proto,
        };
        let hint = |role, minutes: u64| RequestHint {
            user: user(),
            target: target(),
            role,
            duration: std::time::Duration::from_secs(60 * minutes),
        };
        let cases = [
            (
                Denied::UnknownTarget { target: target() },
                "unknown target pg-demo",
            ),
            (
                Denied::UnknownRole {
                    target: target(),
                    role: "nope".into(),
                    roles: "app, read".into(),
                },
                "target pg-demo has no role nope (its roles: app, read)",
            ),
            (
                Denied::NoGrant {
                    user: user(),
                    target: target(),
                    request: Box::new(hint(RoleHint::Only, 60)),
                },
                "no live grant for demo on pg-demo; request access with: \
                 portcullis request create --target pg-demo --for 1h --reason \"...\" --as demo",
            ),
            (
                Denied::NoGrant {
                    user: user(),
                    target: target(),
                    request: Box::new(hint(RoleHint::OneOf(vec!["app".into(), "read".into()]), 15)),
                },
                "no live grant for demo on pg-demo; request access with: \
                 portcullis request create --target pg-demo --role ROLE --for 15m --reason \"...\" \
                 --as demo (ROLE: one of app, read)",
            ),
            (
                Denied::Expired {
                    user: user(),
                    target: target(),
                    request: Box::new(hint(RoleHint::Named("read".into()), 60)),
                },
                "your grant on pg-demo has expired; request access again with: \
                 portcullis request create --target pg-demo --role read --for 1h --reason \"...\" \
                 --as demo",
            ),
            (
                Denied::RoleNotHeld {
                    user: user(),
                    target: target(),
                    role: "admin".into(),
                    held: "app".into(),
                    request: Box::new(hint(RoleHint::Named("admin".into()), 60)),
                },
                "no live grant for demo on pg-demo with role admin; roles held: app; \
                 request access with: \
                 portcullis request create --target pg-demo --role admin --for 1h --reason \"...\" \
                 --as demo",
            ),
            (
                ambiguous(Proto::Ssh),
                "demo holds several roles on pg-demo (admin, app); name one: demo+pg-demo+ROLE",
            ),
            (
                ambiguous(Proto::Postgres),
                "demo holds several roles on pg-demo (admin, app); name one: dbname=pg-demo+ROLE",
            ),
        ];
        for (denied, want) in cases {
            assert_eq!(denied.to_string(), want, "{denied:?}");
        }
    }
}
