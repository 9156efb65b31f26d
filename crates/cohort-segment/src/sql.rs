//! Batch evaluation: compile a condition to one SQL query listing every member.
//!
//! [`to_sql`] writes ANSI SQL as Apache DataFusion accepts it, with the JSON functions of the
//! `datafusion-functions-json` crate registered (`json_get_str`, `json_get_float`,
//! `json_get_bool`, `json_get_array`, `json_contains`). The query returns one column,
//! `customer_id`, without duplicates, and selects exactly the customers [`crate::evaluate`] accepts
//! at the same `now`.
//!
//! # Table contract
//!
//! The caller registers these tables (views over the store are fine). `customer_id` is never
//! NULL, and every customer has a `profiles` row: the complement of a condition (`not`, `ne`,
//! "did not perform") is taken against `profiles`. Timestamps hold UTC, as `TIMESTAMP` with the
//! UTC zone or without a zone: the compiled literals carry no zone and compare as UTC either way.
//!
//! | table | columns | what |
//! | --- | --- | --- |
//! | `profiles` | `customer_id BIGINT, first_seen TIMESTAMP, last_seen TIMESTAMP, event_count BIGINT, orders BIGINT, total_revenue DOUBLE, revenue_30d DOUBLE, orders_30d BIGINT, last_order_at TIMESTAMP, average_order_value DOUBLE` | one row per customer: [`cohort_profile::ComputedTraits`] |
//! | `profile_traits` | `customer_id BIGINT, key VARCHAR, value VARCHAR, number DOUBLE` | one row per trait: `value` = [`crate::trait_text`], `number` = [`crate::trait_number`] |
//! | `events` | `customer_id BIGINT, name VARCHAR, timestamp TIMESTAMP, date DATE, properties VARCHAR, revenue DOUBLE, price DOUBLE, currency VARCHAR, category VARCHAR` | one row per event, `name` as counted in `event_counts` (`$page` …), `date` the UTC day of `timestamp`, `properties` as compact JSON; `revenue` and `price` hold [`crate::values::json_number`] of that property, `currency` and `category` the property when it is a JSON string (the lake's promoted columns) |
//! | `memberships` | `segment VARCHAR, customer_id BIGINT` | current members of other segments, for `in_segment` |
//!
//! List membership (`contains` on a list) matches elements by their JSON text, so list traits and
//! list properties must be written as `serde_json` writes them; a string trait whose text happens
//! to be a JSON array is indistinguishable from a list in `profile_traits`.
//!
//! # Shape of the query
//!
//! Every node becomes a set of customer ids, combined with `INTERSECT` (and), `UNION` (or) and
//! `EXCEPT` (not, taken from `profiles`). An `and` with tests on `profiles` columns is one scan
//! of `profiles` instead, its other children applied as `customer_id IN (…)`. No correlated
//! subqueries, and SQL's three-valued logic never leaks into membership: a NULL comparison simply
//! leaves a customer out of a set.
//!
//! Nesting stays shallow however large the condition: parsers read `a AND b AND c …` as a tree
//! one level per operand, which DataFusion's planner walks recursively, so long runs of `AND`,
//! `UNION` and `INTERSECT` are grouped in parentheses eight at a time (the depth grows with
//! the logarithm of the count), and an `in` list is one `IN (…)` per reading.
//!
//! # Literals
//!
//! All condition text reaches the SQL as string literals with `'` doubled; a backslash is
//! spelled `chr(92)` so that the literal means the same whether or not the dialect treats
//! backslashes as escapes. Numbers are written by Rust, timestamps as
//! `TIMESTAMP '2026-01-01T00:00:00Z'`. Relative windows are resolved against `now` here, so the
//! query text is fixed for a given `now`.
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use cohort_segment::{Condition, to_sql};
//! let cond = Condition::from_json(r#"{"type": "trait", "key": "city", "op": "eq", "value": "O'Hare"}"#).unwrap();
//! let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
//! assert_eq!(
//!     to_sql(&cond, now).unwrap(),
//!     r#"SELECT customer_id FROM profile_traits WHERE "key" = 'city' AND "value" = 'O''Hare'"#
//! );
//! ```

use crate::condition::{ComputedKey, Condition, ConditionError, CountRule, Op, Window};
use crate::eval::{TimeRange, back, look_back, number_admits};
use crate::values::{Operand, element_spellings, scalar_text};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde_json::Value;

const EVERYONE: &str = "SELECT customer_id FROM profiles";
const NOBODY: &str = "SELECT customer_id FROM profiles WHERE FALSE";

/// Compiles a (validated) condition to a query selecting the `customer_id` of every member at
/// `now`.
pub fn to_sql(cond: &Condition, now: DateTime<Utc>) -> Result<String, ConditionError> {
    cond.validate()?;
    compile(cond, now)
}

