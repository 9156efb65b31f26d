//! The journey report: [`report`] turns [`Counts`] into figures per journey, version and step.
//!
//! Treated entries are compared with held-out ones as an experiment's variation is with its
//! control, by `cohort-experiment`'s Welch t-test (the statistics checked against gbstats):
//! the conversion rate as a proportion, revenue per entry as a mean (an entry that did not
//! convert brought 0). Each lift is given relative and absolute with its two-sided interval at
//! `1 − alpha` and its p-value, or with the reason there is none ([`Figure::Refused`]): no
//! held-out entries, fewer than two in an arm, a baseline of zero, no variance. A refused figure
//! is never replaced by a number.
//!
//! - Incremental conversions and revenue are the absolute lift times the treated entries (the
//!   interval scaled alike): what the treated entries brought beyond what they would have
//!   without the journey.
//! - Cost is, per channel, the effects completed [`SENT`] times that channel's price in
//!   [`Costs`]. A channel that sent messages (`send` effects) without a price is listed in
//!   [`Cost::uncosted_channels`] and counts nothing.
//! - Return on cost is (incremental revenue − cost) / cost, its interval the incremental
//!   revenue's interval carried through that formula. Refused without cost, and whenever the
//!   incremental revenue is.
//!
//! A journey's `overall` figures add all its versions' entries and effects together.

use super::{Counts, StatsError};
use chrono::{DateTime, Utc};
use cohort_experiment::stats::{self, Degenerate, Difference, Summary};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The effect status that costs money: the provider took the message.
pub const SENT: &str = "sent";

/// What a message costs, by channel, in one currency (the revenue's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Costs {
    /// The currency of costs and revenue, as an ISO 4217 code (`CNY`).
    pub currency: String,
    /// The price of one sent message, by channel name (as send steps name channels).
    #[serde(default)]
    pub per_message: BTreeMap<String, f64>,
}

impl Costs {
    /// No prices yet, in `currency`.
    pub fn new(currency: &str) -> Costs {
        Costs {
            currency: currency.to_string(),
            per_message: BTreeMap::new(),
        }
    }

    /// With `channel`'s price of one message.
    pub fn per_message(mut self, channel: &str, cost: f64) -> Costs {
        self.per_message.insert(channel.to_string(), cost);
        self
    }
}

/// How the report compares.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportOptions {
    /// Intervals are at confidence `1 − alpha`, two-sided.
    pub alpha: f64,
}

impl Default for ReportOptions {
    /// 95 % intervals.
    fn default() -> ReportOptions {
        ReportOptions { alpha: 0.05 }
    }
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    #[error(transparent)]
    Stats(#[from] StatsError),
    /// An option or cost out of range; `at` names it (`options.alpha`, `costs.per_message.sms`).
    #[error("{at}: {message}")]
    Invalid { at: String, message: String },
}

/// Why a figure is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// Fewer than two entries in an arm.
    NotEnoughData,
    /// The held-out arm's mean is zero: no relative lift.
    BaselineZero,
    /// Every entry in an arm has the same value (all converted, none did, same revenue).
    ZeroVariance,
    /// The journey holds no one out, so nothing says what would have happened without it.
    NoHoldout,
    /// No price for the channels that sent: return on cost is undefined.
    NoCost,
    /// The arithmetic overflowed.
    NotFinite,
}

/// A [`ReasonCode`] with its sentence in English and Chinese.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub code: ReasonCode,
    pub en: String,
    pub zh: String,
}

impl From<ReasonCode> for Reason {
    fn from(code: ReasonCode) -> Reason {
        use cohort_experiment::report::{Reason as Worded, ReasonCode as Theirs};
        // The reasons the comparison shares with experiments are worded as experiments word them.
        let shared = |theirs: Theirs| {
            let worded = Worded::from(theirs);
            (worded.en, worded.zh)
        };
        let (en, zh) = match code {
            ReasonCode::NotEnoughData => shared(Theirs::NotEnoughData),
            ReasonCode::BaselineZero => shared(Theirs::BaselineZero),
            ReasonCode::ZeroVariance => shared(Theirs::ZeroVariance),
            ReasonCode::NotFinite => shared(Theirs::NotFinite),
            ReasonCode::NoHoldout => (
                "no held-out entries: give the journey a holdout share to measure its lift".into(),
                "没有留出组：为旅程设置留出比例才能衡量提升".into(),
            ),
            ReasonCode::NoCost => (
                "no cost: the channels that sent have no price per message".into(),
                "没有成本：发送所用的渠道未设置单条消息价格".into(),
            ),
        };
        Reason { code, en, zh }
    }
}

