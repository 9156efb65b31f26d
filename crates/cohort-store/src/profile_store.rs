//! The SQLite [`ProfileStore`]: the customer state in `state.db`, as the processor writes it.
//!
//! One [`SqliteBatch`] is one `BEGIN IMMEDIATE` transaction on the processor's own connection;
//! its statements are prepared once and cached on that connection. The applied inbox position
//! is `meta.applied_seq`, updated in the same transaction. After a commit the batch forgets the
//! cached profiles of the customers it touched and keeps the write-ahead log bounded.
//!
//! In a process that opened a [`crate::Store`], take the store with
//! [`crate::Store::profile_store`], which honours the data directory's processing lock and
//! shares the profile cache; [`SqliteProfileStore::open`] is for tests and tools that work on a
//! data directory alone.

use crate::conn::{WAL_LIMIT_BYTES, keep_wal_bounded};
use crate::profile_cache::ProfileCache;
use crate::{Durability, StoreError};
use cohort_core::{CustomerId, IdKind, Identifier, Position};
use cohort_identity::IdentityGraph;
use cohort_profile::{NewEvent, ProfileBatch, ProfileStore, StatsDeltas, newer_wins};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The processor's side of `state.db`. See the module documentation.
pub struct SqliteProfileStore {
    conn: Connection,
    profile_cache: Option<Arc<ProfileCache>>,
    /// `derived_version` last seen (see [`crate::profile_cache`]).
    derived_version: Option<i64>,
    /// Customers the current batch touched, merged-away ones included.
    touched: Vec<CustomerId>,
    /// Up while this store exists: [`crate::Store::processing`] reads it.
    _writing: Option<WritingFlag>,
}

/// Raised while a processor holds the store's writer; lowered when it is dropped, however its
/// thread ends.
pub(crate) struct WritingFlag(pub(crate) Arc<AtomicBool>);

impl Drop for WritingFlag {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl SqliteProfileStore {
    /// Opens the customer state of the data directory `data_dir` (creating and migrating
    /// `state.db` as needed), with no profile cache. Only one writer may apply a data
    /// directory's inbox: within a process that opened a [`crate::Store`], use
    /// [`crate::Store::profile_store`] instead.
    pub fn open(data_dir: &Path, durability: Durability) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let mut conn = crate::conn::open(&data_dir.join("state.db"), durability)?;
        crate::schema::migrate_state(&mut conn)?;
        Ok(Self::new(conn, None, None))
    }

    pub(crate) fn new(
        conn: Connection,
        profile_cache: Option<Arc<ProfileCache>>,
        writing: Option<WritingFlag>,
    ) -> Self {
        Self {
            conn,
            profile_cache,
            derived_version: None,
            touched: Vec::new(),
            _writing: writing,
        }
    }
}

impl ProfileStore for SqliteProfileStore {
    type Error = rusqlite::Error;
    type Batch<'a> = SqliteBatch<'a>;

    fn applied(&self) -> rusqlite::Result<Position> {
        let applied: i64 = self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = 'applied_seq'")?
            .query_row([], |r| r.get(0))?;
        Ok(Position::new(0, applied))
    }

    fn begin(&mut self) -> rusqlite::Result<SqliteBatch<'_>> {
        self.touched.clear();
        // Not `Connection::transaction`: that borrows the connection mutably, and the batch
        // needs it again after the commit, to keep the log bounded.
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        Ok(SqliteBatch {
            conn: &self.conn,
            tx,
            touched: &mut self.touched,
            profile_cache: self.profile_cache.as_deref(),
        })
    }

    /// Clears the profile cache when a write outside the processor changed profiles.
    fn between_batches(&mut self) {
        let Some(cache) = &self.profile_cache else {
            return;
        };
        match derived_version(&self.conn) {
            Ok(version) => {
                if self.derived_version.is_some_and(|seen| seen != version) {
                    cache.clear();
                }
                self.derived_version = Some(version);
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading derived_version failed; clearing cached profiles");
                cache.clear();
            }
        }
    }
}

/// The counter writers outside the processor bump when they change what profiles show.
fn derived_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "SELECT COALESCE((SELECT value FROM meta WHERE key = 'derived_version'), 0)",
    )?
    .query_row([], |r| r.get(0))
}

/// One processing transaction on `state.db`. Dropped uncommitted, it rolls back.
pub struct SqliteBatch<'a> {
    conn: &'a Connection,
    tx: Transaction<'a>,
    touched: &'a mut Vec<CustomerId>,
    profile_cache: Option<&'a ProfileCache>,
}

