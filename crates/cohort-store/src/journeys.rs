//! Journeys' run-time state in `state.db`: the SQLite [`JourneyStateStore`].
//!
//! Every change is one immediate transaction, so a move and the effects it records commit
//! together. Timers are the active entries' `due_at`, read through a partial index in due
//! order; the outbox is `journey_effects`, unique by idempotency key, with each deferred
//! effect's retry time (`not_before`) and last error; dead letters are completed rows with
//! status `dead_letter`, which a replay makes pending again. An entry's cause
//! (`entry_key`) is unique, so a trigger delivered twice enters once; re-entry policies and
//! conversions read a customer's entries through `journey_entries_customer`.

use crate::time::{from_micros, to_micros};
use cohort_journey::state::{
    Conversion, CustomerId, DEAD_LETTER, Effect, Entry, EntryId, JourneyStateStore, Message, Move,
    NewEntry, PendingEffect, StateError, VersionActivity,
};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeMap;

/// The SQLite journey state, on a connection of its own.
pub struct SqliteJourneyState {
    conn: Connection,
    /// Inside [`SqliteJourneyState::in_one_transaction`]: each change is a savepoint of it.
    batching: bool,
}

/// One change's writes: its own immediate transaction, or a savepoint of the batch's. Begun,
/// committed and rolled back through cached statements: rusqlite's `Transaction` and
/// `Savepoint` compile theirs on every use, which cost a firing as much as its own statements.
/// Dropped without [`Write::commit`], the change is rolled back.
struct Write<'c> {
    conn: &'c Connection,
    in_batch: bool,
    finished: bool,
}

impl<'c> Write<'c> {
    fn begin(conn: &'c Connection, in_batch: bool) -> rusqlite::Result<Self> {
        let begin = if in_batch {
            "SAVEPOINT journey_change"
        } else {
            "BEGIN IMMEDIATE"
        };
        exec(conn, begin, [])?;
        Ok(Write {
            conn,
            in_batch,
            finished: false,
        })
    }

    fn commit(mut self) -> rusqlite::Result<()> {
        let end = if self.in_batch {
            "RELEASE journey_change"
        } else {
            "COMMIT"
        };
        exec(self.conn, end, [])?;
        self.finished = true;
        Ok(())
    }
}

impl Drop for Write<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Nothing to report to: the change's caller already has the error that left it here.
        if self.in_batch {
            let _ = exec(self.conn, "ROLLBACK TO journey_change", []);
            let _ = exec(self.conn, "RELEASE journey_change", []);
        } else {
            let _ = exec(self.conn, "ROLLBACK", []);
        }
    }
}

impl std::ops::Deref for Write<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

fn storage(e: impl std::error::Error + Send + Sync + 'static) -> StateError {
    StateError::Storage(Box::new(e))
}

const ENTRY_COLUMNS: &str = "id, journey, version, customer_id, step, due_at, payload, entered_at, \
     exit_reason, held_out, moves, last_message_key, last_message_at, converted_at, \
     conversion_cause, conversion_revenue, conversion_message FROM journey_entries";

fn read_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Entry, StateError>> {
    let id: i64 = r.get(0)?;
    let version: i64 = r.get(2)?;
    let payload: String = r.get(6)?;
    let moves: i64 = r.get(10)?;
    let last_message = match (
        r.get::<_, Option<String>>(11)?,
        r.get::<_, Option<i64>>(12)?,
    ) {
        (Some(key), Some(at)) => Some(Message {
            key,
            at: from_micros(at),
        }),
        _ => None,
    };
    let conversion = match r.get::<_, Option<i64>>(13)? {
        Some(at) => Some(Conversion {
            at: from_micros(at),
            cause: r.get::<_, Option<String>>(14)?.unwrap_or_default(),
            revenue: r.get(15)?,
            message: r.get(16)?,
        }),
        None => None,
    };
    let Ok(version) = u32::try_from(version) else {
        return Ok(Err(StateError::Unreadable(format!(
            "entry {id} has version {version}"
        ))));
    };
    let payload = match serde_json::from_str(&payload) {
        Ok(payload) => payload,
        Err(e) => {
            return Ok(Err(StateError::Unreadable(format!(
                "entry {id}'s payload: {e}"
            ))));
        }
    };
    Ok(Ok(Entry {
        id: EntryId(id),
        journey: r.get(1)?,
        version,
        customer: r.get(3)?,
        step: r.get(4)?,
        due_at: r.get::<_, Option<i64>>(5)?.map(from_micros),
        payload,
        entered_at: from_micros(r.get(7)?),
        exit_reason: r.get(8)?,
        held_out: r.get::<_, i64>(9)? != 0,
        moves: u32::try_from(moves).unwrap_or(u32::MAX),
        last_message,
        conversion,
    }))
}

