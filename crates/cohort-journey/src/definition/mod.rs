//! What a marketer defines: a journey, read from JSON or YAML into typed values, and checked
//! as a whole against everything else that exists before it can be saved or published.
//!
//! A [`Journey`] has a [`Trigger`] that lets a customer in, [`Step`]s that form a graph (each
//! has an `id` and names where to go next; branching steps name one target per path, and a
//! missing target ends the entry there), [`ExitCriterion`]s that take a customer out early,
//! a [`Reentry`] policy, a conversion [`Goal`], a holdout share and whether the global control
//! group is kept out.
//!
//! Reading ([`parse_json`], [`parse_yaml`], [`parse_value`]) refuses wrong types, unknown
//! step types and unknown fields (a misspelt `tempalte` would otherwise be dropped in silence)
//! with the field's path, a step named by its id: `steps[sms-1].template`. YAML is read with
//! `serde_norway` (the maintained fork of the archived `serde_yaml`, YAML 1.2: `yes` and `no`
//! are strings) into the same JSON value first, so both formats give the same journey and the
//! same errors. [`Catalogue::check`] then refuses what types cannot see: references to
//! channels, templates, segments, tags, experiments and coupon pools that do not exist, a
//! template of the wrong kind for its channel, a broken step graph (duplicate ids, a target
//! that is not a step, steps nothing leads to, a loop that never pauses), and values out of
//! range ([`Invalid`] names the field).
//!
//! Durations are strings such as `"24h"`, `"3d"` or `"1d12h"` ([`Duration`]). Conditions are
//! Cohort's segment condition language ([`cohort_segment::Condition`]); an event's property
//! conditions are that language's `where` filters ([`PropertyFilter`]).
//!
//! The cost of a message, for return on spend, belongs to the channel (a provider's price
//! per email or SMS part), not to a journey: every journey sending through a channel pays
//! its price, and the price is recorded with each send.
//!
//! Versions and their lifecycle are in [`lifecycle`]: a published version never changes; an
//! edit is a new version, and customers already in a journey finish on theirs.
//!
//! ```
//! use cohort_journey::definition::{Catalogue, ChannelKind, Step, parse_json};
//! let journey = parse_json(r#"{
//!   "key": "welcome", "name": "Welcome",
//!   "trigger": {"type": "event", "event": "Signed Up"},
//!   "steps": [
//!     {"id": "wait-a-day", "type": "delay", "for": "24h", "next": "hello"},
//!     {"id": "hello", "type": "send", "channel": "sms", "template": "hello-sms"}
//!   ]
//! }"#)?;
//! assert!(matches!(journey.steps[0], Step::Delay(_)));
//!
//! let mut catalogue = Catalogue::default();
//! catalogue.channels.insert("sms".into(), ChannelKind::Sms);
//! catalogue.templates.insert("hello-sms".into(), ChannelKind::Email);
//! let refused = catalogue.check(&journey).unwrap_err();
//! assert_eq!(refused.field, "steps[hello].template");
//! assert_eq!(
//!     refused.to_string(),
//!     r#"steps[hello].template: "hello-sms" is an email template; channel "sms" sends sms"#
//! );
//!
//! catalogue.templates.insert("hello-sms".into(), ChannelKind::Sms);
//! catalogue.check(&journey)?;
//! # Ok::<(), cohort_journey::definition::Invalid>(())
//! ```

mod check;
pub mod lifecycle;
mod time;

pub use check::{Catalogue, ChannelKind, MAX_GOAL_WINDOW_DAYS, MAX_STEPS, TagKind};
pub use cohort_segment::{Condition, Op, PropertyFilter};
pub use time::{Cron, Duration, DurationError, MAX_DURATION_DAYS, TimeOfDay, Zone};

