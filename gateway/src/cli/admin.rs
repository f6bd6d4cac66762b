//! `grant`, `request` and `sessions`: clients of the admin API.
//!
//! CONTRACT: `GrantCmd`, `RequestCmd`, `SessionsCmd` and their `run_*` functions are called
//! from `cli/mod.rs`; the grants work fills them in.

use super::{CmdResult, Failure, Global};

#[derive(Debug, clap::Subcommand)]
pub enum GrantCmd {
    /// Create a grant, print its id
    Add,
}

#[derive(Debug, clap::Subcommand)]
pub enum RequestCmd {
    /// A user asks for access
    Create,
}

#[derive(Debug, clap::Subcommand)]
pub enum SessionsCmd {
    /// Live sessions
    List,
}

pub fn run_grant(_cmd: GrantCmd, _g: &Global) -> CmdResult {
    Err(Failure::usage("grant commands are not available yet"))
}

pub fn run_request(_cmd: RequestCmd, _g: &Global) -> CmdResult {
    Err(Failure::usage("request commands are not available yet"))
}

pub fn run_sessions(_cmd: SessionsCmd, _g: &Global) -> CmdResult {
    Err(Failure::usage("sessions commands are not available yet"))
}
