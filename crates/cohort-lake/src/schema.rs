//! Arrow schemas of the lake and of the state tables, and the conversion of
//! [`LakeEvent`]s into Arrow record batches.

use std::sync::{Arc, LazyLock};

use chrono::{DateTime, NaiveDate, Utc};
use datafusion::arrow::array::{
    ArrayRef, Date32Builder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde_json::Value;

use crate::{LakeError, LakeEvent};

/// Time zone stored with every timestamp column: readers (Spark, DuckDB,
/// pandas) then see instants, not wall-clock times.
pub(crate) const UTC: &str = "UTC";

/// The partition column, taken from the directory name `date=YYYY-MM-DD`.
pub(crate) const DATE_COLUMN: &str = "date";

/// Arrow type of every timestamp in the lake and the state tables:
/// microseconds, UTC (Spark reads nanosecond Parquet timestamps as integers).
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
}

static EVENT_FILE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let ts = timestamp_type();
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        Field::new("source_id", DataType::Int64, false),
        Field::new("message_id", DataType::Utf8, false),
        Field::new("customer_id", DataType::Int64, true),
        Field::new("type", DataType::Utf8, false),
        Field::new("event", DataType::Utf8, false),
        Field::new("timestamp", ts.clone(), false),
        Field::new("received_at", ts, false),
        Field::new("user_id", DataType::Utf8, true),
        Field::new("anonymous_id", DataType::Utf8, true),
        Field::new("properties", DataType::Utf8, true),
        Field::new("context", DataType::Utf8, true),
        Field::new("traits", DataType::Utf8, true),
        Field::new("revenue", DataType::Float64, true),
        Field::new("price", DataType::Float64, true),
        Field::new("quantity", DataType::Int64, true),
        Field::new("currency", DataType::Utf8, true),
        Field::new("product_id", DataType::Utf8, true),
        Field::new("category", DataType::Utf8, true),
        Field::new("order_id", DataType::Utf8, true),
    ]))
});

/// Schema of the Parquet files (the `date` partition lives in the directory
/// name, as Hive, Spark and DuckDB expect, so it is not stored in the file).
pub fn event_file_schema() -> SchemaRef {
    Arc::clone(&EVENT_FILE_SCHEMA)
}

/// Schema of the SQL table `events`: the file columns plus `date DATE`.
pub fn events_table_schema() -> SchemaRef {
    let mut fields: Vec<Field> = EVENT_FILE_SCHEMA
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    // Non-null to match what the listing table derives for partition columns,
    // so the lake and the recent rows union without a schema mismatch.
    fields.push(Field::new(DATE_COLUMN, DataType::Date32, false));
    Arc::new(Schema::new(fields))
}

fn nullable(name: &str, data_type: DataType) -> Field {
    Field::new(name, data_type, true)
}

/// `profiles(customer_id BIGINT, created_at TIMESTAMP, first_seen TIMESTAMP,
/// last_seen TIMESTAMP, event_count BIGINT, orders BIGINT, total_revenue DOUBLE,
/// revenue_30d DOUBLE, orders_30d BIGINT, last_order_at TIMESTAMP,
/// average_order_value DOUBLE)`.
pub fn profiles_schema() -> SchemaRef {
    let ts = timestamp_type();
    Arc::new(Schema::new(vec![
        nullable("customer_id", DataType::Int64),
        nullable("created_at", ts.clone()),
        nullable("first_seen", ts.clone()),
        nullable("last_seen", ts.clone()),
        nullable("event_count", DataType::Int64),
        nullable("orders", DataType::Int64),
        nullable("total_revenue", DataType::Float64),
        nullable("revenue_30d", DataType::Float64),
        nullable("orders_30d", DataType::Int64),
        nullable("last_order_at", ts),
        nullable("average_order_value", DataType::Float64),
    ]))
}

