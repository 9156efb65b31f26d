//! The behaviour every [`DefinitionStore`] and [`StickyBucketStore`] implementation must have,
//! as one suite of tests each.
//!
//! An implementation's crate runs the whole suite with
//! [`definition_store_conformance_suite!`](crate::definition_store_conformance_suite), given a
//! function that runs a [`DefinitionStoreTest`] over a fresh, empty store:
//!
//! ```ignore
//! fn with_store(test: impl cohort_experiment::conformance::DefinitionStoreTest) {
//!     test.run(&cohort_experiment::store::MemoryDefinitions::default());
//! }
//! cohort_experiment::definition_store_conformance_suite!(with_store);
//! ```

use crate::evaluate::StickyBucketDoc;
use crate::store::{
    Change, DefinitionKind, DefinitionStore, DefinitionStoreError, Expected, StickyBucketStore,
    sticky_key,
};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

/// One behaviour of the suite, run over whatever store the implementation lends it.
pub trait DefinitionStoreTest {
    fn run<S: DefinitionStore>(self, store: &S);
}

fn at(second: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000 + second, 0)
        .single()
        .expect("a valid time")
}

fn save<S: DefinitionStore>(
    store: &S,
    key: &str,
    document: Option<Value>,
    expected: Expected,
    second: i64,
) -> Result<u64, DefinitionStoreError> {
    store
        .save(
            DefinitionKind::Flag,
            key,
            document.as_ref(),
            expected,
            at(second),
        )
        .map(|s| s.version)
}

/// Each save is a new version; the latest is current and the older ones stay in the history.
pub fn saves_make_versions_and_keep_history<S: DefinitionStore>(store: &S) {
    assert_eq!(
        save(store, "a", Some(json!({"n": 1})), Expected::New, 1).unwrap(),
        1
    );
    assert_eq!(
        save(store, "a", Some(json!({"n": 2})), Expected::Version(1), 2).unwrap(),
        2
    );
    let current = store.get(DefinitionKind::Flag, "a").unwrap().unwrap();
    assert_eq!(current.version, 2);
    assert_eq!(current.document, Some(json!({"n": 2})));
    assert_eq!(current.saved_at, at(2));
    let history = store.history(DefinitionKind::Flag, "a").unwrap();
    let docs: Vec<_> = history.iter().map(|s| s.document.clone()).collect();
    assert_eq!(docs, vec![Some(json!({"n": 1})), Some(json!({"n": 2}))]);
}

/// Kinds are separate namespaces, and `current` lists one kind's live keys in key order.
pub fn current_lists_one_kind_by_key<S: DefinitionStore>(store: &S) {
    save(store, "b", Some(json!(1)), Expected::Any, 1).unwrap();
    save(store, "a", Some(json!(2)), Expected::Any, 1).unwrap();
    store
        .save(
            DefinitionKind::Metric,
            "a",
            Some(&json!(3)),
            Expected::New,
            at(1),
        )
        .unwrap();
    let keys: Vec<_> = store
        .current(DefinitionKind::Flag)
        .unwrap()
        .into_iter()
        .map(|s| s.key)
        .collect();
    assert_eq!(keys, vec!["a", "b"]);
    let metric = store.get(DefinitionKind::Metric, "a").unwrap().unwrap();
    assert_eq!(metric.document, Some(json!(3)));
    assert!(
        store
            .get(DefinitionKind::Experiment, "a")
            .unwrap()
            .is_none()
    );
}

/// A deletion hides the key but keeps its history; saving it again goes on from its version.
pub fn deletions_are_versions<S: DefinitionStore>(store: &S) {
    save(store, "a", Some(json!(1)), Expected::New, 1).unwrap();
    assert_eq!(save(store, "a", None, Expected::Version(1), 2).unwrap(), 2);
    assert!(store.get(DefinitionKind::Flag, "a").unwrap().is_none());
    assert!(store.current(DefinitionKind::Flag).unwrap().is_empty());
    assert_eq!(
        save(store, "a", Some(json!(3)), Expected::New, 3).unwrap(),
        3
    );
    let history = store.history(DefinitionKind::Flag, "a").unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[1].document, None);
}

/// A save made from an older version, or creating what exists, is refused and changes nothing.
pub fn stale_saves_conflict<S: DefinitionStore>(store: &S) {
    save(store, "a", Some(json!(1)), Expected::New, 1).unwrap();
    save(store, "a", Some(json!(2)), Expected::Version(1), 2).unwrap();
    let stale = save(store, "a", Some(json!(3)), Expected::Version(1), 3);
    assert!(
        matches!(
            stale,
            Err(DefinitionStoreError::Conflict { current: 2, .. })
        ),
        "{stale:?}"
    );
    let again = save(store, "a", Some(json!(3)), Expected::New, 3);
    assert!(matches!(again, Err(DefinitionStoreError::Conflict { .. })));
    let missing = save(store, "nobody", Some(json!(3)), Expected::Version(1), 3);
    assert!(matches!(
        missing,
        Err(DefinitionStoreError::Conflict { .. })
    ));
    let current = store.get(DefinitionKind::Flag, "a").unwrap().unwrap();
    assert_eq!((current.version, current.document), (2, Some(json!(2))));
    assert!(store.get(DefinitionKind::Flag, "nobody").unwrap().is_none());
}

