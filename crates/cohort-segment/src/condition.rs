//! The condition language: segment rules are JSON data, never code.
//!
//! Every node is an object with a `"type"`; unknown types and unknown fields are rejected when
//! parsing, and [`Condition::validate`] then checks what types alone cannot (that `gt` got a number
//! or a date, that a computed key exists, that the tree is not too deep), naming the offending
//! path in its message.
//!
//! Validation also bounds what a condition may demand of the server: at most [`MAX_DEPTH`]
//! levels, [`MAX_NODES`] nodes, [`MAX_FILTERS`] property filters per `event` node,
//! [`MAX_LIST`] values per list, and a [`Condition::cost`] (nodes, filters and list elements
//! together) of at most [`MAX_COST`].
//!
//! | `type` | fields | member when |
//! | --- | --- | --- |
//! | `trait` | `key`, `op`, `value` | the trait compares as asked (see [`Op`]) |
//! | `computed` | `key`, `op`, `value` | the computed trait compares as asked ([`COMPUTED_KEYS`], or `event_counts.<name>`) |
//! | `event` | `name`, `where`, `count`, `window` | the number of matching events satisfies `count` (default `≥ 1`) |
//! | `followed_by` | `first`, `then`, `within_hours` | some `first` was followed by a `then` within the hours |
//! | `not_followed_by` | `first`, `then`, `within_hours` | the latest `first` whose hours have run out saw no `then` in them |
//! | `in_segment` | `segment` | the customer is a member of that segment |
//! | `and` / `or` | `conditions` | all / any hold (an empty `and` holds, an empty `or` does not) |
//! | `not` | `condition` | the condition does not hold |
//!
//! ```
//! use cohort_segment::Condition;
//! let platinum = Condition::from_json(r#"{"type": "and", "conditions": [
//!     {"type": "computed", "key": "revenue_30d", "op": "gt", "value": 5000},
//!     {"type": "event", "name": "Order Completed", "window": {"last_days": 30}}
//! ]}"#).unwrap();
//! assert!(platinum.validate().is_ok());
//!
//! let wrong = r#"{"type": "trait", "key": "age", "op": "gt", "value": true}"#;
//! let err = Condition::from_json(wrong).unwrap_err();
//! assert_eq!(err.to_string(), r#"value: "gt" needs a number, a date or a string"#);
//! ```

use crate::values::{DateArg, Operand, parse_date_arg};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

/// How deep `and` / `or` / `not` may nest, counting the root as level 1.
pub const MAX_DEPTH: usize = 32;
/// How many condition nodes one segment may have.
pub const MAX_NODES: usize = 500;
/// The longest look-back, in days; it keeps every window inside what SQL timestamps can hold.
pub const MAX_DAYS: u64 = 36_500;
/// The longest `in` / `not_in` list.
pub const MAX_LIST: usize = 1_000;
/// The largest event count a `count` rule may name; larger ones would not fit SQL integers.
pub const MAX_COUNT: u64 = 1_000_000_000;
/// The most property filters (`where`) one `event` condition may have. Every filter is a test
/// on every event of that name, in evaluation and in SQL; the shipped tags use one at most.
pub const MAX_FILTERS: usize = 100;
/// The most a condition may cost, as [`Condition::cost`] measures it.
///
/// Evaluation and compilation do work in proportion to the cost, and the SQL planner more than
/// that, so the budget bounds what one saved segment can demand of the server on every refresh.
/// The costliest shipped tag is under 200; the budget leaves room for four full `in` lists
/// ([`MAX_LIST`] values each) beside other tests, or a few thousand plain tests, and refuses
/// the 400 full lists (400,401) a 2 MB request can carry.
pub const MAX_COST: usize = 5_000;

/// The computed-trait keys a `computed` condition may name, besides `event_counts.<name>`.
pub const COMPUTED_KEYS: [&str; 9] = [
    "event_count",
    "orders",
    "total_revenue",
    "revenue_30d",
    "orders_30d",
    "first_seen",
    "last_seen",
    "last_order_at",
    "average_order_value",
];

/// One node of a segment condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// Compares a trait set by `identify`.
    Trait {
        key: String,
        op: Op,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<Value>,
    },
    /// Compares a computed trait (`revenue_30d`, `event_counts.Order Completed`, …).
    Computed {
        key: String,
        op: Op,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<Value>,
    },
    /// Counts the customer's events of one name, optionally filtered by properties and time.
    Event {
        name: String,
        #[serde(rename = "where", default, skip_serializing_if = "Vec::is_empty")]
        filters: Vec<PropertyFilter>,
        #[serde(default)]
        count: CountRule,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window: Option<Window>,
    },
    /// Some `first` event was followed by a `then` event within `within_hours`.
    FollowedBy {
        first: String,
        then: String,
        within_hours: u32,
    },
    /// The most recent `first` event whose `within_hours` have fully elapsed saw no `then` event
    /// in them. A customer whose hours are still running is not (yet) a member.
    NotFollowedBy {
        first: String,
        then: String,
        within_hours: u32,
    },
    /// Membership of another segment, as the caller knows it.
    InSegment {
        segment: String,
    },
    And {
        conditions: Vec<Condition>,
    },
    Or {
        conditions: Vec<Condition>,
    },
    Not {
        condition: Box<Condition>,
    },
}

