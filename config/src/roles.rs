//! `[targets.roles.NAME]`: the upstream login and its credentials. Secrets are resolved here,
//! at load, into `Secret`s (from the environment, a file or, with a warning, the config
//! itself); private keys are parsed for real so that a broken key fails `check`, not the
//! first session. No message here ever contains a secret.

use crate::raw::RawRole;
use crate::schema::{Allow, Role, TargetKind};
use crate::secret::Secret;
use crate::validate::Ctx;
use crate::values;

/// Checks one role of a target of `kind` (`None` when the kind itself was invalid, in which
/// case kind-specific checks are skipped).
pub(crate) fn role(
    cx: &mut Ctx<'_>,
    path: &str,
    name: &str,
    raw: RawRole,
    kind: Option<TargetKind>,
) -> Option<Role> {
    if let Err(message) = values::name(name) {
        cx.problem(path, format!("role name {message}"));
    }
    let user = match raw.user.as_deref().map(str::trim) {
        None => {
            cx.problem(format!("{path}.user"), "required (the upstream login name)");
            None
        }
        Some("") => {
            cx.problem(format!("{path}.user"), "must not be empty");
            None
        }
        Some(user) => Some(user.to_string()),
    };

    let sources = [
        raw.password.is_some(),
        raw.password_env.is_some(),
        raw.password_file.is_some(),
    ];
    if sources.iter().filter(|set| **set).count() > 1 {
        cx.problem(
            path,
            "set only one of password_env, password_file and password",
        );
    }
    let password = password(cx, path, &raw);
    let has_password_source = sources.iter().any(|set| *set);

    let is_ssh = kind == Some(TargetKind::Ssh);
    let is_pg = kind == Some(TargetKind::Postgres);
    let mut private_key = None;
    let mut private_key_file = None;
    if let Some(value) = &raw.private_key_file {
        if is_pg {
            cx.problem(
                format!("{path}.private_key_file"),
                "applies only to roles of ssh targets",
            );
        } else if let Some((file, text)) = private_key_text(cx, path, value) {
            private_key_file = Some(file);
            private_key = Some(Secret::new(text));
        }
    }
    if is_ssh && raw.private_key_file.is_none() && !has_password_source {
        cx.problem(
            path,
            "an ssh role needs private_key_file or a password \
             (password_env, password_file or password)",
        );
    }

    let allow = match raw.allow {
        None => Allow::DEFAULT.to_vec(),
        Some(_) if is_pg => {
            cx.problem(
                format!("{path}.allow"),
                "applies only to roles of ssh targets",
            );
            Vec::new()
        }
        Some(entries) => allow(cx, path, &entries),
    };

    Some(Role {
        user: user?,
        password,
        private_key_file,
        private_key,
        allow,
    })
}

/// Resolves the password from whichever source is set (problems for each that fails).
fn password(cx: &mut Ctx<'_>, path: &str, raw: &RawRole) -> Option<Secret> {
    let mut found = None;
    if let Some(var) = &raw.password_env {
        let key = format!("{path}.password_env");
        if var.is_empty() {
            cx.problem(key, "must name an environment variable");
        } else {
            match (cx.env)(var) {
                None => cx.problem(key, format!("environment variable {var} is not set")),
                Some(value) if value.is_empty() => {
                    cx.problem(key, format!("environment variable {var} is empty"))
                }
                Some(value) => found = Some(Secret::new(value)),
            }
        }
    }
    if let Some(value) = &raw.password_file {
        let key = format!("{path}.password_file");
        if let Some((file, text)) = cx.read_text(&key, value) {
            // A trailing newline is the editor's, not the password's.
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            if text.is_empty() {
                cx.problem(key, format!("{} is empty", file.display()));
            } else {
                found = Some(Secret::new(text));
            }
        }
    }
    if let Some(value) = &raw.password {
        cx.report.warn(
            &format!("{path}.password"),
            "inline password in the config file; prefer password_env or password_file",
        );
        found = Some(Secret::new(value.clone()));
    }
    found
}

/// Reads and parses an OpenSSH private key; returns its path and text.
fn private_key_text(
    cx: &mut Ctx<'_>,
    path: &str,
    value: &str,
) -> Option<(std::path::PathBuf, String)> {
    let key = format!("{path}.private_key_file");
    let (file, text) = cx.read_text(&key, value)?;
    match ssh_key::PrivateKey::from_openssh(text.as_bytes()) {
        Ok(parsed) if parsed.is_encrypted() => {
            cx.problem(
                key,
                format!(
                    "{} is encrypted with a passphrase; portcullis needs an unencrypted key",
                    file.display()
                ),
            );
            None
        }
        Ok(_) => {
            warn_if_readable_by_others(cx, &key, &file);
            Some((file, text))
        }
        Err(e) => {
            cx.problem(
                key,
                format!(
                    "{} is not a valid OpenSSH private key ({e}); expected \
                     -----BEGIN OPENSSH PRIVATE KEY-----",
                    file.display()
                ),
            );
            None
        }
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(cx: &mut Ctx<'_>, key: &str, file: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(file)
        && meta.permissions().mode() & 0o077 != 0
    {
        cx.report.warn(
            key,
            format!(
                "{} is readable by other users; chmod 600 it",
                file.display()
            ),
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_cx: &mut Ctx<'_>, _key: &str, _file: &std::path::Path) {}

/// Reads `allow`. Warns when `scp` comes without `sftp`: OpenSSH 9's scp speaks the sftp
/// protocol over the sftp subsystem, exactly as `sftp` does, so the gateway admits that
/// subsystem for `scp` (or modern scp would not work), and with it every sftp operation.
fn allow(cx: &mut Ctx<'_>, path: &str, entries: &[String]) -> Vec<Allow> {
    let mut out = Vec::new();
    for (k, entry) in entries.iter().enumerate() {
        match Allow::from_name(entry) {
            Some(kind) if !out.contains(&kind) => out.push(kind),
            Some(_) => {}
            None => cx.problem(
                format!("{path}.allow[{k}]"),
                format!(
                    "{entry:?} is not one of {}",
                    Allow::ALL.map(Allow::as_str).join(", ")
                ),
            ),
        }
    }
    if out.contains(&Allow::Scp) && !out.contains(&Allow::Sftp) {
        cx.report.warn(
            &format!("{path}.allow"),
            "\"scp\" without \"sftp\" still admits sftp sessions: OpenSSH 9's scp uses the \
             sftp subsystem and no server can tell it from sftp, so this role can also list, \
             rename and remove files with sftp; list \"sftp\" too to say so",
        );
    }
    out
}
