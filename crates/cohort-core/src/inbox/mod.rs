//! The inbox: the durable log of accepted messages between ingest and processing.
//!
//! Ingest hands the inbox a [`Submission`] (a request's accepted messages, the ones it refused
//! with their reasons, the failed events it replays) and answers the client only once
//! [`Inbox::append`] has returned, because the inbox commits before it returns. The processor
//! reads entries in order with [`Inbox::read_after`] and, once it has applied them to the
//! customer state, [`Inbox::acknowledge`]s their position, after which the inbox may drop them.
//!
//! The embedded implementation is SQLite with a group-committing writer (`cohort-store`); a
//! partitioned stream implements the same trait and passes the same behavioural suite.

use crate::Position;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Messages and failed events from one request, committed together.
#[derive(Debug, Default, Clone)]
pub struct Submission {
    pub source_id: i64,
    pub received_at: DateTime<Utc>,
    /// (message ID, message JSON) of each accepted message, in arrival order.
    pub accepted: Vec<(String, String)>,
    pub failed: Vec<NewFailedEvent>,
    /// Failed events this submission replays: marked replayed in the same commit.
    pub replayed: Vec<i64>,
}

impl Submission {
    /// Accepts already-prepared messages as they are, received now, each under its own
    /// `messageId` (empty when it has none). For tests and tools that feed a store directly;
    /// ingest builds its submissions through `cohort_collect`'s assembly, which validates.
    pub fn of_messages(source_id: i64, messages: &[serde_json::Value]) -> Submission {
        Submission {
            source_id,
            received_at: Utc::now(),
            accepted: messages
                .iter()
                .map(|m| {
                    let id = m.get("messageId").and_then(|id| id.as_str()).unwrap_or("");
                    (id.to_string(), m.to_string())
                })
                .collect(),
            ..Submission::default()
        }
    }
}

/// A refused message or request to keep, with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFailedEvent {
    pub source_id: Option<i64>,
    pub code: String,
    pub reason: String,
    /// The message (or request body) as received, possibly cut to a bounded size.
    pub payload: String,
    pub truncated: bool,
}

/// What a commit did with a submission.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// Messages newly appended to the inbox.
    pub accepted: usize,
    /// Messages already seen within the dedup window: acknowledged, not appended again.
    pub duplicates: usize,
    pub failed: usize,
    /// Position of the last message appended, when any was.
    pub last: Option<Position>,
}

/// One accepted message as the processor reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEntry {
    pub position: Position,
    pub source_id: i64,
    /// When the server received it, in microseconds since the Unix epoch.
    pub received_at: i64,
    /// The message's JSON text as ingest shaped it.
    pub body: String,
}

/// Why the inbox could not take or give entries.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// Back-pressure: too much is waiting to be processed (or to be committed); retry later.
    #[error("the inbox is full: {0} messages are waiting to be processed")]
    Overloaded(u64),
    #[error("the inbox is shutting down")]
    Closed,
    #[error("inbox storage: {0}")]
    Storage(String),
}

/// The durable log of accepted messages. See the module documentation.
#[async_trait::async_trait]
pub trait Inbox: Send + Sync + 'static {
    /// Commits a submission durably and returns what it did; nothing is acknowledged before
    /// the commit. Message IDs seen within the dedup window are counted, not appended again.
    async fn append(&self, submission: Submission) -> Result<Receipt, InboxError>;

    /// [`Inbox::append`] for callers outside an async runtime.
    fn append_blocking(&self, submission: Submission) -> Result<Receipt, InboxError>;

    /// Up to `limit` entries after `after`, in order.
    fn read_after(&self, after: Position, limit: usize) -> Result<Vec<InboxEntry>, InboxError>;

    /// The highest position committed so far, as this process knows it.
    fn committed(&self) -> Position;

    /// Waits until something is committed past `after`, or `timeout` passes.
    fn wait_committed_past(&self, after: Position, timeout: Duration);

    /// Everything up to `position` has been applied: the inbox may drop it.
    fn acknowledge(&self, position: Position);

    /// The highest position acknowledged.
    fn acknowledged(&self) -> Position;

    /// Waits until `position` is acknowledged, or `timeout` passes; true when it is.
    fn wait_acknowledged(&self, position: Position, timeout: Duration) -> bool;

    /// Messages committed but not yet acknowledged.
    fn lag(&self) -> u64 {
        self.committed().entries_since(self.acknowledged())
    }
}

#[cfg(feature = "conformance")]
pub mod conformance;
