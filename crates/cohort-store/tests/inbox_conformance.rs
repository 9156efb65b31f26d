//! The SQLite inbox passes the inbox conformance suite.

use cohort_core::Position;
use cohort_store::{SqliteInbox, StoreConfig};
use std::path::Path;

fn open(dir: &Path, applied: Position) -> SqliteInbox {
    SqliteInbox::open(&StoreConfig::new(dir), applied).expect("open the SQLite inbox")
}

cohort_core::inbox_conformance_suite!(open);