impl From<Degenerate> for Reason {
    fn from(d: Degenerate) -> Reason {
        match d {
            Degenerate::ControlMeanZero => ReasonCode::BaselineZero,
            Degenerate::ZeroVariance => ReasonCode::ZeroVariance,
            Degenerate::TooFewUnits => ReasonCode::NotEnoughData,
        }
        .into()
    }
}

/// Figures, or the reason there are none. Serialised as the figures' fields, or as
/// `{"reason": {"code", "en", "zh"}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Figure<T> {
    Figures(T),
    Refused { reason: Reason },
}

impl<T> Figure<T> {
    pub fn figures(&self) -> Option<&T> {
        match self {
            Figure::Figures(f) => Some(f),
            Figure::Refused { .. } => None,
        }
    }

    pub fn reason(&self) -> Option<&Reason> {
        match self {
            Figure::Figures(_) => None,
            Figure::Refused { reason } => Some(reason),
        }
    }

    fn refused(code: ReasonCode) -> Figure<T> {
        Figure::Refused {
            reason: code.into(),
        }
    }
}

/// An estimate with its two-sided interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub estimate: f64,
    pub ci: [f64; 2],
    /// Of the comparison with the held-out entries, where the figure is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
}

impl Interval {
    /// `f` applied to the estimate and both ends (`f` increasing).
    fn map(self, f: impl Fn(f64) -> f64) -> Figure<Interval> {
        let mapped = Interval {
            estimate: f(self.estimate),
            ci: [f(self.ci[0]), f(self.ci[1])],
            p_value: self.p_value,
        };
        if mapped.estimate.is_finite() && mapped.ci.iter().all(|x| x.is_finite()) {
            Figure::Figures(mapped)
        } else {
            Figure::refused(ReasonCode::NotFinite)
        }
    }
}

/// A lift of treated over held-out entries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lift {
    /// (treated − held out) / held out.
    pub relative: Figure<Interval>,
    /// treated − held out.
    pub absolute: Figure<Interval>,
}

/// A figure for treated and for held-out entries.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Arms<T> {
    pub treated: T,
    pub held_out: T,
}

/// Conversions and their revenue credited somewhere.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Credit {
    pub conversions: u64,
    pub revenue: f64,
}

impl Credit {
    fn add(&mut self, conversions: u64, revenue: f64) {
        self.conversions += conversions;
        self.revenue += revenue;
    }
}

/// What the messages cost.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Cost {
    pub total: f64,
    pub by_channel: BTreeMap<String, f64>,
    /// Effects completed [`SENT`], by channel.
    pub sent: BTreeMap<String, u64>,
    /// Channels that sent messages but have no price (their cost counts as nothing).
    pub uncosted_channels: Vec<String>,
}

/// What a journey (or one version of it) did and caused.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub entered: Arms<u64>,
    pub active: Arms<u64>,
    pub conversions: Arms<u64>,
    pub revenue: Arms<f64>,
    /// Conversions per entry; `null` without entries.
    pub conversion_rate: Arms<Option<f64>>,
    /// Revenue per entry; `null` without entries.
    pub revenue_per_entry: Arms<Option<f64>>,
    pub conversion_lift: Lift,
    pub revenue_lift: Lift,
    /// Conversions the treated entries brought beyond the held-out rate.
    pub incremental_conversions: Figure<Interval>,
    /// Revenue the treated entries brought beyond the held-out revenue per entry.
    pub incremental_revenue: Figure<Interval>,
    /// Effects by channel and status (`pending` while in the outbox).
    pub effects: BTreeMap<String, BTreeMap<String, u64>>,
    pub cost: Cost,
    /// (incremental revenue − cost) / cost.
    pub roi: Figure<Interval>,
}

