//! What the real-time segment engine needs from storage: trait [`MembershipStore`].
//!
//! The engine ([`crate::realtime`]) trails the processor. Each round it opens a
//! [`MembershipSnapshot`], a consistent read of the state, and asks it which customers changed
//! since its [`Cursor`]: customers of the events applied between two inbox positions, customers
//! queued for re-evaluation, and new merges. It reads each affected customer's inputs (traits,
//! computed traits, events after a position, current memberships), decides the definitions, drops
//! the snapshot, and hands its [`Decisions`] with the new cursor to [`MembershipStore::record`],
//! which writes them atomically.
//!
//! The embedded implementation is SQLite (`cohort-store`); every implementation passes the same
//! behavioural suite, [`membership_store_conformance_suite!`](crate::membership_store_conformance_suite)
//! (feature `conformance`).
//!
//! A store is used from one thread at a time (`&mut self`), so an implementation can keep its
//! prepared statements and connection without locking. Methods that stream rows take a generic
//! callback, so reading a row costs no allocation and no dynamic call.

use crate::{Condition, referenced_segments};
use chrono::{DateTime, Utc};
use cohort_core::{CustomerId, Position};
use cohort_profile::ComputedTraits;
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashSet};

/// Why a membership store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// A stored definition cannot be read (its condition no longer parses): the engine keeps
    /// the definitions it had and retries; nothing else is affected.
    #[error("a stored segment cannot be read: {0}")]
    Unreadable(String),
    /// The storage failed: the round is abandoned and tried again.
    #[error("membership storage: {0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A segment (or tag) definition as the engine decides it.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    pub id: i64,
    pub name: String,
    pub condition: Condition,
}

/// Changes whenever a definition is created, changed or deleted; what it is made of is the
/// store's business. Compared, never interpreted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fingerprint(pub [i64; 3]);

/// How far the engine has decided: the inbox position of the last applied event it took into
/// account, and the last merge it handled (merges are numbered by the store, increasing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    pub events: Position,
    pub merges: i64,
}

/// One customer merged into another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Merge {
    /// Increasing: what [`Cursor::merges`] counts.
    pub id: i64,
    /// The merged-away customer: it exists no more, its events are now the survivor's.
    pub from: CustomerId,
    /// The survivor.
    pub into: CustomerId,
}

/// Which of a customer's events the engine wants, so a store skips the others cheaply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventSelection {
    /// Names of the events to hand over; others are only counted in the returned position.
    pub names: HashSet<String>,
    /// Names whose message body is needed (some definition filters them by property); other
    /// events are handed over without it, since reading and parsing bodies is most of the cost.
    pub bodies: HashSet<String>,
}

/// One stored event of a customer, as [`MembershipSnapshot::events_after`] hands it over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredEvent<'a> {
    /// Where it was applied from: a customer's events only ever grow by higher positions,
    /// except through a merge.
    pub position: Position,
    /// Its counted name (`$identify`, `$page` … for calls other than `track`).
    pub name: &'a str,
    pub timestamp: DateTime<Utc>,
    /// The message's JSON, when its name is in [`EventSelection::bodies`].
    pub body: Option<&'a str>,
}

/// One decided membership: the customer is (`true`) or is not a member of segment `segment`.
pub type Decision = (i64, bool);

/// What a round decided, written at once by [`MembershipStore::record`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decisions {
    /// When the decisions were made: the time of every entry and exit recorded.
    pub at: DateTime<Utc>,
    /// Customers merged away (or unknown): they leave every segment, with reason `merge`.
    pub gone: Vec<CustomerId>,
    /// Each customer's decided memberships; those that differ from the current membership are
    /// recorded as entries or exits with reason `event`.
    pub decided: Vec<(CustomerId, Vec<Decision>)>,
    /// Queued customers this round took ([`MembershipSnapshot::pending`]): dequeued.
    pub dequeued: Vec<CustomerId>,
    /// The new cursor.
    pub cursor: Cursor,
}

/// Storage for real-time membership. See the module documentation.
pub trait MembershipStore: Send + 'static {
    /// A consistent read of the state, while the processor may keep writing.
    type Snapshot<'a>: MembershipSnapshot
    where
        Self: 'a;

    /// The definitions' fingerprint. Called every round: must be cheap.
    fn fingerprint(&mut self) -> Result<Fingerprint, MembershipError>;

    /// Every definition, each after the definitions it refers to through `in_segment` (see
    /// [`evaluation_order`]), with a fingerprint read no later than the definitions, so that a
    /// change racing the read shows as a changed fingerprint next round.
    /// [`MembershipError::Unreadable`] when a stored definition cannot be read.
    fn definitions(&mut self) -> Result<(Fingerprint, Vec<Definition>), MembershipError>;

    /// Opens a snapshot: everything read through it sees the same state.
    fn snapshot(&mut self) -> Result<Self::Snapshot<'_>, MembershipError>;

    /// Writes a round's decisions and moves the cursor, all or nothing. Idempotent: a decision
    /// equal to the current membership records nothing, so a round repeated after a crash
    /// changes nothing twice. Every entry and exit adds one change to the history, in order.
    fn record(&mut self, decisions: &Decisions) -> Result<(), MembershipError>;
}