/// `profile_traits(customer_id BIGINT, key VARCHAR, value VARCHAR, number DOUBLE)`.
pub fn profile_traits_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        nullable("customer_id", DataType::Int64),
        nullable("key", DataType::Utf8),
        nullable("value", DataType::Utf8),
        nullable("number", DataType::Float64),
    ]))
}

/// `identities(customer_id BIGINT, kind VARCHAR, value VARCHAR, first_seen TIMESTAMP)`.
pub fn identities_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        nullable("customer_id", DataType::Int64),
        nullable("kind", DataType::Utf8),
        nullable("value", DataType::Utf8),
        nullable("first_seen", timestamp_type()),
    ]))
}

/// `memberships(segment VARCHAR, customer_id BIGINT, entered_at TIMESTAMP)`.
pub fn memberships_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        nullable("segment", DataType::Utf8),
        nullable("customer_id", DataType::Int64),
        nullable("entered_at", timestamp_type()),
    ]))
}

/// `segment_changes(id BIGINT, segment VARCHAR, kind VARCHAR, customer_id BIGINT,
/// change VARCHAR, at TIMESTAMP, reason VARCHAR)`: entries (`change = 'entered'`) and exits.
pub fn segment_changes_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        nullable("id", DataType::Int64),
        nullable("segment", DataType::Utf8),
        nullable("kind", DataType::Utf8),
        nullable("customer_id", DataType::Int64),
        nullable("change", DataType::Utf8),
        nullable("at", timestamp_type()),
        nullable("reason", DataType::Utf8),
    ]))
}

/// The UTC calendar day an event belongs to (its partition).
pub(crate) fn event_date(event: &LakeEvent) -> NaiveDate {
    event.timestamp.date_naive()
}

fn micros(t: &DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// Days since 1970-01-01, Arrow's `Date32` representation.
pub(crate) fn date32(date: NaiveDate) -> i32 {
    let days = date.signed_duration_since(NaiveDate::default()).num_days();
    // NaiveDate spans ±262,000 years, which always fits in i32 days.
    i32::try_from(days).unwrap_or(i32::MAX)
}

/// Promoted properties are typed leniently: SDKs send `"9.99"` as often as `9.99`.
/// The numeric reading segment conditions use too, so that a condition on
/// `properties.revenue` can be compiled to the `revenue` column.
fn prop_f64(props: &Value, key: &str) -> Option<f64> {
    props.get(key).and_then(cohort_core::number::json_number)
}

fn prop_i64(props: &Value, key: &str) -> Option<i64> {
    fn integral(f: f64) -> Option<i64> {
        // Only whole numbers that survive the round trip: 2.5 items is not a quantity.
        #[allow(clippy::cast_possible_truncation)]
        let i = f as i64;
        (f.fract() == 0.0 && f.is_finite() && (i as f64) == f).then_some(i)
    }
    match props.get(key)? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().and_then(integral)),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>()
                .ok()
                .or_else(|| s.parse::<f64>().ok().and_then(integral))
        }
        _ => None,
    }
}

