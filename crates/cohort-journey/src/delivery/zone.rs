//! The customer's time zone, and the calendar read on it: where today, this week and this
//! month begin, and the first instant a wall clock shows a given time.
//!
//! A customer's zone is, in order: the `timezone` trait (an IANA name such as
//! `Asia/Shanghai`), else the `context.timezone` of their last event (what Segment's SDKs
//! send), else the workspace's. A name that is not a known IANA zone is passed over, never an
//! error: a customer with a typo in a trait still gets messages, in the next zone down.
//!
//! Local times that a daylight-saving change skips (02:30 in New York on 2026-03-08) are
//! reached at the first instant the wall clock shows them or later: the change itself (03:00).
//! Times that occur twice (01:30 on the fall-back night) are the first one, unless it is
//! already past.
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use cohort_journey::delivery::zone::{Period, ZoneSource, customer_zone, period_start};
//! use serde_json::json;
//! let workspace = chrono_tz::UTC;
//! let zone = customer_zone(&json!({"timezone": "Pacific/Kiritimati"}), None, workspace);
//! assert_eq!(zone.source, ZoneSource::Trait);
//! // 09:00 UTC on June 1 is 23:00 in Kiritimati (UTC+14): its day began at 10:00 UTC on May 31.
//! let now = Utc.with_ymd_and_hms(2026, 6, 1, 9, 0, 0).unwrap();
//! assert_eq!(
//!     period_start(Period::Day, zone.tz, now),
//!     Utc.with_ymd_and_hms(2026, 5, 31, 10, 0, 0).unwrap()
//! );
//! let typo = customer_zone(&json!({"timezone": "Asia/Shanghia"}), Some(chrono_tz::Europe::Berlin), workspace);
//! assert_eq!((typo.tz, typo.source), (chrono_tz::Europe::Berlin, ZoneSource::Context));
//! ```

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta,
    TimeZone, Utc,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The trait that names a customer's zone.
pub const ZONE_TRAIT: &str = "timezone";

/// Where a customer's zone came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneSource {
    /// The `timezone` trait.
    Trait,
    /// The last event's `context.timezone`.
    Context,
    /// Neither named a known zone: the workspace's.
    Workspace,
}

/// A customer's zone and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustomerZone {
    pub tz: Tz,
    pub source: ZoneSource,
}

/// A known IANA zone by its name (surrounding blanks ignored), or `None`.
pub fn parse_zone(name: &str) -> Option<Tz> {
    name.trim().parse().ok()
}

/// The customer's zone: the `timezone` trait (in `traits`, an object) if it names a known
/// zone, else the last event's `context.timezone` (as [`context_timezone`] read it and
/// [`DeliveryStore::zone`](super::DeliveryStore::zone) keeps it), else the workspace's.
pub fn customer_zone(traits: &Value, context_zone: Option<Tz>, workspace: Tz) -> CustomerZone {
    if let Some(tz) = traits
        .get(ZONE_TRAIT)
        .and_then(Value::as_str)
        .and_then(parse_zone)
    {
        return CustomerZone {
            tz,
            source: ZoneSource::Trait,
        };
    }
    if let Some(tz) = context_zone {
        return CustomerZone {
            tz,
            source: ZoneSource::Context,
        };
    }
    CustomerZone {
        tz: workspace,
        source: ZoneSource::Workspace,
    }
}

/// The known zone a Segment message's `context.timezone` names, if any: what the engine keeps
/// per customer ([`DeliveryStore::record_zone`](super::DeliveryStore::record_zone)).
pub fn context_timezone(message: &Value) -> Option<Tz> {
    message
        .pointer("/context/timezone")
        .and_then(Value::as_str)
        .and_then(parse_zone)
}

/// A calendar period, as frequency caps count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// The calendar day.
    Day,
    /// The ISO week, from Monday.
    Week,
    /// The calendar month.
    Month,
}

impl Period {
    pub const ALL: [Period; 3] = [Period::Day, Period::Week, Period::Month];

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }
}

