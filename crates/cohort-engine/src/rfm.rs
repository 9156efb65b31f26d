//! RFM analysis over the store: [`run_rfm`] scores every customer who ordered in the window,
//! writes the results onto their profiles and stores the report; [`latest_rfm`] answers the
//! latest report. `POST /api/v1/rfm/run`, `GET /api/v1/rfm/report` and `cohort rfm` call these.
//!
//! Results land on profiles as traits, so segments, tags and SQL can use them like any other:
//!
//! | trait | value |
//! | --- | --- |
//! | `rfm_recency`, `rfm_frequency`, `rfm_monetary` | scores 1 to 5 (5 best) |
//! | `rfm_score` | the three scores as one code, recency first: `"545"` |
//! | `rfm_segment` | the named segment: `Champions`, `At Risk`, … |
//! | `rfm_cluster` | the k-means cluster, 0 (most valuable) to k - 1 |
//!
//! Customers without an order in the window get none of them (a previous run's are removed).
//! How scores, names and clusters are decided: [`cohort_ml::rfm`].

use chrono::{NaiveDate, Utc};
use cohort_ml::rfm::{
    DEFAULT_K, DEFAULT_SEED, MAX_K, RfmError, RfmInput, RfmOptions, RfmReport, analyse,
};
use cohort_store::{AnalysisRun, NewAnalysisRun, ReplaceSummary, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The traits a run owns.
pub const RFM_TRAITS: [&str; 6] = [
    "rfm_recency",
    "rfm_frequency",
    "rfm_monetary",
    "rfm_score",
    "rfm_segment",
    "rfm_cluster",
];
/// The `analysis_runs.kind` of RFM reports.
pub const RFM_KIND: &str = "rfm";
/// The longest window: a hundred years.
pub const MAX_WINDOW_DAYS: u32 = 36_500;

/// What a run is asked to do. Every field has a default, so `{}` (or no body) runs over the last
/// 365 days with 5 clusters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RfmParams {
    /// Days of orders to consider, ending with `as_of` (inclusive).
    pub window_days: u32,
    /// Clusters wanted (fewer are found when customers are few or alike).
    pub k: usize,
    /// Seed of the clustering, for reproducible clusters.
    pub seed: u64,
    /// The analysis date (UTC, `YYYY-MM-DD`); today when absent. Recency counts days to it.
    pub as_of: Option<NaiveDate>,
}

impl Default for RfmParams {
    fn default() -> Self {
        RfmParams {
            window_days: 365,
            k: DEFAULT_K,
            seed: DEFAULT_SEED,
            as_of: None,
        }
    }
}

/// One stored run: its parameters (with `as_of` filled in) and report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RfmRun {
    pub id: i64,
    /// RFC 3339.
    pub created_at: String,
    pub params: RfmParams,
    pub report: RfmReport,
    /// What the run changed on profiles; only in the answer to the run itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profiles: Option<ReplaceSummary>,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RfmRunError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Analysis(#[from] RfmError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Days since 1970-01-01 of a date, the unit of `revenue_days.day`.
fn epoch_day(date: NaiveDate) -> i64 {
    date.signed_duration_since(chrono::DateTime::UNIX_EPOCH.date_naive())
        .num_days()
}

