//! Cohort's event lake and SQL engine.
//!
//! Processed events are stored as Parquet files, one directory per UTC day of
//! the event's `timestamp`, plus one directory for late events:
//!
//! ```text
//! <data_dir>/lake/events/date=2024-05-01/part-<first_seq>-<last_seq>.parquet
//! <data_dir>/lake/events/late/part-<first_seq>-<last_seq>.parquet
//! ```
//!
//! An event received more than [`LATE_AFTER_DAYS`] after its day (a historical import, a
//! device that was offline for months, a client that dates events at random) goes to the late
//! area ([`Area`]), whose files carry `date` as a column and are sorted by it; so clients cannot
//! multiply the directories and files every query lists and opens, whatever times they send.
//!
//! The files open as they are in DuckDB, Spark, pandas or Polars: the day
//! directories with Hive partitioning (`events/date=*/*.parquet`), the late files
//! as plain Parquet (`events/late/*.parquet`); Snappy compression, timestamps in
//! microseconds UTC.
//!
//! * [`LakeWriter`] appends events durably and idempotently by seq, and
//!   compacts the small files of an area into one ([`LakeWriter::compact`],
//!   [`LakeWriter::compact_all`]).
//! * [`Lake`] answers read-only SQL (Apache DataFusion) over the tables
//!   `events`, `profiles`, `profile_traits`, `identities` and `memberships`.
//!
//! # The `events` table
//!
//! | column | type | |
//! | --- | --- | --- |
//! | `seq` | BIGINT | position in the inbox, unique and increasing |
//! | `source_id` | BIGINT | |
//! | `message_id` | VARCHAR | |
//! | `customer_id` | BIGINT NULL | resolved profile |
//! | `type` | VARCHAR | track, identify, page, screen, group, alias |
//! | `event` | VARCHAR | event name, or `$page` … |
//! | `timestamp`, `received_at` | TIMESTAMP (µs, UTC) | |
//! | `user_id`, `anonymous_id` | VARCHAR NULL | |
//! | `properties`, `context`, `traits` | VARCHAR NULL | JSON text |
//! | `revenue`, `price` | DOUBLE NULL | promoted from `properties`: JSON numbers and plain decimal strings (`cohort_core::number::json_number`) |
//! | `quantity` | BIGINT NULL | promoted from `properties`: whole numbers |
//! | `currency`, `category` | VARCHAR NULL | promoted from `properties`: JSON strings |
//! | `product_id`, `order_id` | VARCHAR NULL | promoted from `properties`: strings, numbers as text |
//!
//! Inside each file, rows are sorted by `event`, `customer_id`, `timestamp`,
//! `seq` (recorded in the Parquet metadata), so a filter on the event name
//! reads only that name's pages.
//! | `date` | DATE | the UTC day of `timestamp`: the partition (directory name), a column in late files |
//!
//! JSON values are read with `json_get_str(properties, 'plan')`,
//! `json_get_float(properties, 'amount')`, `json_get_int`, `json_get_bool`,
//! `properties->>'plan'` and friends (`datafusion-functions-json`). The arrow
//! operators bind more loosely than comparisons: write
//! `(properties->>'plan') = 'pro'`.
//!
//! # Durability and visibility rules
//!
//! * A file `part-A-B.parquet` in `date=D` holds every event of day `D` with a
//!   seq in `A..=B`. Appends are contiguous slices of the seq-ordered stream;
//!   events at or below [`LakeWriter::last_position`] are skipped, so replaying a
//!   range never duplicates rows.
//! * A file whose range lies inside another file's range in the same day is
//!   ignored by readers. Compaction writes the merged file (temporary name,
//!   fsync, rename), which from that instant hides the files it merged, and
//!   then deletes them: a query sees the old files or the merged one, never
//!   both and never neither.
//! * Recent rows ([`Lake::set_recent`]) whose seq is already in a file a query
//!   reads are ignored by that query.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use chrono::{TimeZone, Utc};
//! use cohort_lake::{Lake, LakeEvent, LakeWriter, QueryOptions};
//! use serde_json::json;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let mut writer = LakeWriter::open(dir.path())?;
//! let at = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).single().ok_or("time")?;
//! writer.append(&[LakeEvent {
//!     seq: 1,
//!     source_id: 1,
//!     message_id: "m-1".into(),
//!     customer_id: Some(7),
//!     kind: "track".into(),
//!     name: "Order Completed".into(),
//!     timestamp: at,
//!     received_at: at,
//!     user_id: Some("u-7".into()),
//!     anonymous_id: None,
//!     properties: json!({"revenue": 42.5, "plan": "pro"}),
//!     context: json!({}).into(),
//!     traits: json!({}).into(),
//! }])?;
//! assert_eq!(writer.last_position(), Some(cohort_core::Position::new(0, 1)));
//!
//! let lake = Lake::open(dir.path())?;
//! let runtime = tokio::runtime::Runtime::new()?;
//! let result = runtime.block_on(lake.query(
//!     "SELECT date, sum(revenue) AS revenue, json_get_str(properties, 'plan') AS plan \
//!      FROM events GROUP BY date, plan",
//!     QueryOptions { timeout: Duration::from_secs(10), max_rows: 100 },
//! ))?;
//! let rows = result.to_json_rows()?;
//! assert_eq!(rows[0]["revenue"], json!(42.5));
//! assert_eq!(rows[0]["plan"], json!("pro"));
//! println!("{}", result.to_table_text()?);
//! # Ok(())
//! # }
//! ```