const EFFECT_COLUMNS: &str =
    "SELECT key, channel, payload, attempts, not_before, last_error FROM journey_effects";

/// Runs one statement through the connection's statement cache: the journey loop and the send
/// workers run the same few statements for every entry and effect, and compiling one costs
/// more than running it.
fn exec(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// Statements kept compiled per connection.
const STATEMENT_CACHE: usize = 64;

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl SqliteJourneyState {
    pub(crate) fn new(conn: Connection) -> Self {
        // Room for every statement of the state's hot paths (rusqlite keeps 16 by default).
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        SqliteJourneyState {
            conn,
            batching: false,
        }
    }

    fn begin(&mut self) -> Result<Write<'_>, StateError> {
        Write::begin(&self.conn, self.batching).map_err(storage)
    }

    /// Runs `f` with every change it makes in one transaction, committed at the end (each
    /// change a savepoint, so one that fails leaves the others). A commit per change is what a
    /// timer pass costs most; a batch of due entries fired in one transaction pays one. After
    /// a crash the whole batch is due again, and fires as if for the first time.
    pub fn in_one_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> T,
    ) -> Result<T, StateError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(storage)?;
        self.batching = true;
        let out = f(self);
        self.batching = false;
        match self.conn.execute_batch("COMMIT") {
            Ok(()) => Ok(out),
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(storage(e))
            }
        }
    }

    /// Where the journey loop stands in one of the feeds it follows (`journeys_seq`,
    /// `journeys_change_id`, `journeys_merge_id`): 0 before it read any.
    pub fn cursor(&self, feed: &str) -> Result<i64, StateError> {
        crate::memberships::meta(&self.conn, feed).map_err(storage)
    }

    /// Moves a feed's cursor. The loop moves it after the feed's items are handled; items
    /// handled again after a crash are deduplicated by the runner (entries by their cause).
    pub fn set_cursor(&self, feed: &str, value: i64) -> Result<(), StateError> {
        crate::memberships::set_meta(&self.conn, feed, value).map_err(storage)
    }

    fn effects(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<PendingEffect>, StateError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(storage)?;
        let rows = stmt
            .query_map(args, |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            })
            .map_err(storage)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(storage)?;
        rows.into_iter()
            .map(
                |(key, channel, payload, attempts, not_before, last_error)| {
                    let payload = serde_json::from_str(&payload)
                        .map_err(|e| StateError::Unreadable(format!("effect {key}: {e}")))?;
                    Ok(PendingEffect {
                        effect: Effect {
                            key,
                            channel,
                            payload,
                        },
                        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                        not_before: not_before.map(from_micros),
                        last_error,
                    })
                },
            )
            .collect()
    }

    /// The connection, for the journey statistics' queries (`journey_stats`).
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    fn entries(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<Entry>, StateError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(storage)?;
        let rows = stmt
            .query_map(args, read_entry)
            .map_err(storage)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(storage)?;
        rows.into_iter().collect()
    }
}