/// Several changes commit together or not at all.
pub fn save_all_is_all_or_nothing<S: DefinitionStore>(store: &S) {
    save(store, "taken", Some(json!(0)), Expected::New, 1).unwrap();
    let revision = store.revision().unwrap();
    let change = |key: &str, expected| Change {
        kind: DefinitionKind::Flag,
        key: key.to_string(),
        document: Some(json!(key)),
        expected,
    };
    let refused = store.save_all(
        &[
            change("fresh", Expected::New),
            change("taken", Expected::New),
        ],
        at(2),
    );
    assert!(matches!(
        refused,
        Err(DefinitionStoreError::Conflict { .. })
    ));
    assert!(store.get(DefinitionKind::Flag, "fresh").unwrap().is_none());
    assert_eq!(store.revision().unwrap(), revision);

    let saved = store
        .save_all(
            &[
                change("fresh", Expected::New),
                change("fresh", Expected::Version(1)),
                change("taken", Expected::Version(1)),
            ],
            at(3),
        )
        .unwrap();
    let versions: Vec<_> = saved.iter().map(|s| (s.key.as_str(), s.version)).collect();
    assert_eq!(versions, vec![("fresh", 1), ("fresh", 2), ("taken", 2)]);
    assert!(store.revision().unwrap() > revision);
}

/// Documents come back as they were saved, whatever they hold.
pub fn documents_round_trip<S: DefinitionStore>(store: &S) {
    let document = json!({
        "text": "顾客 ✓ \"quoted\"", "big": 9_007_199_254_740_993u64, "float": 0.1,
        "nested": {"list": [1, null, true, {"x": []}]}
    });
    save(store, "doc", Some(document.clone()), Expected::New, 1).unwrap();
    let back = store.get(DefinitionKind::Flag, "doc").unwrap().unwrap();
    assert_eq!(back.document, Some(document));
}

/// Runs every behaviour of the suite as a test; the argument runs a
/// [`DefinitionStoreTest`] over a fresh store.
#[macro_export]
macro_rules! definition_store_conformance_suite {
    ($with_store:path) => {
        mod definition_store_conformance {
            use super::*;
            $crate::definition_store_conformance_suite!(@tests $with_store;
                saves_make_versions_and_keep_history,
                current_lists_one_kind_by_key,
                deletions_are_versions,
                stale_saves_conflict,
                save_all_is_all_or_nothing,
                documents_round_trip
            );
        }
    };
    (@tests $with_store:path; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                struct Test;
                impl $crate::conformance::DefinitionStoreTest for Test {
                    fn run<S: $crate::store::DefinitionStore>(self, store: &S) {
                        $crate::conformance::$name(store)
                    }
                }
                $with_store(Test)
            }
        )*
    };
}

/// One behaviour of the sticky-bucket suite.
pub trait StickyBucketStoreTest {
    fn run<S: StickyBucketStore>(self, store: &S);
}

fn doc(attribute: &str, value: &str, assignments: &[(&str, &str)]) -> StickyBucketDoc {
    StickyBucketDoc {
        attribute_name: attribute.into(),
        attribute_value: value.into(),
        assignments: assignments
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// Saved documents load back under their keys; unknown keys are absent.
pub fn sticky_documents_load_by_key<S: StickyBucketStore>(store: &S) {
    let ada = doc("id", "ada", &[("checkout__0", "one-page")]);
    let bo = doc("device_id", "设备-7", &[("nav__1", "1")]);
    store.save_assignments(&[ada.clone(), bo.clone()]).unwrap();
    let keys = vec![sticky_key(&ada), sticky_key(&bo), "id||nobody".to_string()];
    let loaded = store.load_assignments(&keys).unwrap();
    assert_eq!(loaded.len(), 2);
    assert_eq!(loaded[&sticky_key(&ada)], ada);
    assert_eq!(loaded[&sticky_key(&bo)], bo);
    assert!(store.load_assignments(&[]).unwrap().is_empty());
}

/// Saving a key again replaces its document whole.
pub fn sticky_documents_are_replaced<S: StickyBucketStore>(store: &S) {
    store
        .save_assignments(&[doc("id", "ada", &[("a__0", "x")])])
        .unwrap();
    let newer = doc("id", "ada", &[("a__0", "x"), ("b__0", "y")]);
    store
        .save_assignments(std::slice::from_ref(&newer))
        .unwrap();
    let loaded = store.load_assignments(&[sticky_key(&newer)]).unwrap();
    assert_eq!(loaded[&sticky_key(&newer)], newer);
}

/// Runs every behaviour of the sticky-bucket suite as a test; the argument runs a
/// [`StickyBucketStoreTest`] over a fresh store.
#[macro_export]
macro_rules! sticky_bucket_store_conformance_suite {
    ($with_store:path) => {
        mod sticky_bucket_store_conformance {
            use super::*;
            $crate::sticky_bucket_store_conformance_suite!(@tests $with_store;
                sticky_documents_load_by_key,
                sticky_documents_are_replaced
            );
        }
    };
    (@tests $with_store:path; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                struct Test;
                impl $crate::conformance::StickyBucketStoreTest for Test {
                    fn run<S: $crate::store::StickyBucketStore>(self, store: &S) {
                        $crate::conformance::$name(store)
                    }
                }
                $with_store(Test)
            }
        )*
    };
}
