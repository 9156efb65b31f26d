//! Real-time evaluation: is this one customer a member, right now?
//!
//! [`evaluate`] reads everything from a [`CustomerView`] and never fails: a value that cannot be
//! read the way a condition needs (a text trait compared with `gt 5`) simply does not match.
//! Validate conditions when they are saved ([`Condition::validate`]); an invalid operator/value
//! pair evaluates to "no match" rather than an error.
//!
//! Time enters only through `now`, so the same inputs always give the same answer. Conditions
//! for which [`moves_with_time`] is true can change membership while no event arrives, and must
//! be re-evaluated on a schedule; [`referenced_events`] tells which event names can change
//! membership when they arrive.

use crate::condition::{ComputedKey, Condition, Op, PropertyFilter, Window, days_of};
use crate::values::{
    DateArg, Operand, parse_data_date, parse_number, scalar_text, trait_number, trait_text,
};
use chrono::{DateTime, TimeDelta, Utc};
use cohort_profile::ComputedTraits;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::BTreeSet;

/// What evaluation knows of one customer.
///
/// One view serves every definition decided for the customer, so what many conditions would
/// otherwise each redo is done once, on first use: the text of traits that are not strings (a
/// shipped `address` object is matched by some two hundred `contains` tests) and the events
/// grouped by name (event conditions then visit only the events they name).
#[derive(Debug)]
pub struct CustomerView<'a> {
    traits: &'a Map<String, Value>,
    computed: &'a ComputedTraits,
    events: &'a [EventRecord],
    // Both are small (a few non-string traits, a handful of event names), so a scan beats
    // hashing the key.
    trait_texts: OnceCell<Vec<(&'a str, String)>>,
    events_by_name: OnceCell<Vec<(&'a str, Vec<&'a EventRecord>)>>,
}

impl<'a> CustomerView<'a> {
    /// `events` in any order. Event conditions only see what is here, so pass the history the
    /// segment's windows need (all of it for conditions without a window).
    pub fn new(
        traits: &'a Map<String, Value>,
        computed: &'a ComputedTraits,
        events: &'a [EventRecord],
    ) -> Self {
        CustomerView {
            traits,
            computed,
            events,
            trait_texts: OnceCell::new(),
            events_by_name: OnceCell::new(),
        }
    }

    fn trait_subject(&self, key: &str) -> Subject<'_> {
        let Some(value) = self.traits.get(key) else {
            return Subject::Trait(None);
        };
        let text = match value {
            Value::String(s) => s.as_str(),
            _ => self
                .trait_texts
                .get_or_init(|| {
                    self.traits
                        .iter()
                        .filter(|(_, v)| !v.is_string())
                        .map(|(k, v)| (k.as_str(), trait_text(v)))
                        .collect()
                })
                .iter()
                .find(|(k, _)| *k == key)
                .map_or("", |(_, text)| text.as_str()),
        };
        Subject::Trait(Some(TraitValue { value, text }))
    }

    /// The customer's events called `name`, in the order given.
    fn named(&self, name: &str) -> &[&'a EventRecord] {
        self.events_by_name
            .get_or_init(|| {
                let mut by_name: Vec<(&str, Vec<&EventRecord>)> = Vec::new();
                for e in self.events {
                    match by_name.iter_mut().find(|(n, _)| *n == e.name) {
                        Some((_, events)) => events.push(e),
                        None => by_name.push((e.name.as_str(), vec![e])),
                    }
                }
                by_name
            })
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(&[], |(_, events)| events.as_slice())
    }
}

/// One event of a customer: its counted name (`$page` for page calls, as in
/// [`ComputedTraits::event_counts`]), its time and its properties.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub name: String,
    pub timestamp: DateTime<Utc>,
    #[serde(default)]
    pub properties: Map<String, Value>,
}

