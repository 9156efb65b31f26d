//! An experiment's per-variation sums from the lake: the SQL for what
//! [`cohort_experiment::metrics::ExposureQuery`] asks, and the reading of its answer.
//!
//! One query: every exposed customer's first exposure, read from the exposures once; those
//! exposed to one variation only (the units) joined to their events from the start of the
//! covariate period (or from the exposure, without CUPED) once, one aggregate per value in a
//! single pass, then summed per variation. Customers exposed to more than one variation come
//! out as the row whose variation is null, which only counts them.
//! Exposures are `Experiment Viewed` events with `experiment_id` and `variation_id` in their
//! properties, as Cohort's own evaluation and GrowthBook's SDKs' Segment tracking log them.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use cohort_experiment::metrics::{
    Aggregate, EXPOSURE_EVENT, ExposureQuery, ExposureSums, UnitValue, ValueSums, VariationSums,
};
use cohort_lake::Lake;
use cohort_lake::arrow::array::Float64Array;
use std::ops::ControlFlow;

use crate::sql::{date_lit, lit};
use crate::{AnalysisError, RunOptions, read};

fn timestamp(t: DateTime<Utc>) -> String {
    format!(
        "TIMESTAMP '{}'",
        t.to_rfc3339_opts(SecondsFormat::Micros, true)
    )
}

/// The first exposure of every customer exposed in the query's window, with how many
/// variations they saw.
fn exposed(query: &ExposureQuery) -> String {
    format!(
        "SELECT e.customer_id AS customer_id, MIN(e.\"timestamp\") AS exposed_at, \
         MIN(json_as_text(e.properties, 'variation_id')) AS variation, \
         COUNT(DISTINCT json_as_text(e.properties, 'variation_id')) AS arms \
         FROM events e \
         WHERE e.event = {event} AND json_as_text(e.properties, 'experiment_id') = {key} \
         AND e.date >= {from} AND e.date <= {to} \
         AND e.\"timestamp\" >= {start} AND e.\"timestamp\" < {end} \
         AND e.customer_id IS NOT NULL \
         GROUP BY e.customer_id",
        event = lit(EXPOSURE_EVENT),
        key = lit(&query.experiment),
        from = date_lit(query.start.date_naive()),
        to = date_lit(query.end.date_naive()),
        start = timestamp(query.start),
        end = timestamp(query.end),
    )
}

/// A unit's value from its joined events, after exposure (`pre` false) or in the covariate
/// period before it (`pre` true).
fn value_expr(value: &UnitValue, pre: bool, end: DateTime<Utc>, covariate_days: u32) -> String {
    let after = "e.\"timestamp\" >= u.exposed_at".to_string();
    let window = match (pre, value.window_hours) {
        (true, _) => format!(
            "e.\"timestamp\" >= u.exposed_at - INTERVAL '{covariate_days}' DAY \
             AND e.\"timestamp\" < u.exposed_at"
        ),
        (false, Some(hours)) => format!(
            "{after} AND e.\"timestamp\" < u.exposed_at + INTERVAL '{}' SECOND \
             AND e.\"timestamp\" < {}",
            (hours * 3600.0).round() as i64,
            timestamp(end)
        ),
        (false, None) => format!("{after} AND e.\"timestamp\" < {}", timestamp(end)),
    };
    let hit = format!("e.event = {} AND {window}", lit(&value.event));
    let total = match &value.aggregate {
        Aggregate::Any => format!("MAX(CASE WHEN {hit} THEN 1.0 ELSE 0.0 END)"),
        Aggregate::Count => format!("SUM(CASE WHEN {hit} THEN 1.0 ELSE 0.0 END)"),
        Aggregate::Sum(property) => format!(
            "SUM(CASE WHEN {hit} THEN COALESCE(json_get_float(e.properties, {}), 0.0) ELSE 0.0 END)",
            lit(property)
        ),
    };
    let total = format!("COALESCE({total}, 0.0)");
    match value.cap {
        Some(cap) => format!("LEAST({total}, CAST({cap:?} AS DOUBLE))"),
        None => total,
    }
}

