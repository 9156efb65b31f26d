//! The journey runner: what each entry does, for one customer at one instant.
//!
//! A [`Runner`] is built from the journey versions that run ([`Published`]) and keeps nothing
//! per customer or per entry: every entry lives in a [`JourneyStateStore`], and every call is
//! given the store, what the runner may read of the customer ([`CustomerFacts`]) and `now`. So
//! it is called from two loops, and from nowhere else:
//!
//! - as each processed message arrives: [`Runner::on_event`] for a track call,
//!   [`Runner::on_membership`] for a segment or tag entered or left, [`Runner::on_trait_change`]
//!   for an `identify` that changed a trait, [`Runner::enter_by_api`] for an API call or a
//!   schedule firing, [`Runner::on_merge`] when two customers become one;
//! - on a timer: [`Runner::fire_due`] with the store's due entries (delays that ended, waits
//!   that timed out, and entries a crash left between two steps).
//!
//! An event costs only the journeys it can touch: an index from event names, segments, tags
//! and traits to the triggers, exits, waits and goals that name them decides, without a read,
//! that most events concern no journey. Nothing ever scans customers.
//!
//! # Exactly once
//!
//! Each step that acts (a send, a coupon, a trait, a tag, a webhook) is left by its own
//! [`JourneyStateStore::advance`], a compare-and-set from that step that records the step's
//! [`Effect`] in the same commit under its idempotency key (see [`effect_key`]; a step on a
//! loop adds the entry's move count, `send-1#7`, so each pass has its own). Steps that only
//! decide (branches, splits, delays already over, waits already met) are passed through in the
//! same move. A step that is reached is stored as due at once, so a crash between two moves
//! leaves an entry that the next [`Runner::fire_due`] takes on from where it stopped; a run
//! that lost its race to another move stops without effect.
//!
//! An entry's cause (journey, customer and the triggering message's ID, membership change or
//! API request) is its identity in the store, so a trigger delivered twice enters once; a wait
//! for an event takes only events that happened after the wait began, so a message delivered
//! twice does not move an entry twice; and a conversion is recorded at most once per entry.
//!
//! # What the effects carry
//!
//! An [`Effect`]'s `channel` names the worker that carries it out: the channel's own name for
//! `send` and `webhook` steps, [`COUPONS`] for coupon issues and [`PROFILE`] for traits and
//! tags. Its payload is a JSON object with `kind` (`send`, `issue_coupon`, `set_trait`, `tag`,
//! `webhook`), `journey`, `version`, `entry`, `step`, `customer`, `trigger` (the entry's
//! payload, below), and per kind: `template`, `transactional`, `quiet_hours` and
//! `coupon_pools` (the pools of coupon steps that can come before this send, whose code for
//! this customer and campaign the template reads) for sends; `pool` and `campaign` (the
//! journey's key: one code per customer per journey) for coupons; `trait` and `value`; `tag`
//! and `action`; `template` (or null) for webhooks. Rendering, delivery rules and the sending
//! itself happen in those workers.
//!
//! An entry's payload, which templates and `until_date` delays read, is `{"event_name",
//! "event", "message_id", "timestamp"}` for an event (`event` holds its properties),
//! `{"event": payload, "request_id"}` for an API call or schedule, `{"membership": {"segment"
//! or "tag", "entered"}, "change_id"}` for a membership change and `{"trait": {"key", "old",
//! "new"}, "message_id"}` for a trait change.
//!
//! # Entering, holding out, leaving
//!
//! A trigger enters the customer unless the journey keeps the global control group out and the
//! customer is in it, the re-entry policy refuses (`never` after any entry, `after` within the
//! cool-down of the last one), or, without `multiple_entries`, the customer is in the journey.
//! A deterministic share of customers (by a hash of the journey's key and the customer) is
//! held out: the entry is recorded as held out and ends at once with reason [`HELD_OUT`],
//! counted and open to conversions, never reaching a step.
//!
//! Entries end with a reason: [`COMPLETED`] when a path runs out, `exit[i]` when the journey's
//! i-th exit criterion is met (wherever the entry is, also in a delay), `steps[id]` at an
//! `exit` step, `steps[id]: …` when a step cannot go on (a delay's date is missing, the customer
//! has no variation of a split's experiment), [`HELD_OUT`], and `merged` or `archived` from the
//! store.
//!
//! # Conversions
//!
//! A goal's signal counts for an entry (active or ended) within the goal's window after the
//! entry's last message, or after its entry when it sent none (so held-out entries convert
//! too, for lift). The first one is recorded, with the revenue property the goal names
//! (`revenue` by default) and the message it is attributed to. Conversions of entries on
//! versions no longer given to the runner are judged by the journey's entering version.
//!
//! # Time
//!
//! `now` is passed to every call. Delays end: `for` after the duration; `until` at the instant;
//! `until_date` at a date read from a trait or the triggering event (RFC 3339, or a date or
//! date and time without offset read in the customer's zone) moved by the offset; `until_time`
//! at the next instant the wall clock in the zone shows that time (a time skipped by a
//! daylight-saving change is read with the offset before the change, so 02:30 on a spring-
//! forward night is 03:30; a repeated time is its first occurrence). An end already past goes
//! on at once. A wait times out `timeout` after it began.
//!
//! ```
//! use cohort_journey::definition::parse_json;
//! use cohort_journey::runner::{CustomerFacts, ProcessedEvent, Published, Run, Runner};
//! use cohort_journey::state::{JourneyStateStore, MemoryJourneyState};
//! use cohort_segment::EventRecord;
//! use chrono::{TimeDelta, TimeZone, Utc};
//! # use cohort_profile::ComputedTraits;
//! # use serde_json::{Map, Value};
//! # struct Ada(Map<String, Value>, ComputedTraits);
//! # impl CustomerFacts for Ada {
//! #     fn id(&self) -> i64 { 42 }
//! #     fn traits(&self) -> &Map<String, Value> { &self.0 }
//! #     fn computed(&self) -> &ComputedTraits { &self.1 }
//! #     fn events(&self) -> &[EventRecord] { &[] }
//! #     fn in_segment(&self, _: &str) -> bool { false }
//! #     fn time_zone(&self) -> chrono_tz::Tz { chrono_tz::Asia::Shanghai }
//! #     fn in_global_control(&self) -> bool { false }
//! #     fn experiment_variation(&self, _: &str) -> Option<String> { None }
//! # }
//! # let ada = Ada(Map::new(), ComputedTraits::default());
//! let journey = parse_json(r#"{
//!   "key": "welcome", "name": "Welcome",
//!   "trigger": {"type": "event", "event": "Signed Up"},
//!   "exit": [{"type": "event", "event": "Logged In"}],
//!   "steps": [
//!     {"id": "wait-a-day", "type": "delay", "for": "24h", "next": "nudge"},
//!     {"id": "nudge", "type": "send", "channel": "sms", "template": "login-nudge"}
//!   ]
//! }"#)?;
//! let runner = Runner::new(vec![Published { journey, version: 1, run: Run::Entering }])?;
//! let mut store = MemoryJourneyState::default();
//! let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
//! let signed_up = ProcessedEvent::new("m-1", "Signed Up", t0);
//! let report = runner.on_event(&mut store, &ada, &signed_up, t0)?;
//! assert_eq!(report.entered.len(), 1);
//!
//! let report = runner.fire_due(&mut store, |_| Ok::<_, std::io::Error>(&ada), t0 + TimeDelta::hours(24), 100)?;
//! assert_eq!(report.effects, 1);
//! assert_eq!(store.pending_effects("sms", t0 + TimeDelta::hours(24), 10)?.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod compiled;
mod steps;
mod time;

