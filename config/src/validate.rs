//! Raw structs to the resolved `Config`: applies defaults, resolves relative paths against
//! the config file's directory, and checks the gateway-wide sections, the users and the
//! cross references (approvers, duplicate names, an SSH key listed more than once). Targets
//! and roles live in `targets.rs` and `roles.rs`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ssh_key::public::KeyData;

use crate::decode::{Decoded, decode};
use crate::defaults;
use crate::problems::{ConfigErrors, Report};
use crate::raw::{RawAudit, RawListen, RawNotify, RawPolicy, RawTls, RawUser};
use crate::schema::{
    AuditSection, Config, Durability, GatewaySection, Listen, Notify, Policy, RESERVED_USER_NAMES,
    TlsFiles, User,
};
use crate::{targets, values};

/// How environment variables are read: the process environment in production, a table in
/// unit tests (setting the real environment needs `unsafe` in edition 2024).
pub(crate) type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// What checking needs besides the raw structs: where relative paths start, how to read
/// the environment, and the report being filled.
pub(crate) struct Ctx<'a> {
    pub base_dir: &'a Path,
    pub env: EnvLookup<'a>,
    pub report: Report,
}

impl Ctx<'_> {
    pub fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.report.problem(path, message);
    }

    /// `value` as a path: absolute as written, else relative to the config's directory.
    pub fn resolve_path(&self, value: &str) -> PathBuf {
        let value = value.strip_prefix("./").unwrap_or(value);
        self.base_dir.join(value)
    }

    /// Reads the text file named at `path` (a key path, for the problem). The message names
    /// the file and the OS error, never its contents.
    pub fn read_text(&mut self, path: &str, value: &str) -> Option<(PathBuf, String)> {
        if value.trim().is_empty() {
            self.problem(path, "must not be empty");
            return None;
        }
        let file = self.resolve_path(value);
        match std::fs::read(&file) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => Some((file, text)),
                Err(_) => {
                    self.problem(path, format!("{} is not a text file", file.display()));
                    None
                }
            },
            Err(e) => {
                self.problem(path, format!("cannot read {}: {e}", file.display()));
                None
            }
        }
    }
}

/// Checks `text` and builds the `Config`, or returns every problem found.
pub(crate) fn load_with_env(
    text: &str,
    base_dir: &Path,
    env: EnvLookup<'_>,
) -> Result<Config, ConfigErrors> {
    let mut cx = Ctx {
        base_dir,
        env,
        report: Report::default(),
    };
    let decoded = decode(text, &mut cx.report);
    let config = decoded.map(|d| build(&mut cx, d));
    match config {
        Some(mut config) if cx.report.problems.is_empty() => {
            config.warnings = cx.report.warnings;
            Ok(config)
        }
        _ => Err(ConfigErrors {
            problems: cx.report.problems,
        }),
    }
}

fn build(cx: &mut Ctx<'_>, d: Decoded) -> Config {
    let data_dir = match d.gateway.data_dir.as_deref() {
        Some(dir) if dir.trim().is_empty() => {
            cx.problem("gateway.data_dir", "must not be empty");
            PathBuf::new()
        }
        Some(dir) => cx.resolve_path(dir),
        None => cx.resolve_path(defaults::DATA_DIR),
    };
    let listen = listen(cx, d.listen);
    let tls = d.tls.and_then(|raw| tls(cx, raw));
    let policy = policy(cx, d.policy);
    let audit = audit(cx, d.audit);
    let notify = notify(cx, d.notify);
    let users = users(cx, d.users);
    let targets = targets::targets(cx, d.targets, &policy);
    check_approvers(cx, &policy, &users, &targets);
    Config {
        gateway: GatewaySection { data_dir },
        listen,
        tls,
        policy,
        audit,
        notify,
        users,
        targets: targets.into_iter().map(|(_, t)| t).collect(),
        warnings: Vec::new(),
    }
}

fn listen(cx: &mut Ctx<'_>, raw: RawListen) -> Listen {
    let mut one = |name: &str, value: Option<String>, default| match value {
        None => default,
        Some(text) => values::socket_addr(&text).unwrap_or_else(|message| {
            cx.problem(format!("listen.{name}"), message);
            default
        }),
    };
    let listen = Listen {
        ssh: one("ssh", raw.ssh, defaults::SSH_LISTEN),
        postgres: one("postgres", raw.postgres, defaults::POSTGRES_LISTEN),
        admin: one("admin", raw.admin, defaults::ADMIN_LISTEN),
    };
    let named = [
        ("ssh", listen.ssh),
        ("postgres", listen.postgres),
        ("admin", listen.admin),
    ];
    for (i, (name, addr)) in named.iter().enumerate() {
        // Port 0 asks the OS for a fresh port each time, so it never clashes.
        if let Some((other, _)) = named[..i]
            .iter()
            .find(|(_, a)| *a == *addr && addr.port() != 0)
        {
            cx.problem(
                format!("listen.{name}"),
                format!("{addr} is already used by listen.{other}"),
            );
        }
    }
    listen
}

fn tls(cx: &mut Ctx<'_>, raw: RawTls) -> Option<TlsFiles> {
    let mut pem = |key: &str, value: Option<String>| {
        let path = format!("tls.{key}");
        let Some(value) = value else {
            cx.problem(
                path,
                "required in [tls] (leave out [tls] for a generated certificate)",
            );
            return None;
        };
        let (file, text) = cx.read_text(&path, &value)?;
        if !text.contains("-----BEGIN ") {
            cx.problem(path, format!("{} is not a PEM file", file.display()));
            return None;
        }
        Some(file)
    };
    let cert_file = pem("cert_file", raw.cert_file);
    let key_file = pem("key_file", raw.key_file);
    Some(TlsFiles {
        cert_file: cert_file?,
        key_file: key_file?,
    })
}

