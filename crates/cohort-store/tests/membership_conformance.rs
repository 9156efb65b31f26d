//! The SQLite membership store passes the `MembershipStore` conformance suite.
//!
//! The fixture is a processing [`Store`]: messages go through its inbox and processor, as in
//! production, and definitions and the re-evaluation queue through its segment API.

use cohort_core::{CustomerId, Position};
use cohort_segment::Condition;
use cohort_segment::membership::conformance::Fixture;
use cohort_store::{NewSegment, SegmentKind, SqliteMemberships, StoreConfig, Submission};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

mod common;

/// The suite drives the membership store itself, so only the processor runs beside it.
struct SqliteFixture {
    store: common::Processing,
}

fn open(dir: &Path) -> SqliteFixture {
    SqliteFixture {
        store: common::open_processing(StoreConfig::new(dir)),
    }
}

impl Fixture for SqliteFixture {
    type Store = SqliteMemberships;

    fn store(&self) -> SqliteMemberships {
        self.store.membership_store().expect("a membership store")
    }

    fn define(&self, name: &str, condition: Value) -> i64 {
        let new = NewSegment {
            name: name.into(),
            kind: SegmentKind::Segment,
            description: String::new(),
            condition: Condition::from_value(condition).expect("a condition"),
        };
        self.store.segments().create(&new).expect("create").id
    }

    fn apply(&self, messages: &[Value]) -> Position {
        let submission = Submission::of_messages(1, messages);
        let receipt = self.store.append_blocking(submission).expect("append");
        assert!(self.store.wait_processed(Duration::from_secs(10)));
        receipt.last.expect("appended")
    }

    fn customer(&self, kind: &str, value: &str) -> CustomerId {
        self.store
            .profiles()
            .find_customer(kind, value)
            .expect("find")
            .expect("a customer")
    }

    fn queue(&self, customers: &[CustomerId]) {
        self.store
            .segments()
            .mark_pending(customers)
            .expect("queue");
    }

    fn history(&self, customer: CustomerId) -> Vec<(i64, bool, String)> {
        let changes = self
            .store
            .segments()
            .changes(0, None, Some(customer), 1000)
            .expect("changes");
        changes
            .into_iter()
            .map(|c| {
                let id = self.store.segments().get(&c.segment).expect("segment").id;
                (id, c.change == "entered", c.reason)
            })
            .collect()
    }
}

cohort_segment::membership_store_conformance_suite!(open);
