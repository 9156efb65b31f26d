//! Real-time membership: after the processor applies events, re-decide the segments those events
//! can move for the customers they touched.
//!
//! The engine trails the processor on its own connection and thread, so evaluation never slows
//! ingest's transactions. Its cursor (`meta.segments_seq`) moves in the same transaction as the
//! membership changes it caused, so a crash repeats at most the decisions of one round, and those
//! decisions are idempotent: a customer already in a segment does not enter again.
//!
//! Each round takes the customers of the events applied since the cursor, the customers named in
//! `segment_pending` (traits changed outside event processing), and the survivors of new merges
//! (whose merged-away customers leave every segment). Definitions are evaluated in dependency
//! order, so `in_segment` sees the customer's fresh membership of the referenced segment; one
//! that was not re-decided is read as the customer's current membership.

use crate::SqliteInbox;
use crate::profiles::{load_computed, load_traits};
use crate::segments::{SegmentDef, all, evaluation_order, record};
use crate::time::{from_micros, to_micros};
use chrono::{DateTime, Utc};
use cohort_core::CustomerId;
use cohort_core::Inbox;
use cohort_profile::ProfileRules;
use cohort_segment::{
    Condition, CustomerView, Dependencies, EventRecord, dependencies, evaluate, referenced_events,
};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Inbox positions taken per round: bounds the transaction.
const ROUND_EVENTS: i64 = 20_000;
/// Pending customers taken per round.
const ROUND_PENDING: i64 = 5_000;
/// Under a steady flow, rounds start at most this often. A round's cost is mostly per customer
/// (their state is read once however many of their events it covers), so a round that covers a
/// second of traffic decides a busy customer once instead of after every processor batch.
const ROUND_EVERY: Duration = Duration::from_millis(1000);

/// What a round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// Nothing was waiting.
    Idle,
    /// It took everything that was waiting.
    CaughtUp,
    /// It stopped at a round's limit: more is waiting.
    Behind,
}

pub(crate) struct RealtimeHandle {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RealtimeHandle {
    pub(crate) fn start(conn: Connection, inbox: Arc<SqliteInbox>, rules: ProfileRules) -> Self {
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
                    events: EventCache::default(),
                };
                engine.run(&*inbox, &stop2);
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
    /// What can change each definition's answer, by position in `ordered`.
    deps: Vec<Dependencies>,
    /// Positions of the earlier definitions each one reads through `in_segment`.
    reads: Vec<Vec<usize>>,
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
        Ok(Some(Definitions::from_defs(fingerprint, defs)))
    }

    fn from_defs(fingerprint: (i64, i64, i64), defs: Vec<SegmentDef>) -> Definitions {
        let event_names = defs
            .iter()
            .flat_map(|d| referenced_events(&d.condition))
            .collect();
        let mut filtered_names = HashSet::new();
        for d in &defs {
            collect_filtered_names(&d.condition, &mut filtered_names);
        }
        let ordered = evaluation_order(defs);
        let position: HashMap<String, usize> = ordered
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name.clone(), i))
            .collect();
        let deps: Vec<Dependencies> = ordered.iter().map(|d| dependencies(&d.condition)).collect();
        // A reference to a later (or unknown) segment reads false whatever happens: no dependency.
        let reads = deps
            .iter()
            .enumerate()
            .map(|(i, d)| {
                d.segments
                    .iter()
                    .filter_map(|name| position.get(name).copied().filter(|&j| j < i))
                    .collect()
            })
            .collect();
        Definitions {
            fingerprint,
            ordered,
            event_names,
            filtered_names,
            position,
            deps,
            reads,
        }
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
    events: EventCache,
}

