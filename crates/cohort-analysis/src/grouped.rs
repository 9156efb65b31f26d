//! The engine of the time-series analyses (active customers, trends,
//! revenue): aggregates of a base row set per (series key, bucket), per
//! series key over the whole range, and the same per breakdown group, in one
//! SQL statement. Totals are computed by SQL, not summed in Rust, because
//! distinct counts do not add up across buckets or groups.
//!
//! Cost: two scans of the matching events with a breakdown (one to rank the
//! groups, one for the aggregates), one without; the answer has at most
//! `keys × (buckets + 1) × (groups + 3)` rows.
//!
//! The breakdown's group indexes ([`group_index`], [`group_keys`]) and the
//! ranking query's reader ([`top_values`]) serve retention too.

use std::collections::HashMap;

use chrono::NaiveDate;
use cohort_lake::Lake;

use crate::common::{GroupKey, Interval, Scope};
use crate::read::{self, opt_date, opt_f64, opt_i64, opt_str};
use crate::sql::{self, lit};
use crate::{AnalysisError, RunOptions};

/// Group index of the `all` series, of `other` and of `none` (rows without a
/// breakdown value); top groups are 1…N.
const ALL: i64 = -2;
pub(crate) const OTHER: i64 = -1;
pub(crate) const NONE: i64 = 0;

/// A time series over the events of a scope's range (of its segment's
/// customers when it has one): each event with its series key `k`, the
/// `bucket` of `interval` it falls in, its breakdown value `g` and its
/// `customer_id`, aggregated per key, bucket and group by `metrics`.
pub(crate) struct TimeSeries<'a> {
    pub interval: Interval,
    /// The series key expression: `''` for a single series, `e.event` for
    /// one per event name.
    pub key: &'a str,
    /// Number of series keys the answer can have.
    pub keys: usize,
    /// More columns the metrics read, each as `, expression AS name`.
    pub columns: &'a str,
    /// Conditions on the events besides the range and the segment, each as
    /// ` AND condition`.
    pub conditions: String,
    /// Aggregate expressions over the columns; the first one ranks the
    /// breakdown groups.
    pub metrics: &'a [&'a str],
}

/// The metrics of one series key and group.
pub(crate) struct Cells {
    /// Per bucket, in axis order.
    pub per_bucket: Vec<Vec<f64>>,
    /// Over the whole range.
    pub total: Vec<f64>,
}

impl Cells {
    /// Metric `m` per bucket.
    pub fn values(&self, m: usize) -> Vec<f64> {
        self.per_bucket.iter().map(|cell| cell[m]).collect()
    }

    /// Metric `m` per bucket, a count.
    pub fn counts(&self, m: usize) -> Vec<u64> {
        self.per_bucket.iter().map(|cell| cell[m] as u64).collect()
    }
}

pub(crate) struct Grouped {
    /// First day of each bucket: the x-axis.
    pub buckets: Vec<NaiveDate>,
    /// Breakdown groups in display order: the largest values first, then
    /// `none` and `other` when they have rows. Empty without a breakdown.
    pub groups: Vec<GroupKey>,
    index: HashMap<GroupKey, i64>,
    cells: HashMap<(String, Option<NaiveDate>, i64), Vec<f64>>,
    width: usize,
}

impl Grouped {
    /// The metrics of a series key in a bucket (`None` for the whole range),
    /// for a group (`None` for all rows); zeros where nothing matched.
    fn get(&self, key: &str, bucket: Option<NaiveDate>, group: Option<&GroupKey>) -> Vec<f64> {
        let gi = match group {
            None => ALL,
            Some(g) => match self.index.get(g) {
                Some(i) => *i,
                None => return vec![0.0; self.width],
            },
        };
        self.cells
            .get(&(key.to_owned(), bucket, gi))
            .cloned()
            .unwrap_or_else(|| vec![0.0; self.width])
    }

    /// The metrics of a series key for a group (`None` for all rows), per
    /// bucket and over the whole range.
    pub fn cells(&self, key: &str, group: Option<&GroupKey>) -> Cells {
        Cells {
            per_bucket: self
                .buckets
                .iter()
                .map(|b| self.get(key, Some(*b), group))
                .collect(),
            total: self.get(key, None, group),
        }
    }

    /// The series of all rows (`series_of(None)`), then one per breakdown
    /// group in display order.
    pub fn series<T>(&self, series_of: impl Fn(Option<&GroupKey>) -> T) -> Vec<T> {
        std::iter::once(None)
            .chain(self.groups.iter().map(Some))
            .map(series_of)
            .collect()
    }
}

/// The label of a series: `all`, or its group's.
pub(crate) fn label(group: Option<&GroupKey>) -> String {
    group.map_or_else(|| "all".to_owned(), GroupKey::label)
}

