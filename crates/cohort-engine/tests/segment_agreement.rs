//! Property test: a segment's members are the same whether decided in real time, per customer as
//! events are processed (the real-time engine), or in batch, by the compiled SQL over the lake and
//! the state tables. Random customers, events, merges and definitions; each seed is one case.

use chrono::{DateTime, Duration as TimeDelta, Utc};
use cohort_core::Inbox as _;
use cohort_engine::{Engine, EngineConfig};
use cohort_segment::Condition;
use cohort_store::{NewSegment, SegmentKind, Submission};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

const EVENTS: [&str; 4] = ["Viewed", "Order Completed", "Signed Up", "Login"];
const CITIES: [&str; 3] = ["上海", "北京", "London"];
const CATEGORIES: [&str; 3] = ["手机", "books", "toys"];

/// Event times sit half an hour off every whole hour from `now`, and windows are whole hours or
/// days, so no event is near a window edge while a case runs.
fn at(now: DateTime<Utc>, hours: i64) -> String {
    (now - TimeDelta::hours(hours) - TimeDelta::minutes(30)).to_rfc3339()
}

fn random_messages(rng: &mut StdRng, now: DateTime<Utc>) -> Vec<Value> {
    let mut out = Vec::new();
    let users = 14;
    for i in 0..rng.random_range(20..90) {
        let user = format!("u{}", rng.random_range(0..users));
        let id = format!("m{i}");
        let hours = rng.random_range(0..24 * 45);
        let msg = match rng.random_range(0..10) {
            0..=1 => {
                let mut traits = serde_json::Map::new();
                if rng.random_bool(0.7) {
                    traits.insert("city".into(), json!(CITIES.choose(rng).unwrap()));
                }
                if rng.random_bool(0.6) {
                    traits.insert("age".into(), json!(rng.random_range(16..70)));
                }
                if rng.random_bool(0.4) {
                    traits.insert("vip".into(), json!(rng.random_bool(0.5)));
                }
                json!({"type": "identify", "userId": user, "messageId": id,
                       "timestamp": at(now, hours), "traits": traits})
            }
            2 if rng.random_bool(0.3) => {
                // An anonymous visitor, later tied to a user by alias: a merge.
                let anon = format!("a{}", rng.random_range(0..5));
                out.push(json!({"type": "track", "event": "Viewed", "anonymousId": anon,
                                "messageId": format!("{id}-anon"), "timestamp": at(now, hours + 1)}));
                json!({"type": "alias", "userId": user, "previousId": anon, "messageId": id,
                       "timestamp": at(now, hours)})
            }
            _ => {
                let name = *EVENTS.choose(rng).unwrap();
                let mut properties = serde_json::Map::new();
                if name == "Order Completed" {
                    // The lake promotes revenue and price to typed columns, which the SQL reads
                    // instead of the JSON: every spelling must read the same both ways.
                    let amount = rng.random_range(1..40) * 100;
                    let revenue = match rng.random_range(0..8) {
                        0 => json!(amount.to_string()),
                        1 => json!(format!("{amount}.5")),
                        2 => json!(format!(" {amount}")),
                        3 => json!("n/a"),
                        4 => json!(true),
                        _ => json!(amount),
                    };
                    properties.insert("revenue".into(), revenue);
                    if rng.random_bool(0.5) {
                        properties.insert("price".into(), json!(f64::from(amount) / 4.0));
                    }
                }
                if rng.random_bool(0.6) {
                    let category = if rng.random_bool(0.1) {
                        json!(7)
                    } else {
                        json!(CATEGORIES.choose(rng).unwrap())
                    };
                    properties.insert("category".into(), category);
                }
                json!({"type": "track", "event": name, "userId": user, "messageId": id,
                       "timestamp": at(now, hours), "properties": properties})
            }
        };
        out.push(msg);
    }
    out
}

