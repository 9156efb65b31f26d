//! How definitions write time: durations (`"24h"`, `"3d"`, `"1d12h"`, `"-2h"` for offsets),
//! times of day (`"09:30"`), time zones (`"customer"` or an IANA name) and cron schedules.
//!
//! Each is a typed value read from a string, refused with a message that says what is wrong
//! and how to write it, and written back in one canonical form.
//!
//! ```
//! use cohort_journey::definition::{Cron, Duration};
//! let day_and_a_half: Duration = "1d12h".parse()?;
//! assert_eq!(day_and_a_half.seconds(), 36 * 3600);
//! assert_eq!("36h".parse::<Duration>()?.to_string(), "1d12h");
//! assert!("24x".parse::<Duration>().is_err());
//!
//! let weekday_mornings: Cron = "30 9 * * MON-FRI".parse()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use chrono::{Datelike, NaiveDateTime, NaiveTime, Timelike};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// The longest duration a definition may name: 100 years, as the segment language's longest
/// look-back, so that every instant computed from one stays inside what timestamps can hold.
pub const MAX_DURATION_DAYS: i64 = 36_500;

/// The units a duration is written in, largest first: the order they must appear in.
const UNITS: [(char, i64); 5] = [
    ('w', 7 * 86_400),
    ('d', 86_400),
    ('h', 3_600),
    ('m', 60),
    ('s', 1),
];

/// A length of time, whole seconds, possibly negative (an offset before a date). Where a
/// definition needs a positive one (a delay, a timeout, a window) the check says so with the
/// field; the type itself only refuses what is not a duration at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration {
    seconds: i64,
}

impl Duration {
    /// A duration of `seconds`, if it is within [`MAX_DURATION_DAYS`] either way.
    pub fn from_seconds(seconds: i64) -> Option<Duration> {
        (seconds.unsigned_abs() <= (MAX_DURATION_DAYS * 86_400).unsigned_abs())
            .then_some(Duration { seconds })
    }

    pub fn seconds(self) -> i64 {
        self.seconds
    }

    pub fn is_positive(self) -> bool {
        self.seconds > 0
    }

    /// The same length as chrono's type, for arithmetic on instants.
    pub fn as_time_delta(self) -> chrono::TimeDelta {
        chrono::TimeDelta::seconds(self.seconds)
    }
}

/// Why a string is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("a duration cannot be empty: write a number and a unit, such as 24h, 3d or 30m")]
    Empty,
    #[error(
        "{0:?} is not a duration: write whole numbers, each with a unit (s, m, h, d or w), such as 24h, 3d or 1h30m"
    )]
    Malformed(String),
    #[error("{text:?} has no unit after {number}: add s, m, h, d or w, such as {number}h")]
    NoUnit { text: String, number: String },
    #[error("{text:?}: {unit:?} is not a unit; use s, m, h, d or w{hint}")]
    UnknownUnit {
        text: String,
        unit: String,
        hint: &'static str,
    },
    #[error("{0:?}: units go from the largest to the smallest, each once (1d12h, not 12h1d)")]
    Order(String),
    #[error("{0:?}: use whole numbers: 1h30m rather than 1.5h")]
    Fraction(String),
    #[error("{0:?} is longer than {MAX_DURATION_DAYS} days")]
    TooLong(String),
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Duration, DurationError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(DurationError::Empty);
        }
        let (negative, body) = match trimmed.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
        };
        if body.is_empty() {
            return Err(DurationError::Malformed(text.to_string()));
        }
        let too_long = || DurationError::TooLong(text.to_string());
        let mut total: i64 = 0;
        // Index into UNITS of the last unit seen, to refuse repeats and a wrong order.
        let mut last_unit: Option<usize> = None;
        let mut rest = body;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let (number, after) = rest.split_at(digits);
            if after.starts_with(['.', ',']) {
                return Err(DurationError::Fraction(text.to_string()));
            }
            if number.is_empty() {
                return Err(DurationError::Malformed(text.to_string()));
            }
            let unit_len = after
                .chars()
                .take_while(char::is_ascii_alphabetic)
                .map(char::len_utf8)
                .sum::<usize>();
            let (unit, after) = after.split_at(unit_len);
            if unit.is_empty() {
                if after.is_empty() {
                    return Err(DurationError::NoUnit {
                        text: text.to_string(),
                        number: number.to_string(),
                    });
                }
                return Err(DurationError::Malformed(text.to_string()));
            }
            let Some(index) = UNITS
                .iter()
                .position(|(u, _)| unit.len() == 1 && unit.starts_with(*u))
            else {
                let hint = match unit {
                    "mo" | "M" | "mon" | "month" | "months" => ": months vary in length, use days",
                    "y" | "yr" | "year" | "years" => ": years vary in length, use days",
                    "ms" => ": definitions count whole seconds",
                    _ => "",
                };
                return Err(DurationError::UnknownUnit {
                    text: text.to_string(),
                    unit: unit.to_string(),
                    hint,
                });
            };
            if last_unit.is_some_and(|last| index <= last) {
                return Err(DurationError::Order(text.to_string()));
            }
            last_unit = Some(index);
            let n: i64 = number.parse().map_err(|_| too_long())?;
            total = n
                .checked_mul(UNITS[index].1)
                .and_then(|s| total.checked_add(s))
                .ok_or_else(too_long)?;
            rest = after;
        }
        let seconds = if negative { -total } else { total };
        Duration::from_seconds(seconds).ok_or_else(too_long)
    }
}

