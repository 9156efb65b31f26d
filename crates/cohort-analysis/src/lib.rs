//! Cohort's analyses over the event lake: active customers, event trends,
//! ordered conversion funnels, retention cohorts, revenue and orders.
//!
//! Each analysis is a typed request (serde `Deserialize`, the JSON body of
//! `POST /api/v1/analyses/…`), validated with errors that name the bad field,
//! turned into read-only SQL over the tables [`cohort_lake::Lake`] registers,
//! and shaped into a serde result ready for a chart (an x-axis of bucket start
//! dates and one array of values per series) or a text table
//! (`to_table()`).
//!
//! # Common rules
//!
//! * **Ranges** are whole UTC days, `from` inclusive, `to` exclusive
//!   (`from == to` is an empty range with no buckets; `from > to` is an error).
//! * **Intervals** bucket events by the UTC day, the ISO week (starting on
//!   Monday) or the calendar month of their `timestamp`. A bucket is named by
//!   its first day, so the first week or month may start before `from`; only
//!   events inside the range are counted in it.
//! * **Customers** are the `customer_id` of events (events without one count
//!   as events but never as customers).
//! * **Segments**: `segment` keeps customers currently in that segment
//!   (`memberships` table).
//! * **Paths** address a value inside an event's JSON: `{"property": "plan"}`
//!   is the top-level key `plan` of `properties`, `{"property": "address.city"}`
//!   the key `city` of the object under `address`, and `{"context":
//!   "device.type"}` a path within the event's `context` (`os.name`,
//!   `library.name`, `campaign.source`, `locale` …). Keys are joined by dots;
//!   a dot or a backslash inside a key is escaped with a backslash
//!   (`utm\.source` is the one key `utm.source`; [`escape_key`] does it); a
//!   numeric key reaching an array indexes it (`items.0.sku`). See
//!   [`PropertyFilter`].
//! * **Breakdowns** group by an event property or context path
//!   (`{"property": "plan"}`, `{"context": "device.type"}`, compared as text)
//!   or a profile trait (`{"trait": "city"}`, the customer's current value).
//!   The `limit` largest groups (default 10, at most 50) are kept; the rest
//!   are one `other` group; events without the value form the `none` group.
//!   Every result also has the `all` series, which is not the sum of the
//!   groups for distinct counts (a customer can be in several property
//!   groups). Funnels and retention put each customer in one group (that of
//!   their first step or cohort-defining event), so their groups add up.
//! * **Filters** (`[{"property": "plan", "equals": "pro"}]`, or `{"context":
//!   "os.name", "equals": "iOS"}`) keep events whose value at the path
//!   equals a string, number or boolean.
//! * All user text reaches SQL as escaped string literals, every key of a
//!   path included (they are arguments of the JSON functions, never
//!   identifiers).
//!
//! The semantics of each analysis are on its request type: [`ActiveRequest`],
//! [`TrendsRequest`], [`FunnelRequest`], [`RetentionRequest`],
//! [`RevenueRequest`].

mod active;
mod common;
mod customers;
pub mod experiment;
mod funnel;
mod grouped;
mod read;
mod retention;
mod revenue;
mod sql;
mod table;
mod trends;

use std::time::Duration;

pub use active::{ActiveCustomers, ActiveRequest, ActiveSeries, active_customers};
pub use common::{
    Breakdown, EventSpec, GroupKey, Interval, MAX_PATH_KEYS, PropertyFilter, escape_key,
};
pub use funnel::{
    ConversionWindow, Funnel, FunnelGroup, FunnelRequest, FunnelStep, MAX_FUNNEL_STEPS, funnel,
};
pub use retention::{
    Retention, RetentionCohort, RetentionGroup, RetentionPeriod, RetentionRequest, RetentionTotal,
    retention,
};
pub use revenue::{Revenue, RevenueRequest, RevenueSeries, RevenueTotals, revenue};
pub use trends::{TrendSeries, Trends, TrendsRequest, trends};

/// Errors of an analysis.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// The request is invalid; `field` names the offending field
    /// (`steps[2].event`, `to` …).
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    /// The analysis would read or return more rows than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// The SQL engine failed (timeout, I/O …).
    #[error(transparent)]
    Lake(#[from] cohort_lake::LakeError),
    /// A result had an unexpected shape: a bug, not a bad request.
    #[error("internal analysis error: {0}")]
    Internal(String),
}

impl AnalysisError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        AnalysisError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Limits of one analysis run.
#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    /// Wall-clock limit of each SQL query the analysis runs.
    pub timeout: Duration,
    /// Most event rows a funnel reads into memory (one row per matching
    /// event of a customer); more is [`AnalysisError::TooLarge`].
    pub max_funnel_rows: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            max_funnel_rows: 5_000_000,
        }
    }
}