/// One step of a journey version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepFigures {
    pub step: String,
    /// Active entries at the step.
    pub active: u64,
    /// Of them, those not due yet.
    pub waiting: u64,
    /// The step's effects by channel and status.
    pub effects: BTreeMap<String, BTreeMap<String, u64>>,
    /// Treated conversions attributed to the step's message.
    pub conversions: Credit,
}

/// One version of a journey.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionFigures {
    pub version: u32,
    pub outcome: Outcome,
    /// Ended entries by exit reason.
    pub exits: BTreeMap<String, u64>,
    pub steps: Vec<StepFigures>,
    /// Treated conversions of entries that had sent no message yet.
    pub before_any_message: Credit,
    pub first_touch: Credit,
    pub last_touch: Credit,
}

/// One journey: all versions together, then each.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JourneyFigures {
    pub journey: String,
    pub overall: Outcome,
    /// Conversions (and revenue) whose first touch across journeys was this journey's message.
    pub first_touch: Credit,
    /// Conversions (and revenue) whose last touch across journeys was this journey's message.
    pub last_touch: Credit,
    pub versions: Vec<VersionFigures>,
}

/// The report of [`report`]: the API's and the CLI's JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JourneyReport {
    /// When the counts were read.
    pub at: DateTime<Utc>,
    /// The intervals' confidence, `1 − alpha`.
    pub confidence: f64,
    pub currency: String,
    pub journeys: Vec<JourneyFigures>,
}

/// One arm's sums.
#[derive(Debug, Clone, Copy, Default)]
struct ArmSums {
    entered: u64,
    active: u64,
    converted: u64,
    revenue: f64,
    revenue_squares: f64,
}

impl ArmSums {
    fn add(&mut self, other: &ArmSums) {
        self.entered += other.entered;
        self.active += other.active;
        self.converted += other.converted;
        self.revenue += other.revenue;
        self.revenue_squares += other.revenue_squares;
    }

    fn conversions(&self) -> Summary {
        Summary::Proportion {
            n: self.entered,
            sum: self.converted as f64,
        }
    }

    fn revenue(&self) -> Summary {
        Summary::SampleMean {
            n: self.entered,
            sum: self.revenue,
            sum_squares: self.revenue_squares,
        }
    }

    fn per_entry(&self, x: f64) -> Option<f64> {
        (self.entered > 0).then(|| x / self.entered as f64)
    }
}

/// What [`Outcome`] is computed from, for a version or a whole journey.
#[derive(Debug, Clone, Default)]
struct Tally {
    treated: ArmSums,
    held_out: ArmSums,
    effects: BTreeMap<String, BTreeMap<String, u64>>,
    /// Channels with `send` effects: those a missing price is reported for.
    message_channels: BTreeSet<String>,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.treated.add(&other.treated);
        self.held_out.add(&other.held_out);
        for (channel, statuses) in &other.effects {
            let mine = self.effects.entry(channel.clone()).or_default();
            for (status, n) in statuses {
                *mine.entry(status.clone()).or_insert(0) += n;
            }
        }
        self.message_channels
            .extend(other.message_channels.iter().cloned());
    }
}

#[derive(Debug, Default)]
struct VersionParts {
    tally: Tally,
    exits: BTreeMap<String, u64>,
    steps: BTreeMap<String, StepFigures>,
    before_any_message: Credit,
    first_touch: Credit,
    last_touch: Credit,
}

impl VersionParts {
    fn step(&mut self, step: &str) -> &mut StepFigures {
        self.steps
            .entry(step.to_string())
            .or_insert_with(|| StepFigures {
                step: step.to_string(),
                active: 0,
                waiting: 0,
                effects: BTreeMap::new(),
                conversions: Credit::default(),
            })
    }
}

type Journeys<'a> = BTreeMap<&'a str, BTreeMap<u32, VersionParts>>;