/// Whether the customer satisfies `cond` at `now`. `segments` answers `in_segment` nodes.
pub fn evaluate(
    cond: &Condition,
    customer: &CustomerView,
    now: DateTime<Utc>,
    segments: &dyn Fn(&str) -> bool,
) -> bool {
    match cond {
        Condition::Trait { key, op, value } => {
            compare(customer.trait_subject(key), *op, value.as_ref(), now)
        }
        Condition::Computed { key, op, value } => {
            compare_computed(customer.computed, key, *op, value.as_ref(), now)
        }
        Condition::Event {
            name,
            filters,
            count,
            window,
        } => {
            let range = window.as_ref().map(|w| TimeRange::of(w, now));
            // `in` lists are read once here, not again for every event they meet: a list of a
            // thousand dates is a thousand date parses.
            let lists: Vec<Option<Vec<Operand>>> = filters
                .iter()
                .map(|f| matches!(f.op, Op::In | Op::NotIn).then(|| operands(f.value.as_ref())))
                .collect();
            let matching = customer
                .named(name)
                .iter()
                .filter(|e| range.is_none_or(|r| r.admits(e.timestamp)))
                .filter(|e| {
                    filters.iter().zip(&lists).all(|(f, list)| match list {
                        Some(list) => {
                            let property = Subject::Property(e.properties.get(&f.property));
                            one_of(property, list) == (f.op == Op::In)
                        }
                        None => filter_matches(f, e, now),
                    })
                })
                .count();
            count.admits(matching as u64)
        }
        Condition::FollowedBy {
            first,
            then,
            within_hours,
        } => {
            let thens = times_of(customer.named(then));
            let span = TimeDelta::hours(i64::from(*within_hours));
            customer
                .named(first)
                .iter()
                .any(|f| has_then_within(&thens, f.timestamp, span))
        }
        Condition::NotFollowedBy {
            first,
            then,
            within_hours,
        } => {
            let span = TimeDelta::hours(i64::from(*within_hours));
            let Some(cutoff) = now.checked_sub_signed(span) else {
                return false;
            };
            // Only a `first` whose window has closed can be judged; a newer one is still open.
            let latest_closed = customer
                .named(first)
                .iter()
                .map(|e| e.timestamp)
                .filter(|&t| t <= cutoff)
                .max();
            match latest_closed {
                Some(at) => !has_then_within(&times_of(customer.named(then)), at, span),
                None => false,
            }
        }
        Condition::InSegment { segment } => segments(segment),
        Condition::And { conditions } => conditions
            .iter()
            .all(|c| evaluate(c, customer, now, segments)),
        Condition::Or { conditions } => conditions
            .iter()
            .any(|c| evaluate(c, customer, now, segments)),
        Condition::Not { condition } => !evaluate(condition, customer, now, segments),
    }
}

/// True when membership can change with the passage of time alone, so that a schedule must
/// re-evaluate it: exactly when [`time_unit`] has a unit. This is the one answer to that
/// question; the refresh scheduler and the API's `refreshed_with_time` both ask it.
pub fn moves_with_time(cond: &Condition) -> bool {
    time_unit(cond).is_some()
}

/// The unit in which a condition's membership moves with time alone, the finest where it mixes
/// them: how often re-evaluating it is worth the work. `None` when only arriving events change
/// it.
///
/// Time moves membership through a relative event window (`last_days`, `last_hours`), a
/// `within_last` / `not_within_last` comparison, a `not_followed_by` sequence (which completes
/// when its hours elapse), and the rolling computed traits (`revenue_30d`, `orders_30d`), whose
/// window slides by the day. Absolute windows (`between`) and `followed_by` change only when
/// events arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimeUnit {
    /// `last_hours` windows and `not_followed_by` spans.
    Hours,
    /// `last_days` windows and `within_last` / `not_within_last` day counts.
    Days,
}

pub fn time_unit(cond: &Condition) -> Option<TimeUnit> {
    let relative = |op: Op| op.is_relative().then_some(TimeUnit::Days);
    match cond {
        Condition::Trait { op, .. } => relative(*op),
        Condition::Computed { key, op, .. } => {
            let rolling = key.ends_with("_30d").then_some(TimeUnit::Days);
            relative(*op).into_iter().chain(rolling).min()
        }
        Condition::Event {
            filters, window, ..
        } => {
            let window = match window {
                Some(Window::LastHours(_)) => Some(TimeUnit::Hours),
                Some(Window::LastDays(_)) => Some(TimeUnit::Days),
                Some(Window::Between(..)) | None => None,
            };
            window
                .into_iter()
                .chain(filters.iter().filter_map(|f| relative(f.op)))
                .min()
        }
        Condition::NotFollowedBy { .. } => Some(TimeUnit::Hours),
        Condition::FollowedBy { .. } | Condition::InSegment { .. } => None,
        Condition::And { .. } | Condition::Or { .. } | Condition::Not { .. } => {
            cond.children().iter().filter_map(time_unit).min()
        }
    }
}

