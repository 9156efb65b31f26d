//! When delays end: instants on the customer's wall clock, across daylight-saving changes.

use super::CustomerFacts;
use crate::definition::{DateSource, DelayUntil, Zone};
use crate::state::Entry;
use chrono::{
    DateTime, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta, TimeZone, Utc,
};
use chrono_tz::Tz;
use serde_json::Value;

/// When a delay reached at `now` ends, or why it cannot be known (its date is missing or is
/// not a date).
pub(super) fn delay_end(
    until: &DelayUntil,
    entry: &Entry,
    facts: &dyn CustomerFacts,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, String> {
    let far = || "the end is beyond the calendar".to_string();
    match until {
        DelayUntil::For(d) => now.checked_add_signed(d.as_time_delta()).ok_or_else(far),
        DelayUntil::At(at) => Ok(at.with_timezone(&Utc)),
        DelayUntil::Date { date, offset } => {
            let (value, what) = match date {
                DateSource::Trait(key) => (facts.traits().get(key), format!("trait {key:?}")),
                DateSource::EventProperty(key) => (
                    entry.payload.get("event").and_then(|e| e.get(key)),
                    format!("event property {key:?}"),
                ),
            };
            let value = value.filter(|v| !v.is_null()).ok_or(format!("no {what}"))?;
            let at = read_date(value, facts.time_zone())
                .ok_or_else(|| format!("{what} is not a date: {value}"))?;
            at.checked_add_signed(offset.as_time_delta())
                .ok_or_else(far)
        }
        DelayUntil::TimeOfDay { time, zone } => {
            let tz = match zone {
                Zone::Customer => facts.time_zone(),
                Zone::Fixed(tz) => *tz,
            };
            Ok(next_time_of_day(now, time.0, tz))
        }
    }
}

/// The first instant after `now` at which the wall clock in `tz` shows `time`. A time that a
/// daylight-saving change skips that day is read with the offset before the change (02:30 on
/// a spring-forward night in New York is 03:30 EDT); a time it repeats is its first
/// occurrence.
pub fn next_time_of_day(now: DateTime<Utc>, time: NaiveTime, tz: Tz) -> DateTime<Utc> {
    let today = now.with_timezone(&tz).date_naive();
    // Today's, or else tomorrow's; the day after only should a change skip a whole day (as
    // Samoa's did in 2011).
    for days in 0..=2 {
        let Some(date) = today.checked_add_signed(TimeDelta::days(days)) else {
            break;
        };
        let at = local_instant(tz, date.and_time(time));
        if at > now {
            return at;
        }
    }
    now.checked_add_signed(TimeDelta::days(1)).unwrap_or(now)
}

/// The instant a wall-clock time in `tz` names (see [`next_time_of_day`] for skipped and
/// repeated times).
fn local_instant(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(at) => at.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            // The offset in force a day before: the one the skipped time would have had.
            let day_before = local
                .checked_sub_signed(TimeDelta::days(1))
                .unwrap_or(local);
            let before = tz.offset_from_utc_datetime(&day_before).fix();
            local
                .checked_sub_signed(TimeDelta::seconds(i64::from(before.local_minus_utc())))
                .unwrap_or(local)
                .and_utc()
        }
    }
}

/// Reads a date from a trait or property: an RFC 3339 instant, or a date and time (`T` or a
/// space between) or a date (midnight) without offset, read on the wall clock of `tz`; or a
/// number of Unix seconds.
pub fn read_date(value: &Value, tz: Tz) -> Option<DateTime<Utc>> {
    match value {
        Value::String(text) => {
            let text = text.trim();
            if let Ok(at) = DateTime::parse_from_rfc3339(text) {
                return Some(at.with_timezone(&Utc));
            }
            for format in [
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M",
            ] {
                if let Ok(local) = NaiveDateTime::parse_from_str(text, format) {
                    return Some(local_instant(tz, local));
                }
            }
            let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
            Some(local_instant(tz, date.and_time(NaiveTime::MIN)))
        }
        Value::Number(n) => {
            let seconds = n.as_f64()?;
            if !seconds.is_finite() {
                return None;
            }
            let millis = (seconds * 1000.0).round();
            // Outside what an i64 of milliseconds holds, it is not a date anyone meant.
            if millis.abs() >= 9.0e18 {
                return None;
            }
            DateTime::from_timestamp_millis(millis as i64)
        }
        _ => None,
    }
}
