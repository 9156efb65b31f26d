//! Real-time membership: after the processor applies events, re-decide every segment for the
//! customers those events touched.
//!
//! The engine trails the processor on its own connection and thread, so evaluation never slows
//! ingest's transactions. Its cursor (`meta.segments_seq`) moves in the same transaction as the
//! membership changes it caused, so a crash repeats at most the decisions of one round, and those
//! decisions are idempotent: a customer already in a segment does not enter again.
//!
//! Each round takes the customers of the events applied since the cursor, the customers named in
//! `segment_pending` (traits changed outside event processing), and the survivors of new merges
//! (whose merged-away customers leave every segment). Definitions are evaluated in dependency
//! order, so `in_segment` sees the customer's fresh membership of the referenced segment.

use crate::inbox::Progress;
use crate::profiles::{load_computed, load_traits};
use crate::segments::{SegmentDef, all, evaluation_order, record};
use crate::time::{from_micros, to_micros};
use chrono::{DateTime, Utc};
use cohort_core::CustomerId;
use cohort_profile::ProfileRules;
use cohort_segment::{Condition, CustomerView, EventRecord, evaluate, referenced_events};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Inbox positions taken per round: bounds the transaction.
const ROUND_EVENTS: i64 = 20_000;
/// Pending customers taken per round.
const ROUND_PENDING: i64 = 5_000;

pub(crate) struct RealtimeHandle {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RealtimeHandle {
    pub(crate) fn start(conn: Connection, progress: Arc<Progress>, rules: ProfileRules) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("cohort-segments".into())
            .spawn(move || {
                // Re-checks can trail by milliseconds; requests should not.
                cohort_core::priority::yield_to_requests();
                let mut engine = Engine {
                    conn,
                    rules,
                    definitions: Definitions::default(),
                };
                engine.run(&progress, &stop2);
            })
            .map_err(|e| tracing::error!("cannot start the segment engine: {e}"))
            .ok();
        Self { stop, thread }
    }

    pub(crate) fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The definitions as last read, with what evaluation needs precomputed.
#[derive(Default)]
struct Definitions {
    /// Changes whenever a definition is created, changed or deleted.
    fingerprint: (i64, i64, i64),
    ordered: Vec<SegmentDef>,
    /// Event names any definition looks at; events of other names are not loaded.
    event_names: HashSet<String>,
    /// Event names some definition filters by property: only these events' bodies are parsed.
    filtered_names: HashSet<String>,
    /// Position in `ordered` of each definition, by name: `in_segment` reads earlier decisions.
    position: HashMap<String, usize>,
}

impl Definitions {
    fn load(conn: &Connection) -> rusqlite::Result<Option<Definitions>> {
        let fingerprint = fingerprint(conn)?;
        let defs = match all(conn) {
            Ok(d) => d,
            Err(crate::StoreError::Sqlite(e)) => return Err(e),
            Err(e) => {
                tracing::error!(error = %e, "a stored segment cannot be read; segments paused");
                return Ok(None);
            }
        };
        let event_names = defs
            .iter()
            .flat_map(|d| referenced_events(&d.condition))
            .collect();
        let mut filtered_names = HashSet::new();
        for d in &defs {
            collect_filtered_names(&d.condition, &mut filtered_names);
        }
        let ordered = evaluation_order(defs);
        let position = ordered
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name.clone(), i))
            .collect();
        Ok(Some(Definitions {
            fingerprint,
            ordered,
            event_names,
            filtered_names,
            position,
        }))
    }
}

fn collect_filtered_names(condition: &Condition, out: &mut HashSet<String>) {
    if let Condition::Event { name, filters, .. } = condition
        && !filters.is_empty()
    {
        out.insert(name.clone());
    }
    for child in condition.children() {
        collect_filtered_names(child, out);
    }
}

fn fingerprint(conn: &Connection) -> rusqlite::Result<(i64, i64, i64)> {
    conn.prepare_cached(
        "SELECT COUNT(*), COALESCE(SUM(version), 0), COALESCE(MAX(updated_at), 0) FROM segments",
    )?
    .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
}

struct Engine {
    conn: Connection,
    rules: ProfileRules,
    definitions: Definitions,
}