fn parts_of<'j, 'a>(
    journeys: &'j mut Journeys<'a>,
    journey: &'a str,
    version: u32,
) -> &'j mut VersionParts {
    journeys
        .entry(journey)
        .or_default()
        .entry(version)
        .or_default()
}

fn invalid(at: impl Into<String>, message: &str) -> MeasureError {
    MeasureError::Invalid {
        at: at.into(),
        message: message.to_string(),
    }
}

/// The report of `counts`, pricing sent messages with `costs`; see the module documentation.
/// Refuses an `alpha` outside (0, 1), an empty currency and a negative or non-finite price.
pub fn report(
    counts: &Counts,
    costs: &Costs,
    options: &ReportOptions,
) -> Result<JourneyReport, MeasureError> {
    if !(options.alpha > 0.0 && options.alpha < 1.0) {
        return Err(invalid("options.alpha", "must be between 0 and 1"));
    }
    if costs.currency.trim().is_empty() {
        return Err(invalid("costs.currency", "is required (an ISO 4217 code)"));
    }
    if let Some((channel, _)) = costs
        .per_message
        .iter()
        .find(|(_, c)| !(c.is_finite() && **c >= 0.0))
    {
        return Err(invalid(
            format!("costs.per_message.{channel}"),
            "must be a price of zero or more",
        ));
    }

    let mut journeys: Journeys<'_> = BTreeMap::new();
    for row in &counts.entries {
        let parts = parts_of(&mut journeys, &row.journey, row.version);
        let arm = if row.held_out {
            &mut parts.tally.held_out
        } else {
            &mut parts.tally.treated
        };
        arm.add(&ArmSums {
            entered: row.entered,
            active: row.active,
            converted: row.converted,
            revenue: row.revenue,
            revenue_squares: row.revenue_squares,
        });
    }
    for row in &counts.steps {
        let parts = parts_of(&mut journeys, &row.journey, row.version);
        let step = parts.step(&row.step);
        step.active += row.active;
        step.waiting += row.waiting;
    }
    for row in &counts.exits {
        let parts = parts_of(&mut journeys, &row.journey, row.version);
        *parts.exits.entry(row.reason.clone()).or_insert(0) += row.entries;
    }
    for row in &counts.effects {
        let parts = parts_of(&mut journeys, &row.journey, row.version);
        *parts
            .step(&row.step)
            .effects
            .entry(row.channel.clone())
            .or_default()
            .entry(row.status.clone())
            .or_insert(0) += row.effects;
        *parts
            .tally
            .effects
            .entry(row.channel.clone())
            .or_default()
            .entry(row.status.clone())
            .or_insert(0) += row.effects;
        if row.kind == "send" {
            parts.tally.message_channels.insert(row.channel.clone());
        }
    }
    for row in &counts.conversions {
        let parts = parts_of(&mut journeys, &row.journey, row.version);
        match &row.step {
            Some(step) => parts
                .step(step)
                .conversions
                .add(row.conversions, row.revenue),
            None => parts.before_any_message.add(row.conversions, row.revenue),
        }
    }
    for row in &counts.touches {
        let parts = parts_of(&mut journeys, &row.journey, row.version);
        parts
            .first_touch
            .add(row.first_touch, row.first_touch_revenue);
        parts.last_touch.add(row.last_touch, row.last_touch_revenue);
    }

    let alpha = options.alpha;
    let journeys = journeys
        .into_iter()
        .map(|(journey, versions)| {
            let mut all = Tally::default();
            let mut first_touch = Credit::default();
            let mut last_touch = Credit::default();
            let versions: Vec<VersionFigures> = versions
                .into_iter()
                .map(|(version, parts)| {
                    all.add(&parts.tally);
                    first_touch.add(parts.first_touch.conversions, parts.first_touch.revenue);
                    last_touch.add(parts.last_touch.conversions, parts.last_touch.revenue);
                    VersionFigures {
                        version,
                        outcome: outcome(&parts.tally, costs, alpha),
                        exits: parts.exits,
                        steps: parts.steps.into_values().collect(),
                        before_any_message: parts.before_any_message,
                        first_touch: parts.first_touch,
                        last_touch: parts.last_touch,
                    }
                })
                .collect();
            JourneyFigures {
                journey: journey.to_string(),
                overall: outcome(&all, costs, alpha),
                first_touch,
                last_touch,
                versions,
            }
        })
        .collect();
    Ok(JourneyReport {
        at: counts.at,
        confidence: 1.0 - alpha,
        currency: costs.currency.clone(),
        journeys,
    })
}