#[cfg(test)]
mod tests;

use crate::definition::{GoalOn, Journey, Reentry, Trigger};
use crate::state::{
    Conversion, CustomerId, Entry, EntryId, JourneyStateStore, Move, NewEntry, StateError,
    effect_key,
};
use chrono::{DateTime, Utc};
use cohort_profile::ComputedTraits;
use cohort_segment::EventRecord;
use compiled::{Compiled, Index};
use serde_json::{Map, Value, json};
use std::collections::HashMap;

pub use time::{next_time_of_day, read_date};

/// The effect channel of coupon issues.
pub const COUPONS: &str = "coupons";
/// The effect channel of trait and tag changes.
pub const PROFILE: &str = "profile";
/// Why an entry ended when its path ran out.
pub const COMPLETED: &str = "completed";
/// Why a held-out entry ended (at once).
pub const HELD_OUT: &str = "held out";

/// What the runner reads of a customer. The engine answers it from the profile (after the
/// message being processed is applied), the segment memberships and `cohort-experiment`.
pub trait CustomerFacts {
    fn id(&self) -> CustomerId;
    /// Traits set by `identify`.
    fn traits(&self) -> &Map<String, Value>;
    fn computed(&self) -> &ComputedTraits;
    /// The customer's events that conditions with event nodes need (all of them for
    /// conditions without a window), in any order.
    fn events(&self) -> &[EventRecord];
    /// Whether the customer is in the segment, or has the tag, of that name now.
    fn in_segment(&self, segment: &str) -> bool;
    /// From the traits or `context.timezone`, else the workspace's.
    fn time_zone(&self) -> chrono_tz::Tz;
    /// Whether the customer is in the workspace's global control group.
    fn in_global_control(&self) -> bool;
    /// The variation `cohort-experiment` assigns the customer in `experiment`, if any.
    fn experiment_variation(&self, experiment: &str) -> Option<String>;
}