impl Engine {
    fn run(&mut self, progress: &Progress, stop: &AtomicBool) {
        while !stop.load(Ordering::Acquire) {
            match self.round(progress.applied()) {
                Ok(true) => {}
                Ok(false) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => {
                    tracing::error!(error = %e, "segment evaluation failed; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }

    /// One round; false when there was nothing to do.
    ///
    /// Decisions are made in a read transaction (a WAL snapshot: the processor keeps writing
    /// meanwhile) and recorded in a short write transaction, so evaluation never holds the
    /// database's write lock.
    fn round(&mut self, applied: i64) -> rusqlite::Result<bool> {
        if fingerprint(&self.conn)? != self.definitions.fingerprint
            && let Some(d) = Definitions::load(&self.conn)?
        {
            self.definitions = d;
        }
        let started = Instant::now();
        let read = self.conn.transaction()?;
        let cursor = meta(&read, "segments_seq")?;
        let merge_cursor = meta(&read, "segments_merge_id")?;
        let upto = applied.min(cursor.saturating_add(ROUND_EVENTS));

        let mut touched: BTreeSet<CustomerId> = BTreeSet::new();
        if upto > cursor {
            let mut stmt = read.prepare_cached(
                "SELECT DISTINCT customer_id FROM events
                 WHERE seq > ?1 AND seq <= ?2 AND customer_id IS NOT NULL",
            )?;
            for c in stmt.query_map(params![cursor, upto], |r| r.get(0))? {
                touched.insert(c?);
            }
        }
        let pending: Vec<CustomerId> = read
            .prepare_cached("SELECT customer_id FROM segment_pending LIMIT ?1")?
            .query_map([ROUND_PENDING], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        touched.extend(&pending);
        let merges: Vec<(i64, CustomerId, CustomerId)> = read
            .prepare_cached(
                "SELECT id, from_customer, into_customer FROM merges WHERE id > ?1 ORDER BY id",
            )?
            .query_map([merge_cursor], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        if touched.is_empty() && merges.is_empty() && upto <= cursor {
            return Ok(false);
        }

        let now = Utc::now();
        let mut gone: Vec<CustomerId> = merges.iter().map(|&(_, from, _)| from).collect();
        touched.extend(merges.iter().map(|&(_, _, into)| into));
        let mut decisions: Vec<(CustomerId, Vec<(i64, bool)>)> = Vec::new();
        if !self.definitions.ordered.is_empty() {
            for &customer in &touched {
                if survivor(&read, customer)? != Some(customer) {
                    // Merged away (its survivor is among the touched too) or unknown.
                    gone.push(customer);
                    continue;
                }
                decisions.push((
                    customer,
                    decide(&read, customer, now, &self.rules, &self.definitions)?,
                ));
            }
        }
        read.finish()?;

        let at = to_micros(now);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for customer in gone {
            leave_all(&tx, customer, at, "merge")?;
        }
        for (customer, decided) in &decisions {
            let current: HashSet<i64> = tx
                .prepare_cached("SELECT segment_id FROM memberships WHERE customer_id = ?1")?
                .query_map([customer], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for &(segment, member) in decided {
                if member != current.contains(&segment) {
                    record(&tx, segment, *customer, member, at, "event")?;
                }
            }
        }
        {
            let mut done =
                tx.prepare_cached("DELETE FROM segment_pending WHERE customer_id = ?1")?;
            for c in &pending {
                done.execute([c])?;
            }
        }
        if upto > cursor {
            set_meta(&tx, "segments_seq", upto)?;
        }
        if let Some(&(last, _, _)) = merges.last() {
            set_meta(&tx, "segments_merge_id", last)?;
        }
        tx.commit()?;
        metrics::counter!("cohort_segment_evaluations_total").increment(decisions.len() as u64);
        metrics::histogram!("cohort_segment_round_seconds").record(started.elapsed().as_secs_f64());
        Ok(true)
    }
}

/// Decides every definition for one customer: (segment ID, member) in evaluation order.
fn decide(
    conn: &Connection,
    customer: CustomerId,
    now: DateTime<Utc>,
    rules: &ProfileRules,
    definitions: &Definitions,
) -> rusqlite::Result<Vec<(i64, bool)>> {
    let traits = load_traits(conn, customer)?;
    let computed = load_computed(conn, customer, now, rules)?;
    let events = load_events(
        conn,
        customer,
        &definitions.event_names,
        &definitions.filtered_names,
    )?;
    let view = CustomerView {
        traits: &traits,
        computed: &computed,
        events: &events,
    };
    // Decisions so far, in evaluation order: a reference to a later (or unknown) segment reads
    // false, as the batch evaluation does.
    let mut decided: Vec<bool> = Vec::with_capacity(definitions.ordered.len());
    let mut out = Vec::with_capacity(definitions.ordered.len());
    for def in &definitions.ordered {
        let member = evaluate(&def.condition, &view, now, &|name| {
            definitions
                .position
                .get(name)
                .and_then(|&i| decided.get(i).copied())
                .unwrap_or(false)
        });
        decided.push(member);
        out.push((def.id, member));
    }
    Ok(out)
}

/// The customer's events whose names some definition looks at, with their properties.
fn load_events(
    conn: &Connection,
    customer: CustomerId,
    names: &HashSet<String>,
    filtered: &HashSet<String>,
) -> rusqlite::Result<Vec<EventRecord>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(
        "SELECT name, ts, body FROM events WHERE customer_id = ?1 ORDER BY ts, seq",
    )?;
    let mut rows = stmt.query([customer])?;
    let mut events = Vec::new();
    while let Some(row) = rows.next()? {
        let name: String = row.get(0)?;
        if !names.contains(&name) {
            continue;
        }
        // Parsing the body is most of the cost; only property filters need it.
        let properties = if filtered.contains(&name) {
            properties_of(&row.get::<_, String>(2)?)
        } else {
            Map::new()
        };
        events.push(EventRecord {
            name,
            timestamp: from_micros(row.get(1)?),
            properties,
        });
    }
    Ok(events)
}

fn properties_of(body: &str) -> Map<String, Value> {
    /// Only `properties` is built; the rest of the message (context above all) is skipped.
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        properties: Value,
    }
    match serde_json::from_str::<Body>(body) {
        Ok(Body {
            properties: Value::Object(p),
        }) => p,
        _ => Map::new(),
    }
}

/// The live customer an ID stands for: itself, the survivor it was merged into, or nothing.
fn survivor(conn: &Connection, customer: CustomerId) -> rusqlite::Result<Option<CustomerId>> {
    conn.prepare_cached("SELECT COALESCE(merged_into, id) FROM customers WHERE id = ?1")?
        .query_row([customer], |r| r.get(0))
        .optional()
}

fn leave_all(
    tx: &Transaction<'_>,
    customer: CustomerId,
    at: i64,
    reason: &str,
) -> rusqlite::Result<()> {
    let segments: Vec<i64> = tx
        .prepare_cached("SELECT segment_id FROM memberships WHERE customer_id = ?1")?
        .query_map([customer], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for s in segments {
        record(tx, s, customer, false, at, reason)?;
    }
    Ok(())
}

fn meta(conn: &Connection, key: &str) -> rusqlite::Result<i64> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

fn set_meta(conn: &Connection, key: &str, value: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
        .execute(params![key, value])?;
    Ok(())
}