use chrono::{DateTime, FixedOffset, Weekday};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The largest definition text read, JSON or YAML: far above any real journey (a 200-step
/// journey is about 40 KB), small enough that a pasted file cannot tie up the parser.
pub const MAX_DEFINITION_BYTES: usize = 1 << 20;

/// A definition that cannot be saved: the field (a path such as `steps[sms-1].template`) and
/// why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

fn yes() -> bool {
    true
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// A journey, one version of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journey {
    pub key: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub trigger: Trigger,
    /// The first step listed is where every entry starts.
    pub steps: Vec<Step>,
    /// Any of these ends an entry wherever it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit: Vec<ExitCriterion>,
    #[serde(default)]
    pub reentry: Reentry,
    /// Whether a customer may be in this journey more than once at a time (each entry runs on
    /// its own); by default a trigger for a customer already in it is ignored.
    #[serde(default, skip_serializing_if = "is_false")]
    pub multiple_entries: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<Goal>,
    /// The share of entering customers held out (they enter, are counted, and get nothing),
    /// to measure the journey's lift: from 0 up to, not including, 1.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub holdout: f64,
    /// Whether the workspace's global control group (customers no journey reaches) is kept
    /// out. Turn off only for messages every customer must get, such as receipts.
    #[serde(default = "yes")]
    pub global_control: bool,
}

/// What lets a customer in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// The customer performs `event` with properties matching every filter.
    Event {
        event: String,
        #[serde(rename = "where", default, skip_serializing_if = "Vec::is_empty")]
        filters: Vec<PropertyFilter>,
    },
    /// The customer enters a segment (the `membership_events` feed).
    SegmentEntered { segment: String },
    /// The customer leaves a segment.
    SegmentExited { segment: String },
    /// The customer is given a tag.
    TagAdded { tag: String },
    /// The customer loses a tag.
    TagRemoved { tag: String },
    /// An `identify` changes a trait; with `to`, only when the new value passes that test.
    TraitChanged {
        #[serde(rename = "trait")]
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<ValueTest>,
    },
    /// On a schedule, every member of a segment at that time.
    Schedule(Schedule),
    /// A call to the journey's API entry point, for one customer, with a JSON payload that
    /// templates can read; `required` names the payload fields a call must carry.
    Api {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        required: Vec<String>,
    },
}

/// A test of one value, as the segment language tests a trait: `{"op": "eq", "value": "pro"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueTest {
    pub op: Op,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// A scheduled trigger: who (a segment's members) and when, in a [`Zone`].
///
/// Written with either `cron` (five fields) or `at` (a time of day) and optional `days`
/// (weekdays; every day when absent), and `time_zone` (`"customer"` by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawSchedule", into = "RawSchedule")]
pub struct Schedule {
    pub segment: String,
    pub when: When,
    pub time_zone: Zone,
}

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq)]
pub enum When {
    Cron(Cron),
    /// At a time of day on the listed weekdays (every day when empty).
    Daily {
        at: TimeOfDay,
        days: Vec<Weekday>,
    },
}

