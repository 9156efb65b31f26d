//! The embedded store end to end: append to the inbox, process, read profiles back.

use chrono::{DateTime, Utc};
use cohort_core::Inbox as _;
use cohort_store::{Store, StoreConfig, Submission};
use serde_json::{Value, json};
use std::time::Duration;

mod common;

fn open(dir: &std::path::Path) -> common::Processing {
    common::open_processing(StoreConfig::new(dir))
}

fn settle(store: &Store) {
    assert!(store.wait_processed(Duration::from_secs(10)));
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

#[tokio::test]
async fn duplicate_message_ids_are_acknowledged_but_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let msg = json!({"type": "track", "event": "A", "anonymousId": "a1", "messageId": "m1",
                     "timestamp": "2026-01-01T00:00:00.000Z"});
    let first = store
        .append(Submission::of_messages(1, std::slice::from_ref(&msg)))
        .await
        .unwrap();
    let again = store
        .append(Submission::of_messages(1, std::slice::from_ref(&msg)))
        .await
        .unwrap();
    let other_source = store
        .append(Submission::of_messages(2, &[msg]))
        .await
        .unwrap();
    assert_eq!((first.accepted, first.duplicates), (1, 0));
    assert_eq!((again.accepted, again.duplicates), (0, 1));
    assert_eq!(other_source.accepted, 1, "dedup is per source");
    settle(&store);
    let profile = store
        .profiles()
        .profile("anonymous_id", "a1", now())
        .unwrap()
        .unwrap();
    assert_eq!(profile.computed.event_count, 2);
}

#[tokio::test]
async fn identify_after_anonymous_visit_builds_one_profile_with_traits_and_orders() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let t = |s: &str| format!("2026-01-01T00:00:{s}.000Z");
    let msgs = vec![
        json!({"type": "page", "anonymousId": "dev", "messageId": "1", "timestamp": t("01")}),
        json!({"type": "identify", "anonymousId": "dev", "userId": "u1", "messageId": "2", "timestamp": t("05"),
               "traits": {"email": "ada@example.org", "name": "Ada", "plan": "new"}}),
        // An older identify arriving later must not overwrite the newer trait.
        json!({"type": "identify", "userId": "u1", "messageId": "3", "timestamp": t("03"),
               "traits": {"plan": "old", "age": 36}}),
        json!({"type": "track", "userId": "u1", "event": "Order Completed", "messageId": "4", "timestamp": t("09"),
               "properties": {"revenue": 100.5}}),
        json!({"type": "track", "userId": "u1", "event": "Order Completed", "messageId": "5", "timestamp": t("10"),
               "properties": {"total": 50}}),
    ];
    store
        .append(Submission::of_messages(1, &msgs))
        .await
        .unwrap();
    settle(&store);
    let by_email = store
        .profiles()
        .profile("email", "ADA@example.org", now())
        .unwrap()
        .unwrap();
    let by_anon = store
        .profiles()
        .profile("anonymous_id", "dev", now())
        .unwrap()
        .unwrap();
    assert_eq!(by_email.customer_id, by_anon.customer_id);
    assert_eq!(by_email.traits["plan"], "new");
    assert_eq!(by_email.traits["age"], 36);
    assert_eq!(by_email.computed.event_count, 5);
    assert_eq!(by_email.computed.orders, 2);
    assert_eq!(by_email.computed.total_revenue, 150.5);
    assert_eq!(by_email.computed.average_order_value, Some(75.25));
    assert_eq!(by_email.computed.event_counts["$identify"], 2);
    assert_eq!(
        by_email.computed.first_seen.as_deref(),
        Some("2026-01-01T00:00:01.000Z")
    );
    let page = store
        .profiles()
        .timeline(
            by_email.customer_id.parse().unwrap(),
            &cohort_store::TimelineQuery {
                from: None,
                to: None,
                cursor: None,
                limit: 2,
            },
        )
        .unwrap();
    assert_eq!(page.events.len(), 2);
    assert_eq!(page.events[0].message_id, "5");
    let rest = store
        .profiles()
        .timeline(
            by_email.customer_id.parse().unwrap(),
            &cohort_store::TimelineQuery {
                from: None,
                to: None,
                cursor: page.next_cursor.clone(),
                limit: 10,
            },
        )
        .unwrap();
    assert_eq!(rest.events.len(), 3);
    assert!(rest.next_cursor.is_none());
    assert_eq!(
        store.profiles().search("name", &json!("Ada"), 10).unwrap(),
        vec![by_email.customer_id.clone()]
    );
}