/// The instant the current `period` began in `tz`: midnight of the local day, of the week's
/// Monday or of the month's first day (or, where a daylight-saving change skips midnight, the
/// first instant after it).
pub fn period_start(period: Period, tz: Tz, now: DateTime<Utc>) -> DateTime<Utc> {
    let today = now.with_timezone(&tz).date_naive();
    let first_day = match period {
        Period::Day => today,
        Period::Week => today - TimeDelta::days(i64::from(today.weekday().num_days_from_monday())),
        Period::Month => NaiveDate::from_ymd_opt(today.year(), today.month(), 1).unwrap_or(today),
    };
    earliest_at_or_after(tz, first_day.and_time(NaiveTime::MIN))
}

/// The first instant, not before `not_before`, at which the wall clock in `tz` shows `local`
/// or later: `local` itself when it exists once; its first occurrence when it occurs twice
/// (its second when the first is before `not_before`); the end of the gap when a
/// daylight-saving change skips it.
pub fn wall_time(tz: Tz, local: NaiveDateTime, not_before: DateTime<Utc>) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Ambiguous(first, second) => {
            let first = first.with_timezone(&Utc);
            if first >= not_before {
                first
            } else {
                second.with_timezone(&Utc)
            }
        }
        _ => earliest_at_or_after(tz, local),
    }
}

/// The first instant at which the wall clock in `tz` shows `local` or later.
fn earliest_at_or_after(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
        LocalResult::None => gap_end(tz, local),
    }
}

