//! What an experiment's report is computed from, and how: [`ExposureQuery`] says which
//! exposures count and which per-unit values to sum; whoever holds the events (the engine,
//! over the lake) answers with [`ExposureSums`]; [`report_input`] turns those into the
//! statistics engine's input.
//!
//! The rules, as a statistician would set them:
//! - A unit is a customer. Its exposure is its first `Experiment Viewed` for the experiment
//!   inside the analysis window; a customer exposed to more than one variation is counted
//!   apart and left out.
//! - A metric's value for a unit counts the unit's events from its first exposure until the
//!   metric's window closes (or the analysis ends). Conversion is 0 or 1, count the number of
//!   events, sum the total of a property; a cap winsorises the value per unit.
//! - CUPED's covariate is the same metric over the unit's [`ExposureQuery::covariate_days`]
//!   before its exposure.
//! - A ratio metric is the ratio of two others' totals; its variance comes from the delta
//!   method over the per-unit sums and their cross products.

use crate::definition::{Experiment, Metric, MetricKind};
use crate::summary_input::{self, MetricInput, Options, ReportInput, Sums, VariationInput};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// The event server-side evaluations and SDK tracking callbacks log for an exposure.
pub const EXPOSURE_EVENT: &str = "Experiment Viewed";

/// A per-unit value computed from events.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitValue {
    /// The metric's key.
    pub key: String,
    pub event: String,
    pub aggregate: Aggregate,
    /// Hours after exposure; until the analysis ends when `None`.
    pub window_hours: Option<f64>,
    pub cap: Option<f64>,
}

/// How a unit's events become its value.
#[derive(Debug, Clone, PartialEq)]
pub enum Aggregate {
    /// 1 when there is at least one event.
    Any,
    /// The number of events.
    Count,
    /// The total of a property (missing or non-numeric counts 0).
    Sum(String),
}

/// Which exposures and values to sum per variation.
#[derive(Debug, Clone, PartialEq)]
pub struct ExposureQuery {
    pub experiment: String,
    /// Exposures from this time on count.
    pub start: DateTime<Utc>,
    /// Exposures and events before this time count.
    pub end: DateTime<Utc>,
    pub values: Vec<UnitValue>,
    /// Pairs of `values` indices whose per-unit cross products are needed (ratio metrics).
    pub products: Vec<(usize, usize)>,
    /// Days before exposure for the CUPED covariate of each value; 0 for none.
    pub covariate_days: u32,
}

/// One variation's sums over its units, for each value of the query in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VariationSums {
    pub units: u64,
    pub values: Vec<ValueSums>,
    /// For each pair in `products`: Σ a × b.
    pub products: Vec<f64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ValueSums {
    pub sum: f64,
    pub sum_squares: f64,
    /// The covariate's sums (zero when not asked for).
    pub pre_sum: f64,
    pub pre_sum_squares: f64,
    pub post_pre_products: f64,
}

/// What the events said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExposureSums {
    /// By variation key, as logged in `variation_id`.
    pub variations: BTreeMap<String, VariationSums>,
    /// Customers exposed to more than one variation, left out of the sums.
    pub multiple_exposures: u64,
}

/// Why a report cannot be made from an experiment's definitions.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReportSetupError {
    #[error("experiment {0:?} has never run")]
    NeverStarted(String),
    #[error("metric {0:?} is not defined")]
    UnknownMetric(String),
}

/// The query for an experiment's report over `metrics` (its goals and guardrails, by key),
/// up to `now` or its end.
pub fn exposure_query(
    experiment: &Experiment,
    metrics: &BTreeMap<String, Metric>,
    covariate_days: u32,
    now: DateTime<Utc>,
) -> Result<ExposureQuery, ReportSetupError> {
    let start = experiment
        .started_at()
        .ok_or_else(|| ReportSetupError::NeverStarted(experiment.key.clone()))?;
    let end = experiment.ended_at().unwrap_or(now);
    let mut query = ExposureQuery {
        experiment: experiment.key.clone(),
        start,
        end,
        values: Vec::new(),
        products: Vec::new(),
        covariate_days,
    };
    for key in experiment.metrics.iter().chain(&experiment.guardrails) {
        let metric = metrics
            .get(key)
            .ok_or_else(|| ReportSetupError::UnknownMetric(key.clone()))?;
        match metric.kind {
            MetricKind::Ratio => {
                let parts = [&metric.numerator, &metric.denominator];
                let mut indices = [0; 2];
                for (slot, part) in indices.iter_mut().zip(parts) {
                    let part = part.as_deref().unwrap_or_default();
                    let m = metrics
                        .get(part)
                        .ok_or_else(|| ReportSetupError::UnknownMetric(part.to_string()))?;
                    *slot = value_index(&mut query.values, m);
                }
                if !query.products.contains(&(indices[0], indices[1])) {
                    query.products.push((indices[0], indices[1]));
                }
            }
            _ => {
                value_index(&mut query.values, metric);
            }
        }
    }
    Ok(query)
}

