//! Event trends: events and distinct customers per bucket, per event name.

use chrono::NaiveDate;
use cohort_lake::Lake;
use serde::{Deserialize, Serialize};

use crate::common::{
    Breakdown, GroupKey, Interval, PropertyFilter, breakdown_limit, check_filters, check_name,
    check_range, check_segment, default_interval, from_field, to_field,
};
use crate::grouped::{self, GroupedSpec};
use crate::sql::{self, lit};
use crate::table;
use crate::{AnalysisError, RunOptions};

/// Most event names in one trends request.
const MAX_EVENTS: usize = 20;

/// Event trends: for each event name, the number of events and of distinct
/// customers per bucket.
///
/// ```json
/// {"from": "2024-05-01", "to": "2024-06-01", "interval": "day",
///  "events": ["Product Viewed", "Order Completed"],
///  "filters": [{"property": "currency", "equals": "EUR"}],
///  "breakdown": {"property": "category"}}
/// ```
///
/// `filters` apply to every event. Events without a customer count as
/// events (unless a segment is given) but not as customers. Breakdown groups
/// are chosen across all the events, by number of events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrendsRequest {
    #[serde(deserialize_with = "from_field")]
    pub from: NaiveDate,
    #[serde(deserialize_with = "to_field")]
    pub to: NaiveDate,
    #[serde(default = "default_interval")]
    pub interval: Interval,
    pub events: Vec<String>,
    #[serde(default)]
    pub filters: Vec<PropertyFilter>,
    #[serde(default)]
    pub segment: Option<String>,
    #[serde(default)]
    pub breakdown: Option<Breakdown>,
    #[serde(default)]
    pub breakdown_limit: Option<usize>,
}

impl TrendsRequest {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), AnalysisError> {
        check_range(self.from, self.to)?;
        if self.events.is_empty() {
            return Err(AnalysisError::invalid("events", "name at least one event"));
        }
        if self.events.len() > MAX_EVENTS {
            return Err(AnalysisError::invalid(
                "events",
                format!(
                    "{} events; at most {MAX_EVENTS} are allowed",
                    self.events.len()
                ),
            ));
        }
        for (i, e) in self.events.iter().enumerate() {
            let field = format!("events[{i}]");
            check_name(&field, e)?;
            if self.events[..i].contains(e) {
                return Err(AnalysisError::invalid(
                    field,
                    format!("{e:?} is listed twice"),
                ));
            }
        }
        check_filters("filters", &self.filters)?;
        check_segment(self.segment.as_deref())?;
        if let Some(b) = &self.breakdown {
            b.validate("breakdown")?;
        }
        breakdown_limit(self.breakdown_limit)?;
        Ok(())
    }
}

/// Event trends, ready for a line or bar chart: `buckets` is the x-axis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trends {
    pub interval: Interval,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub buckets: Vec<NaiveDate>,
    /// Per event, in request order: the event's series, then one per group.
    pub series: Vec<TrendSeries>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrendSeries {
    pub event: String,
    /// The event name, or `event: group`.
    pub label: String,
    /// The breakdown group; absent for the event's own series.
    pub group: Option<GroupKey>,
    /// Events per bucket.
    pub events: Vec<u64>,
    /// Distinct customers per bucket.
    pub customers: Vec<u64>,
    pub total_events: u64,
    /// Distinct customers over the whole range.
    pub total_customers: u64,
}

/// Runs the analysis (validating the request first).
pub async fn trends(
    lake: &Lake,
    request: &TrendsRequest,
    opts: &RunOptions,
) -> Result<Trends, AnalysisError> {
    request.validate()?;
    let buckets = request.interval.buckets(request.from, request.to);
    let (group, join) = sql::breakdown(request.breakdown.as_ref())?;
    let names: Vec<String> = request.events.iter().map(|e| lit(e)).collect();
    let base = format!(
        "SELECT e.event AS k, {bucket} AS bucket, {group} AS g, e.customer_id AS customer_id \
         FROM events e{join} WHERE {days} AND e.event IN ({names}){filters}{segment}",
        bucket = sql::bucket(request.interval),
        days = sql::in_days(request.from, request.to),
        names = names.join(", "),
        filters = sql::and_filters(&request.filters)?,
        segment = sql::and_segment(request.segment.as_deref()),
    );
    let limit = breakdown_limit(request.breakdown_limit)?;
    let grouped = grouped::run(
        lake,
        opts,
        &GroupedSpec {
            base,
            metrics: &["count(*)", "count(DISTINCT customer_id)"],
            rank: 0,
            breakdown_limit: request.breakdown.as_ref().map(|_| limit),
            keys: request.events.len(),
            buckets: buckets.len(),
        },
    )
    .await?;
    let mut series = Vec::new();
    for event in &request.events {
        let series_of = |group: Option<&GroupKey>| {
            let cell = |bucket| grouped.get(event, bucket, group);
            let per_bucket: Vec<Vec<f64>> = buckets.iter().map(|b| cell(Some(*b))).collect();
            let total = cell(None);
            TrendSeries {
                event: event.clone(),
                label: match group {
                    None => event.clone(),
                    Some(g) => format!("{event}: {}", g.label()),
                },
                group: group.cloned(),
                events: per_bucket.iter().map(|m| m[0] as u64).collect(),
                customers: per_bucket.iter().map(|m| m[1] as u64).collect(),
                total_events: total[0] as u64,
                total_customers: total[1] as u64,
            }
        };
        series.push(series_of(None));
        series.extend(grouped.groups.iter().map(|g| series_of(Some(g))));
    }
    Ok(Trends {
        interval: request.interval,
        from: request.from,
        to: request.to,
        buckets,
        series,
    })
}

impl Trends {
    /// One row per series and bucket (events and customers), then its total.
    pub fn to_table(&self) -> String {
        let headers = [self.interval.unit(), "series", "events", "customers"].map(String::from);
        let mut rows = Vec::new();
        for s in &self.series {
            for (i, b) in self.buckets.iter().enumerate() {
                rows.push(vec![
                    b.to_string(),
                    s.label.clone(),
                    table::int(s.events.get(i).copied().unwrap_or(0)),
                    table::int(s.customers.get(i).copied().unwrap_or(0)),
                ]);
            }
            rows.push(vec![
                "total".to_owned(),
                s.label.clone(),
                table::int(s.total_events),
                table::int(s.total_customers),
            ]);
        }
        table::render(&headers, &rows, 2)
    }
}