/// Where the gap that swallows `local` ends: the instant of the change. Read with the
/// offsets in force a day either side, `local` gives two instants that bracket the change
/// (the wall clock shows less than `local` at one, more at the other); a search between
/// them finds the first second it shows `local` or later.
fn gap_end(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let offset_at = |naive: NaiveDateTime| {
        i64::from(tz.offset_from_utc_datetime(&naive).fix().local_minus_utc())
    };
    let a = offset_at(local - TimeDelta::days(1));
    let b = offset_at(local + TimeDelta::days(1));
    let as_utc = local.and_utc().timestamp();
    let shows_local = |t: i64| {
        DateTime::<Utc>::from_timestamp(t, 0)
            .is_some_and(|u| u.with_timezone(&tz).naive_local() >= local)
    };
    let (mut lo, mut hi) = (as_utc - a.max(b), as_utc - a.min(b));
    if shows_local(lo) || !shows_local(hi) {
        // Not the bracket expected (no zone has such a gap today): read `local` with the
        // later offset rather than fail.
        return DateTime::<Utc>::from_timestamp(as_utc - b, 0).unwrap_or_default();
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if shows_local(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::<Utc>::from_timestamp(hi, 0).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    fn local(y: i32, m: u32, d: u32, h: u32, min: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(h, min, 0)
            .unwrap()
    }

    #[test]
    fn the_zone_comes_from_the_trait_then_the_context_then_the_workspace() {
        let shanghai = chrono_tz::Asia::Shanghai;
        let z = customer_zone(
            &json!({"timezone": " America/New_York "}),
            Some(chrono_tz::Europe::Berlin),
            shanghai,
        );
        assert_eq!(
            (z.tz, z.source),
            (chrono_tz::America::New_York, ZoneSource::Trait)
        );
        let z = customer_zone(
            &json!({"timezone": 8}),
            Some(chrono_tz::Europe::Berlin),
            shanghai,
        );
        assert_eq!(
            (z.tz, z.source),
            (chrono_tz::Europe::Berlin, ZoneSource::Context)
        );
        let z = customer_zone(&json!({"timezone": "GMT+8"}), None, shanghai);
        assert_eq!((z.tz, z.source), (shanghai, ZoneSource::Workspace));
        let z = customer_zone(&Value::Null, None, shanghai);
        assert_eq!(z.source, ZoneSource::Workspace);
        assert_eq!(
            context_timezone(&json!({"type": "track", "context": {"timezone": "Asia/Tokyo"}})),
            Some(chrono_tz::Asia::Tokyo)
        );
        assert_eq!(
            context_timezone(&json!({"context": {"timezone": "nowhere"}})),
            None
        );
    }

    #[test]
    fn days_begin_at_local_midnight_far_from_utc() {
        let kiritimati = chrono_tz::Pacific::Kiritimati;
        let pago = chrono_tz::Pacific::Pago_Pago;
        // 09:00 UTC June 1: 23:00 June 1 in Kiritimati (UTC+14), 22:00 May 31 in Pago Pago (UTC−11).
        let now = utc(2026, 6, 1, 9, 0);
        assert_eq!(
            period_start(Period::Day, kiritimati, now),
            utc(2026, 5, 31, 10, 0)
        );
        assert_eq!(
            period_start(Period::Day, pago, now),
            utc(2026, 5, 31, 11, 0)
        );
        assert_eq!(
            period_start(Period::Day, chrono_tz::UTC, now),
            utc(2026, 6, 1, 0, 0)
        );
        // Month: 23:30 on March 31 in Kiritimati is still March there, April in UTC.
        let now = utc(2026, 3, 31, 9, 30);
        assert_eq!(
            period_start(Period::Month, kiritimati, now),
            utc(2026, 2, 28, 10, 0)
        );
        assert_eq!(
            period_start(Period::Month, chrono_tz::UTC, utc(2026, 4, 1, 0, 0)),
            utc(2026, 4, 1, 0, 0)
        );
    }

    #[test]
    fn weeks_begin_on_monday_with_the_offset_of_that_monday() {
        let ny = chrono_tz::America::New_York;
        // Sunday 2026-03-08, noon EDT: the week began Monday 2026-03-02 at 00:00 EST.
        assert_eq!(
            period_start(Period::Week, ny, utc(2026, 3, 8, 16, 0)),
            utc(2026, 3, 2, 5, 0)
        );
        let berlin = chrono_tz::Europe::Berlin;
        // Sunday 2026-03-29 is Berlin's spring-forward day: that week began in CET...
        assert_eq!(
            period_start(Period::Week, berlin, utc(2026, 3, 29, 12, 0)),
            utc(2026, 3, 22, 23, 0)
        );
        // ... and the next Monday's midnight is CEST.
        assert_eq!(
            period_start(Period::Week, berlin, utc(2026, 3, 30, 10, 0)),
            utc(2026, 3, 29, 22, 0)
        );
        // A Monday is its own week's start.
        assert_eq!(
            period_start(Period::Week, chrono_tz::UTC, utc(2026, 3, 30, 0, 0)),
            utc(2026, 3, 30, 0, 0)
        );
    }

    #[test]
    fn a_day_whose_midnight_is_skipped_begins_at_the_change() {
        // Chile moves from 00:00 to 01:00 on Sunday 2026-09-06: that day begins at 01:00 −03.
        let santiago = chrono_tz::America::Santiago;
        assert_eq!(
            period_start(Period::Day, santiago, utc(2026, 9, 6, 15, 0)),
            utc(2026, 9, 6, 4, 0)
        );
    }

    #[test]
    fn skipped_and_repeated_wall_times() {
        let ny = chrono_tz::America::New_York;
        let early = utc(2026, 1, 1, 0, 0);
        // 02:30 does not exist on 2026-03-08: the clock jumps from 02:00 EST to 03:00 EDT (07:00 UTC).
        assert_eq!(
            wall_time(ny, local(2026, 3, 8, 2, 30), early),
            utc(2026, 3, 8, 7, 0)
        );
        let berlin = chrono_tz::Europe::Berlin;
        assert_eq!(
            wall_time(berlin, local(2026, 3, 29, 2, 30), early),
            utc(2026, 3, 29, 1, 0)
        );
        // 01:30 happens twice on 2026-11-01: first EDT (05:30 UTC), then EST (06:30 UTC).
        let twice = local(2026, 11, 1, 1, 30);
        assert_eq!(wall_time(ny, twice, early), utc(2026, 11, 1, 5, 30));
        assert_eq!(
            wall_time(ny, twice, utc(2026, 11, 1, 6, 0)),
            utc(2026, 11, 1, 6, 30)
        );
        // Samoa skipped all of 2011-12-30: its first instant was midnight of the 31st (+14).
        let apia = chrono_tz::Pacific::Apia;
        assert_eq!(
            wall_time(apia, local(2011, 12, 30, 9, 0), early),
            Utc.with_ymd_and_hms(2011, 12, 30, 10, 0, 0).unwrap()
        );
    }
}
