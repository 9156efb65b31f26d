//! What a journey caused: counts per journey, version and step, and the report built from them.
//!
//! Two halves:
//!
//! - [`JourneyStats`] reads the counts from the journey state store ([`Counts`]): entries (held
//!   out or not, with their conversions and revenue), active entries by step (waiting or due),
//!   exits by reason, effects by channel and status, conversions by the step of the message they
//!   are attributed to, and first- and last-touch credit across journeys. Stores compute them
//!   where the data is (SQL `GROUP BY` in SQLite), never by loading every entry.
//!   [`MemoryJourneyState`](crate::state::MemoryJourneyState) implements it; the SQLite state in
//!   `cohort-store` does too, and both pass `journey_stats_conformance_suite!` (module
//!   `measure::conformance`, feature `conformance`).
//! - [`report`] turns counts into a [`JourneyReport`] (serialisable; its field names are the
//!   API's and the CLI's `--json`): conversion rate and revenue per entry of treated against
//!   held-out entries, their lifts with confidence intervals from `cohort-experiment`'s
//!   statistics (or the reason there are none), incremental revenue, cost from [`Costs`] and
//!   return on it, first- and last-touch credit.
//!
//! # Definitions
//!
//! - **Treated** entries are those not held out; **held-out** entries were recorded and ended
//!   at once, and convert from their entry (the runner's holdout).
//! - An entry **waits** while it is active and not due yet (its delay or wait has not ended);
//!   an active entry that is due is being run, or was left due by a crash.
//! - An effect's **status** is the one its worker completed it with (`sent`, `failed`,
//!   `unsubscribed`, a delivery rule's skip, a dead letter …), or [`PENDING`] while it is in
//!   the outbox. Effects are placed by the `journey`, `version`, `step` and `kind` of their
//!   payload (as the runner writes them); an effect without them is no journey's and not
//!   counted.
//! - A conversion is attributed to the entry's last message before it (the state records its
//!   key); its **step** is that message's step. Treated entries that converted before any
//!   message are counted under no step.
//! - **Touches across journeys.** A conversion event is the pair (customer, cause): the same
//!   event (its message ID) or membership change converting entries of several journeys. Each
//!   converted entry with a message is one touch of that event, at the time of its attributed
//!   message. First touch credits the entry whose touch is earliest, last touch the one whose
//!   touch is latest (ties: the older entry first), each with the revenue that entry recorded.
//!   When an entry sent again after converting, the state keeps only its newer message's time:
//!   its touch is then placed at its entry, the earliest the attributed message can have been.
//!   Windows need no second check: each entry converted within its own goal's window.
//!
//! ```
//! use cohort_journey::measure::{Costs, JourneyStats, ReportOptions, report};
//! use cohort_journey::state::{JourneyStateStore, MemoryJourneyState, NewEntry, Move};
//! use chrono::{TimeZone, Utc};
//! let mut state = MemoryJourneyState::default();
//! let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
//! let entry = state.enter(&NewEntry::new("welcome", 1, 42, "nudge", t0), false)?.unwrap();
//! state.advance(entry, "nudge", &Move::exit("completed"), &[])?;
//!
//! let counts = state.journey_stats(Some("welcome"), t0)?;
//! let costs = Costs::new("CNY").per_message("sms", 0.05);
//! let report = report(&counts, &costs, &ReportOptions::default())?;
//! assert_eq!(report.journeys[0].overall.entered.treated, 1);
//! assert_eq!(report.journeys[0].versions[0].exits["completed"], 1);
//! // No held-out entries: no lift, and the reason says why.
//! assert!(report.journeys[0].overall.conversion_lift.relative.figures().is_none());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod report;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

#[cfg(test)]
mod tests;

pub use report::{
    Arms, Cost, Costs, Credit, Figure, Interval, JourneyFigures, JourneyReport, Lift, MeasureError,
    Outcome, Reason, ReasonCode, ReportOptions, StepFigures, VersionFigures, report,
};

use crate::state::{CustomerId, Entry, MemoryJourneyState};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// The status counted for effects still in the outbox.
pub const PENDING: &str = "pending";

/// Why the counts could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("journey statistics: {0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("journey statistics: unreadable {0}")]
    Unreadable(String),
}