fn random_condition(rng: &mut StdRng, depth: u32, earlier: &[String]) -> Value {
    let leaf = depth == 0 || rng.random_bool(0.5);
    if !leaf {
        return match rng.random_range(0..3) {
            0 => json!({"type": "and", "conditions": [
                random_condition(rng, depth - 1, earlier), random_condition(rng, depth - 1, earlier)]}),
            1 => json!({"type": "or", "conditions": [
                random_condition(rng, depth - 1, earlier), random_condition(rng, depth - 1, earlier)]}),
            _ => json!({"type": "not", "condition": random_condition(rng, depth - 1, earlier)}),
        };
    }
    match rng.random_range(0..9) {
        0 => json!({"type": "trait", "key": "city", "op": *["eq", "ne", "in"].choose(rng).unwrap(),
                    "value": if rng.random_bool(0.5) { json!(CITIES[0]) } else { json!([CITIES[1], CITIES[2]]) }})
        .pipe(fix_in),
        1 => json!({"type": "trait", "key": "age", "op": *["gt", "lte", "between", "exists"].choose(rng).unwrap(),
                    "value": json!(rng.random_range(18..60))})
        .pipe(fix_between),
        2 => json!({"type": "trait", "key": "vip", "op": *["is_true", "is_false", "not_exists"].choose(rng).unwrap()}),
        3 => json!({"type": "computed",
                    "key": *["total_revenue", "revenue_30d", "orders", "event_count", "average_order_value"].choose(rng).unwrap(),
                    "op": *["gt", "gte", "lt", "eq"].choose(rng).unwrap(),
                    "value": rng.random_range(0..5) * 500}),
        4 => json!({"type": "computed", "key": *["last_seen", "first_seen", "last_order_at"].choose(rng).unwrap(),
                    "op": *["within_last", "not_within_last"].choose(rng).unwrap(),
                    "value": {"days": rng.random_range(1..40)}}),
        5 => {
            let mut c = json!({"type": "event", "name": *EVENTS.choose(rng).unwrap(),
                               "count": {"op": *["gte", "lt", "eq"].choose(rng).unwrap(), "value": rng.random_range(0..4)}});
            if rng.random_bool(0.6) {
                c["window"] = match rng.random_range(0..3) {
                    0 => json!({"last_days": rng.random_range(1..40)}),
                    1 => json!({"last_hours": rng.random_range(1..200)}),
                    _ => {
                        let from = Utc::now() - chrono::Duration::days(rng.random_range(2..40));
                        let to = from + chrono::Duration::hours(rng.random_range(1..400));
                        json!({"between": [from.format("%Y-%m-%d").to_string(), to.to_rfc3339()]})
                    }
                };
            }
            if rng.random_bool(0.5) {
                c["where"] = match rng.random_range(0..5) {
                    0 => json!([{"property": "category", "op": "eq", "value": *CATEGORIES.choose(rng).unwrap()}]),
                    1 if rng.random_bool(0.5) => json!([{"property": "category", "op": "ne", "value": CATEGORIES[0]}]),
                    1 => json!([{"property": "category", "op": "in", "value": [CATEGORIES[0], CATEGORIES[1]]}]),
                    2 => json!([{"property": "revenue", "op": *["gt", "lte", "eq"].choose(rng).unwrap(),
                                 "value": rng.random_range(1..40) * 100}]),
                    3 => json!([{"property": "price", "op": "gte", "value": rng.random_range(1..40) * 25}]),
                    _ => json!([{"property": "revenue", "op": "exists"}]),
                };
            }
            c
        }
        6 => json!({"type": "followed_by", "first": *EVENTS.choose(rng).unwrap(),
                    "then": *EVENTS.choose(rng).unwrap(), "within_hours": rng.random_range(1..100)}),
        7 => json!({"type": "not_followed_by", "first": "Signed Up", "then": "Login",
                    "within_hours": rng.random_range(1..200)}),
        _ => match earlier.choose(rng) {
            Some(s) => json!({"type": "in_segment", "segment": s}),
            None => json!({"type": "computed", "key": "event_counts.Login", "op": "gte", "value": 1}),
        },
    }
}

trait Pipe: Sized {
    fn pipe(self, f: impl FnOnce(Self) -> Self) -> Self {
        f(self)
    }
}
impl Pipe for Value {}

fn fix_in(mut c: Value) -> Value {
    // `in` takes a list; `eq` / `ne` a scalar.
    let is_list = c["value"].is_array();
    match (c["op"].as_str(), is_list) {
        (Some("in"), false) => c["value"] = json!([c["value"].clone()]),
        (Some("eq" | "ne"), true) => c["value"] = json!(CITIES[1]),
        _ => {}
    }
    c
}

