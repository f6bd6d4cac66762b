//! Durable grants and requests: the [`Store`] trait and its SQLite implementation
//! (`<data_dir>/grants.db`) with versioned schema migrations.
//!
//! The live table is always rebuildable from the store, so the store is the source of truth
//! and the table a cache. Every row carries a version; updates are conditional on it, which is
//! what lets a shared store (PostgreSQL, later) serve several gateways.

use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::model::{GrantRecord, GrantStatus, RequestRecord, RequestStatus};

/// Why the store could not read or write.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error (internal).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A row changed under us: its version is not the one we read (internal).
    #[error("{kind} {id} was changed concurrently")]
    Conflict { kind: &'static str, id: String },
    /// A stored value could not be decoded (internal).
    #[error("corrupt {what} in store: {value}")]
    Corrupt { what: &'static str, value: String },
    /// The database file has a newer schema than this binary knows.
    #[error("store schema version {found} is newer than this binary's {known}")]
    TooNew { found: i64, known: i64 },
}

/// Durable grants and requests. Implementations serialise their own access.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Adds a new grant (its version is taken as given, normally 1).
    fn insert_grant(&self, g: &GrantRecord) -> Result<(), StoreError>;
    /// Replaces a grant whose stored version is `g.version - 1`.
    fn update_grant(&self, g: &GrantRecord) -> Result<(), StoreError>;
    fn get_grant(&self, id: &str) -> Result<Option<GrantRecord>, StoreError>;
    /// Grants, newest first; `status` narrows to one status.
    fn list_grants(&self, status: Option<GrantStatus>) -> Result<Vec<GrantRecord>, StoreError>;
    fn insert_request(&self, r: &RequestRecord) -> Result<(), StoreError>;
    /// Replaces a request whose stored version is `r.version - 1`.
    fn update_request(&self, r: &RequestRecord) -> Result<(), StoreError>;
    fn get_request(&self, id: &str) -> Result<Option<RequestRecord>, StoreError>;
    /// Requests, newest first; `status` narrows to one status.
    fn list_requests(
        &self,
        status: Option<RequestStatus>,
    ) -> Result<Vec<RequestRecord>, StoreError>;
    /// Records that grant `id` was warned about its expiry at `expires_at`; false when that
    /// warning was already recorded (say, before a restart), so it is sent once per deadline.
    /// Not versioned: it is notification bookkeeping, not grant state.
    fn claim_warning(&self, id: &str, expires_at: &DateTime<Utc>) -> Result<bool, StoreError>;
    /// Expired grants whose `grant.expired` is not yet known to be in the audit log. Marking
    /// a grant expired (in [`Store::update_grant`]) makes its event pending in the same write,
    /// so a crash before the audit append leaves it here for the next start to emit.
    fn expiry_unlogged(&self) -> Result<Vec<GrantRecord>, StoreError>;
    /// Records that grant `id`'s `grant.expired` is in the audit log. Not versioned, like
    /// [`Store::claim_warning`]: it is audit bookkeeping, not grant state.
    fn set_expiry_logged(&self, id: &str) -> Result<(), StoreError>;
}

