//! The storage the processor writes customer state to: [`ProfileStore`] and its transaction,
//! [`ProfileBatch`].
//!
//! The processor ([`crate::Processor`]) owns the logic (which customer an event belongs to, which
//! traits it sets, what it adds to the computed traits); a store only keeps what it is told, with
//! the few rules that must hold inside storage (an event is kept once per inbox position, a trait
//! is replaced only by a newer one, computed traits add up). One batch of inbox entries is one
//! [`ProfileBatch`]: everything it changes becomes visible at once, together with the inbox
//! position it applied, when [`ProfileBatch::commit`] returns, and not at all if it is dropped
//! uncommitted. So after a crash the processor resumes at [`ProfileStore::applied`], and a batch
//! applied twice changes nothing.
//!
//! A batch in use, as the processor drives it:
//!
//! ```ignore
//! let mut batch = store.begin()?;
//! let customer = batch.identity_graph(at).create_customer()?;
//! if batch.insert_event(&event)? {            // false: this position was applied before
//!     batch.set_traits(customer, &traits, at)?;
//! }
//! batch.add_stats(&deltas)?;
//! batch.commit(last_position)?;
//! ```
//!
//! Every implementation passes the behavioural suite in `conformance` (feature `conformance`).

use crate::processor::StatsDeltas;
use cohort_core::{CustomerId, InboxEntry, Position};
use cohort_identity::IdentityGraph;
use serde_json::{Map, Value};

/// Customer state as the processor keeps it. One writer at a time: the processor that holds it.
pub trait ProfileStore {
    type Error: std::error::Error + Send + Sync + 'static;
    /// One transaction; see [`ProfileBatch`].
    type Batch<'a>: ProfileBatch<Error = Self::Error>
    where
        Self: 'a;

    /// The inbox position the last committed batch recorded ([`Position::default`] when none
    /// was): everything up to it is applied, nothing after it is.
    fn applied(&self) -> Result<Position, Self::Error>;

    /// Starts a batch. Until it is committed nothing it writes is visible to others, and
    /// dropping it uncommitted leaves the store as it was.
    fn begin(&mut self) -> Result<Self::Batch<'_>, Self::Error>;

    /// Called by the processor before each read of the inbox, whether the last one found work
    /// or not: a store that serves profiles from memory notices here the writes made outside the
    /// processor (by another process, say) and forgets what they made stale.
    fn between_batches(&mut self) {}
}

/// One transaction of a [`ProfileStore`]. All writes take effect together at
/// [`ProfileBatch::commit`]; reads inside the batch see the batch's own writes.
pub trait ProfileBatch {
    type Error: std::error::Error + Send + Sync + 'static;

    /// The identity graph inside this batch, without caching (the processor caches). Customers
    /// it creates, identifiers it attaches and merges it records are stamped with `at`, the
    /// event's time in microseconds since the Unix epoch.
    fn identity_graph(&mut self, at: i64) -> impl IdentityGraph<Error = Self::Error> + '_;

    /// Stores an event under its inbox position. Returns false, and changes nothing, when an
    /// event is already stored under that position: a replayed batch stores nothing twice.
    fn insert_event(&mut self, event: &NewEvent<'_>) -> Result<bool, Self::Error>;

    /// Sets `customer`'s traits as of `at` (microseconds): each key replaces the stored one only
    /// when [`crate::newer_wins`]`(stored_at, at)`, so the newest by event time wins whatever
    /// order events arrive in, and a tie goes to the later arrival. Strings are kept as they are,
    /// other values as JSON.
    fn set_traits(
        &mut self,
        customer: CustomerId,
        traits: &Map<String, Value>,
        at: i64,
    ) -> Result<(), Self::Error>;

    /// Adds computed-trait changes to what is stored: counts, orders and revenue are summed,
    /// `first_seen` keeps the earliest, `last_seen`, `last_order_at` and an event name's
    /// `last_at` the latest. A customer, name or day with nothing stored starts from the delta.
    fn add_stats(&mut self, deltas: &StatsDeltas) -> Result<(), Self::Error>;

    /// Folds everything stored of `from` into `into` after the identity graph merged them:
    /// traits (on the same key the later `updated_at` wins, a tie keeps `into`'s), computed
    /// traits (added as [`ProfileBatch::add_stats`] adds), and events (now `into`'s). Nothing
    /// remains under `from`. Only stored rows move: add pending deltas first.
    fn fold(&mut self, from: CustomerId, into: CustomerId) -> Result<(), Self::Error>;

    /// Records `applied` as the applied inbox position and makes the batch's changes durable and
    /// visible, all at once. An error means none of it happened.
    fn commit(self, applied: Position) -> Result<(), Self::Error>
    where
        Self: Sized;
}

/// An event to store, with what the processor derived from its message.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    /// The inbox entry: its position is the event's key; its body is stored as it is.
    pub entry: &'a InboxEntry,
    /// `None` when the event has no usable identifier.
    pub customer: Option<CustomerId>,
    pub message_id: &'a str,
    /// The message's `type`.
    pub kind: &'a str,
    /// [`cohort_core::message::event_key`] of the message.
    pub name: &'a str,
    /// The event's time, in microseconds since the Unix epoch.
    pub at: i64,
}