impl ProfileBatch for SqliteBatch<'_> {
    type Error = rusqlite::Error;

    fn identity_graph(&mut self, at: i64) -> impl IdentityGraph<Error = rusqlite::Error> + '_ {
        SqliteGraph { tx: &self.tx, at }
    }

    fn insert_event(&mut self, event: &NewEvent<'_>) -> rusqlite::Result<bool> {
        let entry = event.entry;
        let inserted = self
            .tx
            .prepare_cached(
                "INSERT OR IGNORE INTO events
                   (seq, source_id, message_id, customer_id, type, name, ts, received_at, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                entry.position.offset(),
                entry.source_id,
                event.message_id,
                event.customer,
                event.kind,
                event.name,
                event.at,
                entry.received_at,
                entry.body
            ])?;
        if inserted == 1
            && let Some(customer) = event.customer
        {
            self.touched.push(customer);
        }
        Ok(inserted == 1)
    }

    fn set_traits(
        &mut self,
        customer: CustomerId,
        traits: &Map<String, Value>,
        at: i64,
    ) -> rusqlite::Result<()> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT INTO traits (customer_id, key, value, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (customer_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
             WHERE excluded.updated_at >= traits.updated_at",
        )?;
        debug_assert!(
            newer_wins(0, 0),
            "the SQL above encodes cohort_profile::newer_wins"
        );
        for (key, value) in traits {
            stmt.execute(params![customer, key, trait_text(value), at])?;
        }
        Ok(())
    }

    fn add_stats(&mut self, deltas: &StatsDeltas) -> rusqlite::Result<()> {
        let tx = &self.tx;
        let mut stats = tx.prepare_cached(
            &format!(
                "INSERT INTO customer_stats (customer_id, first_seen, last_seen, events, orders, revenue, last_order_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) {ADD_STATS}"
            ),
        )?;
        for (customer, d) in deltas.customers() {
            stats.execute(params![
                customer,
                d.first_seen,
                d.last_seen,
                d.events,
                d.orders,
                d.revenue,
                d.last_order_at
            ])?;
        }
        let mut counts = tx.prepare_cached(
            "INSERT INTO event_counts (customer_id, name, count, last_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (customer_id, name) DO UPDATE SET count = count + excluded.count, last_at = MAX(last_at, excluded.last_at)",
        )?;
        for (customer, name, count, last_at) in deltas.event_counts() {
            counts.execute(params![customer, name, count, last_at])?;
        }
        let mut days = tx.prepare_cached(
            "INSERT INTO revenue_days (customer_id, day, revenue, orders) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (customer_id, day) DO UPDATE SET revenue = revenue + excluded.revenue, orders = orders + excluded.orders",
        )?;
        for (customer, day, revenue, orders) in deltas.revenue_days() {
            days.execute(params![customer, day, revenue, orders])?;
        }
        Ok(())
    }

    fn fold(&mut self, from: CustomerId, into: CustomerId) -> rusqlite::Result<()> {
        merge_profiles(&self.tx, from, into)?;
        self.touched.push(from);
        self.touched.push(into);
        Ok(())
    }

    fn commit(self, applied: Position) -> rusqlite::Result<()> {
        self.tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'applied_seq'",
            [applied.offset()],
        )?;
        self.tx.commit()?;
        if let Some(cache) = self.profile_cache {
            cache.invalidate(self.touched);
        }
        if let Err(e) = keep_wal_bounded(self.conn, WAL_LIMIT_BYTES) {
            tracing::warn!(error = %e, "checkpointing state.db failed");
        }
        Ok(())
    }
}

/// Traits are stored as JSON, except strings, stored bare so lookups by value need no quoting.
pub(crate) fn trait_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Adds a row's computed traits to an existing row: the rule shared by batch deltas and merges.
const ADD_STATS: &str = "ON CONFLICT (customer_id) DO UPDATE SET
    first_seen = MIN(first_seen, excluded.first_seen),
    last_seen = MAX(last_seen, excluded.last_seen),
    events = events + excluded.events,
    orders = orders + excluded.orders,
    revenue = revenue + excluded.revenue,
    last_order_at = MAX(COALESCE(last_order_at, excluded.last_order_at), COALESCE(excluded.last_order_at, last_order_at))";