/// The event names whose arrival can change membership: those of `event` conditions, both names
/// of sequences, and `event_counts.<name>` computed traits. Events behind other computed traits
/// (orders, revenue) depend on the profile rules and are not listed.
pub fn referenced_events(cond: &Condition) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    walk(cond, &mut |c| match c {
        Condition::Event { name, .. } => {
            out.insert(name.clone());
        }
        Condition::FollowedBy { first, then, .. }
        | Condition::NotFollowedBy { first, then, .. } => {
            out.insert(first.clone());
            out.insert(then.clone());
        }
        Condition::Computed { key, .. } => {
            if let Some(ComputedKey::EventCount(name)) = ComputedKey::parse(key) {
                out.insert(name);
            }
        }
        _ => {}
    });
    out
}

/// What can change a condition's answer for one customer, apart from the passing of time (which
/// [`moves_with_time`] covers). The real-time engine re-decides a condition only when a customer's
/// change meets one of these.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dependencies {
    /// Some `trait` node: traits change on `identify` and when derived traits are written.
    pub traits: bool,
    /// Some computed trait that every event moves: `event_count`, `first_seen`, `last_seen`.
    pub any_event: bool,
    /// Some computed trait that only orders move: order counts, revenue, `last_order_at`.
    pub orders: bool,
    /// Names whose events count for `event` and sequence nodes and `event_counts.<name>`.
    pub events: BTreeSet<String>,
    /// Segments read by `in_segment`: a change to their membership can change this one.
    pub segments: BTreeSet<String>,
}

/// The [`Dependencies`] of a condition.
pub fn dependencies(cond: &Condition) -> Dependencies {
    let mut deps = Dependencies {
        events: referenced_events(cond),
        segments: referenced_segments(cond),
        ..Dependencies::default()
    };
    walk(cond, &mut |c| match c {
        Condition::Trait { .. } => deps.traits = true,
        Condition::Computed { key, .. } => match ComputedKey::parse(key) {
            Some(ComputedKey::EventCount(_)) => {}
            Some(ComputedKey::Number { column, .. } | ComputedKey::Date { column })
                if matches!(column, "event_count" | "first_seen" | "last_seen") =>
            {
                deps.any_event = true
            }
            Some(_) => deps.orders = true,
            // Validation refuses unknown keys; should one get here, any event may move it.
            None => deps.any_event = true,
        },
        _ => {}
    });
    deps
}

/// The segments named by `in_segment` nodes: what must be computed first, and how to detect
/// a segment that depends on itself.
pub fn referenced_segments(cond: &Condition) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    walk(cond, &mut |c| {
        if let Condition::InSegment { segment } = c {
            out.insert(segment.clone());
        }
    });
    out
}

fn walk<'a>(cond: &'a Condition, visit: &mut dyn FnMut(&'a Condition)) {
    visit(cond);
    for child in cond.children() {
        walk(child, visit);
    }
}

fn times_of(events: &[&EventRecord]) -> Vec<DateTime<Utc>> {
    let mut times: Vec<_> = events.iter().map(|e| e.timestamp).collect();
    times.sort_unstable();
    times
}