impl JourneyStateStore for SqliteJourneyState {
    fn enter(
        &mut self,
        new: &NewEntry,
        allow_concurrent: bool,
    ) -> Result<Option<EntryId>, StateError> {
        let tx = self.begin()?;
        if let Some(key) = &new.key {
            let known: Option<i64> = tx
                .query_row(
                    "SELECT id FROM journey_entries WHERE entry_key = ?1",
                    [key],
                    |r| r.get(0),
                )
                .optional()
                .map_err(storage)?;
            if known.is_some() {
                return Ok(None);
            }
        }
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
        exec(
            &tx,
            "INSERT INTO journey_entries
               (journey, version, customer_id, step, due_at, payload, entered_at, entry_key,
                held_out)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                new.journey,
                i64::from(new.version),
                new.customer,
                new.step,
                new.due_at.map(to_micros),
                payload,
                to_micros(new.entered_at),
                new.key,
                new.held_out
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

    fn latest_entry(
        &mut self,
        customer: CustomerId,
        journey: &str,
    ) -> Result<Option<Entry>, StateError> {
        Ok(self
            .entries(
                &format!(
                    "SELECT {ENTRY_COLUMNS} WHERE customer_id = ?1 AND journey = ?2
                     ORDER BY id DESC LIMIT 1"
                ),
                params![customer, journey],
            )?
            .pop())
    }

    fn advance_with_message(
        &mut self,
        id: EntryId,
        from_step: &str,
        to: &Move,
        effects: &[Effect],
        message: Option<&Message>,
    ) -> Result<bool, StateError> {
        let tx = self.begin()?;
        let (message_key, message_at) = match message {
            Some(m) => (Some(m.key.as_str()), Some(to_micros(m.at))),
            None => (None, None),
        };
        let moved = match to {
            Move::Step { step, due_at } => exec(
                &tx,
                "UPDATE journey_entries SET step = ?3, due_at = ?4, moves = moves + 1,
                   last_message_key = COALESCE(?5, last_message_key),
                   last_message_at = COALESCE(?6, last_message_at)
                 WHERE id = ?1 AND step = ?2 AND exit_reason IS NULL",
                params![
                    id.0,
                    from_step,
                    step,
                    due_at.map(to_micros),
                    message_key,
                    message_at
                ],
            ),
            Move::Exit { reason } => exec(
                &tx,
                "UPDATE journey_entries SET due_at = NULL, exit_reason = ?3, moves = moves + 1,
                   last_message_key = COALESCE(?4, last_message_key),
                   last_message_at = COALESCE(?5, last_message_at)
                 WHERE id = ?1 AND step = ?2 AND exit_reason IS NULL",
                params![id.0, from_step, reason, message_key, message_at],
            ),
        }
        .map_err(storage)?;
        if moved == 0 {
            return Ok(false);
        }
        for effect in effects {
            let payload = serde_json::to_string(&effect.payload).map_err(storage)?;
            exec(
                &tx,
                "INSERT OR IGNORE INTO journey_effects (key, channel, payload) VALUES (?1, ?2, ?3)",
                params![effect.key, effect.channel, payload],
            )
            .map_err(storage)?;
        }
        tx.commit().map_err(storage)?;
        Ok(true)
    }

    fn due_skipping(
        &mut self,
        now: chrono::DateTime<chrono::Utc>,
        skip: &[String],
        limit: usize,
    ) -> Result<Vec<Entry>, StateError> {
        // Skipped journeys are few (the paused ones), so they are bound as a list in the query
        // text's shape; the statement cache keeps one statement per list length.
        let skipping = if skip.is_empty() {
            String::new()
        } else {
            let slots: Vec<String> = (0..skip.len()).map(|i| format!("?{}", i + 3)).collect();
            format!("AND journey NOT IN ({})", slots.join(", "))
        };
        let mut args: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(skip.len() + 2);
        let now = to_micros(now);
        let limit = sql_limit(limit);
        args.push(&now);
        args.push(&limit);
        for journey in skip {
            args.push(journey);
        }
        self.entries(
            &format!(
                "SELECT {ENTRY_COLUMNS} WHERE due_at IS NOT NULL AND exit_reason IS NULL
                 AND due_at <= ?1 {skipping} ORDER BY due_at, id LIMIT ?2"
            ),
            args.as_slice(),
        )
    }

    fn convertible(
        &mut self,
        customer: CustomerId,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Entry>, StateError> {
        self.entries(
            &format!(
                "SELECT {ENTRY_COLUMNS} WHERE customer_id = ?1 AND converted_at IS NULL
                 AND COALESCE(last_message_at, entered_at) >= ?2 ORDER BY id"
            ),
            params![customer, to_micros(since)],
        )
    }

    fn convert(&mut self, id: EntryId, conversion: &Conversion) -> Result<bool, StateError> {
        let changed = exec(
            &self.conn,
            "UPDATE journey_entries SET converted_at = ?2, conversion_cause = ?3,
                   conversion_revenue = ?4, conversion_message = ?5
                 WHERE id = ?1 AND converted_at IS NULL",
            params![
                id.0,
                to_micros(conversion.at),
                conversion.cause,
                conversion.revenue,
                conversion.message
            ],
        )
        .map_err(storage)?;
        Ok(changed > 0)
    }

    fn exit_journey(&mut self, journey: &str, reason: &str) -> Result<usize, StateError> {
        exec(
            &self.conn,
            "UPDATE journey_entries SET exit_reason = ?2, due_at = NULL
                 WHERE journey = ?1 AND exit_reason IS NULL",
            params![journey, reason],
        )
        .map_err(storage)
    }

    fn pending_effects(
        &mut self,
        channel: &str,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<PendingEffect>, StateError> {
        // Two reads, each one range of `journey_effects_pending` in its order: a single query
        // with `not_before IS NULL OR not_before <= ?` would have to walk the future retries too.
        let mut pending = self.effects(
            &format!("{EFFECT_COLUMNS} WHERE channel = ?1 AND done = 0 AND not_before IS NULL ORDER BY seq LIMIT ?2"),
            params![channel, sql_limit(limit)],
        )?;
        let more = limit.saturating_sub(pending.len());
        if more > 0 {
            pending.extend(self.effects(
                &format!(
                    "{EFFECT_COLUMNS} WHERE channel = ?1 AND done = 0 AND not_before <= ?2
                     ORDER BY not_before, seq LIMIT ?3"
                ),
                params![channel, to_micros(now), sql_limit(more)],
            )?);
        }
        Ok(pending)
    }

    fn complete_effect(&mut self, key: &str, status: &str, done: bool) -> Result<(), StateError> {
        let changed = if done {
            exec(
                &self.conn,
                "UPDATE journey_effects SET status = ?2, done = 1 WHERE key = ?1 AND done = 0",
                params![key, status],
            )
        } else {
            // The attempt's outcome is the channel's to log; the outbox keeps the count.
            exec(
                &self.conn,
                "UPDATE journey_effects SET attempts = attempts + 1 WHERE key = ?1 AND done = 0",
                [key],
            )
        };
        changed.map(|_| ()).map_err(storage)
    }

    fn defer_effect(
        &mut self,
        key: &str,
        retry_at: chrono::DateTime<chrono::Utc>,
        reason: &str,
    ) -> Result<bool, StateError> {
        let changed = exec(
            &self.conn,
            "UPDATE journey_effects SET attempts = attempts + 1, not_before = ?2,
                   last_error = ?3
                 WHERE key = ?1 AND done = 0",
            params![key, to_micros(retry_at), reason],
        )
        .map_err(storage)?;
        Ok(changed > 0)
    }

    fn dead_letter_effect(&mut self, key: &str, reason: &str) -> Result<bool, StateError> {
        let changed = exec(
            &self.conn,
            "UPDATE journey_effects SET attempts = attempts + 1, last_error = ?2,
                   status = ?3, done = 1
                 WHERE key = ?1 AND done = 0",
            params![key, reason, DEAD_LETTER],
        )
        .map_err(storage)?;
        Ok(changed > 0)
    }

    fn dead_letters(
        &mut self,
        channel: &str,
        limit: usize,
    ) -> Result<Vec<PendingEffect>, StateError> {
        self.effects(
            &format!("{EFFECT_COLUMNS} WHERE channel = ?1 AND status = ?2 ORDER BY seq LIMIT ?3"),
            params![channel, DEAD_LETTER, sql_limit(limit)],
        )
    }

    fn replay_effect(&mut self, key: &str) -> Result<bool, StateError> {
        let changed = exec(
            &self.conn,
            "UPDATE journey_effects SET status = NULL, done = 0, attempts = 0,
                   not_before = NULL
                 WHERE key = ?1 AND done = 1 AND status = ?2",
            params![key, DEAD_LETTER],
        )
        .map_err(storage)?;
        Ok(changed > 0)
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
        let tx = self.begin()?;
        exec(&tx,
            "UPDATE journey_entries SET exit_reason = 'merged', due_at = NULL
             WHERE customer_id = ?1 AND exit_reason IS NULL AND journey IN
               (SELECT journey FROM journey_entries WHERE customer_id = ?2 AND exit_reason IS NULL)",
            params![from, into],
        )
        .map_err(storage)?;
        let moved = exec(
            &tx,
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

    fn version_activity(
        &mut self,
        journey: &str,
        version: u32,
    ) -> Result<VersionActivity, StateError> {
        let (active, last): (i64, Option<i64>) = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*) FILTER (WHERE exit_reason IS NULL), MAX(last_message_at)
                 FROM journey_entries WHERE journey = ?1 AND version = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![journey, version], |r| Ok((r.get(0)?, r.get(1)?)))
            })
            .map_err(storage)?;
        Ok(VersionActivity {
            active: active.max(0) as u64,
            last_message_at: last.map(from_micros),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Write;
    use rusqlite::Connection;

    fn kept(conn: &Connection) -> Vec<i64> {
        let mut stmt = conn.prepare("SELECT x FROM t ORDER BY x").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn a_change_dropped_uncommitted_is_rolled_back_alone_or_in_a_batch() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();

        let change = Write::begin(&conn, false).unwrap();
        change.execute("INSERT INTO t VALUES (1)", []).unwrap();
        change.commit().unwrap();
        let change = Write::begin(&conn, false).unwrap();
        change.execute("INSERT INTO t VALUES (2)", []).unwrap();
        drop(change);
        assert_eq!(kept(&conn), [1]);
        assert!(conn.is_autocommit(), "the dropped transaction is over");

        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        for x in [3, 4, 5] {
            let change = Write::begin(&conn, true).unwrap();
            change.execute("INSERT INTO t VALUES (?1)", [x]).unwrap();
            if x != 4 {
                change.commit().unwrap();
            }
        }
        assert!(!conn.is_autocommit(), "the batch is still open");
        conn.execute_batch("COMMIT").unwrap();
        assert_eq!(kept(&conn), [1, 3, 5], "only the dropped change is undone");
    }
}
