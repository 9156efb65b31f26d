//! What the journey engine needs from storage to run exactly once: trait [`JourneyStateStore`].
//!
//! An **entry** is one customer's pass through one version of a journey. It sits at one step,
//! maybe until a due time (a delay, or a wait's timeout). The engine moves it with
//! [`JourneyStateStore::advance`], a compare-and-set on the step it was at: a timer firing and an
//! event arriving for the same entry cannot both move it. The **effects** of the step it leaves
//! (a send, a coupon, a webhook call) are recorded in the same commit under their idempotency
//! key (journey, version, entry, step), into an outbox that the channels drain
//! ([`JourneyStateStore::pending_effects`], [`JourneyStateStore::complete_effect`]). So after
//! `kill -9` a step is neither lost (its move and effects committed together, or neither) nor
//! repeated (an effect whose key exists is not recorded twice); a send in flight at the kill is
//! retried with the same key, which the sink can recognise.
//!
//! A failed attempt that may pass is put off with [`JourneyStateStore::defer_effect`]: the
//! effect stays in the outbox, out of [`JourneyStateStore::pending_effects`] until its retry
//! time, with the failure as its `last_error`. One that is given up is dead-lettered
//! ([`JourneyStateStore::dead_letter_effect`]): completed with status [`DEAD_LETTER`] and its
//! reason, listed for operators by [`JourneyStateStore::dead_letters`], and put back in the
//! outbox by [`JourneyStateStore::replay_effect`] once the cause is fixed. The channel's
//! `retry::RetryPolicy` decides which of the two an attempt gets:
//!
//! ```
//! use cohort_journey::state::{DEAD_LETTER, Effect, JourneyStateStore, MemoryJourneyState, Move, NewEntry};
//! use chrono::{Duration, Utc};
//! # let mut state = MemoryJourneyState::default();
//! let now = Utc::now();
//! # let entry = state.enter(&NewEntry::new("welcome", 1, 42, "sms", now), false).unwrap().unwrap();
//! # let effect = Effect { key: "welcome:1:1:sms".into(), channel: "sms".into(), payload: serde_json::Value::Null };
//! # state.advance(entry, "sms", &Move::exit("completed"), &[effect]).unwrap();
//! let key = "welcome:1:1:sms";
//! assert!(state.defer_effect(key, now + Duration::seconds(30), "503 from the provider").unwrap());
//! assert!(state.pending_effects("sms", now, 10).unwrap().is_empty());
//! let due = state.pending_effects("sms", now + Duration::seconds(30), 10).unwrap();
//! assert_eq!((due[0].attempts, due[0].last_error.as_deref()), (1, Some("503 from the provider")));
//!
//! assert!(state.dead_letter_effect(key, "8 attempts; the last: 503").unwrap());
//! assert_eq!(state.effect_status(key).unwrap().as_deref(), Some(DEAD_LETTER));
//! assert_eq!(state.dead_letters("sms", 10).unwrap().len(), 1);
//! assert!(state.replay_effect(key).unwrap());
//! assert_eq!(state.pending_effects("sms", now, 10).unwrap()[0].attempts, 0);
//! ```
//!
//! Timers are the entries' due times, read in order ([`JourneyStateStore::due`]); nothing scans
//! customers. When two customers merge, [`JourneyStateStore::reassign_customer`] moves the
//! merged customer's entries to the survivor, ending those that would make the survivor be in
//! one journey twice.
//!
//! An entry started with a [`NewEntry::key`] (its cause: the journey, the customer and the
//! triggering message) is started once, however often that cause is delivered. A move that
//! sends a message records it on the entry ([`JourneyStateStore::advance_with_message`]), so a
//! conversion ([`JourneyStateStore::convert`], at most one per entry) is attributed to the
//! entry's last message; entries stay open to conversions after they end, for as long as the
//! caller's window asks ([`JourneyStateStore::convertible`]).
//!
//! The embedded implementation is SQLite (`cohort-store`); [`MemoryJourneyState`] keeps state in
//! memory. Both pass
//! `journey_state_conformance_suite!` (feature
//! `conformance`).
//!
//! ```
//! use cohort_journey::state::{JourneyStateStore, MemoryJourneyState, NewEntry, Move};
//! use chrono::{Duration, Utc};
//! let mut state = MemoryJourneyState::default();
//! let now = Utc::now();
//! let new = NewEntry::new("welcome", 1, 42, "wait-24h", now)
//!     .due_at(now + Duration::hours(24));
//! let entry = state.enter(&new, false).unwrap().expect("entered");
//! assert!(state.due(now, 10).unwrap().is_empty());
//! let due = state.due(now + Duration::hours(24), 10).unwrap();
//! assert_eq!(due[0].id, entry);
//! assert!(state.advance(entry, "wait-24h", &Move::to("send-sms"), &[]).unwrap());
//! ```