impl<T: CustomerFacts + ?Sized> CustomerFacts for &T {
    fn id(&self) -> CustomerId {
        (**self).id()
    }
    fn traits(&self) -> &Map<String, Value> {
        (**self).traits()
    }
    fn computed(&self) -> &ComputedTraits {
        (**self).computed()
    }
    fn events(&self) -> &[EventRecord] {
        (**self).events()
    }
    fn in_segment(&self, segment: &str) -> bool {
        (**self).in_segment(segment)
    }
    fn time_zone(&self) -> chrono_tz::Tz {
        (**self).time_zone()
    }
    fn in_global_control(&self) -> bool {
        (**self).in_global_control()
    }
    fn experiment_variation(&self, experiment: &str) -> Option<String> {
        (**self).experiment_variation(experiment)
    }
}

/// A processed track call of the customer: its `messageId` and the event as conditions see it
/// (name, timestamp, properties).
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedEvent {
    pub message_id: String,
    pub record: EventRecord,
}

impl ProcessedEvent {
    /// An event without properties; add them with [`ProcessedEvent::properties`].
    pub fn new(message_id: &str, name: &str, timestamp: DateTime<Utc>) -> Self {
        ProcessedEvent {
            message_id: message_id.to_string(),
            record: EventRecord {
                name: name.to_string(),
                timestamp,
                properties: Map::new(),
            },
        }
    }

    pub fn properties(mut self, properties: Value) -> Self {
        if let Value::Object(map) = properties {
            self.record.properties = map;
        }
        self
    }
}

/// What a membership change is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Membership {
    Segment(String),
    Tag(String),
}

/// A customer entering or leaving a segment or tag, from the `membership_events` feed; `id`
/// is the change's identity in that feed (a change delivered twice has the same).
#[derive(Debug, Clone, PartialEq)]
pub struct MembershipChange {
    pub id: String,
    pub of: Membership,
    pub entered: bool,
}