#[tokio::test]
async fn merged_customers_fold_stats_and_old_ids_lead_to_the_survivor() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let msgs = vec![
        json!({"type": "track", "event": "Order Completed", "anonymousId": "phone", "messageId": "1",
               "timestamp": "2026-01-01T00:00:00Z", "properties": {"revenue": 10}}),
        json!({"type": "track", "event": "Order Completed", "anonymousId": "laptop", "messageId": "2",
               "timestamp": "2026-01-01T00:00:01Z", "properties": {"revenue": 20}}),
        json!({"type": "identify", "userId": "u", "anonymousId": "phone", "messageId": "3", "timestamp": "2026-01-01T00:00:02Z"}),
        json!({"type": "alias", "userId": "u", "previousId": "laptop", "messageId": "4", "timestamp": "2026-01-01T00:00:03Z"}),
    ];
    store
        .append(Submission::of_messages(1, &msgs))
        .await
        .unwrap();
    settle(&store);
    let p = store
        .profiles()
        .profile("user_id", "u", now())
        .unwrap()
        .unwrap();
    assert_eq!(p.computed.orders, 2);
    assert_eq!(p.computed.total_revenue, 30.0);
    assert_eq!(p.merges.len(), 1);
    let gone = &p.merges[0].from_customer;
    let via_old_id = store
        .profiles()
        .profile("customer_id", gone, now())
        .unwrap()
        .unwrap();
    assert_eq!(via_old_id.customer_id, p.customer_id);
    assert_eq!(store.profiles().totals().unwrap().customers, 1);
}

#[tokio::test]
async fn processing_resumes_from_the_applied_position_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        let msgs: Vec<Value> = (0..50)
            .map(|i| json!({"type": "track", "event": "E", "userId": "u", "messageId": format!("m{i}")}))
            .collect();
        store
            .append(Submission::of_messages(1, &msgs))
            .await
            .unwrap();
        settle(&store);
    }
    let store = open(dir.path());
    assert_eq!(store.inbox().lag(), 0);
    let msgs: Vec<Value> = (50..60)
        .map(
            |i| json!({"type": "track", "event": "E", "userId": "u", "messageId": format!("m{i}")}),
        )
        .collect();
    store
        .append(Submission::of_messages(1, &msgs))
        .await
        .unwrap();
    settle(&store);
    let p = store
        .profiles()
        .profile("user_id", "u", now())
        .unwrap()
        .unwrap();
    assert_eq!(p.computed.event_count, 60);
}

/// The processor reads a source's trust inside its write transaction on `state.db`. A catalog
/// write started meanwhile waits for that transaction; the read must not wait for the write.
#[test]
fn catalog_reads_inside_a_write_transaction_do_not_wait_for_a_waiting_catalog_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let (web, _) = store.catalog().create_source("web").unwrap();
    let holder = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| store.catalog().create_source("app"));
        // Let the write start waiting for the lock this thread holds.
        std::thread::sleep(Duration::from_millis(200));
        let (tx, rx) = std::sync::mpsc::channel();
        let store = &store;
        scope.spawn(move || tx.send(store.catalog().source(web.id).map(|s| s.map(|s| s.name))));
        // Far below the ten-second busy timeout that used to end the wait.
        let read = rx.recv_timeout(Duration::from_secs(5));
        holder.execute_batch("COMMIT").unwrap();
        assert_eq!(read.unwrap().unwrap(), Some("web".to_string()));
        let (app, _) = writer.join().unwrap().unwrap();
        assert_eq!(app.name, "app");
    });
}

