//! Typed access to query results: columns by name, cast to the type the
//! analysis expects (DataFusion may answer Utf8View, Int32 …).

use std::sync::Arc;

use chrono::NaiveDate;
use cohort_lake::arrow::array::{
    Array, ArrayRef, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray,
};
use cohort_lake::arrow::compute::cast;
use cohort_lake::arrow::datatypes::DataType;
use cohort_lake::{Lake, QueryOptions, QueryResult};

use crate::{AnalysisError, RunOptions};

/// Runs `sql`; more than `max_rows` rows is [`AnalysisError::TooLarge`], not a
/// silently shortened answer.
pub(crate) async fn query(
    lake: &Lake,
    sql: &str,
    opts: &RunOptions,
    max_rows: usize,
    what: &str,
) -> Result<QueryResult, AnalysisError> {
    let result = lake
        .query(
            sql,
            QueryOptions {
                timeout: opts.timeout,
                max_rows,
                ..QueryOptions::default()
            },
        )
        .await?;
    if result.truncated {
        return Err(AnalysisError::TooLarge(format!(
            "{what} has more than {max_rows} rows; narrow the range, the events or the breakdown"
        )));
    }
    Ok(result)
}

fn column(batch: &RecordBatch, name: &str, to: &DataType) -> Result<ArrayRef, AnalysisError> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| AnalysisError::Internal(format!("result has no column {name}")))?;
    if col.data_type() == to {
        return Ok(Arc::clone(col));
    }
    cast(col, to).map_err(|e| AnalysisError::Internal(format!("column {name}: {e}")))
}

fn downcast<T: Clone + 'static>(array: &ArrayRef, name: &str) -> Result<T, AnalysisError> {
    array
        .as_any()
        .downcast_ref::<T>()
        .cloned()
        .ok_or_else(|| AnalysisError::Internal(format!("column {name} has an unexpected type")))
}

pub(crate) fn i64s(batch: &RecordBatch, name: &str) -> Result<Int64Array, AnalysisError> {
    downcast(&column(batch, name, &DataType::Int64)?, name)
}

pub(crate) fn f64s(batch: &RecordBatch, name: &str) -> Result<Float64Array, AnalysisError> {
    downcast(&column(batch, name, &DataType::Float64)?, name)
}

pub(crate) fn strings(batch: &RecordBatch, name: &str) -> Result<StringArray, AnalysisError> {
    downcast(&column(batch, name, &DataType::Utf8)?, name)
}

pub(crate) fn dates(batch: &RecordBatch, name: &str) -> Result<Date32Array, AnalysisError> {
    downcast(&column(batch, name, &DataType::Date32)?, name)
}

/// The value of row `i`, `None` when NULL.
pub(crate) fn opt_i64(a: &Int64Array, i: usize) -> Option<i64> {
    (!a.is_null(i)).then(|| a.value(i))
}

pub(crate) fn opt_f64(a: &Float64Array, i: usize) -> Option<f64> {
    (!a.is_null(i)).then(|| a.value(i))
}

pub(crate) fn opt_str(a: &StringArray, i: usize) -> Option<String> {
    (!a.is_null(i)).then(|| a.value(i).to_owned())
}

pub(crate) fn opt_date(a: &Date32Array, i: usize) -> Option<NaiveDate> {
    if a.is_null(i) {
        return None;
    }
    NaiveDate::default().checked_add_signed(chrono::Duration::days(i64::from(a.value(i))))
}

/// Days since 1970-01-01.
pub(crate) fn day_number(d: NaiveDate) -> i64 {
    d.signed_duration_since(NaiveDate::default()).num_days()
}
