//! Request building blocks shared by the analyses, and their validation.

use chrono::{Datelike, Duration, Months, NaiveDate};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::AnalysisError;

/// Longest range an analysis accepts, in days (ten years of daily buckets).
pub(crate) const MAX_RANGE_DAYS: i64 = 3660;
/// Longest event name, property, trait or segment name accepted.
const MAX_NAME_CHARS: usize = 256;
/// Most property filters on one event.
const MAX_FILTERS: usize = 10;
/// Default and largest number of breakdown groups.
pub(crate) const DEFAULT_BREAKDOWN_LIMIT: usize = 10;
pub(crate) const MAX_BREAKDOWN_LIMIT: usize = 50;

/// `FromStr` and `TryFrom<String>` (for serde's `try_from`) of a unit enum
/// written as lowercase words. serde reports a parse error for the field
/// being read, so the message names the field: `interval must be day, week
/// or month, not "hour"`.
macro_rules! word_enum {
    ($enum:ident, $field:literal, [$($word:literal => $variant:ident),+ $(,)?]) => {
        impl TryFrom<String> for $enum {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                s.parse()
            }
        }

        impl std::str::FromStr for $enum {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($word => Ok($enum::$variant),)+
                    other => Err(format!(
                        "{} must be {}, not {other:?}",
                        $field,
                        $crate::common::one_of(&[$($word),+])
                    )),
                }
            }
        }
    };
}
pub(crate) use word_enum;

/// `a`, `a or b`, `a, b or c` …
pub(crate) fn one_of(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// Bucket size of a time series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Interval {
    Day,
    Week,
    Month,
}

word_enum!(Interval, "interval", ["day" => Day, "week" => Week, "month" => Month]);

impl Interval {
    /// The SQL keyword of `date_trunc`.
    pub(crate) fn unit(self) -> &'static str {
        match self {
            Interval::Day => "day",
            Interval::Week => "week",
            Interval::Month => "month",
        }
    }

    /// First day of the bucket holding `day`.
    pub(crate) fn start_of(self, day: NaiveDate) -> NaiveDate {
        match self {
            Interval::Day => day,
            Interval::Week => day - Duration::days(i64::from(day.weekday().num_days_from_monday())),
            Interval::Month => day.with_day(1).unwrap_or(day),
        }
    }

    /// First day of the bucket after the one starting at `start`.
    fn next(self, start: NaiveDate) -> Option<NaiveDate> {
        match self {
            Interval::Day => start.checked_add_signed(Duration::days(1)),
            Interval::Week => start.checked_add_signed(Duration::days(7)),
            Interval::Month => start.checked_add_months(Months::new(1)),
        }
    }

    /// Start days of the buckets covering `[from, to)`, in order.
    pub(crate) fn buckets(self, from: NaiveDate, to: NaiveDate) -> Vec<NaiveDate> {
        let mut out = Vec::new();
        if from >= to {
            return out;
        }
        let mut start = self.start_of(from);
        while start < to {
            out.push(start);
            match self.next(start) {
                Some(next) => start = next,
                None => break,
            }
        }
        out
    }
}

/// What to group a breakdown by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Breakdown {
    /// A path within the event's `properties` (see [`PropertyFilter`]), compared as text.
    Property(String),
    /// A path within the event's `context` (`device.type`, `os.name` …), compared as text.
    Context(String),
    /// A profile trait (the `profile_traits` table), the customer's current value.
    Trait(String),
}

impl Breakdown {
    pub(crate) fn validate(&self, field: &str) -> Result<(), AnalysisError> {
        match self {
            Breakdown::Property(p) => check_path(&format!("{field}.property"), p),
            Breakdown::Context(c) => check_path(&format!("{field}.context"), c),
            Breakdown::Trait(t) => check_name(&format!("{field}.trait"), t),
        }
    }
}

/// Most keys in one property or context path.
pub const MAX_PATH_KEYS: usize = 16;

/// A value of an event, read from one of its JSON columns by a path of keys
/// (the syntax is on [`PropertyFilter`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum EventField {
    /// Keys within `properties`.
    Property(Vec<String>),
    /// Keys within `context`.
    Context(Vec<String>),
}

impl EventField {
    /// The SQL column the path starts from (on the events table `e`).
    pub(crate) fn column(&self) -> &'static str {
        match self {
            EventField::Property(_) => "e.properties",
            EventField::Context(_) => "e.context",
        }
    }

    pub(crate) fn keys(&self) -> &[String] {
        match self {
            EventField::Property(k) | EventField::Context(k) => k,
        }
    }
}

