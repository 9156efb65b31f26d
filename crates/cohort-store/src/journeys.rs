//! Journeys' run-time state in `state.db`: the SQLite [`JourneyStateStore`].
//!
//! Every change is one immediate transaction, so a move and the effects it records commit
//! together. Timers are the active entries' `due_at`, read through a partial index in due
//! order; the outbox is `journey_effects`, unique by idempotency key.

use crate::time::{from_micros, to_micros};
use cohort_journey::state::{
    CustomerId, Effect, Entry, EntryId, JourneyStateStore, Move, NewEntry, PendingEffect,
    StateError,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::collections::BTreeMap;

/// The SQLite journey state, on a connection of its own.
pub struct SqliteJourneyState {
    conn: Connection,
}

fn storage(e: impl std::error::Error + Send + Sync + 'static) -> StateError {
    StateError::Storage(Box::new(e))
}

const ENTRY_COLUMNS: &str = "id, journey, version, customer_id, step, due_at, payload, entered_at, \
     exit_reason FROM journey_entries";

type EntryRow = (
    i64,
    String,
    i64,
    i64,
    String,
    Option<i64>,
    String,
    i64,
    Option<String>,
);

fn read_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<EntryRow> {
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
    ))
}

fn entry(row: EntryRow) -> Result<Entry, StateError> {
    let (id, journey, version, customer, step, due_at, payload, entered_at, exit_reason) = row;
    Ok(Entry {
        id: EntryId(id),
        journey,
        version: u32::try_from(version)
            .map_err(|_| StateError::Unreadable(format!("entry {id} has version {version}")))?,
        customer,
        step,
        due_at: due_at.map(from_micros),
        payload: serde_json::from_str(&payload)
            .map_err(|e| StateError::Unreadable(format!("entry {id}'s payload: {e}")))?,
        entered_at: from_micros(entered_at),
        exit_reason,
    })
}

impl SqliteJourneyState {
    pub(crate) fn new(conn: Connection) -> Self {
        SqliteJourneyState { conn }
    }

    fn entries(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<Entry>, StateError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(storage)?;
        let rows = stmt
            .query_map(args, read_entry)
            .map_err(storage)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(storage)?;
        rows.into_iter().map(entry).collect()
    }
}