/// The counts a journey report is made of. Used from one thread at a time (`&mut self`), as
/// the state store is.
pub trait JourneyStats {
    /// The counts of `journey` (all its versions), or of every journey for `None`, as they
    /// stand at `now` (which tells waiting entries from due ones). Touches are ranked across
    /// every journey before `journey` is picked out, so a journey's credit does not depend on
    /// which one is asked for. Rows come in the order of their key fields.
    fn journey_stats(
        &mut self,
        journey: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Counts, StatsError>;
}

/// Everything [`JourneyStats::journey_stats`] reads, as rows keyed by journey and version.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    /// When the counts were read.
    pub at: DateTime<Utc>,
    pub entries: Vec<EntryCounts>,
    pub steps: Vec<StepCounts>,
    pub exits: Vec<ExitCounts>,
    pub effects: Vec<EffectCounts>,
    pub conversions: Vec<ConversionCounts>,
    pub touches: Vec<TouchCounts>,
}

/// A journey version's entries, held out or treated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntryCounts {
    pub journey: String,
    pub version: u32,
    pub held_out: bool,
    pub entered: u64,
    /// Still active (not ended).
    pub active: u64,
    pub converted: u64,
    /// The converted entries' revenue (a conversion without one adds nothing).
    pub revenue: f64,
    /// The sum of the squares of each entry's revenue: with `revenue` and `entered`, the
    /// variance of revenue per entry.
    pub revenue_squares: f64,
}

/// A journey version's active entries at one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepCounts {
    pub journey: String,
    pub version: u32,
    pub step: String,
    pub active: u64,
    /// Of the active ones, those not due yet.
    pub waiting: u64,
}

/// A journey version's ended entries with one exit reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExitCounts {
    pub journey: String,
    pub version: u32,
    pub reason: String,
    pub entries: u64,
}

/// A journey version's effects of one step, channel, kind and status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EffectCounts {
    pub journey: String,
    pub version: u32,
    pub step: String,
    pub channel: String,
    /// `send`, `issue_coupon`, `set_trait`, `tag`, `webhook` (empty when the payload has none).
    pub kind: String,
    /// The final status, or [`PENDING`].
    pub status: String,
    pub effects: u64,
}

/// A journey version's treated conversions attributed to one step's message (`None`: the entry
/// converted before sending any).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConversionCounts {
    pub journey: String,
    pub version: u32,
    pub step: Option<String>,
    pub conversions: u64,
    pub revenue: f64,
}

/// A journey version's first- and last-touch credit (see the module documentation), for each
/// version with at least one touch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TouchCounts {
    pub journey: String,
    pub version: u32,
    pub first_touch: u64,
    pub first_touch_revenue: f64,
    pub last_touch: u64,
    pub last_touch_revenue: f64,
}

/// Where an effect's payload places it: (journey, version, step, kind).
fn placed(payload: &serde_json::Value) -> Option<(&str, u32, &str, &str)> {
    let journey = payload.get("journey")?.as_str()?;
    let version = u32::try_from(payload.get("version")?.as_u64()?).ok()?;
    let step = payload.get("step")?.as_str()?;
    let kind = payload
        .get("kind")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    Some((journey, version, step, kind))
}

/// When a converted entry touched its conversion event (see the module documentation).
fn touch_at(entry: &Entry) -> DateTime<Utc> {
    match (&entry.last_message, &entry.conversion) {
        (Some(last), Some(conversion)) if conversion.message.as_deref() == Some(&last.key) => {
            last.at
        }
        _ => entry.entered_at,
    }
}

