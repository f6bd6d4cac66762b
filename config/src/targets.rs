//! `[[targets]]`: kind-specific requirements (a postgres target's database and TLS mode,
//! an ssh target's pinned host key), the target's grant ceiling, and its roles.

use std::collections::{BTreeMap, HashMap};

use crate::raw::RawTarget;
use crate::roles;
use crate::schema::{PgTlsMode, Policy, Target, TargetKind};
use crate::validate::{Ctx, duration_or};
use crate::values;

/// Checks every decoded target; returns the usable ones with their index in the file.
pub(crate) fn targets(
    cx: &mut Ctx<'_>,
    raw: Vec<(usize, RawTarget)>,
    policy: &Policy,
) -> Vec<(usize, Target)> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, raw) in raw {
        let path = format!("targets[{i}]");
        if let Some(name) = &raw.name
            && values::name(name).is_ok()
        {
            if let Some(first) = seen.get(name) {
                cx.problem(
                    format!("{path}.name"),
                    format!("duplicate target {name:?} (also targets[{first}])"),
                );
            } else {
                seen.insert(name.clone(), i);
            }
        }
        if let Some(target) = target(cx, &path, raw, policy) {
            out.push((i, target));
        }
    }
    out
}

fn kind(cx: &mut Ctx<'_>, path: &str, value: Option<&str>) -> Option<TargetKind> {
    match value {
        Some("postgres") => Some(TargetKind::Postgres),
        Some("ssh") => Some(TargetKind::Ssh),
        Some(other) => {
            cx.problem(
                format!("{path}.kind"),
                format!("must be \"postgres\" or \"ssh\", not {other:?}"),
            );
            None
        }
        None => {
            cx.problem(format!("{path}.kind"), "required (\"postgres\" or \"ssh\")");
            None
        }
    }
}

fn tls_mode(cx: &mut Ctx<'_>, path: &str, value: Option<&str>) -> PgTlsMode {
    match value {
        None | Some("prefer") => PgTlsMode::Prefer,
        Some("disable") => PgTlsMode::Disable,
        Some("require") => PgTlsMode::Require,
        Some("verify-full") => PgTlsMode::VerifyFull,
        Some(other) => {
            cx.problem(
                format!("{path}.tls"),
                format!("must be one of disable, prefer, require, verify-full, not {other:?}"),
            );
            PgTlsMode::Prefer
        }
    }
}

/// Reports a key set on a target of the other kind, which would otherwise be silently
/// ignored (and an operator who pins a host key on a postgres target expects it to matter).
fn only_for(cx: &mut Ctx<'_>, path: &str, key: &str, set: bool, kind: TargetKind) {
    if set {
        cx.problem(
            format!("{path}.{key}"),
            format!("applies only to {} targets", kind.as_str()),
        );
    }
}

fn target(cx: &mut Ctx<'_>, path: &str, raw: RawTarget, policy: &Policy) -> Option<Target> {
    let name = match raw.name {
        Some(name) => match values::name(&name) {
            Ok(()) => Some(name),
            Err(message) => {
                cx.problem(format!("{path}.name"), message);
                None
            }
        },
        None => {
            cx.problem(format!("{path}.name"), "required");
            None
        }
    };
    let kind = kind(cx, path, raw.kind.as_deref());
    let address = match raw.address {
        Some(address) => {
            if let Err(message) = values::host_port(&address) {
                cx.problem(format!("{path}.address"), message);
            }
            Some(address)
        }
        None => {
            cx.problem(
                format!("{path}.address"),
                "required (HOST:PORT of the upstream)",
            );
            None
        }
    };

    let tls = tls_mode(cx, path, raw.tls.as_deref());
    let ca_file = match &raw.ca_file {
        Some(value) => cx
            .read_text(&format!("{path}.ca_file"), value)
            .map(|(f, _)| f),
        None => None,
    };
    let mut host_key = None;
    match kind {
        Some(TargetKind::Postgres) => {
            match raw.database.as_deref().map(str::trim) {
                None => cx.problem(format!("{path}.database"), "required for postgres targets"),
                Some("") => cx.problem(format!("{path}.database"), "must not be empty"),
                Some(_) => {}
            }
            if tls == PgTlsMode::VerifyFull && raw.ca_file.is_none() {
                cx.problem(
                    format!("{path}.ca_file"),
                    "required when tls = \"verify-full\" (the CA that signed the server)",
                );
            }
            only_for(
                cx,
                path,
                "host_key",
                raw.host_key.is_some(),
                TargetKind::Ssh,
            );
        }
        Some(TargetKind::Ssh) => {
            match &raw.host_key {
                None => cx.problem(
                    format!("{path}.host_key"),
                    "required for ssh targets (the upstream's public host key, \
                     e.g. from `ssh-keyscan`)",
                ),
                Some(line) => match values::ssh_public_key(line) {
                    Ok(_) => host_key = Some(line.trim().to_string()),
                    Err(message) => cx.problem(format!("{path}.host_key"), message),
                },
            }
            let pg = TargetKind::Postgres;
            only_for(cx, path, "database", raw.database.is_some(), pg);
            only_for(cx, path, "tls", raw.tls.is_some(), pg);
            only_for(cx, path, "ca_file", raw.ca_file.is_some(), pg);
        }
        None => {}
    }

    let max_grant = raw.max_grant.as_deref().map(|text| {
        let key = format!("{path}.max_grant");
        let d = duration_or(cx, &key, Some(text), policy.max_grant);
        if d > policy.max_grant {
            cx.problem(
                key,
                format!(
                    "{text} is above policy.max_grant ({}); a target may only lower it",
                    humantime::format_duration(policy.max_grant)
                ),
            );
        }
        d
    });

    let mut roles = BTreeMap::new();
    match raw.roles {
        // `Some` of an empty map: roles were written but none decoded (already reported).
        Some(raw_roles) => {
            for (role_name, raw_role) in raw_roles {
                let role_path = format!("{path}.roles.{role_name}");
                if let Some(role) = roles::role(cx, &role_path, &role_name, raw_role, kind) {
                    roles.insert(role_name, role);
                }
            }
        }
        None => cx.problem(
            format!("{path}.roles"),
            "a target needs at least one role ([targets.roles.NAME])",
        ),
    }

    Some(Target {
        name: name?,
        kind: kind?,
        address: address?,
        database: raw.database,
        tls,
        ca_file,
        host_key,
        max_grant,
        approvers: raw.approvers.unwrap_or_default(),
        roles,
    })
}
