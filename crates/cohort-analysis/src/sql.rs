//! SQL fragments over the lake's tables. Every value that comes from a
//! request goes through [`lit`] (string literals) or is formatted from a typed
//! value (dates, numbers); the events table is always aliased `e`.

use chrono::NaiveDate;
use serde_json::Value;

use crate::AnalysisError;
use crate::common::{Breakdown, EventField, EventSpec, Interval, PropertyFilter, path_keys};

/// A SQL string literal. Standard SQL escapes a quote by doubling it, and
/// DataFusion's default dialect treats backslashes as ordinary characters,
/// so this is the whole escaping.
pub(crate) fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub(crate) fn date_lit(d: NaiveDate) -> String {
    format!("DATE '{}'", d.format("%Y-%m-%d"))
}

/// A finite number as a DOUBLE literal (`{:?}` keeps every digit and uses an
/// exponent the SQL parser reads).
pub(crate) fn float_lit(x: f64) -> String {
    format!("CAST({x:?} AS DOUBLE)")
}

/// The UTC bucket start of the events' timestamp, as a DATE.
pub(crate) fn bucket(interval: Interval) -> String {
    bucket_of(interval, "e.\"timestamp\"")
}

/// The UTC bucket start of a TIMESTAMP expression, as a DATE.
pub(crate) fn bucket_of(interval: Interval, timestamp: &str) -> String {
    match interval {
        Interval::Day => format!("CAST({timestamp} AS DATE)"),
        other => format!("CAST(date_trunc('{}', {timestamp}) AS DATE)", other.unit()),
    }
}

/// Events whose UTC day is in `[from, to)`: the `date` partition column is
/// the UTC day of `timestamp`, so this is exact and prunes whole directories.
pub(crate) fn in_days(from: NaiveDate, to: NaiveDate) -> String {
    format!("e.date >= {} AND e.date < {}", date_lit(from), date_lit(to))
}

/// The path's elements as SQL string literals, after the column: `, 'a', 'b'`.
fn path_args(field: &EventField) -> String {
    field
        .keys()
        .iter()
        .map(|k| format!(", {}", lit(k)))
        .collect()
}

/// The value at a path as text (a JSON string decoded, any other value as its
/// JSON text; NULL when missing or JSON `null`).
fn text_at(field: &EventField) -> String {
    format!("json_as_text({}{})", field.column(), path_args(field))
}

fn filter(f: &PropertyFilter) -> Result<String, AnalysisError> {
    let field = f.field()?;
    let (column, path) = (field.column(), path_args(&field));
    Ok(match &f.equals {
        Value::String(s) => format!("{} = {}", text_at(&field), lit(s)),
        Value::Bool(b) => format!("json_get_bool({column}{path}) = {b}"),
        Value::Number(n) => match n.as_f64() {
            Some(x) if x.is_finite() => {
                format!("json_get_float({column}{path}) = {}", float_lit(x))
            }
            // Validation rejects these; never match rather than fail.
            _ => "FALSE".to_owned(),
        },
        _ => "FALSE".to_owned(),
    })
}

/// `(e.event = '…' AND <filters>)`.
pub(crate) fn matches(spec: &EventSpec) -> Result<String, AnalysisError> {
    let mut parts = vec![format!("e.event = {}", lit(&spec.event))];
    for f in &spec.filters {
        parts.push(filter(f)?);
    }
    Ok(format!("({})", parts.join(" AND ")))
}

/// All filters, each prefixed with ` AND `.
pub(crate) fn and_filters(filters: &[PropertyFilter]) -> Result<String, AnalysisError> {
    filters
        .iter()
        .map(|f| Ok(format!(" AND {}", filter(f)?)))
        .collect()
}

/// ` AND e.customer_id IN (members)` when a segment is given.
pub(crate) fn and_segment(segment: Option<&str>) -> String {
    match segment {
        Some(s) => format!(
            " AND e.customer_id IN (SELECT customer_id FROM memberships WHERE segment = {})",
            lit(s)
        ),
        None => String::new(),
    }
}

/// The expression of a breakdown's value and the join it needs (empty for
/// event properties and context). The trait join keeps one value per
/// customer.
pub(crate) fn breakdown(b: Option<&Breakdown>) -> Result<(String, String), AnalysisError> {
    let path = |field: &str, path: &str| {
        path_keys(path).map_err(|message| AnalysisError::invalid(field, message))
    };
    Ok(match b {
        None => ("CAST(NULL AS VARCHAR)".to_owned(), String::new()),
        Some(Breakdown::Property(p)) => (
            text_at(&EventField::Property(path("breakdown.property", p)?)),
            String::new(),
        ),
        Some(Breakdown::Context(c)) => (
            text_at(&EventField::Context(path("breakdown.context", c)?)),
            String::new(),
        ),
        Some(Breakdown::Trait(t)) => (
            "bt.value".to_owned(),
            format!(
                " LEFT JOIN (SELECT customer_id, min(value) AS value FROM profile_traits \
                 WHERE key = {} GROUP BY customer_id) bt ON bt.customer_id = e.customer_id",
                lit(t)
            ),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_double_quotes_only() {
        assert_eq!(lit("it's"), "'it''s'");
        assert_eq!(lit("a\\'b"), "'a\\''b'");
        assert_eq!(float_lit(0.1), "CAST(0.1 AS DOUBLE)");
        assert_eq!(float_lit(42.0), "CAST(42.0 AS DOUBLE)");
    }

    #[test]
    fn paths_become_one_literal_per_key() -> Result<(), AnalysisError> {
        let f = PropertyFilter::on_context(r"device.ty'pe\.x", Value::String("it's".into()));
        assert_eq!(
            filter(&f)?,
            "json_as_text(e.context, 'device', 'ty''pe.x') = 'it''s'"
        );
        let f = PropertyFilter::on_property("a.b", Value::from(2));
        assert_eq!(
            filter(&f)?,
            "json_get_float(e.properties, 'a', 'b') = CAST(2.0 AS DOUBLE)"
        );
        let (g, join) = breakdown(Some(&Breakdown::Property(r"utm\.source".into())))?;
        assert_eq!(
            (g.as_str(), join.as_str()),
            ("json_as_text(e.properties, 'utm.source')", "")
        );
        Ok(())
    }
}
