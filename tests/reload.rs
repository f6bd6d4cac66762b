//! Config reload on SIGHUP against the real `portcullis serve`, a real PostgreSQL, a real
//! sshd and real psql/ssh clients: a bad config changes nothing and keeps everyone served; a
//! new user can connect without a restart; removing a target or a user closes its live
//! sessions through the kill path (the client told why, the upstream backend or process
//! gone) and refuses new ones; narrowing a role reaches the connections already open.
#![allow(clippy::unwrap_used)]

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use portcullis_gateway::testbed::{self, GatewayProc, Postgres, Sshd, client_options};
use serde_json::{Map, Value};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
const ALICE_PW: &str = "alice-reload-pw";
const CAROL_PW: &str = "carol-reload-pw";
const PG_SLEEP: &str = "select pg_sleep(600)";

type Ev = Map<String, Value>;

/// The upstreams and the secrets the config names; the config body is written from these.
struct Upstreams {
    pg: Postgres,
    sshd: Sshd,
    alice_key: PathBuf,
    alice_pub: String,
    pwfile: PathBuf,
    alice_verifier: String,
    carol_verifier: String,
    _dir: tempfile::TempDir,
}

struct World {
    up: Upstreams,
    gw: GatewayProc,
}

/// Which parts of the config body to write.
#[derive(Clone, Copy)]
struct Parts {
    alice: bool,
    carol: bool,
    web: bool,
    /// web-1's role allows exec (else a shell only).
    exec: bool,
}

const ALL: Parts = Parts {
    alice: true,
    carol: false,
    web: true,
    exec: true,
};

impl Upstreams {
    fn body(&self, p: Parts) -> String {
        let mut b = String::from("[policy]\nmax_grant = \"8h\"\nwarn_before = \"1s\"\n\n");
        if p.alice {
            b += &format!(
                "[[users]]\nname = \"alice\"\npassword_scram = \"{}\"\nssh_keys = [\"{}\"]\n\n",
                self.alice_verifier, self.alice_pub
            );
        }
        if p.carol {
            b += &format!(
                "[[users]]\nname = \"carol\"\npassword_scram = \"{}\"\n\n",
                self.carol_verifier
            );
        }
        b += &format!(
            "[[targets]]\nname = \"pg\"\nkind = \"postgres\"\naddress = \"127.0.0.1:{}\"\n\
             database = \"postgres\"\ntls = \"prefer\"\n\
             [targets.roles.rw]\nuser = \"app_rw\"\npassword_file = \"{}\"\n\n",
            self.pg.port,
            self.pwfile.display()
        );
        if p.web {
            b += &format!(
                "[[targets]]\nname = \"web-1\"\nkind = \"ssh\"\naddress = \"127.0.0.1:{}\"\n\
                 host_key = \"{}\"\n\
                 [targets.roles.deploy]\nuser = \"{}\"\nprivate_key_file = \"{}\"\n\
                 allow = [\"shell\"{}]\n",
                self.sshd.port,
                self.sshd.host_key_line,
                self.sshd.user,
                self.sshd.client_key_path.display(),
                if p.exec { ", \"exec\"" } else { "" }
            );
        }
        b
    }
}

