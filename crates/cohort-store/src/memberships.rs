//! The SQLite [`MembershipStore`]: what the real-time segment engine reads and writes in
//! `state.db`.
//!
//! Get one with [`crate::Store::membership_store`] and hand it to
//! [`cohort_segment::RealtimeSegments`]; it owns a connection of its own, so the engine's reads
//! never wait for another thread's connection. A snapshot is a read transaction (a WAL snapshot:
//! the processor keeps writing meanwhile); [`MembershipStore::record`] is one short immediate
//! write transaction, so evaluation never holds the database's write lock.
//!
//! The cursor lives in `meta` (`segments_seq`, `segments_merge_id`); the queue of customers to
//! re-evaluate in `segment_pending`; entries and exits go through [`crate::segments::record`],
//! as batch evaluation's do.

use crate::StoreError;
use crate::profiles::{load_computed, load_traits};
use crate::segments::{all, record};
use crate::time::{from_micros, to_micros};
use chrono::{DateTime, Utc};
use cohort_core::{CustomerId, Position};
use cohort_profile::{ComputedTraits, ProfileRules};
use cohort_segment::{
    Cursor, Decisions, Definition, EventSelection, Fingerprint, MembershipError,
    MembershipSnapshot, MembershipStore, Merge, StoredEvent, evaluation_order,
};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde_json::{Map, Value};
use std::collections::HashSet;

/// The inbox has one partition in the embedded store: positions are its offsets.
const PARTITION: u32 = 0;

fn storage(e: rusqlite::Error) -> MembershipError {
    MembershipError::Storage(Box::new(e))
}

/// Real-time membership in `state.db`. See the module documentation.
pub struct SqliteMemberships {
    conn: Connection,
    rules: ProfileRules,
}

impl SqliteMemberships {
    pub(crate) fn new(conn: Connection, rules: ProfileRules) -> Self {
        Self { conn, rules }
    }
}

impl MembershipStore for SqliteMemberships {
    type Snapshot<'a> = SqliteSnapshot<'a>;

    fn fingerprint(&mut self) -> Result<Fingerprint, MembershipError> {
        fingerprint(&self.conn).map_err(storage)
    }

    fn definitions(&mut self) -> Result<(Fingerprint, Vec<Definition>), MembershipError> {
        let fingerprint = self.fingerprint()?;
        let defs = all(&self.conn).map_err(|e| match e {
            StoreError::Sqlite(e) => storage(e),
            other => MembershipError::Unreadable(other.to_string()),
        })?;
        // A definition stored before today's limits waits, quarantined, to be fixed.
        let defs = defs
            .into_iter()
            .filter(|d| d.condition.validate().is_ok())
            .map(|d| Definition {
                id: d.id,
                name: d.name,
                condition: d.condition,
            })
            .collect();
        Ok((
            fingerprint,
            evaluation_order(defs, |d| &d.name, |d| &d.condition),
        ))
    }

    fn snapshot(&mut self) -> Result<SqliteSnapshot<'_>, MembershipError> {
        Ok(SqliteSnapshot {
            tx: self.conn.transaction().map_err(storage)?,
            rules: &self.rules,
        })
    }

    fn record(&mut self, decisions: &Decisions) -> Result<(), MembershipError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage)?;
        write(&tx, decisions).map_err(storage)?;
        tx.commit().map_err(storage)
    }
}

fn write(tx: &Transaction<'_>, decisions: &Decisions) -> rusqlite::Result<()> {
    let at = to_micros(decisions.at);
    for &customer in &decisions.gone {
        for segment in memberships(tx, customer)? {
            record(tx, segment, customer, false, at, "merge")?;
        }
    }
    for (customer, decided) in &decisions.decided {
        let current = memberships(tx, *customer)?;
        for &(segment, member) in decided {
            if member != current.contains(&segment) {
                record(tx, segment, *customer, member, at, "event")?;
            }
        }
    }
    {
        let mut done = tx.prepare_cached("DELETE FROM segment_pending WHERE customer_id = ?1")?;
        for c in &decisions.dequeued {
            done.execute([c])?;
        }
    }
    set_meta(tx, "segments_seq", decisions.cursor.events.offset())?;
    set_meta(tx, "segments_merge_id", decisions.cursor.merges)
}

/// A read transaction on the engine's connection.
pub struct SqliteSnapshot<'a> {
    tx: Transaction<'a>,
    rules: &'a ProfileRules,
}

