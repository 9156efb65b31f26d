//! The engine of the time-series analyses (active customers, trends,
//! revenue): aggregates of a base row set per (series key, bucket), per
//! series key over the whole range, and the same per breakdown group, in one
//! SQL statement. Totals are computed by SQL, not summed in Rust, because
//! distinct counts do not add up across buckets or groups.
//!
//! Cost: two scans of the matching events with a breakdown (one to rank the
//! groups, one for the aggregates), one without; the answer has at most
//! `keys × (buckets + 1) × (groups + 3)` rows.

use std::collections::HashMap;

use chrono::NaiveDate;
use cohort_lake::Lake;

use crate::common::GroupKey;
use crate::read::{self, opt_date, opt_f64, opt_i64, opt_str};
use crate::sql::lit;
use crate::{AnalysisError, RunOptions};

/// Group index of the `all` series, of `other` and of `none`; top groups are 1…N.
const ALL: i64 = -2;
const OTHER: i64 = -1;
const NONE: i64 = 0;

pub(crate) struct GroupedSpec<'a> {
    /// A SELECT with the columns `k` (series key, VARCHAR), `bucket` (DATE),
    /// `g` (breakdown value, VARCHAR, NULL when absent) and whatever the
    /// metrics read.
    pub base: String,
    /// Aggregate expressions over the base columns.
    pub metrics: &'a [&'a str],
    /// The metric whose total ranks the breakdown groups.
    pub rank: usize,
    /// With a breakdown: how many groups to keep.
    pub breakdown_limit: Option<usize>,
    /// Number of series keys and buckets the answer can have.
    pub keys: usize,
    pub buckets: usize,
}

pub(crate) struct Grouped {
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
    pub fn get(&self, key: &str, bucket: Option<NaiveDate>, group: Option<&GroupKey>) -> Vec<f64> {
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
}

pub(crate) async fn run(
    lake: &Lake,
    opts: &RunOptions,
    spec: &GroupedSpec<'_>,
) -> Result<Grouped, AnalysisError> {
    let top = match spec.breakdown_limit {
        Some(limit) => top_groups(lake, opts, spec, limit).await?,
        None => Vec::new(),
    };
    let tag = if spec.breakdown_limit.is_some() {
        let mut case = String::from("CASE WHEN g IS NULL THEN 0");
        for (i, value) in top.iter().enumerate() {
            case.push_str(&format!(" WHEN g = {} THEN {}", lit(value), i + 1));
        }
        case.push_str(" ELSE -1 END");
        case
    } else {
        ALL.to_string()
    };
    let metrics: Vec<String> = spec
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
    if spec.breakdown_limit.is_some() {
        parts.push(format!(
            "SELECT k, bucket, gi, {metrics} FROM tagged GROUP BY k, bucket, gi"
        ));
        parts.push(format!(
            "SELECT k, CAST(NULL AS DATE) AS bucket, gi, {metrics} FROM tagged GROUP BY k, gi"
        ));
    }
    let sql = format!(
        "WITH base AS ({}), tagged AS (SELECT base.*, CAST({tag} AS BIGINT) AS gi FROM base) {}",
        spec.base,
        parts.join(" UNION ALL ")
    );
    let groups_bound = top.len() + 3;
    let max_rows = spec
        .keys
        .saturating_mul(spec.buckets + 1)
        .saturating_mul(groups_bound)
        .max(1);
    let result = read::query(lake, &sql, opts, max_rows, "the aggregate").await?;

    let width = spec.metrics.len();
    let mut cells = HashMap::new();
    for batch in &result.batches {
        let keys = read::strings(batch, "k")?;
        let buckets = read::dates(batch, "bucket")?;
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
            cells.insert((key, opt_date(&buckets, row), gi), metrics);
        }
    }

    let mut groups: Vec<GroupKey> = top.into_iter().map(GroupKey::Value).collect();
    let has = |gi: i64| cells.keys().any(|(_, b, g)| b.is_none() && *g == gi);
    if spec.breakdown_limit.is_some() {
        if has(NONE) {
            groups.push(GroupKey::None);
        }
        if has(OTHER) {
            groups.push(GroupKey::Other);
        }
    }
    let index = groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let gi = match g {
                GroupKey::Value(_) => i as i64 + 1,
                GroupKey::None => NONE,
                GroupKey::Other => OTHER,
            };
            (g.clone(), gi)
        })
        .collect();
    Ok(Grouped {
        groups,
        index,
        cells,
        width,
    })
}

/// The `limit` values with the largest ranking metric over the whole range
/// (ties by value, so the choice is stable).
async fn top_groups(
    lake: &Lake,
    opts: &RunOptions,
    spec: &GroupedSpec<'_>,
    limit: usize,
) -> Result<Vec<String>, AnalysisError> {
    let rank = spec
        .metrics
        .get(spec.rank)
        .ok_or_else(|| AnalysisError::Internal("ranking metric out of range".into()))?;
    let sql = format!(
        "WITH base AS ({}) SELECT g, CAST({rank} AS DOUBLE) AS n FROM base \
         WHERE g IS NOT NULL GROUP BY g ORDER BY n DESC, g LIMIT {limit}",
        spec.base
    );
    let result = read::query(lake, &sql, opts, limit, "the breakdown").await?;
    let mut out = Vec::new();
    for batch in &result.batches {
        let g = read::strings(batch, "g")?;
        out.extend((0..batch.num_rows()).filter_map(|i| opt_str(&g, i)));
    }
    Ok(out)
}
