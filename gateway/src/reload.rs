//! Config reload on SIGHUP: re-read the config source `serve` started with, validate it with
//! the code `check` uses, and either keep the old config (invalid: one error, audited) or swap
//! the live config and let the grant table revoke what the new one no longer allows.
//!
//! What can change live: users (keys, passwords), targets (addresses, credentials, roles),
//! policy. What cannot (listeners, data_dir, TLS files, audit durability, webhook URL) is
//! logged as needing a restart and keeps its running value, so the live config always tells
//! the truth about what the gateway is doing.

use std::path::PathBuf;
use std::sync::Arc;

use portcullis_config::{Config, ConfigErrors};
use portcullis_recorder::Event;
use tracing::{error, info, warn};

use crate::context::Gateway;

/// Where `serve`'s config came from, so a reload reads the same thing again.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// The file named by `-c`, or `./portcullis.toml` found at start.
    File(PathBuf),
    /// No file: the embedded defaults (a reload changes nothing, but is still answered).
    Embedded,
}

impl ConfigSource {
    /// Reads and validates the config, exactly as `portcullis check` does.
    pub fn load(&self) -> Result<Config, ConfigErrors> {
        match self {
            ConfigSource::File(path) => portcullis_config::load(path),
            ConfigSource::Embedded => Ok(Config::embedded_defaults()),
        }
    }

    /// How the source is named in logs and audit events.
    pub fn describe(&self) -> String {
        match self {
            ConfigSource::File(path) => path.display().to_string(),
            ConfigSource::Embedded => "embedded defaults".into(),
        }
    }
}

/// What a reload did; `serve` logs it, tests read it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Keys that changed in the file but only take effect after a restart.
    pub needs_restart: Vec<&'static str>,
    /// Grants revoked because their user, target or role is gone.
    pub revoked: Vec<String>,
}

/// Keys whose new value differs from the running one but cannot be applied live.
pub fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let tls = |c: &Config| {
        c.tls
            .as_ref()
            .map(|t| (t.cert_file.clone(), t.key_file.clone()))
    };
    let checks = [
        ("listen.ssh", old.listen.ssh != new.listen.ssh),
        (
            "listen.postgres",
            old.listen.postgres != new.listen.postgres,
        ),
        ("listen.admin", old.listen.admin != new.listen.admin),
        (
            "gateway.data_dir",
            old.gateway.data_dir != new.gateway.data_dir,
        ),
        ("tls", tls(old) != tls(new)),
        (
            "audit.durability",
            old.audit.durability != new.audit.durability,
        ),
        (
            "notify.webhook_url",
            old.notify.webhook_url != new.notify.webhook_url,
        ),
    ];
    checks
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
}

/// The new config with every restart-only setting put back to its running value.
fn keep_fixed(old: &Config, mut new: Config) -> Config {
    new.listen = old.listen.clone();
    new.gateway = old.gateway.clone();
    new.tls = old.tls.clone();
    new.audit = old.audit.clone();
    new.notify = old.notify.clone();
    new
}

/// One reload: on a bad config nothing changes and the problems are returned (after being
/// logged and audited); on a good one the live config is swapped and the grant table
/// revokes what it no longer allows.
pub async fn reload(gw: &Gateway, source: &ConfigSource) -> Result<Reloaded, ConfigErrors> {
    let described = source.describe();
    let new = match source.load() {
        Ok(c) => c,
        Err(e) => {
            let problems: Vec<String> = e.problems().iter().map(ToString::to_string).collect();
            error!(
                source = %described,
                problems = %problems.join("; "),
                "config reload failed; keeping the running config"
            );
            audit(
                gw,
                Event::new("config.reload_failed")
                    .with("source", &described)
                    .with("problems", problems),
            )
            .await;
            return Err(e);
        }
    };
    for w in &new.warnings {
        warn!(source = %described, "config warning: {w}");
    }
    let old = gw.config();
    let needs_restart = needs_restart(&old, &new);
    for key in &needs_restart {
        warn!(
            key,
            "config reload: {key} changed; it needs a restart to take effect, the running value stays"
        );
    }
    let new = keep_fixed(&old, new);
    let (users, targets) = (new.users.len(), new.targets.len());
    let revoked: Vec<String> = gw
        .grants
        .reload(Arc::new(new))
        .await
        .into_iter()
        .map(|g| g.id)
        .collect();
    info!(
        source = %described,
        users,
        targets,
        revoked = revoked.len(),
        "config reloaded"
    );
    audit(
        gw,
        Event::new("config.reloaded")
            .with("source", &described)
            .with("users", users)
            .with("targets", targets)
            .with("revoked_grants", &revoked)
            .with("needs_restart", &needs_restart),
    )
    .await;
    Ok(Reloaded {
        needs_restart,
        revoked,
    })
}

async fn audit(gw: &Gateway, event: Event) {
    if let Err(e) = gw.audit.append(event).await {
        // The reload itself stands; the audit log's own health check refuses new sessions.
        error!(error = %e, "could not audit the config reload");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_keys_are_named_and_kept() {
        let old = Config::embedded_defaults();
        let mut new = Config::embedded_defaults();
        assert!(needs_restart(&old, &new).is_empty());
        new.listen.ssh = ([127, 0, 0, 1], 1).into();
        new.gateway.data_dir = "/elsewhere".into();
        new.audit.durability = portcullis_config::Durability::Strict;
        new.notify.webhook_url = Some("http://127.0.0.1:9/hook".into());
        new.policy.warn_before = std::time::Duration::from_secs(1);
        assert_eq!(
            needs_restart(&old, &new),
            [
                "listen.ssh",
                "gateway.data_dir",
                "audit.durability",
                "notify.webhook_url"
            ]
        );
        let kept = keep_fixed(&old, new);
        assert_eq!(kept.listen.ssh, old.listen.ssh);
        assert_eq!(kept.gateway.data_dir, old.gateway.data_dir);
        assert_eq!(kept.audit.durability, old.audit.durability);
        assert_eq!(kept.notify.webhook_url, None);
        // Live settings come through.
        assert_eq!(kept.policy.warn_before, std::time::Duration::from_secs(1));
    }
}
