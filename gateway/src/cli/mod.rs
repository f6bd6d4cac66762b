//! The `portcullis` command line: argument parsing (clap) and dispatch to each command.
//!
//! Global options (`-c`, `--json`, `--api`, `--token`, `--as`) are accepted before or after
//! the command words. Exit codes: 0 success, 1 the operation failed or was refused, 2 usage
//! or configuration error; 141 (as for a SIGPIPE death) when the reader of stdout went away,
//! e.g. `portcullis audit search | head`.

/// `print!` for a command's output on stdout; see [`write_stdout`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` for a command's output on stdout; see [`write_stdout`].
macro_rules! outln {
    () => {
        $crate::cli::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub mod admin;
pub mod audit;
mod inert;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for "the operation failed or was refused".
pub const EXIT_FAILED: u8 = 1;
/// Exit code for usage or configuration errors.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the reader of stdout went away: the status a shell gives a process that
/// SIGPIPE ended (128 + 13), which is how `grep` or `cat` end in `... | head`.
pub const EXIT_BROKEN_PIPE: i32 = 141;

/// Writes a command's output to stdout. `println!` panics when the reader has gone
/// (`portcullis audit search | head`), a backtrace on the user's terminal; this ends the
/// process at once and quietly instead, as the default SIGPIPE would, which the Rust
/// runtime ignores. Any other write error ends it with one sentence and exit 1.
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        stdout_failed(&e);
    }
}

/// Ends the process after a failed write to stdout, as [`write_stdout`] describes.
pub(crate) fn stdout_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(EXIT_BROKEN_PIPE);
    }
    eprintln!("portcullis: cannot write to stdout: {e}");
    std::process::exit(i32::from(EXIT_FAILED));
}

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
        Command::Serve => run_serve(&g),
        Command::Check => run_check(&g),
        Command::User(UserCmd::Scram) => run_user_scram(),
        Command::Demo => crate::demo::run(),
    }
}

/// Loads the config named by `-c`, else `./portcullis.toml`, else the embedded defaults,
/// for a client of the gateway (the admin CLI, the demo). Problems are a usage error (exit
/// 2) listing each with its key path. Warnings are not repeated here: they are about how the
/// gateway runs, and `serve` and `check` print them.
pub fn load_config(g: &Global) -> Result<portcullis_config::Config, Failure> {
    let (config, _path) = load_config_with_path(g, false)?;
    Ok(config)
}

/// [`load_config`], also saying which file it read; with `warn`, warnings go to stderr.
fn load_config_with_path(
    g: &Global,
    warn: bool,
) -> Result<(portcullis_config::Config, Option<PathBuf>), Failure> {
    match portcullis_config::resolve(g.config.as_deref()) {
        Ok((config, path)) => {
            if warn {
                for w in &config.warnings {
                    eprintln!("portcullis: warning: {w}");
                }
            }
            Ok((config, path))
        }
        Err(e) => {
            let name = g
                .config
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "portcullis.toml".into());
            Err(Failure::usage(format!("{name} is not valid:\n{e}")))
        }
    }
}

fn run_check(g: &Global) -> CmdResult {
    let (config, path) = load_config_with_path(g, true)?;
    let source = path
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "embedded defaults".into());
    outln!(
        "config OK: {source}: {} users, {} targets",
        config.users.len(),
        config.targets.len()
    );
    Ok(())
}

fn run_serve(g: &Global) -> CmdResult {
    let (config, path) = load_config_with_path(g, true)?;
    // SIGHUP re-reads the same source: the file found now, or the embedded defaults.
    let source = match path {
        Some(p) => crate::reload::ConfigSource::File(p),
        None => crate::reload::ConfigSource::Embedded,
    };
    init_tracing();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(crate::serve::run(
        config,
        source,
        crate::serve::OnHangup::Reload,
    ))
    .map_err(|e| {
        if e.is_config() {
            Failure::usage(e.to_string())
        } else {
            Failure::failed(e.to_string())
        }
    })
}

fn run_user_scram() -> CmdResult {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(Failure::usage("no password on stdin"));
    }
    outln!(
        "{}",
        portcullis_protocol::scram::generate_verifier(password)
    );
    Ok(())
}

/// Like `init_tracing`, but only warnings unless `RUST_LOG` says otherwise (for `demo`,
/// whose output is the instructions).
pub fn init_tracing_quiet() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Operational logs on stderr; `RUST_LOG` overrides the default `info`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
