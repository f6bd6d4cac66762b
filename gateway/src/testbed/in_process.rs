//! A gateway in the test's own process: its real grants engine and audit log over a config
//! the test wrote, with no listener yet (the test spawns the proxy it drives). Tests use it
//! where they must reach inside, e.g. to open the log with a tiny segment limit.

use std::sync::Arc;

use portcullis_config::Config;
use portcullis_recorder::{AuditLog, Options};
use tokio_util::sync::CancellationToken;

use super::{Result, TestbedError};
use crate::context::{Gateway, Shared};
use crate::grants::Grants;
use crate::keys;

/// Opens the config's data dir, its audit log with `opts` and its grant store; the admin
/// token is `test`. Call inside a tokio runtime (the grants engine spawns its tasks).
pub fn in_process_gateway(config: Arc<Config>, opts: Options) -> Result<Shared> {
    let setup = |what: &str, e: &dyn std::fmt::Display| TestbedError::Setup {
        what: what.into(),
        detail: e.to_string(),
    };
    let data_dir = config.gateway.data_dir.clone();
    keys::ensure_data_dir(&data_dir).map_err(|e| setup("data dir", &e))?;
    let audit = AuditLog::open_with(
        &data_dir.join("audit"),
        &data_dir.join(keys::AUDIT_KEY_FILE),
        opts,
    )
    .map_err(|e| setup("audit log", &e))?;
    let grants = Grants::start(config, &data_dir.join("grants.db"), audit.clone())
        .map_err(|e| setup("grants", &e))?;
    Ok(Arc::new(Gateway {
        data_dir,
        grants,
        audit,
        admin_token: "test".into(),
        logins: Default::default(),
        shutdown: CancellationToken::new(),
    }))
}