/// A duration key with a default; a bad value is reported and replaced by the default.
pub(crate) fn duration_or(
    cx: &mut Ctx<'_>,
    path: &str,
    value: Option<&str>,
    default: Duration,
) -> Duration {
    match value {
        None => default,
        Some(text) => values::duration(text).unwrap_or_else(|message| {
            cx.problem(path, message);
            default
        }),
    }
}

fn policy(cx: &mut Ctx<'_>, raw: RawPolicy) -> Policy {
    let max_grant = duration_or(
        cx,
        "policy.max_grant",
        raw.max_grant.as_deref(),
        defaults::MAX_GRANT,
    );
    let warn_before = duration_or(
        cx,
        "policy.warn_before",
        raw.warn_before.as_deref(),
        defaults::WARN_BEFORE,
    );
    if warn_before >= max_grant {
        cx.report.warn(
            "policy.warn_before",
            "is not shorter than policy.max_grant, so sessions are warned from the start",
        );
    }
    Policy {
        max_grant,
        warn_before,
        approvers: raw.approvers.unwrap_or_default(),
    }
}

fn audit(cx: &mut Ctx<'_>, raw: RawAudit) -> AuditSection {
    let durability = match raw.durability.as_deref() {
        None | Some("batched") => Durability::Batched,
        Some("strict") => Durability::Strict,
        Some(other) => {
            cx.problem(
                "audit.durability",
                format!("must be \"batched\" or \"strict\", not {other:?}"),
            );
            Durability::Batched
        }
    };
    AuditSection { durability }
}

fn notify(cx: &mut Ctx<'_>, raw: RawNotify) -> Notify {
    if let Some(url) = &raw.webhook_url
        && let Err(message) = values::webhook_url(url)
    {
        cx.problem("notify.webhook_url", message);
    }
    Notify {
        webhook_url: raw.webhook_url,
    }
}

fn users(cx: &mut Ctx<'_>, raw: Vec<(usize, RawUser)>) -> Vec<User> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    // Who each key was first listed for, and where. Keys are compared by algorithm and key
    // material, not by line (the comment is no part of the key), as the SSH listener matches
    // them: a key listed for two users would log its holder in as either.
    let mut key_owners: HashMap<KeyData, (String, usize, usize)> = HashMap::new();
    let mut out = Vec::new();
    for (i, user) in raw {
        let path = format!("users[{i}]");
        let Some(name) = user.name else {
            cx.problem(format!("{path}.name"), "required");
            continue;
        };
        if let Err(message) = values::name(&name) {
            cx.problem(format!("{path}.name"), message);
        } else if let Some(reserved) = RESERVED_USER_NAMES
            .iter()
            .find(|r| r.eq_ignore_ascii_case(&name))
        {
            // Any case: `Admin` next to the operator's `admin` would mislead a reader as much.
            cx.problem(
                format!("{path}.name"),
                format!(
                    "{name:?} is reserved: the audit log names the gateway's own actions \
                     {reserved:?}; choose another user name"
                ),
            );
        } else if let Some(first) = seen.get(&name) {
            cx.problem(
                format!("{path}.name"),
                format!("duplicate user {name:?} (also users[{first}])"),
            );
        } else {
            seen.insert(name.clone(), i);
        }
        let mut ssh_keys = Vec::new();
        for (j, line) in user.ssh_keys.unwrap_or_default().into_iter().enumerate() {
            let key_path = format!("{path}.ssh_keys[{j}]");
            let key = match values::ssh_public_key(&line) {
                Ok(key) => key,
                Err(message) => {
                    cx.problem(key_path, message);
                    continue;
                }
            };
            match key_owners.entry(key.key_data().clone()) {
                Entry::Vacant(e) => {
                    e.insert((name.clone(), i, j));
                }
                Entry::Occupied(e) => {
                    let (owner, oi, oj) = e.get();
                    let message = if *oi == i {
                        format!("this key is listed twice for user {name:?} (also ssh_keys[{oj}])")
                    } else {
                        format!(
                            "this key is already listed for user {owner:?} \
                             (users[{oi}].ssh_keys[{oj}]); a key must belong to one user"
                        )
                    };
                    cx.problem(key_path, message);
                }
            }
            ssh_keys.push(line.trim().to_string());
        }
        if let Some(verifier) = &user.password_scram
            && let Err(message) = values::scram_verifier(verifier)
        {
            cx.problem(format!("{path}.password_scram"), message);
        }
        if ssh_keys.is_empty() && user.password_scram.is_none() {
            cx.report.warn(
                &path,
                format!("user {name:?} has neither ssh_keys nor password_scram, so cannot log in"),
            );
        }
        out.push(User {
            name,
            ssh_keys,
            password_scram: user.password_scram,
        });
    }
    out
}

/// Every approver, of the policy or of a target, must be a configured user.
fn check_approvers(
    cx: &mut Ctx<'_>,
    policy: &Policy,
    users: &[User],
    targets: &[(usize, crate::schema::Target)],
) {
    let lists = std::iter::once(("policy".to_string(), &policy.approvers)).chain(
        targets
            .iter()
            .map(|(i, t)| (format!("targets[{i}]"), &t.approvers)),
    );
    let mut problems = Vec::new();
    for (prefix, approvers) in lists {
        for (j, name) in approvers.iter().enumerate() {
            if !users.iter().any(|u| &u.name == name) {
                problems.push((
                    format!("{prefix}.approvers[{j}]"),
                    format!("approver {name:?} is not a configured user"),
                ));
            }
        }
    }
    for (path, message) in problems {
        cx.problem(path, message);
    }
}
