//! Segment definitions, real-time membership as events are processed, and batch membership.

use chrono::{Duration as TimeDelta, Utc};
use cohort_core::Inbox as _;
use cohort_segment::Condition;
use cohort_store::{NewSegment, SegmentKind, Store, StoreConfig, StoreError, Submission};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::{Duration, Instant};

mod common;

fn open(dir: &std::path::Path) -> common::Processing {
    common::open_with_segments(StoreConfig::new(dir))
}

/// A store whose processor does not run: definitions only.
fn open_unprocessed(dir: &std::path::Path) -> Store {
    Store::open(StoreConfig {
        process: false,
        ..StoreConfig::new(dir)
    })
    .unwrap()
}

fn cond(v: Value) -> Condition {
    Condition::from_value(v).unwrap()
}

fn segment(name: &str, condition: Value) -> NewSegment {
    NewSegment {
        name: name.into(),
        kind: SegmentKind::Segment,
        description: String::new(),
        condition: cond(condition),
    }
}

async fn send(store: &Store, messages: &[Value]) {
    let submission = Submission::of_messages(1, messages);
    store.append(submission).await.unwrap();
    assert!(store.wait_processed(Duration::from_secs(10)));
}

fn ago(days: i64) -> String {
    (Utc::now() - TimeDelta::days(days)).to_rfc3339()
}

/// Waits until the real-time engine has caught up with `predicate`.
fn eventually(what: &str, mut predicate: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if predicate() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

fn members(store: &Store, name: &str) -> HashSet<i64> {
    let def = store.segments().get(name).unwrap();
    store
        .segments()
        .members(def.id, 0, 10_000)
        .unwrap()
        .into_iter()
        .map(|m| m.customer_id)
        .collect()
}

fn customer(store: &Store, user: &str) -> i64 {
    store
        .profiles()
        .find_customer("user_id", user)
        .unwrap()
        .unwrap()
}

fn order(id: &str, user: &str, revenue: f64, at: &str) -> Value {
    json!({"type": "track", "event": "Order Completed", "userId": user, "messageId": id,
           "timestamp": at, "properties": {"revenue": revenue}})
}

#[tokio::test]
async fn customers_enter_and_leave_as_their_events_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .segments()
        .create(&segment(
            "big spenders",
            json!({"type": "computed", "key": "total_revenue", "op": "gt", "value": 1000}),
        ))
        .unwrap();
    store
        .segments()
        .create(&segment(
            "vip in shanghai",
            json!({"type": "and", "conditions": [
                {"type": "in_segment", "segment": "big spenders"},
                {"type": "trait", "key": "city", "op": "eq", "value": "上海"}]}),
        ))
        .unwrap();

    send(
        &store,
        &[
            order("o1", "ada", 600.0, &ago(2)),
            order("o2", "bob", 50.0, &ago(2)),
            json!({"type": "identify", "userId": "ada", "messageId": "i1", "timestamp": ago(1),
                   "traits": {"city": "上海"}}),
        ],
    )
    .await;
    let ada = customer(&store, "ada");
    // 600 is not over 1000 yet.
    caught_up(&store);
    assert!(members(&store, "big spenders").is_empty());

    send(&store, &[order("o3", "ada", 700.0, &ago(1))]).await;
    eventually("ada enters both", || {
        members(&store, "vip in shanghai") == HashSet::from([ada])
    });
    assert_eq!(members(&store, "big spenders"), HashSet::from([ada]));

    // Moving away takes her out of the dependent segment only.
    send(
        &store,
        &[
            json!({"type": "identify", "userId": "ada", "messageId": "i2", "timestamp": ago(0),
                  "traits": {"city": "北京"}}),
        ],
    )
    .await;
    eventually("ada leaves the city segment", || {
        members(&store, "vip in shanghai").is_empty()
    });
    assert_eq!(members(&store, "big spenders"), HashSet::from([ada]));

    let history = store.segments().changes(0, None, Some(ada), 100).unwrap();
    let seen: Vec<(&str, &str, &str)> = history
        .iter()
        .map(|c| (c.segment.as_str(), c.change, c.reason.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("big spenders", "entered", "event"),
            ("vip in shanghai", "entered", "event"),
            ("vip in shanghai", "exited", "event"),
        ]
    );
    // The feed is ordered and resumable by ID.
    let after_first = store
        .segments()
        .changes(history[0].id, None, None, 100)
        .unwrap();
    assert_eq!(after_first.len(), 2);
}