/// An `identify` that changed one trait: its `messageId`, the trait and its values before and
/// after (`None` when absent).
#[derive(Debug, Clone, PartialEq)]
pub struct TraitChange {
    pub message_id: String,
    pub key: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

/// How a version runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// The version triggers let customers into (one per journey), and whose entries run.
    Entering,
    /// An earlier version: its entries run to their end (and convert), no one new enters.
    Finishing,
    /// Nothing moves: no entries, no steps; timers wait until it runs again.
    Paused,
}

/// A journey version for the runner. Give every version that has entries in flight, or
/// entries that ended within the longest goal window (for conversions).
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub journey: Journey,
    pub version: u32,
    pub run: Run,
}

/// What a call did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Entries started, held-out ones included.
    pub entered: Vec<EntryId>,
    pub held_out: usize,
    /// Moves made (each a compare-and-set that won).
    pub moves: usize,
    /// Entries that ended, whatever the reason.
    pub exited: usize,
    /// Effects recorded.
    pub effects: usize,
    pub conversions: usize,
    /// Due entries left where they are: their version is not given, or their customer could
    /// not be read (logged).
    pub skipped: usize,
}

impl Report {
    fn absorb(&mut self, other: Report) {
        self.entered.extend(other.entered);
        self.held_out += other.held_out;
        self.moves += other.moves;
        self.exited += other.exited;
        self.effects += other.effects;
        self.conversions += other.conversions;
        self.skipped += other.skipped;
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("journey {0:?} is not running")]
    NotRunning(String),
    #[error("journey {0:?} is not entered by API calls or schedules")]
    NotByApi(String),
    #[error("journey {journey:?} needs {field:?} in the payload")]
    MissingField { journey: String, field: String },
    #[error("journey {journey:?}: {message}")]
    Versions { journey: String, message: String },
}

/// Decides what entries do; see the module documentation.
#[derive(Debug)]
pub struct Runner {
    versions: Vec<Compiled>,
    by_version: HashMap<(String, u32), usize>,
    entering: HashMap<String, usize>,
    /// Journeys whose every version is paused: the store leaves their timers out.
    paused: Vec<String>,
    index: Index,
}

impl Runner {
    /// A runner for these versions. Refuses two entering versions of one journey, or one
    /// version given twice.
    pub fn new(published: Vec<Published>) -> Result<Runner, RunError> {
        let mut versions = Vec::with_capacity(published.len());
        let mut by_version = HashMap::new();
        let mut entering = HashMap::new();
        for (i, p) in published.into_iter().enumerate() {
            let key = p.journey.key.clone();
            if by_version.insert((key.clone(), p.version), i).is_some() {
                return Err(RunError::Versions {
                    journey: key,
                    message: format!("version {} is given twice", p.version),
                });
            }
            if p.run == Run::Entering
                && let Some(other) = entering.insert(key.clone(), i)
            {
                let other: &Compiled = &versions[other];
                return Err(RunError::Versions {
                    journey: key,
                    message: format!(
                        "versions {} and {} both take new entries",
                        other.version, p.version
                    ),
                });
            }
            versions.push(Compiled::new(p));
        }
        let mut paused: Vec<String> = versions
            .iter()
            .filter(|v| v.run == Run::Paused)
            .map(|v| v.journey.key.clone())
            .filter(|key| {
                versions
                    .iter()
                    .filter(|v| &v.journey.key == key)
                    .all(|v| v.run == Run::Paused)
            })
            .collect();
        paused.sort();
        paused.dedup();
        let index = Index::new(&versions, &entering);
        Ok(Runner {
            versions,
            by_version,
            entering,
            paused,
            index,
        })
    }

    fn version_of(&self, entry: &Entry) -> Option<&Compiled> {
        self.by_version
            .get(&(entry.journey.clone(), entry.version))
            .map(|&i| &self.versions[i])
    }

    /// The version whose goal judges an entry's conversion: its own, else the journey's
    /// entering one.
    fn goal_version(&self, entry: &Entry) -> Option<&Compiled> {
        self.version_of(entry).or_else(|| {
            self.entering
                .get(&entry.journey)
                .map(|&i| &self.versions[i])
        })
    }

