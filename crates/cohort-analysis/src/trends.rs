//! Event trends: events and distinct customers per bucket, per event name.

use chrono::NaiveDate;
use cohort_lake::Lake;
use serde::{Deserialize, Serialize};

use crate::common::{
    Breakdown, GroupKey, Interval, PropertyFilter, check_filters, check_name, check_range,
    default_interval, from_field, scoped, to_field,
};
use crate::grouped::TimeSeries;
use crate::sql::{self, lit};
use crate::table::{self, SeriesRow};
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
        self.scope().check_segment_and_breakdown()
    }
}

scoped!(TrendsRequest);

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
    let names: Vec<String> = request.events.iter().map(|e| lit(e)).collect();
    let grouped = TimeSeries {
        interval: request.interval,
        key: "e.event",
        keys: request.events.len(),
        columns: "",
        conditions: format!(
            " AND e.event IN ({names}){filters}",
            names = names.join(", "),
            filters = sql::and_filters(&request.filters)?,
        ),
        metrics: &["count(*)", "count(DISTINCT customer_id)"],
    }
    .run(lake, opts, request.scope())
    .await?;
    let mut series = Vec::new();
    for event in &request.events {
        series.extend(grouped.series(|group| {
            let cells = grouped.cells(event, group);
            TrendSeries {
                event: event.clone(),
                label: match group {
                    None => event.clone(),
                    Some(g) => format!("{event}: {}", g.label()),
                },
                group: group.cloned(),
                events: cells.counts(0),
                customers: cells.counts(1),
                total_events: cells.total[0] as u64,
                total_customers: cells.total[1] as u64,
            }
        }));
    }
    Ok(Trends {
        interval: request.interval,
        from: request.from,
        to: request.to,
        buckets: grouped.buckets,
        series,
    })
}

impl SeriesRow for TrendSeries {
    fn label(&self) -> &str {
        &self.label
    }

    fn cells(&self, bucket: Option<usize>) -> Vec<String> {
        match bucket {
            Some(i) => vec![
                table::int_at(&self.events, i),
                table::int_at(&self.customers, i),
            ],
            None => vec![
                table::int(self.total_events),
                table::int(self.total_customers),
            ],
        }
    }
}

impl Trends {
    /// One row per series and bucket (events and customers), then its total.
    pub fn to_table(&self) -> String {
        table::series_table(
            self.interval.unit(),
            &["events", "customers"],
            &self.buckets,
            &self.series,
        )
    }
}
