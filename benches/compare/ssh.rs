//! SSH figures: 512 MiB upload throughput, connection setup time and interactive round trip;
//! direct, through OpenSSH's `ssh -J` and through Portcullis. Direct and `ssh -J` are measured
//! twice: with OpenSSH's defaults (post-quantum key exchange), and pinned to the key exchange
//! and cipher the gateway negotiates with the same client, so the comparison is like for like.
//! As the floor any hop pays on this machine, each figure is also measured (pinned) through a
//! do-nothing TCP forwarder in front of sshd, and for the round trip the CPU time and context
//! switches the gateway and the forwarder spend per echo. Upload and round trip, whose
//! targets are within a run's noise of what we measure, are measured in interleaved rounds
//! and shown as medians (`report::interleaved`), the round trip with each round's spread.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use portcullis_gateway::testbed::client_options;

use crate::floor::Floor;
use crate::hop::{self, Usage};
use crate::report::{Row, Table, interleaved, median, of_rounds, spread};
use crate::setup::{Env, USER};

#[derive(Clone, Copy)]
pub enum Via {
    Direct,
    Jump,
    Gateway,
    /// Direct, through the TCP forwarder listening on this port.
    Floor(u16),
}

/// Key exchange and cipher to pin on OpenSSH-to-OpenSSH paths (`None`: OpenSSH's defaults).
type Algs<'a> = Option<&'a (String, String)>;

/// An `ssh` command to the upstream by the given path.
pub fn ssh(env: &Env, via: Via) -> Command {
    ssh_with(env, via, None)
}

fn pin(algs: Algs<'_>) -> String {
    algs.map(|(kex, cipher)| format!("-o KexAlgorithms={kex} -o Ciphers={cipher} "))
        .unwrap_or_default()
}

fn ssh_with(env: &Env, via: Via, algs: Algs<'_>) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args(client_options());
    if !matches!(via, Via::Gateway) {
        cmd.args(pin(algs).split_whitespace());
    }
    match via {
        Via::Direct | Via::Floor(_) => {
            let port = match via {
                Via::Floor(port) => port,
                _ => env.sshd.port,
            };
            cmd.arg("-i").arg(&env.sshd.client_key_path);
            cmd.arg("-p").arg(port.to_string());
            cmd.arg(format!("{}@127.0.0.1", env.sshd.user));
        }
        Via::Jump => {
            let key = env.sshd.client_key_path.display();
            let hop = format!(
                "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
                 -o LogLevel=ERROR {}-i {key} -p {} -W %h:%p {}@127.0.0.1",
                pin(algs),
                env.sshd.port,
                env.sshd.user
            );
            cmd.arg("-o").arg(format!("ProxyCommand={hop}"));
            cmd.arg("-i").arg(&env.sshd.client_key_path);
            cmd.arg("-p").arg(env.sshd.port.to_string());
            cmd.arg(format!("{}@127.0.0.1", env.sshd.user));
        }
        Via::Gateway => {
            cmd.arg("-i").arg(&env.user_key);
            cmd.arg("-p").arg(env.gw.bound.ssh.port().to_string());
            cmd.arg(format!("{USER}+web@127.0.0.1"));
        }
    }
    cmd
}

fn upload(env: &Env, via: Via, algs: Algs<'_>, file: &Path, mib: u64) -> anyhow::Result<f64> {
    let input = std::fs::File::open(file)?;
    let start = Instant::now();
    let out = ssh_with(env, via, algs)
        .arg("cat > /dev/null")
        .stdin(Stdio::from(input))
        .output()?;
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "upload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(mib as f64 / secs)
}