fn compile(cond: &Condition, now: DateTime<Utc>) -> Result<String, ConditionError> {
    Ok(match cond {
        Condition::Trait { key, op, value } => {
            let (op, negated) = split(*op);
            let target = Target::trait_value();
            let mut sql = format!(
                "SELECT customer_id FROM profile_traits WHERE \"key\" = {}",
                text(key)
            );
            if op != Op::Exists {
                sql.push_str(" AND ");
                sql.push_str(&predicate(&target, op, value.as_ref(), now)?);
            }
            if negated { complement(&sql) } else { sql }
        }
        Condition::Computed { key, op, value } => {
            let Some(kind) = ComputedKey::parse(key) else {
                return Err(unreachable_input("computed key"));
            };
            let (op, negated) = split(*op);
            let sql = match kind {
                ComputedKey::Number { column, .. } | ComputedKey::Date { column } => format!(
                    "SELECT customer_id FROM profiles WHERE {}",
                    predicate(&Target::column(column), op, value.as_ref(), now)?
                ),
                ComputedKey::EventCount(name) => {
                    let having = predicate(&Target::count(), op, value.as_ref(), now)?;
                    let zero_matches = number_admits(op, value.as_ref(), 0.0, now);
                    counted(&format!("name = {}", text(&name)), &having, zero_matches)
                }
            };
            if negated { complement(&sql) } else { sql }
        }
        Condition::Event {
            name,
            filters,
            count,
            window,
        } => {
            let mut conditions = vec![format!("name = {}", text(name))];
            if let Some(w) = window {
                conditions.push(window_sql(w, now)?);
            }
            for f in filters {
                let target = Target::property(&f.property);
                let (op, negated) = split(f.op);
                let p = predicate(&target, op, f.value.as_ref(), now)?;
                // Inside one event the property test is a plain boolean: a missing property
                // (NULL) must count as "not equal", hence IS NOT TRUE rather than NOT.
                conditions.push(if negated {
                    format!("({p}) IS NOT TRUE")
                } else {
                    p
                });
            }
            counted(
                &chain(conditions, "AND"),
                &count_sql(*count),
                count.admits(0),
            )
        }
        Condition::FollowedBy {
            first,
            then,
            within_hours,
        } => format!(
            "SELECT DISTINCT f.customer_id FROM events AS f JOIN events AS t \
             ON t.customer_id = f.customer_id \
             WHERE f.name = {} AND t.name = {} AND t.\"timestamp\" > f.\"timestamp\" \
             AND t.\"timestamp\" <= f.\"timestamp\" + {}",
            text(first),
            text(then),
            hours(*within_hours)
        ),
        Condition::NotFollowedBy {
            first,
            then,
            within_hours,
        } => {
            let cutoff = back(now, TimeDelta::hours(i64::from(*within_hours)))
                .ok_or_else(|| unreachable_input("within_hours"))?;
            format!(
                "SELECT f.customer_id FROM (SELECT customer_id, MAX(\"timestamp\") AS first_at \
                 FROM events WHERE name = {} AND \"timestamp\" <= {} GROUP BY customer_id) AS f \
                 LEFT JOIN events AS t ON t.customer_id = f.customer_id AND t.name = {} \
                 AND t.\"timestamp\" > f.first_at AND t.\"timestamp\" <= f.first_at + {} \
                 WHERE t.customer_id IS NULL",
                text(first),
                timestamp(cutoff),
                text(then),
                hours(*within_hours)
            )
        }
        Condition::InSegment { segment } => format!(
            "SELECT DISTINCT customer_id FROM memberships WHERE segment = {}",
            text(segment)
        ),
        Condition::And { conditions } => conjunction(conditions, now)?,
        Condition::Or { conditions } => combine(conditions, "UNION", NOBODY, now)?,
        Condition::Not { condition } => complement(&compile(condition, now)?),
    })
}

/// The test a computed number or date condition puts on a `profiles` row, when it is one (not
/// negated, not an event count).
fn profile_row_test(
    cond: &Condition,
    now: DateTime<Utc>,
) -> Result<Option<String>, ConditionError> {
    let Condition::Computed { key, op, value } = cond else {
        return Ok(None);
    };
    let (op, negated) = split(*op);
    match ComputedKey::parse(key) {
        Some(ComputedKey::Number { column, .. } | ComputedKey::Date { column }) if !negated => {
            predicate(&Target::column(column), op, value.as_ref(), now).map(Some)
        }
        _ => Ok(None),
    }
}

/// `and`: the children that test a `profiles` column become one scan's `WHERE`, and the other
/// children filter it with `customer_id IN (…)` (semi-joins). Without such a child the sets
/// are intersected. Both select the same customers; the first skips the duplicate removal an
/// `INTERSECT` does on each side.
fn conjunction(conditions: &[Condition], now: DateTime<Utc>) -> Result<String, ConditionError> {
    let mut row_tests = Vec::new();
    let mut others = Vec::new();
    for c in conditions {
        match profile_row_test(c, now)? {
            Some(test) => row_tests.push(test),
            None => others.push(c),
        }
    }
    if row_tests.is_empty() {
        return combine(conditions, "INTERSECT", EVERYONE, now);
    }
    for other in others {
        row_tests.push(format!("customer_id IN ({})", compile(other, now)?));
    }
    Ok(format!("{EVERYONE} WHERE {}", chain(row_tests, "AND")))
}

/// The four complement operators compile as their positive form, then negate.
fn split(op: Op) -> (Op, bool) {
    match op.complement_of() {
        Some(positive) => (positive, true),
        None => (op, false),
    }
}

fn complement(set: &str) -> String {
    format!("{EVERYONE} EXCEPT ({set})")
}

