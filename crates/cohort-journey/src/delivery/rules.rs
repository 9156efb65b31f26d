//! A workspace's delivery rules and the decision they give for one message at send time.
//!
//! [`DeliveryRules`] are written in JSON:
//!
//! ```json
//! {
//!   "time_zone": "Asia/Shanghai",
//!   "caps": {"global": {"day": 3, "week": 10}, "sms": {"day": 1}},
//!   "quiet_hours": {
//!     "default": {"start": "21:00", "end": "08:00"},
//!     "channels": {"sms": {"start": "20:00", "end": "09:00"}, "webhook": null}
//!   },
//!   "rate_limits": {"sms-main": {"per_second": 50}},
//!   "consent": {"opt_in": ["email:marketing"]}
//! }
//! ```
//!
//! - `time_zone`: for customers whose own zone is unknown (UTC by default).
//! - `caps`: most marketing messages per calendar `day`, ISO `week` (from Monday) and `month`
//!   in the customer's zone, over all channels (`global`) and per channel kind (`email`, `sms`,
//!   `push`, `webhook`). Transactional messages neither count nor are capped.
//! - `quiet_hours`: a local window, which may cross midnight, when marketing messages wait
//!   (or are skipped, as the send step says); `channels` overrides it per channel kind, `null`
//!   meaning none for that kind.
//! - `rate_limits`: per channel (by its name: a provider account's throughput), messages per
//!   second and an optional `burst` (default: one second's worth, at least 1).
//! - `consent`: see [`ConsentRules`].
//!
//! [`decide`] gives a [`Decision`] from the rules, the message ([`SendRequest`]) and what is
//! known of the customer ([`CustomerFacts`]), in this order:
//!
//! 1. consent ([`check_consent`]): do-not-contact, unsubscribes and missing consent skip the
//!    message, transactional or not;
//! 2. quiet hours, for marketing messages: held until the window opens, or skipped;
//!    transactional messages are not held (as in Braze: a receipt or a one-time code is wanted
//!    now, and the customer just asked for it);
//! 3. frequency caps, for marketing messages: a capped customer is skipped, never held, and the
//!    journey moves on.
//!
//! Quiet hours come before caps because a held message is decided again when it is released:
//! caps then count the day it is actually sent on.
//!
//! Rate limits are state (a token bucket per channel): [`RateLimiter::gate`] turns a
//! [`Decision::Send`] into a hold of a fraction of a second when the channel's bucket is empty.
//! Its time is the one passed in.

use super::consent::{ConsentFact, ConsentRules, Purpose, check_consent};
use super::zone::Period;
use crate::definition::{ChannelKind, QuietHours, SendMessage, TimeOfDay};
use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// A workspace's delivery rules (see the module docs for the JSON form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryRules {
    #[serde(with = "tz_name", default = "utc")]
    pub time_zone: Tz,
    #[serde(default)]
    pub caps: FrequencyCaps,
    #[serde(default)]
    pub quiet_hours: QuietHoursRules,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rate_limits: BTreeMap<String, RateLimit>,
    #[serde(default)]
    pub consent: ConsentRules,
}

fn utc() -> Tz {
    chrono_tz::UTC
}

impl Default for DeliveryRules {
    fn default() -> Self {
        DeliveryRules {
            time_zone: utc(),
            caps: FrequencyCaps::default(),
            quiet_hours: QuietHoursRules::default(),
            rate_limits: BTreeMap::new(),
            consent: ConsentRules::default(),
        }
    }
}

/// Why rules could not be read: the field's path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("delivery rules: {path}: {message}")]
pub struct RulesError {
    pub path: String,
    pub message: String,
}

impl DeliveryRules {
    /// Reads rules from JSON, refusing unknown fields and bad values with the field's path
    /// (`quiet_hours.default.end`).
    pub fn from_json(text: &str) -> Result<DeliveryRules, RulesError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| RulesError {
            path: e.path().to_string(),
            message: e.inner().to_string(),
        })
    }
}

mod tz_name {
    use super::*;

    pub fn serialize<S: Serializer>(tz: &Tz, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(tz.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Tz, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "{name:?} is not a time zone: write an IANA name such as \"Asia/Shanghai\" or \"UTC\""
            ))
        })
    }
}

/// Most messages per calendar period; `None` for no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub week: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub month: Option<u64>,
}

impl Limits {
    pub fn get(&self, period: Period) -> Option<u64> {
        match period {
            Period::Day => self.day,
            Period::Week => self.week,
            Period::Month => self.month,
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }
}

/// Frequency caps over all channels and per channel kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCaps {
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub global: Limits,
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub email: Limits,
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub sms: Limits,
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub push: Limits,
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub webhook: Limits,
}

impl FrequencyCaps {
    pub fn channel(&self, kind: ChannelKind) -> &Limits {
        match kind {
            ChannelKind::Email => &self.email,
            ChannelKind::Sms => &self.sms,
            ChannelKind::Push => &self.push,
            ChannelKind::Webhook => &self.webhook,
        }
    }
}

