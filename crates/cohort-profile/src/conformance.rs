//! The behaviour every [`ProfileStore`] implementation must have, as one suite of tests.
//!
//! An implementation's crate runs the whole suite with [`profile_store_conformance_suite!`],
//! given a [`ProfileStoreHarness`]: how to open its store in a directory (the same directory
//! again means a restart) and how to read back what the store holds there:
//!
//! ```ignore
//! struct Sqlite;
//! impl cohort_profile::conformance::ProfileStoreHarness for Sqlite {
//!     type Store = cohort_store::SqliteProfileStore;
//!     fn open(&self, dir: &Path) -> Self::Store { /* … */ }
//!     fn contents(&self, dir: &Path) -> Contents { /* … */ }
//! }
//! cohort_profile::profile_store_conformance_suite!(Sqlite);
//! ```
//!
//! Some behaviours drive the trait directly; others run the processor's batch application over
//! the store, as the processor does. Each is also a public function, so a failing one can be
//! run alone.

use crate::processor::{IdentityCache, apply_batch};
use crate::{CustomerStats, NewEvent, ProcessorConfig, ProfileBatch, ProfileRules, ProfileStore};
use crate::{StatsDeltas, day_of};
use cohort_core::message::event_key;
use cohort_core::{CustomerId, IdKind, Identifier, InboxEntry, Position};
use cohort_identity::IdentityGraph;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Opens the store under test and reads back what it holds.
pub trait ProfileStoreHarness {
    type Store: ProfileStore;
    /// Opens the store kept in `dir`: empty the first time, as it was left after that.
    fn open(&self, dir: &Path) -> Self::Store;
    /// Everything committed to the store kept in `dir`. Trait values are compared as JSON; the
    /// suite only uses strings that do not read as other JSON, so a store may keep them bare.
    fn contents(&self, dir: &Path) -> Contents;
}

/// What a store holds, as the suite compares it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Contents {
    /// By the offset of their inbox position.
    pub events: BTreeMap<i64, StoredEvent>,
    pub identities: BTreeMap<Identifier, CustomerId>,
    /// (merged-away customer, survivor, the identifier that linked them), in order.
    pub merges: Vec<(CustomerId, CustomerId, Identifier)>,
    /// Customer → key → (value, time it was set).
    pub traits: BTreeMap<CustomerId, BTreeMap<String, (Value, i64)>>,
    pub stats: BTreeMap<CustomerId, CustomerStats>,
    /// (customer, event name) → (count, latest time).
    pub event_counts: BTreeMap<(CustomerId, String), (i64, i64)>,
    /// (customer, UTC day) → (revenue, orders).
    pub revenue_days: BTreeMap<(CustomerId, i64), (f64, i64)>,
}

/// One stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub customer: Option<CustomerId>,
    pub source_id: i64,
    pub message_id: String,
    pub kind: String,
    pub name: String,
    pub at: i64,
    pub received_at: i64,
    pub body: String,
}