impl MembershipSnapshot for SqliteSnapshot<'_> {
    fn cursor(&mut self) -> Result<Cursor, MembershipError> {
        Ok(Cursor {
            events: Position::new(PARTITION, meta(&self.tx, "segments_seq").map_err(storage)?),
            merges: meta(&self.tx, "segments_merge_id").map_err(storage)?,
        })
    }

    fn changed(
        &mut self,
        after: Position,
        upto: Position,
        mut each: impl FnMut(CustomerId, &str),
    ) -> Result<(), MembershipError> {
        (|| {
            let mut stmt = self.tx.prepare_cached(
                "SELECT customer_id, name FROM events
                 WHERE seq > ?1 AND seq <= ?2 AND customer_id IS NOT NULL",
            )?;
            let mut rows = stmt.query(params![after.offset(), upto.offset()])?;
            while let Some(row) = rows.next()? {
                let name = row.get_ref(1)?.as_str().unwrap_or("");
                each(row.get(0)?, name);
            }
            Ok(())
        })()
        .map_err(storage)
    }

    fn pending(&mut self, limit: usize) -> Result<Vec<CustomerId>, MembershipError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.tx
            .prepare_cached("SELECT customer_id FROM segment_pending LIMIT ?1")
            .and_then(|mut stmt| {
                stmt.query_map([limit], |r| r.get(0))?
                    .collect::<Result<_, _>>()
            })
            .map_err(storage)
    }

    fn merges_after(&mut self, after: i64) -> Result<Vec<Merge>, MembershipError> {
        self.tx
            .prepare_cached(
                "SELECT id, from_customer, into_customer FROM merges WHERE id > ?1 ORDER BY id",
            )
            .and_then(|mut stmt| {
                stmt.query_map([after], |r| {
                    Ok(Merge {
                        id: r.get(0)?,
                        from: r.get(1)?,
                        into: r.get(2)?,
                    })
                })?
                .collect::<Result<_, _>>()
            })
            .map_err(storage)
    }

    fn survivor(&mut self, customer: CustomerId) -> Result<Option<CustomerId>, MembershipError> {
        self.tx
            .prepare_cached("SELECT COALESCE(merged_into, id) FROM customers WHERE id = ?1")
            .and_then(|mut stmt| stmt.query_row([customer], |r| r.get(0)).optional())
            .map_err(storage)
    }

    fn has_events_through(
        &mut self,
        customer: CustomerId,
        position: Position,
    ) -> Result<bool, MembershipError> {
        self.tx
            .prepare_cached("SELECT 1 FROM events WHERE customer_id = ?1 AND seq <= ?2 LIMIT 1")
            .and_then(|mut stmt| stmt.exists(params![customer, position.offset()]))
            .map_err(storage)
    }

    fn traits(&mut self, customer: CustomerId) -> Result<Map<String, Value>, MembershipError> {
        load_traits(&self.tx, customer).map_err(storage)
    }

    fn computed(
        &mut self,
        customer: CustomerId,
        now: DateTime<Utc>,
    ) -> Result<ComputedTraits, MembershipError> {
        load_computed(&self.tx, customer, now, self.rules).map_err(storage)
    }

    fn events_after(
        &mut self,
        customer: CustomerId,
        after: Position,
        select: &EventSelection,
        mut each: impl FnMut(StoredEvent<'_>),
    ) -> Result<Position, MembershipError> {
        (|| {
            let mut through = after.offset();
            let mut stmt = self.tx.prepare_cached(
                "SELECT seq, name, ts, body FROM events WHERE customer_id = ?1 AND seq > ?2",
            )?;
            let mut rows = stmt.query(params![customer, after.offset()])?;
            while let Some(row) = rows.next()? {
                let seq: i64 = row.get(0)?;
                through = through.max(seq);
                let name = row.get_ref(1)?.as_str()?;
                if !select.names.contains(name) {
                    continue;
                }
                // The body is read only for the names that need it.
                let body = if select.bodies.contains(name) {
                    Some(row.get_ref(3)?.as_str()?)
                } else {
                    None
                };
                each(StoredEvent {
                    position: Position::new(PARTITION, seq),
                    name,
                    timestamp: from_micros(row.get(2)?),
                    body,
                });
            }
            Ok(Position::new(PARTITION, through))
        })()
        .map_err(storage)
    }

    fn memberships(&mut self, customer: CustomerId) -> Result<HashSet<i64>, MembershipError> {
        memberships(&self.tx, customer).map_err(storage)
    }

    fn finish(self) -> Result<(), MembershipError> {
        self.tx.finish().map_err(storage)
    }
}

fn memberships(conn: &Connection, customer: CustomerId) -> rusqlite::Result<HashSet<i64>> {
    conn.prepare_cached("SELECT segment_id FROM memberships WHERE customer_id = ?1")?
        .query_map([customer], |r| r.get(0))?
        .collect()
}

fn fingerprint(conn: &Connection) -> rusqlite::Result<Fingerprint> {
    conn.prepare_cached(
        "SELECT COUNT(*), COALESCE(SUM(version), 0), COALESCE(MAX(updated_at), 0) FROM segments",
    )?
    .query_row([], |r| Ok(Fingerprint([r.get(0)?, r.get(1)?, r.get(2)?])))
}

pub(crate) fn meta(conn: &Connection, key: &str) -> rusqlite::Result<i64> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

pub(crate) fn set_meta(conn: &Connection, key: &str, value: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
        .execute(params![key, value])?;
    Ok(())
}