/// The SQL of the per-variation sums: columns `variation`, `units`, then for value `i`
/// `s{i}`, `q{i}` (squares), `ps{i}`, `pq{i}`, `x{i}` (covariate sums, squares, products),
/// then `c{j}` for each product pair.
pub fn sums_sql(query: &ExposureQuery) -> String {
    let covariate = query.covariate_days > 0;
    let mut per_unit = Vec::new();
    let mut totals = vec![
        "u.variation AS variation".to_string(),
        "COUNT(*) AS units".to_string(),
    ];
    for (i, value) in query.values.iter().enumerate() {
        per_unit.push(format!(
            "{} AS v{i}",
            value_expr(value, false, query.end, query.covariate_days)
        ));
        let pre = if covariate {
            value_expr(value, true, query.end, query.covariate_days)
        } else {
            "0.0".to_string()
        };
        per_unit.push(format!("{pre} AS p{i}"));
        totals.extend([
            format!("SUM(v{i}) AS s{i}"),
            format!("SUM(v{i} * v{i}) AS q{i}"),
            format!("SUM(p{i}) AS ps{i}"),
            format!("SUM(p{i} * p{i}) AS pq{i}"),
            format!("SUM(v{i} * p{i}) AS x{i}"),
        ]);
    }
    for (j, (a, b)) in query.products.iter().enumerate() {
        totals.push(format!("SUM(v{a} * v{b}) AS c{j}"));
    }
    let mut events: Vec<String> = query.values.iter().map(|v| lit(&v.event)).collect();
    events.sort();
    events.dedup();
    let lookback = Duration::days(i64::from(query.covariate_days));
    let join = if events.is_empty() {
        "FALSE".to_string()
    } else {
        format!(
            "e.customer_id = u.customer_id AND e.event IN ({}) \
             AND e.date >= {} AND e.date <= {} AND e.\"timestamp\" < {} \
             AND e.\"timestamp\" >= u.exposed_at{}",
            events.join(", "),
            date_lit((query.start - lookback).date_naive()),
            date_lit(query.end.date_naive()),
            timestamp(query.end),
            if covariate {
                format!(" - INTERVAL '{}' DAY", query.covariate_days)
            } else {
                String::new()
            },
        )
    };
    let values = if per_unit.is_empty() {
        String::new()
    } else {
        format!(", {}", per_unit.join(", "))
    };
    format!(
        "WITH exposed AS ({exposed}), \
         units AS (SELECT customer_id, exposed_at, \
           CASE WHEN arms = 1 THEN variation END AS variation FROM exposed), \
         per_unit AS (SELECT u.customer_id AS customer_id, u.variation AS variation{values} \
           FROM units u LEFT JOIN events e ON {join} \
           GROUP BY u.customer_id, u.variation) \
         SELECT {totals} FROM per_unit u GROUP BY u.variation ORDER BY u.variation",
        exposed = exposed(query),
        totals = totals.join(", "),
    )
}

/// Runs the query and reads the sums.
pub async fn exposure_sums(
    lake: &Lake,
    query: &ExposureQuery,
    opts: &RunOptions,
) -> Result<ExposureSums, AnalysisError> {
    let values = query.values.len();
    let products = query.products.len();
    let bad = |e: AnalysisError| cohort_lake::LakeError::Query(e.to_string());
    let (variations, multiple) = lake
        .fold(
            &sums_sql(query),
            opts.timeout,
            || (Vec::new(), 0u64),
            move |(rows, multiple): &mut (Vec<(String, VariationSums)>, u64), batch| {
                let variation = read::strings(batch, "variation").map_err(bad)?;
                let units = read::i64s(batch, "units").map_err(bad)?;
                let column = |name: String| read::f64s(batch, &name).map_err(bad);
                let mut columns = Vec::with_capacity(values);
                for i in 0..values {
                    columns.push([
                        column(format!("s{i}"))?,
                        column(format!("q{i}"))?,
                        column(format!("ps{i}"))?,
                        column(format!("pq{i}"))?,
                        column(format!("x{i}"))?,
                    ]);
                }
                let cross: Vec<_> = (0..products)
                    .map(|j| column(format!("c{j}")))
                    .collect::<Result<_, _>>()?;
                for r in 0..batch.num_rows() {
                    let Some(key) = read::opt_str(&variation, r) else {
                        *multiple += read::opt_i64(&units, r).unwrap_or(0).max(0) as u64;
                        continue;
                    };
                    let get = |a: &Float64Array| read::opt_f64(a, r).unwrap_or(0.0);
                    rows.push((
                        key,
                        VariationSums {
                            units: read::opt_i64(&units, r).unwrap_or(0).max(0) as u64,
                            values: columns
                                .iter()
                                .map(|[s, q, ps, pq, x]| ValueSums {
                                    sum: get(s),
                                    sum_squares: get(q),
                                    pre_sum: get(ps),
                                    pre_sum_squares: get(pq),
                                    post_pre_products: get(x),
                                })
                                .collect(),
                            products: cross.iter().map(get).collect(),
                        },
                    ));
                }
                Ok(ControlFlow::Continue(()))
            },
        )
        .await?;
    Ok(ExposureSums {
        variations: variations.into_iter().collect(),
        multiple_exposures: multiple,
    })
}