    /// A track call of the customer: exits, waits, conversions, then entries, in that order
    /// (so the event that enters a journey does not also move the new entry).
    pub fn on_event<S: JourneyStateStore + ?Sized>(
        &self,
        store: &mut S,
        facts: &dyn CustomerFacts,
        event: &ProcessedEvent,
        now: DateTime<Utc>,
    ) -> Result<Report, RunError> {
        let name = event.record.name.as_str();
        let mut report = Report::default();
        if self.index.event_moves_entries(name) {
            for entry in store.active_entries(facts.id())? {
                let Some(version) = self.version_of(&entry) else {
                    continue;
                };
                if version.run == Run::Paused {
                    continue;
                }
                if let Some(reason) = version.exit_on_event(&event.record, facts, now) {
                    self.exit(store, &entry, &reason, &mut report)?;
                } else if version.wait_met_by_event(&entry, &event.record, facts, now) {
                    let r =
                        self.proceed(store, facts, version, entry, steps::Cause::WaitMet, now)?;
                    report.absorb(r);
                }
            }
        }
        if self.index.goal_events.contains(name) {
            let cause = event.message_id.as_str();
            self.convert(store, facts, now, &mut report, |goal| match &goal.on {
                GoalOn::Event { .. } => compiled::goal_event_value(goal, &event.record, now)
                    .map(|revenue| (event.record.timestamp, cause, revenue)),
                _ => None,
            })?;
        }
        if let Some(triggered) = self.index.event_triggers.get(name) {
            for &i in triggered {
                let version = &self.versions[i];
                if !version.trigger_matches_event(&event.record, now) {
                    continue;
                }
                let payload = json!({
                    "event_name": name,
                    "event": Value::Object(event.record.properties.clone()),
                    "message_id": event.message_id,
                    "timestamp": event.record.timestamp.to_rfc3339(),
                });
                let r = self.try_enter(store, facts, version, &event.message_id, payload, now)?;
                report.absorb(r);
            }
        }
        Ok(report)
    }

    /// A segment or tag entered or left: exits, waits for conditions, conversions, entries.
    pub fn on_membership<S: JourneyStateStore + ?Sized>(
        &self,
        store: &mut S,
        facts: &dyn CustomerFacts,
        change: &MembershipChange,
        now: DateTime<Utc>,
    ) -> Result<Report, RunError> {
        let mut report = Report::default();
        if self.index.membership_moves_entries(&change.of) {
            for entry in store.active_entries(facts.id())? {
                let Some(version) = self.version_of(&entry) else {
                    continue;
                };
                if version.run == Run::Paused {
                    continue;
                }
                if let Some(reason) = version.exit_on_membership(change, facts, now) {
                    self.exit(store, &entry, &reason, &mut report)?;
                } else if version.condition_wait_met(&entry, facts, now) {
                    let r =
                        self.proceed(store, facts, version, entry, steps::Cause::WaitMet, now)?;
                    report.absorb(r);
                }
            }
        }
        if let Membership::Segment(segment) = &change.of
            && self.index.goal_segments.contains(segment)
        {
            self.convert(store, facts, now, &mut report, |goal| {
                let met = match &goal.on {
                    GoalOn::SegmentEntered(s) => change.entered && s == segment,
                    GoalOn::SegmentExited(s) => !change.entered && s == segment,
                    GoalOn::Event { .. } => false,
                };
                met.then_some((now, change.id.as_str(), None))
            })?;
        }
        if let Some(triggered) = self
            .index
            .membership_triggers
            .get(&(change.of.clone(), change.entered))
        {
            let (kind, name) = match &change.of {
                Membership::Segment(s) => ("segment", s),
                Membership::Tag(t) => ("tag", t),
            };
            for &i in triggered {
                let payload = json!({
                    "membership": {kind: name, "entered": change.entered},
                    "change_id": change.id,
                });
                let r =
                    self.try_enter(store, facts, &self.versions[i], &change.id, payload, now)?;
                report.absorb(r);
            }
        }
        Ok(report)
    }