impl When {
    /// Whether the schedule fires at this minute of a wall clock (seconds are ignored). A
    /// time a daylight-saving change skips never shows on the wall clock, so it fires on none
    /// of that day's minutes.
    pub fn matches(&self, local: chrono::NaiveDateTime) -> bool {
        use chrono::{Datelike, Timelike};
        match self {
            When::Cron(cron) => cron.matches(local),
            When::Daily { at, days } => {
                local.hour() == at.0.hour()
                    && local.minute() == at.0.minute()
                    && (days.is_empty() || days.contains(&local.weekday()))
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    segment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cron: Option<Cron>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<TimeOfDay>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    days: Vec<Weekday>,
    #[serde(default)]
    time_zone: Zone,
}

impl TryFrom<RawSchedule> for Schedule {
    type Error = String;

    fn try_from(raw: RawSchedule) -> Result<Schedule, String> {
        let when = match (raw.cron, raw.at) {
            (Some(cron), None) if raw.days.is_empty() => When::Cron(cron),
            (Some(_), None) => return Err("days go with at; a cron schedule names its own".into()),
            (None, Some(at)) => When::Daily { at, days: raw.days },
            (Some(_), Some(_)) => return Err("a schedule has cron or at, not both".into()),
            (None, None) => return Err("a schedule needs cron or at".into()),
        };
        Ok(Schedule {
            segment: raw.segment,
            when,
            time_zone: raw.time_zone,
        })
    }
}

impl From<Schedule> for RawSchedule {
    fn from(s: Schedule) -> RawSchedule {
        let (cron, at, days) = match s.when {
            When::Cron(c) => (Some(c), None, Vec::new()),
            When::Daily { at, days } => (None, Some(at), days),
        };
        RawSchedule {
            segment: s.segment,
            cron,
            at,
            days,
            time_zone: s.time_zone,
        }
    }
}

/// What ends an entry early, wherever it is (Braze's exception events). A customer waiting in
/// a delay leaves when it is met, not when the delay ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExitCriterion {
    Event {
        event: String,
        #[serde(rename = "where", default, skip_serializing_if = "Vec::is_empty")]
        filters: Vec<PropertyFilter>,
    },
    SegmentEntered {
        segment: String,
    },
    SegmentExited {
        segment: String,
    },
    TagAdded {
        tag: String,
    },
    TagRemoved {
        tag: String,
    },
    /// The customer comes to meet a condition (decided as their events and traits change).
    Condition {
        condition: Condition,
    },
    /// The journey's conversion goal is met.
    Goal,
}

/// Whether a customer who has been in the journey may enter it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reentry {
    /// Once per customer, ever.
    #[default]
    Never,
    /// Again once `cooldown` has passed since the last entry.
    After { cooldown: Duration },
    /// Every time the trigger fires.
    Always,
}

/// What counts as a conversion: within `window` after the customer's last message of the
/// entry (at most one conversion per entry, attributed to that message). Written as
/// `{"type": "event", "event": …, "where": […], "revenue": …, "window": "7d"}` or
/// `{"type": "segment_entered" | "segment_exited", "segment": …, "window": …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawGoal", into = "RawGoal")]
pub struct Goal {
    pub on: GoalOn,
    pub window: Duration,
}

/// The signal a goal waits for.
#[derive(Debug, Clone, PartialEq)]
pub enum GoalOn {
    /// The customer performs `event` with matching properties; `revenue` names the property
    /// that holds the conversion's revenue (`revenue` when absent).
    Event {
        event: String,
        filters: Vec<PropertyFilter>,
        revenue: Option<String>,
    },
    SegmentEntered(String),
    SegmentExited(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum GoalKind {
    Event,
    SegmentEntered,
    SegmentExited,
}

// A plain struct rather than a tagged enum, so that an error inside (a wrong window) is
// reported at its field, `goal.window`, rather than at `goal`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGoal {
    #[serde(rename = "type")]
    kind: GoalKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event: Option<String>,
    #[serde(rename = "where", default, skip_serializing_if = "Vec::is_empty")]
    filters: Vec<PropertyFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revenue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    segment: Option<String>,
    window: Duration,
}

impl TryFrom<RawGoal> for Goal {
    type Error = String;

    fn try_from(raw: RawGoal) -> Result<Goal, String> {
        let on = match raw.kind {
            GoalKind::Event => {
                if raw.segment.is_some() {
                    return Err("an event goal has no segment".into());
                }
                GoalOn::Event {
                    event: raw.event.ok_or("an event goal needs event")?,
                    filters: raw.filters,
                    revenue: raw.revenue,
                }
            }
            GoalKind::SegmentEntered | GoalKind::SegmentExited => {
                if raw.event.is_some() || !raw.filters.is_empty() || raw.revenue.is_some() {
                    return Err("a segment goal has segment, not event, where or revenue".into());
                }
                let segment = raw.segment.ok_or("a segment goal needs segment")?;
                if raw.kind == GoalKind::SegmentEntered {
                    GoalOn::SegmentEntered(segment)
                } else {
                    GoalOn::SegmentExited(segment)
                }
            }
        };
        Ok(Goal {
            on,
            window: raw.window,
        })
    }
}

impl From<Goal> for RawGoal {
    fn from(g: Goal) -> RawGoal {
        let mut raw = RawGoal {
            kind: GoalKind::Event,
            event: None,
            filters: Vec::new(),
            revenue: None,
            segment: None,
            window: g.window,
        };
        match g.on {
            GoalOn::Event {
                event,
                filters,
                revenue,
            } => {
                raw.event = Some(event);
                raw.filters = filters;
                raw.revenue = revenue;
            }
            GoalOn::SegmentEntered(segment) => {
                raw.kind = GoalKind::SegmentEntered;
                raw.segment = Some(segment);
            }
            GoalOn::SegmentExited(segment) => {
                raw.kind = GoalKind::SegmentExited;
                raw.segment = Some(segment);
            }
        }
        raw
    }
}

/// One step of a journey, by its `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Step {
    Delay(Delay),
    Wait(Wait),
    Branch(Branch),
    RandomSplit(RandomSplit),
    ExperimentSplit(ExperimentSplit),
    Send(SendMessage),
    IssueCoupon(IssueCoupon),
    SetTrait(SetTrait),
    Tag(SetTag),
    Webhook(CallWebhook),
    Exit(Exit),
}

/// The step types as written, for messages.
pub const STEP_TYPES: [&str; 11] = [
    "delay",
    "wait",
    "branch",
    "random_split",
    "experiment_split",
    "send",
    "issue_coupon",
    "set_trait",
    "tag",
    "webhook",
    "exit",
];

impl Step {
    pub fn id(&self) -> &str {
        match self {
            Step::Delay(s) => &s.id,
            Step::Wait(s) => &s.id,
            Step::Branch(s) => &s.id,
            Step::RandomSplit(s) => &s.id,
            Step::ExperimentSplit(s) => &s.id,
            Step::Send(s) => &s.id,
            Step::IssueCoupon(s) => &s.id,
            Step::SetTrait(s) => &s.id,
            Step::Tag(s) => &s.id,
            Step::Webhook(s) => &s.id,
            Step::Exit(s) => &s.id,
        }
    }

