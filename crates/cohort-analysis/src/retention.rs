//! Retention cohorts.
//!
//! Two scans, reduced in Rust: the first finds each customer's first
//! `first_event` (a hash map by customer), the second marks, per customer, the
//! periods holding a `returning_event` (a bit set each). No join, no sort.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use chrono::{Duration, NaiveDate};
use cohort_lake::arrow::array::{Array, RecordBatch};
use cohort_lake::{Lake, LakeError};
use serde::{Deserialize, Serialize};

use crate::common::{
    Breakdown, EventSpec, GroupKey, Interval, check_range, from_field, ratio, scoped, to_field,
    word_enum,
};
use crate::customers::{IdMap, Interner, NO_VALUE};
use crate::grouped;
use crate::read::{self, opt_i64};
use crate::sql;
use crate::table;
use crate::{AnalysisError, RunOptions};

/// Cohort and return period size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum RetentionPeriod {
    Day,
    Week,
}

word_enum!(RetentionPeriod, "period", ["day" => Day, "week" => Week]);

impl RetentionPeriod {
    fn interval(self) -> Interval {
        match self {
            RetentionPeriod::Day => Interval::Day,
            RetentionPeriod::Week => Interval::Week,
        }
    }

    fn days(self) -> i64 {
        match self {
            RetentionPeriod::Day => 1,
            RetentionPeriod::Week => 7,
        }
    }

    fn default_periods(self) -> usize {
        match self {
            RetentionPeriod::Day => 7,
            RetentionPeriod::Week => 8,
        }
    }

    fn max_periods(self) -> usize {
        match self {
            RetentionPeriod::Day => 90,
            RetentionPeriod::Week => 52,
        }
    }
}

fn default_period() -> RetentionPeriod {
    RetentionPeriod::Day
}

/// Retention: who came back after their first event?
///
/// ```json
/// {"from": "2024-05-01", "to": "2024-06-01", "period": "week", "periods": 8,
///  "first_event": {"event": "Signed Up"}, "returning_event": {"event": "Order Completed"},
///  "breakdown": {"property": "utm.source"}, "breakdown_limit": 5}
/// ```
///
/// * A customer's cohort is the UTC day or ISO week (from Monday) of their
///   first `first_event` inside `[from, to)`; earlier history is not looked at.
/// * The customer returned in period `k` (0 ..= `periods`) when they have a
///   `returning_event` in the calendar day or week `k` periods after the
///   cohort's, at or after their first event (period 0 is the rest of the
///   cohort's own day or week; the first event itself never counts, so
///   `first_event == returning_event` asks "did they do it again").
/// * Returns may fall after `to`. Cells of periods that have not ended yet
///   are counted as they stand.
///
/// Cohorts are every day or week of the range, empty ones included;
/// percentages are 0–100 and `null` for an empty cohort. `total` adds up all
/// cohorts.
///
/// With a `breakdown`, each customer is in the group of their cohort-defining
/// event: a property or context value of that first `first_event`, or the
/// customer's trait. The `breakdown_limit` groups with the most customers
/// (ties by value) get a matrix each, then `none` (no value) and `other` (the
/// rest); every customer is in exactly one group, so the groups' matrices add
/// up to the overall one. Ranking the groups costs one more scan of the
/// `first_event` events in the range.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRequest {
    #[serde(deserialize_with = "from_field")]
    pub from: NaiveDate,
    #[serde(deserialize_with = "to_field")]
    pub to: NaiveDate,
    #[serde(default = "default_period")]
    pub period: RetentionPeriod,
    /// Last period reported: 7 days or 8 weeks when absent.
    #[serde(default)]
    pub periods: Option<usize>,
    pub first_event: EventSpec,
    pub returning_event: EventSpec,
    #[serde(default)]
    pub segment: Option<String>,
    #[serde(default)]
    pub breakdown: Option<Breakdown>,
    #[serde(default)]
    pub breakdown_limit: Option<usize>,
}