/// Schema migrations, applied in order; `PRAGMA user_version` is the count applied.
const MIGRATIONS: &[&str] = &[
    // 1: grants and requests.
    "CREATE TABLE grants (
        id TEXT PRIMARY KEY,
        user TEXT NOT NULL,
        target TEXT NOT NULL,
        role TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        reason TEXT,
        created_by TEXT NOT NULL,
        approved_by TEXT,
        request_id TEXT,
        revoked_at TEXT,
        revoked_by TEXT,
        version INTEGER NOT NULL
    );
    CREATE INDEX grants_status ON grants(status, expires_at);
    CREATE TABLE requests (
        id TEXT PRIMARY KEY,
        user TEXT NOT NULL,
        target TEXT NOT NULL,
        role TEXT NOT NULL,
        duration_secs INTEGER NOT NULL,
        reason TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        decided_by TEXT,
        grant_id TEXT,
        decided_at TEXT,
        decision_reason TEXT,
        version INTEGER NOT NULL
    );
    CREATE INDEX requests_status ON requests(status, created_at);",
    // 2: the deadline a grant's `grant.expiring` was sent for, so a restart does not resend it.
    "ALTER TABLE grants ADD COLUMN warned_for TEXT",
    // 3: whether a grant marked expired still owes its `grant.expired` to the audit log (1
    // from the write that marks it expired until the append has returned). Rows from before
    // are taken as logged: there is no way to tell, and a replayed history is worse.
    "ALTER TABLE grants ADD COLUMN expiry_pending INTEGER NOT NULL DEFAULT 0",
];

/// The SQLite store: one connection behind a mutex (writes are small and rare).
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens or creates the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&conn)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite itself consistent (each statement is
        // atomic), so a poisoned lock is safe to keep using.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Inserts many grants in one transaction (bulk loads and benchmarks).
    pub fn insert_grants(&self, gs: &[GrantRecord]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for g in gs {
            insert_grant_on(&tx, g)?;
        }
        tx.commit()?;
        Ok(())
    }
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if found > known {
        return Err(StoreError::TooNew { found, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        conn.execute_batch(&format!(
            "BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;",
            i + 1
        ))?;
    }
    Ok(())
}

/// Timestamps are stored as fixed-width RFC 3339 with nanoseconds: lossless and sortable.
fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn ts_opt(t: &Option<DateTime<Utc>>) -> Option<String> {
    t.as_ref().map(ts)
}

fn parse_ts(s: String) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(&s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| StoreError::Corrupt {
            what: "timestamp",
            value: s,
        })
}

fn parse_ts_opt(s: Option<String>) -> Result<Option<DateTime<Utc>>, StoreError> {
    s.map(parse_ts).transpose()
}

const GRANT_COLS: &str = "id, user, target, role, status, created_at, expires_at, reason, \
    created_by, approved_by, request_id, revoked_at, revoked_by, version";

const REQUEST_COLS: &str = "id, user, target, role, duration_secs, reason, status, created_at, \
    decided_by, grant_id, decided_at, decision_reason, version";

/// Raw columns of a grant row, decoded outside rusqlite's closure so errors stay typed.
type GrantRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
);

fn grant_row(r: &Row<'_>) -> rusqlite::Result<GrantRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
        r.get(12)?,
        r.get(13)?,
    ))
}

fn grant_from(row: GrantRow) -> Result<GrantRecord, StoreError> {
    let status = GrantStatus::parse(&row.4).ok_or(StoreError::Corrupt {
        what: "grant status",
        value: row.4.clone(),
    })?;
    Ok(GrantRecord {
        id: row.0,
        user: row.1,
        target: row.2,
        role: row.3,
        status,
        created_at: parse_ts(row.5)?,
        expires_at: parse_ts(row.6)?,
        reason: row.7,
        created_by: row.8,
        approved_by: row.9,
        request_id: row.10,
        revoked_at: parse_ts_opt(row.11)?,
        revoked_by: row.12,
        version: row.13 as u64,
    })
}

type RequestRow = (
    String,
    String,
    String,
    String,
    i64,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
);

fn request_row(r: &Row<'_>) -> rusqlite::Result<RequestRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
        r.get(12)?,
    ))
}

fn request_from(row: RequestRow) -> Result<RequestRecord, StoreError> {
    let status = RequestStatus::parse(&row.6).ok_or(StoreError::Corrupt {
        what: "request status",
        value: row.6.clone(),
    })?;
    Ok(RequestRecord {
        id: row.0,
        user: row.1,
        target: row.2,
        role: row.3,
        duration_secs: row.4 as u64,
        reason: row.5,
        status,
        created_at: parse_ts(row.7)?,
        decided_by: row.8,
        grant_id: row.9,
        decided_at: parse_ts_opt(row.10)?,
        decision_reason: row.11,
        version: row.12 as u64,
    })
}