/// A comparison operator of `trait`, `computed` and event property conditions.
///
/// The condition's value decides how values compare: a number or numeric string numerically, an
/// RFC 3339 or `YYYY-MM-DD` string as an instant, any other string by text (byte order), a
/// boolean against `true` / `false`. A customer value that cannot be read that way never matches.
/// The `ne`, `not_contains`, `not_in` and `not_exists` operators are exact complements of `eq`,
/// `contains`, `in` and `exists`, so a customer without the trait is "not equal" to anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    /// Substring of a text value; membership when the value is a list.
    Contains,
    NotContains,
    StartsWith,
    EndsWith,
    /// Equal to one of the listed values.
    In,
    NotIn,
    Exists,
    NotExists,
    /// `[lo, hi]`, both ends inclusive; a `YYYY-MM-DD` upper end includes that whole day.
    Between,
    /// Strictly before a date.
    Before,
    /// Strictly after a date.
    After,
    /// `{"days": n}`: a date no older than `n` days (future dates count as within).
    WithinLast,
    /// `{"days": n}`: a date older than `n` days. A customer without the date does not match;
    /// use `not` + `within_last` to include them.
    NotWithinLast,
    /// `true`, or the string `"true"`.
    IsTrue,
    /// `false`, or the string `"false"`. A missing value is neither true nor false.
    IsFalse,
}

impl Op {
    pub const ALL: [Op; 21] = [
        Op::Eq,
        Op::Ne,
        Op::Gt,
        Op::Gte,
        Op::Lt,
        Op::Lte,
        Op::Contains,
        Op::NotContains,
        Op::StartsWith,
        Op::EndsWith,
        Op::In,
        Op::NotIn,
        Op::Exists,
        Op::NotExists,
        Op::Between,
        Op::Before,
        Op::After,
        Op::WithinLast,
        Op::NotWithinLast,
        Op::IsTrue,
        Op::IsFalse,
    ];

    /// The operator's name in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Ne => "ne",
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::Contains => "contains",
            Op::NotContains => "not_contains",
            Op::StartsWith => "starts_with",
            Op::EndsWith => "ends_with",
            Op::In => "in",
            Op::NotIn => "not_in",
            Op::Exists => "exists",
            Op::NotExists => "not_exists",
            Op::Between => "between",
            Op::Before => "before",
            Op::After => "after",
            Op::WithinLast => "within_last",
            Op::NotWithinLast => "not_within_last",
            Op::IsTrue => "is_true",
            Op::IsFalse => "is_false",
        }
    }

    /// For the four complement operators, the operator they negate.
    pub(crate) fn complement_of(self) -> Option<Op> {
        match self {
            Op::Ne => Some(Op::Eq),
            Op::NotContains => Some(Op::Contains),
            Op::NotIn => Some(Op::In),
            Op::NotExists => Some(Op::Exists),
            _ => None,
        }
    }

    /// Whether the operator's result depends on the current time.
    pub(crate) fn is_relative(self) -> bool {
        matches!(self, Op::WithinLast | Op::NotWithinLast)
    }
}

/// A filter on an event property inside an `event` condition's `where`.
///
/// Text operators see string properties only (a number property never `contains` anything);
/// numbers and numeric strings compare numerically, as for traits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyFilter {
    pub property: String,
    pub op: Op,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// How many matching events an `event` condition needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountRule {
    pub op: CountOp,
    pub value: u64,
}

impl Default for CountRule {
    /// "Did it at least once".
    fn default() -> Self {
        CountRule {
            op: CountOp::Gte,
            value: 1,
        }
    }
}

impl CountRule {
    pub fn admits(self, count: u64) -> bool {
        let v = self.value;
        match self.op {
            CountOp::Eq => count == v,
            CountOp::Ne => count != v,
            CountOp::Gt => count > v,
            CountOp::Gte => count >= v,
            CountOp::Lt => count < v,
            CountOp::Lte => count <= v,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CountOp {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl CountOp {
    pub(crate) fn sql(self) -> &'static str {
        match self {
            CountOp::Eq => "=",
            CountOp::Ne => "<>",
            CountOp::Gt => ">",
            CountOp::Gte => ">=",
            CountOp::Lt => "<",
            CountOp::Lte => "<=",
        }
    }
}

/// Which events an `event` condition counts, by time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// Events at or after `now - n days`.
    LastDays(u32),
    /// Events at or after `now - n hours`.
    LastHours(u32),
    /// Events between two dates (RFC 3339 or `YYYY-MM-DD`), inclusive; a `YYYY-MM-DD` end covers
    /// that whole day.
    Between(String, String),
}

/// Why a condition was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConditionError {
    /// The JSON is not a condition: unknown type or field, wrong field type.
    #[error("not a valid condition: {0}")]
    Parse(String),
    /// A field holds something its node cannot use; `path` leads to it from the root.
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{path}: conditions nest deeper than {max} levels")]
    TooDeep { path: String, max: usize },
    #[error("the condition has more than {max} nodes")]
    TooLarge { max: usize },
    /// The condition's [`Condition::cost`] is over [`MAX_COST`].
    #[error(
        "the condition costs {} units (nodes, filters and list items); the limit is {}",
        thousands(*cost),
        thousands(*max)
    )]
    TooCostly { cost: usize, max: usize },
}

