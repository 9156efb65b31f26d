//! Targeting conditions in GrowthBook's MongoDB-style language, evaluated as its SDKs evaluate
//! them, so that a rule saved in Cohort targets the same units in GrowthBook's SDKs and in
//! Cohort's own evaluation.
//!
//! A condition is a JSON object. Its keys are attribute paths (`"country"`, `"device.os"`) or the
//! logic operators `$or`, `$nor`, `$and`, `$not`; a path's value is either a literal (the
//! attribute must equal it) or an object of operators (`$eq`, `$ne`, `$lt`, `$lte`, `$gt`, `$gte`,
//! `$in`, `$nin`, `$ini`, `$nini`, `$all`, `$alli`, `$elemMatch`, `$size`, `$exists`, `$type`,
//! `$not`, `$regex`, `$regexi`, `$notRegex`, `$notRegexi`, the version comparisons `$veq`,
//! `$vne`, `$vgt`, `$vgte`, `$vlt`, `$vlte`, and `$inGroup`, `$notInGroup` over saved groups).
//!
//! The SDKs are JavaScript at heart, and their answers follow JavaScript's comparisons: a string
//! literal matches any attribute whose text form equals it, `<` between two strings compares
//! them and otherwise compares numbers, and an unknown operator fails. This module reproduces
//! those rules ([`JsValue`]) rather than inventing stricter ones, which would split a unit's
//! variation between a browser and the server.
//!
//! ```
//! use cohort_experiment::condition::eval_condition;
//! use serde_json::json;
//! let condition = json!({"country": {"$in": ["DE", "FR"]}, "age": {"$gte": 18}});
//! let attributes = json!({"country": "DE", "age": 30});
//! assert!(eval_condition(&attributes, &condition, &json!({})));
//! ```

use serde_json::{Map, Value};
use std::cmp::Ordering;

/// Whether `attributes` satisfy `condition`; `saved_groups` maps group IDs to their member
/// values for `$inGroup` and `$notInGroup`.
pub fn eval_condition(attributes: &Value, condition: &Value, saved_groups: &Value) -> bool {
    let no_groups = Map::new();
    let groups = saved_groups.as_object().unwrap_or(&no_groups);
    eval_on(Subject::Value(attributes), condition, groups)
}

/// [`eval_condition`] over attributes and saved groups as the evaluation context holds them,
/// without copying either into a [`Value`] first.
pub(crate) fn eval_condition_in(
    attributes: &Map<String, Value>,
    condition: &Value,
    saved_groups: &Map<String, Value>,
) -> bool {
    eval_on(Subject::Map(attributes), condition, saved_groups)
}

