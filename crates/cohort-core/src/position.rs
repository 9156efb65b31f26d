//! Where a message stands in the inbox.
//!
//! The inbox is split into partitions (one in the embedded mode; one per hash range of the
//! customer identifier in a partitioned stream). Inside a partition, entries have increasing
//! offsets; a [`Position`] names one of them, or the start before the first. Stages keep and
//! compare positions without knowing what an offset is made of, so a partitioned inbox fits
//! without touching them.
//!
//! ```
//! use cohort_core::Position;
//! let start = Position::start(0);
//! let tenth = Position::new(0, 10);
//! assert!(start < tenth);
//! assert_eq!(tenth.entries_since(start), 10);
//! assert_eq!(tenth.to_string(), "0/10");
//! ```

use serde::{Deserialize, Serialize};
use std::fmt;

/// A place in one partition of the inbox: ordered within that partition.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Position {
    partition: u32,
    offset: i64,
}

impl Position {
    /// The entry at `offset` of `partition`. Offsets start at 1; 0 is the start.
    pub const fn new(partition: u32, offset: i64) -> Self {
        Self { partition, offset }
    }

    /// Before the first entry of `partition`.
    pub const fn start(partition: u32) -> Self {
        Self::new(partition, 0)
    }

    pub const fn partition(self) -> u32 {
        self.partition
    }

    /// The entry's offset inside its partition, as its storage counts it.
    pub const fn offset(self) -> i64 {
        self.offset
    }

    pub const fn is_start(self) -> bool {
        self.offset <= 0
    }

    /// How many entries of the same partition lie after `earlier` up to and including `self`
    /// (0 when `earlier` is not earlier).
    pub fn entries_since(self, earlier: Position) -> u64 {
        debug_assert_eq!(
            self.partition, earlier.partition,
            "positions of two partitions"
        );
        (self.offset - earlier.offset).max(0) as u64
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.partition, self.offset)
    }
}