fn setup_ms(env: &Env, via: Via, algs: Algs<'_>, n: usize) -> anyhow::Result<f64> {
    let start = Instant::now();
    for _ in 0..n {
        let out = ssh_with(env, via, algs).arg("true").output()?;
        anyhow::ensure!(
            out.status.success(),
            "ssh true: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(start.elapsed().as_secs_f64() * 1000.0 / n as f64)
}

/// The hop's CPU time and context switches so far (the gateway process, or the forwarder's
/// threads), for paths that have one we can measure.
fn hop_usage(env: &Env, via: Via) -> Option<Usage> {
    match via {
        Via::Gateway => hop::of_process(env.gw.pid()),
        Via::Floor(_) => Floor::usage(),
        Via::Direct | Via::Jump => None,
    }
}

/// One round-trip run: µs per echo, and what the hop spent per echo.
struct Echo {
    us: f64,
    hop: Option<Usage>,
}

fn round_trip(env: &Env, via: Via, algs: Algs<'_>, n: usize) -> anyhow::Result<Echo> {
    let mut child = ssh_with(env, via, algs)
        .arg("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or_else(|| anyhow::anyhow!("stdin"))?;
    let mut stdout = BufReader::new(
        child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("stdout"))?,
    );
    let mut line = String::new();
    // One warm-up exchange so the connection is fully set up before timing.
    stdin.write_all(b"warm-up\n")?;
    stdout.read_line(&mut line)?;
    let before = hop_usage(env, via);
    let start = Instant::now();
    for _ in 0..n {
        line.clear();
        stdin.write_all(b"ping\n")?;
        stdin.flush()?;
        stdout.read_line(&mut line)?;
        anyhow::ensure!(line == "ping\n", "echo came back as {line:?}");
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    let hop = before.zip(hop_usage(env, via)).map(|(b, a)| {
        let d = a - b;
        Usage {
            cpu_us: d.cpu_us / n as f64,
            switches: d.switches / n as f64,
        }
    });
    drop(stdin);
    child.wait()?;
    Ok(Echo { us, hop })
}

/// The key exchange and cipher OpenSSH's client ends up with through the gateway, from
/// `ssh -v`.
fn gateway_algorithms(env: &Env) -> anyhow::Result<(String, String)> {
    let out = ssh(env, Via::Gateway)
        .args(["-v", "-o", "LogLevel=DEBUG1"])
        .arg("true")
        .output()?;
    let log = String::from_utf8_lossy(&out.stderr);
    let after = |key: &str| {
        log.lines()
            .find_map(|l| l.split_once(key).map(|(_, v)| v.split_whitespace().next()))
            .flatten()
            .map(str::to_string)
    };
    let kex = after("kex: algorithm: ");
    let cipher = after("kex: client->server cipher: ");
    kex.zip(cipher)
        .ok_or_else(|| anyhow::anyhow!("no kex/cipher in ssh -v output: {log}"))
}

/// Pushes one row with direct/`ssh -J` measured both ways and Portcullis once.
#[allow(clippy::too_many_arguments)]
fn rows(
    table: &mut Table,
    figure: &str,
    unit: &str,
    algs: &(String, String),
    default: (f64, f64),
    pinned: (f64, f64),
    ours: f64,
    target: &str,
    holds: impl Fn(f64, f64, f64) -> bool,
) {
    for ((d, j), how) in [
        (default, "OpenSSH defaults".to_string()),
        (
            pinned,
            format!("direct/-J pinned to {} + {}", algs.0, algs.1),
        ),
    ] {
        table.push(Row {
            figure: format!("{figure} ({how})"),
            unit: unit.into(),
            direct: Some(d),
            peer_name: "ssh -J".into(),
            peer: Some(j),
            ours: Some(ours),
            target: target.into(),
            holds: Some(holds(d, j, ours)),
        });
    }
}

/// The floor row of a figure: direct and the forwarder pinned like the gateway.
fn floor_row(
    table: &mut Table,
    figure: &str,
    unit: &str,
    algs: &(String, String),
    d: f64,
    f: f64,
    g: f64,
) {
    table.push(Row {
        figure: format!(
            "{figure} — floor: plain TCP forwarder (direct/forwarder pinned to {} + {})",
            algs.0, algs.1
        ),
        unit: unit.into(),
        direct: Some(d),
        peer_name: "TCP forwarder".into(),
        peer: Some(f),
        ours: Some(g),
        target: "—".into(),
        holds: None,
    });
}

/// What the gateway and the forwarder spend per echo.
fn cost_rows(table: &mut Table, figure: &str, f: &Echo, g: &Echo) {
    for (what, unit, pick) in [
        (
            "hop CPU per echo",
            "µs",
            (|u: Usage| u.cpu_us) as fn(Usage) -> f64,
        ),
        ("hop context switches per echo", "switches", |u: Usage| {
            u.switches
        }),
    ] {
        table.push(Row {
            figure: format!("{figure}: {what} (TCP forwarder / Portcullis)"),
            unit: unit.into(),
            direct: None,
            peer_name: "TCP forwarder".into(),
            peer: f.hop.map(pick),
            ours: g.hop.map(pick),
            target: "—".into(),
            holds: None,
        });
    }
}

pub fn run(env: &Env, table: &mut Table) -> anyhow::Result<()> {
    let algs = gateway_algorithms(env)?;
    let pinned = Some(&algs);
    let floor = Floor::start(([127, 0, 0, 1], env.sshd.port).into())?;
    let fwd = Via::Floor(floor.port);
    let mib: u64 = if env.quick { 64 } else { 512 };
    let file = env.dir.path().join("upload.bin");
    {
        let f = std::fs::File::create(&file)?;
        f.set_len(mib * 1024 * 1024)?;
    }
    let paths = [
        (Via::Direct, None),
        (Via::Jump, None),
        (Via::Gateway, None),
        (Via::Direct, pinned),
        (Via::Jump, pinned),
        (fwd, pinned),
    ];
    // Interleaved rounds, as for the round trip below: a single upload moves by a quarter
    // between runs here, which is more than the target's margin.
    let mibs: [Vec<f64>; 6] = interleaved(env.quick, |i| {
        let (via, algs) = paths[i];
        upload(env, via, algs, &file, mib)
    })?;
    let [d, j, g, dp, jp, f] = mibs.each_ref().map(|v| median(v));
    let figure = format!("ssh upload {mib} MiB ({})", of_rounds(mibs[0].len()));
    rows(
        table,
        &figure,
        "MiB/s",
        &algs,
        (d, j),
        (dp, jp),
        g,
        "≥ 1.3× ssh -J",
        |_, j, g| g >= 1.3 * j,
    );
    floor_row(table, &figure, "MiB/s", &algs, dp, f, g);
    let n = if env.quick { 5 } else { 20 };
    let d = setup_ms(env, Via::Direct, None, n)?;
    let j = setup_ms(env, Via::Jump, None, n)?;
    let g = setup_ms(env, Via::Gateway, None, n)?;
    let dp = setup_ms(env, Via::Direct, pinned, n)?;
    let jp = setup_ms(env, Via::Jump, pinned, n)?;
    let f = setup_ms(env, fwd, pinned, n)?;
    let figure = "ssh connection setup (`ssh host true`)";
    rows(
        table,
        figure,
        "ms",
        &algs,
        (d, j),
        (dp, jp),
        g,
        "≤ 1.5× direct",
        |d, _, g| g <= 1.5 * d,
    );
    floor_row(table, figure, "ms", &algs, dp, f, g);
    let n = if env.quick { 200 } else { 2000 };
    let runs: [Vec<Echo>; 6] = interleaved(env.quick, |i| {
        let (via, algs) = paths[i];
        round_trip(env, via, algs, n)
    })?;
    let us = |i: usize| median(&runs[i].iter().map(|e| e.us).collect::<Vec<_>>());
    let [d, j, g, dp, jp, f] = [0, 1, 2, 3, 4, 5].map(us);
    // Each round's ratio to the pinned direct run of the same round: the spread behind the
    // medians.
    let per_round = |i: usize| -> Vec<f64> {
        runs[i]
            .iter()
            .zip(&runs[3])
            .map(|(e, direct)| e.us / direct.us)
            .collect()
    };
    let x = |v: f64| format!("{v:.2}×");
    let figure = format!(
        "interactive round trip (line echo ×{n}, {})",
        of_rounds(runs[0].len())
    );
    rows(
        table,
        &figure,
        "µs",
        &algs,
        (d, j),
        (dp, jp),
        g,
        "≤ 1.4× direct",
        |d, _, g| g <= 1.4 * d,
    );
    floor_row(table, &figure, "µs", &algs, dp, f, g);
    if let Some(row) = table.rows.last_mut() {
        row.figure += &format!(
            "; per round, Portcullis {} and the forwarder {} the pinned direct",
            spread(&per_round(2), x),
            spread(&per_round(5), x)
        );
    }
    cost_rows(table, &figure, &Echo::mean(&runs[5]), &Echo::mean(&runs[2]));
    Ok(())
}

impl Echo {
    /// Several runs of equal length as one: the mean of what the hop spent per echo.
    fn mean(runs: &[Echo]) -> Echo {
        let n = runs.len().max(1) as f64;
        let hop = runs.iter().try_fold(Usage::default(), |t, e| {
            e.hop.map(|u| Usage {
                cpu_us: t.cpu_us + u.cpu_us / n,
                switches: t.switches + u.switches / n,
            })
        });
        Echo {
            us: runs.iter().map(|e| e.us).sum::<f64>() / n,
            hop,
        }
    }
}
