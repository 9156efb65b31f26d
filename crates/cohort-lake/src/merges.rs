//! Identity merges seen from the lake.
//!
//! Parquet files are immutable, so an event keeps the customer ID it was written with even after
//! that customer is merged into another. Rewriting files on every merge would cost far more than
//! mapping at read time: the SQL table `events` is a view over `events_raw` whose `customer_id`
//! goes through `cohort_survivor()`, a lookup in the merge map loaded when each query starts.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use datafusion::arrow::array::{Array, ArrayRef, Int64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};

/// Name of the SQL function mapping a customer ID to its surviving customer.
pub(crate) const SURVIVOR_FN: &str = "cohort_survivor";

/// Merged-away customer → surviving customer, shared by every query of a lake.
#[derive(Debug, Default)]
pub(crate) struct MergeMap {
    map: RwLock<Arc<HashMap<i64, i64>>>,
}

impl MergeMap {
    pub(crate) fn set(&self, pairs: Vec<(i64, i64)>) {
        let map: HashMap<i64, i64> = pairs.into_iter().collect();
        *self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(map);
    }

    fn current(&self) -> Arc<HashMap<i64, i64>> {
        Arc::clone(
            &self
                .map
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// `cohort_survivor(customer_id BIGINT) -> BIGINT`: the customer an ID was merged into, or the
/// ID itself.
pub(crate) fn survivor_udf(merges: Arc<MergeMap>) -> ScalarUDF {
    create_udf(
        SURVIVOR_FN,
        vec![DataType::Int64],
        DataType::Int64,
        // Fixed for the duration of one query, which is what Stable promises.
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| {
            let map = merges.current();
            let arg = args.first().ok_or_else(|| {
                DataFusionError::Execution(format!("{SURVIVOR_FN} takes one argument"))
            })?;
            Ok(match arg {
                _ if map.is_empty() => arg.clone(),
                ColumnarValue::Scalar(ScalarValue::Int64(v)) => ColumnarValue::Scalar(
                    ScalarValue::Int64(v.map(|id| map.get(&id).copied().unwrap_or(id))),
                ),
                ColumnarValue::Scalar(other) => {
                    return Err(DataFusionError::Execution(format!(
                        "{SURVIVOR_FN} takes a BIGINT, not {}",
                        other.data_type()
                    )));
                }
                ColumnarValue::Array(array) => {
                    let ids = array.as_any().downcast_ref::<Int64Array>().ok_or_else(|| {
                        DataFusionError::Execution(format!(
                            "{SURVIVOR_FN} takes a BIGINT, not {}",
                            array.data_type()
                        ))
                    })?;
                    let mapped: Int64Array = ids
                        .iter()
                        .map(|v| v.map(|id| map.get(&id).copied().unwrap_or(id)))
                        .collect();
                    ColumnarValue::Array(Arc::new(mapped) as ArrayRef)
                }
            })
        }),
    )
}