    /// Where the step can lead: each path's field (`next`, `yes`, `paths[1].next`,
    /// `paths.control`), its target (`None` ends the entry), and whether taking it always
    /// waits for time to pass or for a new event (see [`Catalogue::check`] on loops).
    pub fn paths(&self) -> Vec<StepPath<'_>> {
        fn path(field: String, target: &Option<String>, pauses: bool) -> StepPath<'_> {
            StepPath {
                field,
                target: target.as_deref(),
                pauses,
            }
        }
        match self {
            Step::Delay(s) => vec![path("next".into(), &s.next, s.until.always_waits())],
            Step::Wait(s) => {
                // A wait for a condition that already holds takes its yes path at once; a
                // wait for an event only on an event that arrives after it began.
                let yes_pauses = matches!(s.until, WaitUntil::Event { .. });
                vec![
                    path("yes".into(), &s.yes, yes_pauses),
                    path("no".into(), &s.no, true),
                ]
            }
            Step::Branch(s) => vec![
                path("yes".into(), &s.yes, false),
                path("no".into(), &s.no, false),
            ],
            Step::RandomSplit(s) => s
                .paths
                .iter()
                .enumerate()
                .map(|(i, p)| path(format!("paths[{i}].next"), &p.next, false))
                .collect(),
            Step::ExperimentSplit(s) => s
                .paths
                .iter()
                .map(|(variant, next)| path(format!("paths.{variant}"), next, false))
                .collect(),
            Step::Send(SendMessage { next, .. })
            | Step::IssueCoupon(IssueCoupon { next, .. })
            | Step::SetTrait(SetTrait { next, .. })
            | Step::Tag(SetTag { next, .. })
            | Step::Webhook(CallWebhook { next, .. }) => vec![path("next".into(), next, false)],
            Step::Exit(_) => Vec::new(),
        }
    }
}

/// One way out of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepPath<'a> {
    pub field: String,
    pub target: Option<&'a str>,
    pub pauses: bool,
}

/// Waits, then goes on. Written with exactly one of `for` (a duration), `until` (an RFC 3339
/// date and time), `until_date` (a date on the customer or the triggering event, moved by
/// `offset`) or `until_time` (the next time the clock shows that time of day, in `time_zone`,
/// the customer's by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawDelay", into = "RawDelay")]
pub struct Delay {
    pub id: String,
    pub until: DelayUntil,
    pub next: Option<String>,
}

/// How long a delay lasts.
#[derive(Debug, Clone, PartialEq)]
pub enum DelayUntil {
    For(Duration),
    At(DateTime<FixedOffset>),
    Date { date: DateSource, offset: Duration },
    TimeOfDay { time: TimeOfDay, zone: Zone },
}

