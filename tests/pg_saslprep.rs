//! Non-ASCII gateway passwords through psql: libpq applies SASLprep (RFC 4013) to the
//! password before SCRAM, and so does the gateway when it makes the verifier, so the same
//! password typed in another Unicode form still logs in, and a wrong one still fails.
#![allow(clippy::unwrap_used)]

mod pg_support;

use std::time::Duration;

use pg_support::{CAROL_PW, Harness, output};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_logs_in_with_a_non_ascii_password() {
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("carol", "pg", "ro", Duration::from_secs(3600))
        .await;
    // As set, and in the form SASLprep maps it to (NFKC, no-break space as space).
    for pw in [CAROL_PW, "IX-p\u{00E4}ss word"] {
        let mut cmd = h.psql("carol", pw, "pg+ro", "disable");
        cmd.args(["-X", "-A", "-t", "-c", "select 7"]);
        let (ok, out, err) = output(cmd).await;
        assert!(ok, "password {pw:?}: {out}{err}");
        assert_eq!(out.trim(), "7");
    }
    let mut cmd = h.psql("carol", "IX-pass word", "pg+ro", "disable");
    cmd.args(["-X", "-c", "select 7"]);
    let (ok, _, err) = output(cmd).await;
    assert!(!ok);
    assert!(err.contains("password authentication failed"), "{err}");
}
