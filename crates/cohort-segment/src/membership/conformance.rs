//! The behaviour every [`MembershipStore`] implementation must have, as one suite of tests.
//!
//! A membership store reads state that other parts of the pipeline write (definitions, applied
//! events, merges, the re-evaluation queue), so an implementation's crate hands the suite a
//! [`Fixture`]: its store plus the few writes and reads the suite needs to arrange and check a
//! case. It runs the whole suite with
//! [`membership_store_conformance_suite!`](crate::membership_store_conformance_suite), given a
//! function that opens a fixture in an empty directory:
//!
//! ```ignore
//! cohort_segment::membership_store_conformance_suite!(|dir: &std::path::Path| {
//!     MyFixture::open(dir)
//! });
//! ```
//!
//! Each behaviour is also a public function, so a failing one can be run alone.

use super::{
    Cursor, Decisions, EventSelection, MembershipSnapshot, MembershipStore, Merge, StoredEvent,
};
use crate::Condition;
use chrono::Utc;
use cohort_core::{CustomerId, Position};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;

/// A store under test with what the suite needs around it.
pub trait Fixture {
    type Store: MembershipStore;

    /// A handle on the store under test, as the engine would be given one. Two handles may be
    /// open at once and see each other's committed writes.
    fn store(&self) -> Self::Store;

    /// Stores a definition (named, with a valid condition); returns its ID.
    fn define(&self, name: &str, condition: Value) -> i64;

    /// Applies Segment-spec messages as the processor does (identity, traits, events, merges),
    /// and returns the position applied.
    fn apply(&self, messages: &[Value]) -> Position;

    /// The customer an identifier (`user_id` or `anonymous_id`) names now.
    fn customer(&self, kind: &str, value: &str) -> CustomerId;

    /// Queues customers for re-evaluation, as a trait change outside event processing does.
    fn queue(&self, customers: &[CustomerId]);

    /// The customer's entries and exits, oldest first: (segment ID, entered, reason).
    fn history(&self, customer: CustomerId) -> Vec<(i64, bool, String)>;
}

/// Opens a fixture over an empty directory.
pub trait OpenFixture {
    type Fixture: Fixture;
    fn open(&self, dir: &Path) -> Self::Fixture;
}