impl RetentionRequest {
    fn periods(&self) -> usize {
        self.periods.unwrap_or(self.period.default_periods())
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), AnalysisError> {
        check_range(self.from, self.to)?;
        let max = self.period.max_periods();
        if let Some(n) = self.periods
            && !(1..=max).contains(&n)
        {
            return Err(AnalysisError::invalid(
                "periods",
                format!(
                    "must be between 1 and {max} for period {:?}, not {n}",
                    self.period.interval().unit()
                ),
            ));
        }
        self.first_event.validate("first_event")?;
        self.returning_event.validate("returning_event")?;
        self.scope().check_segment_and_breakdown()
    }
}

scoped!(RetentionRequest);

/// A retention matrix, ready for a heat map: one row per cohort, one column
/// per period 0 ..= `periods`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Retention {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub period: RetentionPeriod,
    pub periods: usize,
    pub cohorts: Vec<RetentionCohort>,
    pub total: RetentionTotal,
    /// One matrix per breakdown group, in display order (the largest groups,
    /// then `none` and `other` when they have customers); empty without a
    /// breakdown.
    pub breakdown: Vec<RetentionGroup>,
}

/// The retention matrix of one breakdown group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetentionGroup {
    pub label: String,
    pub group: GroupKey,
    pub cohorts: Vec<RetentionCohort>,
    pub total: RetentionTotal,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetentionCohort {
    /// First day of the cohort's day or week.
    pub start: NaiveDate,
    /// Customers whose first `first_event` fell in it.
    pub customers: u64,
    /// Customers who returned, per period.
    pub returned: Vec<u64>,
    /// `returned / customers × 100`, per period.
    pub percentages: Vec<Option<f64>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetentionTotal {
    pub customers: u64,
    pub returned: Vec<u64>,
    pub percentages: Vec<Option<f64>>,
}

fn percentages(returned: &[u64], customers: u64) -> Vec<Option<f64>> {
    returned
        .iter()
        .map(|&r| ratio(r as f64 * 100.0, customers as f64))
        .collect()
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Days since 1970-01-01 of a UTC timestamp in microseconds.
fn day_of(ts: i64) -> i64 {
    ts.div_euclid(MICROS_PER_DAY)
}

fn date_of_day(day: i64) -> Option<NaiveDate> {
    NaiveDate::default().checked_add_signed(Duration::days(day))
}

/// The calendar periods of a retention matrix, in day numbers.
#[derive(Clone, Copy)]
struct Buckets {
    period: RetentionPeriod,
    periods: usize,
}

impl Buckets {
    /// First day of the day or ISO week holding `day`.
    fn bucket(self, day: i64) -> i64 {
        match self.period {
            RetentionPeriod::Day => day,
            // 1970-01-01 was a Thursday, 3 days after a Monday.
            RetentionPeriod::Week => day - (day + 3).rem_euclid(7),
        }
    }

    /// The period after the cohort's that `day` falls in, if reported.
    fn period_of(self, cohort_day: i64, day: i64) -> Option<usize> {
        let k = (self.bucket(day) - self.bucket(cohort_day)) / self.period.days();
        usize::try_from(k).ok().filter(|&k| k <= self.periods)
    }
}

/// A customer's cohort-defining event.
#[derive(Clone, Copy)]
struct First {
    ts: i64,
    seq: i64,
    /// The breakdown value, numbered by [`Firsts::values`].
    group: u32,
}

/// Each customer's first `first_event` in the range.
#[derive(Default)]
struct Firsts {
    first: IdMap<First>,
    values: Interner,
}

impl Firsts {
    fn add(&mut self, batch: &RecordBatch) -> Result<ControlFlow<()>, LakeError> {
        let g = read::strings(batch, "g").map_err(internal)?;
        for_each_event(batch, |i, customer, ts, seq| {
            let group = self.values.number((!g.is_null(i)).then(|| g.value(i)));
            let event = First { ts, seq, group };
            self.first
                .entry(customer)
                .and_modify(|f| {
                    if (ts, seq) < (f.ts, f.seq) {
                        *f = event;
                    }
                })
                .or_insert(event);
        })?;
        Ok(ControlFlow::Continue(()))
    }

    /// The `limit` breakdown values with the most customers, ties by value.
    fn top_values(&self, limit: usize) -> Vec<String> {
        let mut sizes: HashMap<u32, u64> = HashMap::new();
        for f in self.first.values().filter(|f| f.group != NO_VALUE) {
            *sizes.entry(f.group).or_default() += 1;
        }
        let mut ranked: Vec<(&str, u64)> = sizes
            .into_iter()
            .filter_map(|(g, n)| Some((self.values.value(g)?, n)))
            .collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        ranked
            .into_iter()
            .take(limit)
            .map(|(v, _)| v.to_owned())
            .collect()
    }
}

/// Sets bit `k` of `seen[customer]` for every returning event in `batch`
/// that falls in period `k` of the customer's cohort (at or after the first
/// event, and not that event itself).
fn mark_returns(
    firsts: &Firsts,
    shape: Buckets,
    seen: &mut IdMap<u128>,
    batch: &RecordBatch,
) -> Result<(), LakeError> {
    for_each_event(batch, |_, customer, ts, seq| {
        let Some(first) = firsts.first.get(&customer) else {
            return;
        };
        if ts < first.ts || seq == first.seq {
            return;
        }
        if let Some(k) = shape.period_of(day_of(first.ts), day_of(ts)) {
            *seen.entry(customer).or_default() |= 1u128 << k;
        }
    })
}

fn internal(e: AnalysisError) -> LakeError {
    LakeError::Internal(e.to_string())
}

/// Calls `f(row, customer_id, ts, seq)` for each row of `batch` that has all three.
fn for_each_event(
    batch: &RecordBatch,
    mut f: impl FnMut(usize, i64, i64, i64),
) -> Result<(), LakeError> {
    let c = read::i64s(batch, "customer_id").map_err(internal)?;
    let t = read::i64s(batch, "ts").map_err(internal)?;
    let q = read::i64s(batch, "seq").map_err(internal)?;
    for i in 0..batch.num_rows() {
        if let (Some(customer), Some(ts), Some(seq)) =
            (opt_i64(&c, i), opt_i64(&t, i), opt_i64(&q, i))
        {
            f(i, customer, ts, seq);
        }
    }
    Ok(())
}

/// Runs the analysis (validating the request first).
pub async fn retention(
    lake: &Lake,
    request: &RetentionRequest,
    opts: &RunOptions,
) -> Result<Retention, AnalysisError> {
    request.validate()?;
    let periods = request.periods();
    let interval = request.period.interval();
    let cohort_starts = interval.buckets(request.from, request.to);
    // The last period of the last cohort ends at most this many days after `to`.
    let until = request.to + Duration::days((periods as i64 + 1) * request.period.days());
    let (group, join) = sql::breakdown(request.breakdown.as_ref())?;
    // Each customer's first `first_event` in the range and its breakdown value.
    let firsts_sql = format!(
        "SELECT e.customer_id AS customer_id, e.\"timestamp\" AS ts, e.seq AS seq, {group} AS g \
         FROM events e{join} \
         WHERE {days} AND e.customer_id IS NOT NULL AND {first}{segment}",
        days = sql::in_days(request.from, request.to),
        first = sql::matches(&request.first_event)?,
        segment = sql::and_segment(request.segment.as_deref()),
    );
    let firsts = lake
        .fold(
            &firsts_sql,
            opts.timeout,
            Firsts::default,
            |f: &mut Firsts, batch| f.add(batch),
        )
        .await?;
    let firsts = Arc::new(firsts);

    // The largest groups (ties by value, so the choice is stable), then each
    // customer's group index; without a breakdown every customer is in `none`.
    let top = match request.scope().group_limit()? {
        Some(limit) => firsts.top_values(limit),
        None => Vec::new(),
    };
    let index_of_value: HashMap<&str, i64> = top.iter().map(String::as_str).zip(1..).collect();
    let group_of = |g: u32| match firsts.values.value(g) {
        None => grouped::NONE,
        Some(v) => index_of_value.get(v).copied().unwrap_or(grouped::OTHER),
    };

    let returns_sql = format!(
        "SELECT e.customer_id AS customer_id, e.\"timestamp\" AS ts, e.seq AS seq \
         FROM events e WHERE {days} AND e.customer_id IS NOT NULL AND {returning}",
        days = sql::in_days(request.from, until),
        returning = sql::matches(&request.returning_event)?,
    );
    let shape = Buckets {
        period: request.period,
        periods,
    };
    let returned = {
        let firsts = Arc::clone(&firsts);
        lake.fold(
            &returns_sql,
            opts.timeout,
            IdMap::<u128>::default,
            move |seen: &mut IdMap<u128>, batch| {
                mark_returns(&firsts, shape, seen, batch)?;
                Ok(ControlFlow::Continue(()))
            },
        )
        .await?
    };

    let mut sizes: HashMap<(i64, NaiveDate), u64> = HashMap::new();
    let mut cells: HashMap<(i64, NaiveDate, usize), u64> = HashMap::new();
    for (customer, first) in &firsts.first {
        let gi = group_of(first.group);
        let Some(cohort) = date_of_day(shape.bucket(day_of(first.ts))) else {
            continue;
        };
        *sizes.entry((gi, cohort)).or_default() += 1;
        let bits = returned.get(customer).copied().unwrap_or(0);
        for k in (0..=periods).filter(|k| bits & (1u128 << k) != 0) {
            *cells.entry((gi, cohort, k)).or_default() += 1;
        }
    }

    // A matrix over the customers of the given group indexes.
    let matrix = |groups: &[i64]| {
        let cohorts: Vec<RetentionCohort> = cohort_starts
            .iter()
            .map(|start| {
                let customers = groups
                    .iter()
                    .map(|g| sizes.get(&(*g, *start)).copied().unwrap_or(0))
                    .sum();
                let returned: Vec<u64> = (0..=periods)
                    .map(|k| {
                        groups
                            .iter()
                            .map(|g| cells.get(&(*g, *start, k)).copied().unwrap_or(0))
                            .sum()
                    })
                    .collect();
                RetentionCohort {
                    start: *start,
                    customers,
                    percentages: percentages(&returned, customers),
                    returned,
                }
            })
            .collect();
        let customers = cohorts.iter().map(|c| c.customers).sum();
        let returned: Vec<u64> = (0..=periods)
            .map(|k| cohorts.iter().map(|c| c.returned[k]).sum())
            .collect();
        let total = RetentionTotal {
            customers,
            percentages: percentages(&returned, customers),
            returned,
        };
        (cohorts, total)
    };

    let keys = grouped::group_keys(top);
    let all_groups: Vec<i64> = keys.iter().map(|(gi, _)| *gi).collect();
    let mut breakdown = Vec::new();
    if request.breakdown.is_some() {
        for (gi, key) in keys {
            let (cohorts, total) = matrix(&[gi]);
            if total.customers > 0 {
                breakdown.push(RetentionGroup {
                    label: key.label(),
                    group: key,
                    cohorts,
                    total,
                });
            }
        }
    }
    let (cohorts, total) = matrix(&all_groups);
    Ok(Retention {
        from: request.from,
        to: request.to,
        period: request.period,
        periods,
        cohorts,
        total,
        breakdown,
    })
}

fn matrix_table(
    unit: &str,
    periods: usize,
    cohorts: &[RetentionCohort],
    total: &RetentionTotal,
) -> String {
    let mut headers = vec!["cohort".to_owned(), "customers".to_owned()];
    headers.extend((0..=periods).map(|k| format!("{unit} {k}")));
    let row = |label: String, customers: u64, returned: &[u64], pct: &[Option<f64>]| {
        let mut row = vec![label, table::int(customers)];
        row.extend(
            returned
                .iter()
                .zip(pct)
                .map(|(r, p)| format!("{r} ({})", table::percent(p.map(|p| p / 100.0)))),
        );
        row
    };
    let mut rows: Vec<Vec<String>> = cohorts
        .iter()
        .map(|c| {
            row(
                c.start.to_string(),
                c.customers,
                &c.returned,
                &c.percentages,
            )
        })
        .collect();
    rows.push(row(
        "total".to_owned(),
        total.customers,
        &total.returned,
        &total.percentages,
    ));
    table::render(&headers, &rows, 1)
}

impl Retention {
    /// One row per cohort and a total row; cells are `count (percent)`. With
    /// a breakdown, then one such table per group under its label.
    pub fn to_table(&self) -> String {
        let unit = self.period.interval().unit();
        let matrix =
            |cohorts: &[RetentionCohort], total| matrix_table(unit, self.periods, cohorts, total);
        table::with_groups(
            matrix(&self.cohorts, &self.total),
            self.breakdown
                .iter()
                .map(|g| (g.label.clone(), matrix(&g.cohorts, &g.total))),
        )
    }
}