impl JourneyStats for MemoryJourneyState {
    fn journey_stats(
        &mut self,
        journey: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Counts, StatsError> {
        let (entries, effects) = self.entries_and_effects();
        let picked = |name: &str| journey.is_none_or(|j| j == name);
        let mut by_entry: BTreeMap<(String, u32, bool), EntryCounts> = BTreeMap::new();
        let mut by_step: BTreeMap<(String, u32, String), StepCounts> = BTreeMap::new();
        let mut by_exit: BTreeMap<(String, u32, String), u64> = BTreeMap::new();
        let mut by_conversion: BTreeMap<(String, u32, Option<String>), (u64, f64)> =
            BTreeMap::new();
        // Touches of each conversion event: (touch time, entry, journey, version, revenue).
        type Touch = (DateTime<Utc>, i64, String, u32, f64);
        let mut touches: HashMap<(CustomerId, String), Vec<Touch>> = HashMap::new();
        let mut converted_messages: Vec<(String, u32, Option<String>, f64)> = Vec::new();
        for e in entries {
            let revenue = e.conversion.as_ref().and_then(|c| c.revenue).unwrap_or(0.0);
            if let Some(conversion) = &e.conversion
                && conversion.message.is_some()
            {
                touches
                    .entry((e.customer, conversion.cause.clone()))
                    .or_default()
                    .push((touch_at(e), e.id.0, e.journey.clone(), e.version, revenue));
            }
            if !picked(&e.journey) {
                continue;
            }
            let counts = by_entry
                .entry((e.journey.clone(), e.version, e.held_out))
                .or_insert_with(|| EntryCounts {
                    journey: e.journey.clone(),
                    version: e.version,
                    held_out: e.held_out,
                    entered: 0,
                    active: 0,
                    converted: 0,
                    revenue: 0.0,
                    revenue_squares: 0.0,
                });
            counts.entered += 1;
            match &e.exit_reason {
                None => {
                    counts.active += 1;
                    let step = by_step
                        .entry((e.journey.clone(), e.version, e.step.clone()))
                        .or_insert_with(|| StepCounts {
                            journey: e.journey.clone(),
                            version: e.version,
                            step: e.step.clone(),
                            active: 0,
                            waiting: 0,
                        });
                    step.active += 1;
                    if e.due_at.is_none_or(|due| due > now) {
                        step.waiting += 1;
                    }
                }
                Some(reason) => {
                    *by_exit
                        .entry((e.journey.clone(), e.version, reason.clone()))
                        .or_insert(0) += 1;
                }
            }
            if let Some(conversion) = &e.conversion {
                counts.converted += 1;
                counts.revenue += revenue;
                counts.revenue_squares += revenue * revenue;
                if !e.held_out {
                    converted_messages.push((
                        e.journey.clone(),
                        e.version,
                        conversion.message.clone(),
                        revenue,
                    ));
                }
            }
        }

        let mut by_effect: BTreeMap<(String, u32, String, String, String, String), u64> =
            BTreeMap::new();
        let mut step_of_effect: HashMap<&str, &str> = HashMap::new();
        for (effect, status) in effects {
            let Some((j, version, step, kind)) = placed(&effect.payload) else {
                continue;
            };
            step_of_effect.insert(&effect.key, step);
            if !picked(j) {
                continue;
            }
            let key = (
                j.to_string(),
                version,
                step.to_string(),
                effect.channel.clone(),
                kind.to_string(),
                status.unwrap_or(PENDING).to_string(),
            );
            *by_effect.entry(key).or_insert(0) += 1;
        }
        for (j, version, message, revenue) in converted_messages {
            let step = message
                .as_deref()
                .and_then(|key| step_of_effect.get(key))
                .map(|s| s.to_string());
            let counts = by_conversion.entry((j, version, step)).or_insert((0, 0.0));
            counts.0 += 1;
            counts.1 += revenue;
        }

        let mut by_touch: BTreeMap<(String, u32), TouchCounts> = BTreeMap::new();
        for mut event in touches.into_values() {
            event.sort_by_key(|&(at, entry, ..)| (at, entry));
            let last = event.len() - 1;
            for (i, (_, _, j, version, revenue)) in event.into_iter().enumerate() {
                if !picked(&j) {
                    continue;
                }
                let credit = by_touch
                    .entry((j.clone(), version))
                    .or_insert_with(|| TouchCounts {
                        journey: j,
                        version,
                        first_touch: 0,
                        first_touch_revenue: 0.0,
                        last_touch: 0,
                        last_touch_revenue: 0.0,
                    });
                if i == 0 {
                    credit.first_touch += 1;
                    credit.first_touch_revenue += revenue;
                }
                if i == last {
                    credit.last_touch += 1;
                    credit.last_touch_revenue += revenue;
                }
            }
        }

        Ok(Counts {
            at: now,
            entries: by_entry.into_values().collect(),
            steps: by_step.into_values().collect(),
            exits: by_exit
                .into_iter()
                .map(|((journey, version, reason), entries)| ExitCounts {
                    journey,
                    version,
                    reason,
                    entries,
                })
                .collect(),
            effects: by_effect
                .into_iter()
                .map(
                    |((journey, version, step, channel, kind, status), effects)| EffectCounts {
                        journey,
                        version,
                        step,
                        channel,
                        kind,
                        status,
                        effects,
                    },
                )
                .collect(),
            conversions: by_conversion
                .into_iter()
                .map(
                    |((journey, version, step), (conversions, revenue))| ConversionCounts {
                        journey,
                        version,
                        step,
                        conversions,
                        revenue,
                    },
                )
                .collect(),
            touches: by_touch.into_values().collect(),
        })
    }
}
