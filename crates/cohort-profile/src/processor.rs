//! The processor: applies inbox entries, in inbox order, to the customer state of a
//! [`ProfileStore`].
//!
//! Each batch of entries is one [`ProfileBatch`], committed with the position of its last entry:
//! a crash rolls the whole batch back and processing restarts from the recorded position, and an
//! event is stored under its inbox position, so a message applied twice changes nothing.
//!
//! For each entry: its identifiers (and an alias's `previousId`) are resolved to one customer
//! with [`cohort_identity::resolve`], over the batch's identity graph behind an [`IdentityCache`];
//! merged-away customers are folded into their survivors; the event is stored; an `identify`'s
//! traits are set, newest by event time winning; and its computed-trait changes are summed in
//! [`StatsDeltas`], written once per batch.
//!
//! [`Processor::run`] is the loop. It does not start a thread: its caller runs it on one and
//! stops it with the flag it passes:
//!
//! ```ignore
//! let mut processor = Processor::new(profile_store, inbox, ProcessorConfig::default());
//! let stop = Arc::new(AtomicBool::new(false));
//! let flag = stop.clone();
//! let thread = std::thread::spawn(move || processor.run(&flag));
//! // … later
//! stop.store(true, Ordering::Release);
//! thread.join();
//! ```

use crate::store::{NewEvent, ProfileBatch, ProfileStore};
use crate::{ProfileRules, day_of, stored_message};
use cohort_core::message::{event_key, identifiers, parse_timestamp, previous_id};
use cohort_core::{CustomerId, IdKind, Identifier, Inbox, InboxEntry, Position};
use cohort_identity::{
    IdentityGraph, IdentityRules, ResolveError, resolve, resolve_untrusted_traits,
};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What the processor is told.
#[derive(Clone)]
pub struct ProcessorConfig {
    pub identity: IdentityRules,
    pub profile: ProfileRules,
    /// Most entries applied per batch (one transaction); the processor takes whatever is waiting
    /// up to this. Large transactions are much cheaper per entry under load.
    pub batch: usize,
    /// Which sources' trait identifiers may not claim known customers.
    pub trust: Arc<dyn SourceTrust>,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            identity: IdentityRules::default(),
            profile: ProfileRules::default(),
            batch: 32_768,
            trust: Arc::new(TrustEverySource),
        }
    }
}

impl std::fmt::Debug for ProcessorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessorConfig")
            .field("identity", &self.identity)
            .field("profile", &self.profile)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

/// How far the processor trusts what a source says about who a customer is. A client-side
/// source (a web page or an app, whose write key anyone can read) may join its visitor to a
/// user, but its email, phone and external IDs may not claim a customer somebody else already
/// is (`cohort_identity::resolve_untrusted_traits`), unless the operator allows it.
pub trait SourceTrust: Send + Sync {
    /// True when the trait identifiers of `source_id`'s messages may not claim known customers.
    fn restricts_traits(&self, source_id: i64) -> bool;
}

/// Every source is trusted (server-side sources only, and tests).
pub struct TrustEverySource;

impl SourceTrust for TrustEverySource {
    fn restricts_traits(&self, _: i64) -> bool {
        false
    }
}

/// The processor loop over one store and one inbox. See the module documentation.
pub struct Processor<S: ProfileStore> {
    store: S,
    inbox: Arc<dyn Inbox>,
    config: ProcessorConfig,
    cache: IdentityCache,
}

/// How long a failed read or batch waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// How long an idle processor waits for the inbox before it looks again: other processes
/// (`cohort import`) may append too, and their commits do not wake this one.
const IDLE_POLL: Duration = Duration::from_millis(100);

impl<S: ProfileStore> Processor<S> {
    pub fn new(store: S, inbox: Arc<dyn Inbox>, config: ProcessorConfig) -> Self {
        Self {
            store,
            inbox,
            config: ProcessorConfig {
                batch: config.batch.max(1),
                ..config
            },
            cache: IdentityCache::default(),
        }
    }

    /// Applies the inbox from the store's applied position until `stop` is set, acknowledging
    /// each batch to the inbox once it is committed. Errors are logged and retried: the loop
    /// only returns when told to stop.
    pub fn run(&mut self, stop: &AtomicBool) {
        let mut position = loop {
            match self.store.applied() {
                Ok(p) => break p,
                Err(e) => {
                    tracing::error!(error = %e, "reading the applied position failed; retrying");
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    std::thread::sleep(RETRY_AFTER);
                }
            }
        };
        while !stop.load(Ordering::Acquire) {
            self.store.between_batches();
            let entries = match self.inbox.read_after(position, self.config.batch) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "reading the inbox failed; retrying");
                    std::thread::sleep(RETRY_AFTER);
                    continue;
                }
            };
            let Some(last) = entries.last().map(|e| e.position) else {
                self.inbox.wait_committed_past(position, IDLE_POLL);
                continue;
            };
            let started = Instant::now();
            match apply_batch(
                &mut self.store,
                &entries,
                &self.config,
                &mut self.cache,
                last,
            ) {
                Ok(()) => {
                    position = last;
                    self.inbox.acknowledge(last);
                    metrics::counter!("cohort_events_processed_total")
                        .increment(entries.len() as u64);
                    metrics::histogram!("cohort_apply_batch_seconds")
                        .record(started.elapsed().as_secs_f64());
                }
                Err(e) => {
                    // The batch rolled back, so the cache may name rows that do not exist.
                    self.cache.clear();
                    tracing::error!(error = %e, from = %position, "applying a batch failed; retrying");
                    std::thread::sleep(RETRY_AFTER);
                }
            }
        }
    }
}