impl fmt::Display for Duration {
    /// The largest units first, each once: `1d12h`, `-3d`, `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.seconds == 0 {
            return f.write_str("0s");
        }
        if self.seconds < 0 {
            f.write_str("-")?;
        }
        let mut left = self.seconds.unsigned_abs();
        for (unit, size) in UNITS {
            let size = size.unsigned_abs();
            if left >= size {
                write!(f, "{}{unit}", left / size)?;
                left %= size;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(FromStrVisitor::<Duration>::new(
            "a duration such as \"24h\", \"3d\" or \"30m\"",
        ))
    }
}

/// Reads a value from a string through `FromStr`, and refuses anything else (a bare number
/// of hours is ambiguous: `24` could be seconds, minutes or hours) with what was expected.
struct FromStrVisitor<T> {
    expecting: &'static str,
    _type: std::marker::PhantomData<T>,
}

impl<T> FromStrVisitor<T> {
    fn new(expecting: &'static str) -> Self {
        FromStrVisitor {
            expecting,
            _type: std::marker::PhantomData,
        }
    }
}

impl<T: FromStr<Err: fmt::Display>> serde::de::Visitor<'_> for FromStrVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

/// A time of day on the wall clock, to the minute or second: `"09:00"`, `"21:30:15"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay(pub NaiveTime);

impl FromStr for TimeOfDay {
    type Err = String;

    fn from_str(text: &str) -> Result<TimeOfDay, String> {
        let t = text.trim();
        // Two-digit hours only, so that "9:00" and "09:00" are not two spellings of one value
        // in stored definitions; the message shows the fix.
        let parsed = match t.len() {
            5 => NaiveTime::parse_from_str(t, "%H:%M").ok(),
            8 => NaiveTime::parse_from_str(t, "%H:%M:%S").ok(),
            _ => None,
        };
        parsed.map(TimeOfDay).ok_or_else(|| {
            format!("{text:?} is not a time of day: write HH:MM (or HH:MM:SS) from 00:00 to 23:59")
        })
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.second() == 0 {
            write!(f, "{}", self.0.format("%H:%M"))
        } else {
            write!(f, "{}", self.0.format("%H:%M:%S"))
        }
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<TimeOfDay, D::Error> {
        deserializer.deserialize_any(FromStrVisitor::<TimeOfDay>::new(
            "a time of day such as \"09:00\"",
        ))
    }
}

/// Whose clock a time of day is read on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Zone {
    /// The customer's own zone (from traits or `context.timezone`, else the workspace's), so
    /// that "09:00" is nine in the morning wherever each customer is.
    #[default]
    Customer,
    /// One zone for everybody, by its IANA name (`Asia/Shanghai`, `UTC`).
    Fixed(chrono_tz::Tz),
}

impl FromStr for Zone {
    type Err = String;

    fn from_str(text: &str) -> Result<Zone, String> {
        if text == "customer" {
            return Ok(Zone::Customer);
        }
        text.parse::<chrono_tz::Tz>().map(Zone::Fixed).map_err(|_| {
            format!(
                "{text:?} is not a time zone: write \"customer\" or an IANA name such as \
                 \"Asia/Shanghai\" or \"UTC\""
            )
        })
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Zone::Customer => f.write_str("customer"),
            Zone::Fixed(tz) => f.write_str(tz.name()),
        }
    }
}

impl Serialize for Zone {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Zone, D::Error> {
        deserializer.deserialize_any(FromStrVisitor::<Zone>::new(
            "\"customer\" or an IANA time zone name",
        ))
    }
}

/// A cron schedule with the five classic fields, read on the wall clock of a [`Zone`]:
/// minute (0–59), hour (0–23), day of month (1–31), month (1–12 or `JAN`–`DEC`) and day of
/// week (0–7, 0 and 7 both Sunday, or `SUN`–`SAT`). Each field is `*`, a value, a range
/// `a-b`, a step `*/n` or `a-b/n`, or a comma list of those. As in Vixie cron, when both the
/// day of month and the day of week are restricted, a day matching either fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    any_day_of_month: bool,
    any_day_of_week: bool,
}

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// The longest day of each month in any year (February 29 in leap years).
const MONTH_DAYS: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

