//! The resolved configuration the rest of Portcullis reads: plain Rust types, no serde.
//!
//! `load` turns TOML into these after validation; nothing outside this crate sees TOML.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub gateway: GatewaySection,
    pub listen: Listen,
    pub tls: Option<TlsFiles>,
    pub policy: Policy,
    pub audit: AuditSection,
    pub notify: Notify,
    pub users: Vec<User>,
    pub targets: Vec<Target>,
    /// Things that are accepted but unwise (an inline password, a user who cannot log in),
    /// one `path: message` line each; `check` and `serve` print them.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct GatewaySection {
    /// Store, audit log, recordings, generated keys and certs.
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub ssh: SocketAddr,
    pub postgres: SocketAddr,
    pub admin: SocketAddr,
}

/// Certificate and key for the PostgreSQL listener; absent means self-signed, generated once.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Policy {
    /// Default ceiling on any grant; a target may lower it. Default 8h.
    pub max_grant: Duration,
    /// Notice to live sessions this long before expiry. Default 5m.
    pub warn_before: Duration,
    /// Default approvers for requests (user names).
    pub approvers: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Group commit: fsync in batches.
    Batched,
    /// fsync before the caller's append returns.
    Strict,
}

#[derive(Debug, Clone)]
pub struct AuditSection {
    pub durability: Durability,
}

#[derive(Debug, Clone, Default)]
pub struct Notify {
    /// `[notify] webhook_url`: receives a JSON POST per notable event (http:// only).
    pub webhook_url: Option<String>,
}

/// Names the audit log and grant records write as the actor for the gateway itself: `admin`
/// for the operator's token, `config` for revocations by a reload. No user may take one, or
/// that user's actions would read as the operator's.
pub const RESERVED_USER_NAMES: [&str; 2] = ["admin", "config"];

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    /// OpenSSH public key lines, validated at load.
    pub ssh_keys: Vec<String>,
    /// `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`, validated at load.
    pub password_scram: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    Postgres,
    Ssh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgTlsMode {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub kind: TargetKind,
    /// `host:port` as written; resolved when connecting.
    pub address: String,
    /// Postgres: the upstream database name.
    pub database: Option<String>,
    /// Postgres: TLS to the upstream. Default `prefer`.
    pub tls: PgTlsMode,
    /// Postgres with `verify-full`: CA bundle.
    pub ca_file: Option<PathBuf>,
    /// SSH: the pinned upstream host key (OpenSSH public key line).
    pub host_key: Option<String>,
    /// This target's ceiling; never above the policy's.
    pub max_grant: Option<Duration>,
    /// Approvers for requests on this target; empty means `policy.approvers`.
    pub approvers: Vec<String>,
    pub roles: BTreeMap<String, Role>,
}

/// What a role allows on an SSH target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Allow {
    Shell,
    Exec,
    Sftp,
    Scp,
    PortForward,
    AgentForward,
}

#[derive(Debug, Clone)]
pub struct Role {
    /// The upstream login name.
    pub user: String,
    /// Password from `password_env`, `password_file` or inline `password`.
    pub password: Option<Secret>,
    /// SSH: the private key file's path and its contents (OpenSSH format), read at load.
    pub private_key_file: Option<PathBuf>,
    pub private_key: Option<Secret>,
    /// SSH: allowed channel kinds. Default: shell, exec, sftp, scp. `Scp` also admits the
    /// sftp subsystem (OpenSSH 9's scp runs over it), so it admits sftp sessions too.
    pub allow: Vec<Allow>,
}

impl Config {
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name)
    }
}

impl Target {
    /// The effective ceiling: the target's own, else the policy's.
    pub fn max_grant(&self, policy: &Policy) -> Duration {
        self.max_grant.unwrap_or(policy.max_grant)
    }

    /// The effective approvers: the target's own, else the policy's.
    pub fn approvers<'a>(&'a self, policy: &'a Policy) -> &'a [String] {
        if self.approvers.is_empty() {
            &policy.approvers
        } else {
            &self.approvers
        }
    }
}

impl Allow {
    /// Every kind, in the order the config lists them.
    pub const ALL: [Allow; 6] = [
        Allow::Shell,
        Allow::Exec,
        Allow::Sftp,
        Allow::Scp,
        Allow::PortForward,
        Allow::AgentForward,
    ];

    /// What a role gets when its `allow` is left out.
    pub const DEFAULT: [Allow; 4] = [Allow::Shell, Allow::Exec, Allow::Sftp, Allow::Scp];

    /// The name used in `allow = [...]`.
    pub fn as_str(self) -> &'static str {
        match self {
            Allow::Shell => "shell",
            Allow::Exec => "exec",
            Allow::Sftp => "sftp",
            Allow::Scp => "scp",
            Allow::PortForward => "port-forward",
            Allow::AgentForward => "agent-forward",
        }
    }

    /// The kind named `name` in `allow = [...]`.
    pub fn from_name(name: &str) -> Option<Allow> {
        Allow::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

impl TargetKind {
    /// The name used in `kind = "..."`.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Postgres => "postgres",
            TargetKind::Ssh => "ssh",
        }
    }
}

impl PgTlsMode {
    /// The name used in `tls = "..."`.
    pub fn as_str(self) -> &'static str {
        match self {
            PgTlsMode::Disable => "disable",
            PgTlsMode::Prefer => "prefer",
            PgTlsMode::Require => "require",
            PgTlsMode::VerifyFull => "verify-full",
        }
    }
}

impl Role {
    /// Whether this role allows `kind` of SSH channel.
    pub fn allows(&self, kind: Allow) -> bool {
        self.allow.contains(&kind)
    }
}

impl Target {
    /// The role named `name`.
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }
}
