//! Revenue and orders per bucket.

use chrono::NaiveDate;
use cohort_lake::Lake;
use serde::{Deserialize, Serialize};

use crate::common::{
    Breakdown, GroupKey, Interval, PropertyFilter, check_filters, check_name, check_range,
    default_interval, from_field, ratio, scoped, to_field,
};
use crate::grouped::{self, TimeSeries};
use crate::sql::{self, lit};
use crate::table::{self, SeriesRow};
use crate::{AnalysisError, RunOptions};

fn default_order_event() -> String {
    "Order Completed".to_owned()
}

/// Revenue and orders: per bucket, the revenue of the order events, their
/// number, the distinct customers who placed them, and the average order
/// value (revenue / orders).
///
/// ```json
/// {"from": "2024-01-01", "to": "2025-01-01", "interval": "month",
///  "order_event": "Order Completed", "breakdown": {"property": "currency"}}
/// ```
///
/// An order is one event named `order_event` (default `Order Completed`).
/// Its revenue is `properties.revenue`, else `total`, else `value` (the
/// profile's default order rules); an order without any counts as an order
/// of 0. Amounts in different currencies are added as they are: filter or
/// break down by `currency` to separate them. Groups are ranked by revenue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevenueRequest {
    #[serde(deserialize_with = "from_field")]
    pub from: NaiveDate,
    #[serde(deserialize_with = "to_field")]
    pub to: NaiveDate,
    #[serde(default = "default_interval")]
    pub interval: Interval,
    #[serde(default = "default_order_event")]
    pub order_event: String,
    #[serde(default)]
    pub filters: Vec<PropertyFilter>,
    #[serde(default)]
    pub segment: Option<String>,
    #[serde(default)]
    pub breakdown: Option<Breakdown>,
    #[serde(default)]
    pub breakdown_limit: Option<usize>,
}

impl RevenueRequest {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), AnalysisError> {
        check_range(self.from, self.to)?;
        check_name("order_event", &self.order_event)?;
        check_filters("filters", &self.filters)?;
        self.scope().check_segment_and_breakdown()
    }
}

scoped!(RevenueRequest);

/// Revenue and orders, ready for a bar chart: `buckets` is the x-axis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Revenue {
    pub interval: Interval,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub order_event: String,
    pub buckets: Vec<NaiveDate>,
    /// `all` first, then one series per breakdown group.
    pub series: Vec<RevenueSeries>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RevenueSeries {
    pub label: String,
    pub group: Option<GroupKey>,
    pub revenue: Vec<f64>,
    pub orders: Vec<u64>,
    /// Distinct customers with an order in the bucket.
    pub buyers: Vec<u64>,
    /// Revenue / orders; `null` in a bucket without orders.
    pub average_order_value: Vec<Option<f64>>,
    pub totals: RevenueTotals,
}

/// A series over the whole range (`buyers` counted once each).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RevenueTotals {
    pub revenue: f64,
    pub orders: u64,
    pub buyers: u64,
    pub average_order_value: Option<f64>,
}

/// Runs the analysis (validating the request first).
pub async fn revenue(
    lake: &Lake,
    request: &RevenueRequest,
    opts: &RunOptions,
) -> Result<Revenue, AnalysisError> {
    request.validate()?;
    let grouped = TimeSeries {
        interval: request.interval,
        key: "''",
        keys: 1,
        columns: ", coalesce(e.revenue, json_get_float(e.properties, 'total'), \
                    json_get_float(e.properties, 'value'), 0.0) AS amount",
        conditions: format!(
            " AND e.event = {event}{filters}",
            event = lit(&request.order_event),
            filters = sql::and_filters(&request.filters)?,
        ),
        metrics: &["sum(amount)", "count(*)", "count(DISTINCT customer_id)"],
    }
    .run(lake, opts, request.scope())
    .await?;
    let series = grouped.series(|group| {
        let cells = grouped.cells("", group);
        let total = &cells.total;
        RevenueSeries {
            label: grouped::label(group),
            group: group.cloned(),
            revenue: cells.values(0),
            orders: cells.counts(1),
            buyers: cells.counts(2),
            average_order_value: cells.per_bucket.iter().map(|m| ratio(m[0], m[1])).collect(),
            totals: RevenueTotals {
                revenue: total[0],
                orders: total[1] as u64,
                buyers: total[2] as u64,
                average_order_value: ratio(total[0], total[1]),
            },
        }
    });
    Ok(Revenue {
        interval: request.interval,
        from: request.from,
        to: request.to,
        order_event: request.order_event.clone(),
        buckets: grouped.buckets,
        series,
    })
}

impl SeriesRow for RevenueSeries {
    fn label(&self) -> &str {
        &self.label
    }

    fn cells(&self, bucket: Option<usize>) -> Vec<String> {
        match bucket {
            Some(i) => vec![
                table::money(self.revenue.get(i).copied()),
                table::int_at(&self.orders, i),
                table::int_at(&self.buyers, i),
                table::money(self.average_order_value.get(i).copied().flatten()),
            ],
            None => vec![
                table::money(Some(self.totals.revenue)),
                table::int(self.totals.orders),
                table::int(self.totals.buyers),
                table::money(self.totals.average_order_value),
            ],
        }
    }
}

impl Revenue {
    /// One row per series and bucket, then the series' total.
    pub fn to_table(&self) -> String {
        table::series_table(
            self.interval.unit(),
            &["revenue", "orders", "buyers", "avg order"],
            &self.buckets,
            &self.series,
        )
    }
}