/// Whether a time in `sorted` falls in `(start, start + span]`.
fn has_then_within(sorted: &[DateTime<Utc>], start: DateTime<Utc>, span: TimeDelta) -> bool {
    let after = sorted.partition_point(|t| *t <= start);
    match (sorted.get(after), start.checked_add_signed(span)) {
        (Some(t), Some(end)) => *t <= end,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// The instants an event window admits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimeRange {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateArg>,
}

impl TimeRange {
    pub fn of(window: &Window, now: DateTime<Utc>) -> TimeRange {
        match window {
            Window::LastDays(d) => TimeRange {
                from: back(now, TimeDelta::days(i64::from(*d))),
                to: None,
            },
            Window::LastHours(h) => TimeRange {
                from: back(now, TimeDelta::hours(i64::from(*h))),
                to: None,
            },
            Window::Between(from, to) => TimeRange {
                from: crate::values::parse_date_arg(from).map(|d| d.at),
                to: crate::values::parse_date_arg(to),
            },
        }
    }

    fn admits(self, t: DateTime<Utc>) -> bool {
        self.from.is_none_or(|f| t >= f) && self.to.is_none_or(|to| to.admits_up_to(t))
    }
}

/// `now - span`, or `None` past the representable range (only reachable for unvalidated input).
pub(crate) fn back(now: DateTime<Utc>, span: TimeDelta) -> Option<DateTime<Utc>> {
    now.checked_sub_signed(span)
}

/// The start of a `{"days": n}` look-back.
pub(crate) fn look_back(value: Option<&Value>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let days = i64::try_from(days_of(value)?).ok()?;
    back(now, TimeDelta::days(days))
}

/// A value being compared, and how its kind of source reads it.
#[derive(Debug, Clone, Copy)]
enum Subject<'a> {
    /// Traits read as `profile_traits` stores them: any value has a text.
    Trait(Option<TraitValue<'a>>),
    /// A value read like a trait whose text is rendered only if a comparison asks for it:
    /// computed numbers, which are compared as numbers nearly always.
    TraitLike(Option<&'a Value>),
    /// Event properties read as the JSON functions do: only strings have a text.
    Property(Option<&'a Value>),
    /// A computed date: read exactly as a trait holding its RFC 3339 text would be, without
    /// printing it only to parse it back for the comparisons that want the instant.
    Instant(Option<DateTime<Utc>>),
}

/// A trait's value with its text ([`trait_text`]), rendered once per customer.
#[derive(Debug, Clone, Copy)]
struct TraitValue<'a> {
    value: &'a Value,
    text: &'a str,
}

impl<'a> Subject<'a> {
    fn value(self) -> Option<&'a Value> {
        match self {
            Subject::Trait(v) => v.map(|t| t.value),
            Subject::TraitLike(v) | Subject::Property(v) => v,
            Subject::Instant(_) => None,
        }
    }

    fn is_present(self) -> bool {
        match self {
            Subject::Instant(t) => t.is_some(),
            _ => self.value().is_some(),
        }
    }

    /// Borrowed where the text is at hand, so most comparisons allocate nothing.
    fn text(self) -> Option<Cow<'a, str>> {
        match self {
            Subject::Trait(v) => v.map(|t| Cow::Borrowed(t.text)),
            Subject::TraitLike(v) => v.map(|v| match v {
                Value::String(s) => Cow::Borrowed(s.as_str()),
                other => Cow::Owned(trait_text(other)),
            }),
            Subject::Property(v) => v.and_then(Value::as_str).map(Cow::Borrowed),
            Subject::Instant(t) => t.map(|t| Cow::Owned(t.to_rfc3339())),
        }
    }

    fn number(self) -> Option<f64> {
        match self {
            Subject::Trait(_) | Subject::TraitLike(_) => self.value().and_then(trait_number),
            Subject::Property(v) => match v? {
                Value::Number(n) => n.as_f64().filter(|f| f.is_finite()),
                Value::String(s) => parse_number(s),
                _ => None,
            },
            // RFC 3339 text is never a plain decimal.
            Subject::Instant(_) => None,
        }
    }

    fn date(self) -> Option<DateTime<Utc>> {
        match self {
            Subject::Instant(t) => t,
            _ => parse_data_date(&self.text()?),
        }
    }

    fn boolean(self) -> Option<bool> {
        match self {
            Subject::Property(Some(Value::Bool(b))) => Some(*b),
            _ => match self.text()?.as_ref() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
        }
    }

    /// List elements, for membership. A trait whose value is a list, or a list property.
    fn list(self) -> Option<&'a Vec<Value>> {
        self.value()?.as_array()
    }
}

fn filter_matches(f: &PropertyFilter, event: &EventRecord, now: DateTime<Utc>) -> bool {
    compare(
        Subject::Property(event.properties.get(&f.property)),
        f.op,
        f.value.as_ref(),
        now,
    )
}

