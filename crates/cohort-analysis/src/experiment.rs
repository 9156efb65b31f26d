//! An experiment's per-variation sums from the lake: the SQL for what
//! [`cohort_experiment::metrics::ExposureQuery`] asks, and the reading of its answer.
//!
//! One query: every exposed customer's first exposure, read from the exposures once; those
//! exposed to one variation only (the units) joined to their events from the start of the
//! covariate period (or from the exposure, without CUPED) once, each distinct total (an event's
//! count or a property's sum, in a window) aggregated once per unit, the values made from the
//! totals (converted, capped), then summed per variation. Customers exposed to more than one
//! variation come out as the row whose variation is null, which only counts them.
//! Exposures are `Experiment Viewed` events with `experiment_id` and `variation_id` in their
//! properties, as Cohort's own evaluation and GrowthBook's SDKs' Segment tracking log them.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use cohort_experiment::metrics::{
    Aggregate, EXPOSURE_EVENT, ExposureQuery, ExposureSums, UnitValue, ValueSums, VariationSums,
};
use cohort_lake::Lake;
use cohort_lake::arrow::array::Float64Array;
use std::ops::ControlFlow;

use crate::sql::{date_lit, float_lit, lit};
use crate::{AnalysisError, RunOptions, read};

fn timestamp(t: DateTime<Utc>) -> String {
    format!(
        "TIMESTAMP '{}'",
        t.to_rfc3339_opts(SecondsFormat::Micros, true)
    )
}

/// The first exposure of every customer exposed in the query's window, with the smallest and
/// largest variation they saw (equal when they saw one: cheaper than counting distinct
/// variations, which DataFusion does in a second grouping of every exposure).
fn exposed(query: &ExposureQuery) -> String {
    format!(
        "SELECT customer_id, MIN(exposed_at) AS exposed_at, \
         MIN(variation) AS first_variation, MAX(variation) AS last_variation \
         FROM (SELECT e.customer_id AS customer_id, e.\"timestamp\" AS exposed_at, \
           json_as_text(e.properties, 'variation_id') AS variation \
           FROM events e \
           WHERE e.event = {event} AND json_as_text(e.properties, 'experiment_id') = {key} \
           AND e.date >= {from} AND e.date <= {to} \
           AND e.\"timestamp\" >= {start} AND e.\"timestamp\" < {end} \
           AND e.customer_id IS NOT NULL) x \
         GROUP BY customer_id",
        event = lit(EXPOSURE_EVENT),
        key = lit(&query.experiment),
        from = date_lit(query.start.date_naive()),
        to = date_lit(query.end.date_naive()),
        start = timestamp(query.start),
        end = timestamp(query.end),
    )
}

/// What one aggregate over a unit's joined events adds up: the events named `event` after the
/// exposure (before it, in the covariate period, when `pre`), within `window_seconds` of it,
/// counted, or their property `property` summed. Values that differ only in how the total
/// becomes a value (converted or not, capped or not) share one.
#[derive(Debug, Clone, PartialEq)]
struct Total<'q> {
    event: &'q str,
    window_seconds: Option<i64>,
    pre: bool,
    property: Option<&'q str>,
}

/// The query's aggregates, each computed once: `totals[k]` is column `t{k}` of the per-unit
/// rows; `post[i]` and `pre[i]` are value `i`'s after and before the exposure.
struct Totals<'q> {
    totals: Vec<Total<'q>>,
    post: Vec<usize>,
    pre: Vec<Option<usize>>,
}