/// Folds everything known of `from` into `into` after the identity graph merged them.
fn merge_profiles(
    tx: &Transaction<'_>,
    from: CustomerId,
    into: CustomerId,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO traits (customer_id, key, value, updated_at)
           SELECT ?2, key, value, updated_at FROM traits WHERE customer_id = ?1 AND true
         ON CONFLICT (customer_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
         WHERE excluded.updated_at > traits.updated_at",
        params![from, into],
    )?;
    tx.execute("DELETE FROM traits WHERE customer_id = ?1", [from])?;
    tx.execute(
        &format!(
            "INSERT INTO customer_stats (customer_id, first_seen, last_seen, events, orders, revenue, last_order_at)
               SELECT ?2, first_seen, last_seen, events, orders, revenue, last_order_at
               FROM customer_stats WHERE customer_id = ?1 AND true {ADD_STATS}"
        ),
        params![from, into],
    )?;
    tx.execute("DELETE FROM customer_stats WHERE customer_id = ?1", [from])?;
    tx.execute(
        "INSERT INTO event_counts (customer_id, name, count, last_at)
           SELECT ?2, name, count, last_at FROM event_counts WHERE customer_id = ?1 AND true
         ON CONFLICT (customer_id, name) DO UPDATE SET count = count + excluded.count, last_at = MAX(last_at, excluded.last_at)",
        params![from, into],
    )?;
    tx.execute("DELETE FROM event_counts WHERE customer_id = ?1", [from])?;
    tx.execute(
        "INSERT INTO revenue_days (customer_id, day, revenue, orders)
           SELECT ?2, day, revenue, orders FROM revenue_days WHERE customer_id = ?1 AND true
         ON CONFLICT (customer_id, day) DO UPDATE SET revenue = revenue + excluded.revenue, orders = orders + excluded.orders",
        params![from, into],
    )?;
    tx.execute("DELETE FROM revenue_days WHERE customer_id = ?1", [from])?;
    tx.execute(
        "UPDATE events SET customer_id = ?2 WHERE customer_id = ?1",
        params![from, into],
    )?;
    Ok(())
}

/// The identity graph inside the processing transaction, uncached (the processor caches).
struct SqliteGraph<'a, 'c> {
    tx: &'a Transaction<'c>,
    at: i64,
}

impl IdentityGraph for SqliteGraph<'_, '_> {
    type Error = rusqlite::Error;

    fn lookup(&mut self, id: &Identifier) -> rusqlite::Result<Option<CustomerId>> {
        // Merges move identities to the survivor, so an identity row always names a live customer.
        self.tx
            .prepare_cached("SELECT customer_id FROM identities WHERE kind = ?1 AND value = ?2")?
            .query_row(params![id.kind.as_str(), id.value], |r| r.get(0))
            .optional()
    }

    fn kind_counts(&mut self, customer: CustomerId) -> rusqlite::Result<HashMap<IdKind, usize>> {
        self.tx
            .prepare_cached(
                "SELECT kind, COUNT(*) FROM identities WHERE customer_id = ?1 GROUP BY kind",
            )?
            .query_map([customer], |r| {
                Ok((
                    IdKind::parse(&r.get::<_, String>(0)?),
                    r.get::<_, i64>(1)? as usize,
                ))
            })?
            .collect()
    }

    fn create_customer(&mut self) -> rusqlite::Result<CustomerId> {
        self.tx
            .prepare_cached("INSERT INTO customers (created_at) VALUES (?1)")?
            .execute([self.at])?;
        Ok(self.tx.last_insert_rowid())
    }

    fn attach(&mut self, customer: CustomerId, id: &Identifier) -> rusqlite::Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO identities (kind, value, customer_id, first_seen) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![id.kind.as_str(), id.value, customer, self.at])?;
        Ok(())
    }

    fn merge(
        &mut self,
        from: CustomerId,
        into: CustomerId,
        because: &Identifier,
    ) -> rusqlite::Result<()> {
        let tx = self.tx;
        tx.execute(
            "UPDATE identities SET customer_id = ?2 WHERE customer_id = ?1",
            params![from, into],
        )?;
        // Keep every merged-away ID one hop from its survivor.
        tx.execute(
            "UPDATE customers SET merged_into = ?2 WHERE id = ?1 OR merged_into = ?1",
            params![from, into],
        )?;
        tx.execute(
            "INSERT INTO merges (from_customer, into_customer, kind, value, at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![from, into, because.kind.as_str(), because.value, self.at],
        )?;
        Ok(())
    }
}