impl DelayUntil {
    /// Whether the delay always lasts a while, wherever it is reached: a positive duration,
    /// or the next time of day (at least a moment, at most a day). A fixed or relative date
    /// may already be past, and then the delay ends at once.
    pub fn always_waits(&self) -> bool {
        match self {
            DelayUntil::For(d) => d.is_positive(),
            DelayUntil::TimeOfDay { .. } => true,
            DelayUntil::At(_) | DelayUntil::Date { .. } => false,
        }
    }
}

/// Where a relative delay finds its date: `{"trait": "birthday"}` or
/// `{"event_property": "departure_at"}` (a property of the event that triggered the entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DateSource {
    Trait(String),
    EventProperty(String),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelay {
    id: String,
    #[serde(rename = "for", default, skip_serializing_if = "Option::is_none")]
    for_: Option<Duration>,
    #[serde(
        default,
        deserialize_with = "date_time",
        skip_serializing_if = "Option::is_none"
    )]
    until: Option<DateTime<FixedOffset>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    until_date: Option<DateSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offset: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    until_time: Option<TimeOfDay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    time_zone: Option<Zone>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

impl TryFrom<RawDelay> for Delay {
    type Error = String;

    fn try_from(raw: RawDelay) -> Result<Delay, String> {
        let given: Vec<&str> = [
            ("for", raw.for_.is_some()),
            ("until", raw.until.is_some()),
            ("until_date", raw.until_date.is_some()),
            ("until_time", raw.until_time.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, there)| there.then_some(name))
        .collect();
        if let [a, b, ..] = given.as_slice() {
            return Err(format!(
                "a delay has one of for, until, until_date or until_time, not both {a} and {b}"
            ));
        }
        if raw.offset.is_some() && raw.until_date.is_none() {
            return Err("offset goes with until_date only".into());
        }
        if raw.time_zone.is_some() && raw.until_time.is_none() {
            return Err("time_zone goes with until_time only".into());
        }
        let until = if let Some(d) = raw.for_ {
            DelayUntil::For(d)
        } else if let Some(at) = raw.until {
            DelayUntil::At(at)
        } else if let Some(date) = raw.until_date {
            DelayUntil::Date {
                date,
                offset: raw.offset.unwrap_or_default(),
            }
        } else if let Some(time) = raw.until_time {
            DelayUntil::TimeOfDay {
                time,
                zone: raw.time_zone.unwrap_or_default(),
            }
        } else {
            return Err("a delay needs one of for, until, until_date or until_time".into());
        };
        Ok(Delay {
            id: raw.id,
            until,
            next: raw.next,
        })
    }
}

impl From<Delay> for RawDelay {
    fn from(d: Delay) -> RawDelay {
        let mut raw = RawDelay {
            id: d.id,
            for_: None,
            until: None,
            until_date: None,
            offset: None,
            until_time: None,
            time_zone: None,
            next: d.next,
        };
        match d.until {
            DelayUntil::For(x) => raw.for_ = Some(x),
            DelayUntil::At(at) => raw.until = Some(at),
            DelayUntil::Date { date, offset } => {
                raw.until_date = Some(date);
                raw.offset = (offset != Duration::default()).then_some(offset);
            }
            DelayUntil::TimeOfDay { time, zone } => {
                raw.until_time = Some(time);
                raw.time_zone = (zone != Zone::Customer).then_some(zone);
            }
        }
        raw
    }
}

/// Reads an RFC 3339 date and time, saying how to write one (chrono's own message is "input
/// contains invalid characters").
fn date_time<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<DateTime<FixedOffset>>, D::Error> {
    let text = String::deserialize(d)?;
    DateTime::parse_from_rfc3339(&text).map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is not a date and time: write RFC 3339 with its offset, such as \
             2026-12-24T09:00:00+08:00"
        ))
    })
}

/// Waits for an event (with property filters) or a condition, at most `timeout`: `yes` when
/// it comes, `no` when the time runs out. Written with `event` (and `where`) or `condition`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawWait", into = "RawWait")]
pub struct Wait {
    pub id: String,
    pub until: WaitUntil,
    pub timeout: Duration,
    pub yes: Option<String>,
    pub no: Option<String>,
}