    /// Whether [`Runner::on_event`] can do anything with an event of this name: some journey
    /// is triggered by it, exits or waits on it (or on what every event moves), or converts on
    /// it. When not, the engine need not load the customer.
    pub fn reacts_to_event(&self, name: &str) -> bool {
        self.index.event_moves_entries(name)
            || self.index.goal_events.contains(name)
            || self.index.event_triggers.contains_key(name)
    }

    /// Whether [`Runner::on_membership`] can do anything with a change of `of`.
    pub fn reacts_to_membership(&self, of: &Membership, entered: bool) -> bool {
        self.index.membership_moves_entries(of)
            || matches!(of, Membership::Segment(s) if self.index.goal_segments.contains(s))
            || self
                .index
                .membership_triggers
                .contains_key(&(of.clone(), entered))
    }

    /// The versions a later version replaced, which take no entries and finish the ones in
    /// flight: each with how long after an entry's last message a conversion still counts
    /// (zero without a goal). The engine archives one once nothing of it can happen any more.
    pub fn finishing(&self) -> Vec<(&str, u32, chrono::TimeDelta)> {
        self.versions
            .iter()
            .filter(|v| v.run == Run::Finishing)
            .map(|v| {
                let window = v
                    .journey
                    .goal
                    .as_ref()
                    .map_or(chrono::TimeDelta::zero(), |g| g.window.as_time_delta());
                (v.journey.key.as_str(), v.version, window)
            })
            .collect()
    }

    /// The schedules of the versions taking entries, by journey key. The engine decides when
    /// each fires and for whom, and enters those customers with [`Runner::enter_by_api`].
    pub fn schedules(&self) -> Vec<(&str, &crate::definition::Schedule)> {
        let mut schedules: Vec<_> = self
            .entering
            .values()
            .filter_map(|&i| {
                let version = &self.versions[i];
                match &version.journey.trigger {
                    Trigger::Schedule(s) => Some((version.journey.key.as_str(), s)),
                    _ => None,
                }
            })
            .collect();
        schedules.sort_by_key(|(key, _)| *key);
        schedules
    }

    /// Whether a change of trait `key` can move or enter anyone: a trait trigger names it, or
    /// an exit, wait or goal reads traits. The engine reads a trait's earlier value only then.
    pub fn watches_trait(&self, key: &str) -> bool {
        self.index.traits_move_entries || self.index.trait_triggers.contains_key(key)
    }

    /// An `identify` changed a trait: exits and waits on conditions, then entries whose trigger
    /// is this trait changing (to a value passing the trigger's test, when it has one).
    pub fn on_trait_change<S: JourneyStateStore + ?Sized>(
        &self,
        store: &mut S,
        facts: &dyn CustomerFacts,
        change: &TraitChange,
        now: DateTime<Utc>,
    ) -> Result<Report, RunError> {
        let mut report = Report::default();
        if change.old == change.new {
            return Ok(report);
        }
        if self.index.traits_move_entries {
            for entry in store.active_entries(facts.id())? {
                let Some(version) = self.version_of(&entry) else {
                    continue;
                };
                if version.run == Run::Paused {
                    continue;
                }
                if let Some(reason) = version.exit_on_condition(facts, now) {
                    self.exit(store, &entry, &reason, &mut report)?;
                } else if version.condition_wait_met(&entry, facts, now) {
                    let r =
                        self.proceed(store, facts, version, entry, steps::Cause::WaitMet, now)?;
                    report.absorb(r);
                }
            }
        }
        if let Some(triggered) = self.index.trait_triggers.get(&change.key) {
            for &i in triggered {
                let version = &self.versions[i];
                if !version.trait_trigger_passes(change, now) {
                    continue;
                }
                let payload = json!({
                    "trait": {"key": change.key, "old": change.old, "new": change.new},
                    "message_id": change.message_id,
                });
                let r = self.try_enter(store, facts, version, &change.message_id, payload, now)?;
                report.absorb(r);
            }
        }
        Ok(report)
    }

