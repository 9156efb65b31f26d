//! The SQLite identity graph must agree with the in-memory reference graph: the same event
//! sequences must leave the same identifiers grouped together, over many random sequences.

use cohort_core::message::identifiers;
use cohort_core::{IdKind, Identifier};
use cohort_identity::{IdentityRules, MemoryGraph, resolve};
use cohort_store::{StoreConfig, Submission};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

mod common;

fn random_message(rng: &mut StdRng, i: usize) -> Value {
    let mut msg = Map::new();
    msg.insert("messageId".into(), json!(format!("m{i}")));
    msg.insert("timestamp".into(), json!("2026-01-01T00:00:00Z"));
    let identify = rng.random_bool(0.4);
    msg.insert(
        "type".into(),
        json!(if identify { "identify" } else { "track" }),
    );
    msg.insert("event".into(), json!("E"));
    if rng.random_bool(0.5) {
        msg.insert(
            "userId".into(),
            json!(format!("u{}", rng.random_range(0..4))),
        );
    }
    if rng.random_bool(0.8) || !msg.contains_key("userId") {
        msg.insert(
            "anonymousId".into(),
            json!(format!("a{}", rng.random_range(0..6))),
        );
    }
    if identify && rng.random_bool(0.5) {
        msg.insert(
            "traits".into(),
            json!({"email": format!("e{}@x.org", rng.random_range(0..3))}),
        );
    }
    Value::Object(msg)
}

/// Groups identifiers by owner, as a set of sets, so customer numbering does not matter.
fn partition(owner: impl Iterator<Item = (Identifier, i64)>) -> BTreeSet<BTreeSet<Identifier>> {
    let mut groups: BTreeMap<i64, BTreeSet<Identifier>> = BTreeMap::new();
    for (id, c) in owner {
        groups.entry(c).or_default().insert(id);
    }
    groups.into_values().collect()
}

#[test]
fn sqlite_graph_groups_identifiers_like_the_reference_graph() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for seed in 0..25u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let messages: Vec<Value> = (0..40).map(|i| random_message(&mut rng, i)).collect();

        let rules = IdentityRules::default();
        let mut memory = MemoryGraph::default();
        let mut seen = BTreeSet::new();
        for m in &messages {
            let ids = identifiers(m.as_object().unwrap());
            seen.extend(ids.iter().cloned());
            resolve(&rules, &mut memory, &ids).unwrap();
        }
        let expected = partition(seen.iter().filter_map(|id| {
            use cohort_identity::IdentityGraph;
            memory.lookup(id).unwrap().map(|c| (id.clone(), c))
        }));

        let dir = tempfile::tempdir().unwrap();
        let store = common::open_processing(StoreConfig::new(dir.path()));
        let submission = Submission::of_messages(1, &messages);
        runtime.block_on(store.append(submission)).unwrap();
        assert!(store.wait_processed(Duration::from_secs(10)));
        let actual = partition(seen.iter().filter_map(|id| {
            store
                .profiles()
                .find_customer(id.kind.as_str(), &id.value)
                .unwrap()
                .map(|c| (id.clone(), c))
        }));
        assert_eq!(actual, expected, "seed {seed}");
        // Every user ID stays alone on its customer (the default limit is one).
        for group in &actual {
            assert!(
                group.iter().filter(|i| i.kind == IdKind::UserId).count() <= 1,
                "seed {seed}: {group:?}"
            );
        }
        assert_eq!(
            store.profiles().totals().unwrap().customers as usize,
            actual.len()
        );
    }
}
