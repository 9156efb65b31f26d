//! The SQLite journey state passes the journey state conformance suite with every change made
//! inside one `in_one_transaction` (as the journey loop fires due entries), and a batch is
//! seen by other connections whole, at its commit.

use cohort_journey::state::{JourneyStateStore, Move, NewEntry};
use cohort_journey::state_conformance::JourneyStateTest;
use cohort_store::{Store, StoreConfig};

fn with_state(test: impl JourneyStateTest) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(StoreConfig::new(dir.path())).expect("open the store");
    let mut state = store.journey_state().expect("the journey state");
    state
        .in_one_transaction(|state| test.run(state))
        .expect("the batch commits");
}

cohort_journey::journey_state_conformance_suite!(with_state);

#[test]
fn a_batch_is_seen_whole_at_its_commit() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(StoreConfig::new(dir.path())).expect("open the store");
    let mut state = store.journey_state().expect("the journey state");
    let mut reader = store.journey_state().expect("a second connection");
    let at = chrono::DateTime::UNIX_EPOCH;
    let ids: Vec<_> = (1..=3)
        .map(|customer| {
            state
                .enter(&NewEntry::new("welcome", 1, customer, "wait", at), false)
                .expect("the store works")
                .expect("entered")
        })
        .collect();
    state
        .in_one_transaction(|state| {
            for &id in &ids {
                assert!(state.advance(id, "wait", &Move::to("sms"), &[]).unwrap());
            }
            // A change refused inside the batch leaves the others.
            assert!(!state.advance(ids[0], "wait", &Move::to("x"), &[]).unwrap());
            let seen = reader.entry(ids[0]).unwrap().unwrap();
            assert_eq!(
                seen.step, "wait",
                "another connection sees the batch before its commit"
            );
        })
        .expect("the batch commits");
    for id in ids {
        assert_eq!(reader.entry(id).unwrap().unwrap().step, "sms");
    }
}