    /// Enters the customer in a journey triggered by API calls or by a schedule (the engine
    /// decides when a schedule fires and for whom). `payload` is what templates read as
    /// `event`; an API trigger's `required` fields must be in it. `request_id` identifies the
    /// call (a schedule's firing and the customer, say): the same one enters once.
    pub fn enter_by_api<S: JourneyStateStore + ?Sized>(
        &self,
        store: &mut S,
        facts: &dyn CustomerFacts,
        journey: &str,
        request_id: &str,
        payload: Value,
        now: DateTime<Utc>,
    ) -> Result<Report, RunError> {
        let version = self
            .entering
            .get(journey)
            .map(|&i| &self.versions[i])
            .ok_or_else(|| RunError::NotRunning(journey.to_string()))?;
        match &version.journey.trigger {
            Trigger::Api { required } => {
                if let Some(field) = required.iter().find(|f| payload.get(f.as_str()).is_none()) {
                    return Err(RunError::MissingField {
                        journey: journey.to_string(),
                        field: field.clone(),
                    });
                }
            }
            Trigger::Schedule(_) => {}
            _ => return Err(RunError::NotByApi(journey.to_string())),
        }
        let payload = json!({"event": payload, "request_id": request_id});
        self.try_enter(store, facts, version, request_id, payload, now)
    }

