//! `--as USER` without `PORTCULLIS_PASSWORD`: in a real terminal (tmux) the password prompt
//! does not echo what is typed, and the command then runs as the user; from a pipe the
//! password is read as one line.

mod tmux;

use std::io::Write as _;
use std::process::Stdio;

use portcullis_gateway::testbed::GatewayProc;
use tmux::Tmux;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
const PASSWORD: &str = "Sekrit-Typed-9137";

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A gateway with user alice, and a tmux terminal running `portcullis --as alice grant list`
/// under `sh`, followed by the shell commands `then`; returns once the prompt shows. The trap
/// keeps `sh` alive past a Ctrl-C (its children still get SIGINT's default action), so it can
/// report how the command ended.
fn at_the_prompt(then: &str) -> (GatewayProc, Tmux) {
    let verifier = portcullis_protocol::scram::generate_verifier(PASSWORD);
    let body = format!("[[users]]\nname = \"alice\"\npassword_scram = \"{verifier}\"\n");
    let gw = GatewayProc::start(BIN, &body).expect("gateway starts");
    let api = format!("http://{}", gw.bound.admin);
    let line = format!(
        "trap : INT; {} -c {} --api {} --as alice grant list; {then}; sleep 60",
        shell_quote(BIN),
        shell_quote(&gw.config_path.display().to_string()),
        api
    );
    let t = Tmux {
        socket: gw.dir().join("tmux.sock"),
    };
    t.start(
        120,
        20,
        &[
            "env",
            "-u",
            "PORTCULLIS_PASSWORD",
            "-u",
            "PORTCULLIS_TOKEN",
            "sh",
            "-c",
            &line,
        ],
    );
    t.wait_screen("password for alice:");
    (gw, t)
}

#[test]
fn the_password_prompt_does_not_echo_and_pipes_still_work() {
    let (gw, t) = at_the_prompt("echo EXIT=$?");
    t.keys(&["-l", PASSWORD]);
    t.keys(&["Enter"]);
    let screen = t.wait_screen("EXIT=");
    assert!(
        !screen.contains(PASSWORD),
        "the password was echoed:\n{screen}"
    );
    assert!(screen.contains("EXIT=0"), "{screen}");

    // From a pipe: one line, no terminal needed.
    let mut child = gw
        .cli()
        .env_remove("PORTCULLIS_TOKEN")
        .args(["--as", "alice", "grant", "list"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cli runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("cli ends");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Ctrl-C at the prompt ends the command and gives the terminal its echo back.
#[test]
fn ctrl_c_at_the_prompt_restores_echo() {
    let (_gw, t) = at_the_prompt(
        "echo EXIT=$?; if stty -a | grep -qw -- -echo; then echo ECHO=off; else echo ECHO=on; fi",
    );
    t.keys(&["C-c"]);
    let screen = t.wait_screen("ECHO=");
    assert!(screen.contains("EXIT=130"), "{screen}");
    assert!(screen.contains("ECHO=on"), "echo left off:\n{screen}");
}