fn compare(subject: Subject, op: Op, value: Option<&Value>, now: DateTime<Utc>) -> bool {
    if let Some(positive) = op.complement_of() {
        return !compare(subject, positive, value, now);
    }
    match op {
        Op::Exists => subject.is_present(),
        Op::Eq => value.is_some_and(|v| equals(subject, v)),
        Op::In => one_of(subject, &operands(value)),
        Op::Gt | Op::Gte | Op::Lt | Op::Lte => {
            let Some(operand) = value.and_then(Operand::of) else {
                return false;
            };
            let ordering = match operand {
                Operand::Number(n) => subject.number().and_then(|x| x.partial_cmp(&n)),
                Operand::Date(d) => subject.date().map(|x| x.cmp(&d.at)),
                Operand::Text(s) => subject.text().map(|x| x.as_ref().cmp(s)),
                Operand::Bool(_) => None,
            };
            ordering.is_some_and(|o| ordering_admits(op, o))
        }
        Op::Between => between(subject, value),
        Op::Contains => {
            let Some(needle) = value.and_then(scalar_text) else {
                return false;
            };
            match subject.list() {
                Some(items) => items
                    .iter()
                    .any(|e| scalar_text(e).is_some_and(|t| t == needle)),
                None => subject.text().is_some_and(|t| t.contains(needle.as_ref())),
            }
        }
        Op::StartsWith | Op::EndsWith => {
            let (Some(text), Some(affix)) = (subject.text(), value.and_then(scalar_text)) else {
                return false;
            };
            if op == Op::StartsWith {
                text.starts_with(affix.as_ref())
            } else {
                text.ends_with(affix.as_ref())
            }
        }
        Op::Before | Op::After => {
            let Some(Operand::Date(d)) = value.and_then(Operand::of) else {
                return false;
            };
            subject
                .date()
                .is_some_and(|t| if op == Op::Before { t < d.at } else { t > d.at })
        }
        Op::WithinLast | Op::NotWithinLast => {
            let (Some(t), Some(start)) = (subject.date(), look_back(value, now)) else {
                return false;
            };
            (t >= start) == (op == Op::WithinLast)
        }
        Op::IsTrue => subject.boolean() == Some(true),
        Op::IsFalse => subject.boolean() == Some(false),
        Op::Ne | Op::NotContains | Op::NotIn | Op::NotExists => false,
    }
}

fn ordering_admits(op: Op, o: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match op {
        Op::Gt => o == Greater,
        Op::Gte => o != Less,
        Op::Lt => o == Less,
        Op::Lte => o != Greater,
        _ => false,
    }
}

fn equals(subject: Subject, v: &Value) -> bool {
    match Operand::of(v) {
        Some(Operand::Number(n)) => subject.number() == Some(n),
        Some(Operand::Date(d)) => subject.date() == Some(d.at),
        Some(Operand::Text(s)) => subject.text().as_deref() == Some(s),
        Some(Operand::Bool(b)) => subject.boolean() == Some(b),
        None => false,
    }
}

/// The elements of an `in` list as operands; elements no comparison can read are left out, as
/// they never match.
fn operands(value: Option<&Value>) -> Vec<Operand<'_>> {
    value
        .and_then(Value::as_array)
        .map_or_else(Vec::new, |items| {
            items.iter().filter_map(Operand::of).collect()
        })
}

/// Whether the subject equals one of `list`, as [`equals`] decides, reading the subject once in
/// each way the list asks for rather than once per element.
fn one_of(subject: Subject, list: &[Operand]) -> bool {
    let (number, date) = (OnceCell::new(), OnceCell::new());
    let (text, boolean) = (OnceCell::new(), OnceCell::new());
    list.iter().any(|operand| match *operand {
        Operand::Number(n) => *number.get_or_init(|| subject.number()) == Some(n),
        Operand::Date(d) => *date.get_or_init(|| subject.date()) == Some(d.at),
        Operand::Text(s) => text.get_or_init(|| subject.text()).as_deref() == Some(s),
        Operand::Bool(b) => *boolean.get_or_init(|| subject.boolean()) == Some(b),
    })
}

fn between(subject: Subject, value: Option<&Value>) -> bool {
    let Some([lo, hi]) = value
        .and_then(Value::as_array)
        .and_then(|a| <&[Value; 2]>::try_from(a.as_slice()).ok())
    else {
        return false;
    };
    match (Operand::of(lo), Operand::of(hi)) {
        (Some(Operand::Number(a)), Some(Operand::Number(b))) => {
            subject.number().is_some_and(|x| a <= x && x <= b)
        }
        (Some(Operand::Date(a)), Some(Operand::Date(b))) => subject
            .date()
            .is_some_and(|t| a.at <= t && b.admits_up_to(t)),
        (Some(Operand::Text(a)), Some(Operand::Text(b))) => subject
            .text()
            .is_some_and(|t| a <= t.as_ref() && t.as_ref() <= b),
        _ => false,
    }
}

