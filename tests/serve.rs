//! `portcullis serve`: first start creates the data dir and its secrets with private modes,
//! later starts reuse them, a port in use is a one-line error with exit 2.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use portcullis_gateway::testbed::GatewayProc;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("exists").permissions().mode() & 0o777
}

fn fingerprint(data_dir: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(data_dir.join("ssh_host_ed25519_key"))
        .output()
        .expect("ssh-keygen runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn secrets_are_created_once_with_private_modes_and_reused() {
    let mut gw = GatewayProc::start(BIN, "").expect("gateway starts");
    let data = gw.data_dir.clone();
    assert_eq!(mode(&data), 0o700);
    for f in [
        "ssh_host_ed25519_key",
        "tls/cert.pem",
        "tls/key.pem",
        "admin.token",
    ] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    let fp = fingerprint(&data);
    let cert = std::fs::read(data.join("tls/cert.pem")).expect("cert");
    let token = gw.admin_token.clone();
    assert!(gw.log().contains("ssh listener ready"), "{}", gw.log());
    assert!(gw.log().contains("postgres listener ready"));
    assert!(gw.log().contains("admin api listener ready"));

    gw.restart().expect("gateway restarts");
    assert_eq!(fingerprint(&data), fp, "host key must survive a restart");
    assert_eq!(
        std::fs::read(data.join("tls/cert.pem")).expect("cert"),
        cert
    );
    assert_eq!(gw.admin_token, token);
    assert!(
        gw.stop().expect("stops"),
        "clean shutdown exits 0:\n{}",
        gw.log()
    );
}

#[test]
fn a_port_in_use_is_a_one_line_error_with_exit_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\ndata_dir = \"{}\"\n[listen]\nssh = \"127.0.0.1:{port}\"\n\
             postgres = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n",
            dir.path().join("data").display()
        ),
    )
    .expect("write config");
    let out = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&config)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("listen.ssh"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains(&port.to_string()), "{stderr}");
}

#[test]
fn embedded_defaults_serve_from_the_working_directory() {
    // The embedded defaults listen on the fixed ports of SPEC §4; this is the one test that
    // uses them.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = portcullis_gateway::testbed::Child::spawn(
        Command::new(BIN).arg("serve").current_dir(dir.path()),
        &dir.path().join("serve.log"),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("spawn");
    let listen = dir.path().join("portcullis-data/listen.json");
    portcullis_gateway::testbed::wait_until("serve with defaults", &mut child, || listen.is_file())
        .expect("serve starts with embedded defaults");
    let bound = portcullis_gateway::serve::Bound::read(&dir.path().join("portcullis-data"))
        .expect("listen.json");
    assert_eq!(bound.ssh.port(), 2222);
    assert_eq!(bound.postgres.port(), 6432);
    assert_eq!(bound.admin.port(), 7070);
    let status = child.stop().expect("stop").expect("status");
    assert!(status.success(), "{}", child.log_tail());
}