impl Contents {
    /// A customer's identifiers counted by kind.
    pub fn kind_counts(&self, customer: CustomerId) -> HashMap<IdKind, usize> {
        let mut counts = HashMap::new();
        for (id, _) in self.identities.iter().filter(|(_, c)| **c == customer) {
            *counts.entry(id.kind.clone()).or_insert(0) += 1;
        }
        counts
    }
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

fn entry(seq: i64, message: Value) -> InboxEntry {
    InboxEntry {
        position: Position::new(0, seq),
        source_id: 1,
        received_at: 1_700_000_000_000_000,
        body: message.to_string(),
    }
}

fn event<'a>(entry: &'a InboxEntry, customer: Option<CustomerId>, name: &'a str) -> NewEvent<'a> {
    NewEvent {
        entry,
        customer,
        message_id: "m",
        kind: "track",
        name,
        at: 10,
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// (events, identities, events counted, revenue, event-name counts) in the store.
fn totals(contents: &Contents) -> (i64, i64, i64, f64, i64) {
    (
        contents.events.len() as i64,
        contents.identities.len() as i64,
        contents.stats.values().map(|s| s.events).sum(),
        contents.stats.values().map(|s| s.revenue).sum(),
        contents.event_counts.values().map(|(n, _)| n).sum(),
    )
}

fn anon(value: &str) -> Identifier {
    Identifier::new(IdKind::AnonymousId, value)
}

/// Creates a customer inside a batch.
fn customer<B: ProfileBatch>(batch: &mut B) -> CustomerId {
    batch
        .identity_graph(10)
        .create_customer()
        .expect("create a customer")
}

/// The processor crashed before it knew its batch was committed, and applies it again from the
/// same inbox positions with a cold cache: nothing changes, not even where two messages share a
/// message ID (each is kept under its own position).
pub fn a_batch_applied_again_after_a_crash_changes_nothing(harness: impl ProfileStoreHarness) {
    let dir = temp_dir();
    let mut store = harness.open(dir.path());
    // Two messages share a message ID: the inbox's dedup lets that through once its window
    // has passed, and both are kept, each under its own position.
    let batch = vec![
        entry(
            1,
            json!({"type": "identify", "userId": "u1", "anonymousId": "a1",
            "messageId": "m1", "traits": {"plan": "pro"}}),
        ),
        entry(
            2,
            json!({"type": "track", "userId": "u1", "event": "Order Completed",
            "messageId": "m2", "properties": {"revenue": 40}}),
        ),
        entry(
            3,
            json!({"type": "track", "anonymousId": "a1", "event": "Order Completed",
            "messageId": "m2", "properties": {"revenue": 2}}),
        ),
    ];
    let config = ProcessorConfig::default();
    let mut apply = |cache: &mut IdentityCache| {
        apply_batch(&mut store, &batch, &config, cache, Position::new(0, 3)).expect("apply");
    };
    apply(&mut IdentityCache::default());
    let once = totals(&harness.contents(dir.path()));
    assert_eq!(once, (3, 2, 3, 42.0, 3));
    // The processor crashed before it knew the batch was committed: it starts over from the
    // same inbox positions, with a cold cache.
    apply(&mut IdentityCache::default());
    assert_eq!(totals(&harness.contents(dir.path())), once);
}

/// The processor's cached identifier counts, which the per-kind limits read, stay equal to the
/// stored identities through attaches, refused merges and merges.
pub fn cached_identifier_counts_match_the_stored_identities_through_attaches_and_merges(
    harness: impl ProfileStoreHarness,
) {
    let dir = temp_dir();
    let mut store = harness.open(dir.path());
    let config = ProcessorConfig::default();
    let mut cache = IdentityCache::default();
    let messages = [
        // An anonymous visit, then sign-up on that device and a second device.
        json!({"type": "track", "anonymousId": "a1", "event": "Viewed"}),
        json!({"type": "identify", "userId": "u1", "anonymousId": "a1",
                           "traits": {"email": "one@example.com"}}),
        json!({"type": "track", "userId": "u1", "anonymousId": "a2", "event": "Viewed"}),
        // A second customer on the first one's device: the merge is refused, every time.
        json!({"type": "track", "userId": "u2", "anonymousId": "a3", "event": "Viewed"}),
        json!({"type": "track", "userId": "u2", "anonymousId": "a1", "event": "Viewed"}),
        json!({"type": "track", "userId": "u2", "anonymousId": "a1", "event": "Viewed"}),
        // Two anonymous customers joined by an email: a merge.
        json!({"type": "identify", "anonymousId": "a4", "traits": {"email": "x@example.com"}}),
        json!({"type": "track", "anonymousId": "a5", "event": "Viewed"}),
        json!({"type": "identify", "anonymousId": "a5", "traits": {"email": "x@example.com"}}),
        json!({"type": "track", "anonymousId": "a5", "userId": "u3", "event": "Viewed"}),
    ];
    for (i, message) in messages.into_iter().enumerate() {
        let mut message = message;
        message["messageId"] = format!("m{i}").into();
        let seq = i as i64 + 1;
        apply_batch(
            &mut store,
            &[entry(seq, message)],
            &config,
            &mut cache,
            Position::new(0, seq),
        )
        .expect("apply");
    }
    let contents = harness.contents(dir.path());
    let merges = contents.merges.len();
    assert_eq!(merges, 1);
    // Four customers were created; the merged-away one's counts moved to its survivor.
    assert_eq!(cache.kinds.len(), 3, "cached counts: {:?}", cache.kinds);
    for (&customer, cached) in &cache.kinds {
        let stored = contents.kind_counts(customer);
        let cached: HashMap<IdKind, usize> = cached
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        assert_eq!(cached, stored, "customer {customer}");
    }
}

/// An event is stored once per inbox position: storing that position again, in the same batch
/// or a later one, is refused and changes nothing.
pub fn events_are_stored_once_per_position(harness: impl ProfileStoreHarness) {
    let dir = temp_dir();
    let mut store = harness.open(dir.path());
    let first = entry(1, json!({"type": "track", "event": "A", "messageId": "m"}));
    let other_body = entry(1, json!({"type": "track", "event": "B", "messageId": "n"}));
    let mut batch = store.begin().expect("begin");
    let c = customer(&mut batch);
    assert!(
        batch
            .insert_event(&event(&first, Some(c), "A"))
            .expect("insert")
    );
    assert!(
        !batch
            .insert_event(&event(&other_body, None, "B"))
            .expect("insert")
    );
    batch.commit(Position::new(0, 1)).expect("commit");
    let mut batch = store.begin().expect("begin");
    assert!(
        !batch
            .insert_event(&event(&first, Some(c), "A"))
            .expect("insert")
    );
    batch.commit(Position::new(0, 1)).expect("commit");

    let contents = harness.contents(dir.path());
    let expected = StoredEvent {
        customer: Some(c),
        source_id: 1,
        message_id: "m".into(),
        kind: "track".into(),
        name: "A".into(),
        at: 10,
        received_at: first.received_at,
        body: first.body.clone(),
    };
    assert_eq!(contents.events, BTreeMap::from([(1, expected)]));
}

/// A trait keeps the value set at the latest event time, whatever order the sets arrive in;
/// of two sets at the same time the later arrival wins.
pub fn newer_traits_win_whatever_the_arrival_order(harness: impl ProfileStoreHarness) {
    let dir = temp_dir();
    let mut store = harness.open(dir.path());
    let mut batch = store.begin().expect("begin");
    let c = customer(&mut batch);
    batch
        .set_traits(c, &object(json!({"plan": "pro"})), 200)
        .expect("set traits");
    batch
        .set_traits(c, &object(json!({"plan": "basic", "city": "Paris"})), 100)
        .expect("set traits");
    batch.commit(Position::new(0, 1)).expect("commit");
    let mut batch = store.begin().expect("begin");
    batch
        .set_traits(c, &object(json!({"plan": "team"})), 200)
        .expect("set traits");
    batch
        .set_traits(c, &object(json!({"city": "Lyon"})), 50)
        .expect("set traits");
    batch.commit(Position::new(0, 2)).expect("commit");

    let traits = harness.contents(dir.path()).traits;
    let expected = BTreeMap::from([
        ("plan".to_string(), (json!("team"), 200)),
        ("city".to_string(), (json!("Paris"), 100)),
    ]);
    assert_eq!(traits, BTreeMap::from([(c, expected)]));
}

const DAY: i64 = 86_400_000_000;

fn track(event: &str, revenue: Option<f64>) -> Map<String, Value> {
    let mut msg = object(json!({"type": "track", "event": event}));
    if let Some(revenue) = revenue {
        msg.insert("properties".into(), json!({ "revenue": revenue }));
    }
    msg
}

fn add(deltas: &mut StatsDeltas, customer: CustomerId, msg: &Map<String, Value>, at: i64) {
    deltas.add(customer, msg, event_key(msg), at, &ProfileRules::default());
}

/// Computed-trait changes added in several batches add up: counts and revenue summed, first
/// seen the earliest, last seen the latest, per customer, event name and day.
pub fn computed_trait_deltas_add_up(harness: impl ProfileStoreHarness) {
    let dir = temp_dir();
    let mut store = harness.open(dir.path());
    let order = "Order Completed";
    let mut batch = store.begin().expect("begin");
    let (c, d) = (customer(&mut batch), customer(&mut batch));
    let mut deltas = StatsDeltas::default();
    add(&mut deltas, c, &track("A", None), 100);
    add(&mut deltas, c, &track(order, Some(10.0)), 200);
    add(&mut deltas, d, &track("A", None), 70);
    batch.add_stats(&deltas).expect("add stats");
    batch.commit(Position::new(0, 3)).expect("commit");

    let mut batch = store.begin().expect("begin");
    let mut deltas = StatsDeltas::default();
    add(&mut deltas, c, &track(order, Some(5.0)), 50);
    add(&mut deltas, c, &track("A", None), 300);
    add(&mut deltas, c, &track(order, Some(1.0)), 2 * DAY + 1);
    batch.add_stats(&deltas).expect("add stats");
    batch.commit(Position::new(0, 6)).expect("commit");

    let contents = harness.contents(dir.path());
    let stats = |first_seen, last_seen, events, orders, revenue, last_order_at| CustomerStats {
        first_seen,
        last_seen,
        events,
        orders,
        revenue,
        last_order_at,
    };
    assert_eq!(
        contents.stats,
        BTreeMap::from([
            (c, stats(50, 2 * DAY + 1, 5, 3, 16.0, Some(2 * DAY + 1))),
            (d, stats(70, 70, 1, 0, 0.0, None)),
        ])
    );
    assert_eq!(
        contents.event_counts,
        BTreeMap::from([
            ((c, "A".to_string()), (2, 300)),
            ((c, order.to_string()), (3, 2 * DAY + 1)),
            ((d, "A".to_string()), (1, 70)),
        ])
    );
    assert_eq!(
        contents.revenue_days,
        BTreeMap::from([
            ((c, day_of(50)), (15.0, 2)),
            ((c, day_of(2 * DAY + 1)), (1.0, 1))
        ])
    );
}

/// Folding a merged-away customer moves its traits (the later set wins; a tie keeps the
/// survivor's), computed traits (added up) and events to the survivor, and leaves nothing
/// under the merged-away customer.
pub fn folding_moves_everything_to_the_survivor(harness: impl ProfileStoreHarness) {
    let dir = temp_dir();
    let mut store = harness.open(dir.path());
    let mut batch = store.begin().expect("begin");
    let (a, b) = (customer(&mut batch), customer(&mut batch));
    let set = |traits: Value| object(traits);
    batch
        .set_traits(a, &set(json!({"plan": "pro"})), 100)
        .expect("set traits");
    batch
        .set_traits(a, &set(json!({"city": "Paris"})), 300)
        .expect("set traits");
    batch
        .set_traits(
            b,
            &set(json!({"plan": "team", "email": "x@example.org"})),
            200,
        )
        .expect("set traits");
    batch
        .set_traits(b, &set(json!({"city": "Lyon"})), 300)
        .expect("set traits");
    let entries = [
        entry(1, json!({"type": "track", "event": "A"})),
        entry(2, json!({"type": "track", "event": "A"})),
        entry(3, json!({"type": "track", "event": "Order Completed"})),
    ];
    for (e, owner) in entries.iter().zip([a, b, b]) {
        assert!(
            batch
                .insert_event(&event(e, Some(owner), "A"))
                .expect("insert")
        );
    }
    let mut deltas = StatsDeltas::default();
    add(&mut deltas, a, &track("A", None), 100);
    add(&mut deltas, b, &track("A", None), 400);
    add(&mut deltas, b, &track("Order Completed", Some(10.0)), 50);
    batch.add_stats(&deltas).expect("add stats");
    batch.commit(Position::new(0, 3)).expect("commit");

    let mut batch = store.begin().expect("begin");
    batch.fold(b, a).expect("fold");
    batch.commit(Position::new(0, 3)).expect("commit");

    let contents = harness.contents(dir.path());
    let expected_traits = BTreeMap::from([
        ("plan".to_string(), (json!("team"), 200)),
        ("city".to_string(), (json!("Paris"), 300)),
        ("email".to_string(), (json!("x@example.org"), 200)),
    ]);
    assert_eq!(contents.traits, BTreeMap::from([(a, expected_traits)]));
    let stats = CustomerStats {
        first_seen: 50,
        last_seen: 400,
        events: 3,
        orders: 1,
        revenue: 10.0,
        last_order_at: Some(50),
    };
    assert_eq!(contents.stats, BTreeMap::from([(a, stats)]));
    assert_eq!(
        contents.event_counts,
        BTreeMap::from([
            ((a, "A".to_string()), (2, 400)),
            ((a, "Order Completed".to_string()), (1, 50)),
        ])
    );
    assert_eq!(
        contents.revenue_days,
        BTreeMap::from([((a, day_of(50)), (10.0, 1))])
    );
    assert!(contents.events.values().all(|e| e.customer == Some(a)));
    assert_eq!(contents.events.len(), 3);
}

/// The applied position is recorded by the commit that applied it, and read back after a
/// restart; a new store has applied nothing.
pub fn the_applied_position_is_recorded_with_the_commit_and_survives_reopening(
    harness: impl ProfileStoreHarness,
) {
    let dir = temp_dir();
    {
        let mut store = harness.open(dir.path());
        assert_eq!(store.applied().expect("applied"), Position::default());
        let mut batch = store.begin().expect("begin");
        let e = entry(7, json!({"type": "track", "event": "A"}));
        assert!(batch.insert_event(&event(&e, None, "A")).expect("insert"));
        batch.commit(Position::new(0, 7)).expect("commit");
        assert_eq!(store.applied().expect("applied"), Position::new(0, 7));
    }
    let store = harness.open(dir.path());
    assert_eq!(store.applied().expect("applied"), Position::new(0, 7));
    assert_eq!(harness.contents(dir.path()).events.len(), 1);
}

/// A batch dropped without a commit leaves nothing: no customer state, no identity, no event,
/// no applied position; and the same positions can be applied afterwards.
pub fn a_batch_that_is_not_committed_leaves_nothing(harness: impl ProfileStoreHarness) {
    let dir = temp_dir();
    let mut store = harness.open(dir.path());
    let e = entry(1, json!({"type": "identify", "anonymousId": "a1"}));
    {
        let mut batch = store.begin().expect("begin");
        let c = {
            let mut graph = batch.identity_graph(10);
            let c = graph.create_customer().expect("create a customer");
            graph.attach(c, &anon("a1")).expect("attach");
            c
        };
        assert!(
            batch
                .insert_event(&event(&e, Some(c), "A"))
                .expect("insert")
        );
        batch
            .set_traits(c, &object(json!({"plan": "pro"})), 10)
            .expect("set traits");
        let mut deltas = StatsDeltas::default();
        add(&mut deltas, c, &track("A", None), 10);
        batch.add_stats(&deltas).expect("add stats");
        // Dropped here: the processor failed half-way.
    }
    assert_eq!(harness.contents(dir.path()), Contents::default());
    assert_eq!(store.applied().expect("applied"), Position::default());
    let mut batch = store.begin().expect("begin");
    assert!(batch.insert_event(&event(&e, None, "A")).expect("insert"));
    assert_eq!(
        batch
            .identity_graph(10)
            .lookup(&anon("a1"))
            .expect("lookup"),
        None
    );
    batch.commit(Position::new(0, 1)).expect("commit");
    assert_eq!(harness.contents(dir.path()).events.len(), 1);
}

/// Runs every behaviour of the suite as a test of its own. See the module documentation.
#[macro_export]
macro_rules! profile_store_conformance_suite {
    ($harness:expr) => {
        mod profile_store_conformance {
            use super::*;
            use $crate::conformance as suite;

            #[test]
            fn a_batch_applied_again_after_a_crash_changes_nothing() {
                suite::a_batch_applied_again_after_a_crash_changes_nothing($harness)
            }
            #[test]
            fn cached_identifier_counts_match_the_stored_identities_through_attaches_and_merges() {
                suite::cached_identifier_counts_match_the_stored_identities_through_attaches_and_merges($harness)
            }
            #[test]
            fn events_are_stored_once_per_position() {
                suite::events_are_stored_once_per_position($harness)
            }
            #[test]
            fn newer_traits_win_whatever_the_arrival_order() {
                suite::newer_traits_win_whatever_the_arrival_order($harness)
            }
            #[test]
            fn computed_trait_deltas_add_up() {
                suite::computed_trait_deltas_add_up($harness)
            }
            #[test]
            fn folding_moves_everything_to_the_survivor() {
                suite::folding_moves_everything_to_the_survivor($harness)
            }
            #[test]
            fn the_applied_position_is_recorded_with_the_commit_and_survives_reopening() {
                suite::the_applied_position_is_recorded_with_the_commit_and_survives_reopening(
                    $harness,
                )
            }
            #[test]
            fn a_batch_that_is_not_committed_leaves_nothing() {
                suite::a_batch_that_is_not_committed_leaves_nothing($harness)
            }
        }
    };
}