/// A computed trait's value, typed.
enum ComputedValue {
    Number(Option<f64>),
    Date(Option<DateTime<Utc>>),
}

fn computed_value(c: &ComputedTraits, key: &ComputedKey) -> ComputedValue {
    let date = |s: &Option<String>| s.as_deref().and_then(parse_data_date);
    match key {
        ComputedKey::EventCount(name) => {
            ComputedValue::Number(Some(c.event_counts.get(name).copied().unwrap_or(0) as f64))
        }
        ComputedKey::Date { column } => ComputedValue::Date(match *column {
            "first_seen" => date(&c.first_seen),
            "last_seen" => date(&c.last_seen),
            _ => date(&c.last_order_at),
        }),
        ComputedKey::Number { column, .. } => ComputedValue::Number(match *column {
            "event_count" => Some(c.event_count as f64),
            "orders" => Some(c.orders as f64),
            "total_revenue" => Some(c.total_revenue),
            "revenue_30d" => Some(c.revenue_30d),
            "orders_30d" => Some(c.orders_30d as f64),
            _ => c.average_order_value,
        }),
    }
}

fn compare_computed(
    computed: &ComputedTraits,
    key: &str,
    op: Op,
    value: Option<&Value>,
    now: DateTime<Utc>,
) -> bool {
    let Some(kind) = ComputedKey::parse(key) else {
        return false;
    };
    // Computed traits share the trait comparison rules: numbers as JSON numbers, dates as the
    // instants their RFC 3339 text would be read back as.
    match computed_value(computed, &kind) {
        ComputedValue::Number(n) => {
            let as_json = n.and_then(serde_json::Number::from_f64).map(Value::Number);
            compare(Subject::TraitLike(as_json.as_ref()), op, value, now)
        }
        ComputedValue::Date(d) => compare(Subject::Instant(d), op, value, now),
    }
}