impl World {
    fn start() -> World {
        let pg = Postgres::start().unwrap();
        pg.create_role("app_rw", "reload-rw-pw").unwrap();
        let sshd = Sshd::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (alice_key, alice_pub) = testbed::ssh_keygen(dir.path(), "alice").unwrap();
        let pwfile = dir.path().join("rw.pw");
        std::fs::write(&pwfile, "reload-rw-pw\n").unwrap();
        std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600)).unwrap();
        let up = Upstreams {
            pg,
            sshd,
            alice_key,
            alice_pub,
            pwfile,
            alice_verifier: portcullis_protocol::scram::generate_verifier(ALICE_PW),
            carol_verifier: portcullis_protocol::scram::generate_verifier(CAROL_PW),
            _dir: dir,
        };
        let gw = GatewayProc::start(BIN, &up.body(ALL)).unwrap();
        World { up, gw }
    }

    fn body(&self, p: Parts) -> String {
        self.up.body(p)
    }

    fn grant(&self, user: &str, target: &str, role: &str) -> String {
        let out = self
            .gw
            .cli()
            .args(["grant", "add", "--json", "--user", user, "--target", target])
            .args(["--role", role, "--for", "1h", "--reason", "reload test"])
            .output()
            .unwrap();
        assert!(out.status.success(), "grant add: {}", text(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    fn psql(&self, user: &str, password: &str, sql: &str) -> Command {
        let mut cmd = testbed::postgres::psql(self.gw.bound.postgres.port(), user, password, "pg");
        cmd.args(["-c", sql]);
        cmd
    }

    /// `psql -c 'select 1'` through the gateway: Ok(()) or the client's stderr.
    fn psql_select_1(&self, user: &str, password: &str) -> Result<(), String> {
        let out = self.psql(user, password, "select 1").output().unwrap();
        if out.status.success() && text(&out.stdout).trim() == "1" {
            Ok(())
        } else {
            Err(text(&out.stderr))
        }
    }

    /// `ssh` as alice to web-1 running `command`, with a terminal when `tty`.
    fn ssh(&self, command: &str, tty: bool) -> Command {
        self.ssh_with(&[], command, tty)
    }

    /// [`World::ssh`] with more client options (they must come before the destination).
    fn ssh_with(&self, options: &[String], command: &str, tty: bool) -> Command {
        let mut cmd = Command::new("ssh");
        if tty {
            cmd.arg("-tt");
        }
        cmd.args(options)
            .args(client_options())
            .args(["-o", "IdentitiesOnly=yes", "-i"])
            .arg(&self.up.alice_key)
            .args(["-p", &self.gw.bound.ssh.port().to_string()])
            .arg("alice+web-1@127.0.0.1")
            .arg(command);
        cmd
    }

    /// The number of upstream backends of the target role.
    fn backends(&self) -> usize {
        self.up
            .pg
            .sql("select count(*) from pg_stat_activity where usename = 'app_rw'")
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn events(&self) -> Vec<Ev> {
        portcullis_recorder::records(&self.gw.data_dir.join("audit"))
            .map(|it| it.filter_map(|r| r.ok()).map(|r| r.event).collect())
            .unwrap_or_default()
    }

    fn count(&self, kind: &str) -> usize {
        self.events()
            .iter()
            .filter(|e| e.get("type").and_then(Value::as_str) == Some(kind))
            .count()
    }

    /// Waits for the `n`th event of `kind` (the audit log is the gateway's word that a
    /// reload was applied); returns it.
    fn wait_nth(&self, kind: &str, n: usize) -> Ev {
        let found = wait_for(Duration::from_secs(20), || {
            self.events()
                .into_iter()
                .filter(|e| e.get("type").and_then(Value::as_str) == Some(kind))
                .nth(n - 1)
        });
        found.unwrap_or_else(|| panic!("no {kind} #{n}; gateway log: {}", self.gw.log()))
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Polls `f` until it yields something or `limit` passes; for conditions that have no event
/// to await (a process exiting, a backend going away).
fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn running(pattern: &str) -> bool {
    Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn spawn(mut cmd: Command) -> Child {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Starts alice's `select pg_sleep(600)` and waits until it runs upstream.
fn live_psql(w: &World) -> Child {
    let child = spawn(w.psql("alice", ALICE_PW, PG_SLEEP));
    let probe = format!(
        "select count(*) from pg_stat_activity where query = '{PG_SLEEP}' and state = 'active'"
    );
    let up = wait_for(Duration::from_secs(20), || {
        (w.up.pg.sql(&probe).unwrap().trim() == "1").then_some(())
    });
    assert!(up.is_some(), "pg_sleep never ran: {}", w.gw.log());
    child
}

/// Starts alice's `sleep <marker>` over ssh with a terminal and waits until it runs upstream.
fn live_ssh(w: &World, marker: &str) -> Child {
    let child = spawn(w.ssh(&format!("sleep {marker}"), true));
    let up = wait_for(Duration::from_secs(20), || {
        running(&format!("^sleep {}", marker.replace('.', "\\."))).then_some(())
    });
    assert!(up.is_some(), "remote sleep never started: {}", w.gw.log());
    child
}

/// Waits for `child` to exit; returns how long that took from `t0` and its stderr.
fn exited(child: &mut Child, t0: Instant) -> (Duration, String) {
    let done = wait_for(Duration::from_secs(20), || child.try_wait().unwrap());
    assert!(done.is_some(), "client still running 20 s after the reload");
    let took = t0.elapsed();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    (took, err + &out)
}

fn still_running(child: &mut Child) -> bool {
    child.try_wait().unwrap().is_none()
}

#[test]
fn sighup_reloads_the_config_live() {
    let w = World::start();
    let all = ALL;
    let g_pg = w.grant("alice", "pg", "rw");
    let g_web = w.grant("alice", "web-1", "deploy");
    let marker = format!("600.{}77", std::process::id());
    let mut psql = live_psql(&w);
    let mut ssh = live_ssh(&w, &marker);

    // (c) A bad config: nothing changes, one clear error naming the key paths, audited, and
    // both the live sessions and new connections go on under the old config.
    let mut bad = w.body(all);
    bad += "\n[[targets]]\nname = \"broken\"\nkind = \"mongodb\"\naddress = \"x\"\n";
    w.gw.reconfigure(&bad).unwrap();
    let failed = w.wait_nth("config.reload_failed", 1);
    let problems = failed["problems"].to_string();
    assert!(problems.contains("targets[2].kind"), "{failed:?}");
    let log = w.gw.log();
    assert!(
        log.contains("config reload failed") && log.contains("targets[2].kind"),
        "{log}"
    );
    assert!(still_running(&mut psql) && still_running(&mut ssh));
    w.psql_select_1("alice", ALICE_PW).unwrap();
    let out = w.ssh("echo still", false).output().unwrap();
    assert_eq!(text(&out.stdout).trim(), "still", "{}", text(&out.stderr));
    // Not even TOML.
    w.gw.reconfigure_raw("this is [not toml").unwrap();
    w.wait_nth("config.reload_failed", 2);
    w.psql_select_1("alice", ALICE_PW).unwrap();
    // Empty (caught mid-save): valid TOML, but it would revoke every grant; refused too.
    w.gw.reconfigure_raw("").unwrap();
    let failed = w.wait_nth("config.reload_failed", 3);
    assert!(
        failed["problems"]
            .to_string()
            .contains("the new config has no users"),
        "{failed:?}"
    );
    assert!(still_running(&mut psql) && still_running(&mut ssh));
    w.psql_select_1("alice", ALICE_PW).unwrap();
    assert_eq!(w.count("config.reloaded"), 0);

    // (b) A new user can connect without a restart: the CLI's grant add (validated against
    // the live config) and the pg listener (her SCRAM verifier) both see her.
    assert!(w.psql_select_1("carol", CAROL_PW).is_err());
    w.gw.reconfigure(&w.body(Parts { carol: true, ..all }))
        .unwrap();
    let reloaded = w.wait_nth("config.reloaded", 1);
    assert_eq!(reloaded["users"], 2, "{reloaded:?}");
    assert_eq!(reloaded["revoked_grants"], serde_json::json!([]));
    w.grant("carol", "pg", "rw");
    w.psql_select_1("carol", CAROL_PW).unwrap();
    assert!(still_running(&mut psql) && still_running(&mut ssh));

    // (b2) Narrowing a role reaches connections already open: a ControlMaster connection
    // made while the role allowed exec may not start one once a reload took exec away.
    let dir = tempfile::tempdir().unwrap();
    let mux = dir.path().join("mux");
    let control = format!("ControlPath={}", mux.display());
    let master_opts = ["-M", "-N", "-o", "ControlPersist=no", "-o", &control].map(String::from);
    let mut master = spawn(w.ssh_with(&master_opts, "", false));
    let ready = wait_for(Duration::from_secs(20), || mux.exists().then_some(()));
    assert!(ready.is_some(), "no control socket: {}", w.gw.log());
    let client_opts = ["-o", &control].map(String::from);
    let over_mux = || {
        w.ssh_with(&client_opts, "echo over-mux", false)
            .output()
            .unwrap()
    };
    let runs_over_mux = || {
        let out = over_mux();
        assert_eq!(
            text(&out.stdout).trim(),
            "over-mux",
            "{}",
            text(&out.stderr)
        );
    };
    runs_over_mux();
    w.gw.reconfigure(&w.body(Parts {
        carol: true,
        exec: false,
        ..all
    }))
    .unwrap();
    w.wait_nth("config.reloaded", 2);
    let out = over_mux();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("does not allow exec"),
        "{}",
        text(&out.stderr)
    );
    assert!(still_running(&mut master), "the connection itself stays");
    w.gw.reconfigure(&w.body(Parts { carol: true, ..all }))
        .unwrap();
    w.wait_nth("config.reloaded", 3);
    runs_over_mux();
    let _ = master.kill();
    let _ = master.wait();

    // (a1) Remove the SSH target: alice's ssh session closes, told why; her psql session,
    // on a target that stays, goes on.
    let t0 = Instant::now();
    w.gw.reconfigure(&w.body(Parts {
        carol: true,
        web: false,
        ..all
    }))
    .unwrap();
    let (took, said) = exited(&mut ssh, t0);
    eprintln!("target removed: SIGHUP to ssh client exit {took:?}");
    assert!(
        said.contains(&format!(
            "grant {g_web} was revoked: the reloaded config no longer has its user, target or role"
        )),
        "{said}"
    );
    let gone = wait_for(Duration::from_secs(20), || {
        (!running(&format!("^sleep {}", marker.replace('.', "\\.")))).then_some(())
    });
    assert!(gone.is_some(), "remote sleep survived: {}", w.up.sshd.log());
    let reloaded = w.wait_nth("config.reloaded", 4);
    assert_eq!(reloaded["revoked_grants"], serde_json::json!([g_web]));
    assert!(still_running(&mut psql));
    let out = w.ssh("true", false).output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unknown target web-1"),
        "{}",
        text(&out.stderr)
    );

    // (a2) Remove the user: her psql session closes with a FATAL naming the grant, no backend
    // of the role is left but carol's new one, and alice cannot log in any more.
    let t0 = Instant::now();
    w.gw.reconfigure(&w.body(Parts {
        alice: false,
        carol: true,
        web: false,
        exec: true,
    }))
    .unwrap();
    let (took, said) = exited(&mut psql, t0);
    eprintln!("user removed: SIGHUP to psql exit {took:?}");
    assert!(said.contains("FATAL"), "{said}");
    assert!(
        said.contains(&format!(
            "grant {g_pg} on pg was revoked: the reloaded config"
        )),
        "{said}"
    );
    let clean = wait_for(Duration::from_secs(20), || {
        (w.backends() == 0).then_some(())
    });
    assert!(clean.is_some(), "a backend of the role survived");
    let err = w.psql_select_1("alice", ALICE_PW).unwrap_err();
    assert!(err.contains("password authentication failed"), "{err}");
    w.psql_select_1("carol", CAROL_PW).unwrap();

    // The audit trail: each close is a session.ended of a SPEC reason, each grant revoked
    // by the config.
    w.wait_nth("config.reloaded", 5);
    let events = w.events();
    for g in [&g_pg, &g_web] {
        // The live session ended last under its grant (the short ones closed earlier).
        let ended = events
            .iter()
            .rev()
            .find(|e| e["type"] == "session.ended" && e["grant"] == **g)
            .unwrap_or_else(|| panic!("no session.ended for {g}: {events:#?}"));
        assert_eq!(ended["reason"], "grant_revoked");
        let revoked = events
            .iter()
            .find(|e| e["type"] == "grant.revoked" && e["grant"] == **g)
            .unwrap();
        assert_eq!(revoked["revoked_by"], "config");
    }
}