/// Runs an RFM analysis and stores its results (blocking: call from a blocking thread).
fn run_rfm(store: &Store, mut params: RfmParams) -> Result<RfmRun, RfmRunError> {
    if params.window_days == 0 || params.window_days > MAX_WINDOW_DAYS {
        return Err(RfmRunError::Invalid(format!(
            "window_days must be between 1 and {MAX_WINDOW_DAYS}, got {}",
            params.window_days
        )));
    }
    if params.k == 0 || params.k > MAX_K {
        return Err(RfmRunError::Invalid(format!(
            "k must be between 1 and {MAX_K}, got {}",
            params.k
        )));
    }
    let as_of = *params.as_of.get_or_insert_with(|| Utc::now().date_naive());
    let as_of_day = epoch_day(as_of);

    let derived = store.derived();
    let stats = derived.order_stats(as_of_day, params.window_days)?;
    let inputs: Vec<RfmInput> = stats
        .iter()
        .map(|s| RfmInput {
            customer_id: s.customer_id,
            // The window ends at as_of, so the difference is 0 or more and below window_days.
            recency_days: u32::try_from(as_of_day - s.last_order_day).unwrap_or(u32::MAX),
            orders: u64::try_from(s.orders).unwrap_or(0),
            revenue: s.revenue,
        })
        .collect();
    let analysis = analyse(
        &inputs,
        &RfmOptions {
            k: params.k,
            seed: params.seed,
        },
    )?;

    let rows: Vec<(i64, Map<String, Value>)> = analysis
        .customers
        .iter()
        .map(|c| {
            let traits = json!({
                "rfm_recency": c.scores.recency,
                "rfm_frequency": c.scores.frequency,
                "rfm_monetary": c.scores.monetary,
                "rfm_score": c.scores.code(),
                "rfm_segment": c.segment.name(),
                "rfm_cluster": c.cluster,
            });
            (
                c.customer_id,
                traits.as_object().cloned().unwrap_or_default(),
            )
        })
        .collect();
    let params_json = to_json(&params)?;
    let report_json = to_json(&analysis.report)?;
    let summary = derived.replace_traits(
        &RFM_TRAITS,
        &rows,
        Some(NewAnalysisRun {
            kind: RFM_KIND,
            params: &params_json,
            report: &report_json,
        }),
    )?;
    let created_at = match summary.run_id {
        Some(id) => derived.analysis_run(id)?.map(|r| r.created_at),
        None => None,
    };
    Ok(RfmRun {
        id: summary.run_id.unwrap_or_default(),
        created_at: created_at.unwrap_or_default(),
        params,
        report: analysis.report,
        profiles: Some(summary),
    })
}

/// The latest stored run, if any.
fn latest_rfm(store: &Store) -> Result<Option<RfmRun>, RfmRunError> {
    store
        .derived()
        .latest_analysis(RFM_KIND)?
        .map(from_stored)
        .transpose()
}

fn from_stored(run: AnalysisRun) -> Result<RfmRun, RfmRunError> {
    let corrupt = |e: serde_json::Error| {
        RfmRunError::Store(StoreError::Corrupt(format!(
            "RFM run {} cannot be read: {e}",
            run.id
        )))
    };
    Ok(RfmRun {
        id: run.id,
        created_at: run.created_at.clone(),
        params: serde_json::from_value(run.params.clone()).map_err(corrupt)?,
        report: serde_json::from_value(run.report.clone()).map_err(corrupt)?,
        profiles: None,
    })
}

fn to_json(value: &impl Serialize) -> Result<Value, RfmRunError> {
    serde_json::to_value(value)
        .map_err(|e| RfmRunError::Store(StoreError::Corrupt(format!("serialising: {e}"))))
}

/// The routes, merged into the admin API (and so behind its authentication).
/// RFM use cases.
impl crate::Engine {
    /// Scores every customer who ordered in the window and writes the results onto profiles.
    pub async fn run_rfm(&self, params: RfmParams) -> Result<RfmRun, RfmRunError> {
        let store = self.store().clone();
        tokio::task::spawn_blocking(move || run_rfm(&store, params))
            .await
            .map_err(|e| RfmRunError::Invalid(format!("the RFM task failed: {e}")))?
    }

    /// The latest stored run, if any.
    pub async fn latest_rfm(&self) -> Result<Option<RfmRun>, RfmRunError> {
        let store = self.store().clone();
        tokio::task::spawn_blocking(move || latest_rfm(&store))
            .await
            .map_err(|e| RfmRunError::Invalid(format!("the RFM task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_default_and_reject_unknown_fields() {
        let p: RfmParams = serde_json::from_str("{}").unwrap();
        assert_eq!(p, RfmParams::default());
        assert_eq!((p.window_days, p.k), (365, 5));
        let p: RfmParams =
            serde_json::from_str(r#"{"window_days": 90, "k": 3, "as_of": "2026-03-01"}"#).unwrap();
        assert_eq!(p.as_of, NaiveDate::from_ymd_opt(2026, 3, 1));
        assert!(serde_json::from_str::<RfmParams>(r#"{"event": "Order Completed"}"#).is_err());
    }

    #[test]
    fn epoch_days_match_the_stores_day_numbers() {
        assert_eq!(epoch_day(NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()), 0);
        // 2026-03-01T00:00:00Z is 1772323200 seconds after the epoch.
        let day = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        assert_eq!(epoch_day(day), 1_772_323_200 / 86_400);
    }
}