impl<'q> Totals<'q> {
    fn of(query: &'q ExposureQuery) -> Self {
        let mut totals: Vec<Total<'q>> = Vec::new();
        let mut index = |total: Total<'q>| match totals.iter().position(|t| *t == total) {
            Some(k) => k,
            None => {
                totals.push(total);
                totals.len() - 1
            }
        };
        let mut post = Vec::new();
        let mut pre = Vec::new();
        for value in &query.values {
            let property = match &value.aggregate {
                Aggregate::Sum(property) => Some(property.as_str()),
                Aggregate::Any | Aggregate::Count => None,
            };
            post.push(index(Total {
                event: &value.event,
                window_seconds: value.window_hours.map(|h| (h * 3600.0).round() as i64),
                pre: false,
                property,
            }));
            pre.push((query.covariate_days > 0).then(|| {
                index(Total {
                    event: &value.event,
                    window_seconds: None,
                    pre: true,
                    property,
                })
            }));
        }
        Totals { totals, post, pre }
    }

    /// The distinct windows, each a column `until{w}` of the units.
    fn windows(&self) -> Vec<i64> {
        let mut windows: Vec<i64> = self
            .totals
            .iter()
            .filter_map(|t| t.window_seconds)
            .collect();
        windows.sort_unstable();
        windows.dedup();
        windows
    }

    /// The distinct properties summed, each a column `x{p}` of the outcomes.
    fn properties(&self) -> Vec<&'q str> {
        let mut properties: Vec<&str> = self.totals.iter().filter_map(|t| t.property).collect();
        properties.sort_unstable();
        properties.dedup();
        properties
    }
}

/// The events the values read, with each summed property taken out of the JSON once: one scan
/// per event whose property is summed, which carries only that event's properties, and one for
/// the events only counted, which does not read `properties` at all. Lake files are sorted by
/// event name, so each scan reads only its events' pages, and the join moves numbers, not the
/// properties' text.
fn outcomes(query: &ExposureQuery, totals: &Totals<'_>, from: DateTime<Utc>) -> String {
    let properties = totals.properties();
    let mut events: Vec<&str> = totals.totals.iter().map(|t| t.event).collect();
    events.sort_unstable();
    events.dedup();
    let scan = |events: &[&str], read: &dyn Fn(&str) -> bool| {
        let columns: Vec<String> = properties
            .iter()
            .enumerate()
            .map(|(p, property)| {
                if read(property) {
                    format!("json_get_float(e.properties, {}) AS x{p}", lit(property))
                } else {
                    format!("CAST(NULL AS DOUBLE) AS x{p}")
                }
            })
            .collect();
        let names: Vec<String> = events.iter().map(|e| lit(e)).collect();
        format!(
            "SELECT e.customer_id AS customer_id, e.event AS event, \
             e.\"timestamp\" AS \"timestamp\"{columns} FROM events e \
             WHERE e.event IN ({names}) AND e.date >= {from_day} AND e.date <= {to_day} \
             AND e.\"timestamp\" < {end}",
            columns = columns.iter().map(|c| format!(", {c}")).collect::<String>(),
            names = names.join(", "),
            from_day = date_lit(from.date_naive()),
            to_day = date_lit(query.end.date_naive()),
            end = timestamp(query.end),
        )
    };
    let summed = |event: &str, property: &str| {
        totals
            .totals
            .iter()
            .any(|t| t.event == event && t.property == Some(property))
    };
    let mut scans = Vec::new();
    let counted: Vec<&str> = events
        .iter()
        .copied()
        .filter(|event| !properties.iter().any(|p| summed(event, p)))
        .collect();
    if !counted.is_empty() {
        scans.push(scan(&counted, &|_| false));
    }
    for event in events.iter().filter(|e| !counted.contains(e)) {
        scans.push(scan(&[event], &|property| summed(event, property)));
    }
    scans.join(" UNION ALL ")
}

/// Total `t`'s aggregate over the unit's joined events.
fn total_expr(total: &Total<'_>, properties: &[&str], windows: &[i64], covariate: bool) -> String {
    let mut hit = vec![format!("e.event = {}", lit(total.event))];
    if total.pre {
        hit.push("e.\"timestamp\" < u.exposed_at".into());
    } else if covariate {
        // The join reaches back into the covariate period.
        hit.push("e.\"timestamp\" >= u.exposed_at".into());
    }
    if let Some(w) = total
        .window_seconds
        .and_then(|s| windows.iter().position(|w| *w == s))
    {
        hit.push(format!("e.\"timestamp\" < u.until{w}"));
    }
    let amount = match total
        .property
        .and_then(|p| properties.iter().position(|q| *q == p))
    {
        Some(p) => format!("COALESCE(e.x{p}, 0.0)"),
        None => "1.0".into(),
    };
    format!(
        "SUM(CASE WHEN {} THEN {amount} ELSE 0.0 END)",
        hit.join(" AND ")
    )
}

