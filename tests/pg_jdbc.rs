//! pgjdbc, the JDBC driver most Java services use, through the gateway against a real
//! PostgreSQL: plain and TLS connections, statements prepared on the server (pgjdbc's
//! `prepareThreshold`), a batch, an error the connection survives, a cursor fetch; and the
//! audit records of its binary parameters, read as PostgreSQL prints them.
//!
//! Needs `javac`/`java` and Debian's `libpostgresql-jdbc-java` (`.ci/run` installs them).
#![allow(clippy::unwrap_used)]

mod pg_support;

use std::path::Path;
use std::time::Duration;

use pg_support::{ALICE_PW, Harness, output};

const JAR: &str = "/usr/share/java/postgresql.jar";

/// Runs each step and prints what it saw, one `key=value` line per step.
const CHECK_JAVA: &str = r#"
import java.sql.*;

public class Check {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0], args[1], args[2])) {
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("select 40 + 2")) {
                r.next();
                System.out.println("simple=" + r.getInt(1));
            }
            // Past prepareThreshold (5) pgjdbc switches to a named server-side statement
            // and binary parameters.
            int sum = 0;
            try (PreparedStatement p = c.prepareStatement("select ?::int4 * 2, ?::bytea")) {
                for (int i = 1; i <= 8; i++) {
                    p.setInt(1, i);
                    p.setBytes(2, new byte[] {1, 2, (byte) 0xff});
                    try (ResultSet r = p.executeQuery()) {
                        r.next();
                        sum += r.getInt(1);
                    }
                }
            }
            System.out.println("prepared=" + sum);
            try (Statement s = c.createStatement()) {
                s.execute("create temp table jt (id int8, v text)");
            }
            try (PreparedStatement p = c.prepareStatement("insert into jt values (?, ?)")) {
                for (long i = 0; i < 100; i++) {
                    p.setLong(1, i);
                    p.setString(2, "v" + i);
                    p.addBatch();
                }
                int[] done = p.executeBatch();
                System.out.println("batch=" + done.length);
            }
            try (Statement s = c.createStatement()) {
                s.executeQuery("select 1/0");
            } catch (SQLException e) {
                System.out.println("error=" + e.getSQLState());
            }
            // A batch is one implicit transaction up to its Sync: the duplicate key rolls
            // back the two inserts before it.
            try (Statement s = c.createStatement()) {
                s.execute("create temp table jk (id int8 primary key)");
            }
            try (PreparedStatement p = c.prepareStatement("insert into jk values (?)")) {
                for (long i : new long[] {1, 2, 2, 3}) {
                    p.setLong(1, i);
                    p.addBatch();
                }
                p.executeBatch();
            } catch (BatchUpdateException e) {
                System.out.println("batch_error=" + e.getSQLState());
            }
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("select count(*) from jk")) {
                r.next();
                System.out.println("kept=" + r.getLong(1));
            }
            c.setAutoCommit(false);
            long seen = 0;
            try (Statement s = c.createStatement()) {
                s.setFetchSize(10);
                try (ResultSet r = s.executeQuery("select id from jt order by id")) {
                    while (r.next()) seen++;
                }
            }
            c.commit();
            System.out.println("fetched=" + seen);
        }
    }
}
"#;

/// Compiles the check program into `dir`.
async fn compile(dir: &Path) {
    std::fs::write(dir.join("Check.java"), CHECK_JAVA).unwrap();
    let mut cmd = tokio::process::Command::new("javac");
    cmd.args(["-cp", JAR, "-d"])
        .arg(dir)
        .arg(dir.join("Check.java"));
    let (ok, out, err) = output(cmd).await;
    assert!(ok, "javac (is default-jdk-headless installed?): {out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_works_through_the_gateway_and_its_parameters_are_readable() {
    assert!(
        Path::new(JAR).exists(),
        "{JAR} missing: apt-get install libpostgresql-jdbc-java"
    );
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("alice", "pg", "rw", Duration::from_secs(3600))
        .await;
    let dir = tempfile::tempdir().unwrap();
    compile(dir.path()).await;
    let classpath = format!("{JAR}:{}", dir.path().display());
    for sslmode in ["disable", "require"] {
        let url = format!(
            "jdbc:postgresql://127.0.0.1:{}/pg?sslmode={sslmode}&connectTimeout=20",
            h.addr.port()
        );
        let mut cmd = tokio::process::Command::new("java");
        cmd.args(["-cp", &classpath, "Check", &url, "alice", ALICE_PW])
            .kill_on_drop(true);
        let (ok, out, err) = output(cmd).await;
        assert!(ok, "sslmode={sslmode}: {out}{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                "simple=42",
                "prepared=72",
                "batch=100",
                "error=22012",
                "batch_error=23505",
                "kept=0",
                "fetched=100"
            ],
            "sslmode={sslmode}: {err}"
        );
    }

    let events = h.audit_events().await;
    let prepared: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "pg.query" && e["sql"] == "select $1::int4 * 2, $2::bytea")
        .collect();
    assert_eq!(
        prepared.len(),
        16,
        "8 executions per connection: {prepared:#?}"
    );
    // Every execution's int is its decimal and the bytea PostgreSQL's hex, whether pgjdbc
    // sent it as text or (once the statement is on the server) binary.
    for (i, e) in prepared.iter().enumerate() {
        let n = (i % 8 + 1).to_string();
        assert_eq!(e["params"], serde_json::json!([n, "\\x0102ff"]), "{e:?}");
    }
    let inserts = events
        .iter()
        .filter(|e| e["type"] == "pg.query" && e["sql"] == "insert into jt values ($1, $2)")
        .count();
    assert_eq!(inserts, 200, "every batched insert is its own record");
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "pg.query" && e["sql"] == "select 1/0" && e["error"] == "22012")
    );
    // The failed batch: the two inserts before the duplicate were logged with their tags
    // as they completed; the duplicate's record says it rolled them back.
    let batch: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "pg.query" && e["sql"] == "insert into jk values ($1)")
        .collect();
    assert_eq!(batch.len(), 8, "4 per connection: {batch:#?}");
    for four in batch.chunks(4) {
        let none = serde_json::Value::Null;
        let field = |e: &serde_json::Map<String, serde_json::Value>, k: &str| {
            e.get(k).cloned().unwrap_or(serde_json::Value::Null)
        };
        let seen: Vec<_> = four
            .iter()
            .map(|e| (field(e, "tag"), field(e, "error"), field(e, "rolled_back")))
            .collect();
        assert_eq!(
            seen,
            [
                ("INSERT 0 1".into(), none.clone(), none.clone()),
                ("INSERT 0 1".into(), none.clone(), none.clone()),
                (none.clone(), "23505".into(), 2.into()),
                (none.clone(), "skipped".into(), none.clone()),
            ],
            "{four:#?}"
        );
    }
}