/// A local window when marketing messages wait: from `start` up to `end`, across midnight
/// when `end` is earlier (21:00–08:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawWindow")]
pub struct QuietWindow {
    pub start: TimeOfDay,
    pub end: TimeOfDay,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    start: TimeOfDay,
    end: TimeOfDay,
}

impl TryFrom<RawWindow> for QuietWindow {
    type Error = String;

    fn try_from(raw: RawWindow) -> Result<QuietWindow, String> {
        if raw.start == raw.end {
            return Err(format!(
                "quiet hours from {} to {} are ambiguous (none, or all day): remove them, or give \
                 different times",
                raw.start, raw.end
            ));
        }
        Ok(QuietWindow {
            start: raw.start,
            end: raw.end,
        })
    }
}

impl QuietWindow {
    /// When the window, if `now` is inside it in `tz`, next opens; `None` when `now` is
    /// outside. Read on the wall clock: on a daylight-saving day the window ends at the
    /// first instant the clock shows `end` or later ([`wall_time`](super::zone::wall_time)).
    pub fn opens_at(&self, tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&tz).naive_local();
        let (start, end, time) = (self.start.0, self.end.0, local.time());
        let date = local.date();
        let open_date = if start < end {
            (start <= time && time < end).then_some(date)
        } else if time >= start {
            date.succ_opt()
        } else {
            (time < end).then_some(date)
        }?;
        let opens = super::zone::wall_time(tz, open_date.and_time(end), now);
        // Never "now or before": a held message must wait for something.
        Some(opens.max(now + TimeDelta::seconds(1)))
    }
}

/// Quiet hours for the workspace, with per channel kind overrides.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHoursRules {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<QuietWindow>,
    /// A channel kind listed here uses its own window (`null`: none) instead of the default.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub channels: BTreeMap<ChannelKind, Option<QuietWindow>>,
}

impl QuietHoursRules {
    pub fn window(&self, kind: ChannelKind) -> Option<&QuietWindow> {
        match self.channels.get(&kind) {
            Some(own) => own.as_ref(),
            None => self.default.as_ref(),
        }
    }
}

/// A channel's throughput: `per_second` on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawRate")]
pub struct RateLimit {
    pub per_second: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRate {
    per_second: f64,
    #[serde(default)]
    burst: Option<u32>,
}

impl TryFrom<RawRate> for RateLimit {
    type Error = String;

    fn try_from(raw: RawRate) -> Result<RateLimit, String> {
        if !(raw.per_second.is_finite() && raw.per_second > 0.0) {
            return Err(format!(
                "per_second must be a number above 0, not {}",
                raw.per_second
            ));
        }
        if raw.burst == Some(0) {
            return Err("burst must be at least 1".into());
        }
        Ok(RateLimit {
            per_second: raw.per_second,
            burst: raw.burst,
        })
    }
}

impl RateLimit {
    fn capacity(&self) -> f64 {
        self.burst.map_or(self.per_second.max(1.0), f64::from)
    }
}

/// The message to decide on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendRequest<'a> {
    /// The channel's name (rate limits are per channel).
    pub channel: &'a str,
    pub kind: ChannelKind,
    pub transactional: bool,
    /// What the send step does with a message due inside quiet hours.
    pub quiet_hours: QuietHours,
}

impl<'a> SendRequest<'a> {
    /// The request for a send step, whose channel is of `kind`.
    pub fn for_step(step: &'a SendMessage, kind: ChannelKind) -> SendRequest<'a> {
        SendRequest {
            channel: &step.channel,
            kind,
            transactional: step.transactional,
            quiet_hours: step.quiet_hours,
        }
    }

    pub fn purpose(&self) -> Purpose {
        Purpose::of(self.transactional)
    }
}

/// Marketing messages already sent in the customer's current day, week and month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeriodCounts {
    pub day: u64,
    pub week: u64,
    pub month: u64,
}

impl PeriodCounts {
    pub fn get(&self, period: Period) -> u64 {
        match period {
            Period::Day => self.day,
            Period::Week => self.week,
            Period::Month => self.month,
        }
    }

    pub fn set(&mut self, period: Period, count: u64) {
        match period {
            Period::Day => self.day = count,
            Period::Week => self.week = count,
            Period::Month => self.month = count,
        }
    }
}

/// What is known of the customer at send time.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerFacts {
    pub zone: Tz,
    /// Their consent facts (one per scope, as a store keeps them).
    pub consent: Vec<ConsentFact>,
    /// Marketing messages sent over all channels in the current periods.
    pub sent: PeriodCounts,
    /// Those sent through channels of the request's kind.
    pub sent_on_kind: PeriodCounts,
}

impl CustomerFacts {
    /// A customer in `zone` with no consent facts and nothing sent.
    pub fn new(zone: Tz) -> CustomerFacts {
        CustomerFacts {
            zone,
            consent: Vec::new(),
            sent: PeriodCounts::default(),
            sent_on_kind: PeriodCounts::default(),
        }
    }
}