mod files;
mod float_cmp;
mod merges;
mod query;
mod render;
mod schema;
mod store;
mod writer;

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};

pub use files::{Area, LATE_AFTER_DAYS};
pub use query::{
    EmptyState, Lake, QueryOptions, QueryResult, StateError, StateTables, check_read_only,
    default_memory_limit,
};
pub use schema::{
    event_file_schema, events_table_schema, identities_schema, memberships_schema,
    profile_traits_schema, profiles_schema, segment_changes_schema, timestamp_type,
};
pub use writer::{Compaction, LakeFile, LakeWriter};

/// Arrow and Parquet as this crate uses them, so callers building
/// [`StateTables`] batches use the same versions.
pub use datafusion::arrow;
pub use datafusion::parquet;

/// One processed event, as the lake stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct LakeEvent {
    /// Inbox position: unique, increasing in processing order, not negative.
    pub seq: i64,
    pub source_id: i64,
    pub message_id: String,
    /// The resolved profile, when identity resolution found or made one.
    pub customer_id: Option<i64>,
    /// `track`, `identify`, `page`, `screen`, `group` or `alias`.
    pub kind: String,
    /// The event name, or `$page`, `$screen`, `$identify` …
    pub name: String,
    /// When the event happened (after timestamp correction); decides the partition.
    pub timestamp: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// A JSON object; `revenue`, `price`, `quantity`, `currency`, `product_id`,
    /// `category` and `order_id` are also stored as typed columns.
    pub properties: serde_json::Value,
    pub context: JsonText,
    pub traits: JsonText,
}

/// JSON stored as written (the lake keeps `context` and `traits` as text columns), so a stored
/// message's parts are copied into the lake without being built as a tree and printed again.
/// Absent JSON is a null column value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JsonText(Option<String>);

impl JsonText {
    /// Text the caller knows to be valid JSON (a part of a message Cohort stored).
    pub fn from_valid(text: impl Into<String>) -> Self {
        JsonText(Some(text.into()))
    }

    pub fn as_str(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl From<serde_json::Value> for JsonText {
    fn from(value: serde_json::Value) -> Self {
        JsonText((!value.is_null()).then(|| value.to_string()))
    }
}

/// Errors of the lake and the SQL engine.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("lake I/O error at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parquet: {0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// The statement is not a query; holds its kind (`INSERT`, `CREATE TABLE` …).
    #[error(
        "only read-only queries are allowed (SELECT, WITH, VALUES, EXPLAIN, DESCRIBE, SHOW), not {0}"
    )]
    NotReadOnly(String),
    #[error("query timed out after {}", format_secs(*.0))]
    Timeout(Duration),
    /// A SQL, planning or execution error, with DataFusion's message.
    #[error("{0}")]
    Query(String),
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    #[error("the lake is locked by another writer ({0})")]
    Locked(PathBuf),
    #[error("an earlier append failed half-way; reopen the LakeWriter to recover")]
    Poisoned,
    #[error("lake is damaged: {0}")]
    Corrupt(String),
    #[error("internal lake error: {0}")]
    Internal(String),
}

/// Highest inbox position up to which the lake under `data_dir` is complete, `None` while it is
/// empty. Readers in other processes use it to know which processed events are not in Parquet
/// yet; files of an append still being committed may hold higher positions.
pub fn complete_position(
    data_dir: impl AsRef<std::path::Path>,
) -> Result<Option<cohort_core::Position>, LakeError> {
    let seq = files::complete_seq(&data_dir.as_ref().join("lake").join("events"))?;
    Ok(seq.map(|seq| cohort_core::Position::new(PARTITION, seq)))
}

/// The lake stores one partition of the inbox: the embedded inbox's only one.
pub(crate) const PARTITION: u32 = 0;

/// `30s`, `1.5s`, `0.25s`.
fn format_secs(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        let text = format!("{:.3}", d.as_secs_f64());
        format!("{}s", text.trim_end_matches('0').trim_end_matches('.'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_message_names_seconds() {
        assert_eq!(
            LakeError::Timeout(Duration::from_secs(30)).to_string(),
            "query timed out after 30s"
        );
        assert_eq!(
            LakeError::Timeout(Duration::from_millis(250)).to_string(),
            "query timed out after 0.25s"
        );
    }
}
