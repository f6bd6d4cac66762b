//! `audit verify|tail|search`, `replay` and `report`: readers of the audit log.
//!
//! CONTRACT: `AuditCmd`, `ReplayArgs`, `ReportArgs` and their `run_*` functions are called
//! from `cli/mod.rs`; the audit work fills them in.

use super::{CmdResult, Failure, Global};

#[derive(Debug, clap::Subcommand)]
pub enum AuditCmd {
    /// Offline: check every record, chain link and seal
    Verify,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Session id
    pub session: String,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {}

pub fn run_audit(_cmd: AuditCmd, _g: &Global) -> CmdResult {
    Err(Failure::usage("audit commands are not available yet"))
}

pub fn run_replay(_a: ReplayArgs, _g: &Global) -> CmdResult {
    Err(Failure::usage("replay is not available yet"))
}

pub fn run_report(_a: ReportArgs, _g: &Global) -> CmdResult {
    Err(Failure::usage("report is not available yet"))
}