/// The keys of a dotted path (see [`EventField`]), or why it is not one.
pub(crate) fn path_keys(path: &str) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    let mut key = String::new();
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('.' | '\\')) => key.push(escaped),
                _ => {
                    return Err(format!(
                        "{path:?}: a backslash escapes a dot or a backslash only (\\. or \\\\)"
                    ));
                }
            },
            '.' => keys.push(std::mem::take(&mut key)),
            other => key.push(other),
        }
    }
    keys.push(key);
    if let Some(i) = keys.iter().position(String::is_empty) {
        return Err(format!(
            "{path:?}: key {} of the path is empty (keys are separated by dots; write \\. for a dot in a key)",
            i + 1
        ));
    }
    if keys.len() > MAX_PATH_KEYS {
        return Err(format!(
            "{path:?} has {} keys; at most {MAX_PATH_KEYS} are allowed",
            keys.len()
        ));
    }
    Ok(keys)
}

/// One key as a path element: dots and backslashes escaped, so that
/// `escape_key("utm.source")` is the path of the top-level key `utm.source`.
pub fn escape_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        if c == '.' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

pub(crate) fn check_path(field: &str, path: &str) -> Result<(), AnalysisError> {
    check_name(field, path)?;
    path_keys(path)
        .map(|_| ())
        .map_err(|message| AnalysisError::invalid(field, message))
}

/// An equality test on a value of an event: give `property` (a path within
/// the event's `properties`) or `context` (a path within its `context`), not
/// both.
///
/// # Paths
///
/// A path is written as its keys joined by dots: `plan` is the top-level key
/// `plan`, `address.city` the key `city` of the object under `address`. A key
/// that contains a dot or a backslash escapes it with a backslash (`utm\.source`
/// is the one key `utm.source`, `a\\b` the key `a\b`); any other backslash is an
/// error. A numeric key reaching an array indexes it (`items.0.sku`; negative
/// counts from the end). Empty keys are errors.
///
/// Breakdowns ([`Breakdown::Property`], [`Breakdown::Context`]) take the same paths.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyFilter {
    /// A path within the event's `properties` (`plan`, `address.city`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// A path within the event's `context` (`device.type`, `os.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// A string, number or boolean. Strings compare with the value's text
    /// (so `"42"` matches `42` and `"42"`), numbers numerically (a numeric
    /// string counts, so `42` matches `42`, `42.0` and `"42"`), booleans
    /// with booleans and the strings `"true"` / `"false"`.
    pub equals: Value,
}

impl PropertyFilter {
    /// A test on a path within `properties`.
    pub fn on_property(path: impl Into<String>, equals: Value) -> Self {
        PropertyFilter {
            property: Some(path.into()),
            context: None,
            equals,
        }
    }

    /// A test on a path within `context`.
    pub fn on_context(path: impl Into<String>, equals: Value) -> Self {
        PropertyFilter {
            property: None,
            context: Some(path.into()),
            equals,
        }
    }

    /// The value tested, once validated.
    pub(crate) fn field(&self) -> Result<EventField, AnalysisError> {
        match (&self.property, &self.context) {
            (Some(p), None) => path_keys(p)
                .map(EventField::Property)
                .map_err(|m| AnalysisError::invalid("property", m)),
            (None, Some(c)) => path_keys(c)
                .map(EventField::Context)
                .map_err(|m| AnalysisError::invalid("context", m)),
            _ => Err(AnalysisError::invalid(
                "property",
                "give property or context (one of them)",
            )),
        }
    }

    fn validate(&self, field: &str) -> Result<(), AnalysisError> {
        match (&self.property, &self.context) {
            (Some(p), None) => check_path(&format!("{field}.property"), p)?,
            (None, Some(c)) => check_path(&format!("{field}.context"), c)?,
            (None, None) => {
                return Err(AnalysisError::invalid(
                    format!("{field}.property"),
                    "give property (a path within the event's properties) or context (a path within its context)",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(AnalysisError::invalid(
                    format!("{field}.context"),
                    "give property or context, not both",
                ));
            }
        }
        match &self.equals {
            Value::String(_) | Value::Bool(_) => Ok(()),
            Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) => Ok(()),
            other => Err(AnalysisError::invalid(
                format!("{field}.equals"),
                format!("must be a string, a number or a boolean, not {other}"),
            )),
        }
    }
}

/// An event name with optional property filters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    /// The event name (`$page`, `$screen`, `$identify` … for other message types).
    pub event: String,
    /// Every filter must hold.
    #[serde(default)]
    pub filters: Vec<PropertyFilter>,
}

