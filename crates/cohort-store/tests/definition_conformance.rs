//! The SQLite definition and sticky-bucket stores pass their conformance suites (which the
//! in-memory stores pass in `cohort-experiment`).

use cohort_experiment::conformance::DefinitionStoreTest;
use cohort_store::{Store, StoreConfig};

fn with_store(test: impl DefinitionStoreTest) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(StoreConfig::new(dir.path())).expect("open the store");
    test.run(store.definitions());
}

cohort_experiment::definition_store_conformance_suite!(with_store);

fn with_sticky(test: impl cohort_experiment::conformance::StickyBucketStoreTest) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(StoreConfig::new(dir.path())).expect("open the store");
    test.run(store.definitions());
}

cohort_experiment::sticky_bucket_store_conformance_suite!(with_sticky);

/// Saved definitions are still there when the data directory is opened again.
#[test]
fn definitions_survive_reopening() {
    use cohort_experiment::store::{DefinitionKind, DefinitionStore, Expected};
    let dir = tempfile::tempdir().expect("a temporary directory");
    let document = serde_json::json!({"key": "f"});
    {
        let store = Store::open(StoreConfig::new(dir.path())).expect("open the store");
        store
            .definitions()
            .save(
                DefinitionKind::Flag,
                "f",
                Some(&document),
                Expected::New,
                chrono::Utc::now(),
            )
            .expect("saved");
    }
    let store = Store::open(StoreConfig::new(dir.path())).expect("open the store again");
    let back = store
        .definitions()
        .get(DefinitionKind::Flag, "f")
        .expect("read")
        .expect("there");
    assert_eq!(back.document, Some(document));
}