use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// A customer, as the identity graph numbers them.
pub type CustomerId = i64;

/// One customer's pass through a journey version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId(pub i64);

/// An entry to start.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    pub journey: String,
    pub version: u32,
    pub customer: CustomerId,
    /// The first step.
    pub step: String,
    /// When the step is due, if it waits.
    pub due_at: Option<DateTime<Utc>>,
    /// What entered it (the triggering event or API payload), for templates and conditions.
    pub payload: Value,
    pub entered_at: DateTime<Utc>,
    /// What caused the entry, unique among all entries: a second entry with the same key is
    /// refused, so a trigger delivered twice enters once. `None` for no such check.
    pub key: Option<String>,
    /// Held out of the journey to measure its lift: counted and measured, given nothing.
    pub held_out: bool,
}

impl NewEntry {
    pub fn new(
        journey: &str,
        version: u32,
        customer: CustomerId,
        step: &str,
        entered_at: DateTime<Utc>,
    ) -> Self {
        NewEntry {
            journey: journey.to_string(),
            version,
            customer,
            step: step.to_string(),
            due_at: None,
            payload: Value::Null,
            entered_at,
            key: None,
            held_out: false,
        }
    }

    pub fn due_at(mut self, due: DateTime<Utc>) -> Self {
        self.due_at = Some(due);
        self
    }

    pub fn payload(mut self, payload: Value) -> Self {
        self.payload = payload;
        self
    }

    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn held_out(mut self, held_out: bool) -> Self {
        self.held_out = held_out;
        self
    }
}

/// An entry as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: EntryId,
    pub journey: String,
    pub version: u32,
    pub customer: CustomerId,
    /// The step it is at (its last, once finished).
    pub step: String,
    pub due_at: Option<DateTime<Utc>>,
    pub payload: Value,
    pub entered_at: DateTime<Utc>,
    /// Why it ended; `None` while active.
    pub exit_reason: Option<String>,
    pub held_out: bool,
    /// Moves made so far: a step reached again through a loop is told apart by it.
    pub moves: u32,
    /// The last message the entry sent, which a conversion is attributed to.
    pub last_message: Option<Message>,
    pub conversion: Option<Conversion>,
}

/// A message an entry sent: its effect's key and when the step recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub key: String,
    pub at: DateTime<Utc>,
}

/// An entry's conversion: when, what caused it (an event's message ID, a membership change),
/// the revenue it brought when the goal names one, and the message it is attributed to.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversion {
    pub at: DateTime<Utc>,
    pub cause: String,
    pub revenue: Option<f64>,
    pub message: Option<String>,
}

impl Entry {
    pub fn active(&self) -> bool {
        self.exit_reason.is_none()
    }

    /// Where a conversion window starts: the last message, or the entry itself when it sent
    /// none (held-out entries, and entries that have not reached a send yet).
    pub fn window_start(&self) -> DateTime<Utc> {
        self.last_message.as_ref().map_or(self.entered_at, |m| m.at)
    }
}

/// Where an entry goes next.
#[derive(Debug, Clone, PartialEq)]
pub enum Move {
    /// To a step, due at once or at a time.
    Step {
        step: String,
        due_at: Option<DateTime<Utc>>,
    },
    /// Out of the journey, with the reason (`completed`, `exit criteria`, `merged`, …).
    Exit { reason: String },
}

impl Move {
    pub fn to(step: &str) -> Move {
        Move::Step {
            step: step.to_string(),
            due_at: None,
        }
    }

    pub fn to_at(step: &str, due_at: DateTime<Utc>) -> Move {
        Move::Step {
            step: step.to_string(),
            due_at: Some(due_at),
        }
    }

    pub fn exit(reason: &str) -> Move {
        Move::Exit {
            reason: reason.to_string(),
        }
    }
}

