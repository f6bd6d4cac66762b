//! Helpers shared by the tests that drive the real `portcullis` binary: a gateway config
//! with three users and a two-role target (`body`), running the CLI as the operator or as a
//! user against a real `serve`, reading its exit, and writing an audit log with the real
//! recorder for the offline readers.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use portcullis_gateway::testbed::GatewayProc;
use portcullis_protocol::scram::generate_verifier;
use portcullis_recorder::{AuditLog, Durability, Event};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// A config with users alice, bob and carol (password `<user>-pw`), bob the approver, and
/// the target `pg-prod` with roles `read` and `write`; `webhook` adds a `[notify]` URL.
pub fn body(webhook: Option<&str>) -> String {
    let users: String = ["alice", "bob", "carol"]
        .iter()
        .map(|u| {
            format!(
                "[[users]]\nname = \"{u}\"\npassword_scram = \"{}\"\n\n",
                generate_verifier(&format!("{u}-pw"))
            )
        })
        .collect();
    let notify = webhook
        .map(|u| format!("[notify]\nwebhook_url = \"{u}\"\n\n"))
        .unwrap_or_default();
    format!(
        "[policy]\nmax_grant = \"8h\"\nwarn_before = \"1m\"\napprovers = [\"bob\"]\n\n{notify}{users}\
         [[targets]]\nname = \"pg-prod\"\nkind = \"postgres\"\naddress = \"127.0.0.1:1\"\n\
         database = \"app\"\ntls = \"disable\"\nmax_grant = \"1h\"\n\
         [targets.roles.read]\nuser = \"app_ro\"\npassword = \"x\"\n\
         [targets.roles.write]\nuser = \"app_rw\"\npassword = \"x\"\n"
    )
}

/// Runs the CLI as the operator (token from the testbed) with `args`.
pub fn cli(gw: &GatewayProc, args: &[&str]) -> Output {
    gw.cli().args(args).output().expect("portcullis runs")
}

/// Runs the CLI as `user` (password `<user>-pw`).
pub fn cli_as(gw: &GatewayProc, user: &str, args: &[&str]) -> Output {
    gw.cli()
        .args(["--as", user])
        .env("PORTCULLIS_PASSWORD", format!("{user}-pw"))
        .args(args)
        .output()
        .expect("portcullis runs")
}

pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn json(o: Output) -> Value {
    let out = ok(o);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Asserts exit code `code` and returns stderr.
pub fn fails(o: Output, code: i32) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    err
}

/// Runs the CLI with `args` and nothing else (the offline commands).
pub fn portcullis(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run portcullis")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Writes `events` to the audit log under `data` with the real recorder.
pub fn write_log(data: &Path, events: Vec<Event>) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let log = AuditLog::open(
            &data.join("audit"),
            &data.join("audit-seal.key"),
            Durability::Strict,
        )
        .expect("open");
        for e in events {
            log.append(e).await.expect("append");
        }
        log.close().await.expect("close");
    });
}