/// Which frequency cap was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CapScope {
    Global,
    Channel(ChannelKind),
}

/// Why a message is not sent. [`SkipReason::code`] is the stable reason; the `Display` form
/// adds which cap (`frequency_cap:sms:day`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    DoNotContact,
    Unsubscribed,
    NoConsent,
    FrequencyCap { scope: CapScope, period: Period },
    QuietHours,
}

impl SkipReason {
    pub fn code(&self) -> &'static str {
        match self {
            SkipReason::DoNotContact => "do_not_contact",
            SkipReason::Unsubscribed => "unsubscribed",
            SkipReason::NoConsent => "no_consent",
            SkipReason::FrequencyCap { .. } => "frequency_cap",
            SkipReason::QuietHours => "quiet_hours",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::FrequencyCap { scope, period } => {
                let scope = match scope {
                    CapScope::Global => "global",
                    CapScope::Channel(kind) => kind.as_str(),
                };
                write!(f, "frequency_cap:{scope}:{}", period.as_str())
            }
            other => f.write_str(other.code()),
        }
    }
}

/// Why a message waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HoldReason {
    QuietHours,
    RateLimit,
}

impl HoldReason {
    pub fn code(self) -> &'static str {
        match self {
            HoldReason::QuietHours => "quiet_hours",
            HoldReason::RateLimit => "rate_limit",
        }
    }
}

/// What to do with a message now. `Display` gives the record: `send`,
/// `hold:quiet_hours`, `skip:frequency_cap:global:week`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Send,
    /// Decide again at `until`.
    Hold {
        until: DateTime<Utc>,
        reason: HoldReason,
    },
    /// Not sent; the journey moves on.
    Skip(SkipReason),
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Send => f.write_str("send"),
            Decision::Hold { reason, .. } => write!(f, "hold:{}", reason.code()),
            Decision::Skip(reason) => write!(f, "skip:{reason}"),
        }
    }
}

/// The decision for `request` to a customer with `facts`, at `now` (see the module docs for
/// the order of the checks). Pure: rate limits are [`RateLimiter::gate`]'s.
pub fn decide(
    rules: &DeliveryRules,
    request: &SendRequest<'_>,
    facts: &CustomerFacts,
    now: DateTime<Utc>,
) -> Decision {
    if let Err(reason) = check_consent(
        &facts.consent,
        &rules.consent,
        request.kind,
        request.purpose(),
    ) {
        return Decision::Skip(reason);
    }
    if request.transactional {
        return Decision::Send;
    }
    if let Some(window) = rules.quiet_hours.window(request.kind)
        && let Some(until) = window.opens_at(facts.zone, now)
    {
        return match request.quiet_hours {
            QuietHours::Hold => Decision::Hold {
                until,
                reason: HoldReason::QuietHours,
            },
            QuietHours::Skip => Decision::Skip(SkipReason::QuietHours),
        };
    }
    let caps = [
        (CapScope::Global, &rules.caps.global, &facts.sent),
        (
            CapScope::Channel(request.kind),
            rules.caps.channel(request.kind),
            &facts.sent_on_kind,
        ),
    ];
    for (scope, limits, sent) in caps {
        for period in Period::ALL {
            if limits
                .get(period)
                .is_some_and(|limit| sent.get(period) >= limit)
            {
                return Decision::Skip(SkipReason::FrequencyCap { scope, period });
            }
        }
    }
    Decision::Send
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: DateTime<Utc>,
}

/// Token buckets for the channels with a rate limit; time is what callers pass in.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: HashMap<String, Bucket>,
}

impl RateLimiter {
    /// Passes a decision on; a [`Decision::Send`] through a rate-limited channel takes a token
    /// from its bucket, or becomes a hold until the bucket has one. A bucket starts full.
    pub fn gate(
        &mut self,
        rules: &DeliveryRules,
        channel: &str,
        decision: Decision,
        now: DateTime<Utc>,
    ) -> Decision {
        let (Decision::Send, Some(limit)) = (decision, rules.rate_limits.get(channel)) else {
            return decision;
        };
        let capacity = limit.capacity();
        let bucket = match self.buckets.get_mut(channel) {
            Some(bucket) => bucket,
            None => self.buckets.entry(channel.to_string()).or_insert(Bucket {
                tokens: capacity,
                at: now,
            }),
        };
        // A clock read behind the last one (another thread's earlier `now`) adds nothing.
        if now > bucket.at {
            let elapsed = (now - bucket.at).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
            bucket.tokens = (bucket.tokens + elapsed * limit.per_second).min(capacity);
            bucket.at = now;
        }
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Decision::Send;
        }
        let wait_micros = ((1.0 - bucket.tokens) / limit.per_second * 1e6).ceil() as i64;
        Decision::Hold {
            until: now + TimeDelta::microseconds(wait_micros.max(1)),
            reason: HoldReason::RateLimit,
        }
    }
}
