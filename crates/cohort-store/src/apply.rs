//! The processor: applies inbox messages, in inbox order, to the customer state.
//!
//! One transaction per batch holds the identity changes, profile updates, stored events and the new
//! applied position. A crash rolls the whole batch back and processing restarts from the recorded
//! position; an event is stored under its inbox position, so a message applied twice changes nothing.

use crate::SqliteInbox;
use crate::StoreConfig;
use crate::conn::{WAL_LIMIT_BYTES, keep_wal_bounded};
use crate::profile_cache::ProfileCache;
use crate::time::{day_of, to_micros};
use cohort_core::message::{event_key, identifiers, parse_timestamp, previous_id};
use cohort_core::{CustomerId, IdKind, Identifier, Inbox, InboxEntry, Position};
use cohort_identity::{IdentityGraph, IdentityRules, ResolveError, resolve};
use cohort_profile::{ProfileRules, newer_wins};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub(crate) struct ProcessorHandle {
    stop: Arc<AtomicBool>,
    running: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProcessorHandle {
    pub(crate) fn start(
        state: Connection,
        inbox: Arc<SqliteInbox>,
        config: &StoreConfig,
        profile_cache: Option<Arc<ProfileCache>>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let running = Arc::new(AtomicBool::new(true));
        let mut processor = Processor {
            state,
            inbox,
            identity: config.identity.clone(),
            profile: config.profile.clone(),
            batch: config.apply_batch.max(1),
            cache: IdentityCache::default(),
            profile_cache,
            derived_version: None,
            touched: Vec::new(),
        };
        let (stop2, running2) = (stop.clone(), running.clone());
        let thread = std::thread::Builder::new()
            .name("cohort-processor".into())
            .spawn(move || {
                processor.run(&stop2);
                running2.store(false, Ordering::Release);
            })
            .map_err(|e| tracing::error!("cannot start the processor: {e}"))
            .ok();
        if thread.is_none() {
            running.store(false, Ordering::Release);
        }
        ProcessorHandle {
            stop,
            running,
            thread,
        }
    }

    pub(crate) fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    pub(crate) fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Processor {
    state: Connection,
    inbox: Arc<SqliteInbox>,
    identity: IdentityRules,
    profile: ProfileRules,
    batch: usize,
    cache: IdentityCache,
    profile_cache: Option<Arc<ProfileCache>>,
    /// `derived_version` last seen (see [`crate::profile_cache`]).
    derived_version: Option<i64>,
    /// Customers the current batch touched, merged-away ones included.
    touched: Vec<CustomerId>,
}

impl Processor {
    /// Clears the profile cache when a write outside the processor changed profiles.
    fn check_derived_version(&mut self) {
        let Some(cache) = &self.profile_cache else {
            return;
        };
        match derived_version(&self.state) {
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

    fn run(&mut self, stop: &AtomicBool) {
        let mut position = self.inbox.acknowledged();
        while !stop.load(Ordering::Acquire) {
            self.check_derived_version();
            let entries = match self.inbox.read_after(position, self.batch) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "reading the inbox failed; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
            };
            let Some(last) = entries.last().map(|e| e.position) else {
                // Other processes (cohort import) may append too, so poll as well as wait.
                self.inbox
                    .wait_committed_past(position, Duration::from_millis(100));
                continue;
            };
            let started = Instant::now();
            self.touched.clear();
            match apply_batch(
                &mut self.state,
                &entries,
                &self.identity,
                &self.profile,
                &mut self.cache,
                &mut self.touched,
                last,
            ) {
                Ok(()) => {
                    if let Some(cache) = &self.profile_cache {
                        cache.invalidate(&self.touched);
                    }
                    if let Err(e) = keep_wal_bounded(&self.state, WAL_LIMIT_BYTES) {
                        tracing::warn!(error = %e, "checkpointing state.db failed");
                    }
                    position = last;
                    self.inbox.acknowledge(last);
                    metrics::counter!("cohort_events_processed_total")
                        .increment(entries.len() as u64);
                    metrics::histogram!("cohort_apply_batch_seconds")
                        .record(started.elapsed().as_secs_f64());
                }
                Err(e) => {
                    // The transaction rolled back, so the cache may name rows that do not exist.
                    self.cache.clear();
                    tracing::error!(error = %e, from = %position, "applying a batch failed; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }
}

fn apply_batch(
    conn: &mut Connection,
    entries: &[InboxEntry],
    identity: &IdentityRules,
    profile: &ProfileRules,
    cache: &mut IdentityCache,
    touched: &mut Vec<CustomerId>,
    last: Position,
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut deltas = StatsDeltas::default();
    for entry in entries {
        apply_one(&tx, entry, identity, profile, cache, &mut deltas, touched)?;
    }
    deltas.flush(&tx)?;
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'applied_seq'",
        [last.offset()],
    )?;
    tx.commit()
}

fn apply_one(
    tx: &Transaction<'_>,
    entry: &InboxEntry,
    identity: &IdentityRules,
    profile: &ProfileRules,
    cache: &mut IdentityCache,
    deltas: &mut StatsDeltas,
    touched: &mut Vec<CustomerId>,
) -> rusqlite::Result<()> {
    let msg: Map<String, Value> = match crate::stored_message::parse(&entry.body) {
        Some(m) => m,
        None => {
            // The inbox only holds messages the collector serialised, so this is corruption; keep
            // the raw body as an unattributed event rather than lose it.
            tracing::error!(position = %entry.position, "inbox entry is not a JSON object");
            return insert_event(tx, entry, None, &Map::new(), entry.received_at).map(|_| ());
        }
    };
    let ts = msg
        .get("timestamp")
        .and_then(parse_timestamp)
        .map(to_micros)
        .unwrap_or(entry.received_at);

    let mut ids = identifiers(&msg);
    if let Some(previous) = previous_id(&msg) {
        ids.push(previous_identifier(tx, &previous)?);
    }
    let mut graph = SqliteGraph { tx, at: ts, cache };
    let customer = match resolve(identity, &mut graph, &ids) {
        Ok(resolution) => {
            if !resolution.merged.is_empty() {
                // Merges fold stored rows, so pending deltas must be stored first.
                deltas.flush(tx)?;
            }
            for (from, into) in &resolution.merged {
                merge_profiles(tx, *from, *into)?;
                touched.push(*from);
            }
            if !resolution.skipped.is_empty() {
                metrics::counter!("cohort_identity_skipped_total")
                    .increment(resolution.skipped.len() as u64);
            }
            Some(resolution.customer)
        }
        Err(ResolveError::NoUsableIdentifier) => None,
        Err(ResolveError::Store(e)) => return Err(e),
    };

    if !insert_event(tx, entry, customer, &msg, ts)? {
        return Ok(()); // Already applied: a replay changes nothing.
    }
    let Some(customer) = customer else {
        metrics::counter!("cohort_events_unattributed_total").increment(1);
        return Ok(());
    };
    touched.push(customer);
    if msg.get("type").and_then(Value::as_str) == Some("identify") {
        // RudderStack's SDKs send identify traits only under context.traits; Segment's send them at
        // the top level. Apply both, the top level last so it wins where they disagree.
        let context_traits = msg
            .get("context")
            .and_then(|c| c.get("traits"))
            .and_then(Value::as_object);
        for traits in [context_traits, msg.get("traits").and_then(Value::as_object)]
            .into_iter()
            .flatten()
        {
            set_traits(tx, customer, traits, ts)?;
        }
    }
    deltas.add(customer, &msg, ts, profile);
    Ok(())
}

/// The counter writers outside the processor bump when they change what profiles show.
pub(crate) fn derived_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "SELECT COALESCE((SELECT value FROM meta WHERE key = 'derived_version'), 0)",
    )?
    .query_row([], |r| r.get(0))
}

/// An alias's previousId is whatever it was used as before: a user ID or an anonymous ID.
fn previous_identifier(tx: &Transaction<'_>, value: &str) -> rusqlite::Result<Identifier> {
    let known_as_user: bool = tx
        .prepare_cached("SELECT 1 FROM identities WHERE kind = 'user_id' AND value = ?1")?
        .exists([value])?;
    let kind = if known_as_user {
        IdKind::UserId
    } else {
        IdKind::AnonymousId
    };
    Ok(Identifier::new(kind, value))
}

fn insert_event(
    tx: &Transaction<'_>,
    entry: &InboxEntry,
    customer: Option<CustomerId>,
    msg: &Map<String, Value>,
    ts: i64,
) -> rusqlite::Result<bool> {
    let message_id = msg.get("messageId").and_then(Value::as_str).unwrap_or("");
    let kind = msg.get("type").and_then(Value::as_str).unwrap_or("");
    let inserted = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO events
               (seq, source_id, message_id, customer_id, type, name, ts, received_at, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            entry.position.offset(),
            entry.source_id,
            message_id,
            customer,
            kind,
            event_key(msg),
            ts,
            entry.received_at,
            entry.body
        ])?;
    Ok(inserted == 1)
}

fn set_traits(
    tx: &Transaction<'_>,
    customer: CustomerId,
    traits: &Map<String, Value>,
    ts: i64,
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO traits (customer_id, key, value, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (customer_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
         WHERE excluded.updated_at >= traits.updated_at",
    )?;
    debug_assert!(
        newer_wins(0, 0),
        "the SQL above encodes cohort_profile::newer_wins"
    );
    for (key, value) in traits {
        stmt.execute(params![customer, key, trait_text(value), ts])?;
    }
    Ok(())
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

/// Computed-trait changes of one batch, summed in memory and written once per customer at the end
/// of the batch: a busy customer's hundred events cost one upsert, not a hundred.
#[derive(Default)]
struct StatsDeltas {
    customers: HashMap<CustomerId, CustomerDelta>,
    counts: HashMap<(CustomerId, String), (i64, i64)>,
    revenue_days: HashMap<(CustomerId, i64), (f64, i64)>,
}

struct CustomerDelta {
    first_seen: i64,
    last_seen: i64,
    events: i64,
    orders: i64,
    revenue: f64,
    last_order_at: Option<i64>,
}

impl StatsDeltas {
    fn add(
        &mut self,
        customer: CustomerId,
        msg: &Map<String, Value>,
        ts: i64,
        profile: &ProfileRules,
    ) {
        let order = profile.order_revenue(msg);
        let c = self.customers.entry(customer).or_insert(CustomerDelta {
            first_seen: ts,
            last_seen: ts,
            events: 0,
            orders: 0,
            revenue: 0.0,
            last_order_at: None,
        });
        c.first_seen = c.first_seen.min(ts);
        c.last_seen = c.last_seen.max(ts);
        c.events += 1;
        if let Some(revenue) = order {
            c.orders += 1;
            c.revenue += revenue;
            c.last_order_at = Some(c.last_order_at.map_or(ts, |t| t.max(ts)));
            let day = self
                .revenue_days
                .entry((customer, day_of(ts)))
                .or_insert((0.0, 0));
            day.0 += revenue;
            day.1 += 1;
        }
        let count = self
            .counts
            .entry((customer, event_key(msg)))
            .or_insert((0, ts));
        count.0 += 1;
        count.1 = count.1.max(ts);
    }

    fn flush(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        let mut stats = tx.prepare_cached(
            &format!(
                "INSERT INTO customer_stats (customer_id, first_seen, last_seen, events, orders, revenue, last_order_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) {ADD_STATS}"
            ),
        )?;
        for (customer, d) in self.customers.drain() {
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
        for ((customer, name), (count, last_at)) in self.counts.drain() {
            counts.execute(params![customer, name, count, last_at])?;
        }
        let mut days = tx.prepare_cached(
            "INSERT INTO revenue_days (customer_id, day, revenue, orders) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (customer_id, day) DO UPDATE SET revenue = revenue + excluded.revenue, orders = orders + excluded.orders",
        )?;
        for ((customer, day), (revenue, orders)) in self.revenue_days.drain() {
            days.execute(params![customer, day, revenue, orders])?;
        }
        Ok(())
    }
}

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

/// Identifier owners seen recently, so a returning customer's events need no identity query.
/// Merges are rare, so instead of rewriting cached owners a merge is remembered and followed.
///
/// Also each recently seen customer's identifiers counted by kind, which the per-kind limits
/// read whenever an event brings an identifier the customer lacks. A shared device asks again on
/// every event (its anonymous ID belongs to another customer), so these must not cost a query.
/// Only the processor writes identities, so the counts stay exact.
#[derive(Default)]
pub(crate) struct IdentityCache {
    owners: HashMap<Identifier, CustomerId>,
    merged_into: HashMap<CustomerId, CustomerId>,
    kinds: HashMap<CustomerId, HashMap<IdKind, usize>>,
}

/// Entries kept before the cache starts over; about 100 bytes each.
const IDENTITY_CACHE_LIMIT: usize = 2_000_000;

impl IdentityCache {
    fn get(&self, id: &Identifier) -> Option<CustomerId> {
        let mut c = *self.owners.get(id)?;
        while let Some(&next) = self.merged_into.get(&c) {
            c = next;
        }
        Some(c)
    }

    fn put(&mut self, id: &Identifier, customer: CustomerId) {
        if self.owners.len() >= IDENTITY_CACHE_LIMIT {
            self.clear();
        }
        self.owners.insert(id.clone(), customer);
    }

    fn put_kinds(&mut self, customer: CustomerId, kinds: HashMap<IdKind, usize>) {
        if self.kinds.len() >= IDENTITY_CACHE_LIMIT {
            self.kinds.clear();
        }
        self.kinds.insert(customer, kinds);
    }

    /// Counts `id` against `customer`'s cached counts (if any) after it was attached.
    fn attached(&mut self, customer: CustomerId, id: &Identifier) {
        if let Some(kinds) = self.kinds.get_mut(&customer) {
            *kinds.entry(id.kind.clone()).or_insert(0) += 1;
        }
    }

    /// Moves `from`'s counts onto `into` after a merge (or forgets both when either is unknown).
    fn merged(&mut self, from: CustomerId, into: CustomerId) {
        self.merged_into.insert(from, into);
        let gone = self.kinds.remove(&from);
        match (gone, self.kinds.get_mut(&into)) {
            (Some(gone), Some(kinds)) => {
                for (kind, n) in gone {
                    *kinds.entry(kind).or_insert(0) += n;
                }
            }
            _ => {
                self.kinds.remove(&into);
            }
        }
    }

    fn clear(&mut self) {
        self.owners.clear();
        self.merged_into.clear();
        self.kinds.clear();
    }
}

/// A customer's stored identifiers counted by kind.
fn stored_kind_counts(
    conn: &Connection,
    customer: CustomerId,
) -> rusqlite::Result<HashMap<IdKind, usize>> {
    conn.prepare_cached(
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

/// The identity graph inside the processing transaction.
struct SqliteGraph<'a, 'c> {
    tx: &'a Transaction<'c>,
    at: i64,
    cache: &'a mut IdentityCache,
}

impl IdentityGraph for SqliteGraph<'_, '_> {
    type Error = rusqlite::Error;

    fn lookup(&mut self, id: &Identifier) -> rusqlite::Result<Option<CustomerId>> {
        if let Some(c) = self.cache.get(id) {
            return Ok(Some(c));
        }
        // Merges move identities to the survivor, so an identity row always names a live customer.
        let found: Option<CustomerId> = self
            .tx
            .prepare_cached("SELECT customer_id FROM identities WHERE kind = ?1 AND value = ?2")?
            .query_row(params![id.kind.as_str(), id.value], |r| r.get(0))
            .optional()?;
        if let Some(c) = found {
            self.cache.put(id, c);
        }
        Ok(found)
    }

    fn kind_counts(&mut self, customer: CustomerId) -> rusqlite::Result<HashMap<IdKind, usize>> {
        if let Some(kinds) = self.cache.kinds.get(&customer) {
            return Ok(kinds.clone());
        }
        let kinds = stored_kind_counts(self.tx, customer)?;
        self.cache.put_kinds(customer, kinds.clone());
        Ok(kinds)
    }

    fn create_customer(&mut self) -> rusqlite::Result<CustomerId> {
        self.tx
            .prepare_cached("INSERT INTO customers (created_at) VALUES (?1)")?
            .execute([self.at])?;
        let customer = self.tx.last_insert_rowid();
        self.cache.put_kinds(customer, HashMap::new());
        Ok(customer)
    }

    fn attach(&mut self, customer: CustomerId, id: &Identifier) -> rusqlite::Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO identities (kind, value, customer_id, first_seen) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![id.kind.as_str(), id.value, customer, self.at])?;
        self.cache.put(id, customer);
        self.cache.attached(customer, id);
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
        self.cache.merged(from, into);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Durability;

    fn state_db(dir: &std::path::Path) -> Connection {
        let mut conn = crate::conn::open(&dir.join("state.db"), Durability::Normal).unwrap();
        crate::schema::migrate_state(&mut conn).unwrap();
        conn
    }

    fn entry(seq: i64, message: serde_json::Value) -> InboxEntry {
        InboxEntry {
            position: Position::new(0, seq),
            source_id: 1,
            received_at: 1_700_000_000_000_000,
            body: message.to_string(),
        }
    }

    fn totals(conn: &Connection) -> (i64, i64, i64, f64, i64) {
        conn.query_row(
            "SELECT (SELECT COUNT(*) FROM events), (SELECT COUNT(*) FROM identities),
                    (SELECT COALESCE(SUM(events), 0) FROM customer_stats),
                    (SELECT COALESCE(SUM(revenue), 0) FROM customer_stats),
                    (SELECT COALESCE(SUM(count), 0) FROM event_counts)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap()
    }

    #[test]
    fn a_batch_applied_again_after_a_crash_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = state_db(dir.path());
        // Two messages share a message ID: the inbox's dedup lets that through once its window
        // has passed, and both are kept, each under its own position.
        let batch = vec![
            entry(
                1,
                serde_json::json!({"type": "identify", "userId": "u1", "anonymousId": "a1",
                "messageId": "m1", "traits": {"plan": "pro"}}),
            ),
            entry(
                2,
                serde_json::json!({"type": "track", "userId": "u1", "event": "Order Completed",
                "messageId": "m2", "properties": {"revenue": 40}}),
            ),
            entry(
                3,
                serde_json::json!({"type": "track", "anonymousId": "a1", "event": "Order Completed",
                "messageId": "m2", "properties": {"revenue": 2}}),
            ),
        ];
        let rules = (IdentityRules::default(), ProfileRules::default());
        let apply = |conn: &mut Connection, cache: &mut IdentityCache| {
            apply_batch(
                conn,
                &batch,
                &rules.0,
                &rules.1,
                cache,
                &mut Vec::new(),
                Position::new(0, 3),
            )
            .unwrap();
        };
        apply(&mut conn, &mut IdentityCache::default());
        let once = totals(&conn);
        assert_eq!(once, (3, 2, 3, 42.0, 3));
        // The processor crashed before it knew the batch was committed: it starts over from the
        // same inbox positions, with a cold cache.
        apply(&mut conn, &mut IdentityCache::default());
        assert_eq!(totals(&conn), once);
    }

    #[test]
    fn cached_identifier_counts_match_the_stored_identities_through_attaches_and_merges() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = state_db(dir.path());
        let rules = (IdentityRules::default(), ProfileRules::default());
        let mut cache = IdentityCache::default();
        let messages = [
            // An anonymous visit, then sign-up on that device and a second device.
            serde_json::json!({"type": "track", "anonymousId": "a1", "event": "Viewed"}),
            serde_json::json!({"type": "identify", "userId": "u1", "anonymousId": "a1",
                               "traits": {"email": "one@example.com"}}),
            serde_json::json!({"type": "track", "userId": "u1", "anonymousId": "a2", "event": "Viewed"}),
            // A second customer on the first one's device: the merge is refused, every time.
            serde_json::json!({"type": "track", "userId": "u2", "anonymousId": "a3", "event": "Viewed"}),
            serde_json::json!({"type": "track", "userId": "u2", "anonymousId": "a1", "event": "Viewed"}),
            serde_json::json!({"type": "track", "userId": "u2", "anonymousId": "a1", "event": "Viewed"}),
            // Two anonymous customers joined by an email: a merge.
            serde_json::json!({"type": "identify", "anonymousId": "a4", "traits": {"email": "x@example.com"}}),
            serde_json::json!({"type": "track", "anonymousId": "a5", "event": "Viewed"}),
            serde_json::json!({"type": "identify", "anonymousId": "a5", "traits": {"email": "x@example.com"}}),
            serde_json::json!({"type": "track", "anonymousId": "a5", "userId": "u3", "event": "Viewed"}),
        ];
        for (i, message) in messages.into_iter().enumerate() {
            let mut message = message;
            message["messageId"] = format!("m{i}").into();
            let seq = i as i64 + 1;
            apply_batch(
                &mut conn,
                &[entry(seq, message)],
                &rules.0,
                &rules.1,
                &mut cache,
                &mut Vec::new(),
                Position::new(0, seq),
            )
            .unwrap();
        }
        let merges: i64 = conn
            .query_row("SELECT COUNT(*) FROM merges", [], |r| r.get(0))
            .unwrap();
        assert_eq!(merges, 1);
        // Four customers were created; the merged-away one's counts moved to its survivor.
        assert_eq!(cache.kinds.len(), 3, "cached counts: {:?}", cache.kinds);
        for (&customer, cached) in &cache.kinds {
            let stored = stored_kind_counts(&conn, customer).unwrap();
            let cached: HashMap<IdKind, usize> = cached
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| (k.clone(), *n))
                .collect();
            assert_eq!(cached, stored, "customer {customer}");
        }
    }
}