#[test]
fn write_keys_are_shown_once_and_verified_by_hash() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (source, key) = store.catalog().create_source("web").unwrap();
    assert!(key.starts_with("wk_"));
    assert_eq!(
        store.catalog().source_by_key(&key).unwrap().unwrap().id,
        source.id
    );
    assert!(store.catalog().source_by_key("wk_wrong").unwrap().is_none());
    assert!(store.catalog().create_source("web").is_err());
    let raw = std::fs::read(dir.path().join("state.db")).unwrap();
    assert!(
        !raw.windows(key.len()).any(|w| w == key.as_bytes()),
        "the key itself is never stored"
    );
}

/// Profiles are served from memory once read; every way state changes must show at once (or, for
/// another process's writes, within the processor's next round).
#[tokio::test]
async fn cached_profiles_follow_events_merges_and_derived_traits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let order = |id: &str, who: (&str, &str), revenue: f64| {
        let mut m = json!({"type": "track", "event": "Order Completed", "messageId": id,
                           "timestamp": Utc::now().to_rfc3339(), "properties": {"revenue": revenue}});
        m[who.0] = json!(who.1);
        m
    };
    store
        .append(Submission::of_messages(
            1,
            &[order("1", ("userId", "u"), 10.0)],
        ))
        .await
        .unwrap();
    settle(&store);
    let read = |kind: &str, value: &str| {
        store
            .profiles()
            .profile(kind, value, now())
            .unwrap()
            .unwrap()
    };
    assert_eq!(read("user_id", "u").computed.orders, 1);
    let cached = store.profiles().cached_profile("user_id", "u", now());
    assert_eq!(
        cached.map(|p| p.computed.orders),
        Some(1),
        "the read was kept"
    );

    // A new event of the customer.
    store
        .append(Submission::of_messages(
            1,
            &[order("2", ("userId", "u"), 5.0)],
        ))
        .await
        .unwrap();
    settle(&store);
    assert!(
        store
            .profiles()
            .cached_profile("user_id", "u", now())
            .is_none()
    );
    assert_eq!(read("user_id", "u").computed.orders, 2);

    // A merge: the anonymous visitor's cached profile must lead to the survivor.
    store
        .append(Submission::of_messages(
            1,
            &[order("3", ("anonymousId", "visitor"), 1.0)],
        ))
        .await
        .unwrap();
    settle(&store);
    assert_eq!(read("anonymous_id", "visitor").computed.orders, 1);
    let alias = json!({"type": "alias", "userId": "u", "previousId": "visitor", "messageId": "4"});
    store
        .append(Submission::of_messages(1, &[alias]))
        .await
        .unwrap();
    settle(&store);
    let merged = read("anonymous_id", "visitor");
    assert_eq!(merged.computed.orders, 3);
    assert_eq!(merged.customer_id, read("user_id", "u").customer_id);

    // Derived traits written in this process, then by another process on the same data.
    let customer: i64 = merged.customer_id.parse().unwrap();
    let set = |derived: cohort_store::Derived, value: &str| {
        let traits = json!({"rfm_segment": value});
        derived
            .replace_traits(
                &["rfm_segment"],
                &[(customer, traits.as_object().unwrap().clone())],
                None,
            )
            .unwrap();
    };
    set(store.derived(), "Champions");
    assert_eq!(read("user_id", "u").traits["rfm_segment"], "Champions");
    let mut offline = StoreConfig::new(dir.path());
    offline.process = false;
    let other = Store::open(offline).unwrap();
    set(other.derived(), "Lost");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while read("user_id", "u").traits["rfm_segment"] != "Lost" {
        assert!(
            std::time::Instant::now() < deadline,
            "another process's write never showed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