impl EventSpec {
    /// An event without filters.
    pub fn named(event: impl Into<String>) -> Self {
        EventSpec {
            event: event.into(),
            filters: Vec::new(),
        }
    }

    pub(crate) fn validate(&self, field: &str) -> Result<(), AnalysisError> {
        check_name(&format!("{field}.event"), &self.event)?;
        check_filters(&format!("{field}.filters"), &self.filters)
    }
}

/// One group of a breakdown.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum GroupKey {
    /// Events or customers with this value.
    Value(String),
    /// Events or customers without the property or trait.
    None,
    /// Everything outside the largest groups.
    Other,
}

impl GroupKey {
    /// The text a chart legend or a table shows.
    pub fn label(&self) -> String {
        match self {
            GroupKey::Value(v) => v.clone(),
            GroupKey::None => "(none)".into(),
            GroupKey::Other => "(other)".into(),
        }
    }
}

/// Reads a `YYYY-MM-DD` date, naming the field when it is not one.
fn date_field<'de, D: Deserializer<'de>>(d: D, field: &str) -> Result<NaiveDate, D::Error> {
    let text = String::deserialize(d)?;
    NaiveDate::parse_from_str(&text, "%Y-%m-%d").map_err(|_| {
        D::Error::custom(format!(
            "{field} must be a date like 2024-05-01, not {text:?}"
        ))
    })
}

pub(crate) fn from_field<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
    date_field(d, "from")
}

pub(crate) fn to_field<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
    date_field(d, "to")
}

pub(crate) fn default_interval() -> Interval {
    Interval::Day
}

pub(crate) fn check_range(from: NaiveDate, to: NaiveDate) -> Result<(), AnalysisError> {
    if from > to {
        return Err(AnalysisError::invalid(
            "from",
            format!("{from} is after to ({to}); the range is [from, to)"),
        ));
    }
    let days = (to - from).num_days();
    if days > MAX_RANGE_DAYS {
        return Err(AnalysisError::invalid(
            "to",
            format!("the range spans {days} days; at most {MAX_RANGE_DAYS} are allowed"),
        ));
    }
    Ok(())
}

