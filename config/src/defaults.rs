//! The embedded defaults: what a missing key, a missing section or a missing config file
//! means. The one place the default values are written down.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::schema::{AuditSection, Config, Durability, GatewaySection, Listen, Notify, Policy};

pub(crate) const DATA_DIR: &str = "./portcullis-data";
pub(crate) const SSH_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 2222);
pub(crate) const POSTGRES_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 6432);
pub(crate) const ADMIN_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7070);
pub(crate) const MAX_GRANT: Duration = Duration::from_secs(8 * 3600);
pub(crate) const WARN_BEFORE: Duration = Duration::from_secs(5 * 60);

impl Config {
    /// The configuration used when there is no config file: data in `./portcullis-data`,
    /// listeners on localhost (ssh 2222, postgres 6432, admin 7070), grants up to 8h with a
    /// 5m warning, batched audit durability, and no users or targets.
    pub fn embedded_defaults() -> Config {
        Config {
            gateway: GatewaySection {
                data_dir: PathBuf::from(DATA_DIR),
            },
            listen: Listen {
                ssh: SSH_LISTEN,
                postgres: POSTGRES_LISTEN,
                admin: ADMIN_LISTEN,
            },
            tls: None,
            policy: Policy {
                max_grant: MAX_GRANT,
                warn_before: WARN_BEFORE,
                approvers: Vec::new(),
            },
            audit: AuditSection {
                durability: Durability::Batched,
            },
            notify: Notify::default(),
            users: Vec::new(),
            targets: Vec::new(),
            warnings: Vec::new(),
        }
    }
}
