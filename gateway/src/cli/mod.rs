//! The `portcullis` command line: argument parsing (clap) and dispatch to each command.
//!
//! Global options (`-c`, `--json`, `--api`, `--token`, `--as`) are accepted before or after
//! the command words. Exit codes: 0 success, 1 the operation failed or was refused, 2 usage
//! or configuration error.

pub mod admin;
pub mod audit;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for "the operation failed or was refused".
pub const EXIT_FAILED: u8 = 1;
/// Exit code for usage or configuration errors.
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Just-in-time access gateway for SSH and PostgreSQL"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts, before or after the command words.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Config file (default: ./portcullis.toml when present, else embedded defaults)
    #[arg(short = 'c', long = "config", global = true)]
    pub config: Option<PathBuf>,
    /// Print one JSON object or array instead of a table
    #[arg(long, global = true)]
    pub json: bool,
    /// Admin API base URL (default: the configured admin listener)
    #[arg(long, global = true)]
    pub api: Option<String>,
    /// Admin token (default: $PORTCULLIS_TOKEN, else <data_dir>/admin.token)
    #[arg(long, global = true, env = "PORTCULLIS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Act as this user (password from $PORTCULLIS_PASSWORD or a prompt)
    #[arg(long = "as", global = true, value_name = "USER")]
    pub as_user: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway
    Serve,
    /// Validate the config; every problem printed with its key path
    Check,
    /// Start a throwaway PostgreSQL and sshd behind a gateway and print commands to try
    Demo,
    /// Create, list, revoke and extend grants
    #[command(subcommand)]
    Grant(admin::GrantCmd),
    /// Just-in-time access requests
    #[command(subcommand)]
    Request(admin::RequestCmd),
    /// Live sessions
    #[command(subcommand)]
    Sessions(admin::SessionsCmd),
    /// Read and verify the audit log
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Play an SSH recording, or print a Postgres session's timeline
    Replay(audit::ReplayArgs),
    /// Access review: grants, reasons, approvers, sessions, queries and commands
    Report(audit::ReportArgs),
    /// Gateway users
    #[command(subcommand)]
    User(UserCmd),
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Read a password on stdin, print its SCRAM-SHA-256 verifier for the config
    Scram,
}

/// An error that carries the exit code to use.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    /// The operation failed or was refused (exit 1).
    pub fn failed(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_FAILED,
            message: message.into(),
        }
    }
    /// Usage or configuration error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::failed(e.to_string())
    }
}

pub type CmdResult = Result<(), Failure>;

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("portcullis: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn run(cli: Cli) -> CmdResult {
    let g = cli.global;
    match cli.command {
        Command::Grant(c) => admin::run_grant(c, &g),
        Command::Request(c) => admin::run_request(c, &g),
        Command::Sessions(c) => admin::run_sessions(c, &g),
        Command::Audit(c) => audit::run_audit(c, &g),
        Command::Replay(a) => audit::run_replay(a, &g),
        Command::Report(a) => audit::run_report(a, &g),
        _ => Err(Failure::usage("this command is not available yet")),
    }
}