/// Identifiers arrive as strings or numbers; both become text.
fn prop_id(props: &Value, key: &str) -> Option<String> {
    match props.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn prop_str(props: &Value, key: &str) -> Option<String> {
    match props.get(key)? {
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn json_text(v: &Value) -> Option<String> {
    (!v.is_null()).then(|| v.to_string())
}

/// Builds a batch in the file schema, or in the table schema (with `date`)
/// when `with_date` is set.
pub(crate) fn events_to_batch(
    events: &[&LakeEvent],
    with_date: bool,
) -> Result<RecordBatch, LakeError> {
    let n = events.len();
    let mut seq = Int64Builder::with_capacity(n);
    let mut source_id = Int64Builder::with_capacity(n);
    let mut message_id = StringBuilder::new();
    let mut customer_id = Int64Builder::with_capacity(n);
    let mut kind = StringBuilder::new();
    let mut name = StringBuilder::new();
    let mut timestamp = TimestampMicrosecondBuilder::with_capacity(n).with_timezone(UTC);
    let mut received_at = TimestampMicrosecondBuilder::with_capacity(n).with_timezone(UTC);
    let mut user_id = StringBuilder::new();
    let mut anonymous_id = StringBuilder::new();
    let mut properties = StringBuilder::new();
    let mut context = StringBuilder::new();
    let mut traits = StringBuilder::new();
    let mut revenue = Float64Builder::with_capacity(n);
    let mut price = Float64Builder::with_capacity(n);
    let mut quantity = Int64Builder::with_capacity(n);
    let mut currency = StringBuilder::new();
    let mut product_id = StringBuilder::new();
    let mut category = StringBuilder::new();
    let mut order_id = StringBuilder::new();
    let mut date = Date32Builder::with_capacity(n);

    for e in events {
        seq.append_value(e.seq);
        source_id.append_value(e.source_id);
        message_id.append_value(&e.message_id);
        customer_id.append_option(e.customer_id);
        kind.append_value(&e.kind);
        name.append_value(&e.name);
        timestamp.append_value(micros(&e.timestamp));
        received_at.append_value(micros(&e.received_at));
        user_id.append_option(e.user_id.as_deref());
        anonymous_id.append_option(e.anonymous_id.as_deref());
        properties.append_option(json_text(&e.properties));
        context.append_option(e.context.as_str());
        traits.append_option(e.traits.as_str());
        let p = &e.properties;
        revenue.append_option(prop_f64(p, "revenue"));
        price.append_option(prop_f64(p, "price"));
        quantity.append_option(prop_i64(p, "quantity"));
        currency.append_option(prop_str(p, "currency"));
        product_id.append_option(prop_id(p, "product_id"));
        category.append_option(prop_str(p, "category"));
        order_id.append_option(prop_id(p, "order_id"));
        date.append_value(date32(event_date(e)));
    }

    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(seq.finish()),
        Arc::new(source_id.finish()),
        Arc::new(message_id.finish()),
        Arc::new(customer_id.finish()),
        Arc::new(kind.finish()),
        Arc::new(name.finish()),
        Arc::new(timestamp.finish()),
        Arc::new(received_at.finish()),
        Arc::new(user_id.finish()),
        Arc::new(anonymous_id.finish()),
        Arc::new(properties.finish()),
        Arc::new(context.finish()),
        Arc::new(traits.finish()),
        Arc::new(revenue.finish()),
        Arc::new(price.finish()),
        Arc::new(quantity.finish()),
        Arc::new(currency.finish()),
        Arc::new(product_id.finish()),
        Arc::new(category.finish()),
        Arc::new(order_id.finish()),
    ];
    let schema = if with_date {
        columns.push(Arc::new(date.finish()));
        events_table_schema()
    } else {
        event_file_schema()
    };
    Ok(RecordBatch::try_new(schema, columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn promoted_properties_accept_numbers_and_numeric_strings() {
        let p = json!({"revenue": "12.5", "price": 3, "quantity": 2.0, "order_id": 42,
                       "currency": "EUR", "category": 7, "product_id": "p-1"});
        assert_eq!(prop_f64(&p, "revenue"), Some(12.5));
        assert_eq!(prop_f64(&p, "price"), Some(3.0));
        assert_eq!(prop_i64(&p, "quantity"), Some(2));
        assert_eq!(prop_id(&p, "order_id").as_deref(), Some("42"));
        assert_eq!(prop_str(&p, "currency").as_deref(), Some("EUR"));
        assert_eq!(prop_str(&p, "category"), None);
        assert_eq!(prop_i64(&json!({"quantity": 2.5}), "quantity"), None);
        assert_eq!(prop_f64(&json!({"revenue": "n/a"}), "revenue"), None);
        assert_eq!(prop_f64(&json!([1, 2]), "revenue"), None);
    }

    #[test]
    fn date32_counts_days_from_epoch() {
        assert_eq!(date32(NaiveDate::default()), 0);
        let d = NaiveDate::from_ymd_opt(2024, 1, 2).unwrap_or_default();
        assert_eq!(date32(d), 19_724);
    }
}