/// `400401` as `400,401`, so that a cost reads at a glance.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

impl Condition {
    /// Parses and validates a condition.
    pub fn from_json(text: &str) -> Result<Condition, ConditionError> {
        let cond: Condition =
            serde_json::from_str(text).map_err(|e| ConditionError::Parse(e.to_string()))?;
        cond.validate()?;
        Ok(cond)
    }

    /// Parses a condition stored earlier, without checking it against today's limits: a
    /// definition saved before a limit was lowered must still load, so that it can be listed,
    /// quarantined and fixed. Check it with [`Condition::validate`] before evaluating it.
    pub fn from_stored_json(text: &str) -> Result<Condition, ConditionError> {
        serde_json::from_str(text).map_err(|e| ConditionError::Parse(e.to_string()))
    }

    /// Parses and validates a condition already read as JSON.
    pub fn from_value(value: Value) -> Result<Condition, ConditionError> {
        let cond: Condition =
            serde_json::from_value(value).map_err(|e| ConditionError::Parse(e.to_string()))?;
        cond.validate()?;
        Ok(cond)
    }

    pub fn and(conditions: Vec<Condition>) -> Condition {
        Condition::And { conditions }
    }

    pub fn or(conditions: Vec<Condition>) -> Condition {
        Condition::Or { conditions }
    }

    pub fn negate(condition: Condition) -> Condition {
        Condition::Not {
            condition: Box::new(condition),
        }
    }

    /// The direct sub-conditions of a boolean node.
    pub fn children(&self) -> &[Condition] {
        match self {
            Condition::And { conditions } | Condition::Or { conditions } => conditions,
            Condition::Not { condition } => std::slice::from_ref(condition),
            _ => &[],
        }
    }

    /// Checks everything parsing cannot: operator/value fit, known computed keys, sizes.
    pub fn validate(&self) -> Result<(), ConditionError> {
        check_shape(self)?;
        check_node(self, "")
    }

    /// What the condition costs to evaluate and to compile: one unit for every node, every
    /// property filter of an `event` node, and every element of a list value (`in`, `not_in`,
    /// `between`). Conditions over [`MAX_COST`] are refused; a server can show the figure next
    /// to the limit.
    ///
    /// ```
    /// use cohort_segment::Condition;
    /// let c = Condition::from_json(r#"{"type": "and", "conditions": [
    ///     {"type": "trait", "key": "city", "op": "in", "value": ["上海", "北京"]},
    ///     {"type": "event", "name": "Order Completed",
    ///      "where": [{"property": "coupon", "op": "exists"}]}
    /// ]}"#)?;
    /// // Three nodes, two list elements, one filter.
    /// assert_eq!(c.cost(), 6);
    /// # Ok::<(), cohort_segment::ConditionError>(())
    /// ```
    pub fn cost(&self) -> usize {
        // A loop, not recursion: this is measured on conditions not yet known to be shallow.
        let mut cost = 0usize;
        let mut stack = vec![self];
        while let Some(node) = stack.pop() {
            cost = cost.saturating_add(1);
            match node {
                Condition::Trait { value, .. } | Condition::Computed { value, .. } => {
                    cost = cost.saturating_add(list_len(value.as_ref()));
                }
                Condition::Event { filters, .. } => {
                    for f in filters {
                        cost = cost
                            .saturating_add(1)
                            .saturating_add(list_len(f.value.as_ref()));
                    }
                }
                Condition::And { conditions } | Condition::Or { conditions } => {
                    stack.extend(conditions);
                }
                Condition::Not { condition } => stack.push(condition),
                Condition::FollowedBy { .. }
                | Condition::NotFollowedBy { .. }
                | Condition::InSegment { .. } => {}
            }
        }
        cost
    }
}

/// How many elements a list value has; any other value is none.
fn list_len(value: Option<&Value>) -> usize {
    value.and_then(Value::as_array).map_or(0, Vec::len)
}