fn fix_between(mut c: Value) -> Value {
    match c["op"].as_str() {
        Some("between") => {
            let lo = c["value"].as_i64().unwrap_or(20);
            c["value"] = json!([lo, lo + 15]);
        }
        Some("exists") => {
            c.as_object_mut().unwrap().remove("value");
        }
        _ => {}
    }
    c
}

fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_time_and_batch_membership_agree() {
    let mut compared = 0usize;
    // Cases where the segment held some but not all customers: the comparison had teeth.
    let mut mixed = 0usize;
    for seed in 0..12u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let now = Utc::now();
        let dir = tempfile::tempdir().unwrap();
        let mut config = EngineConfig::new(dir.path());
        config.builtin_tags = false;
        // Batch evaluation here is this test's own; the time refresh must not race it.
        config.segment_refresh = Duration::from_secs(3600);
        config.segment_day_refresh = Duration::from_secs(3600);
        let engine = Engine::open(config).await.unwrap();
        let store = engine.store().clone();

        // Definitions first, so the real-time engine decides every customer as events arrive.
        let mut names: Vec<String> = Vec::new();
        let mut conditions: Vec<Value> = Vec::new();
        for i in 0..6 {
            let condition = random_condition(&mut rng, 3, &names);
            let parsed = Condition::from_value(condition.clone())
                .unwrap_or_else(|e| panic!("seed {seed}: generated {condition}: {e}"));
            parsed
                .validate()
                .unwrap_or_else(|e| panic!("seed {seed}: generated {condition}: {e}"));
            let name = format!("s{i}");
            store
                .segments()
                .create(&NewSegment {
                    name: name.clone(),
                    kind: SegmentKind::Segment,
                    description: String::new(),
                    condition: parsed,
                })
                .unwrap();
            names.push(name);
            conditions.push(condition);
        }

        let messages = random_messages(&mut rng, now);
        let submission = Submission::of_messages(1, &messages);
        store.append(submission).await.unwrap();
        assert!(store.wait_processed(Duration::from_secs(20)));
        let applied = store.inbox().acknowledged();
        wait_for("the segment engine", || {
            store.segments().evaluated().unwrap() >= applied
        });

        for (name, condition) in names.iter().zip(&conditions) {
            let def = store.segments().get(name).unwrap();
            let real_time: BTreeSet<i64> = store
                .segments()
                .members(def.id, 0, 100_000)
                .unwrap()
                .into_iter()
                .map(|m| m.customer_id)
                .collect();
            let batch: HashSet<i64> = engine
                .preview_segment(&def.condition)
                .await
                .unwrap_or_else(|e| panic!("seed {seed} {name} {condition}: {e}"));
            let batch: BTreeSet<i64> = batch.into_iter().collect();
            if real_time != batch {
                // Name what differs: each such customer's events and membership changes.
                let events = store
                    .profiles()
                    .events_after(Default::default(), 100_000)
                    .unwrap();
                let mut detail = String::new();
                for c in real_time.symmetric_difference(&batch) {
                    let theirs: Vec<(i64, &str, String)> = events
                        .iter()
                        .filter(|e| e.customer_id == Some(*c))
                        .map(|e| (e.seq, e.name.as_str(), e.timestamp.to_rfc3339()))
                        .collect();
                    let changes: Vec<(&str, String)> = store
                        .segments()
                        .changes(0, Some(def.id), Some(*c), 100)
                        .unwrap()
                        .into_iter()
                        .map(|m| (m.change, m.at.to_rfc3339()))
                        .collect();
                    detail.push_str(&format!(
                        "\ncustomer {c}: events {theirs:?}\n  changes {changes:?}"
                    ));
                }
                panic!(
                    "seed {seed}, segment {name} = {condition}, now {}\nreal time {real_time:?}\nbatch {batch:?}{detail}",
                    Utc::now().to_rfc3339()
                );
            }
            compared += 1;
            let everyone = store.profiles().totals().unwrap().customers as usize;
            if !batch.is_empty() && batch.len() < everyone {
                mixed += 1;
            }
            // In-segment references read `memberships`, which must hold this segment's members
            // before a later segment's batch query runs: they do, since real time filled it.
        }
        engine.close().await;
    }
    assert_eq!(compared, 12 * 6);
    assert!(
        mixed >= 20,
        "only {mixed} of {compared} segments split the customers"
    );
}