impl Cron {
    /// Whether the schedule fires at this minute of the wall clock.
    pub fn matches(&self, at: NaiveDateTime) -> bool {
        let bit = |set: u64, n: u32| set & (1u64 << n) != 0;
        let dom = bit(u64::from(self.days_of_month), at.day());
        let dow = bit(
            u64::from(self.days_of_week),
            at.weekday().num_days_from_sunday(),
        );
        let day = match (self.any_day_of_month, self.any_day_of_week) {
            (false, false) => dom || dow,
            _ => dom && dow,
        };
        bit(self.minutes, at.minute())
            && bit(u64::from(self.hours), at.hour())
            && bit(u64::from(self.months), at.month())
            && day
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Reads one cron field into a bit set over `lo..=hi`.
fn cron_field(field: &str, name: &str, lo: u32, hi: u32, names: &[&str]) -> Result<u64, String> {
    let value = |s: &str| -> Result<u32, String> {
        let upper = s.to_ascii_uppercase();
        if let Some(i) = names.iter().position(|n| *n == upper) {
            // Month names count from 1, day names from 0 (Sunday).
            return u32::try_from(i).map(|i| i + lo).map_err(|e| e.to_string());
        }
        let n: u32 = s
            .parse()
            .map_err(|_| format!("{name}: {s:?} is not a number from {lo} to {hi}"))?;
        if n < lo || n > hi {
            return Err(format!("{name}: {n} is outside {lo} to {hi}"));
        }
        Ok(n)
    };
    let mut set = 0u64;
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("{name}: {step:?} is not a step (a whole number above 0)")
                })?;
                (range, step)
            }
            None => (part, 1),
        };
        let (from, to) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(format!("{name}: the range {range:?} runs backwards"));
            }
            (a, b)
        } else {
            let a = value(range)?;
            // `5/15` means from 5 to the end, every 15, as cron reads it.
            (a, if step > 1 { hi } else { a })
        };
        let mut n = from;
        while n <= to {
            set |= 1u64 << n;
            n += step;
        }
    }
    Ok(set)
}

impl FromStr for Cron {
    type Err = String;

