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

/// Refuses a config with no users or no targets where the running one has some. Reloading
/// it would revoke every grant at once, and grants do not come back with the next good
/// file; far likelier than a wish to cut everyone off is a file caught empty or half
/// written (an editor's save, a deploy tool) when the SIGHUP came. Cutting everyone off is
/// still one command: stop the gateway, or revoke the grants.
fn not_emptied(old: &Config, new: &Config) -> Result<(), ConfigErrors> {
    for (key, had, has) in [
        ("users", old.users.len(), new.users.len()),
        ("targets", old.targets.len(), new.targets.len()),
    ] {
        if had > 0 && has == 0 {
            return Err(ConfigErrors::one(
                key,
                format!(
                    "the new config has no {key} (the running one has {had}); reloading it would \
                     revoke every grant, so it is refused as an empty or half-written file \
                     (to cut off all access, revoke the grants or stop the gateway)"
                ),
            ));
        }
    }
    Ok(())
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
    let old = gw.config();
    let loaded = source
        .load()
        .and_then(|new| not_emptied(&old, &new).map(|()| new));
    let new = match loaded {
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
    fn a_config_emptied_of_users_or_targets_is_refused() {
        let mut old = Config::embedded_defaults();
        let empty = Config::embedded_defaults();
        // Nothing to lose: the running config is empty too.
        assert!(not_emptied(&old, &empty).is_ok());
        let text = "[[users]]\nname = \"alice\"\n\n[[targets]]\nname = \"db\"\n\
                    kind = \"postgres\"\naddress = \"127.0.0.1:5432\"\ndatabase = \"app\"\n\
                    [targets.roles.read]\nuser = \"ro\"\n";
        old =
            portcullis_config::load_str(text, std::path::Path::new("/nonexistent")).expect("valid");
        let e = not_emptied(&old, &empty).expect_err("refused");
        assert_eq!(e.problems()[0].path, "users");
        let mut no_targets = old.clone();
        no_targets.targets.clear();
        let e = not_emptied(&old, &no_targets).expect_err("refused");
        assert_eq!(e.problems()[0].path, "targets");
        assert!(e.to_string().contains("running one has 1"), "{e}");
        let mut fewer = old.clone();
        fewer.users.push(fewer.users[0].clone());
        assert!(not_emptied(&fewer, &old).is_ok());
    }

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