/// What a condition is evaluated on: a JSON value, or the attributes' map itself.
#[derive(Clone, Copy)]
enum Subject<'a> {
    Value(&'a Value),
    Map(&'a Map<String, Value>),
}

fn eval_on(subject: Subject<'_>, condition: &Value, saved_groups: &Map<String, Value>) -> bool {
    let Value::Object(condition) = condition else {
        return false;
    };
    condition.iter().all(|(key, value)| match key.as_str() {
        "$or" => eval_or(subject, value, saved_groups),
        "$nor" => !eval_or(subject, value, saved_groups),
        "$and" => eval_and(subject, value, saved_groups),
        "$not" => !eval_on(subject, value, saved_groups),
        path => eval_value(value, path_value(subject, path), saved_groups),
    })
}

/// Why `condition` cannot be what its author meant: an operator the SDKs do not know (which
/// fails for every unit), a logic operator without a list, or a pattern that does not compile.
/// Checked when a definition is saved, so that a typo is refused rather than quietly targeting
/// nobody.
pub fn check_condition(condition: &Value) -> Result<(), String> {
    let Value::Object(condition) = condition else {
        return Err("a condition is a JSON object".into());
    };
    for (key, value) in condition {
        match key.as_str() {
            "$or" | "$nor" | "$and" => {
                let Value::Array(items) = value else {
                    return Err(format!("{key} takes a list of conditions"));
                };
                items.iter().try_for_each(check_condition)?;
            }
            "$not" => check_condition(value)?,
            op if op.starts_with('$') => return Err(format!("{op} is not a logic operator")),
            path => check_value_condition(path, value)?,
        }
    }
    Ok(())
}

fn check_value_condition(path: &str, condition: &Value) -> Result<(), String> {
    let Value::Object(ops) = condition else {
        return Ok(());
    };
    if !is_operator_object(ops) {
        return Ok(());
    }
    for (op, expected) in ops {
        match op.as_str() {
            "$eq" | "$ne" | "$lt" | "$lte" | "$gt" | "$gte" | "$exists" | "$size" | "$type"
            | "$veq" | "$vne" | "$vgt" | "$vgte" | "$vlt" | "$vlte" | "$inGroup"
            | "$notInGroup" => {}
            "$in" | "$nin" | "$ini" | "$nini" | "$all" | "$alli" => {
                if !expected.is_array() {
                    return Err(format!("{path}: {op} takes a list"));
                }
            }
            "$not" => check_value_condition(path, expected)?,
            "$elemMatch" => {
                // Either a condition on the items' fields or operators on the items.
                if let Value::Object(inner) = expected
                    && !is_operator_object(inner)
                {
                    check_condition(expected)?;
                } else {
                    check_value_condition(path, expected)?;
                }
            }
            "$regex" | "$regexi" | "$notRegex" | "$notRegexi" => {
                let Some(pattern) = expected.as_str() else {
                    return Err(format!("{path}: {op} takes a pattern as text"));
                };
                regex::RegexBuilder::new(pattern)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| format!("{path}: {op} pattern does not compile: {e}"))?;
            }
            other => return Err(format!("{path}: {other} is not an operator")),
        }
    }
    Ok(())
}

fn eval_or(subject: Subject<'_>, conditions: &Value, saved_groups: &Map<String, Value>) -> bool {
    let Value::Array(conditions) = conditions else {
        return false;
    };
    conditions.is_empty() || conditions.iter().any(|c| eval_on(subject, c, saved_groups))
}

fn eval_and(subject: Subject<'_>, conditions: &Value, saved_groups: &Map<String, Value>) -> bool {
    let Value::Array(conditions) = conditions else {
        return false;
    };
    conditions.iter().all(|c| eval_on(subject, c, saved_groups))
}

/// The value at a dotted path; `null` where the path leads nowhere.
fn path_value<'a>(subject: Subject<'a>, path: &str) -> &'a Value {
    let mut parts = path.split('.');
    let first = parts.next().unwrap_or_default();
    let mut current = match subject {
        Subject::Map(map) => map.get(first),
        Subject::Value(value) => value.as_object().and_then(|map| map.get(first)),
    };
    for part in parts {
        current = current
            .and_then(Value::as_object)
            .and_then(|map| map.get(part));
    }
    current.unwrap_or(&Value::Null)
}

/// An object whose keys are all operators (`{"$gt": 1}`), as opposed to a literal object.
fn is_operator_object(map: &Map<String, Value>) -> bool {
    !map.is_empty() && map.keys().all(|k| k.starts_with('$'))
}

fn eval_value(condition: &Value, actual: &Value, saved_groups: &Map<String, Value>) -> bool {
    match condition {
        Value::String(expected) => JsValue(actual).to_js_string() == *expected,
        Value::Number(expected) => {
            let expected = expected.as_f64().unwrap_or(f64::NAN);
            JsValue(actual).to_number() == expected
        }
        Value::Bool(expected) => !actual.is_null() && JsValue(actual).truthy() == *expected,
        Value::Null => actual.is_null(),
        Value::Object(ops) if is_operator_object(ops) => ops
            .iter()
            .all(|(op, expected)| eval_operator(op, actual, expected, saved_groups)),
        // Literal arrays and objects: equal as JSON text.
        literal => actual == literal,
    }
}