fn insert_grant_on(conn: &Connection, g: &GrantRecord) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "INSERT INTO grants ({GRANT_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14)"
    ))?
    .execute(params![
        g.id,
        g.user,
        g.target,
        g.role,
        g.status.as_str(),
        ts(&g.created_at),
        ts(&g.expires_at),
        g.reason,
        g.created_by,
        g.approved_by,
        g.request_id,
        ts_opt(&g.revoked_at),
        g.revoked_by,
        g.version as i64,
    ])?;
    Ok(())
}

impl Store for SqliteStore {
    fn insert_grant(&self, g: &GrantRecord) -> Result<(), StoreError> {
        insert_grant_on(&self.conn(), g)
    }

    fn update_grant(&self, g: &GrantRecord) -> Result<(), StoreError> {
        let n = self
            .conn()
            .prepare_cached(
                "UPDATE grants SET status=?2, expires_at=?3, revoked_at=?4, revoked_by=?5, \
                 version=?6, expiry_pending=CASE WHEN ?2='expired' AND status<>'expired' \
                 THEN 1 ELSE expiry_pending END WHERE id=?1 AND version=?7",
            )?
            .execute(params![
                g.id,
                g.status.as_str(),
                ts(&g.expires_at),
                ts_opt(&g.revoked_at),
                g.revoked_by,
                g.version as i64,
                g.version as i64 - 1,
            ])?;
        if n == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict {
                kind: "grant",
                id: g.id.clone(),
            })
        }
    }

    fn get_grant(&self, id: &str) -> Result<Option<GrantRecord>, StoreError> {
        let row = self
            .conn()
            .prepare_cached(&format!("SELECT {GRANT_COLS} FROM grants WHERE id=?1"))?
            .query_row([id], grant_row)
            .optional()?;
        row.map(grant_from).transpose()
    }

    fn list_grants(&self, status: Option<GrantStatus>) -> Result<Vec<GrantRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {GRANT_COLS} FROM grants WHERE ?1 IS NULL OR status=?1 \
             ORDER BY created_at DESC, id"
        ))?;
        let rows = stmt
            .query_map([status.map(|s| s.as_str())], grant_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(grant_from).collect()
    }

    fn insert_request(&self, r: &RequestRecord) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(&format!(
                "INSERT INTO requests ({REQUEST_COLS}) \
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)"
            ))?
            .execute(params![
                r.id,
                r.user,
                r.target,
                r.role,
                r.duration_secs as i64,
                r.reason,
                r.status.as_str(),
                ts(&r.created_at),
                r.decided_by,
                r.grant_id,
                ts_opt(&r.decided_at),
                r.decision_reason,
                r.version as i64,
            ])?;
        Ok(())
    }

    fn update_request(&self, r: &RequestRecord) -> Result<(), StoreError> {
        let n = self
            .conn()
            .prepare_cached(
                "UPDATE requests SET status=?2, decided_by=?3, grant_id=?4, decided_at=?5, \
                 decision_reason=?6, version=?7 WHERE id=?1 AND version=?8",
            )?
            .execute(params![
                r.id,
                r.status.as_str(),
                r.decided_by,
                r.grant_id,
                ts_opt(&r.decided_at),
                r.decision_reason,
                r.version as i64,
                r.version as i64 - 1,
            ])?;
        if n == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict {
                kind: "request",
                id: r.id.clone(),
            })
        }
    }

    fn get_request(&self, id: &str) -> Result<Option<RequestRecord>, StoreError> {
        let row = self
            .conn()
            .prepare_cached(&format!("SELECT {REQUEST_COLS} FROM requests WHERE id=?1"))?
            .query_row([id], request_row)
            .optional()?;
        row.map(request_from).transpose()
    }

    fn list_requests(
        &self,
        status: Option<RequestStatus>,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {REQUEST_COLS} FROM requests WHERE ?1 IS NULL OR status=?1 \
             ORDER BY created_at DESC, id"
        ))?;
        let rows = stmt
            .query_map([status.map(|s| s.as_str())], request_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(request_from).collect()
    }

    fn claim_warning(&self, id: &str, expires_at: &DateTime<Utc>) -> Result<bool, StoreError> {
        let changed = self
            .conn()
            .prepare_cached(
                "UPDATE grants SET warned_for=?2 \
                 WHERE id=?1 AND (warned_for IS NULL OR warned_for<>?2)",
            )?
            .execute(params![id, ts(expires_at)])?;
        Ok(changed == 1)
    }

    fn expiry_unlogged(&self) -> Result<Vec<GrantRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {GRANT_COLS} FROM grants WHERE expiry_pending=1 ORDER BY expires_at, id"
        ))?;
        let rows = stmt
            .query_map([], grant_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(grant_from).collect()
    }

    fn set_expiry_logged(&self, id: &str) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("UPDATE grants SET expiry_pending=0 WHERE id=?1")?
            .execute([id])?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn grant(id: &str) -> GrantRecord {
        let now = Utc::now();
        GrantRecord {
            id: id.into(),
            user: "alice".into(),
            target: "pg".into(),
            role: "read".into(),
            status: GrantStatus::Live,
            created_at: now,
            expires_at: now + chrono::Duration::hours(1),
            reason: Some("why".into()),
            created_by: "admin".into(),
            approved_by: None,
            request_id: None,
            revoked_at: None,
            revoked_by: None,
            version: 1,
        }
    }

    #[test]
    fn grants_round_trip_and_updates_are_versioned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grants.db");
        let s = SqliteStore::open(&path).unwrap();
        let mut g = grant("g_1");
        s.insert_grant(&g).unwrap();
        assert_eq!(s.get_grant("g_1").unwrap().unwrap(), g);
        g.status = GrantStatus::Revoked;
        g.revoked_by = Some("admin".into());
        g.revoked_at = Some(Utc::now());
        g.version = 2;
        s.update_grant(&g).unwrap();
        // A second writer holding the old version loses.
        assert!(matches!(
            s.update_grant(&g),
            Err(StoreError::Conflict { .. })
        ));
        drop(s);
        // Reopening runs no migration twice and keeps the data.
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.list_grants(Some(GrantStatus::Revoked)).unwrap(), vec![g]);
        assert!(s.list_grants(Some(GrantStatus::Live)).unwrap().is_empty());
    }

    #[test]
    fn a_warning_is_claimed_once_per_deadline_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grants.db");
        let s = SqliteStore::open(&path).unwrap();
        let g = grant("g_1");
        s.insert_grant(&g).unwrap();
        assert!(s.claim_warning("g_1", &g.expires_at).unwrap());
        assert!(!s.claim_warning("g_1", &g.expires_at).unwrap());
        drop(s);
        let s = SqliteStore::open(&path).unwrap();
        assert!(!s.claim_warning("g_1", &g.expires_at).unwrap());
        // An extension is a new deadline, warned about again.
        let later = g.expires_at + chrono::Duration::minutes(30);
        assert!(s.claim_warning("g_1", &later).unwrap());
        assert!(!s.claim_warning("g_unknown", &later).unwrap());
    }

    #[test]
    fn a_version_1_database_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grants.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&format!(
            "BEGIN; {}; PRAGMA user_version = 1; COMMIT;",
            MIGRATIONS[0]
        ))
        .unwrap();
        drop(conn);
        let s = SqliteStore::open(&path).unwrap();
        let g = grant("g_1");
        s.insert_grant(&g).unwrap();
        assert!(s.claim_warning("g_1", &g.expires_at).unwrap());
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grants.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }
}