impl JourneyStateStore for SqliteJourneyState {
    fn enter(
        &mut self,
        new: &NewEntry,
        allow_concurrent: bool,
    ) -> Result<Option<EntryId>, StateError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage)?;
        if !allow_concurrent {
            let active: Option<i64> = tx
                .query_row(
                    "SELECT id FROM journey_entries
                     WHERE customer_id = ?1 AND journey = ?2 AND exit_reason IS NULL LIMIT 1",
                    params![new.customer, new.journey],
                    |r| r.get(0),
                )
                .optional()
                .map_err(storage)?;
            if active.is_some() {
                return Ok(None);
            }
        }
        let payload = serde_json::to_string(&new.payload).map_err(storage)?;
        tx.execute(
            "INSERT INTO journey_entries
               (journey, version, customer_id, step, due_at, payload, entered_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                new.journey,
                i64::from(new.version),
                new.customer,
                new.step,
                new.due_at.map(to_micros),
                payload,
                to_micros(new.entered_at)
            ],
        )
        .map_err(storage)?;
        let id = tx.last_insert_rowid();
        tx.commit().map_err(storage)?;
        Ok(Some(EntryId(id)))
    }

    fn entry(&mut self, id: EntryId) -> Result<Option<Entry>, StateError> {
        Ok(self
            .entries(&format!("SELECT {ENTRY_COLUMNS} WHERE id = ?1"), [id.0])?
            .pop())
    }

    fn active_entries(&mut self, customer: CustomerId) -> Result<Vec<Entry>, StateError> {
        self.entries(
            &format!(
                "SELECT {ENTRY_COLUMNS} WHERE customer_id = ?1 AND exit_reason IS NULL ORDER BY id"
            ),
            [customer],
        )
    }

    fn advance(
        &mut self,
        id: EntryId,
        from_step: &str,
        to: &Move,
        effects: &[Effect],
    ) -> Result<bool, StateError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage)?;
        let moved = match to {
            Move::Step { step, due_at } => tx.execute(
                "UPDATE journey_entries SET step = ?3, due_at = ?4
                 WHERE id = ?1 AND step = ?2 AND exit_reason IS NULL",
                params![id.0, from_step, step, due_at.map(to_micros)],
            ),
            Move::Exit { reason } => tx.execute(
                "UPDATE journey_entries SET due_at = NULL, exit_reason = ?3
                 WHERE id = ?1 AND step = ?2 AND exit_reason IS NULL",
                params![id.0, from_step, reason],
            ),
        }
        .map_err(storage)?;
        if moved == 0 {
            return Ok(false);
        }
        for effect in effects {
            let payload = serde_json::to_string(&effect.payload).map_err(storage)?;
            tx.execute(
                "INSERT OR IGNORE INTO journey_effects (key, channel, payload) VALUES (?1, ?2, ?3)",
                params![effect.key, effect.channel, payload],
            )
            .map_err(storage)?;
        }
        tx.commit().map_err(storage)?;
        Ok(true)
    }

    fn due(
        &mut self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<Entry>, StateError> {
        self.entries(
            &format!(
                "SELECT {ENTRY_COLUMNS} WHERE due_at IS NOT NULL AND exit_reason IS NULL
                 AND due_at <= ?1 ORDER BY due_at, id LIMIT ?2"
            ),
            params![to_micros(now), limit as i64],
        )
    }

    fn pending_effects(
        &mut self,
        channel: &str,
        limit: usize,
    ) -> Result<Vec<PendingEffect>, StateError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT key, payload, attempts FROM journey_effects
                 WHERE channel = ?1 AND done = 0 ORDER BY seq LIMIT ?2",
            )
            .map_err(storage)?;
        let rows = stmt
            .query_map(params![channel, limit as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(storage)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(storage)?;
        rows.into_iter()
            .map(|(key, payload, attempts)| {
                let payload = serde_json::from_str(&payload)
                    .map_err(|e| StateError::Unreadable(format!("effect {key}: {e}")))?;
                Ok(PendingEffect {
                    effect: Effect {
                        key,
                        channel: channel.to_string(),
                        payload,
                    },
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    fn complete_effect(&mut self, key: &str, status: &str, done: bool) -> Result<(), StateError> {
        let changed = if done {
            self.conn.execute(
                "UPDATE journey_effects SET status = ?2, done = 1 WHERE key = ?1 AND done = 0",
                params![key, status],
            )
        } else {
            // The attempt's outcome is the channel's to log; the outbox keeps the count.
            self.conn.execute(
                "UPDATE journey_effects SET attempts = attempts + 1 WHERE key = ?1 AND done = 0",
                [key],
            )
        };
        changed.map(|_| ()).map_err(storage)
    }

    fn effect_status(&mut self, key: &str) -> Result<Option<String>, StateError> {
        Ok(self
            .conn
            .query_row(
                "SELECT status FROM journey_effects WHERE key = ?1 AND done = 1",
                [key],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()
            .map_err(storage)?
            .flatten())
    }

    fn reassign_customer(
        &mut self,
        from: CustomerId,
        into: CustomerId,
    ) -> Result<usize, StateError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage)?;
        tx.execute(
            "UPDATE journey_entries SET exit_reason = 'merged', due_at = NULL
             WHERE customer_id = ?1 AND exit_reason IS NULL AND journey IN
               (SELECT journey FROM journey_entries WHERE customer_id = ?2 AND exit_reason IS NULL)",
            params![from, into],
        )
        .map_err(storage)?;
        let moved = tx
            .execute(
                "UPDATE journey_entries SET customer_id = ?2 WHERE customer_id = ?1",
                params![from, into],
            )
            .map_err(storage)?;
        tx.commit().map_err(storage)?;
        Ok(moved)
    }

    fn active_counts(&mut self) -> Result<BTreeMap<String, u64>, StateError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT journey, COUNT(*) FROM journey_entries WHERE exit_reason IS NULL
                 GROUP BY journey",
            )
            .map_err(storage)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(storage)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(storage)?;
        Ok(rows
            .into_iter()
            .map(|(journey, n)| (journey, n.max(0) as u64))
            .collect())
    }
}
