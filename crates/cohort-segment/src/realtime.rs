//! Real-time membership: after the processor applies events, re-decide the segments those events
//! can move for the customers they touched.
//!
//! [`RealtimeSegments`] trails the processor over a [`MembershipStore`]. It spawns nothing: the
//! runtime gives it a thread of its own (so evaluation never slows ingest) and calls
//! [`RealtimeSegments::run`] there, or calls [`RealtimeSegments::round`] itself:
//!
//! ```ignore
//! let mut segments = RealtimeSegments::new(store.membership_store()?, rules);
//! let stop = AtomicBool::new(false);
//! // Until `stop` is set: decide what the processor applied, as the inbox acknowledges it.
//! segments.run(|| inbox.acknowledged(), &stop);
//! ```
//!
//! Its cursor moves in the same write as the membership changes it caused
//! ([`MembershipStore::record`]), so a crash repeats at most the decisions of one round, and
//! those decisions are idempotent: a customer already in a segment does not enter again.
//!
//! Each round takes the customers of the events applied since the cursor, the customers queued
//! for re-evaluation (traits changed outside event processing), and the survivors of new merges
//! (whose merged-away customers leave every segment). Definitions are evaluated in dependency
//! order, so `in_segment` sees the customer's fresh membership of the referenced segment; one
//! that was not re-decided is read as the customer's current membership.

use crate::membership::{
    Cursor, Decision, Decisions, Definition, EventSelection, Fingerprint, MembershipError,
    MembershipSnapshot, MembershipStore, StoredEvent, evaluation_order,
};
use crate::{
    Condition, CustomerView, Dependencies, EventRecord, dependencies, evaluate, referenced_events,
};
use chrono::{DateTime, Utc};
use cohort_core::{CustomerId, Position};
use cohort_profile::ProfileRules;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Inbox positions taken per round: bounds the transaction.
const ROUND_EVENTS: i64 = 20_000;
/// Pending customers taken per round.
const ROUND_PENDING: usize = 5_000;
/// Under a steady flow, rounds start at most this often. A round's cost is mostly per customer
/// (their state is read once however many of their events it covers), so a round that covers a
/// second of traffic decides a busy customer once instead of after every processor batch.
const ROUND_EVERY: Duration = Duration::from_millis(1000);

/// What a round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// Nothing was waiting.
    Idle,
    /// It took everything that was waiting.
    CaughtUp,
    /// It stopped at a round's limit: more is waiting.
    Behind,
}

/// The real-time segment engine over a store. See the module documentation.
pub struct RealtimeSegments<S> {
    store: S,
    rules: ProfileRules,
    definitions: Definitions,
    events: EventCache,
}

impl<S: MembershipStore> RealtimeSegments<S> {
    /// An engine over `store`; `rules` must be the processor's (which events are orders).
    pub fn new(store: S, rules: ProfileRules) -> Self {
        Self {
            store,
            rules,
            definitions: Definitions::default(),
            events: EventCache::default(),
        }
    }