/// Something a step does outside the state: a send, a coupon issue, a webhook call. Recorded
/// with the move that leaves the step, carried out by the `channel`'s worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Effect {
    /// (journey, version, entry, step): see [`effect_key`].
    pub key: String,
    pub channel: String,
    pub payload: Value,
}

/// The idempotency key of a step's effect, stable across restarts: what a sink sees as
/// `Idempotency-Key` or `Message-ID`.
pub fn effect_key(journey: &str, version: u32, entry: EntryId, step: &str) -> String {
    format!("{journey}:{version}:{}:{step}", entry.0)
}

/// An effect as the outbox holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEffect {
    pub effect: Effect,
    /// Earlier attempts that did not complete.
    pub attempts: u32,
    /// Not to be tried before this time (a deferred retry); `None` for at once.
    pub not_before: Option<DateTime<Utc>>,
    /// Why the last attempt failed; for a dead letter, why it was given up.
    pub last_error: Option<String>,
}

/// The status of an effect given up after its retries ([`JourneyStateStore::dead_letter_effect`]):
/// kept, with its reason, for an operator to see and replay.
pub const DEAD_LETTER: &str = "dead_letter";

/// Why the state store failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("journey state: {0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("journey state is unreadable: {0}")]
    Unreadable(String),
}

/// Journey runtime state. Used from one thread at a time (`&mut self`), as the engine's loop
/// owns it.
pub trait JourneyStateStore {
    /// Starts an entry, unless `allow_concurrent` is false and the customer has an active entry
    /// in this journey (any version), or an entry with the same [`NewEntry::key`] exists: then
    /// `None`.
    fn enter(
        &mut self,
        new: &NewEntry,
        allow_concurrent: bool,
    ) -> Result<Option<EntryId>, StateError>;

    fn entry(&mut self, id: EntryId) -> Result<Option<Entry>, StateError>;

    /// A customer's active entries, oldest first: those an arriving event may move.
    fn active_entries(&mut self, customer: CustomerId) -> Result<Vec<Entry>, StateError>;

    /// The customer's latest entry in the journey (any version, active or not): what a
    /// re-entry policy looks at.
    fn latest_entry(
        &mut self,
        customer: CustomerId,
        journey: &str,
    ) -> Result<Option<Entry>, StateError>;

    /// Moves the entry from `from_step` and records `effects`, all in one commit; false, with
    /// nothing changed, when the entry is no longer active at `from_step` (another move won).
    /// An effect whose key is already recorded is not recorded again.
    fn advance(
        &mut self,
        id: EntryId,
        from_step: &str,
        to: &Move,
        effects: &[Effect],
    ) -> Result<bool, StateError> {
        self.advance_with_message(id, from_step, to, effects, None)
    }

    /// [`advance`](JourneyStateStore::advance), recording in the same commit that the step sent
    /// `message`, now the entry's last. Every move counts one in [`Entry::moves`].
    fn advance_with_message(
        &mut self,
        id: EntryId,
        from_step: &str,
        to: &Move,
        effects: &[Effect],
        message: Option<&Message>,
    ) -> Result<bool, StateError>;