/// Depth, size and cost first, without recursion, so a hostile tree cannot exhaust the stack or
/// the CPU before the limits are applied.
fn check_shape(root: &Condition) -> Result<(), ConditionError> {
    let mut nodes = 0usize;
    let mut stack: Vec<(&Condition, usize, String)> = vec![(root, 1, String::new())];
    while let Some((node, depth, path)) = stack.pop() {
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(ConditionError::TooLarge { max: MAX_NODES });
        }
        if depth > MAX_DEPTH {
            return Err(ConditionError::TooDeep {
                path: display_path(&path),
                max: MAX_DEPTH,
            });
        }
        match node {
            Condition::And { conditions } | Condition::Or { conditions } => {
                for (i, c) in conditions.iter().enumerate() {
                    stack.push((c, depth + 1, join(&path, &format!("conditions[{i}]"))));
                }
            }
            Condition::Not { condition } => {
                stack.push((condition, depth + 1, join(&path, "condition")));
            }
            Condition::Event { filters, .. } if filters.len() > MAX_FILTERS => {
                return Err(invalid(
                    &path,
                    "where",
                    format!(
                        "at most {MAX_FILTERS} property filters, got {}",
                        filters.len()
                    ),
                ));
            }
            _ => {}
        }
    }
    // Linear in what was already parsed, so measured in full: the message reports the figure.
    let cost = root.cost();
    if cost > MAX_COST {
        return Err(ConditionError::TooCostly {
            cost,
            max: MAX_COST,
        });
    }
    Ok(())
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn display_path(path: &str) -> String {
    if path.is_empty() {
        "condition".to_string()
    } else {
        path.to_string()
    }
}

fn invalid(path: &str, field: &str, message: impl Into<String>) -> ConditionError {
    ConditionError::Invalid {
        path: join(path, field),
        message: message.into(),
    }
}

fn non_empty(path: &str, field: &str, text: &str) -> Result<(), ConditionError> {
    if text.is_empty() {
        Err(invalid(path, field, "must not be empty"))
    } else {
        Ok(())
    }
}

fn check_node(cond: &Condition, path: &str) -> Result<(), ConditionError> {
    match cond {
        Condition::Trait { key, op, value } => {
            non_empty(path, "key", key)?;
            check_value(*op, value.as_ref(), path)
        }
        Condition::Computed { key, op, value } => {
            let kind = ComputedKey::parse(key).ok_or_else(|| {
                invalid(
                    path,
                    "key",
                    format!(
                        "unknown computed trait {key:?}; expected one of {} or event_counts.<event name>",
                        COMPUTED_KEYS.join(", ")
                    ),
                )
            })?;
            check_computed(&kind, key, *op, value.as_ref(), path)
        }
        Condition::Event {
            name,
            filters,
            count,
            window,
        } => {
            non_empty(path, "name", name)?;
            if count.value > MAX_COUNT {
                return Err(invalid(path, "count.value", format!("at most {MAX_COUNT}")));
            }
            for (i, f) in filters.iter().enumerate() {
                let at = join(path, &format!("where[{i}]"));
                non_empty(&at, "property", &f.property)?;
                check_value(f.op, f.value.as_ref(), &at)?;
            }
            match window {
                Some(Window::LastDays(days)) if u64::from(*days) > MAX_DAYS => Err(invalid(
                    path,
                    "window.last_days",
                    format!("at most {MAX_DAYS} days"),
                )),
                Some(Window::LastHours(hours)) if u64::from(*hours) > MAX_DAYS * 24 => {
                    Err(invalid(
                        path,
                        "window.last_hours",
                        format!("at most {} hours", MAX_DAYS * 24),
                    ))
                }
                Some(Window::Between(from, to)) => {
                    let from = date_arg(from, path, "window.between[0]")?;
                    let to = date_arg(to, path, "window.between[1]")?;
                    if from.at > to.at {
                        return Err(invalid(path, "window.between", "starts after it ends"));
                    }
                    Ok(())
                }
                _ => Ok(()),
            }
        }
        Condition::FollowedBy {
            first,
            then,
            within_hours,
        }
        | Condition::NotFollowedBy {
            first,
            then,
            within_hours,
        } => {
            non_empty(path, "first", first)?;
            non_empty(path, "then", then)?;
            if *within_hours == 0 || u64::from(*within_hours) > MAX_DAYS * 24 {
                return Err(invalid(
                    path,
                    "within_hours",
                    format!("must be between 1 and {}", MAX_DAYS * 24),
                ));
            }
            Ok(())
        }
        Condition::InSegment { segment } => non_empty(path, "segment", segment),
        Condition::And { conditions } | Condition::Or { conditions } => {
            for (i, c) in conditions.iter().enumerate() {
                check_node(c, &join(path, &format!("conditions[{i}]")))?;
            }
            Ok(())
        }
        Condition::Not { condition } => check_node(condition, &join(path, "condition")),
    }
}