/// What a wait waits for.
#[derive(Debug, Clone, PartialEq)]
pub enum WaitUntil {
    /// An event performed after the wait began.
    Event {
        event: String,
        filters: Vec<PropertyFilter>,
    },
    /// The customer meets a condition (at once if they already do).
    Condition(Condition),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWait {
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event: Option<String>,
    #[serde(rename = "where", default, skip_serializing_if = "Vec::is_empty")]
    filters: Vec<PropertyFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    condition: Option<Condition>,
    timeout: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    yes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    no: Option<String>,
}

impl TryFrom<RawWait> for Wait {
    type Error = String;

    fn try_from(raw: RawWait) -> Result<Wait, String> {
        let until = match (raw.event, raw.condition) {
            (Some(event), None) => WaitUntil::Event {
                event,
                filters: raw.filters,
            },
            (None, Some(condition)) if raw.filters.is_empty() => WaitUntil::Condition(condition),
            (None, Some(_)) => return Err("where goes with event; a condition has its own".into()),
            (Some(_), Some(_)) => return Err("a wait has event or condition, not both".into()),
            (None, None) => return Err("a wait needs event or condition".into()),
        };
        Ok(Wait {
            id: raw.id,
            until,
            timeout: raw.timeout,
            yes: raw.yes,
            no: raw.no,
        })
    }
}

impl From<Wait> for RawWait {
    fn from(w: Wait) -> RawWait {
        let (event, filters, condition) = match w.until {
            WaitUntil::Event { event, filters } => (Some(event), filters, None),
            WaitUntil::Condition(c) => (None, Vec::new(), Some(c)),
        };
        RawWait {
            id: w.id,
            event,
            filters,
            condition,
            timeout: w.timeout,
            yes: w.yes,
            no: w.no,
        }
    }
}

/// `yes` when the customer meets the condition now, else `no`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    pub id: String,
    pub condition: Condition,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no: Option<String>,
}

/// Sends each customer down one path at random, by the paths' weights (summing to 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomSplit {
    pub id: String,
    pub paths: Vec<SplitPath>,
}

/// One path of a random split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitPath {
    pub name: String,
    pub weight: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Sends each customer down the path of the variant `cohort-experiment` assigns them in
/// `experiment`, which reports the result; `paths` has one target per variant key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSplit {
    pub id: String,
    pub experiment: String,
    pub paths: BTreeMap<String, Option<String>>,
}

/// What to do with a message that falls in the customer's quiet hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuietHours {
    /// Send it when the quiet hours end.
    #[default]
    Hold,
    /// Do not send it (and go on through the journey).
    Skip,
}