    /// Active entries due at or before `now`, earliest first, at most `limit`.
    fn due(&mut self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Entry>, StateError> {
        self.due_skipping(now, &[], limit)
    }

    /// [`due`](JourneyStateStore::due), leaving out the entries of the journeys in `skip`
    /// (paused ones, whose timers wait until they resume).
    fn due_skipping(
        &mut self,
        now: DateTime<Utc>,
        skip: &[String],
        limit: usize,
    ) -> Result<Vec<Entry>, StateError>;

    /// The customer's entries (active or ended) without a conversion whose window started at
    /// or after `since` (see [`Entry::window_start`]), oldest first.
    fn convertible(
        &mut self,
        customer: CustomerId,
        since: DateTime<Utc>,
    ) -> Result<Vec<Entry>, StateError>;

    /// Records the entry's conversion; false, with nothing changed, when it already has one.
    fn convert(&mut self, id: EntryId, conversion: &Conversion) -> Result<bool, StateError>;

    /// Ends every active entry of a journey (all versions) with `reason`, as archiving does.
    /// Returns how many ended.
    fn exit_journey(&mut self, journey: &str, reason: &str) -> Result<usize, StateError>;

    /// Effects not yet completed for `channel` that may be tried at `now` (no retry time, or
    /// one at or before `now`), at most `limit`: those never deferred first, in the order they
    /// were recorded, then deferred ones by retry time.
    fn pending_effects(
        &mut self,
        channel: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<PendingEffect>, StateError>;

    /// Records an attempt's outcome: `done` takes the effect out of the outbox with its
    /// `status` (sent, failed for good, skipped by a rule …); otherwise it stays, one attempt
    /// more. An effect already completed is left as it is.
    fn complete_effect(&mut self, key: &str, status: &str, done: bool) -> Result<(), StateError>;

    /// Puts a pending effect off after a failed attempt: one attempt more, not to be tried
    /// before `retry_at`, `reason` as its last error. False, with nothing changed, when no
    /// pending effect has the key.
    fn defer_effect(
        &mut self,
        key: &str,
        retry_at: DateTime<Utc>,
        reason: &str,
    ) -> Result<bool, StateError>;

    /// Gives a pending effect up after its last failed attempt: completed with status
    /// [`DEAD_LETTER`], one attempt more, `reason` kept as its last error. False, with nothing
    /// changed, when no pending effect has the key.
    fn dead_letter_effect(&mut self, key: &str, reason: &str) -> Result<bool, StateError>;

    /// Dead-lettered effects of `channel`, in the order they were recorded, at most `limit`;
    /// each one's `last_error` is why it was given up.
    fn dead_letters(
        &mut self,
        channel: &str,
        limit: usize,
    ) -> Result<Vec<PendingEffect>, StateError>;

    /// Puts a dead-lettered effect back in the outbox, as if new (no attempts, no retry time;
    /// its last error is kept for the record). False when the key is not a dead letter: an
    /// effect that was sent, or that is still pending, is never replayed.
    fn replay_effect(&mut self, key: &str) -> Result<bool, StateError>;

    /// The final status of a completed effect.
    fn effect_status(&mut self, key: &str) -> Result<Option<String>, StateError>;

    /// Moves `from`'s entries to `into` after a merge; an active entry of `from` in a journey
    /// where `into` is active too ends with reason `merged`. Returns the entries moved.
    fn reassign_customer(
        &mut self,
        from: CustomerId,
        into: CustomerId,
    ) -> Result<usize, StateError>;

    /// Active entries, by journey: what waits.
    fn active_counts(&mut self) -> Result<BTreeMap<String, u64>, StateError>;

    /// How many entries of one journey version are active, and the latest message any of its
    /// entries sent: a finishing version with none active and past its goal window after that
    /// message can do nothing more, and is archived.
    fn version_activity(
        &mut self,
        journey: &str,
        version: u32,
    ) -> Result<VersionActivity, StateError>;
}

/// See [`JourneyStateStore::version_activity`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VersionActivity {
    pub active: u64,
    pub last_message_at: Option<DateTime<Utc>>,
}

/// Journey state in memory, for tests and tools.
#[derive(Debug, Default)]
pub struct MemoryJourneyState {
    entries: BTreeMap<EntryId, Entry>,
    keys: BTreeSet<String>,
    effects: BTreeMap<String, (u64, PendingEffect, Option<String>)>,
    next_entry: i64,
    next_effect: u64,
}

impl JourneyStateStore for MemoryJourneyState {
    fn enter(
        &mut self,
        new: &NewEntry,
        allow_concurrent: bool,
    ) -> Result<Option<EntryId>, StateError> {
        if new.key.as_ref().is_some_and(|k| self.keys.contains(k)) {
            return Ok(None);
        }
        if !allow_concurrent
            && self
                .entries
                .values()
                .any(|e| e.active() && e.customer == new.customer && e.journey == new.journey)
        {
            return Ok(None);
        }
        if let Some(key) = &new.key {
            self.keys.insert(key.clone());
        }
        self.next_entry += 1;
        let id = EntryId(self.next_entry);
        self.entries.insert(
            id,
            Entry {
                id,
                journey: new.journey.clone(),
                version: new.version,
                customer: new.customer,
                step: new.step.clone(),
                due_at: new.due_at,
                payload: new.payload.clone(),
                entered_at: new.entered_at,
                exit_reason: None,
                held_out: new.held_out,
                moves: 0,
                last_message: None,
                conversion: None,
            },
        );
        Ok(Some(id))
    }