    /// Runs rounds until `stop` is set, each up to `applied()`, the position the processor has
    /// applied. Pauses between rounds when caught up; an error is logged and the round retried.
    pub fn run(&mut self, applied: impl Fn() -> Position, stop: &AtomicBool) {
        while !stop.load(Ordering::Acquire) {
            let started = Instant::now();
            match self.round(applied()) {
                Ok(Round::Behind) => {}
                // A lone event is decided within the idle poll; a flow waits for the next round.
                Ok(Round::CaughtUp) => {
                    std::thread::sleep(ROUND_EVERY.saturating_sub(started.elapsed()))
                }
                Ok(Round::Idle) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => {
                    tracing::error!(error = %e, "segment evaluation failed; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }

    /// One round, up to the applied position `applied`.
    ///
    /// Decisions are made in a snapshot (the processor keeps writing meanwhile) and recorded
    /// in one short write, so evaluation never holds the store's write lock. After an error
    /// the next round starts afresh.
    pub fn round(&mut self, applied: Position) -> Result<Round, MembershipError> {
        let outcome = self.try_round(applied);
        if outcome.is_err() {
            // The cache may hold customers whose decisions were not recorded; holding them
            // would make them look decided (see `EventCache::holds`).
            self.events.clear();
        }
        outcome
    }

    fn try_round(&mut self, applied: Position) -> Result<Round, MembershipError> {
        if self.store.fingerprint()? != self.definitions.fingerprint {
            match self.store.definitions() {
                Ok((fingerprint, defs)) => {
                    self.definitions = Definitions::from_defs(fingerprint, defs);
                    // Which events are kept, and which bodies parsed, depends on the definitions.
                    self.events.clear();
                }
                // Rounds go on with the definitions known; the fingerprint still differs, so
                // every round tries again.
                Err(MembershipError::Unreadable(e)) => {
                    tracing::error!(error = %e, "a stored segment cannot be read; segments paused");
                }
                Err(e) => return Err(e),
            }
        }
        let started = Instant::now();
        let mut read = self.store.snapshot()?;
        let cursor = read.cursor()?;
        let upto = Position::new(
            cursor.events.partition(),
            applied
                .offset()
                .min(cursor.events.offset().saturating_add(ROUND_EVENTS)),
        );

        let mut touched: BTreeMap<CustomerId, Change> = BTreeMap::new();
        if upto > cursor.events {
            let rules = &self.rules;
            read.changed(cursor.events, upto, |customer, name| {
                touched.entry(customer).or_default().saw_event(name, rules);
            })?;
        }
        let pending = read.pending(ROUND_PENDING)?;
        for &c in &pending {
            touched.insert(c, Change::everything());
        }
        let merges = read.merges_after(cursor.merges)?;
        if touched.is_empty() && merges.is_empty() && upto <= cursor.events {
            return Ok(Round::Idle);
        }

        let now = Utc::now();
        // A merge moves the merged-away customer's events to the survivor: both reload.
        for m in &merges {
            self.events.forget(m.from);
            self.events.forget(m.into);
        }
        let mut gone: Vec<CustomerId> = merges.iter().map(|m| m.from).collect();
        for m in &merges {
            touched.insert(m.into, Change::everything());
        }
        let mut decided: Vec<(CustomerId, Vec<Decision>)> = Vec::new();
        if !self.definitions.ordered.is_empty() {
            for (&customer, change) in &touched {
                // A merge points the merged-away customer's events at the survivor in the same
                // write, so a customer named by an event in this snapshot is live. Pending
                // customers and merge survivors may have been merged away since.
                if change.everything && read.survivor(customer)? != Some(customer) {
                    // Merged away (its survivor is among the touched too) or unknown.
                    self.events.forget(customer);
                    gone.push(customer);
                    continue;
                }
                // A customer whose events are cached was decided in an earlier round.
                let newcomer = !self.events.holds(customer)
                    && !read.has_events_through(customer, cursor.events)?;
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
                let events = self.events.of(&mut read, customer, &self.definitions)?;
                let subject = Subject {
                    customer,
                    affected: &affected,
                    events,
                };
                decided.push((
                    customer,
                    decide(&mut read, &subject, now, &self.definitions)?,
                ));
            }
        }
        read.finish()?;

        let evaluations = decided.len() as u64;
        let behind = upto < applied || pending.len() == ROUND_PENDING;
        self.store.record(&Decisions {
            at: now,
            gone,
            decided,
            dequeued: pending,
            cursor: Cursor {
                events: upto.max(cursor.events),
                merges: merges.last().map_or(cursor.merges, |m| m.id),
            },
        })?;
        metrics::counter!("cohort_segment_evaluations_total").increment(evaluations);
        metrics::histogram!("cohort_segment_round_seconds").record(started.elapsed().as_secs_f64());
        Ok(if behind {
            Round::Behind
        } else {
            Round::CaughtUp
        })
    }
}

/// The definitions as last read, with what evaluation needs precomputed.
#[derive(Default)]
struct Definitions {
    /// Changes whenever a definition is created, changed or deleted.
    fingerprint: Fingerprint,
    ordered: Vec<Definition>,
    /// The events any definition looks at (others are not loaded), and those some definition
    /// filters by property (only their bodies are parsed).
    select: EventSelection,
    /// Position in `ordered` of each definition, by name: `in_segment` reads earlier decisions.
    position: HashMap<String, usize>,
    /// What can change each definition's answer, by position in `ordered`.
    deps: Vec<Dependencies>,
    /// Positions of the earlier definitions each one reads through `in_segment`.
    reads: Vec<Vec<usize>>,
}

impl Definitions {
    fn from_defs(fingerprint: Fingerprint, defs: Vec<Definition>) -> Definitions {
        let names = defs
            .iter()
            .flat_map(|d| referenced_events(&d.condition))
            .collect();
        let mut bodies = HashSet::new();
        for d in &defs {
            collect_filtered_names(&d.condition, &mut bodies);
        }
        // Stores list definitions in this order already; ordering again costs nothing and
        // keeps `in_segment` right whatever a store does.
        let ordered = evaluation_order(defs, |d| &d.name, |d| &d.condition);
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
            select: EventSelection { names, bodies },
            position,
            deps,
            reads,
        }
    }

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

/// One customer to decide: the definitions to decide (by position) and the events they read.
struct Subject<'a> {
    customer: CustomerId,
    affected: &'a [bool],
    events: &'a [EventRecord],
}

/// Decides the affected definitions for one customer: (segment ID, member) in evaluation order.
fn decide(
    read: &mut impl MembershipSnapshot,
    subject: &Subject<'_>,
    now: DateTime<Utc>,
    definitions: &Definitions,
) -> Result<Vec<Decision>, MembershipError> {
    let customer = subject.customer;
    let needed = |pick: fn(&Dependencies) -> bool| {
        definitions
            .deps
            .iter()
            .zip(subject.affected)
            .any(|(d, &hit)| hit && pick(d))
    };
    let traits = if needed(|d| d.traits) {
        read.traits(customer)?
    } else {
        Map::new()
    };
    let computed = read.computed(customer, now)?;
    let view = CustomerView::new(&traits, &computed, subject.events);
    // Definitions left alone are read through `in_segment` as the customer's membership now.
    let current: HashSet<i64> = if needed(|d| !d.segments.is_empty()) {
        read.memberships(customer)?
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
    through: Position,
    /// (time in µs, inbox offset) of each event in `events`: their order.
    keys: Vec<(i64, i64)>,
    /// The events whose names some definition looks at, by time then position, with their
    /// properties when some definition filters that name by property.
    events: Vec<EventRecord>,
}

impl EventCache {
    fn of(
        &mut self,
        read: &mut impl MembershipSnapshot,
        customer: CustomerId,
        definitions: &Definitions,
    ) -> Result<&[EventRecord], MembershipError> {
        if self.customers.len() >= EVENT_CACHE_CUSTOMERS && !self.customers.contains_key(&customer)
        {
            self.customers.clear();
        }
        let cached = self.customers.entry(customer).or_default();
        if definitions.select.names.is_empty() {
            return Ok(&cached.events);
        }
        let CustomerEvents {
            through,
            keys,
            events,
        } = cached;
        *through = read.events_after(
            customer,
            *through,
            &definitions.select,
            |e: StoredEvent<'_>| {
                let key = (e.timestamp.timestamp_micros(), e.position.offset());
                // Parsing the body is most of the cost; only property filters need it.
                let properties = e.body.map(properties_of).unwrap_or_default();
                let at = keys.partition_point(|&k| k <= key);
                keys.insert(at, key);
                events.insert(
                    at,
                    EventRecord {
                        name: e.name.to_string(),
                        timestamp: e.timestamp,
                        properties,
                    },
                );
            },
        )?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn definitions(conditions: &[(&str, Value)]) -> Definitions {
        let defs = conditions
            .iter()
            .enumerate()
            .map(|(i, (name, condition))| Definition {
                id: i as i64 + 1,
                name: name.to_string(),
                condition: Condition::from_value(condition.clone()).unwrap(),
            })
            .collect();
        Definitions::from_defs(Fingerprint::default(), defs)
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
