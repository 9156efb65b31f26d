//! The failed-events store: every message refused after authentication, with its reason, kept
//! until an operator replays or inspects it.

use crate::StoreError;
use crate::time::{format_micros, from_micros};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::sync::Mutex;

/// A recorded failed event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedEvent {
    pub id: i64,
    pub source_id: Option<i64>,
    pub received_at: String,
    pub code: String,
    pub reason: String,
    pub payload: String,
    pub truncated: bool,
    pub replayed_at: Option<String>,
}

impl FailedEvent {
    pub fn received_at_time(&self) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&self.received_at)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|_| from_micros(0))
    }
}

/// Which failed events to list.
#[derive(Debug, Clone, Default)]
pub struct FailedFilter {
    pub source_id: Option<i64>,
    pub code: Option<String>,
    /// Only events not replayed yet.
    pub pending_only: bool,
    /// Page after this ID (IDs ascend in arrival order).
    pub after_id: i64,
    pub limit: usize,
}

pub struct FailedEvents {
    conn: Mutex<Connection>,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FailedEvent> {
    Ok(FailedEvent {
        id: r.get(0)?,
        source_id: r.get(1)?,
        received_at: format_micros(r.get(2)?),
        code: r.get(3)?,
        reason: r.get(4)?,
        payload: r.get(5)?,
        truncated: r.get::<_, i64>(6)? != 0,
        replayed_at: r.get::<_, Option<i64>>(7)?.map(format_micros),
    })
}

const COLUMNS: &str = "id, source_id, received_at, code, reason, payload, truncated, replayed_at";

impl FailedEvents {
    pub(crate) fn new(conn: Connection) -> Self {
        Self {
            conn: Mutex::new(conn),
        }
    }

    pub fn list(&self, filter: &FailedFilter) -> Result<Vec<FailedEvent>, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM failed_events
             WHERE id > ?1 AND (?2 IS NULL OR source_id = ?2) AND (?3 IS NULL OR code = ?3)
               AND (?4 = 0 OR replayed_at IS NULL)
             ORDER BY id LIMIT ?5"
        ))?;
        let rows = stmt.query_map(
            params![
                filter.after_id,
                filter.source_id,
                filter.code,
                filter.pending_only as i64,
                filter.limit.clamp(1, 10_000) as i64
            ],
            row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn get(&self, id: i64) -> Result<Option<FailedEvent>, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        Ok(conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM failed_events WHERE id = ?1"),
                [id],
                row,
            )
            .optional()?)
    }

    pub fn count(&self, source_id: Option<i64>) -> Result<i64, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        Ok(conn.query_row(
            "SELECT COUNT(*) FROM failed_events WHERE ?1 IS NULL OR source_id = ?1",
            [source_id],
            |r| r.get(0),
        )?)
    }

    /// Records a new reason after a replay attempt failed again.
    pub fn update_reason(&self, id: i64, code: &str, reason: &str) -> Result<(), StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        conn.execute(
            "UPDATE failed_events SET code = ?2, reason = ?3 WHERE id = ?1",
            params![id, code, reason],
        )?;
        Ok(())
    }
}