fn eval_operator(
    op: &str,
    actual: &Value,
    expected: &Value,
    saved_groups: &Map<String, Value>,
) -> bool {
    let compare = || JsValue(actual).compare(&JsValue(expected));
    let version = || padded_version(actual).cmp(&padded_version(expected));
    match op {
        "$veq" => version() == Ordering::Equal,
        "$vne" => version() != Ordering::Equal,
        "$vgt" => version() == Ordering::Greater,
        "$vgte" => version() != Ordering::Less,
        "$vlt" => version() == Ordering::Less,
        "$vlte" => version() != Ordering::Greater,
        "$eq" => strictly_equal(actual, expected),
        "$ne" => !strictly_equal(actual, expected),
        "$lt" => compare() == Some(Ordering::Less),
        "$lte" => matches!(compare(), Some(Ordering::Less | Ordering::Equal)),
        "$gt" => compare() == Some(Ordering::Greater),
        "$gte" => matches!(compare(), Some(Ordering::Greater | Ordering::Equal)),
        "$exists" => JsValue(expected).truthy() != actual.is_null(),
        "$in" => expected
            .as_array()
            .is_some_and(|list| is_in(actual, list, false)),
        "$nin" => expected
            .as_array()
            .is_some_and(|list| !is_in(actual, list, false)),
        "$ini" => expected
            .as_array()
            .is_some_and(|list| is_in(actual, list, true)),
        "$nini" => expected
            .as_array()
            .is_some_and(|list| !is_in(actual, list, true)),
        "$not" => !eval_value(expected, actual, saved_groups),
        "$size" => actual
            .as_array()
            .is_some_and(|items| eval_value(expected, &Value::from(items.len()), saved_groups)),
        "$elemMatch" => elem_match(actual, expected, saved_groups),
        "$all" => all(actual, expected, |cond, item| {
            eval_value(cond, item, saved_groups)
        }),
        "$alli" => all(actual, expected, |cond, item| {
            same_ignoring_case(item, cond)
        }),
        "$regex" => regex_test(expected, actual, false).unwrap_or(false),
        "$regexi" => regex_test(expected, actual, true).unwrap_or(false),
        "$notRegex" => regex_test(expected, actual, false).is_some_and(|hit| !hit),
        "$notRegexi" => regex_test(expected, actual, true).is_some_and(|hit| !hit),
        "$type" => expected.as_str() == Some(type_name(actual)),
        "$inGroup" => is_in(actual, group(saved_groups, expected), false),
        "$notInGroup" => !is_in(actual, group(saved_groups, expected), false),
        // An operator this version does not know fails, as in the SDKs.
        _ => false,
    }
}

fn group<'a>(saved_groups: &'a Map<String, Value>, id: &Value) -> &'a [Value] {
    id.as_str()
        .and_then(|id| saved_groups.get(id))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// JavaScript's `===` on parsed JSON: primitives by value, arrays and objects never (they are
/// distinct objects).
fn strictly_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => false,
        _ => a == b,
    }
}

fn same_ignoring_case(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.to_lowercase() == y.to_lowercase(),
        _ => strictly_equal(a, b),
    }
}

/// `actual` (or, for an array, any of its items) is in `list`.
fn is_in(actual: &Value, list: &[Value], ignore_case: bool) -> bool {
    let member = |item: &Value| {
        list.iter().any(|candidate| {
            if ignore_case {
                same_ignoring_case(item, candidate)
            } else {
                strictly_equal(item, candidate)
            }
        })
    };
    match actual {
        Value::Array(items) => items.iter().any(member),
        single => member(single),
    }
}

/// Every condition in `expected` holds for some item of the array `actual`.
fn all(actual: &Value, expected: &Value, holds: impl Fn(&Value, &Value) -> bool) -> bool {
    let (Some(items), Some(conditions)) = (actual.as_array(), expected.as_array()) else {
        return false;
    };
    conditions
        .iter()
        .all(|cond| items.iter().any(|item| holds(cond, item)))
}

fn elem_match(actual: &Value, expected: &Value, saved_groups: &Map<String, Value>) -> bool {
    let Some(items) = actual.as_array() else {
        return false;
    };
    let operators = matches!(expected, Value::Object(map) if is_operator_object(map));
    items.iter().any(|item| {
        if operators {
            eval_value(expected, item, saved_groups)
        } else {
            eval_on(Subject::Value(item), expected, saved_groups)
        }
    })
}