/// Whether a number (an event count) satisfies a numeric comparison; the SQL compiler asks this
/// of 0 to decide whether customers without events are members.
pub(crate) fn number_admits(op: Op, value: Option<&Value>, x: f64, now: DateTime<Utc>) -> bool {
    let x = serde_json::Number::from_f64(x).map(Value::Number);
    compare(Subject::TraitLike(x.as_ref()), op, value, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        crate::values::parse_date_arg(s).unwrap().at
    }

    /// A condition as deep as validation allows, each level an `and`, `or` or `not` with leaves
    /// beside the way down, and at the bottom an event with every filter it may have.
    fn deepest_condition() -> Condition {
        let filters: Vec<Value> = (0..crate::MAX_FILTERS)
            .map(|i| json!({"property": "tax", "op": "ne", "value": i}))
            .collect();
        let mut c = json!({"type": "event", "name": "Order Completed", "where": filters});
        for level in 1..crate::MAX_DEPTH {
            let leaf = json!({"type": "trait", "key": "plan", "op": "in", "value": ["a", level]});
            c = match level % 3 {
                0 => json!({"type": "not", "condition": c}),
                1 => json!({"type": "and", "conditions": [leaf, c, leaf]}),
                _ => json!({"type": "or", "conditions": [leaf, leaf, c]}),
            };
        }
        Condition::from_value(c).expect("a condition at the limits")
    }

    #[test]
    fn conditions_at_the_limits_need_little_stack() {
        // Parsing, validation, evaluation and compilation all recurse once per level, and
        // validation keeps levels to MAX_DEPTH. Unoptimised, compiling to SQL needs the most,
        // under 256 KiB; a quarter of a thread's usual 2 MiB leaves that room twice over.
        let run = || {
            let cond = deepest_condition();
            let traits = Map::new();
            let computed = ComputedTraits::default();
            let events: Vec<EventRecord> = (0..3)
                .map(|i| EventRecord {
                    name: "Order Completed".into(),
                    timestamp: at("2026-03-01T00:00:00Z"),
                    properties: json!({"tax": 1000 + i})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                })
                .collect();
            let customer = CustomerView::new(&traits, &computed, &events);
            let now = at("2026-03-02T00:00:00Z");
            let member = evaluate(&cond, &customer, now, &|_| false);
            let sql = crate::to_sql(&cond, now).map(|sql| sql.len());
            (
                member,
                dependencies(&cond).events.len(),
                time_unit(&cond),
                sql,
            )
        };
        let outcome = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(run)
            .expect("a thread")
            .join()
            .expect("no overflow");
        assert!(
            matches!(outcome, (_, 1, None, Ok(len)) if len > 0),
            "{outcome:?}"
        );
    }

    #[test]
    fn in_lists_match_exactly_as_eq_does() {
        let values = [
            json!("上海"),
            json!("5"),
            json!(5),
            json!(5.0),
            json!(-0.0),
            json!(0),
            json!("2026-01-01"),
            json!("2026-01-01T08:00:00+08:00"),
            json!(true),
            json!("true"),
            json!(false),
            json!(["a"]),
            json!(null),
        ];
        let instant = Some(at("2026-01-01T00:00:00Z"));
        let mut subjects: Vec<Subject> = vec![Subject::Instant(instant), Subject::Instant(None)];
        for v in &values {
            subjects.extend([Subject::Property(Some(v)), Subject::TraitLike(Some(v))]);
        }
        subjects.extend([Subject::Property(None), Subject::TraitLike(None)]);
        let lists: Vec<Value> = values
            .iter()
            .map(|v| json!([v]))
            .chain([Value::Array(values.to_vec()), json!([])])
            .collect();
        for subject in subjects {
            for list in &lists {
                let by_eq = list
                    .as_array()
                    .is_some_and(|items| items.iter().any(|v| equals(subject, v)));
                assert_eq!(
                    one_of(subject, &operands(Some(list))),
                    by_eq,
                    "{subject:?} in {list}"
                );
            }
        }
    }

    #[test]
    fn event_filters_with_lists_count_the_events_that_match() {
        let events: Vec<EventRecord> = [
            json!({"c": "a"}),
            json!({"c": "b"}),
            json!({}),
            json!({"c": "5"}),
        ]
        .into_iter()
        .map(|properties| EventRecord {
            name: "Viewed".into(),
            timestamp: at("2026-03-01T00:00:00Z"),
            properties: properties.as_object().cloned().unwrap_or_default(),
        })
        .collect();
        let (traits, computed) = (Map::new(), ComputedTraits::default());
        let customer = CustomerView::new(&traits, &computed, &events);
        let count = |op: &str, n: u64| {
            let cond = Condition::from_value(json!({"type": "event", "name": "Viewed",
                "where": [{"property": "c", "op": op, "value": ["a", 5]}],
                "count": {"op": "eq", "value": n}}))
            .expect("a condition");
            evaluate(&cond, &customer, at("2026-03-02T00:00:00Z"), &|_| false)
        };
        // "a" and "5" (a numeric string equals 5); the rest, an event without the property too.
        assert!(count("in", 2) && count("not_in", 2));
        assert!(!count("in", 1) && !count("not_in", 3));
    }

    #[test]
    fn dependencies_name_what_can_change_an_answer() {
        let cond = Condition::from_value(json!({"type": "and", "conditions": [
            {"type": "trait", "key": "plan", "op": "eq", "value": "pro"},
            {"type": "computed", "key": "event_counts.Signed Up", "op": "gte", "value": 1},
            {"type": "not", "condition": {"type": "in_segment", "segment": "vip"}},
            {"type": "or", "conditions": [
                {"type": "event", "name": "Product Viewed", "count": {"op": "gte", "value": 3}},
                {"type": "followed_by", "first": "Cart Viewed", "then": "Checkout", "within_hours": 2}
            ]}
        ]}))
        .unwrap();
        let deps = dependencies(&cond);
        assert!(deps.traits && !deps.any_event && !deps.orders);
        let names: Vec<&str> = deps.events.iter().map(String::as_str).collect();
        assert_eq!(
            names,
            ["Cart Viewed", "Checkout", "Product Viewed", "Signed Up"]
        );
        assert_eq!(deps.segments.into_iter().collect::<Vec<_>>(), ["vip"]);
    }

    #[test]
    fn every_computed_trait_moves_with_every_event_or_with_orders() {
        for key in crate::COMPUTED_KEYS {
            let value = if matches!(key, "first_seen" | "last_seen" | "last_order_at") {
                json!("2026-01-01")
            } else {
                json!(1)
            };
            let cond = Condition::from_value(
                json!({"type": "computed", "key": key, "op": "gte", "value": value}),
            )
            .unwrap();
            let deps = dependencies(&cond);
            let by_every_event = matches!(key, "event_count" | "first_seen" | "last_seen");
            assert_eq!(
                (deps.any_event, deps.orders, deps.traits),
                (by_every_event, !by_every_event, false),
                "{key}"
            );
        }
    }

    #[test]
    fn time_units_are_the_finest_a_condition_counts_in() {
        let unit = |v: serde_json::Value| {
            time_unit(&Condition::from_json(&v.to_string()).expect("valid condition"))
        };
        let days = json!({"type": "event", "name": "Order Completed", "window": {"last_days": 30}});
        let hours = json!({"type": "event", "name": "Viewed", "window": {"last_hours": 2}});
        let plain = json!({"type": "trait", "key": "plan", "op": "eq", "value": "pro"});
        assert_eq!(unit(days.clone()), Some(TimeUnit::Days));
        assert_eq!(unit(hours.clone()), Some(TimeUnit::Hours));
        assert_eq!(unit(plain.clone()), None);
        assert_eq!(
            unit(json!({"type": "or", "conditions": [days.clone(), plain.clone()]})),
            Some(TimeUnit::Days)
        );
        assert_eq!(
            unit(json!({"type": "and", "conditions": [days, {"type": "not", "condition": hours}]})),
            Some(TimeUnit::Hours)
        );
        assert_eq!(
            unit(
                json!({"type": "computed", "key": "last_seen", "op": "within_last", "value": {"days": 7}})
            ),
            Some(TimeUnit::Days)
        );
        assert_eq!(
            unit(
                json!({"type": "not_followed_by", "first": "Signed Up", "then": "Login", "within_hours": 24})
            ),
            Some(TimeUnit::Hours)
        );
        assert_eq!(
            unit(json!({"type": "event", "name": "Order Completed",
                        "window": {"between": ["2026-01-01", "2026-01-31"]}})),
            None
        );
    }

    #[test]
    fn rolling_computed_traits_move_by_the_day() {
        let step = |v: serde_json::Value| {
            time_unit(&Condition::from_json(&v.to_string()).expect("valid condition"))
        };
        assert_eq!(
            step(json!({"type": "computed", "key": "orders_30d", "op": "gte", "value": 2})),
            Some(TimeUnit::Days)
        );
        assert_eq!(
            step(json!({"type": "or", "conditions": [
                {"type": "computed", "key": "revenue_30d", "op": "gt", "value": 1},
                {"type": "event", "name": "Viewed", "window": {"last_hours": 1}}]})),
            Some(TimeUnit::Hours)
        );
        assert_eq!(
            step(json!({"type": "computed", "key": "orders", "op": "gte", "value": 2})),
            None
        );
    }

    #[test]
    fn then_must_fall_strictly_after_first_and_within_the_span() {
        let t = |s: &str| at(s);
        let thens = vec![t("2026-01-01T10:00:00Z"), t("2026-01-03T00:00:00Z")];
        let day = TimeDelta::hours(24);
        assert!(!has_then_within(
            &thens,
            t("2026-01-01T10:00:00Z"),
            TimeDelta::hours(1)
        ));
        assert!(has_then_within(
            &thens,
            t("2026-01-01T09:00:00Z"),
            TimeDelta::hours(1)
        ));
        assert!(has_then_within(&thens, t("2026-01-02T00:00:00Z"), day));
        assert!(!has_then_within(&thens, t("2026-01-03T00:00:00Z"), day));
    }

    #[test]
    fn computed_dates_compare_as_instants_after_the_trait_rules() {
        let computed = ComputedTraits {
            last_seen: Some("2026-03-01T10:00:00.000Z".into()),
            ..Default::default()
        };
        let now = at("2026-03-02T00:00:00Z");
        assert!(compare_computed(
            &computed,
            "last_seen",
            Op::After,
            Some(&json!("2026-03-01")),
            now
        ));
        assert!(compare_computed(
            &computed,
            "last_seen",
            Op::WithinLast,
            Some(&json!({"days": 1})),
            now
        ));
        assert!(!compare_computed(
            &computed,
            "last_order_at",
            Op::Exists,
            None,
            now
        ));
    }
}