/// Waits until the real-time engine has decided everything processed so far.
fn caught_up(store: &Store) {
    let applied = store.inbox().acknowledged();
    eventually("the segment engine", || {
        store.segments().evaluated().unwrap() >= applied
    });
}

#[tokio::test]
async fn event_conditions_with_windows_and_property_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .segments()
        .create(&segment(
            "repeat buyers",
            json!({"type": "event", "name": "Order Completed",
                   "where": [{"property": "revenue", "op": "gt", "value": 100}],
                   "count": {"op": "gte", "value": 2}, "window": {"last_days": 30}}),
        ))
        .unwrap();
    send(
        &store,
        &[
            order("a1", "ann", 150.0, &ago(3)),
            order("a2", "ann", 90.0, &ago(2)),
            order("b1", "ben", 150.0, &ago(40)),
            order("b2", "ben", 150.0, &ago(2)),
            order("c1", "cat", 500.0, &ago(5)),
            order("c2", "cat", 101.0, &ago(1)),
        ],
    )
    .await;
    let cat = customer(&store, "cat");
    eventually("cat enters", || {
        members(&store, "repeat buyers") == HashSet::from([cat])
    });
    send(&store, &[order("a3", "ann", 120.0, &ago(0))]).await;
    let ann = customer(&store, "ann");
    eventually("ann enters", || {
        members(&store, "repeat buyers") == HashSet::from([cat, ann])
    });
}

#[tokio::test]
async fn merged_away_customers_leave_and_survivors_are_decided_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .segments()
        .create(&segment(
            "seen",
            json!({"type": "computed", "key": "event_count", "op": "gte", "value": 1}),
        ))
        .unwrap();
    send(
        &store,
        &[
            json!({"type": "track", "event": "Viewed", "anonymousId": "anon-1", "messageId": "v1", "timestamp": ago(1)}),
            json!({"type": "track", "event": "Viewed", "userId": "dan", "messageId": "v2", "timestamp": ago(1)}),
        ],
    )
    .await;
    eventually("two members", || members(&store, "seen").len() == 2);
    // An alias joins the anonymous customer to dan's.
    send(
        &store,
        &[json!({"type": "alias", "userId": "dan", "previousId": "anon-1", "messageId": "al", "timestamp": ago(0)})],
    )
    .await;
    let dan = customer(&store, "dan");
    eventually("one member", || {
        members(&store, "seen") == HashSet::from([dan])
    });
    let exits = store
        .segments()
        .changes(0, None, None, 100)
        .unwrap()
        .into_iter()
        .filter(|c| c.change == "exited")
        .collect::<Vec<_>>();
    assert_eq!(exits.len(), 1);
    assert_eq!(exits[0].reason, "merge");
}

