//! Retention cohorts.

use std::collections::HashMap;

use chrono::{Duration, NaiveDate};
use cohort_lake::Lake;
use serde::{Deserialize, Serialize};

use crate::common::{
    Breakdown, EventSpec, GroupKey, Interval, check_range, from_field, ratio, scoped, to_field,
    word_enum,
};
use crate::grouped;
use crate::read::{self, opt_date, opt_i64};
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
    let index = format!(
        "({} - {}) / {}",
        sql::day_number(&sql::bucket(interval)),
        sql::day_number("f.cohort"),
        request.period.days()
    );
    let (group, join) = sql::breakdown(request.breakdown.as_ref())?;
    // Each customer's first `first_event` in the range, its cohort and its
    // breakdown value.
    let firsts = format!(
        "a AS (\
           SELECT e.customer_id AS customer_id, e.\"timestamp\" AS ts, e.seq AS seq, {group} AS g, \
                  row_number() OVER (PARTITION BY e.customer_id ORDER BY e.\"timestamp\", e.seq) AS rn \
           FROM events e{join} \
           WHERE {first_days} AND e.customer_id IS NOT NULL AND {first}{segment}), \
         firsts AS (\
           SELECT customer_id, ts AS first_ts, seq AS first_seq, {cohort} AS cohort, g FROM a WHERE rn = 1)",
        first_days = sql::in_days(request.from, request.to),
        first = sql::matches(&request.first_event)?,
        segment = sql::and_segment(request.segment.as_deref()),
        cohort = sql::bucket_of(interval, "ts"),
    );
    // The largest groups (ties by value, so the choice is stable), then each
    // customer's group index; without a breakdown every customer is in
    // `none`.
    let top = match request.scope().group_limit()? {
        Some(limit) => {
            let sql = format!(
                "WITH {firsts} SELECT g, count(*) AS n FROM firsts WHERE g IS NOT NULL \
                 GROUP BY g ORDER BY n DESC, g LIMIT {limit}"
            );
            grouped::top_values(lake, opts, &sql, limit).await?
        }
        None => Vec::new(),
    };
    let tag = grouped::group_index(&top);
    let sql = format!(
        "WITH {firsts}, \
         tagged AS (SELECT customer_id, first_ts, first_seq, cohort, CAST({tag} AS BIGINT) AS gi FROM firsts), \
         returns AS (\
           SELECT DISTINCT f.customer_id AS customer_id, f.cohort AS cohort, f.gi AS gi, {index} AS k \
           FROM tagged f JOIN events e ON e.customer_id = f.customer_id \
           WHERE {return_days} AND {returning} \
             AND e.\"timestamp\" >= f.first_ts AND e.seq <> f.first_seq) \
         SELECT cohort, gi, CAST(-1 AS BIGINT) AS k, count(*) AS n FROM tagged GROUP BY cohort, gi \
         UNION ALL \
         SELECT cohort, gi, CAST(k AS BIGINT) AS k, count(*) AS n FROM returns \
         WHERE k >= 0 AND k <= {periods} GROUP BY cohort, gi, k",
        return_days = sql::in_days(request.from, until),
        returning = sql::matches(&request.returning_event)?,
    );
    let groups_bound = top.len() + 2;
    let max_rows = (cohort_starts.len() * (periods + 2) * groups_bound).max(1);
    let result = read::query(lake, &sql, opts, max_rows, "the retention matrix").await?;

    let mut sizes: HashMap<(i64, NaiveDate), u64> = HashMap::new();
    let mut cells: HashMap<(i64, NaiveDate, usize), u64> = HashMap::new();
    for batch in &result.batches {
        let cohort = read::dates(batch, "cohort")?;
        let gi = read::i64s(batch, "gi")?;
        let k = read::i64s(batch, "k")?;
        let n = read::i64s(batch, "n")?;
        for i in 0..batch.num_rows() {
            let (Some(cohort), Some(gi), Some(k), Some(n)) = (
                opt_date(&cohort, i),
                opt_i64(&gi, i),
                opt_i64(&k, i),
                opt_i64(&n, i),
            ) else {
                continue;
            };
            let n = u64::try_from(n).unwrap_or(0);
            match usize::try_from(k) {
                Ok(k) => {
                    cells.insert((gi, cohort, k), n);
                }
                Err(_) => {
                    sizes.insert((gi, cohort), n);
                }
            }
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