    fn entry(&mut self, id: EntryId) -> Result<Option<Entry>, StateError> {
        Ok(self.entries.get(&id).cloned())
    }

    fn active_entries(&mut self, customer: CustomerId) -> Result<Vec<Entry>, StateError> {
        Ok(self
            .entries
            .values()
            .filter(|e| e.active() && e.customer == customer)
            .cloned()
            .collect())
    }

    fn latest_entry(
        &mut self,
        customer: CustomerId,
        journey: &str,
    ) -> Result<Option<Entry>, StateError> {
        Ok(self
            .entries
            .values()
            .rev()
            .find(|e| e.customer == customer && e.journey == journey)
            .cloned())
    }

    fn advance_with_message(
        &mut self,
        id: EntryId,
        from_step: &str,
        to: &Move,
        effects: &[Effect],
        message: Option<&Message>,
    ) -> Result<bool, StateError> {
        let Some(entry) = self.entries.get_mut(&id) else {
            return Ok(false);
        };
        if !entry.active() || entry.step != from_step {
            return Ok(false);
        }
        match to {
            Move::Step { step, due_at } => {
                entry.step = step.clone();
                entry.due_at = *due_at;
            }
            Move::Exit { reason } => {
                entry.due_at = None;
                entry.exit_reason = Some(reason.clone());
            }
        }
        entry.moves = entry.moves.saturating_add(1);
        if let Some(message) = message {
            entry.last_message = Some(message.clone());
        }
        for effect in effects {
            if !self.effects.contains_key(&effect.key) {
                self.next_effect += 1;
                self.effects.insert(
                    effect.key.clone(),
                    (
                        self.next_effect,
                        PendingEffect {
                            effect: effect.clone(),
                            attempts: 0,
                            not_before: None,
                            last_error: None,
                        },
                        None,
                    ),
                );
            }
        }
        Ok(true)
    }

    fn due_skipping(
        &mut self,
        now: DateTime<Utc>,
        skip: &[String],
        limit: usize,
    ) -> Result<Vec<Entry>, StateError> {
        let mut due: Vec<Entry> = self
            .entries
            .values()
            .filter(|e| e.active() && e.due_at.is_some_and(|d| d <= now))
            .filter(|e| !skip.contains(&e.journey))
            .cloned()
            .collect();
        due.sort_by_key(|e| (e.due_at, e.id));
        due.truncate(limit);
        Ok(due)
    }

    fn convertible(
        &mut self,
        customer: CustomerId,
        since: DateTime<Utc>,
    ) -> Result<Vec<Entry>, StateError> {
        Ok(self
            .entries
            .values()
            .filter(|e| e.customer == customer && e.conversion.is_none())
            .filter(|e| e.window_start() >= since)
            .cloned()
            .collect())
    }