/// The engine reads each customer's events incrementally between rounds; a merge must still
/// bring the merged-away customer's earlier events into the survivor's count.
#[tokio::test]
async fn event_counts_span_rounds_and_merged_customers() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for (name, times) in [("viewed twice", 2), ("viewed thrice", 3)] {
        store
            .segments()
            .create(&segment(
                name,
                json!({"type": "event", "name": "Viewed", "count": {"op": "gte", "value": times}}),
            ))
            .unwrap();
    }
    let viewed = |id: &str, who: (&str, &str)| {
        let mut m =
            json!({"type": "track", "event": "Viewed", "messageId": id, "timestamp": ago(1)});
        m[who.0] = json!(who.1);
        m
    };
    send(
        &store,
        &[
            viewed("v1", ("anonymousId", "anon-1")),
            viewed("v2", ("userId", "eve")),
        ],
    )
    .await;
    caught_up(&store);
    assert!(members(&store, "viewed twice").is_empty());

    send(
        &store,
        &[json!({"type": "alias", "userId": "eve", "previousId": "anon-1", "messageId": "al", "timestamp": ago(0)})],
    )
    .await;
    let eve = customer(&store, "eve");
    eventually("eve counts the anonymous view", || {
        members(&store, "viewed twice") == HashSet::from([eve])
    });
    caught_up(&store);
    assert!(members(&store, "viewed thrice").is_empty());

    send(&store, &[viewed("v3", ("userId", "eve"))]).await;
    eventually("a later view adds to the earlier ones", || {
        members(&store, "viewed thrice") == HashSet::from([eve])
    });
}

#[tokio::test]
async fn batch_results_record_entries_and_exits_but_keep_newer_real_time_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let def = store
        .segments()
        .create(&segment(
            "anyone",
            json!({"type": "trait", "key": "plan", "op": "eq", "value": "pro"}),
        ))
        .unwrap();
    send(
        &store,
        &[
            json!({"type": "identify", "userId": "u1", "messageId": "p1", "traits": {"plan": "pro"}}),
            json!({"type": "identify", "userId": "u2", "messageId": "p2", "traits": {"plan": "free"}}),
        ],
    )
    .await;
    let (u1, u2) = (customer(&store, "u1"), customer(&store, "u2"));
    eventually("u1 in", || members(&store, "anyone") == HashSet::from([u1]));

    // A batch that started before u1's decision cannot undo it.
    let diff = store
        .segments()
        .apply_members(def.id, &HashSet::from([u2]), "definition", 0)
        .unwrap();
    assert_eq!((diff.entered, diff.exited), (1, 0));
    assert_eq!(members(&store, "anyone"), HashSet::from([u1, u2]));
    // u2 was queued for real-time re-evaluation, which settles on the truth: not a member.
    eventually("u2 settled", || {
        members(&store, "anyone") == HashSet::from([u1])
    });

    // A batch from after the last change applies fully.
    let watermark = store.segments().last_change_id().unwrap();
    let diff = store
        .segments()
        .apply_members(def.id, &HashSet::new(), "time", watermark)
        .unwrap();
    assert_eq!((diff.entered, diff.exited, diff.members), (0, 1, 0));
}

#[test]
fn many_definitions_are_created_in_one_commit_each_judged_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_unprocessed(dir.path());
    let segments = store.segments();
    let base = json!({"type": "trait", "key": "x", "op": "exists"});
    segments.create(&segment("taken", base.clone())).unwrap();
    let answers = segments
        .create_many(&[
            segment("first", base.clone()),
            segment("taken", base.clone()),
            segment("dangling", json!({"type": "in_segment", "segment": "nope"})),
            segment(" padded", base.clone()),
            segment("second", json!({"type": "in_segment", "segment": "first"})),
        ])
        .unwrap();
    let outcome: Vec<Result<String, String>> = answers
        .into_iter()
        .map(|a| a.map(|d| d.name).map_err(|e| e.to_string()))
        .collect();
    assert_eq!(outcome[0], Ok("first".to_string()));
    assert!(
        outcome[1].as_ref().is_err_and(|e| e.contains("taken")),
        "{outcome:?}"
    );
    assert!(
        outcome[2].as_ref().is_err_and(|e| e.contains("\"nope\"")),
        "{outcome:?}"
    );
    assert!(
        outcome[3].as_ref().is_err_and(|e| e.starts_with("name")),
        "{outcome:?}"
    );
    assert_eq!(outcome[4], Ok("second".to_string()));
    let mut names: Vec<String> = segments
        .ordered()
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    names.sort();
    assert_eq!(names, ["first", "second", "taken"]);
}

