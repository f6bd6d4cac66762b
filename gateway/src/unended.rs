//! Sessions the previous run of the gateway left without a `session.ended`: it was killed
//! (`kill -9`, a crash, the machine going down) or a session was still closing when the
//! shutdown grace ran out. Their ends are recorded at the next start, so every
//! `session.started` in the log has its `session.ended`.

use std::collections::BTreeMap;
use std::path::Path;

use portcullis_recorder::Event;
use portcullis_recorder::read::{ReadError, records_from_nth_last};

/// What an owed `session.ended` says happened.
pub const ERROR: &str = "the gateway stopped before it recorded the end of this session; \
                         recorded when it started again";

/// The `session.ended` events the previous run owes the log under `dir`
/// (`<data_dir>/audit`), oldest session first: one per session it started and did not
/// record the end of. Each carries the session's own fields (session, user, target, role,
/// grant, client, proto), `reason: "error"` and [`ERROR`]; its bytes and duration are not
/// known. `this_start` is the seq of this run's own `gateway.started`: the log is read from
/// the previous one up to it, so this costs what the previous run wrote, not the whole log.
pub fn owed(dir: &Path, this_start: u64) -> Result<Vec<Event>, ReadError> {
    // seq of the start -> its fields; by session id -> seq.
    let mut started: BTreeMap<u64, serde_json::Map<String, serde_json::Value>> = BTreeMap::new();
    let mut by_id: BTreeMap<String, u64> = BTreeMap::new();
    for record in records_from_nth_last(dir, "gateway.started", 2)? {
        let record = record?;
        if record.seq >= this_start {
            break;
        }
        match record.kind() {
            // A run's sessions are its own; an earlier run's were settled at this start.
            "gateway.started" => {
                started.clear();
                by_id.clear();
            }
            "session.started" => {
                if let Some(id) = record.str_field("session") {
                    by_id.insert(id.to_owned(), record.seq);
                    started.insert(record.seq, record.event);
                }
            }
            "session.ended" => {
                if let Some(seq) = record.str_field("session").and_then(|id| by_id.remove(id)) {
                    started.remove(&seq);
                }
            }
            _ => {}
        }
    }
    Ok(started
        .into_values()
        .map(|mut fields| {
            fields.remove("type");
            let mut ev = Event::new("session.ended");
            ev.0.extend(fields);
            ev.with("reason", "error").with("error", ERROR)
        })
        .collect())
}