pub(crate) fn check_name(field: &str, name: &str) -> Result<(), AnalysisError> {
    if name.trim().is_empty() {
        return Err(AnalysisError::invalid(field, "must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(AnalysisError::invalid(
            field,
            format!("is longer than {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(())
}

pub(crate) fn check_filters(field: &str, filters: &[PropertyFilter]) -> Result<(), AnalysisError> {
    if filters.len() > MAX_FILTERS {
        return Err(AnalysisError::invalid(
            field,
            format!(
                "{} filters; at most {MAX_FILTERS} are allowed",
                filters.len()
            ),
        ));
    }
    for (i, f) in filters.iter().enumerate() {
        f.validate(&format!("{field}[{i}]"))?;
    }
    Ok(())
}

/// The request fields every analysis has, under the same names: the range,
/// the segment and the breakdown.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scope<'a> {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub segment: Option<&'a str>,
    pub breakdown: Option<&'a Breakdown>,
    pub breakdown_limit: Option<usize>,
}

impl Scope<'_> {
    /// Checks the segment, the breakdown and its limit (the range is checked
    /// first, with [`check_range`], so that errors come in field order).
    pub(crate) fn check_segment_and_breakdown(&self) -> Result<(), AnalysisError> {
        if let Some(s) = self.segment {
            check_name("segment", s)?;
        }
        if let Some(b) = self.breakdown {
            b.validate("breakdown")?;
        }
        breakdown_limit(self.breakdown_limit)?;
        Ok(())
    }

    /// The number of breakdown groups to keep; `None` without a breakdown.
    pub(crate) fn group_limit(&self) -> Result<Option<usize>, AnalysisError> {
        let limit = breakdown_limit(self.breakdown_limit)?;
        Ok(self.breakdown.map(|_| limit))
    }
}

/// `pub(crate) fn scope(&self) -> Scope<'_>` for a request type with the
/// fields `from`, `to`, `segment`, `breakdown` and `breakdown_limit`.
macro_rules! scoped {
    ($request:ty) => {
        impl $request {
            /// The range, segment and breakdown of the request.
            pub(crate) fn scope(&self) -> $crate::common::Scope<'_> {
                $crate::common::Scope {
                    from: self.from,
                    to: self.to,
                    segment: self.segment.as_deref(),
                    breakdown: self.breakdown.as_ref(),
                    breakdown_limit: self.breakdown_limit,
                }
            }
        }
    };
}
pub(crate) use scoped;

/// The breakdown limit asked for, or the default.
fn breakdown_limit(limit: Option<usize>) -> Result<usize, AnalysisError> {
    match limit {
        None => Ok(DEFAULT_BREAKDOWN_LIMIT),
        Some(n) if (1..=MAX_BREAKDOWN_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(AnalysisError::invalid(
            "breakdown_limit",
            format!("must be between 1 and {MAX_BREAKDOWN_LIMIT}, not {n}"),
        )),
    }
}

/// `part / whole`, or `None` when `whole` is zero.
pub(crate) fn ratio(part: f64, whole: f64) -> Option<f64> {
    (whole != 0.0).then(|| part / whole)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap_or_default()
    }

    #[test]
    fn buckets_cover_the_range() {
        // 2024-05-01 is a Wednesday.
        assert_eq!(
            Interval::Week.buckets(d(2024, 5, 1), d(2024, 5, 14)),
            vec![d(2024, 4, 29), d(2024, 5, 6), d(2024, 5, 13)]
        );
        assert_eq!(
            Interval::Month.buckets(d(2024, 1, 31), d(2024, 3, 1)),
            vec![d(2024, 1, 1), d(2024, 2, 1)]
        );
        assert_eq!(Interval::Day.buckets(d(2024, 5, 1), d(2024, 5, 3)).len(), 2);
        assert!(
            Interval::Day
                .buckets(d(2024, 5, 1), d(2024, 5, 1))
                .is_empty()
        );
    }

    #[test]
    fn paths_split_on_unescaped_dots() {
        let keys = |p: &str| path_keys(p).unwrap_or_else(|e| vec![format!("error: {e}")]);
        assert_eq!(keys("plan"), vec!["plan"]);
        assert_eq!(keys("device.type"), vec!["device", "type"]);
        assert_eq!(keys(r"utm\.source.x"), vec!["utm.source", "x"]);
        assert_eq!(keys(r"a\\.b"), vec![r"a\", "b"]);
        assert_eq!(keys(r"a\\\.b"), vec![r"a\.b"]);
        assert_eq!(keys("上海.ö ü"), vec!["上海", "ö ü"]);
        let too_deep = format!("{}k", "k.".repeat(MAX_PATH_KEYS));
        for bad in ["a..b", ".a", "a.", r"a\b", "a\\", &too_deep] {
            assert!(path_keys(bad).is_err(), "{bad:?}");
        }
        let deepest = format!("{}k", "k.".repeat(MAX_PATH_KEYS - 1));
        assert_eq!(path_keys(&deepest).map(|k| k.len()), Ok(MAX_PATH_KEYS));
        for key in ["utm.source", r"a\b", r"\.", "plain", "it's"] {
            assert_eq!(keys(&escape_key(key)), vec![key], "{key:?}");
        }
    }

    #[test]
    fn filters_need_exactly_one_of_property_and_context() {
        let field = |f: PropertyFilter| match f.validate("filters[0]") {
            Err(AnalysisError::Invalid { field, .. }) => field,
            Err(other) => format!("{other}"),
            Ok(()) => "ok".into(),
        };
        let both = PropertyFilter {
            property: Some("a".into()),
            context: Some("b".into()),
            equals: Value::Bool(true),
        };
        assert_eq!(field(both), "filters[0].context");
        let neither = PropertyFilter {
            property: None,
            context: None,
            equals: Value::Bool(true),
        };
        assert_eq!(field(neither), "filters[0].property");
        let bad_path = PropertyFilter::on_context("device..type", Value::Bool(true));
        assert_eq!(field(bad_path), "filters[0].context");
        assert_eq!(
            field(PropertyFilter::on_context("os.name", "iOS".into())),
            "ok"
        );
    }

    #[test]
    fn interval_errors_name_the_field() {
        let err = serde_json::from_str::<Interval>("\"hour\"")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("interval must be day, week or month"), "{err}");
    }
}