impl TimeSeries<'_> {
    pub(crate) async fn run(
        &self,
        lake: &Lake,
        opts: &RunOptions,
        scope: Scope<'_>,
    ) -> Result<Grouped, AnalysisError> {
        let (group, join) = sql::breakdown(scope.breakdown)?;
        let base = format!(
            "SELECT {key} AS k, {bucket} AS bucket, {group} AS g, e.customer_id AS customer_id{columns} \
             FROM events e{join} WHERE {days}{conditions}{segment}",
            key = self.key,
            bucket = sql::bucket(self.interval),
            columns = self.columns,
            days = sql::in_days(scope.from, scope.to),
            conditions = self.conditions,
            segment = sql::and_segment(scope.segment),
        );
        let buckets = self.interval.buckets(scope.from, scope.to);
        self.aggregate(lake, opts, &base, scope.group_limit()?, buckets)
            .await
    }

    /// Aggregates the rows of `base`, keeping the `breakdown_limit` largest
    /// groups when there is a breakdown.
    async fn aggregate(
        &self,
        lake: &Lake,
        opts: &RunOptions,
        base: &str,
        breakdown_limit: Option<usize>,
        buckets: Vec<NaiveDate>,
    ) -> Result<Grouped, AnalysisError> {
        let top = match breakdown_limit {
            Some(limit) => {
                let rank = self
                    .metrics
                    .first()
                    .ok_or_else(|| AnalysisError::Internal("ranking metric out of range".into()))?;
                // The values with the largest ranking metric over the whole
                // range (ties by value, so the choice is stable).
                let sql = format!(
                    "WITH base AS ({base}) SELECT g, CAST({rank} AS DOUBLE) AS n FROM base \
                     WHERE g IS NOT NULL GROUP BY g ORDER BY n DESC, g LIMIT {limit}"
                );
                top_values(lake, opts, &sql, limit).await?
            }
            None => Vec::new(),
        };
        let tag = match breakdown_limit {
            Some(_) => group_index(&top),
            None => ALL.to_string(),
        };
        let metrics: Vec<String> = self
            .metrics
            .iter()
            .enumerate()
            .map(|(i, m)| format!("CAST({m} AS DOUBLE) AS m{i}"))
            .collect();
        let metrics = metrics.join(", ");
        let mut parts = vec![
            format!(
                "SELECT k, bucket, CAST({ALL} AS BIGINT) AS gi, {metrics} FROM tagged GROUP BY k, bucket"
            ),
            format!(
                "SELECT k, CAST(NULL AS DATE) AS bucket, CAST({ALL} AS BIGINT) AS gi, {metrics} FROM tagged GROUP BY k"
            ),
        ];
        if breakdown_limit.is_some() {
            parts.push(format!(
                "SELECT k, bucket, gi, {metrics} FROM tagged GROUP BY k, bucket, gi"
            ));
            parts.push(format!(
                "SELECT k, CAST(NULL AS DATE) AS bucket, gi, {metrics} FROM tagged GROUP BY k, gi"
            ));
        }
        let sql = format!(
            "WITH base AS ({base}), tagged AS (SELECT base.*, CAST({tag} AS BIGINT) AS gi FROM base) {}",
            parts.join(" UNION ALL ")
        );
        let groups_bound = top.len() + 3;
        let max_rows = self
            .keys
            .saturating_mul(buckets.len() + 1)
            .saturating_mul(groups_bound)
            .max(1);
        let result = read::query(lake, &sql, opts, max_rows, "the aggregate").await?;

        let width = self.metrics.len();
        let mut cells = HashMap::new();
        for batch in &result.batches {
            let keys = read::strings(batch, "k")?;
            let bucket = read::dates(batch, "bucket")?;
            let gis = read::i64s(batch, "gi")?;
            let values = (0..width)
                .map(|i| read::f64s(batch, &format!("m{i}")))
                .collect::<Result<Vec<_>, _>>()?;
            for row in 0..batch.num_rows() {
                let key = opt_str(&keys, row).unwrap_or_default();
                let gi = opt_i64(&gis, row).unwrap_or(ALL);
                let metrics = values
                    .iter()
                    .map(|v| opt_f64(v, row).unwrap_or(0.0))
                    .collect();
                cells.insert((key, opt_date(&bucket, row), gi), metrics);
            }
        }

        let has = |gi: i64| cells.keys().any(|(_, b, g)| b.is_none() && *g == gi);
        let keys: Vec<(i64, GroupKey)> = match breakdown_limit {
            Some(_) => group_keys(top)
                .into_iter()
                .filter(|(gi, key)| matches!(key, GroupKey::Value(_)) || has(*gi))
                .collect(),
            None => Vec::new(),
        };
        Ok(Grouped {
            buckets,
            groups: keys.iter().map(|(_, key)| key.clone()).collect(),
            index: keys.into_iter().map(|(gi, key)| (key, gi)).collect(),
            cells,
            width,
        })
    }
}

/// The group index of the breakdown value `g`, as a SQL `CASE`: 1…N for the
/// `top` values in order, [`NONE`] without a value, [`OTHER`] for the rest.
pub(crate) fn group_index(top: &[String]) -> String {
    let mut case = format!("CASE WHEN g IS NULL THEN {NONE}");
    for (i, value) in top.iter().enumerate() {
        case.push_str(&format!(" WHEN g = {} THEN {}", lit(value), i + 1));
    }
    case.push_str(&format!(" ELSE {OTHER} END"));
    case
}

/// The groups of the indexes of [`group_index`], in display order: the `top`
/// values, then `none` and `other`.
pub(crate) fn group_keys(top: Vec<String>) -> Vec<(i64, GroupKey)> {
    let mut keys: Vec<(i64, GroupKey)> = (1..).zip(top.into_iter().map(GroupKey::Value)).collect();
    keys.push((NONE, GroupKey::None));
    keys.push((OTHER, GroupKey::Other));
    keys
}

/// The breakdown values in the column `g` of a ranking query that returns
/// at most `limit` rows, in its order.
pub(crate) async fn top_values(
    lake: &Lake,
    opts: &RunOptions,
    sql: &str,
    limit: usize,
) -> Result<Vec<String>, AnalysisError> {
    let result = read::query(lake, sql, opts, limit, "the breakdown").await?;
    let mut out = Vec::new();
    for batch in &result.batches {
        let g = read::strings(batch, "g")?;
        out.extend((0..batch.num_rows()).filter_map(|i| opt_str(&g, i)));
    }
    Ok(out)
}