/// Treated against held out by the experiment engine's t-test.
fn compare(
    held_out: &Summary,
    treated: &Summary,
    difference: Difference,
    alpha: f64,
) -> Figure<Interval> {
    if held_out.n() == 0 {
        return Figure::refused(ReasonCode::NoHoldout);
    }
    match stats::t_test(held_out, treated, difference, alpha) {
        Ok(e) => Interval {
            estimate: e.effect,
            ci: [e.interval.0, e.interval.1],
            p_value: Some(e.p_value),
        }
        .map(|x| x),
        Err(d) => Figure::Refused { reason: d.into() },
    }
}

fn lift(held_out: &Summary, treated: &Summary, alpha: f64) -> Lift {
    Lift {
        relative: compare(held_out, treated, Difference::Relative, alpha),
        absolute: compare(held_out, treated, Difference::Absolute, alpha),
    }
}

/// An absolute lift per entry, times the treated entries.
fn incremental(absolute: &Figure<Interval>, treated: u64) -> Figure<Interval> {
    match absolute {
        Figure::Figures(per_entry) => per_entry.map(|x| x * treated as f64),
        Figure::Refused { reason } => Figure::Refused {
            reason: reason.clone(),
        },
    }
}

fn cost(tally: &Tally, costs: &Costs) -> Cost {
    let mut cost = Cost::default();
    for (channel, statuses) in &tally.effects {
        let Some(&sent) = statuses.get(SENT) else {
            continue;
        };
        cost.sent.insert(channel.clone(), sent);
        match costs.per_message.get(channel) {
            Some(price) => {
                let spent = sent as f64 * price;
                cost.by_channel.insert(channel.clone(), spent);
                cost.total += spent;
            }
            None if tally.message_channels.contains(channel) => {
                cost.uncosted_channels.push(channel.clone());
            }
            None => {}
        }
    }
    cost
}

fn outcome(tally: &Tally, costs: &Costs, alpha: f64) -> Outcome {
    let (t, h) = (&tally.treated, &tally.held_out);
    let conversion_lift = lift(&h.conversions(), &t.conversions(), alpha);
    let revenue_lift = lift(&h.revenue(), &t.revenue(), alpha);
    let incremental_conversions = incremental(&conversion_lift.absolute, t.entered);
    let incremental_revenue = incremental(&revenue_lift.absolute, t.entered);
    let cost = cost(tally, costs);
    let roi = if cost.total <= 0.0 {
        Figure::refused(ReasonCode::NoCost)
    } else {
        match &incremental_revenue {
            Figure::Figures(gain) => Interval {
                p_value: None,
                ..*gain
            }
            .map(|g| (g - cost.total) / cost.total),
            Figure::Refused { reason } => Figure::Refused {
                reason: reason.clone(),
            },
        }
    };
    Outcome {
        entered: Arms {
            treated: t.entered,
            held_out: h.entered,
        },
        active: Arms {
            treated: t.active,
            held_out: h.active,
        },
        conversions: Arms {
            treated: t.converted,
            held_out: h.converted,
        },
        revenue: Arms {
            treated: t.revenue,
            held_out: h.revenue,
        },
        conversion_rate: Arms {
            treated: t.per_entry(t.converted as f64),
            held_out: h.per_entry(h.converted as f64),
        },
        revenue_per_entry: Arms {
            treated: t.per_entry(t.revenue),
            held_out: h.per_entry(h.revenue),
        },
        conversion_lift,
        revenue_lift,
        incremental_conversions,
        incremental_revenue,
        effects: tally.effects.clone(),
        cost,
        roi,
    }
}