/// The index of a metric's per-unit value in `values`, added when new.
fn value_index(values: &mut Vec<UnitValue>, metric: &Metric) -> usize {
    if let Some(i) = values.iter().position(|v| v.key == metric.key) {
        return i;
    }
    let aggregate = match metric.kind {
        MetricKind::Conversion => Aggregate::Any,
        MetricKind::Count => Aggregate::Count,
        _ => Aggregate::Sum(metric.property.clone().unwrap_or_default()),
    };
    values.push(UnitValue {
        key: metric.key.clone(),
        event: metric.event.clone().unwrap_or_default(),
        aggregate,
        window_hours: metric.window_hours,
        cap: metric.cap,
    });
    values.len() - 1
}

/// The statistics engine's input from the sums: every variation of the experiment (an arm
/// nobody was exposed to has zero units), every goal and guardrail metric.
pub fn report_input(
    experiment: &Experiment,
    metrics: &BTreeMap<String, Metric>,
    query: &ExposureQuery,
    sums: &ExposureSums,
    options: Options,
) -> ReportInput {
    let weights = experiment.effective_weights();
    let empty = VariationSums::default();
    let of = |key: &str| sums.variations.get(key).unwrap_or(&empty);
    let variations = experiment
        .variations
        .iter()
        .zip(&weights)
        .map(|(v, w)| VariationInput {
            key: v.key.clone(),
            name: Some(if v.name.is_empty() {
                v.key.clone()
            } else {
                v.name.clone()
            }),
            weight: Some(*w),
            units: Some(of(&v.key).units),
        })
        .collect();
    let cuped = query.covariate_days > 0;
    let value_sums =
        |s: &VariationSums, i: usize| -> ValueSums { s.values.get(i).cloned().unwrap_or_default() };
    let mut inputs = Vec::new();
    let guardrails: Vec<&String> = experiment.guardrails.iter().collect();
    for key in experiment.metrics.iter().chain(&experiment.guardrails) {
        let Some(metric) = metrics.get(key) else {
            continue;
        };
        let mut data = BTreeMap::new();
        let kind = match metric.kind {
            MetricKind::Conversion => summary_input::MetricKind::Proportion,
            MetricKind::Ratio => summary_input::MetricKind::Ratio,
            _ => summary_input::MetricKind::Mean,
        };
        for v in &experiment.variations {
            let s = of(&v.key);
            let index =
                |k: &Option<String>| query.values.iter().position(|u| Some(&u.key) == k.as_ref());
            let sums = if metric.kind == MetricKind::Ratio {
                let (Some(a), Some(b)) = (index(&metric.numerator), index(&metric.denominator))
                else {
                    continue;
                };
                let product = query
                    .products
                    .iter()
                    .position(|p| *p == (a, b))
                    .and_then(|p| s.products.get(p).copied())
                    .unwrap_or(0.0);
                let (num, den) = (value_sums(s, a), value_sums(s, b));
                Sums {
                    n: s.units,
                    sum: num.sum,
                    sum_squares: Some(num.sum_squares),
                    denominator_sum: Some(den.sum),
                    denominator_sum_squares: Some(den.sum_squares),
                    numerator_denominator_sum_of_products: Some(product),
                    ..Sums::default()
                }
            } else {
                let Some(i) = index(&Some(metric.key.clone())) else {
                    continue;
                };
                let x = value_sums(s, i);
                Sums {
                    n: s.units,
                    sum: x.sum,
                    sum_squares: (kind != summary_input::MetricKind::Proportion || cuped)
                        .then_some(x.sum_squares),
                    pre_sum: cuped.then_some(x.pre_sum),
                    // A conversion's covariate is 0/1 too: a proportion, whose variance comes
                    // from its rate, as gbstats takes it; its sum of squares would make it a mean.
                    pre_sum_squares: (cuped && kind != summary_input::MetricKind::Proportion)
                        .then_some(x.pre_sum_squares),
                    post_pre_sum_of_products: cuped.then_some(x.post_pre_products),
                    ..Sums::default()
                }
            };
            data.insert(v.key.clone(), sums);
        }
        inputs.push(MetricInput {
            key: metric.key.clone(),
            name: Some(if metric.name.is_empty() {
                metric.key.clone()
            } else {
                metric.name.clone()
            }),
            kind,
            direction: match metric.direction {
                crate::definition::Direction::Increase => summary_input::Direction::Increase,
                crate::definition::Direction::Decrease => summary_input::Direction::Decrease,
            },
            guardrail: guardrails.contains(&key),
            data,
        });
    }
    let days = (query.end - query.start).num_seconds() as f64 / 86_400.0;
    ReportInput {
        name: Some(if experiment.name.is_empty() {
            experiment.key.clone()
        } else {
            experiment.name.clone()
        }),
        variations,
        metrics: inputs,
        options,
        days_running: Some(days.max(0.0)),
        multiple_exposures: Some(sums.multiple_exposures),
    }
}
