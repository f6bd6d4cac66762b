//! The file as written: serde structs mirroring SPEC §4 (plus `[notify]`), every field
//! optional so that a missing key becomes a precise problem ("required for ssh targets")
//! rather than serde's first-error-wins "missing field". Enumerated values stay strings
//! here for the same reason: `validate` names the key and the accepted values.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The top level of `portcullis.toml`. `decode` takes its field list and decodes each
/// section on its own, so one bad section does not hide the problems of the others.
#[expect(
    dead_code,
    reason = "only the field list is read; sections decode one by one"
)]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    pub gateway: Option<RawGateway>,
    pub listen: Option<RawListen>,
    pub tls: Option<RawTls>,
    pub policy: Option<RawPolicy>,
    pub audit: Option<RawAudit>,
    pub notify: Option<RawNotify>,
    pub users: Option<Vec<RawUser>>,
    pub targets: Option<Vec<RawTarget>>,
}

/// `[gateway]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGateway {
    pub data_dir: Option<String>,
}

/// `[listen]`: socket addresses as strings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListen {
    pub ssh: Option<String>,
    pub postgres: Option<String>,
    pub admin: Option<String>,
}

/// `[tls]` for the PostgreSQL listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

/// `[policy]`: durations as humantime strings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    pub max_grant: Option<String>,
    pub warn_before: Option<String>,
    pub approvers: Option<Vec<String>>,
}

/// `[audit]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAudit {
    pub durability: Option<String>,
}

/// `[notify]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNotify {
    pub webhook_url: Option<String>,
}

/// One `[[users]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUser {
    pub name: Option<String>,
    pub ssh_keys: Option<Vec<String>>,
    pub password_scram: Option<String>,
}

/// One `[[targets]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTarget {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub address: Option<String>,
    pub database: Option<String>,
    pub tls: Option<String>,
    pub ca_file: Option<String>,
    pub host_key: Option<String>,
    pub max_grant: Option<String>,
    pub approvers: Option<Vec<String>>,
    pub roles: Option<BTreeMap<String, RawRole>>,
}

/// One `[targets.roles.NAME]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRole {
    pub user: Option<String>,
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub private_key_file: Option<String>,
    pub allow: Option<Vec<String>>,
}