    /// Entries whose time has come, at most `limit`: a delay ends (its next step), a wait
    /// times out (its `no` path), an entry a crash left between two steps goes on. Call it
    /// until it reports nothing moved. `facts_for` reads each entry's customer; an entry whose
    /// customer cannot be read is left for the next call (logged, counted as skipped).
    pub fn fire_due<S, F, E>(
        &self,
        store: &mut S,
        mut facts_for: impl FnMut(CustomerId) -> Result<F, E>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Report, RunError>
    where
        S: JourneyStateStore + ?Sized,
        F: CustomerFacts,
        E: std::fmt::Display,
    {
        let mut report = Report::default();
        for entry in store.due_skipping(now, &self.paused, limit)? {
            let Some(version) = self.version_of(&entry) else {
                tracing::warn!(
                    journey = %entry.journey,
                    version = entry.version,
                    entry = entry.id.0,
                    "a due entry's journey version is not running; it waits"
                );
                report.skipped += 1;
                continue;
            };
            if version.run == Run::Paused {
                report.skipped += 1;
                continue;
            }
            let facts = match facts_for(entry.customer) {
                Ok(facts) => facts,
                Err(e) => {
                    tracing::warn!(
                        customer = entry.customer,
                        entry = entry.id.0,
                        error = %e,
                        "a due entry's customer cannot be read; it waits"
                    );
                    report.skipped += 1;
                    continue;
                }
            };
            let r = self.proceed(store, &facts, version, entry, steps::Cause::Due, now)?;
            report.absorb(r);
        }
        Ok(report)
    }

    /// Two customers became one: `from`'s entries move to `into`, and an entry that would be
    /// `into`'s second in one journey ends (`merged`), so nothing is sent twice.
    pub fn on_merge<S: JourneyStateStore + ?Sized>(
        &self,
        store: &mut S,
        from: CustomerId,
        into: CustomerId,
    ) -> Result<usize, RunError> {
        Ok(store.reassign_customer(from, into)?)
    }

    fn exit<S: JourneyStateStore + ?Sized>(
        &self,
        store: &mut S,
        entry: &Entry,
        reason: &str,
        report: &mut Report,
    ) -> Result<(), RunError> {
        if store.advance(entry.id, &entry.step, &Move::exit(reason), &[])? {
            report.moves += 1;
            report.exited += 1;
        }
        Ok(())
    }

    /// Records the first conversion `signal` finds for each of the customer's open entries;
    /// `signal` answers, for a goal, when it was met, its cause and its revenue.
    fn convert<'a, S: JourneyStateStore + ?Sized>(
        &self,
        store: &mut S,
        facts: &dyn CustomerFacts,
        now: DateTime<Utc>,
        report: &mut Report,
        signal: impl Fn(&crate::definition::Goal) -> Option<(DateTime<Utc>, &'a str, Option<f64>)>,
    ) -> Result<(), RunError> {
        let Some(since) = now.checked_sub_signed(self.index.longest_goal_window) else {
            return Ok(());
        };
        for entry in store.convertible(facts.id(), since)? {
            let Some(version) = self.goal_version(&entry) else {
                continue;
            };
            let Some(goal) = &version.journey.goal else {
                continue;
            };
            let Some((at, cause, revenue)) = signal(goal) else {
                continue;
            };
            let start = entry.window_start();
            let end = start
                .checked_add_signed(goal.window.as_time_delta())
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            if at < start || at > end {
                continue;
            }
            let conversion = Conversion {
                at,
                cause: cause.to_string(),
                revenue,
                message: entry.last_message.as_ref().map(|m| m.key.clone()),
            };
            if !store.convert(entry.id, &conversion)? {
                continue;
            }
            report.conversions += 1;
            if entry.active()
                && let Some(reason) = version.exit_on_goal()
            {
                // The entry read before the conversion is where it still is: nothing else
                // moved it in between on this thread.
                self.exit(store, &entry, &reason, report)?;
            }
        }
        Ok(())
    }

    fn try_enter<S: JourneyStateStore + ?Sized>(
        &self,
        store: &mut S,
        facts: &dyn CustomerFacts,
        version: &Compiled,
        cause: &str,
        payload: Value,
        now: DateTime<Utc>,
    ) -> Result<Report, RunError> {
        let mut report = Report::default();
        let journey = &version.journey;
        let customer = facts.id();
        if journey.global_control && facts.in_global_control() {
            return Ok(report);
        }
        // `always` needs no history; the store's own check keeps one active entry at a time.
        if journey.reentry != Reentry::Always
            && !version.reentry_allows(store.latest_entry(customer, &journey.key)?.as_ref(), now)
        {
            return Ok(report);
        }
        let held_out = version.holds_out(customer);
        let new = NewEntry::new(&journey.key, version.version, customer, steps::START, now)
            .due_at(now)
            .payload(payload)
            .key(format!("{}:{customer}:{cause}", journey.key))
            .held_out(held_out);
        let Some(id) = store.enter(&new, journey.multiple_entries)? else {
            return Ok(report);
        };
        report.entered.push(id);
        let entry = Entry {
            id,
            journey: new.journey,
            version: new.version,
            customer,
            step: new.step,
            due_at: new.due_at,
            payload: new.payload,
            entered_at: now,
            exit_reason: None,
            held_out,
            moves: 0,
            last_message: None,
            conversion: None,
        };
        if held_out {
            report.held_out += 1;
            self.exit(store, &entry, HELD_OUT, &mut report)?;
            return Ok(report);
        }
        let r = self.proceed(store, facts, version, entry, steps::Cause::Due, now)?;
        report.absorb(r);
        Ok(report)
    }
}

/// The idempotency key of an effect of `step`, with the entry's move count when the step is on
/// a loop (each pass is its own effect).
fn step_effect_key(version: &Compiled, entry: &Entry, step: usize, moves: u32) -> String {
    let id = version.journey.steps[step].id();
    if version.on_loop[step] {
        effect_key(
            &version.journey.key,
            version.version,
            entry.id,
            &format!("{id}#{moves}"),
        )
    } else {
        effect_key(&version.journey.key, version.version, entry.id, id)
    }
}