    fn convert(&mut self, id: EntryId, conversion: &Conversion) -> Result<bool, StateError> {
        match self.entries.get_mut(&id) {
            Some(entry) if entry.conversion.is_none() => {
                entry.conversion = Some(conversion.clone());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn exit_journey(&mut self, journey: &str, reason: &str) -> Result<usize, StateError> {
        let mut ended = 0;
        for entry in self
            .entries
            .values_mut()
            .filter(|e| e.active() && e.journey == journey)
        {
            entry.exit_reason = Some(reason.to_string());
            entry.due_at = None;
            ended += 1;
        }
        Ok(ended)
    }

    fn pending_effects(
        &mut self,
        channel: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<PendingEffect>, StateError> {
        let mut pending: Vec<&(u64, PendingEffect, Option<String>)> = self
            .effects
            .values()
            .filter(|(_, p, status)| status.is_none() && p.effect.channel == channel)
            .filter(|(_, p, _)| p.not_before.is_none_or(|at| at <= now))
            .collect();
        pending.sort_by_key(|(order, p, _)| (p.not_before, *order));
        Ok(pending
            .into_iter()
            .take(limit)
            .map(|(_, p, _)| p.clone())
            .collect())
    }

    fn complete_effect(&mut self, key: &str, status: &str, done: bool) -> Result<(), StateError> {
        if let Some((_, pending, final_status @ None)) = self.effects.get_mut(key) {
            if done {
                *final_status = Some(status.to_string());
            } else {
                pending.attempts = pending.attempts.saturating_add(1);
            }
        }
        Ok(())
    }

    fn defer_effect(
        &mut self,
        key: &str,
        retry_at: DateTime<Utc>,
        reason: &str,
    ) -> Result<bool, StateError> {
        let Some((_, pending, None)) = self.effects.get_mut(key) else {
            return Ok(false);
        };
        pending.attempts = pending.attempts.saturating_add(1);
        pending.not_before = Some(retry_at);
        pending.last_error = Some(reason.to_string());
        Ok(true)
    }

    fn dead_letter_effect(&mut self, key: &str, reason: &str) -> Result<bool, StateError> {
        let Some((_, pending, status @ None)) = self.effects.get_mut(key) else {
            return Ok(false);
        };
        pending.attempts = pending.attempts.saturating_add(1);
        pending.last_error = Some(reason.to_string());
        *status = Some(DEAD_LETTER.to_string());
        Ok(true)
    }

    fn dead_letters(
        &mut self,
        channel: &str,
        limit: usize,
    ) -> Result<Vec<PendingEffect>, StateError> {
        let mut dead: Vec<&(u64, PendingEffect, Option<String>)> = self
            .effects
            .values()
            .filter(|(_, p, status)| {
                status.as_deref() == Some(DEAD_LETTER) && p.effect.channel == channel
            })
            .collect();
        dead.sort_by_key(|(order, _, _)| *order);
        Ok(dead
            .into_iter()
            .take(limit)
            .map(|(_, p, _)| p.clone())
            .collect())
    }

    fn replay_effect(&mut self, key: &str) -> Result<bool, StateError> {
        match self.effects.get_mut(key) {
            Some((_, pending, status)) if status.as_deref() == Some(DEAD_LETTER) => {
                *status = None;
                pending.attempts = 0;
                pending.not_before = None;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn effect_status(&mut self, key: &str) -> Result<Option<String>, StateError> {
        Ok(self.effects.get(key).and_then(|(_, _, s)| s.clone()))
    }

    fn reassign_customer(
        &mut self,
        from: CustomerId,
        into: CustomerId,
    ) -> Result<usize, StateError> {
        let survivor_journeys: Vec<String> = self
            .entries
            .values()
            .filter(|e| e.active() && e.customer == into)
            .map(|e| e.journey.clone())
            .collect();
        let mut moved = 0;
        for entry in self.entries.values_mut().filter(|e| e.customer == from) {
            if entry.active() && survivor_journeys.contains(&entry.journey) {
                entry.exit_reason = Some("merged".into());
                entry.due_at = None;
            }
            entry.customer = into;
            moved += 1;
        }
        Ok(moved)
    }

    fn active_counts(&mut self) -> Result<BTreeMap<String, u64>, StateError> {
        let mut counts = BTreeMap::new();
        for e in self.entries.values().filter(|e| e.active()) {
            *counts.entry(e.journey.clone()).or_insert(0) += 1;
        }
        Ok(counts)
    }

    fn version_activity(
        &mut self,
        journey: &str,
        version: u32,
    ) -> Result<VersionActivity, StateError> {
        let mut activity = VersionActivity::default();
        for e in self
            .entries
            .values()
            .filter(|e| e.journey == journey && e.version == version)
        {
            activity.active += u64::from(e.active());
            if let Some(message) = &e.last_message {
                activity.last_message_at = activity.last_message_at.max(Some(message.at));
            }
        }
        Ok(activity)
    }
}

impl MemoryJourneyState {
    /// Every entry, and every effect with its final status (`None` while in the outbox): what
    /// `measure` counts.
    pub(crate) fn entries_and_effects(
        &self,
    ) -> (
        impl Iterator<Item = &Entry>,
        impl Iterator<Item = (&Effect, Option<&str>)>,
    ) {
        (
            self.entries.values(),
            self.effects
                .values()
                .map(|(_, pending, status)| (&pending.effect, status.as_deref())),
        )
    }
}

#[cfg(test)]
mod tests {
    fn with_state(test: impl crate::state_conformance::JourneyStateTest) {
        test.run(&mut crate::state::MemoryJourneyState::default());
    }
    crate::journey_state_conformance_suite!(with_state);
}
