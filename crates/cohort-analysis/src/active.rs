//! Daily, weekly and monthly active customers.

use chrono::NaiveDate;
use cohort_lake::Lake;
use serde::{Deserialize, Serialize};

use crate::common::{
    Breakdown, GroupKey, Interval, breakdown_limit, check_name, check_range, check_segment,
    default_interval, from_field, to_field,
};
use crate::grouped::{self, GroupedSpec};
use crate::sql::{self, lit};
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
        check_segment(self.segment.as_deref())?;
        if let Some(b) = &self.breakdown {
            b.validate("breakdown")?;
        }
        breakdown_limit(self.breakdown_limit)?;
        Ok(())
    }
}

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
    let buckets = request.interval.buckets(request.from, request.to);
    let (group, join) = sql::breakdown(request.breakdown.as_ref())?;
    let event = request
        .event
        .as_deref()
        .map(|e| format!(" AND e.event = {}", lit(e)))
        .unwrap_or_default();
    let base = format!(
        "SELECT '' AS k, {bucket} AS bucket, {group} AS g, e.customer_id AS customer_id \
         FROM events e{join} WHERE {days} AND e.customer_id IS NOT NULL{event}{segment}",
        bucket = sql::bucket(request.interval),
        days = sql::in_days(request.from, request.to),
        segment = sql::and_segment(request.segment.as_deref()),
    );
    let limit = breakdown_limit(request.breakdown_limit)?;
    let grouped = grouped::run(
        lake,
        opts,
        &GroupedSpec {
            base,
            metrics: &["count(DISTINCT customer_id)"],
            rank: 0,
            breakdown_limit: request.breakdown.as_ref().map(|_| limit),
            keys: 1,
            buckets: buckets.len(),
        },
    )
    .await?;
    let series_of = |group: Option<&GroupKey>| {
        let count = |bucket| grouped.get("", bucket, group)[0] as u64;
        ActiveSeries {
            label: group.map_or_else(|| "all".to_owned(), GroupKey::label),
            group: group.cloned(),
            customers: buckets.iter().map(|b| count(Some(*b))).collect(),
            total: count(None),
        }
    };
    let mut series = vec![series_of(None)];
    series.extend(grouped.groups.iter().map(|g| series_of(Some(g))));
    Ok(ActiveCustomers {
        interval: request.interval,
        from: request.from,
        to: request.to,
        buckets,
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
                row.extend(
                    self.series
                        .iter()
                        .map(|s| table::int(s.customers.get(i).copied().unwrap_or(0))),
                );
                row
            })
            .collect();
        let mut total = vec!["total".to_owned()];
        total.extend(self.series.iter().map(|s| table::int(s.total)));
        rows.push(total);
        table::render(&headers, &rows, 1)
    }
}