/// Sends a message through a channel with a template of the channel's kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    pub id: String,
    pub channel: String,
    pub template: String,
    /// A transactional message bypasses frequency caps, never consent.
    #[serde(default, skip_serializing_if = "is_false")]
    pub transactional: bool,
    #[serde(default)]
    pub quiet_hours: QuietHours,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Gives the customer a code from a coupon pool (one per customer per journey).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueCoupon {
    pub id: String,
    pub pool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Sets a trait on the customer's profile; `null` removes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetTrait {
    pub id: String,
    #[serde(rename = "trait")]
    pub key: String,
    pub value: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Whether a tag step gives or takes away its tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TagAction {
    #[default]
    Add,
    Remove,
}

/// Gives or takes away a tag set by hand (a tag decided by a rule cannot be set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetTag {
    pub id: String,
    pub tag: String,
    #[serde(default)]
    pub action: TagAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Calls a webhook channel, with a webhook template as the body when given (else the
/// customer and entry as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallWebhook {
    pub id: String,
    pub channel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Ends the entry here (counted as exited by this step, unlike a path that simply ends,
/// which counts as completed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exit {
    pub id: String,
}

/// Reads a journey from JSON text.
pub fn parse_json(text: &str) -> Result<Journey, Invalid> {
    check_size(text)?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| invalid("body", format!("not JSON: {e}")))?;
    parse_value(&value)
}

/// Reads a journey from YAML text: into the JSON value it denotes, then as [`parse_value`]
/// does, so that YAML gives the same journey and the same errors as JSON.
pub fn parse_yaml(text: &str) -> Result<Journey, Invalid> {
    check_size(text)?;
    let value: Value =
        serde_norway::from_str(text).map_err(|e| invalid("body", format!("not YAML: {e}")))?;
    parse_value(&value)
}

fn check_size(text: &str) -> Result<(), Invalid> {
    if text.len() > MAX_DEFINITION_BYTES {
        return Err(invalid(
            "body",
            format!(
                "the definition is {} bytes; the limit is {MAX_DEFINITION_BYTES}",
                text.len()
            ),
        ));
    }
    Ok(())
}

/// Reads a journey from a JSON value, refusing wrong types and unknown fields with the path
/// of the field (steps named by their ids).
pub fn parse_value(value: &Value) -> Result<Journey, Invalid> {
    let e = match serde_path_to_error::deserialize::<_, Journey>(value) {
        Ok(journey) => return Ok(journey),
        Err(e) => e,
    };
    let path = e.path().to_string();
    let message = e.into_inner().to_string();
    // Serde reads a tagged step as a whole, so its errors stop at `steps[2]`; reading that
    // step again as its own type finds the field inside it.
    let (field, message) =
        match step_index(&path).and_then(|index| Some((index, value.get("steps")?.get(index)?))) {
            Some((index, step)) => {
                let at = step_label(step, index);
                match diagnose_step(step) {
                    Some((inner, message)) => (join_field(&at, &inner), message),
                    None => (
                        format!("{at}{}", &path[format!("steps[{index}]").len()..]),
                        message,
                    ),
                }
            }
            None if path == "." => (String::new(), message),
            None => (path, message),
        };
    // "missing field `id`" is about the field it names, not the object that lacks it.
    let field = match missing_field(&message) {
        Some(name) => join_field(&field, name),
        None if field.is_empty() => "body".to_string(),
        None => field,
    };
    Err(invalid(field, message))
}

fn join_field(prefix: &str, field: &str) -> String {
    match (prefix.is_empty(), field.is_empty()) {
        (true, _) => field.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}.{field}"),
    }
}

/// The field a serde "missing field `x`" message names.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// The index `N` of a path that starts `steps[N]`.
fn step_index(path: &str) -> Option<usize> {
    let rest = path.strip_prefix("steps[")?;
    let end = rest.find(']')?;
    rest[..end].parse().ok()
}

/// How a step is named in a field: `steps[its-id]`, or `steps[2]` when it has no usable id.
fn step_label(step: &Value, index: usize) -> String {
    match step.get("id").and_then(Value::as_str) {
        Some(id) if check::is_key(id) => format!("steps[{id}]"),
        _ => format!("steps[{index}]"),
    }
}

/// Reads one step by its `type`, for the field (relative to the step) and message of the
/// first error; `None` when it reads (the error was elsewhere, such as a failed conversion).
fn diagnose_step(step: &Value) -> Option<(String, String)> {
    let Some(kind) = step.get("type") else {
        return Some(("type".into(), "a step needs a type".into()));
    };
    let Some(kind) = kind.as_str() else {
        return Some(("type".into(), "a step's type is a string".into()));
    };
    let mut fields = step.as_object()?.clone();
    fields.remove("type");
    let body = Value::Object(fields);
    fn read<T: serde::de::DeserializeOwned>(v: &Value) -> Option<(String, String)> {
        let e = serde_path_to_error::deserialize::<_, T>(v).err()?;
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        Some((path, e.into_inner().to_string()))
    }
    match kind {
        "delay" => read::<Delay>(&body),
        "wait" => read::<Wait>(&body),
        "branch" => read::<Branch>(&body),
        "random_split" => read::<RandomSplit>(&body),
        "experiment_split" => read::<ExperimentSplit>(&body),
        "send" => read::<SendMessage>(&body),
        "issue_coupon" => read::<IssueCoupon>(&body),
        "set_trait" => read::<SetTrait>(&body),
        "tag" => read::<SetTag>(&body),
        "webhook" => read::<CallWebhook>(&body),
        "exit" => read::<Exit>(&body),
        other => Some((
            "type".into(),
            format!(
                "{other:?} is not a step type; use one of {}",
                STEP_TYPES.join(", ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests;