/// A consistent read of the state, from [`MembershipStore::snapshot`].
pub trait MembershipSnapshot {
    /// The cursor as last recorded; [`Cursor::default`] before any round.
    fn cursor(&mut self) -> Result<Cursor, MembershipError>;

    /// Calls `each(customer, event name)` for every event applied after `after` up to and
    /// including `upto` that belongs to a customer, in no promised order.
    fn changed(
        &mut self,
        after: Position,
        upto: Position,
        each: impl FnMut(CustomerId, &str),
    ) -> Result<(), MembershipError>;

    /// Up to `limit` customers queued for re-evaluation (traits changed outside event
    /// processing, or a batch changed their membership). They stay queued until a
    /// [`Decisions::dequeued`] names them.
    fn pending(&mut self, limit: usize) -> Result<Vec<CustomerId>, MembershipError>;

    /// The merges numbered after `after`, in order.
    fn merges_after(&mut self, after: i64) -> Result<Vec<Merge>, MembershipError>;

    /// The live customer an ID stands for: itself, the survivor it was merged into, or `None`
    /// for an unknown ID.
    fn survivor(&mut self, customer: CustomerId) -> Result<Option<CustomerId>, MembershipError>;

    /// Whether the customer has an event applied at or before `position`.
    fn has_events_through(
        &mut self,
        customer: CustomerId,
        position: Position,
    ) -> Result<bool, MembershipError>;

    /// The customer's traits (empty for an unknown customer).
    fn traits(&mut self, customer: CustomerId) -> Result<Map<String, Value>, MembershipError>;

    /// The customer's computed traits as of `now` (rolling windows end at `now`).
    fn computed(
        &mut self,
        customer: CustomerId,
        now: DateTime<Utc>,
    ) -> Result<ComputedTraits, MembershipError>;

    /// Calls `each` for the customer's events applied after `after` whose names `select` names,
    /// in no promised order, and returns the highest position seen among all of the customer's
    /// events after `after`, selected or not (`after` when there is none).
    fn events_after(
        &mut self,
        customer: CustomerId,
        after: Position,
        select: &EventSelection,
        each: impl FnMut(StoredEvent<'_>),
    ) -> Result<Position, MembershipError>;

    /// IDs of the segments the customer is a member of now.
    fn memberships(&mut self, customer: CustomerId) -> Result<HashSet<i64>, MembershipError>;

    /// Ends the snapshot. Dropping it ends it too; this reports an error.
    fn finish(self) -> Result<(), MembershipError>
    where
        Self: Sized;
}

/// Orders definitions so that every one comes after those it refers to through `in_segment`
/// (references are checked acyclic when stored; anything left over is appended as it is).
/// Otherwise keeps the given order.
///
/// ```
/// use cohort_segment::{Condition, membership::evaluation_order};
/// let defs = vec![
///     ("b", Condition::from_json(r#"{"type": "in_segment", "segment": "a"}"#)?),
///     ("a", Condition::from_json(r#"{"type": "trait", "key": "plan", "op": "exists"}"#)?),
/// ];
/// let ordered = evaluation_order(defs, |d| d.0, |d| &d.1);
/// assert_eq!(ordered.iter().map(|d| d.0).collect::<Vec<_>>(), ["a", "b"]);
/// # Ok::<(), cohort_segment::ConditionError>(())
/// ```
pub fn evaluation_order<T>(
    defs: Vec<T>,
    name: impl Fn(&T) -> &str,
    condition: impl Fn(&T) -> &Condition,
) -> Vec<T> {
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut ordered = Vec::with_capacity(defs.len());
    let mut rest = defs;
    loop {
        let (ready, waiting): (Vec<_>, Vec<_>) = rest.into_iter().partition(|d| {
            referenced_segments(condition(d))
                .iter()
                .all(|r| done.contains(r))
        });
        if ready.is_empty() {
            ordered.extend(waiting);
            return ordered;
        }
        for d in &ready {
            done.insert(name(d).to_string());
        }
        ordered.extend(ready);
        rest = waiting;
    }
}

#[cfg(feature = "conformance")]
pub mod conformance;