/// Whether the pattern matches the attribute's text; `None` when the pattern does not compile.
fn regex_test(pattern: &Value, actual: &Value, ignore_case: bool) -> Option<bool> {
    let pattern = pattern.as_str()?;
    let regex = regex::RegexBuilder::new(pattern)
        .case_insensitive(ignore_case)
        .size_limit(1 << 20)
        .build()
        .ok()?;
    Some(regex.is_match(&JsValue(actual).to_js_string()))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A version as a string whose order is the versions' order: a leading `v` and build metadata
/// dropped, numeric parts padded to five characters, and a `~` after a release without a
/// pre-release tag, so that `1.0.0` sorts after `1.0.0-beta`.
fn padded_version(input: &Value) -> String {
    let text = match input {
        Value::Number(n) => JsValue(input).to_js_string_number(n),
        Value::String(s) if !s.is_empty() => s.clone(),
        _ => "0".to_string(),
    };
    let text = text.strip_prefix('v').unwrap_or(&text);
    let text = text.split('+').next().unwrap_or(text);
    let mut parts: Vec<&str> = text.split(['-', '.']).collect();
    if parts.len() == 3 {
        parts.push("~");
    }
    parts
        .iter()
        .map(|part| {
            if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
                format!("{part:>5}")
            } else {
                (*part).to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// JavaScript's `String(v)`: how the SDKs turn an attribute into the text they hash.
pub(crate) fn js_string(v: &Value) -> String {
    JsValue(v).to_js_string()
}

/// JavaScript's `!!v`.
pub(crate) fn truthy(v: &Value) -> bool {
    JsValue(v).truthy()
}

/// A JSON value under JavaScript's conversions.
struct JsValue<'a>(&'a Value);

impl JsValue<'_> {
    /// `String(v)`.
    fn to_js_string(&self) -> String {
        match self.0 {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => self.to_js_string_number(n),
            Value::String(s) => s.clone(),
            Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    Value::Null => String::new(),
                    other => JsValue(other).to_js_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            Value::Object(_) => "[object Object]".into(),
        }
    }

    fn to_js_string_number(&self, n: &serde_json::Number) -> String {
        match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e21 => format!("{f:.0}"),
            Some(f) => f.to_string(),
            None => n.to_string(),
        }
    }

    /// `Number(v)`.
    fn to_number(&self) -> f64 {
        match self.0 {
            Value::Null => 0.0,
            Value::Bool(b) => f64::from(u8::from(*b)),
            Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
            Value::String(s) => {
                let s = s.trim();
                if s.is_empty() {
                    0.0
                } else {
                    s.parse::<f64>().unwrap_or(f64::NAN)
                }
            }
            Value::Array(items) => match items.as_slice() {
                [] => 0.0,
                [one] => JsValue(&Value::String(JsValue(one).to_js_string())).to_number(),
                _ => f64::NAN,
            },
            Value::Object(_) => f64::NAN,
        }
    }

    /// `!!v`.
    fn truthy(&self) -> bool {
        match self.0 {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
            Value::String(s) => !s.is_empty(),
            Value::Array(_) | Value::Object(_) => true,
        }
    }

    /// The order of `<` and `>`: two strings compare as text (UTF-16 code units), anything
    /// else as numbers; `None` where JavaScript answers false both ways (NaN).
    fn compare(&self, other: &JsValue) -> Option<Ordering> {
        // Arrays and objects become their text first (`ToPrimitive`).
        let primitive = |v: &Value| match v {
            Value::Array(_) | Value::Object(_) => Value::String(JsValue(v).to_js_string()),
            other => other.clone(),
        };
        let (a, b) = (primitive(self.0), primitive(other.0));
        if let (Value::String(a), Value::String(b)) = (&a, &b) {
            return Some(a.encode_utf16().cmp(b.encode_utf16()));
        }
        JsValue(&a)
            .to_number()
            .partial_cmp(&JsValue(&b).to_number())
    }
}