/// Applies `entries` in one batch and commits it with `last`. On error nothing is committed,
/// and the caller must clear `cache`.
pub(crate) fn apply_batch<S: ProfileStore>(
    store: &mut S,
    entries: &[InboxEntry],
    config: &ProcessorConfig,
    cache: &mut IdentityCache,
    last: Position,
) -> Result<(), S::Error> {
    let mut batch = store.begin()?;
    let mut deltas = StatsDeltas::default();
    for entry in entries {
        apply_one(&mut batch, entry, config, cache, &mut deltas)?;
    }
    batch.add_stats(&deltas)?;
    batch.commit(last)
}

fn apply_one<B: ProfileBatch>(
    batch: &mut B,
    entry: &InboxEntry,
    config: &ProcessorConfig,
    cache: &mut IdentityCache,
    deltas: &mut StatsDeltas,
) -> Result<(), B::Error> {
    let Some(msg) = stored_message::parse(&entry.body) else {
        // The inbox only holds messages the collector serialised, so this is corruption; keep
        // the raw body as an unattributed event rather than lose it.
        tracing::error!(position = %entry.position, "inbox entry is not a JSON object");
        let name = event_key(&Map::new());
        let event = NewEvent {
            entry,
            customer: None,
            message_id: "",
            kind: "",
            name: &name,
            at: entry.received_at,
        };
        return batch.insert_event(&event).map(|_| ());
    };
    let ts = msg
        .get("timestamp")
        .and_then(parse_timestamp)
        .map(|t| t.timestamp_micros())
        .unwrap_or(entry.received_at);

    let mut ids = identifiers(&msg);
    let mut graph = CachedGraph {
        raw: batch.identity_graph(ts),
        cache,
    };
    if let Some(previous) = previous_id(&msg) {
        ids.push(previous_identifier(&mut graph, previous)?);
    }
    let resolved = if config.trust.restricts_traits(entry.source_id) {
        let (trusted, traits): (Vec<Identifier>, Vec<Identifier>) = ids
            .into_iter()
            .partition(|id| matches!(id.kind, IdKind::UserId | IdKind::AnonymousId));
        resolve_untrusted_traits(&config.identity, &mut graph, &trusted, &traits)
    } else {
        resolve(&config.identity, &mut graph, &ids)
    };
    drop(graph);
    let customer = match resolved {
        Ok(resolution) => {
            if !resolution.merged.is_empty() {
                // Folding moves stored rows, so pending deltas must be stored first.
                batch.add_stats(deltas)?;
                deltas.clear();
            }
            for (from, into) in &resolution.merged {
                batch.fold(*from, *into)?;
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

    let kind = msg.get("type").and_then(Value::as_str).unwrap_or("");
    let name = event_key(&msg);
    let event = NewEvent {
        entry,
        customer,
        message_id: msg.get("messageId").and_then(Value::as_str).unwrap_or(""),
        kind,
        name: &name,
        at: ts,
    };
    if !batch.insert_event(&event)? {
        return Ok(()); // Already applied: a replay changes nothing.
    }
    let Some(customer) = customer else {
        metrics::counter!("cohort_events_unattributed_total").increment(1);
        return Ok(());
    };
    if kind == "identify" {
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
            batch.set_traits(customer, traits, ts)?;
        }
    }
    deltas.add(customer, &msg, name, ts, &config.profile);
    Ok(())
}

/// An alias's previousId is whatever it was used as before: a user ID or an anonymous ID.
fn previous_identifier<G: IdentityGraph>(
    graph: &mut G,
    value: String,
) -> Result<Identifier, G::Error> {
    let as_user = Identifier::new(IdKind::UserId, value);
    if graph.lookup(&as_user)?.is_some() {
        return Ok(as_user);
    }
    Ok(Identifier::new(IdKind::AnonymousId, as_user.value))
}

/// One customer's computed-trait changes (or, read back from a store, its computed traits).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CustomerStats {
    /// Earliest and latest event time, in microseconds since the Unix epoch.
    pub first_seen: i64,
    pub last_seen: i64,
    pub events: i64,
    pub orders: i64,
    pub revenue: f64,
    pub last_order_at: Option<i64>,
}

/// Computed-trait changes of one batch, summed in memory and written once per customer at the end
/// of the batch ([`ProfileBatch::add_stats`]): a busy customer's hundred events cost one upsert,
/// not a hundred.
#[derive(Debug, Default)]
pub struct StatsDeltas {
    customers: HashMap<CustomerId, CustomerStats>,
    /// (customer, event name) → (count, latest time).
    counts: HashMap<(CustomerId, String), (i64, i64)>,
    /// (customer, UTC day) → (revenue, orders).
    revenue_days: HashMap<(CustomerId, i64), (f64, i64)>,
}

impl StatsDeltas {
    /// Counts one event of `customer` at `ts`, named `name` ([`event_key`]).
    pub fn add(
        &mut self,
        customer: CustomerId,
        msg: &Map<String, Value>,
        name: String,
        ts: i64,
        profile: &ProfileRules,
    ) {
        let order = profile.order_revenue(msg);
        let c = self.customers.entry(customer).or_insert(CustomerStats {
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
        let count = self.counts.entry((customer, name)).or_insert((0, ts));
        count.0 += 1;
        count.1 = count.1.max(ts);
    }

    /// Each customer's summed changes.
    pub fn customers(&self) -> impl Iterator<Item = (CustomerId, &CustomerStats)> {
        self.customers.iter().map(|(c, d)| (*c, d))
    }

    /// (customer, event name, count, latest time) of each name counted.
    pub fn event_counts(&self) -> impl Iterator<Item = (CustomerId, &str, i64, i64)> {
        self.counts
            .iter()
            .map(|((c, name), (count, last))| (*c, name.as_str(), *count, *last))
    }

    /// (customer, UTC day as days since 1970, revenue, orders) of each day with orders.
    pub fn revenue_days(&self) -> impl Iterator<Item = (CustomerId, i64, f64, i64)> {
        self.revenue_days
            .iter()
            .map(|((c, day), (revenue, orders))| (*c, *day, *revenue, *orders))
    }

    pub fn is_empty(&self) -> bool {
        self.customers.is_empty()
    }

    /// Forgets every change, keeping the memory for the next ones.
    pub fn clear(&mut self) {
        self.customers.clear();
        self.counts.clear();
        self.revenue_days.clear();
    }
}

/// Identifier owners seen recently, so a returning customer's events need no identity query.
/// Merges are rare, so instead of rewriting cached owners a merge is remembered and followed.
///
/// Also each recently seen customer's identifiers counted by kind, which the per-kind limits
/// read whenever an event brings an identifier the customer lacks. A shared device asks again on
/// every event (its anonymous ID belongs to another customer), so these must not cost a query.
/// Only the processor writes identities, so the counts stay exact; after a batch fails the cache
/// must be cleared, since it may name rows the rollback removed.
#[derive(Default)]
pub(crate) struct IdentityCache {
    owners: HashMap<Identifier, CustomerId>,
    merged_into: HashMap<CustomerId, CustomerId>,
    pub(crate) kinds: HashMap<CustomerId, HashMap<IdKind, usize>>,
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

    pub(crate) fn clear(&mut self) {
        self.owners.clear();
        self.merged_into.clear();
        self.kinds.clear();
    }
}

/// A batch's identity graph behind the [`IdentityCache`].
struct CachedGraph<'c, G> {
    raw: G,
    cache: &'c mut IdentityCache,
}

impl<G: IdentityGraph> IdentityGraph for CachedGraph<'_, G> {
    type Error = G::Error;

    fn lookup(&mut self, id: &Identifier) -> Result<Option<CustomerId>, G::Error> {
        if let Some(c) = self.cache.get(id) {
            return Ok(Some(c));
        }
        let found = self.raw.lookup(id)?;
        if let Some(c) = found {
            self.cache.put(id, c);
        }
        Ok(found)
    }

    fn kind_counts(&mut self, customer: CustomerId) -> Result<HashMap<IdKind, usize>, G::Error> {
        if let Some(kinds) = self.cache.kinds.get(&customer) {
            return Ok(kinds.clone());
        }
        let kinds = self.raw.kind_counts(customer)?;
        self.cache.put_kinds(customer, kinds.clone());
        Ok(kinds)
    }

    fn create_customer(&mut self) -> Result<CustomerId, G::Error> {
        let customer = self.raw.create_customer()?;
        self.cache.put_kinds(customer, HashMap::new());
        Ok(customer)
    }

    fn attach(&mut self, customer: CustomerId, id: &Identifier) -> Result<(), G::Error> {
        self.raw.attach(customer, id)?;
        self.cache.put(id, customer);
        self.cache.attached(customer, id);
        Ok(())
    }

    fn merge(
        &mut self,
        from: CustomerId,
        into: CustomerId,
        because: &Identifier,
    ) -> Result<(), G::Error> {
        self.raw.merge(from, into, because)?;
        self.cache.merged(from, into);
        Ok(())
    }
}
