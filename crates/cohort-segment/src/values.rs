//! How JSON values are read as numbers, dates, text and booleans.
//!
//! Evaluation and the SQL compiler must agree on these rules, and so must whoever fills the
//! `profile_traits` table: [`trait_text`] and [`trait_number`] are its `value` and `number` columns.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use serde_json::Value;
use std::borrow::Cow;

pub use cohort_core::number::{json_number, parse_number};

/// A trait's text, as stored in `profile_traits.value`: a string trait is its own text, anything
/// else its compact JSON (`true`, `42`, `["a","b"]`).
pub fn trait_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A trait's numeric reading, as stored in `profile_traits.number`: JSON numbers, and strings
/// spelled as plain decimals (see [`parse_number`]).
pub fn trait_number(value: &Value) -> Option<f64> {
    json_number(value)
}

/// The years a date may fall in. SQL engines built on Arrow store timestamps as nanoseconds, which
/// only reach from 1677 to 2262; keeping both readings inside that range keeps them in agreement.
const MIN_YEAR: i32 = 1678;
const MAX_YEAR: i32 = 2261;

fn in_range(at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    use chrono::Datelike;
    (MIN_YEAR..=MAX_YEAR).contains(&at.year()).then_some(at)
}

/// A date written in a condition: RFC 3339 or `YYYY-MM-DD` (midnight UTC).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct DateArg {
    pub at: DateTime<Utc>,
    /// Whole days matter for the upper end of `between`, which then covers the entire day.
    pub date_only: bool,
}

impl DateArg {
    /// The first instant past this bound when it ends a range: the next midnight for a whole day.
    pub fn end_exclusive(self) -> Option<DateTime<Utc>> {
        if self.date_only {
            self.at.checked_add_signed(TimeDelta::days(1))
        } else {
            None
        }
    }

    /// Whether `t` lies at or before this bound, when it ends a range.
    pub fn admits_up_to(self, t: DateTime<Utc>) -> bool {
        match self.end_exclusive() {
            Some(end) => t < end,
            None => t <= self.at,
        }
    }
}

/// Whether `s` cannot be a date in any form read here, told from its first byte: every form
/// starts with the year's digits. Text such as `gold` or `上海` is compared with dates often (a
/// condition's operand is tried as a date before it is taken as text), and failing fast there
/// saves the parsers' work.
fn cannot_be_a_date(s: &str) -> bool {
    s.as_bytes()
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || !b.is_ascii())
}

pub(crate) fn parse_date_arg(s: &str) -> Option<DateArg> {
    if cannot_be_a_date(s) {
        return None;
    }
    if let Some(day) = parse_day(s) {
        return Some(DateArg {
            at: in_range(day)?,
            date_only: true,
        });
    }
    let at = DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc);
    Some(DateArg {
        at: in_range(at)?,
        date_only: false,
    })
}

fn parse_day(s: &str) -> Option<DateTime<Utc>> {
    // chrono alone would accept `2026-1-5`; SQL casts would not.
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let day = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(day.and_hms_opt(0, 0, 0)?.and_utc())
}