fn date_arg(text: &str, path: &str, field: &str) -> Result<DateArg, ConditionError> {
    parse_date_arg(text).ok_or_else(|| {
        invalid(
            path,
            field,
            format!("{text:?} is not a date (RFC 3339 or YYYY-MM-DD, years 1678 to 2261)"),
        )
    })
}

fn is_scalar(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

/// The value rules shared by traits and event properties.
fn check_value(op: Op, value: Option<&Value>, path: &str) -> Result<(), ConditionError> {
    let name = op.as_str();
    let need = |what: &str| invalid(path, "value", format!("{name:?} needs {what}"));
    match op {
        Op::Exists | Op::NotExists | Op::IsTrue | Op::IsFalse => match value {
            None => Ok(()),
            Some(_) => Err(invalid(path, "value", format!("{name:?} takes no value"))),
        },
        Op::Eq | Op::Ne => match value {
            Some(v) if is_scalar(v) => Ok(()),
            _ => Err(need("a string, a number or a boolean")),
        },
        Op::Gt | Op::Gte | Op::Lt | Op::Lte => match value {
            Some(Value::Number(_) | Value::String(_)) => Ok(()),
            _ => Err(need("a number, a date or a string")),
        },
        Op::Contains | Op::NotContains => match value {
            Some(v) if is_scalar(v) => Ok(()),
            _ => Err(need("a string, a number or a boolean")),
        },
        Op::StartsWith | Op::EndsWith => match value {
            Some(Value::String(_) | Value::Number(_)) => Ok(()),
            _ => Err(need("a string")),
        },
        Op::In | Op::NotIn => match value {
            Some(Value::Array(items))
                if !items.is_empty() && items.len() <= MAX_LIST && items.iter().all(is_scalar) =>
            {
                Ok(())
            }
            _ => Err(need(&format!(
                "a list of 1 to {MAX_LIST} strings, numbers or booleans"
            ))),
        },
        Op::Between => check_between(value, path, Ends::Any),
        Op::Before | Op::After => match value {
            Some(Value::String(s)) => date_arg(s, path, "value").map(|_| ()),
            _ => Err(need("a date")),
        },
        Op::WithinLast | Op::NotWithinLast => days_value(value, path, name).map(|_| ()),
    }
}

/// The kinds of `between` ends a computed trait accepts.
#[derive(Clone, Copy)]
enum Ends {
    Any,
    Numbers,
    Dates,
}

/// `[lo, hi]` of one kind, in order.
fn check_between(value: Option<&Value>, path: &str, ends: Ends) -> Result<(), ConditionError> {
    let wanted = match ends {
        Ends::Any => "two numbers, two dates or two strings",
        Ends::Numbers => "two numbers",
        Ends::Dates => "two dates",
    };
    let shape_error = || {
        invalid(
            path,
            "value",
            format!("\"between\" needs [lo, hi]: {wanted}"),
        )
    };
    let Some(Value::Array(items)) = value else {
        return Err(shape_error());
    };
    let [lo, hi] = items.as_slice() else {
        return Err(shape_error());
    };
    if !matches!(lo, Value::Number(_) | Value::String(_))
        || !matches!(hi, Value::Number(_) | Value::String(_))
    {
        return Err(shape_error());
    }
    let (Some(lo), Some(hi)) = (Operand::of(lo), Operand::of(hi)) else {
        return Err(shape_error());
    };
    let ordered = match (lo, hi, ends) {
        (Operand::Number(a), Operand::Number(b), Ends::Any | Ends::Numbers) => a <= b,
        (Operand::Date(a), Operand::Date(b), Ends::Any | Ends::Dates) => a.at <= b.at,
        (Operand::Text(a), Operand::Text(b), Ends::Any) => a <= b,
        (_, _, Ends::Any) => {
            return Err(invalid(
                path,
                "value",
                format!(
                    "\"between\" needs both ends of one kind, got {} and {}",
                    lo.kind(),
                    hi.kind()
                ),
            ));
        }
        _ => return Err(shape_error()),
    };
    if !ordered {
        return Err(invalid(path, "value", "\"between\" needs lo <= hi"));
    }
    Ok(())
}

/// Reads `{"days": n}`.
pub(crate) fn days_of(value: Option<&Value>) -> Option<u64> {
    let obj = value?.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    obj.get("days")?.as_u64().filter(|d| *d <= MAX_DAYS)
}

fn days_value(value: Option<&Value>, path: &str, name: &str) -> Result<u64, ConditionError> {
    days_of(value).ok_or_else(|| {
        invalid(
            path,
            "value",
            format!("{name:?} needs {{\"days\": n}} with n from 0 to {MAX_DAYS}"),
        )
    })
}

/// What a `computed` key refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ComputedKey {
    /// A numeric column; `nullable` when a customer may have no value.
    Number {
        column: &'static str,
        nullable: bool,
    },
    Date {
        column: &'static str,
    },
    /// `event_counts.<name>`: missing counts are 0.
    EventCount(String),
}