impl<X: Fixture, F: Fn(&Path) -> X> OpenFixture for F {
    type Fixture = X;
    fn open(&self, dir: &Path) -> X {
        self(dir)
    }
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

fn message(kind: &str, who: (&str, &str), id: &str, extra: Value) -> Value {
    let mut m = json!({"type": kind, "messageId": id, "timestamp": Utc::now().to_rfc3339()});
    m[who.0] = json!(who.1);
    if let (Some(m), Value::Object(extra)) = (m.as_object_mut(), extra) {
        m.extend(extra);
    }
    m
}

fn track(user: &str, event: &str, id: &str, properties: Value) -> Value {
    message(
        "track",
        ("userId", user),
        id,
        json!({"event": event, "properties": properties}),
    )
}

fn identify(user: &str, id: &str, traits: Value) -> Value {
    message("identify", ("userId", user), id, json!({"traits": traits}))
}

fn exists(key: &str) -> Value {
    json!({"type": "trait", "key": key, "op": "exists"})
}

fn in_segment(name: &str) -> Value {
    json!({"type": "in_segment", "segment": name})
}

fn snapshot_of<S: MembershipStore, T>(
    store: &mut S,
    read: impl FnOnce(&mut S::Snapshot<'_>) -> T,
) -> T {
    let mut snapshot = store.snapshot().expect("a snapshot");
    let out = read(&mut snapshot);
    snapshot.finish().expect("finish the snapshot");
    out
}

fn changed_between<S: MembershipStore>(
    store: &mut S,
    after: Position,
    upto: Position,
) -> Vec<(CustomerId, String)> {
    let mut seen = Vec::new();
    snapshot_of(store, |s| {
        s.changed(after, upto, |c, name| seen.push((c, name.to_string())))
            .expect("changed")
    });
    seen.sort();
    seen
}

type Seen = Vec<(Position, String, Option<bool>)>;

/// A customer's selected events after `after`, sorted, each with whether its body names a
/// `sku` (`None` without a body), and the position `events_after` returned.
fn events_of(
    s: &mut impl MembershipSnapshot,
    customer: CustomerId,
    select: &EventSelection,
    after: Position,
) -> (Seen, Position) {
    let mut seen: Seen = Vec::new();
    let through = s
        .events_after(customer, after, select, |e: StoredEvent<'_>| {
            seen.push((
                e.position,
                e.name.to_string(),
                e.body.map(|b| b.contains("sku")),
            ))
        })
        .expect("events");
    seen.sort();
    (seen, through)
}

/// Definitions are listed each after the definitions it refers to, whatever their names, and
/// the fingerprint changes when one is created.
pub fn definitions_are_listed_in_dependency_order(open: impl OpenFixture) {
    let dir = temp_dir();
    let fixture = open.open(dir.path());
    let mut store = fixture.store();
    let empty = store.fingerprint().expect("fingerprint");
    let (fingerprint, defs) = store.definitions().expect("definitions");
    assert!(defs.is_empty());
    assert_eq!(fingerprint, empty);

    let z = fixture.define("z", exists("plan"));
    let a = fixture.define("a", in_segment("z"));
    let both = json!({"type": "and", "conditions": [in_segment("a"), in_segment("z")]});
    let m = fixture.define("m", both.clone());
    let (fingerprint, defs) = store.definitions().expect("definitions");
    assert_ne!(fingerprint, empty);
    assert_eq!(store.fingerprint().expect("fingerprint"), fingerprint);
    let listed: Vec<(i64, &str)> = defs.iter().map(|d| (d.id, d.name.as_str())).collect();
    assert_eq!(listed, vec![(z, "z"), (a, "a"), (m, "m")]);
    assert_eq!(
        defs[2].condition,
        Condition::from_value(both).expect("a condition")
    );
}

/// The cursor starts at the start. The customers of the events applied between two positions
/// are listed with each event's name (`$identify` for an identify call), and no others.
pub fn customers_changed_between_two_positions_are_listed(open: impl OpenFixture) {
    let dir = temp_dir();
    let fixture = open.open(dir.path());
    let mut store = fixture.store();
    let first = fixture.apply(&[
        track("ada", "Viewed", "m1", json!({})),
        identify("bob", "m2", json!({"plan": "pro"})),
    ]);
    let second = fixture.apply(&[track("ada", "Order Completed", "m3", json!({}))]);
    let (ada, bob) = (
        fixture.customer("user_id", "ada"),
        fixture.customer("user_id", "bob"),
    );
    let cursor = snapshot_of(&mut store, |s| s.cursor().expect("cursor"));
    assert_eq!(cursor, Cursor::default());
    assert_eq!(
        changed_between(&mut store, cursor.events, first),
        vec![(ada, "Viewed".to_string()), (bob, "$identify".to_string())]
    );
    assert_eq!(
        changed_between(&mut store, first, second),
        vec![(ada, "Order Completed".to_string())]
    );
    assert!(changed_between(&mut store, second, second).is_empty());
}

/// Queued customers are listed, at most `limit` of them, until a recorded round dequeues them.
pub fn queued_customers_wait_until_a_round_dequeues_them(open: impl OpenFixture) {
    let dir = temp_dir();
    let fixture = open.open(dir.path());
    let mut store = fixture.store();
    fixture.apply(&[
        identify("ada", "m1", json!({})),
        identify("bob", "m2", json!({})),
    ]);
    let (ada, bob) = (
        fixture.customer("user_id", "ada"),
        fixture.customer("user_id", "bob"),
    );
    assert!(snapshot_of(&mut store, |s| s.pending(10).expect("pending")).is_empty());
    fixture.queue(&[ada, bob]);
    let (mut all, one, cursor) = snapshot_of(&mut store, |s| {
        (
            s.pending(10).expect("pending"),
            s.pending(1).expect("pending"),
            s.cursor().expect("cursor"),
        )
    });
    all.sort_unstable();
    assert_eq!((all, one.len()), (vec![ada, bob], 1));
    store
        .record(&Decisions {
            at: Utc::now(),
            dequeued: vec![ada],
            cursor,
            ..Decisions::default()
        })
        .expect("record");
    assert_eq!(
        snapshot_of(&mut store, |s| s.pending(10).expect("pending")),
        vec![bob]
    );
}

/// A merge is listed once, in order, naming the merged-away customer and its survivor; the
/// merged-away ID then stands for the survivor, which holds both customers' events.
pub fn merges_name_the_merged_away_customer_and_its_survivor(open: impl OpenFixture) {
    let dir = temp_dir();
    let fixture = open.open(dir.path());
    let mut store = fixture.store();
    let before = fixture.apply(&[
        message(
            "track",
            ("anonymousId", "anon-1"),
            "m1",
            json!({"event": "Viewed"}),
        ),
        track("dan", "Viewed", "m2", json!({})),
    ]);
    let (anon, dan) = (
        fixture.customer("anonymous_id", "anon-1"),
        fixture.customer("user_id", "dan"),
    );
    assert_ne!(anon, dan);
    let (merges, survivor) = snapshot_of(&mut store, |s| {
        (
            s.merges_after(0).expect("merges"),
            s.survivor(anon).expect("survivor"),
        )
    });
    assert_eq!((merges, survivor), (vec![], Some(anon)));

    let applied = fixture.apply(&[message(
        "alias",
        ("userId", "dan"),
        "m3",
        json!({"previousId": "anon-1"}),
    )]);
    let select = EventSelection {
        names: HashSet::from(["Viewed".to_string()]),
        bodies: HashSet::new(),
    };
    let (merges, later, survivors, events) = snapshot_of(&mut store, |s| {
        let merges = s.merges_after(0).expect("merges");
        let later = merges
            .first()
            .map(|m| s.merges_after(m.id).expect("merges"));
        let survivors: Vec<Option<CustomerId>> = [anon, dan, CustomerId::MAX]
            .into_iter()
            .map(|c| s.survivor(c).expect("survivor"))
            .collect();
        let into = merges.first().map_or(dan, |m| m.into);
        let mut n = 0;
        s.events_after(into, Position::default(), &select, |_| n += 1)
            .expect("events");
        (merges, later, survivors, n)
    });
    let [Merge { id: _, from, into }] = merges[..] else {
        panic!("one merge expected, got {merges:?}");
    };
    assert_eq!(HashSet::from([from, into]), HashSet::from([anon, dan]));
    assert_eq!(later, Some(vec![]));
    let expected = |c| if c == from { Some(into) } else { Some(c) };
    assert_eq!(survivors, vec![expected(anon), expected(dan), None]);
    assert_eq!(events, 2, "the survivor holds both customers' events");
    assert!(before < applied);
}

/// A customer's inputs: traits, computed traits, the events applied after a position (only
/// the selected names, with bodies only where asked, up to the highest position of any of its
/// events), and whether it had events by a position.
pub fn a_customers_inputs_are_read(open: impl OpenFixture) {
    let dir = temp_dir();
    let fixture = open.open(dir.path());
    let mut store = fixture.store();
    let first = fixture.apply(&[
        identify("ada", "m1", json!({"plan": "pro"})),
        track("ada", "Viewed", "m2", json!({"sku": "a"})),
    ]);
    fixture.apply(&[
        track("ada", "Viewed", "m3", json!({"sku": "b"})),
        identify("bob", "m4", json!({})),
    ]);
    let last = fixture.apply(&[track("ada", "Login", "m5", json!({}))]);
    let (ada, bob) = (
        fixture.customer("user_id", "ada"),
        fixture.customer("user_id", "bob"),
    );
    let select = EventSelection {
        names: HashSet::from(["Viewed".to_string(), "$identify".to_string()]),
        bodies: HashSet::from(["Viewed".to_string()]),
    };
    let now = Utc::now();
    let (traits, unknown, computed, all, since_first, rest, had) = snapshot_of(&mut store, |s| {
        (
            s.traits(ada).expect("traits"),
            s.traits(CustomerId::MAX).expect("traits"),
            s.computed(ada, now).expect("computed"),
            events_of(s, ada, &select, Position::default()),
            events_of(s, ada, &select, first),
            events_of(s, ada, &select, last),
            [
                s.has_events_through(ada, Position::default()),
                s.has_events_through(ada, first),
                s.has_events_through(bob, first),
                s.has_events_through(bob, last),
            ]
            .map(|r| r.expect("events through")),
        )
    });
    assert_eq!(traits.get("plan"), Some(&json!("pro")));
    assert!(unknown.is_empty());
    assert_eq!(computed.event_count, 4);

    let (all, through) = all;
    let names: Vec<(&str, Option<bool>)> = all
        .iter()
        .map(|(_, name, body)| (name.as_str(), *body))
        .collect();
    assert_eq!(
        names,
        vec![
            ("$identify", None),
            ("Viewed", Some(true)),
            ("Viewed", Some(true))
        ]
    );
    assert_eq!(
        through, last,
        "the unselected Login still moves the position"
    );
    let (since_first, _) = since_first;
    assert_eq!(since_first.len(), 1);
    assert!(since_first[0].0 > first);
    assert_eq!(rest, (vec![], last));
    assert_eq!(had, [false, true, false, true]);
}

/// A recorded round's entries, exits and cursor are read together; a snapshot opened before
/// sees none of them. Recorded again, the same decisions change nothing. Every entry and exit
/// is in the customer's history, merged-away customers leaving with reason `merge`.
pub fn a_round_records_entries_exits_and_cursor_together(open: impl OpenFixture) {
    let dir = temp_dir();
    let fixture = open.open(dir.path());
    let mut store = fixture.store();
    let mut other = fixture.store();
    let s1 = fixture.define("s1", exists("plan"));
    let s2 = fixture.define("s2", exists("city"));
    let applied = fixture.apply(&[
        identify("ada", "m1", json!({})),
        identify("bob", "m2", json!({})),
    ]);
    let (ada, bob) = (
        fixture.customer("user_id", "ada"),
        fixture.customer("user_id", "bob"),
    );
    let round = Decisions {
        at: Utc::now(),
        decided: vec![
            (ada, vec![(s1, true), (s2, false)]),
            (bob, vec![(s1, true)]),
        ],
        cursor: Cursor {
            events: applied,
            merges: 0,
        },
        ..Decisions::default()
    };

    let mut before = store.snapshot().expect("a snapshot");
    assert_eq!(before.cursor().expect("cursor"), Cursor::default());
    other.record(&round).expect("record");
    assert_eq!(before.cursor().expect("cursor"), Cursor::default());
    assert!(before.memberships(ada).expect("memberships").is_empty());
    before.finish().expect("finish");

    let (cursor, of_ada, of_bob) = snapshot_of(&mut store, |s| {
        (
            s.cursor().expect("cursor"),
            s.memberships(ada).expect("memberships"),
            s.memberships(bob).expect("memberships"),
        )
    });
    assert_eq!(cursor, round.cursor);
    assert_eq!((of_ada, of_bob), (HashSet::from([s1]), HashSet::from([s1])));
    let entered = vec![(s1, true, "event".to_string())];
    assert_eq!(fixture.history(ada), entered);

    store.record(&round).expect("record again");
    assert_eq!(
        fixture.history(ada),
        entered,
        "recorded twice, entered once"
    );

    store
        .record(&Decisions {
            at: Utc::now(),
            gone: vec![bob],
            decided: vec![(ada, vec![(s1, false), (s2, true)])],
            cursor: round.cursor,
            ..Decisions::default()
        })
        .expect("record");
    let (of_ada, of_bob) = snapshot_of(&mut store, |s| {
        (
            s.memberships(ada).expect("memberships"),
            s.memberships(bob).expect("memberships"),
        )
    });
    assert_eq!((of_ada, of_bob), (HashSet::from([s2]), HashSet::new()));
    assert_eq!(
        fixture.history(ada),
        vec![
            (s1, true, "event".to_string()),
            (s1, false, "event".to_string()),
            (s2, true, "event".to_string()),
        ]
    );
    assert_eq!(
        fixture.history(bob),
        vec![
            (s1, true, "event".to_string()),
            (s1, false, "merge".to_string())
        ]
    );
}

/// Runs every behaviour of the suite as a test of its own. See the module documentation.
#[macro_export]
macro_rules! membership_store_conformance_suite {
    ($open:expr) => {
        mod membership_store_conformance {
            use super::*;
            use $crate::membership::conformance as suite;

            #[test]
            fn definitions_are_listed_in_dependency_order() {
                suite::definitions_are_listed_in_dependency_order($open)
            }
            #[test]
            fn customers_changed_between_two_positions_are_listed() {
                suite::customers_changed_between_two_positions_are_listed($open)
            }
            #[test]
            fn queued_customers_wait_until_a_round_dequeues_them() {
                suite::queued_customers_wait_until_a_round_dequeues_them($open)
            }
            #[test]
            fn merges_name_the_merged_away_customer_and_its_survivor() {
                suite::merges_name_the_merged_away_customer_and_its_survivor($open)
            }
            #[test]
            fn a_customers_inputs_are_read() {
                suite::a_customers_inputs_are_read($open)
            }
            #[test]
            fn a_round_records_entries_exits_and_cursor_together() {
                suite::a_round_records_entries_exits_and_cursor_together($open)
            }
        }
    };
}
