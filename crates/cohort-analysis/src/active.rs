//! Daily, weekly and monthly active customers.

use chrono::NaiveDate;
use cohort_lake::Lake;
use serde::{Deserialize, Serialize};

use crate::common::{
    Breakdown, GroupKey, Interval, check_name, check_range, default_interval, from_field, scoped,
    to_field,
};
use crate::grouped::{self, TimeSeries};
use crate::sql::lit;
use crate::table;
use crate::{AnalysisError, RunOptions};

/// Active customers: per bucket, the number of distinct customers with at
/// least one event (of any type, or only `event`) in the bucket and the range.
///
/// ```json
/// {"from": "2024-05-01", "to": "2024-06-01", "interval": "week",
///  "event": "App Opened", "segment": "vip", "breakdown": {"trait": "city"}, "breakdown_limit": 5}
/// ```
///
/// `total` of a series is the distinct customers over the whole range (the
/// "monthly actives" of a month-long range), not the sum of its buckets. With
/// an event-property breakdown, a customer counts in every group it had an
/// event of; the top groups are the ones with the most customers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveRequest {
    #[serde(deserialize_with = "from_field")]
    pub from: NaiveDate,
    #[serde(deserialize_with = "to_field")]
    pub to: NaiveDate,
    #[serde(default = "default_interval")]
    pub interval: Interval,
    /// Count only customers with this event (any event when absent).
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub segment: Option<String>,
    #[serde(default)]
    pub breakdown: Option<Breakdown>,
    #[serde(default)]
    pub breakdown_limit: Option<usize>,
}

impl ActiveRequest {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), AnalysisError> {
        check_range(self.from, self.to)?;
        if let Some(event) = &self.event {
            check_name("event", event)?;
        }
        self.scope().check_segment_and_breakdown()
    }
}

scoped!(ActiveRequest);

/// Active customers, ready for a line chart: `buckets` is the x-axis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActiveCustomers {
    pub interval: Interval,
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// First day of each bucket.
    pub buckets: Vec<NaiveDate>,
    /// `all` first, then one series per breakdown group.
    pub series: Vec<ActiveSeries>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActiveSeries {
    /// `all`, or the group's label.
    pub label: String,
    /// The breakdown group; absent for `all`.
    pub group: Option<GroupKey>,
    /// Distinct active customers per bucket.
    pub customers: Vec<u64>,
    /// Distinct active customers over the whole range.
    pub total: u64,
}

/// Runs the analysis (validating the request first).
pub async fn active_customers(
    lake: &Lake,
    request: &ActiveRequest,
    opts: &RunOptions,
) -> Result<ActiveCustomers, AnalysisError> {
    request.validate()?;
    let event = request
        .event
        .as_deref()
        .map(|e| format!(" AND e.event = {}", lit(e)))
        .unwrap_or_default();
    let grouped = TimeSeries {
        interval: request.interval,
        key: "''",
        keys: 1,
        columns: "",
        conditions: format!(" AND e.customer_id IS NOT NULL{event}"),
        metrics: &["count(DISTINCT customer_id)"],
    }
    .run(lake, opts, request.scope())
    .await?;
    let series = grouped.series(|group| {
        let cells = grouped.cells("", group);
        ActiveSeries {
            label: grouped::label(group),
            group: group.cloned(),
            customers: cells.counts(0),
            total: cells.total[0] as u64,
        }
    });
    Ok(ActiveCustomers {
        interval: request.interval,
        from: request.from,
        to: request.to,
        buckets: grouped.buckets,
        series,
    })
}

impl ActiveCustomers {
    /// One row per bucket and a `total` row; one column per series.
    pub fn to_table(&self) -> String {
        let mut headers = vec![self.interval.unit().to_owned()];
        headers.extend(self.series.iter().map(|s| s.label.clone()));
        let mut rows: Vec<Vec<String>> = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut row = vec![b.to_string()];
                row.extend(self.series.iter().map(|s| table::int_at(&s.customers, i)));
                row
            })
            .collect();
        let mut total = vec!["total".to_owned()];
        total.extend(self.series.iter().map(|s| table::int(s.total)));
        rows.push(total);
        table::render(&headers, &rows, 1)
    }
}