/// A unit's value from its total `t{k}`.
fn value_expr(value: &UnitValue, k: usize) -> String {
    let total = match value.aggregate {
        Aggregate::Any => format!("CASE WHEN t{k} > 0.0 THEN 1.0 ELSE 0.0 END"),
        Aggregate::Count | Aggregate::Sum(_) => format!("t{k}"),
    };
    match value.cap {
        Some(cap) => format!("LEAST({total}, {})", float_lit(cap)),
        None => total,
    }
}

/// The SQL of the per-variation sums: columns `variation`, `units`, then for value `i`
/// `s{i}`, `q{i}` (squares), `ps{i}`, `pq{i}`, `x{i}` (covariate sums, squares, products;
/// zeros without a covariate), then `c{j}` for each product pair.
pub fn sums_sql(query: &ExposureQuery) -> String {
    let covariate = query.covariate_days > 0;
    let totals = Totals::of(query);
    let windows = totals.windows();
    let properties = totals.properties();
    let lookback = Duration::days(i64::from(query.covariate_days));

    let mut unit_columns = vec![
        "customer_id".to_string(),
        "exposed_at".to_string(),
        "CASE WHEN first_variation = last_variation THEN first_variation END AS variation"
            .to_string(),
    ];
    for (w, seconds) in windows.iter().enumerate() {
        unit_columns.push(format!(
            "exposed_at + INTERVAL '{seconds}' SECOND AS until{w}"
        ));
    }
    let mut ctes = vec![
        format!("exposed AS ({})", exposed(query)),
        format!("units AS (SELECT {} FROM exposed)", unit_columns.join(", ")),
    ];
    if totals.totals.is_empty() {
        ctes.push("totals AS (SELECT customer_id, variation FROM units)".into());
    } else {
        let columns: Vec<String> = totals
            .totals
            .iter()
            .enumerate()
            .map(|(k, t)| {
                format!(
                    "{} AS t{k}",
                    total_expr(t, &properties, &windows, covariate)
                )
            })
            .collect();
        let reach = if covariate {
            format!(" - INTERVAL '{}' DAY", query.covariate_days)
        } else {
            String::new()
        };
        ctes.push(format!(
            "outcomes AS ({})",
            outcomes(query, &totals, query.start - lookback)
        ));
        ctes.push(format!(
            "totals AS (SELECT u.customer_id AS customer_id, u.variation AS variation, \
             {columns} FROM units u LEFT JOIN outcomes e ON e.customer_id = u.customer_id \
             AND e.\"timestamp\" >= u.exposed_at{reach} GROUP BY u.customer_id, u.variation)",
            columns = columns.join(", "),
        ));
    }

    let mut values = vec!["variation".to_string()];
    let mut sums = vec!["variation".to_string(), "COUNT(*) AS units".to_string()];
    for (i, value) in query.values.iter().enumerate() {
        values.push(format!("{} AS v{i}", value_expr(value, totals.post[i])));
        sums.extend([
            format!("SUM(v{i}) AS s{i}"),
            format!("SUM(v{i} * v{i}) AS q{i}"),
        ]);
        match totals.pre[i] {
            Some(k) => {
                values.push(format!("{} AS p{i}", value_expr(value, k)));
                sums.extend([
                    format!("SUM(p{i}) AS ps{i}"),
                    format!("SUM(p{i} * p{i}) AS pq{i}"),
                    format!("SUM(v{i} * p{i}) AS x{i}"),
                ]);
            }
            None => sums.extend([
                format!("0.0 AS ps{i}"),
                format!("0.0 AS pq{i}"),
                format!("0.0 AS x{i}"),
            ]),
        }
    }
    for (j, (a, b)) in query.products.iter().enumerate() {
        sums.push(format!("SUM(v{a} * v{b}) AS c{j}"));
    }
    ctes.push(format!(
        "per_unit AS (SELECT {} FROM totals)",
        values.join(", ")
    ));
    format!(
        "WITH {} SELECT {} FROM per_unit GROUP BY variation ORDER BY variation",
        ctes.join(", "),
        sums.join(", "),
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
