//! SSH figures: 512 MiB upload throughput, connection setup time and interactive round trip;
//! direct, through OpenSSH's `ssh -J` and through Portcullis.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use portcullis_gateway::testbed::client_options;

use crate::report::{Row, Table};
use crate::setup::{Env, USER};

#[derive(Clone, Copy)]
pub enum Via {
    Direct,
    Jump,
    Gateway,
}

/// An `ssh` command to the upstream by the given path.
pub fn ssh(env: &Env, via: Via) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args(client_options());
    match via {
        Via::Direct => {
            cmd.arg("-i").arg(&env.sshd.client_key_path);
            cmd.arg("-p").arg(env.sshd.port.to_string());
            cmd.arg(format!("{}@127.0.0.1", env.sshd.user));
        }
        Via::Jump => {
            let key = env.sshd.client_key_path.display();
            let hop = format!(
                "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
                 -o LogLevel=ERROR -i {key} -p {} -W %h:%p {}@127.0.0.1",
                env.sshd.port, env.sshd.user
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

fn upload(env: &Env, via: Via, file: &Path, mib: u64) -> anyhow::Result<f64> {
    let input = std::fs::File::open(file)?;
    let start = Instant::now();
    let out = ssh(env, via)
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

fn setup_ms(env: &Env, via: Via, n: usize) -> anyhow::Result<f64> {
    let start = Instant::now();
    for _ in 0..n {
        let out = ssh(env, via).arg("true").output()?;
        anyhow::ensure!(
            out.status.success(),
            "ssh true: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(start.elapsed().as_secs_f64() * 1000.0 / n as f64)
}

fn round_trip_us(env: &Env, via: Via, n: usize) -> anyhow::Result<f64> {
    let mut child = ssh(env, via)
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
    let start = Instant::now();
    for _ in 0..n {
        line.clear();
        stdin.write_all(b"ping\n")?;
        stdin.flush()?;
        stdout.read_line(&mut line)?;
        anyhow::ensure!(line == "ping\n", "echo came back as {line:?}");
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    drop(stdin);
    child.wait()?;
    Ok(us)
}

pub fn run(env: &Env, table: &mut Table) -> anyhow::Result<()> {
    let mib: u64 = if env.quick { 64 } else { 512 };
    let file = env.dir.path().join("upload.bin");
    {
        let f = std::fs::File::create(&file)?;
        f.set_len(mib * 1024 * 1024)?;
    }
    let d = upload(env, Via::Direct, &file, mib)?;
    let j = upload(env, Via::Jump, &file, mib)?;
    let g = upload(env, Via::Gateway, &file, mib)?;
    table.push(Row {
        figure: format!("ssh upload {mib} MiB"),
        unit: "MiB/s".into(),
        direct: Some(d),
        peer_name: "ssh -J".into(),
        peer: Some(j),
        ours: Some(g),
        target: "≥ 1.3× ssh -J".into(),
        holds: Some(g >= 1.3 * j),
    });
    let n = if env.quick { 5 } else { 20 };
    let d = setup_ms(env, Via::Direct, n)?;
    let j = setup_ms(env, Via::Jump, n)?;
    let g = setup_ms(env, Via::Gateway, n)?;
    table.push(Row {
        figure: "ssh connection setup (`ssh host true`)".into(),
        unit: "ms".into(),
        direct: Some(d),
        peer_name: "ssh -J".into(),
        peer: Some(j),
        ours: Some(g),
        target: "≤ 1.5× direct".into(),
        holds: Some(g <= 1.5 * d),
    });
    let n = if env.quick { 200 } else { 2000 };
    let d = round_trip_us(env, Via::Direct, n)?;
    let j = round_trip_us(env, Via::Jump, n)?;
    let g = round_trip_us(env, Via::Gateway, n)?;
    table.push(Row {
        figure: format!("interactive round trip (line echo ×{n})"),
        unit: "µs".into(),
        direct: Some(d),
        peer_name: "ssh -J".into(),
        peer: Some(j),
        ours: Some(g),
        target: "≤ 1.4× direct".into(),
        holds: Some(g <= 1.4 * d),
    });
    Ok(())
}