impl ComputedKey {
    pub fn parse(key: &str) -> Option<ComputedKey> {
        if let Some(name) = key.strip_prefix("event_counts.") {
            return (!name.is_empty()).then(|| ComputedKey::EventCount(name.to_string()));
        }
        let column = COMPUTED_KEYS.into_iter().find(|k| *k == key)?;
        Some(match column {
            "first_seen" | "last_seen" | "last_order_at" => ComputedKey::Date { column },
            _ => ComputedKey::Number {
                column,
                nullable: column == "average_order_value",
            },
        })
    }
}

fn check_computed(
    kind: &ComputedKey,
    key: &str,
    op: Op,
    value: Option<&Value>,
    path: &str,
) -> Result<(), ConditionError> {
    let name = op.as_str();
    let unsupported = || {
        invalid(
            path,
            "op",
            format!("{name:?} does not apply to computed trait {key:?}"),
        )
    };
    let need = |what: &str| invalid(path, "value", format!("{name:?} on {key:?} needs {what}"));
    let number = |v: Option<&Value>| matches!(v.and_then(Operand::of), Some(Operand::Number(_)));
    let date = |v: Option<&Value>| matches!(v.and_then(Operand::of), Some(Operand::Date(_)));
    let nullable = match kind {
        ComputedKey::Number { nullable, .. } => *nullable,
        ComputedKey::Date { .. } => true,
        ComputedKey::EventCount(_) => false,
    };
    let is_date = matches!(kind, ComputedKey::Date { .. });
    match op {
        Op::Exists | Op::NotExists if nullable => check_value(op, value, path),
        Op::Eq | Op::Ne | Op::Gt | Op::Gte | Op::Lt | Op::Lte => {
            if is_date && !date(value) {
                Err(need("a date"))
            } else if !is_date && !number(value) {
                Err(need("a number"))
            } else {
                Ok(())
            }
        }
        Op::Between => check_between(
            value,
            path,
            if is_date { Ends::Dates } else { Ends::Numbers },
        ),
        Op::In | Op::NotIn if !is_date => match value {
            Some(Value::Array(items))
                if !items.is_empty()
                    && items.len() <= MAX_LIST
                    && items.iter().all(|i| number(Some(i))) =>
            {
                Ok(())
            }
            _ => Err(need(&format!("a list of 1 to {MAX_LIST} numbers"))),
        },
        Op::Before | Op::After | Op::WithinLast | Op::NotWithinLast if is_date => {
            check_value(op, value, path)
        }
        _ => Err(unsupported()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Condition, ConditionError> {
        Condition::from_value(v)
    }

    fn message(v: Value) -> String {
        parse(v).unwrap_err().to_string()
    }

    #[test]
    fn the_documented_examples_parse() {
        for v in [
            json!({"type":"trait","key":"city","op":"eq","value":"上海"}),
            json!({"type":"computed","key":"revenue_30d","op":"gt","value":5000}),
            json!({"type":"event","name":"Order Completed",
                   "where":[{"property":"revenue","op":"gt","value":100}],
                   "count":{"op":"gte","value":2},"window":{"last_days":30}}),
            json!({"type":"not_followed_by","first":"Signed Up","then":"Logged In","within_hours":24}),
            json!({"type":"followed_by","first":"Signed Up","then":"Logged In","within_hours":24}),
            json!({"type":"in_segment","segment":"platinum"}),
            json!({"type":"not","condition":{"type":"in_segment","segment":"platinum"}}),
            json!({"type":"or","conditions":[]}),
            json!({"type":"trait","key":"signup","op":"within_last","value":{"days":7}}),
            json!({"type":"trait","key":"age","op":"between","value":[18,"65"]}),
            json!({"type":"event","name":"x","window":{"between":["2026-01-01","2026-01-31T12:00:00Z"]}}),
            json!({"type":"computed","key":"event_counts.Product Viewed","op":"gte","value":3}),
        ] {
            parse(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"));
        }
    }

    #[test]
    fn event_count_defaults_to_at_least_once() {
        let c = parse(json!({"type":"event","name":"Signed Up"})).unwrap();
        let Condition::Event {
            count,
            window,
            filters,
            ..
        } = c
        else {
            panic!("not an event condition");
        };
        assert_eq!(
            count,
            CountRule {
                op: CountOp::Gte,
                value: 1
            }
        );
        assert!(window.is_none() && filters.is_empty());
    }

    #[test]
    fn unknown_types_fields_and_operators_are_parse_errors() {
        for v in [
            json!({"type":"script","code":"1"}),
            json!({"type":"trait","key":"a","op":"eq","value":1,"extra":true}),
            json!({"type":"trait","key":"a","op":"like","value":"x"}),
            json!({"type":"event","name":"x","count":{"op":"gte","value":-1}}),
            json!({"type":"event","name":"x","window":{"last_weeks":2}}),
            json!({"type":"event","name":"x","where":[{"property":"p","op":"eq","value":1,"x":1}]}),
            json!({"key":"a","op":"eq","value":1}),
        ] {
            assert!(
                matches!(parse(v.clone()), Err(ConditionError::Parse(_))),
                "{v}"
            );
        }
    }

    #[test]
    fn messages_name_the_path_to_the_bad_value() {
        assert_eq!(
            message(json!({"type":"and","conditions":[
                {"type":"in_segment","segment":"a"},
                {"type":"trait","key":"age","op":"gt","value":null}]})),
            r#"conditions[1].value: "gt" needs a number, a date or a string"#
        );
        assert_eq!(
            message(
                json!({"type":"not","condition":{"type":"event","name":"Order",
                "where":[{"property":"revenue","op":"in","value":[]}]}})
            ),
            r#"condition.where[0].value: "in" needs a list of 1 to 1000 strings, numbers or booleans"#
        );
        assert_eq!(
            message(json!({"type":"trait","key":"x","op":"exists","value":1})),
            r#"value: "exists" takes no value"#
        );
        assert_eq!(
            message(json!({"type":"trait","key":"","op":"exists"})),
            "key: must not be empty"
        );
        assert_eq!(
            message(json!({"type":"trait","key":"d","op":"before","value":"last tuesday"})),
            r#"value: "last tuesday" is not a date (RFC 3339 or YYYY-MM-DD, years 1678 to 2261)"#
        );
        assert_eq!(
            message(json!({"type":"trait","key":"d","op":"within_last","value":7})),
            r#"value: "within_last" needs {"days": n} with n from 0 to 36500"#
        );
    }

    #[test]
    fn between_needs_two_ordered_ends_of_one_kind() {
        assert_eq!(
            message(json!({"type":"trait","key":"x","op":"between","value":[1,"2026-01-01"]})),
            r#"value: "between" needs both ends of one kind, got a number and a date"#
        );
        assert_eq!(
            message(json!({"type":"trait","key":"x","op":"between","value":[5,1]})),
            r#"value: "between" needs lo <= hi"#
        );
        assert_eq!(
            message(json!({"type":"trait","key":"x","op":"between","value":[1]})),
            r#"value: "between" needs [lo, hi]: two numbers, two dates or two strings"#
        );
        assert_eq!(
            message(json!({"type":"computed","key":"last_seen","op":"between","value":["a","b"]})),
            r#"value: "between" needs [lo, hi]: two dates"#
        );
        assert_eq!(
            message(
                json!({"type":"event","name":"x","window":{"between":["2026-02-01","2026-01-01"]}})
            ),
            "window.between: starts after it ends"
        );
    }

    #[test]
    fn computed_keys_and_their_operators_are_checked() {
        assert!(
            message(json!({"type":"computed","key":"revenue","op":"gt","value":1})).starts_with(
                r#"key: unknown computed trait "revenue"; expected one of event_count,"#
            )
        );
        assert_eq!(
            message(json!({"type":"computed","key":"revenue_30d","op":"gt","value":"2026-01-01"})),
            r#"value: "gt" on "revenue_30d" needs a number"#
        );
        assert_eq!(
            message(json!({"type":"computed","key":"last_seen","op":"gt","value":5})),
            r#"value: "gt" on "last_seen" needs a date"#
        );
        assert_eq!(
            message(json!({"type":"computed","key":"orders","op":"contains","value":"1"})),
            r#"op: "contains" does not apply to computed trait "orders""#
        );
        assert_eq!(
            message(json!({"type":"computed","key":"orders","op":"exists"})),
            r#"op: "exists" does not apply to computed trait "orders""#
        );
        assert!(parse(json!({"type":"computed","key":"last_order_at","op":"exists"})).is_ok());
        assert!(
            parse(json!({"type":"computed","key":"average_order_value","op":"not_exists"})).is_ok()
        );
        assert!(parse(json!({"type":"computed","key":"orders","op":"gte","value":"3"})).is_ok());
        assert!(
            parse(json!({"type":"computed","key":"event_counts.","op":"gte","value":3})).is_err()
        );
    }

    #[test]
    fn operator_names_match_their_json_spelling() {
        for op in Op::ALL {
            assert_eq!(serde_json::to_value(op).unwrap(), json!(op.as_str()));
        }
    }

    #[test]
    fn event_counts_are_bounded() {
        assert_eq!(
            message(
                json!({"type":"event","name":"x","count":{"op":"gt","value":2_000_000_000u64}})
            ),
            "count.value: at most 1000000000"
        );
    }

    #[test]
    fn sequences_need_a_positive_bounded_window() {
        assert_eq!(
            message(json!({"type":"followed_by","first":"a","then":"b","within_hours":0})),
            "within_hours: must be between 1 and 876000"
        );
    }

    fn nested(depth: usize) -> Condition {
        let mut c = Condition::InSegment {
            segment: "s".into(),
        };
        for _ in 1..depth {
            c = Condition::negate(c);
        }
        c
    }

    #[test]
    fn nesting_is_limited_to_32_levels() {
        assert!(nested(MAX_DEPTH).validate().is_ok());
        let err = nested(MAX_DEPTH + 1).validate().unwrap_err();
        let ConditionError::TooDeep { path, max } = &err else {
            panic!("{err}");
        };
        assert_eq!(*max, 32);
        assert_eq!(path, &vec!["condition"; 32].join("."));
    }

    #[test]
    fn a_condition_may_have_at_most_500_nodes() {
        let leaf = Condition::InSegment {
            segment: "s".into(),
        };
        assert!(Condition::and(vec![leaf.clone(); 499]).validate().is_ok());
        assert_eq!(
            Condition::and(vec![leaf; 500]).validate(),
            Err(ConditionError::TooLarge { max: 500 })
        );
    }

    fn in_list(n: usize) -> Value {
        let values: Vec<usize> = (0..n).collect();
        json!({"type":"trait","key":"k","op":"in","value":values})
    }

    fn filters(n: usize) -> Vec<Value> {
        (0..n)
            .map(|i| json!({"property":format!("p{i}"),"op":"exists"}))
            .collect()
    }

    #[test]
    fn cost_counts_nodes_filters_and_list_elements() {
        let c = parse(json!({"type":"or","conditions":[
            {"type":"not","condition":{"type":"in_segment","segment":"s"}},
            {"type":"computed","key":"orders","op":"not_in","value":[1,2,3]},
            {"type":"trait","key":"age","op":"between","value":[18,65]},
            {"type":"event","name":"Order Completed","where":[
                {"property":"coupon","op":"exists"},
                {"property":"category","op":"in","value":["a","b"]}]},
            {"type":"followed_by","first":"a","then":"b","within_hours":1}
        ]}))
        .unwrap();
        // 7 nodes, 3 + 2 + 2 list elements, 2 filters.
        assert_eq!(c.cost(), 7 + 7 + 2);
        assert_eq!(
            parse(json!({"type":"and","conditions":[]})).unwrap().cost(),
            1
        );
    }

    #[test]
    fn conditions_over_the_cost_budget_are_refused_naming_the_cost() {
        // The probe's 2 MB preview: 400 lists of 1,000 values, under MAX_NODES.
        let lists = json!({"type":"and","conditions":vec![in_list(MAX_LIST); 400]});
        let err = parse(lists).unwrap_err();
        assert_eq!(
            err,
            ConditionError::TooCostly {
                cost: 400_401,
                max: MAX_COST
            }
        );
        assert_eq!(
            err.to_string(),
            "the condition costs 400,401 units (nodes, filters and list items); the limit is 5,000"
        );
        // Exactly at the budget passes; one list element more does not.
        let at_budget = |last: usize| {
            let mut children = vec![in_list(1_000); 4];
            children.push(in_list(last));
            json!({"type":"and","conditions":children})
        };
        assert_eq!(parse(at_budget(994)).map(|c| c.cost()), Ok(MAX_COST));
        assert_eq!(
            parse(at_budget(995)),
            Err(ConditionError::TooCostly {
                cost: MAX_COST + 1,
                max: MAX_COST
            })
        );
    }

    #[test]
    fn filters_count_toward_the_budget_and_are_capped_per_event() {
        // The probe's crash: 2,200 filters in one event node, which MAX_NODES never saw.
        let probe = json!({"type":"not","condition":
            {"type":"event","name":"x","where":filters(2_200)}});
        assert_eq!(
            message(probe),
            "condition.where: at most 100 property filters, got 2200"
        );
        let full = json!({"type":"event","name":"x","where":filters(MAX_FILTERS)});
        assert_eq!(parse(full.clone()).map(|c| c.cost()), Ok(1 + MAX_FILTERS));
        // Within the cap per event, filters still add up across events.
        let many = json!({"type":"or","conditions":vec![full; 50]});
        assert_eq!(
            message(many),
            "the condition costs 5,051 units (nodes, filters and list items); the limit is 5,000"
        );
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(5_000), "5,000");
        assert_eq!(thousands(400_401), "400,401");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn serialisation_uses_the_documented_field_names() {
        let c = parse(json!({"type":"event","name":"Order Completed",
            "where":[{"property":"revenue","op":"gt","value":100}],
            "window":{"last_days":30}}))
        .unwrap();
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"type":"event","name":"Order Completed",
                   "where":[{"property":"revenue","op":"gt","value":100}],
                   "count":{"op":"gte","value":1},"window":{"last_days":30}})
        );
        let exists = parse(json!({"type":"trait","key":"email","op":"exists"})).unwrap();
        assert_eq!(
            serde_json::to_value(&exists).unwrap(),
            json!({"type":"trait","key":"email","op":"exists"})
        );
    }
}