#[test]
fn definitions_are_validated_named_and_acyclic() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_unprocessed(dir.path());
    let segments = store.segments();
    let base = json!({"type": "trait", "key": "x", "op": "exists"});
    segments.create(&segment("a", base.clone())).unwrap();
    assert!(matches!(
        segments.create(&segment("a", base.clone())),
        Err(StoreError::Conflict(_))
    ));
    for bad in ["", " padded", "tab\there"] {
        assert!(
            matches!(segments.create(&segment(bad, base.clone())), Err(StoreError::Invalid(m)) if m.starts_with("name")),
            "{bad:?}"
        );
    }
    let missing = segments
        .create(&segment(
            "b",
            json!({"type": "in_segment", "segment": "nope"}),
        ))
        .unwrap_err();
    assert!(missing.to_string().contains("\"nope\""), "{missing}");
    segments
        .create(&segment("b", json!({"type": "in_segment", "segment": "a"})))
        .unwrap();
    let cycle = segments
        .update(
            "a",
            None,
            Some(&cond(json!({"type": "in_segment", "segment": "b"}))),
        )
        .unwrap_err();
    assert!(cycle.to_string().contains("itself"), "{cycle}");
    let in_use = segments.delete("a").unwrap_err();
    assert!(in_use.to_string().contains("used by b"), "{in_use}");
    let order: Vec<String> = segments
        .ordered()
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(order, vec!["a", "b"]);
    let updated = segments.update("b", Some("refers to a"), None).unwrap();
    assert_eq!(
        (updated.version, updated.description.as_str()),
        (2, "refers to a")
    );
    segments.delete("b").unwrap();
    segments.delete("a").unwrap();
    assert!(segments.list(None).unwrap().is_empty());
    assert!(matches!(segments.get("a"), Err(StoreError::NotFound(_))));
}

#[test]
fn a_definition_whose_evaluations_never_finish_is_quarantined_until_updated() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_unprocessed(dir.path());
    let heavy = store
        .segments()
        .create(&segment(
            "heavy",
            json!({"type": "trait", "key": "plan", "op": "eq", "value": "pro"}),
        ))
        .unwrap();
    let fine = store
        .segments()
        .create(&segment(
            "fine",
            json!({"type": "trait", "key": "plan", "op": "eq", "value": "free"}),
        ))
        .unwrap();

    // One evaluation cut short (a restart at the wrong moment) is forgiven.
    store.segments().begin_evaluation(heavy.id).unwrap();
    store.segments().begin_evaluation(fine.id).unwrap();
    store.segments().end_evaluation(fine.id, None).unwrap();
    assert!(store.segments().quarantine_unfinished().unwrap().is_empty());
    // Two in a row (it took the process down twice) are not.
    store.segments().begin_evaluation(heavy.id).unwrap();
    assert_eq!(
        store.segments().quarantine_unfinished().unwrap(),
        vec!["heavy"]
    );
    let failure = store.segments().get("heavy").unwrap().failure.unwrap();
    assert!(failure.contains("never finished"), "{failure}");
    assert_eq!(store.segments().get("fine").unwrap().failure, None);

    // A failed evaluation quarantines at once, with its reason; a new version lifts it.
    store
        .segments()
        .end_evaluation(fine.id, Some("evaluation failed: boom"))
        .unwrap();
    assert_eq!(
        store.segments().get("fine").unwrap().failure.as_deref(),
        Some("evaluation failed: boom")
    );
    store
        .segments()
        .update("heavy", Some("lighter now"), None)
        .unwrap();
    assert_eq!(store.segments().get("heavy").unwrap().failure, None);
    // Quarantine survives a restart.
    drop(store);
    let store = open_unprocessed(dir.path());
    assert!(store.segments().get("fine").unwrap().failure.is_some());
}