/// A date found in customer data: RFC 3339, an offset-less timestamp (taken as UTC, with `T` or a
/// space between date and time), or `YYYY-MM-DD`. Roughly what `TRY_CAST(x AS TIMESTAMP)` accepts.
pub(crate) fn parse_data_date(s: &str) -> Option<DateTime<Utc>> {
    if cannot_be_a_date(s) {
        return None;
    }
    if let Some(day) = parse_day(s) {
        return in_range(day);
    }
    if let Some(t) = cohort_core::message::parse_timestamp_str(s) {
        return in_range(t);
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .and_then(|n| in_range(n.and_utc()))
}

/// A condition's value, read the way comparisons use it. Numbers (and numeric strings) compare
/// numerically, date strings as instants, other strings as text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Operand<'a> {
    Number(f64),
    Date(DateArg),
    Text(&'a str),
    Bool(bool),
}

impl<'a> Operand<'a> {
    pub fn of(value: &'a Value) -> Option<Operand<'a>> {
        match value {
            Value::Number(n) => n.as_f64().filter(|f| f.is_finite()).map(Operand::Number),
            Value::String(s) => Some(if let Some(n) = parse_number(s) {
                Operand::Number(n)
            } else if let Some(d) = parse_date_arg(s) {
                Operand::Date(d)
            } else {
                Operand::Text(s)
            }),
            Value::Bool(b) => Some(Operand::Bool(*b)),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Operand::Number(_) => "a number",
            Operand::Date(_) => "a date",
            Operand::Text(_) => "a string",
            Operand::Bool(_) => "a boolean",
        }
    }
}

/// The text a scalar is matched with by `contains`, `starts_with` and list membership.
pub(crate) fn scalar_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

/// The JSON spellings of a list element that match `text`: the quoted string, plus the bare
/// literal when `text` is exactly how a number or boolean is written. `["5"]` and `[5]` both
/// contain `5` and `"5"`.
pub(crate) fn element_spellings(text: &str) -> Vec<String> {
    let mut out = vec![Value::String(text.to_string()).to_string()];
    if let Ok(v @ (Value::Number(_) | Value::Bool(_))) = serde_json::from_str::<Value>(text)
        // Only the canonical spelling: `5.0` is not how `5` is written in a list.
        && serde_json::to_string(&v).is_ok_and(|canonical| canonical == text)
    {
        out.push(text.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn trait_columns_follow_the_documented_encoding() {
        assert_eq!(trait_text(&json!("上海")), "上海");
        assert_eq!(trait_text(&json!(["a", 1])), r#"["a",1]"#);
        assert_eq!(trait_text(&json!(true)), "true");
        assert_eq!(trait_number(&json!("12.5")), Some(12.5));
        assert_eq!(trait_number(&json!(7)), Some(7.0));
        assert_eq!(trait_number(&json!("+8613800000000")), None);
        assert_eq!(trait_number(&json!(true)), None);
    }

    #[test]
    fn condition_dates_are_rfc3339_or_whole_days() {
        let day = parse_date_arg("2026-03-01").unwrap();
        assert!(day.date_only);
        assert_eq!(day.at.to_rfc3339(), "2026-03-01T00:00:00+00:00");
        let at = parse_date_arg("2026-03-01T08:00:00+08:00").unwrap();
        assert!(!at.date_only);
        assert_eq!(at.at, day.at);
        assert!(parse_date_arg("2026-3-1").is_none());
        assert!(parse_date_arg("2026-03-01 08:00:00").is_none());
        assert!(parse_date_arg("1500-01-01").is_none());
    }

    #[test]
    fn data_dates_accept_offsetless_timestamps() {
        let want = parse_date_arg("2026-03-01T02:00:00Z").unwrap().at;
        assert_eq!(parse_data_date("2026-03-01T02:00:00"), Some(want));
        assert_eq!(parse_data_date("2026-03-01 02:00:00"), Some(want));
        assert_eq!(parse_data_date("2026-03-01T10:00:00+08:00"), Some(want));
        assert!(parse_data_date("yesterday").is_none());
    }

    #[test]
    fn text_starting_with_a_letter_is_never_a_date() {
        for text in ["gold", "上海", "T2026-03-01", "Z", "été 2026-03-01"] {
            assert!(cannot_be_a_date(text), "{text}");
            assert!(parse_date_arg(text).is_none(), "{text}");
            assert!(parse_data_date(text).is_none(), "{text}");
        }
        for date in ["2026-03-01", "2026-03-01T02:00:00Z", "2026-03-01 02:00:00"] {
            assert!(!cannot_be_a_date(date), "{date}");
            assert!(parse_data_date(date).is_some(), "{date}");
        }
        assert!(!cannot_be_a_date(""));
    }

    #[test]
    fn whole_day_upper_bounds_cover_the_day() {
        let end = parse_date_arg("2026-01-31").unwrap();
        let late = parse_date_arg("2026-01-31T23:59:59Z").unwrap().at;
        let next = parse_date_arg("2026-02-01").unwrap().at;
        assert!(end.admits_up_to(late));
        assert!(!end.admits_up_to(next));
        let exact = parse_date_arg("2026-01-31T12:00:00Z").unwrap();
        assert!(exact.admits_up_to(exact.at));
        assert!(!exact.admits_up_to(late));
    }

    #[test]
    fn list_elements_match_strings_and_canonical_literals() {
        assert_eq!(element_spellings("a\"b"), vec![r#""a\"b""#.to_string()]);
        assert_eq!(
            element_spellings("5"),
            vec![r#""5""#.to_string(), "5".into()]
        );
        assert_eq!(
            element_spellings("true"),
            vec![r#""true""#.to_string(), "true".into()]
        );
        assert_eq!(element_spellings("05"), vec![r#""05""#.to_string()]);
    }
}