    fn from_str(text: &str) -> Result<Cron, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields.as_slice() else {
            return Err(format!(
                "{text:?} is not a cron schedule: it needs 5 fields (minute hour day-of-month \
                 month day-of-week), such as \"0 9 * * MON-FRI\""
            ));
        };
        let wrap = |e: String| format!("{text:?}: {e}");
        let minutes = cron_field(minute, "minute", 0, 59, &[]).map_err(wrap)?;
        let hours = cron_field(hour, "hour", 0, 23, &[]).map_err(wrap)?;
        let days_of_month = cron_field(dom, "day of month", 1, 31, &[]).map_err(wrap)?;
        let months = cron_field(month, "month", 1, 12, &MONTH_NAMES).map_err(wrap)?;
        let mut days_of_week = cron_field(dow, "day of week", 0, 7, &DAY_NAMES).map_err(wrap)?;
        // 7 is Sunday too.
        if days_of_week & (1 << 7) != 0 {
            days_of_week = (days_of_week | 1) & 0x7f;
        }
        let cron = Cron {
            text: fields.join(" "),
            minutes,
            hours: u32::try_from(hours).map_err(|e| e.to_string())?,
            days_of_month: u32::try_from(days_of_month).map_err(|e| e.to_string())?,
            months: u16::try_from(months).map_err(|e| e.to_string())?,
            days_of_week: u8::try_from(days_of_week).map_err(|e| e.to_string())?,
            any_day_of_month: dom.starts_with('*'),
            any_day_of_week: dow.starts_with('*'),
        };
        // "0 9 31 2 *" (February 31) parses but never fires: refuse it rather than keep a
        // schedule that silently does nothing.
        if cron.any_day_of_week {
            let fires = (1..=12u32).any(|m| {
                cron.months & (1 << m) != 0
                    && (1..=MONTH_DAYS[(m - 1) as usize])
                        .any(|d| cron.days_of_month & (1 << d) != 0)
            });
            if !fires {
                return Err(format!(
                    "{text:?} never fires: no chosen month has the chosen days of the month"
                ));
            }
        }
        Ok(cron)
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Cron {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Cron {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Cron, D::Error> {
        deserializer.deserialize_any(FromStrVisitor::<Cron>::new(
            "a cron schedule such as \"0 9 * * MON-FRI\"",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn d(text: &str) -> Result<i64, String> {
        text.parse::<Duration>()
            .map(Duration::seconds)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn durations_read_units_and_write_them_back_canonically() {
        assert_eq!(d("24h"), Ok(86_400));
        assert_eq!(d("3d"), Ok(3 * 86_400));
        assert_eq!(d("30m"), Ok(1_800));
        assert_eq!(d("1w2d3h4m5s"), Ok(((9 * 24 + 3) * 60 + 4) * 60 + 5));
        assert_eq!(d("-2h"), Ok(-7_200));
        assert_eq!(d(" 0s "), Ok(0));
        for (text, canonical) in [
            ("24h", "1d"),
            ("36h", "1d12h"),
            ("90m", "1h30m"),
            ("-3d", "-3d"),
            ("14d", "2w"),
            ("0m", "0s"),
        ] {
            assert_eq!(
                text.parse::<Duration>().map(|x| x.to_string()),
                Ok(canonical.into())
            );
        }
    }

    #[test]
    fn durations_say_what_is_wrong() {
        let err = |text: &str| d(text).expect_err(text);
        assert!(err("").contains("cannot be empty"));
        assert!(err("24").contains("no unit after 24"));
        assert!(err("24x").contains("\"x\" is not a unit"));
        assert!(err("1mo").contains("months vary"));
        assert!(err("1.5h").contains("whole numbers"));
        assert!(err("12h1d").contains("largest to the smallest"));
        assert!(err("1h1h").contains("largest to the smallest"));
        assert!(err("h").contains("is not a duration"));
        assert!(err("1h 30m").contains("is not a duration"));
        assert!(err("36501d").contains("longer than 36500 days"));
        assert!(err("99999999999999999999w").contains("longer than"));
        assert!(err("-").contains("is not a duration"));
    }

    #[test]
    fn a_bare_number_is_not_a_duration_in_json() {
        let err = serde_json::from_value::<Duration>(serde_json::json!(24)).expect_err("number");
        assert!(
            err.to_string().contains("a duration such as \"24h\""),
            "{err}"
        );
    }

    #[test]
    fn times_of_day_and_zones() {
        assert_eq!(
            "09:00".parse::<TimeOfDay>().map(|t| t.to_string()),
            Ok("09:00".into())
        );
        assert_eq!(
            "21:30:15".parse::<TimeOfDay>().map(|t| t.to_string()),
            Ok("21:30:15".into())
        );
        for bad in ["9:00", "24:00", "12:60", "noon", ""] {
            assert!(bad.parse::<TimeOfDay>().is_err(), "{bad}");
        }
        assert_eq!("customer".parse::<Zone>(), Ok(Zone::Customer));
        assert_eq!(
            "Asia/Shanghai".parse::<Zone>().map(|z| z.to_string()),
            Ok("Asia/Shanghai".into())
        );
        assert!("Mars/Olympus".parse::<Zone>().is_err());
    }

    fn at(y: i32, m: u32, day: u32, h: u32, min: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, day)
            .and_then(|d| d.and_hms_opt(h, min, 0))
            .expect("a valid test date")
    }

    #[test]
    fn cron_fields_ranges_steps_names() {
        let c: Cron = "30 9 * * MON-FRI".parse().expect("cron");
        // 2026-12-07 is a Monday, 2026-12-06 a Sunday.
        assert!(c.matches(at(2026, 12, 7, 9, 30)));
        assert!(!c.matches(at(2026, 12, 6, 9, 30)));
        assert!(!c.matches(at(2026, 12, 7, 9, 31)));
        let c: Cron = "*/15 8-18/2 1,15 jan-mar *".parse().expect("cron");
        assert!(c.matches(at(2026, 2, 15, 10, 45)));
        assert!(!c.matches(at(2026, 2, 15, 9, 45)));
        assert!(!c.matches(at(2026, 4, 15, 10, 45)));
        // Sunday as 7; day of month or day of week when both are restricted.
        let c: Cron = "0 0 1 * 7".parse().expect("cron");
        assert!(c.matches(at(2026, 12, 6, 0, 0)));
        assert!(c.matches(at(2026, 12, 1, 0, 0)));
        assert!(!c.matches(at(2026, 12, 2, 0, 0)));
        assert_eq!(c.to_string(), "0 0 1 * 7");
    }

    #[test]
    fn cron_refusals() {
        for (bad, says) in [
            ("0 9 * *", "5 fields"),
            ("60 9 * * *", "minute: 60 is outside 0 to 59"),
            ("0 9 * * FUNDAY", "day of week"),
            ("0 9 5-1 * *", "runs backwards"),
            ("*/0 9 * * *", "not a step"),
            ("0 9 31 2 *", "never fires"),
            ("0 9 30,31 2 *", "never fires"),
        ] {
            let err = bad.parse::<Cron>().expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
        // February 29 fires in leap years.
        assert!("0 9 29 2 *".parse::<Cron>().is_ok());
    }
}
