//! Why `authorize` said no, and the sentence each refusal shows the user: what is missing
//! and the command or login that gets them in.

use super::Proto;

/// Why `authorize` said no. Display is the sentence shown to the user.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Denied {
    /// No such target in the config.
    #[error("unknown target {target}")]
    UnknownTarget { target: String },
    /// The user holds no live grant on the target.
    #[error(
        "no live grant for {user} on {target}; request access with: {}",
        request_command(.target, None)
    )]
    NoGrant { user: String, target: String },
    /// The user's grant on the target has expired.
    #[error(
        "your grant on {target} has expired; request access again with: {}",
        request_command(.target, None)
    )]
    Expired { user: String, target: String },
    /// The user holds grants on the target, but not for this role.
    #[error(
        "no live grant for {user} on {target} with role {role}; roles held: {held}; request access with: {}",
        request_command(.target, Some(.role.as_str()))
    )]
    RoleNotHeld {
        user: String,
        target: String,
        role: String,
        held: String,
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

/// The `portcullis request create` line that asks for access to `target` (as `role`, when
/// the user named one), for every refusal that can be mended by asking.
fn request_command(target: &str, role: Option<&str>) -> String {
    let role = role.map(|r| format!(" --role {r}")).unwrap_or_default();
    format!("portcullis request create --target {target}{role} --for 1h --reason \"...\"")
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
        let cases = [
            (
                Denied::UnknownTarget { target: target() },
                "unknown target pg-demo",
            ),
            (
                Denied::NoGrant {
                    user: user(),
                    target: target(),
                },
                "no live grant for demo on pg-demo; request access with: \
                 portcullis request create --target pg-demo --for 1h --reason \"...\"",
            ),
            (
                Denied::Expired {
                    user: user(),
                    target: target(),
                },
                "your grant on pg-demo has expired; request access again with: \
                 portcullis request create --target pg-demo --for 1h --reason \"...\"",
            ),
            (
                Denied::RoleNotHeld {
                    user: user(),
                    target: target(),
                    role: "admin".into(),
                    held: "app".into(),
                },
                "no live grant for demo on pg-demo with role admin; roles held: app; \
                 request access with: \
                 portcullis request create --target pg-demo --role admin --for 1h --reason \"...\"",
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
