//! The SQLite identity graph, inside a profile store's batch, passes the identity graph
//! conformance suite (which the in-memory graph passes in `cohort-identity`).

use cohort_identity::conformance::GraphTest;
use cohort_profile::{ProfileBatch, ProfileStore};
use cohort_store::{Durability, SqliteProfileStore};

fn with_graph(test: impl GraphTest) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut store =
        SqliteProfileStore::open(dir.path(), Durability::Normal).expect("open the profile store");
    let mut batch = store.begin().expect("begin a batch");
    test.run(&mut batch.identity_graph(1_700_000_000_000_000));
}

cohort_identity::identity_graph_conformance_suite!(with_graph);
