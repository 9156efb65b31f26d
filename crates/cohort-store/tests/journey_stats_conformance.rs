//! The SQLite journey state passes the journey statistics conformance suite (which the
//! in-memory state passes in `cohort-journey`).

use cohort_journey::measure::conformance::JourneyStatsTest;
use cohort_store::{Store, StoreConfig};

fn with_state(test: impl JourneyStatsTest) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(StoreConfig::new(dir.path())).expect("open the store");
    let mut state = store.journey_state().expect("the journey state");
    test.run(&mut state);
}

cohort_journey::journey_stats_conformance_suite!(with_state);