fn combine(
    conditions: &[Condition],
    operator: &str,
    empty: &str,
    now: DateTime<Utc>,
) -> Result<String, ConditionError> {
    match conditions {
        [] => Ok(empty.to_string()),
        [only] => compile(only, now),
        many => {
            let parts = many
                .iter()
                .map(|c| compile(c, now).map(|sql| format!("({sql})")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(chain(parts, operator))
        }
    }
}

/// The most operands one `AND` or set-operation chain has in the text; see [`chain`].
const CHAIN: usize = 8;

/// Joins `parts` with `operator` (associative: `AND`, `OR`, `UNION`, `INTERSECT`), grouping
/// them in parentheses [`CHAIN`] at a time, level by level, so that nesting grows with the
/// logarithm of their number.
///
/// SQL parsers read `a AND b AND c …` as a left-deep tree, one level per operand, which
/// DataFusion's planner and optimizer then walk recursively: a few thousand operands overflowed
/// the stack and aborted the server. Parentheses cost the parser recursion instead, and
/// DataFusion's parser stops at 50 levels, so the groups are wide rather than pairs (pairs put
/// the largest conditions, nested to `MAX_DEPTH`, over that limit): 5,000 operands nest 5
/// levels deep, each a chain of at most 8.
fn chain(mut parts: Vec<String>, operator: &str) -> String {
    let separator = format!(" {operator} ");
    while parts.len() > CHAIN {
        parts = parts
            .chunks(CHAIN)
            .map(|group| match group {
                [one] => one.clone(),
                many => format!("({})", many.join(&separator)),
            })
            .collect();
    }
    parts.join(&separator)
}

/// Customers whose count of `events WHERE conditions` satisfies `having`. When a count of zero
/// satisfies it too, customers without any such event are members, which a GROUP BY cannot
/// produce: the query then takes everyone except those whose count fails.
fn counted(conditions: &str, having: &str, zero_matches: bool) -> String {
    let grouped = |having: &str| {
        format!(
            "SELECT customer_id FROM events WHERE {conditions} GROUP BY customer_id HAVING {having}"
        )
    };
    if zero_matches {
        complement(&grouped(&format!("NOT ({having})")))
    } else {
        grouped(having)
    }
}

fn count_sql(count: CountRule) -> String {
    format!("COUNT(*) {} {}", count.op.sql(), count.value)
}

fn window_sql(window: &Window, now: DateTime<Utc>) -> Result<String, ConditionError> {
    let range = TimeRange::of(window, now);
    let from = range.from.ok_or_else(|| unreachable_input("window"))?;
    // The `date` bounds repeat the timestamp's: they let the lake skip whole days.
    let mut sql = format!(
        "\"timestamp\" >= {} AND \"date\" >= {}",
        timestamp(from),
        date(from)
    );
    if let Window::Between(..) = window {
        let to = range.to.ok_or_else(|| unreachable_input("window"))?;
        sql.push_str(" AND ");
        sql.push_str(&upper_bound("\"timestamp\"", to)?);
        sql.push_str(&format!(" AND \"date\" <= {}", date(to.at)));
    }
    Ok(sql)
}

fn upper_bound(expr: &str, to: crate::values::DateArg) -> Result<String, ConditionError> {
    Ok(match (to.date_only, to.end_exclusive()) {
        (true, Some(end)) => format!("{expr} < {}", timestamp(end)),
        (true, None) => return Err(unreachable_input("date")),
        (false, _) => format!("{expr} <= {}", timestamp(to.at)),
    })
}

/// How one kind of value is read in SQL: the expressions behind each reading.
struct Target {
    text: String,
    number: String,
    date: String,
    list: String,
    exists: String,
    /// Extra test for booleans beyond the text `'true'` / `'false'` (JSON booleans in properties).
    boolean: Option<String>,
}

impl Target {
    fn trait_value() -> Target {
        Target {
            text: "\"value\"".into(),
            number: "number".into(),
            date: "TRY_CAST(\"value\" AS TIMESTAMP)".into(),
            list: "json_get_array(\"value\")".into(),
            exists: "TRUE".into(),
            boolean: None,
        }
    }

    fn property(key: &str) -> Target {
        let mut target = Target::json_property(key);
        // The lake keeps these properties in typed columns with the same reading (see the
        // table contract); a column is far cheaper to filter than JSON to parse.
        if NUMBER_COLUMNS.contains(&key) {
            target.number = format!("\"{key}\"");
        }
        if TEXT_COLUMNS.contains(&key) {
            target.text = format!("\"{key}\"");
        }
        target
    }

    fn json_property(key: &str) -> Target {
        let key = text(key);
        let s = format!("json_get_str(properties, {key})");
        Target {
            // Numeric strings count only when spelled as plain decimals, as in evaluation; the
            // JSON functions of some versions would also read `+5` or `inf` from a string.
            number: format!(
                "CASE WHEN {s} IS NULL THEN json_get_float(properties, {key}) \
                 WHEN regexp_like({s}, '{NUMBER_PATTERN}') THEN TRY_CAST({s} AS DOUBLE) END"
            ),
            date: format!("TRY_CAST({s} AS TIMESTAMP)"),
            list: format!("json_get_array(properties, {key})"),
            exists: format!("json_contains(properties, {key})"),
            boolean: Some(format!("json_get_bool(properties, {key})")),
            text: s,
        }
    }

    fn column(column: &str) -> Target {
        Target {
            text: column.into(),
            number: column.into(),
            date: column.into(),
            list: "NULL".into(),
            exists: format!("{column} IS NOT NULL"),
            boolean: None,
        }
    }

    fn count() -> Target {
        Target::column("COUNT(*)")
    }

    fn boolean(&self, b: bool) -> String {
        let as_text = format!("{} = '{b}'", self.text);
        match &self.boolean {
            Some(json) => format!(
                "({json} IS {} OR {as_text})",
                if b { "TRUE" } else { "FALSE" }
            ),
            None => as_text,
        }
    }
}

/// Properties the `events` table also has as DOUBLE columns: the property's
/// [`crate::values::json_number`].
const NUMBER_COLUMNS: [&str; 2] = ["revenue", "price"];
/// Properties the `events` table also has as VARCHAR columns: the property when it is a JSON
/// string, else NULL (what `json_get_str` reads).
const TEXT_COLUMNS: [&str; 2] = ["currency", "category"];

/// [`crate::values::parse_number`]'s grammar, without backslashes.
const NUMBER_PATTERN: &str = "^-?[0-9]+([.][0-9]+)?([eE][+-]?[0-9]+)?$";

/// A positive operator applied to a target; the caller negates for the complement operators.
fn predicate(
    t: &Target,
    op: Op,
    value: Option<&Value>,
    now: DateTime<Utc>,
) -> Result<String, ConditionError> {
    let operand = || {
        value
            .and_then(Operand::of)
            .ok_or_else(|| unreachable_input("value"))
    };
    Ok(match op {
        Op::Exists => t.exists.clone(),
        Op::Eq => equals(t, operand()?),
        Op::In => {
            let items = value
                .and_then(Value::as_array)
                .ok_or_else(|| unreachable_input("value"))?;
            one_of(t, items)?
        }
        Op::Gt | Op::Gte | Op::Lt | Op::Lte => {
            let symbol = match op {
                Op::Gt => ">",
                Op::Gte => ">=",
                Op::Lt => "<",
                _ => "<=",
            };
            match operand()? {
                Operand::Number(n) => format!("{} {symbol} {}", t.number, number(n)),
                Operand::Date(d) => format!("{} {symbol} {}", t.date, timestamp(d.at)),
                Operand::Text(s) => format!("{} {symbol} {}", t.text, text(s)),
                Operand::Bool(_) => return Err(unreachable_input("value")),
            }
        }
        Op::Between => {
            let ends = value
                .and_then(Value::as_array)
                .map(|a| a.iter().map(Operand::of).collect::<Vec<_>>());
            match ends.as_deref() {
                Some([Some(Operand::Number(a)), Some(Operand::Number(b))]) => {
                    format!("{} BETWEEN {} AND {}", t.number, number(*a), number(*b))
                }
                Some([Some(Operand::Date(a)), Some(Operand::Date(b))]) => format!(
                    "({} >= {} AND {})",
                    t.date,
                    timestamp(a.at),
                    upper_bound(&t.date, *b)?
                ),
                Some([Some(Operand::Text(a)), Some(Operand::Text(b))]) => {
                    format!("{} BETWEEN {} AND {}", t.text, text(a), text(b))
                }
                _ => return Err(unreachable_input("value")),
            }
        }
        Op::Contains => {
            let needle = value
                .and_then(scalar_text)
                .ok_or_else(|| unreachable_input("value"))?;
            let mut tests = vec![format!(
                "({} IS NULL AND strpos({}, {}) > 0)",
                t.list,
                t.text,
                text(&needle)
            )];
            for spelling in element_spellings(&needle) {
                tests.push(format!("array_has({}, {})", t.list, text(&spelling)));
            }
            format!("({})", tests.join(" OR "))
        }
        Op::StartsWith | Op::EndsWith => {
            let affix = value
                .and_then(scalar_text)
                .ok_or_else(|| unreachable_input("value"))?;
            let f = if op == Op::StartsWith {
                "starts_with"
            } else {
                "ends_with"
            };
            format!("{f}({}, {})", t.text, text(&affix))
        }
        Op::Before | Op::After => match operand()? {
            Operand::Date(d) => {
                let symbol = if op == Op::Before { "<" } else { ">" };
                format!("{} {symbol} {}", t.date, timestamp(d.at))
            }
            _ => return Err(unreachable_input("value")),
        },
        Op::WithinLast | Op::NotWithinLast => {
            let start = look_back(value, now).ok_or_else(|| unreachable_input("value"))?;
            let symbol = if op == Op::WithinLast { ">=" } else { "<" };
            format!("{} {symbol} {}", t.date, timestamp(start))
        }
        Op::IsTrue => t.boolean(true),
        Op::IsFalse => t.boolean(false),
        Op::Ne | Op::NotContains | Op::NotIn | Op::NotExists => {
            return Err(unreachable_input("op"));
        }
    })
}

/// `in`: one `IN (…)` list per reading (text, number, date), whatever the list's length. A list
/// is one flat node to parse and plan, where the `OR` of a thousand comparisons nested a
/// thousand deep, and DataFusion matches a literal list with a hash set.
fn one_of(t: &Target, items: &[Value]) -> Result<String, ConditionError> {
    let (mut texts, mut numbers, mut dates) = (Vec::new(), Vec::new(), Vec::new());
    let mut booleans = [false; 2];
    for item in items {
        match Operand::of(item).ok_or_else(|| unreachable_input("value"))? {
            Operand::Text(s) => texts.push(text(s)),
            Operand::Number(n) => numbers.push(number(n)),
            Operand::Date(d) => dates.push(timestamp(d.at)),
            Operand::Bool(b) => booleans[usize::from(b)] = true,
        }
    }
    let mut tests = Vec::new();
    for (expr, literals) in [(&t.text, texts), (&t.number, numbers), (&t.date, dates)] {
        match literals.as_slice() {
            [] => {}
            [one] => tests.push(format!("{expr} = {one}")),
            many => tests.push(format!("{expr} IN ({})", many.join(", "))),
        }
    }
    for b in [false, true] {
        if booleans[usize::from(b)] {
            tests.push(t.boolean(b));
        }
    }
    Ok(format!("({})", tests.join(" OR ")))
}

fn equals(t: &Target, operand: Operand) -> String {
    match operand {
        Operand::Number(n) => format!("{} = {}", t.number, number(n)),
        Operand::Date(d) => format!("{} = {}", t.date, timestamp(d.at)),
        Operand::Text(s) => format!("{} = {}", t.text, text(s)),
        Operand::Bool(b) => t.boolean(b),
    }
}

/// Validation rules out everything that reaches this; it stays an error, not a panic, in case
/// the two ever drift apart.
fn unreachable_input(what: &str) -> ConditionError {
    ConditionError::Invalid {
        path: what.to_string(),
        message: "cannot be compiled to SQL".to_string(),
    }
}

/// A SQL string literal for any text.
pub(crate) fn text(s: &str) -> String {
    let quoted = |part: &str| format!("'{}'", part.replace('\'', "''"));
    if !s.contains('\\') {
        return quoted(s);
    }
    let parts: Vec<String> = s.split('\\').map(quoted).collect();
    format!("({})", parts.join(" || chr(92) || "))
}

/// A finite number as a SQL literal. `{:?}` keeps a decimal point or exponent (`5000.0`,
/// `1e300`), so the literal is a DOUBLE and never an overflowing integer.
fn number(n: f64) -> String {
    format!("{n:?}")
}

fn timestamp(t: DateTime<Utc>) -> String {
    format!(
        "TIMESTAMP '{}'",
        t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    )
}

fn date(t: DateTime<Utc>) -> String {
    format!("DATE '{}'", t.format("%Y-%m-%d"))
}

fn hours(h: u32) -> String {
    format!("INTERVAL '{h}' HOUR")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition::{MAX_COST, MAX_DEPTH, MAX_FILTERS, MAX_LIST, MAX_NODES};
    use chrono::TimeZone;
    use serde_json::json;
    use sqlparser::dialect::GenericDialect;
    use sqlparser::keywords::Keyword;
    use sqlparser::parser::Parser;
    use sqlparser::tokenizer::{Token, Tokenizer};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap()
    }

    fn sql(v: Value) -> String {
        let cond: Condition = serde_json::from_value(v).unwrap();
        to_sql(&cond, now()).unwrap()
    }

    #[test]
    fn quotes_are_doubled_and_backslashes_spelled_out() {
        assert_eq!(text("plain"), "'plain'");
        assert_eq!(text("O'Hare"), "'O''Hare'");
        assert_eq!(
            text("'; DROP TABLE profiles; --"),
            "'''; DROP TABLE profiles; --'"
        );
        assert_eq!(text(r"a\'b"), "('a' || chr(92) || '''b')");
        assert_eq!(text(r"\"), "('' || chr(92) || '')");
        assert_eq!(text("上海"), "'上海'");
    }

    #[test]
    fn numbers_and_timestamps_render_as_typed_literals() {
        assert_eq!(number(5000.0), "5000.0");
        assert_eq!(number(-0.5), "-0.5");
        assert_eq!(number(1e300), "1e300");
        assert_eq!(timestamp(now()), "TIMESTAMP '2026-03-15T12:00:00Z'");
        let frac = now() + TimeDelta::milliseconds(250);
        assert_eq!(timestamp(frac), "TIMESTAMP '2026-03-15T12:00:00.250Z'");
    }

    #[test]
    fn trait_comparisons_read_the_matching_column() {
        let t = |op: &str, value: Value| {
            sql(json!({"type":"trait","key":"k","op":op,"value":value}))
                .strip_prefix(r#"SELECT customer_id FROM profile_traits WHERE "key" = 'k' AND "#)
                .unwrap()
                .to_string()
        };
        assert_eq!(t("eq", json!("上海")), r#""value" = '上海'"#);
        assert_eq!(t("eq", json!("42")), "number = 42.0");
        assert_eq!(t("eq", json!(true)), r#""value" = 'true'"#);
        assert_eq!(
            t("eq", json!("2026-01-01")),
            r#"TRY_CAST("value" AS TIMESTAMP) = TIMESTAMP '2026-01-01T00:00:00Z'"#
        );
        assert_eq!(t("gt", json!(5)), "number > 5.0");
        assert_eq!(t("lte", json!("m")), r#""value" <= 'm'"#);
        assert_eq!(
            t("in", json!(["a", 2])),
            r#"("value" = 'a' OR number = 2.0)"#
        );
        assert_eq!(t("between", json!([1, 2.5])), "number BETWEEN 1.0 AND 2.5");
        assert_eq!(
            t("between", json!(["a", "c"])),
            r#""value" BETWEEN 'a' AND 'c'"#
        );
        assert_eq!(
            t("between", json!(["2026-01-01", "2026-01-31"])),
            r#"(TRY_CAST("value" AS TIMESTAMP) >= TIMESTAMP '2026-01-01T00:00:00Z' AND TRY_CAST("value" AS TIMESTAMP) < TIMESTAMP '2026-02-01T00:00:00Z')"#
        );
        assert_eq!(
            t("contains", json!("vip")),
            r#"((json_get_array("value") IS NULL AND strpos("value", 'vip') > 0) OR array_has(json_get_array("value"), '"vip"'))"#
        );
        assert_eq!(
            t("contains", json!(5)),
            r#"((json_get_array("value") IS NULL AND strpos("value", '5') > 0) OR array_has(json_get_array("value"), '"5"') OR array_has(json_get_array("value"), '5'))"#
        );
        assert_eq!(
            t("starts_with", json!("+86")),
            r#"starts_with("value", '+86')"#
        );
        assert_eq!(t("ends_with", json!(".cn")), r#"ends_with("value", '.cn')"#);
        assert_eq!(
            t("before", json!("2026-01-01T08:00:00+08:00")),
            r#"TRY_CAST("value" AS TIMESTAMP) < TIMESTAMP '2026-01-01T00:00:00Z'"#
        );
        assert_eq!(
            t("after", json!("2026-01-01")),
            r#"TRY_CAST("value" AS TIMESTAMP) > TIMESTAMP '2026-01-01T00:00:00Z'"#
        );
        assert_eq!(
            t("within_last", json!({"days": 7})),
            r#"TRY_CAST("value" AS TIMESTAMP) >= TIMESTAMP '2026-03-08T12:00:00Z'"#
        );
        assert_eq!(
            t("not_within_last", json!({"days": 7})),
            r#"TRY_CAST("value" AS TIMESTAMP) < TIMESTAMP '2026-03-08T12:00:00Z'"#
        );
    }

    #[test]
    fn trait_presence_and_booleans_need_no_value() {
        assert_eq!(
            sql(json!({"type":"trait","key":"email","op":"exists"})),
            r#"SELECT customer_id FROM profile_traits WHERE "key" = 'email'"#
        );
        assert_eq!(
            sql(json!({"type":"trait","key":"vip","op":"is_false"})),
            r#"SELECT customer_id FROM profile_traits WHERE "key" = 'vip' AND "value" = 'false'"#
        );
    }

    #[test]
    fn complement_operators_subtract_from_all_profiles() {
        assert_eq!(
            sql(json!({"type":"trait","key":"city","op":"ne","value":"上海"})),
            r#"SELECT customer_id FROM profiles EXCEPT (SELECT customer_id FROM profile_traits WHERE "key" = 'city' AND "value" = '上海')"#
        );
        assert_eq!(
            sql(json!({"type":"trait","key":"email","op":"not_exists"})),
            r#"SELECT customer_id FROM profiles EXCEPT (SELECT customer_id FROM profile_traits WHERE "key" = 'email')"#
        );
        assert_eq!(
            sql(
                json!({"type":"computed","key":"average_order_value","op":"not_in","value":[1, 2]})
            ),
            "SELECT customer_id FROM profiles EXCEPT (SELECT customer_id FROM profiles WHERE (average_order_value IN (1.0, 2.0)))"
        );
    }

    #[test]
    fn computed_traits_read_profiles_columns() {
        assert_eq!(
            sql(json!({"type":"computed","key":"revenue_30d","op":"gt","value":5000})),
            "SELECT customer_id FROM profiles WHERE revenue_30d > 5000.0"
        );
        assert_eq!(
            sql(
                json!({"type":"computed","key":"last_seen","op":"within_last","value":{"days":30}})
            ),
            "SELECT customer_id FROM profiles WHERE last_seen >= TIMESTAMP '2026-02-13T12:00:00Z'"
        );
        assert_eq!(
            sql(json!({"type":"computed","key":"last_order_at","op":"exists"})),
            "SELECT customer_id FROM profiles WHERE last_order_at IS NOT NULL"
        );
    }

    #[test]
    fn event_count_traits_count_events_and_include_zero_when_it_matches() {
        assert_eq!(
            sql(
                json!({"type":"computed","key":"event_counts.Product Viewed","op":"gte","value":3})
            ),
            "SELECT customer_id FROM events WHERE name = 'Product Viewed' GROUP BY customer_id HAVING COUNT(*) >= 3.0"
        );
        assert_eq!(
            sql(json!({"type":"computed","key":"event_counts.Product Viewed","op":"lt","value":3})),
            "SELECT customer_id FROM profiles EXCEPT (SELECT customer_id FROM events WHERE name = 'Product Viewed' GROUP BY customer_id HAVING NOT (COUNT(*) < 3.0))"
        );
    }

    #[test]
    fn event_conditions_filter_count_and_window() {
        assert_eq!(
            sql(json!({"type":"event","name":"Order Completed",
                "where":[{"property":"revenue","op":"gt","value":100},
                         {"property":"coupon","op":"not_exists"}],
                "count":{"op":"gte","value":2},"window":{"last_days":30}})),
            "SELECT customer_id FROM events WHERE name = 'Order Completed' \
             AND \"timestamp\" >= TIMESTAMP '2026-02-13T12:00:00Z' AND \"date\" >= DATE '2026-02-13' \
             AND \"revenue\" > 100.0 \
             AND (json_contains(properties, 'coupon')) IS NOT TRUE \
             GROUP BY customer_id HAVING COUNT(*) >= 2"
        );
        // A property without a column is read from the JSON, with the same numeric rule.
        assert_eq!(
            sql(json!({"type":"event","name":"Order Completed",
                "where":[{"property":"tax","op":"gt","value":100}]})),
            "SELECT customer_id FROM events WHERE name = 'Order Completed' \
             AND CASE WHEN json_get_str(properties, 'tax') IS NULL THEN json_get_float(properties, 'tax') \
             WHEN regexp_like(json_get_str(properties, 'tax'), '^-?[0-9]+([.][0-9]+)?([eE][+-]?[0-9]+)?$') \
             THEN TRY_CAST(json_get_str(properties, 'tax') AS DOUBLE) END > 100.0 \
             GROUP BY customer_id HAVING COUNT(*) >= 1"
        );
        // Text columns serve text readings; other readings stay on the JSON.
        let out = sql(json!({"type":"event","name":"v",
            "where":[{"property":"category","op":"eq","value":"shoes"},
                     {"property":"category","op":"exists"}]}));
        assert!(out.contains("\"category\" = 'shoes'"), "{out}");
        assert!(
            out.contains("json_contains(properties, 'category')"),
            "{out}"
        );
    }

    #[test]
    fn event_windows_render_their_bounds() {
        assert_eq!(
            sql(json!({"type":"event","name":"x","window":{"last_hours":6}})),
            "SELECT customer_id FROM events WHERE name = 'x' AND \"timestamp\" >= TIMESTAMP '2026-03-15T06:00:00Z' AND \"date\" >= DATE '2026-03-15' GROUP BY customer_id HAVING COUNT(*) >= 1"
        );
        assert_eq!(
            sql(
                json!({"type":"event","name":"x","window":{"between":["2026-01-01","2026-01-31T18:00:00Z"]}})
            ),
            "SELECT customer_id FROM events WHERE name = 'x' AND \"timestamp\" >= TIMESTAMP '2026-01-01T00:00:00Z' AND \"date\" >= DATE '2026-01-01' AND \"timestamp\" <= TIMESTAMP '2026-01-31T18:00:00Z' AND \"date\" <= DATE '2026-01-31' GROUP BY customer_id HAVING COUNT(*) >= 1"
        );
    }

    #[test]
    fn did_not_perform_takes_everyone_without_a_matching_event() {
        assert_eq!(
            sql(json!({"type":"event","name":"Order Completed","count":{"op":"eq","value":0}})),
            "SELECT customer_id FROM profiles EXCEPT (SELECT customer_id FROM events WHERE name = 'Order Completed' GROUP BY customer_id HAVING NOT (COUNT(*) = 0))"
        );
    }

    #[test]
    fn property_booleans_accept_json_and_text_forms() {
        let out =
            sql(json!({"type":"event","name":"x","where":[{"property":"gift","op":"is_true"}]}));
        assert!(out.contains("(json_get_bool(properties, 'gift') IS TRUE OR json_get_str(properties, 'gift') = 'true')"), "{out}");
    }

    #[test]
    fn sequences_join_events_within_an_interval() {
        assert_eq!(
            sql(
                json!({"type":"followed_by","first":"Signed Up","then":"Logged In","within_hours":24})
            ),
            "SELECT DISTINCT f.customer_id FROM events AS f JOIN events AS t ON t.customer_id = f.customer_id \
             WHERE f.name = 'Signed Up' AND t.name = 'Logged In' AND t.\"timestamp\" > f.\"timestamp\" \
             AND t.\"timestamp\" <= f.\"timestamp\" + INTERVAL '24' HOUR"
        );
        assert_eq!(
            sql(
                json!({"type":"not_followed_by","first":"Signed Up","then":"Logged In","within_hours":24})
            ),
            "SELECT f.customer_id FROM (SELECT customer_id, MAX(\"timestamp\") AS first_at FROM events \
             WHERE name = 'Signed Up' AND \"timestamp\" <= TIMESTAMP '2026-03-14T12:00:00Z' GROUP BY customer_id) AS f \
             LEFT JOIN events AS t ON t.customer_id = f.customer_id AND t.name = 'Logged In' \
             AND t.\"timestamp\" > f.first_at AND t.\"timestamp\" <= f.first_at + INTERVAL '24' HOUR \
             WHERE t.customer_id IS NULL"
        );
    }

    #[test]
    fn in_lists_compile_to_one_flat_list_per_reading() {
        assert_eq!(
            sql(json!({"type":"trait","key":"k","op":"in",
                "value":["a", 2, "b", 3.5, "2026-01-01", true, true]})),
            "SELECT customer_id FROM profile_traits WHERE \"key\" = 'k' AND \
             (\"value\" IN ('a', 'b') OR number IN (2.0, 3.5) \
             OR TRY_CAST(\"value\" AS TIMESTAMP) = TIMESTAMP '2026-01-01T00:00:00Z' \
             OR \"value\" = 'true')"
        );
        // A full list is as shallow as a short one.
        let values: Vec<Value> = (0..MAX_LIST)
            .map(|i| match i % 3 {
                0 => json!(i),
                1 => json!(format!("v{i}")),
                _ => json!(format!("2026-01-{:02}", i % 28 + 1)),
            })
            .collect();
        let out = sql(json!({"type":"trait","key":"k","op":"in","value":values}));
        assert_eq!(nesting(&out), (2, 2));
    }

    #[test]
    fn chains_group_operands_a_few_at_a_time() {
        let parts = |n: usize| (0..n).map(|i| format!("p{i}")).collect::<Vec<_>>();
        assert_eq!(chain(parts(1), "AND"), "p0");
        assert_eq!(chain(parts(8), "OR"), parts(8).join(" OR "));
        assert_eq!(
            chain(parts(10), "AND"),
            "(p0 AND p1 AND p2 AND p3 AND p4 AND p5 AND p6 AND p7) AND (p8 AND p9)"
        );
        assert_eq!(
            chain(parts(17), "AND"),
            "(p0 AND p1 AND p2 AND p3 AND p4 AND p5 AND p6 AND p7) \
             AND (p8 AND p9 AND p10 AND p11 AND p12 AND p13 AND p14 AND p15) AND p16"
        );
        for n in [9, 64, 65, 500, 5_000] {
            let out = chain(parts(n), "AND");
            // Every operand once, in order; the grouping only adds parentheses.
            assert_eq!(out.replace(['(', ')'], ""), parts(n).join(" AND "));
            let (deepest, longest) = nesting(&out);
            assert!(deepest <= n.ilog(CHAIN) as usize, "{n}: {deepest}");
            assert!(longest < CHAIN, "{n}: {longest}");
        }
    }

    /// How a query's text nests: the deepest parenthesis level, and the most `AND`, `OR` and
    /// set operators inside one pair of parentheses. Parsers read such a run as a left-deep
    /// tree, one level per operand, so between them the two bound the depth of what the
    /// planner walks.
    fn nesting(sql: &str) -> (usize, usize) {
        let tokens = Tokenizer::new(&GenericDialect {}, sql)
            .tokenize()
            .unwrap_or_else(|e| panic!("{e}: {sql}"));
        let mut runs = vec![0usize];
        let (mut deepest, mut longest) = (0, 0);
        for token in tokens {
            match token {
                Token::LParen => {
                    runs.push(0);
                    deepest = deepest.max(runs.len() - 1);
                }
                Token::RParen => {
                    runs.pop();
                }
                Token::Word(w)
                    if matches!(
                        w.keyword,
                        Keyword::AND
                            | Keyword::OR
                            | Keyword::UNION
                            | Keyword::INTERSECT
                            | Keyword::EXCEPT
                    ) =>
                {
                    if let Some(run) = runs.last_mut() {
                        *run += 1;
                        longest = longest.max(*run);
                    }
                }
                _ => {}
            }
        }
        (deepest, longest)
    }

    /// Parses a query as the engine wraps it, with `sqlparser`'s default recursion limit of 50
    /// levels, which DataFusion's parser (the same `sqlparser`) also applies: grouping must not
    /// trade the planner's stack for the parser's limit.
    fn parse_as_run(inner: &str) -> Vec<sqlparser::ast::Statement> {
        let wrapped = format!(
            "WITH events AS (SELECT * FROM events WHERE customer_id IS NOT NULL) \
             SELECT DISTINCT customer_id FROM ({inner}) AS members WHERE customer_id IS NOT NULL"
        );
        Parser::parse_sql(&GenericDialect {}, &wrapped)
            .unwrap_or_else(|e| panic!("{e} in a query of {} bytes", inner.len()))
    }

    /// The depth of the syntax tree the parser builds, told from the indentation of its
    /// pretty-printed form: what the planner then walks recursively.
    fn syntax_depth(inner: &str) -> usize {
        format!("{:#?}", parse_as_run(inner))
            .lines()
            .map(|line| line.len() - line.trim_start().len())
            .max()
            .unwrap_or(0)
            / 4
    }

    #[test]
    fn the_largest_conditions_compile_to_shallow_sql() {
        let segment = json!({"type":"in_segment","segment":"s"});
        let row_test = json!({"type":"computed","key":"orders","op":"gt","value":1});
        let event = |property: &str| {
            let filters: Vec<Value> = (0..MAX_FILTERS)
                .map(|i| json!({"property":property,"op":"ne","value":i}))
                .collect();
            json!({"type":"event","name":"x","where":filters,"window":{"last_days":7}})
        };
        // Room is left for the `not`s that nest each shape as deep as validation allows.
        let children = MAX_NODES - MAX_DEPTH;
        let events_in_budget = (MAX_COST - MAX_DEPTH) / (MAX_FILTERS + 1);
        let mut row_and_others = vec![segment.clone(); children - 1];
        row_and_others.push(row_test.clone());
        let shapes = [
            // UNION of every child.
            (
                children,
                json!({"type":"or","conditions":vec![segment.clone(); children]}),
            ),
            // INTERSECT of every child.
            (
                children,
                json!({"type":"and","conditions":vec![segment.clone(); children]}),
            ),
            // One profiles scan: AND of its row tests.
            (
                children,
                json!({"type":"and","conditions":vec![row_test.clone(); children]}),
            ),
            // One profiles scan: AND of `customer_id IN (…)` semi-joins.
            (children, json!({"type":"and","conditions":row_and_others})),
            // AND of an event's filters, on a JSON property.
            (MAX_FILTERS, event("tax")),
            // As many full events as the budget allows; filters on a column keep the text
            // quick to parse.
            (
                events_in_budget * MAX_FILTERS,
                json!({"type":"or","conditions":vec![event("revenue"); events_in_budget]}),
            ),
        ];
        let small = syntax_depth(&sql(json!({"type":"or","conditions":[segment, row_test]})));
        for (n, shape) in shapes {
            let cond = Condition::from_value(shape.clone()).unwrap_or_else(|e| panic!("{e}"));
            let out = to_sql(&cond, now()).unwrap();
            let (deepest, longest) = nesting(&out);
            // A chain of 8 operands, plus the window's three ANDs and BETWEEN's one.
            assert!(longest <= 12, "n = {n}: a run of {longest} operators");
            let log2 = n.next_power_of_two().ilog2() as usize;
            assert!(deepest <= 2 * log2 + 4, "n = {n}: {deepest} levels");
            // Chained flat, the first shape's 468 children parsed 487 levels deep.
            let depth = syntax_depth(&out);
            assert!(
                depth <= small + 40,
                "n = {n}: {depth} levels, {small} for two"
            );

            let mut nested = shape;
            while Condition::from_value(json!({"type":"not","condition":nested.clone()})).is_ok() {
                nested = json!({"type":"not","condition":nested});
            }
            let nested = Condition::from_value(nested).unwrap_or_else(|e| panic!("{e}"));
            parse_as_run(&to_sql(&nested, now()).unwrap());
        }
    }

    #[test]
    fn booleans_become_set_operations() {
        let a = json!({"type":"in_segment","segment":"a"});
        let b = json!({"type":"in_segment","segment":"b"});
        let a_sql = "SELECT DISTINCT customer_id FROM memberships WHERE segment = 'a'";
        let b_sql = "SELECT DISTINCT customer_id FROM memberships WHERE segment = 'b'";
        assert_eq!(sql(a.clone()), a_sql);
        assert_eq!(
            sql(json!({"type":"and","conditions":[a, b]})),
            format!("({a_sql}) INTERSECT ({b_sql})")
        );
        assert_eq!(
            sql(json!({"type":"or","conditions":[a, {"type":"not","condition":b}]})),
            format!("({a_sql}) UNION (SELECT customer_id FROM profiles EXCEPT ({b_sql}))")
        );
        assert_eq!(sql(json!({"type":"and","conditions":[a]})), a_sql);
        assert_eq!(sql(json!({"type":"and","conditions":[]})), EVERYONE);
        assert_eq!(sql(json!({"type":"or","conditions":[]})), NOBODY);
    }

    #[test]
    fn invalid_conditions_are_not_compiled() {
        let cond: Condition =
            serde_json::from_value(json!({"type":"trait","key":"k","op":"gt","value":true}))
                .unwrap();
        assert!(matches!(
            to_sql(&cond, now()),
            Err(ConditionError::Invalid { .. })
        ));
    }
}