impl Engine {
    fn run(&mut self, inbox: &dyn Inbox, stop: &AtomicBool) {
        while !stop.load(Ordering::Acquire) {
            let started = Instant::now();
            match self.round(inbox.acknowledged().offset()) {
                Ok(Round::Behind) => {}
                // A lone event is decided within the idle poll; a flow waits for the next round.
                Ok(Round::CaughtUp) => {
                    std::thread::sleep(ROUND_EVERY.saturating_sub(started.elapsed()))
                }
                Ok(Round::Idle) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => {
                    tracing::error!(error = %e, "segment evaluation failed; retrying");
                    // The cache may hold customers whose decisions were not recorded; holding
                    // them would make them look decided (see `EventCache::holds`).
                    self.events.clear();
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }

    /// One round.
    ///
    /// Decisions are made in a read transaction (a WAL snapshot: the processor keeps writing
    /// meanwhile) and recorded in a short write transaction, so evaluation never holds the
    /// database's write lock.
    fn round(&mut self, applied: i64) -> rusqlite::Result<Round> {
        if fingerprint(&self.conn)? != self.definitions.fingerprint
            && let Some(d) = Definitions::load(&self.conn)?
        {
            self.definitions = d;
            // Which events are kept, and which bodies parsed, depends on the definitions.
            self.events.clear();
        }
        let started = Instant::now();
        let read = self.conn.transaction()?;
        let cursor = meta(&read, "segments_seq")?;
        let merge_cursor = meta(&read, "segments_merge_id")?;
        let upto = applied.min(cursor.saturating_add(ROUND_EVENTS));

        let mut touched: BTreeMap<CustomerId, Change> = BTreeMap::new();
        if upto > cursor {
            let mut stmt = read.prepare_cached(
                "SELECT customer_id, name FROM events
                 WHERE seq > ?1 AND seq <= ?2 AND customer_id IS NOT NULL",
            )?;
            let mut rows = stmt.query(params![cursor, upto])?;
            while let Some(row) = rows.next()? {
                let name = row.get_ref(1)?.as_str().unwrap_or("");
                touched
                    .entry(row.get(0)?)
                    .or_default()
                    .saw_event(name, &self.rules);
            }
        }
        let pending: Vec<CustomerId> = read
            .prepare_cached("SELECT customer_id FROM segment_pending LIMIT ?1")?
            .query_map([ROUND_PENDING], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for &c in &pending {
            touched.insert(c, Change::everything());
        }
        let merges: Vec<(i64, CustomerId, CustomerId)> = read
            .prepare_cached(
                "SELECT id, from_customer, into_customer FROM merges WHERE id > ?1 ORDER BY id",
            )?
            .query_map([merge_cursor], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        if touched.is_empty() && merges.is_empty() && upto <= cursor {
            return Ok(Round::Idle);
        }

        let now = Utc::now();
        // A merge moves the merged-away customer's events to the survivor: both reload.
        for &(_, from, into) in &merges {
            self.events.forget(from);
            self.events.forget(into);
        }
        let mut gone: Vec<CustomerId> = merges.iter().map(|&(_, from, _)| from).collect();
        for &(_, _, into) in &merges {
            touched.insert(into, Change::everything());
        }
        let mut decisions: Vec<(CustomerId, Vec<(i64, bool)>)> = Vec::new();
        if !self.definitions.ordered.is_empty() {
            for (&customer, change) in &touched {
                // A merge points the merged-away customer's events at the survivor in the same
                // transaction, so a customer named by an event in this snapshot is live. Pending
                // customers and merge survivors may have been merged away since.
                if change.everything && survivor(&read, customer)? != Some(customer) {
                    // Merged away (its survivor is among the touched too) or unknown.
                    self.events.forget(customer);
                    gone.push(customer);
                    continue;
                }
                // A customer whose events are cached was decided in an earlier round.
                let newcomer =
                    !self.events.holds(customer) && !seen_before(&read, customer, cursor)?;
                let affected = if change.everything || newcomer {
                    // A newcomer was never decided: definitions its change cannot move may hold
                    // from the start ("not a VIP").
                    vec![true; self.definitions.ordered.len()]
                } else {
                    self.definitions.affected_by(change)
                };
                if !affected.contains(&true) {
                    continue;
                }
                let events = self.events.of(&read, customer, &self.definitions)?;
                let subject = Subject {
                    customer,
                    affected: &affected,
                    events,
                };
                decisions.push((
                    customer,
                    decide(&read, &subject, now, &self.rules, &self.definitions)?,
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
        let behind = upto < applied || pending.len() as i64 == ROUND_PENDING;
        Ok(if behind {
            Round::Behind
        } else {
            Round::CaughtUp
        })
    }
}

/// What a round learned changed for one customer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Change {
    /// Merged, or traits written outside event processing: every definition is decided again.
    everything: bool,
    /// An `identify` was applied.
    traits: bool,
    /// Some event was applied.
    events: bool,
    /// Some order was applied.
    orders: bool,
    /// Names of the events applied.
    names: HashSet<String>,
}

impl Change {
    fn everything() -> Change {
        Change {
            everything: true,
            ..Change::default()
        }
    }

    fn saw_event(&mut self, name: &str, rules: &ProfileRules) {
        self.events = true;
        // Stored names are the event name for track calls and `$type` for the others.
        self.traits |= name == "$identify";
        self.orders |= rules.order_events.iter().any(|e| e == name);
        if !self.names.contains(name) {
            self.names.insert(name.to_string());
        }
    }
}

impl Definitions {
    /// Which definitions, by position in `ordered`, a change can move. The others keep the
    /// customer's current membership; the time refresh moves those that depend on the clock.
    fn affected_by(&self, change: &Change) -> Vec<bool> {
        let mut affected: Vec<bool> = Vec::with_capacity(self.deps.len());
        for (deps, reads) in self.deps.iter().zip(&self.reads) {
            let hit = change.everything
                || (deps.traits && change.traits)
                || (deps.any_event && change.events)
                || (deps.orders && change.orders)
                || deps.events.iter().any(|name| change.names.contains(name))
                || reads.iter().any(|&j| affected[j]);
            affected.push(hit);
        }
        affected
    }
}

/// One customer to decide: the definitions to decide (by position) and the events they read.
struct Subject<'a> {
    customer: CustomerId,
    affected: &'a [bool],
    events: &'a [EventRecord],
}

/// Decides the affected definitions for one customer: (segment ID, member) in evaluation order.
fn decide(
    conn: &Connection,
    subject: &Subject<'_>,
    now: DateTime<Utc>,
    rules: &ProfileRules,
    definitions: &Definitions,
) -> rusqlite::Result<Vec<(i64, bool)>> {
    let customer = subject.customer;
    let needed = |pick: fn(&Dependencies) -> bool| {
        definitions
            .deps
            .iter()
            .zip(subject.affected)
            .any(|(d, &hit)| hit && pick(d))
    };
    let traits = if needed(|d| d.traits) {
        load_traits(conn, customer)?
    } else {
        Map::new()
    };
    let computed = load_computed(conn, customer, now, rules)?;
    let view = CustomerView::new(&traits, &computed, subject.events);
    // Definitions left alone are read through `in_segment` as the customer's membership now.
    let current: HashSet<i64> = if needed(|d| !d.segments.is_empty()) {
        conn.prepare_cached("SELECT segment_id FROM memberships WHERE customer_id = ?1")?
            .query_map([customer], |r| r.get(0))?
            .collect::<Result<_, _>>()?
    } else {
        HashSet::new()
    };
    // Decisions so far, in evaluation order: a reference to a later (or unknown) segment reads
    // false, as the batch evaluation does.
    let mut decided: Vec<bool> = Vec::with_capacity(definitions.ordered.len());
    let mut out = Vec::new();
    for (def, &hit) in definitions.ordered.iter().zip(subject.affected) {
        if !hit {
            decided.push(current.contains(&def.id));
            continue;
        }
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

/// Customers cached at most; past that the cache starts over (it only saves reads).
const EVENT_CACHE_CUSTOMERS: usize = 50_000;

/// Each customer's events as last read, so that a round reads only the events applied since.
///
/// Valid because a customer's events only ever grow, by higher inbox positions (the processor
/// applies the inbox in order), except through a merge, which moves the merged-away customer's
/// events to the survivor: the round forgets both customers of every merge it sees, in the same
/// snapshot it reads events from.
#[derive(Default)]
struct EventCache {
    customers: HashMap<CustomerId, CustomerEvents>,
}

#[derive(Default)]
struct CustomerEvents {
    /// The highest inbox position read for the customer.
    through: i64,
    /// (time in µs, inbox position) of each event in `events`: their order.
    keys: Vec<(i64, i64)>,
    /// The events whose names some definition looks at, by time then position, with their
    /// properties when some definition filters that name by property.
    events: Vec<EventRecord>,
}

impl EventCache {
    fn of(
        &mut self,
        conn: &Connection,
        customer: CustomerId,
        definitions: &Definitions,
    ) -> rusqlite::Result<&[EventRecord]> {
        if self.customers.len() >= EVENT_CACHE_CUSTOMERS && !self.customers.contains_key(&customer)
        {
            self.customers.clear();
        }
        let cached = self.customers.entry(customer).or_default();
        if definitions.event_names.is_empty() {
            return Ok(&cached.events);
        }
        let mut stmt = conn.prepare_cached(
            "SELECT seq, name, ts, body FROM events WHERE customer_id = ?1 AND seq > ?2",
        )?;
        let mut rows = stmt.query(params![customer, cached.through])?;
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            cached.through = cached.through.max(seq);
            let name: String = row.get(1)?;
            if !definitions.event_names.contains(&name) {
                continue;
            }
            let ts: i64 = row.get(2)?;
            // Parsing the body is most of the cost; only property filters need it.
            let properties = if definitions.filtered_names.contains(&name) {
                properties_of(&row.get::<_, String>(3)?)
            } else {
                Map::new()
            };
            let at = cached.keys.partition_point(|&k| k <= (ts, seq));
            cached.keys.insert(at, (ts, seq));
            cached.events.insert(
                at,
                EventRecord {
                    name,
                    timestamp: from_micros(ts),
                    properties,
                },
            );
        }
        Ok(&cached.events)
    }

    /// Whether the customer's events are cached: only a round that decides a customer reads
    /// them, and the cache is cleared when a round fails, so this means an earlier round's
    /// decisions for the customer were recorded.
    fn holds(&self, customer: CustomerId) -> bool {
        self.customers.contains_key(&customer)
    }

    fn forget(&mut self, customer: CustomerId) {
        self.customers.remove(&customer);
    }

    fn clear(&mut self) {
        self.customers.clear();
    }
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

/// Whether the customer had events applied up to `cursor`, so an earlier round decided it.
fn seen_before(conn: &Connection, customer: CustomerId, cursor: i64) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM events WHERE customer_id = ?1 AND seq <= ?2 LIMIT 1")?
        .exists(params![customer, cursor])
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SegmentKind;
    use serde_json::json;

    fn definitions(conditions: &[(&str, Value)]) -> Definitions {
        let defs = conditions
            .iter()
            .enumerate()
            .map(|(i, (name, condition))| SegmentDef {
                id: i as i64 + 1,
                name: name.to_string(),
                kind: SegmentKind::Segment,
                description: String::new(),
                condition: Condition::from_value(condition.clone()).unwrap(),
                created_at: Utc::now(),
                updated_at: Utc::now(),
                version: 1,
            })
            .collect();
        Definitions::from_defs((0, 0, 0), defs)
    }

    fn affected<'a>(defs: &'a Definitions, change: &Change) -> Vec<&'a str> {
        defs.ordered
            .iter()
            .zip(defs.affected_by(change))
            .filter(|(_, hit)| *hit)
            .map(|(d, _)| d.name.as_str())
            .collect()
    }

    fn events(names: &[&str]) -> Change {
        let mut change = Change::default();
        for name in names {
            change.saw_event(name, &ProfileRules::default());
        }
        change
    }

    #[test]
    fn a_change_decides_only_the_definitions_it_can_move() {
        let defs = definitions(&[
            (
                "pro",
                json!({"type": "trait", "key": "plan", "op": "eq", "value": "pro"}),
            ),
            (
                "viewer",
                json!({"type": "event", "name": "Product Viewed", "count": {"op": "gte", "value": 3}}),
            ),
            (
                "buyer",
                json!({"type": "computed", "key": "orders", "op": "gte", "value": 1}),
            ),
            (
                "active",
                json!({"type": "computed", "key": "last_seen", "op": "within_last", "value": {"days": 30}}),
            ),
            (
                "pro_viewer",
                json!({"type": "and", "conditions": [
                {"type": "in_segment", "segment": "pro"}, {"type": "in_segment", "segment": "viewer"}]}),
            ),
            (
                "pro_buyer",
                json!({"type": "and", "conditions": [
                {"type": "in_segment", "segment": "pro"}, {"type": "in_segment", "segment": "buyer"}]}),
            ),
        ]);
        let mut viewed = affected(&defs, &events(&["Product Viewed"]));
        viewed.sort_unstable();
        assert_eq!(viewed, ["active", "pro_viewer", "viewer"]);
        let mut ordered = affected(&defs, &events(&["Order Completed"]));
        ordered.sort_unstable();
        assert_eq!(ordered, ["active", "buyer", "pro_buyer"]);
        let mut identified = affected(&defs, &events(&["$identify"]));
        identified.sort_unstable();
        assert_eq!(identified, ["active", "pro", "pro_buyer", "pro_viewer"]);
        assert_eq!(affected(&defs, &Change::everything()).len(), 6);
        assert!(affected(&defs, &Change::default()).is_empty());
    }
}
