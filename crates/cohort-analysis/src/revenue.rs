//! Revenue and orders per bucket.

use chrono::NaiveDate;
use cohort_lake::Lake;
use serde::{Deserialize, Serialize};

use crate::common::{
    Breakdown, GroupKey, Interval, PropertyFilter, breakdown_limit, check_filters, check_name,
    check_range, check_segment, default_interval, from_field, ratio, to_field,
};
use crate::grouped::{self, GroupedSpec};
use crate::sql::{self, lit};
use crate::table;
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
        check_segment(self.segment.as_deref())?;
        if let Some(b) = &self.breakdown {
            b.validate("breakdown")?;
        }
        breakdown_limit(self.breakdown_limit)?;
        Ok(())
    }
}

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
    let buckets = request.interval.buckets(request.from, request.to);
    let (group, join) = sql::breakdown(request.breakdown.as_ref())?;
    let base = format!(
        "SELECT '' AS k, {bucket} AS bucket, {group} AS g, e.customer_id AS customer_id, \
         coalesce(e.revenue, json_get_float(e.properties, 'total'), \
                  json_get_float(e.properties, 'value'), 0.0) AS amount \
         FROM events e{join} WHERE {days} AND e.event = {event}{filters}{segment}",
        bucket = sql::bucket(request.interval),
        days = sql::in_days(request.from, request.to),
        event = lit(&request.order_event),
        filters = sql::and_filters(&request.filters)?,
        segment = sql::and_segment(request.segment.as_deref()),
    );
    let limit = breakdown_limit(request.breakdown_limit)?;
    let grouped = grouped::run(
        lake,
        opts,
        &GroupedSpec {
            base,
            metrics: &["sum(amount)", "count(*)", "count(DISTINCT customer_id)"],
            rank: 0,
            breakdown_limit: request.breakdown.as_ref().map(|_| limit),
            keys: 1,
            buckets: buckets.len(),
        },
    )
    .await?;
    let series_of = |group: Option<&GroupKey>| {
        let cells: Vec<Vec<f64>> = buckets
            .iter()
            .map(|b| grouped.get("", Some(*b), group))
            .collect();
        let total = grouped.get("", None, group);
        RevenueSeries {
            label: group.map_or_else(|| "all".to_owned(), GroupKey::label),
            group: group.cloned(),
            revenue: cells.iter().map(|m| m[0]).collect(),
            orders: cells.iter().map(|m| m[1] as u64).collect(),
            buyers: cells.iter().map(|m| m[2] as u64).collect(),
            average_order_value: cells.iter().map(|m| ratio(m[0], m[1])).collect(),
            totals: RevenueTotals {
                revenue: total[0],
                orders: total[1] as u64,
                buyers: total[2] as u64,
                average_order_value: ratio(total[0], total[1]),
            },
        }
    };
    let mut series = vec![series_of(None)];
    series.extend(grouped.groups.iter().map(|g| series_of(Some(g))));
    Ok(Revenue {
        interval: request.interval,
        from: request.from,
        to: request.to,
        order_event: request.order_event.clone(),
        buckets,
        series,
    })
}

impl Revenue {
    /// One row per series and bucket, then the series' total.
    pub fn to_table(&self) -> String {
        let headers = [
            self.interval.unit(),
            "series",
            "revenue",
            "orders",
            "buyers",
            "avg order",
        ]
        .map(String::from);
        let mut rows = Vec::new();
        for s in &self.series {
            for (i, b) in self.buckets.iter().enumerate() {
                rows.push(vec![
                    b.to_string(),
                    s.label.clone(),
                    table::money(s.revenue.get(i).copied()),
                    table::int(s.orders.get(i).copied().unwrap_or(0)),
                    table::int(s.buyers.get(i).copied().unwrap_or(0)),
                    table::money(s.average_order_value.get(i).copied().flatten()),
                ]);
            }
            rows.push(vec![
                "total".to_owned(),
                s.label.clone(),
                table::money(Some(s.totals.revenue)),
                table::int(s.totals.orders),
                table::int(s.totals.buyers),
                table::money(s.totals.average_order_value),
            ]);
        }
        table::render(&headers, &rows, 2)
    }
}
