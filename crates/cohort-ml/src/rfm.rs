//! RFM analysis: recency, frequency and monetary scores, the named RFM segments, and k-means
//! clusters on the same three measures.
//!
//! The input is one row per customer who ordered inside the analysis window: days since their
//! last order, orders in the window, revenue in the window ([`RfmInput`]). [`analyse`] returns
//! each customer's scores, named segment and cluster, and an [`RfmReport`] with group sizes,
//! revenue shares, mean scores and cluster centroids.
//!
//! # Scores: quintiles by rank, ties at their lowest rank
//!
//! Each measure is scored 1 to 5, 5 being best: most recent, most orders, most revenue. Customers
//! are ranked from worst to best; customers with equal values form one tie group and all take the
//! rank of its first position (the "competition" rank of SQL's `rank()` and `percent_rank()`), so
//! equal values always get the same score, whatever order the rows came in. A customer at rank `a`
//! (1-based) among `n` has the percentile `(a - 0.5) / n` and the score `floor(5 × percentile) +
//! 1`, computed in integers as `5(2a - 1) / 2n + 1`.
//!
//! - With distinct values and `n` a multiple of 5 these are exact quintiles (10 customers: two
//!   per score).
//! - Small populations spread out from the middle instead of piling up at one end: one customer
//!   scores 3; two score 2 and 4; three 1, 3, 5; four 1, 2, 4, 5.
//! - A tie group scores where it starts. The common case is the bottom of frequency: when half
//!   the customers ordered once, they all score F = 1, the lowest frequency there is, rather than
//!   the order of rows deciding who gets 1 and who gets 2 (or a mid-rank lifting them all to 2
//!   and leaving F = 1, and with it New Customers and Promising, empty). The price is at the top:
//!   a value shared by more than a fifth of the customers cannot score 5, and when everybody is
//!   equal on a measure everybody scores 1 on it (3 when there are one or two customers).
//!
//! # Named segments
//!
//! The named segment comes from R and the rounded mean of F and M, `FM = ⌈(F + M) / 2⌉`: the
//! widely used R × FM grid, in which frequency and monetary value together say how valuable a
//! customer has been and recency says whether they are still around. Every cell has exactly one
//! name:
//!
//! | R \ FM | 1 | 2 | 3 | 4 | 5 |
//! | --- | --- | --- | --- | --- | --- |
//! | **5** | New Customers | Potential Loyalist | Potential Loyalist | Champions | Champions |
//! | **4** | Promising | Potential Loyalist | Potential Loyalist | Loyal | Loyal |
//! | **3** | About to Sleep | About to Sleep | Need Attention | Loyal | Loyal |
//! | **2** | Hibernating | Hibernating | At Risk | At Risk | Cannot Lose Them |
//! | **1** | Lost | Lost | At Risk | At Risk | Cannot Lose Them |
//!
//! # Clusters
//!
//! k-means ([`linfa_clustering::KMeans`], k-means++ initialisation, 10 restarts) runs on three
//! features: recency in days, `ln(1 + orders)` and `ln(1 + revenue)`, each standardised to mean 0
//! and standard deviation 1 (a constant feature becomes 0). Standardising gives the three
//! measures equal say whatever their units (days against yuan). The logarithm comes first because
//! order counts and revenue are strongly right-skewed: a few large customers sit many standard
//! deviations out, and on raw values k-means spends clusters on isolating them instead of on the
//! bulk of the customers. Negative revenue (refunds exceeding orders) counts as 0 there.
//!
//! With more than 50,000 customers the ten restarts run on a seeded uniform sample of 50,000, and
//! the best of them seeds one final run over everyone: a tenth of the work for clusters of the
//! same quality, which the report's `inertia` (mean squared distance to the centre, in standard
//! deviations) lets anyone check.
//!
//! The random generator is seeded ([`RfmOptions::seed`]), so the same input gives the same
//! clusters. `k` is reduced to the number of distinct customers (by their three measures) when
//! there are fewer. Clusters that end up empty are dropped, and clusters are numbered from 0 by
//! descending centroid revenue, then orders, then recency, so cluster 0 is the most valuable and
//! numbers do not depend on how the algorithm happened to initialise.
//!
//! ```
//! use cohort_ml::rfm::{RfmInput, RfmOptions, RfmSegment, analyse};
//! let rows: Vec<RfmInput> = (0..10)
//!     .map(|i| RfmInput { customer_id: i, recency_days: 100 - 10 * i as u32, orders: 1 + i as u64,
//!                         revenue: 50.0 * (i + 1) as f64 })
//!     .collect();
//! let result = analyse(&rows, &RfmOptions::default())?;
//! let best = &result.customers[9];
//! assert_eq!(best.scores.code(), "555");
//! assert_eq!(best.segment, RfmSegment::Champions);
//! assert_eq!(result.customers[0].segment, RfmSegment::Lost);
//! assert_eq!(result.report.clusters.len(), 5);
//! # Ok::<(), cohort_ml::rfm::RfmError>(())
//! ```

use linfa::DatasetBase;
use linfa::traits::{Fit, Predict};
use linfa_clustering::{KMeans, KMeansError, KMeansInit};
use ndarray::{Array1, Array2, Axis};
use rand_xoshiro::Xoshiro256Plus;
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use thiserror::Error;

/// A k-means run stops when its centres moved less than this in one iteration (the Euclidean
/// norm of all centres' moves, in standard deviations). It is scikit-learn's rule, a total
/// squared move of at most 10⁻⁴ of the features' mean variance (1 here, the features being
/// standardised); linfa's default, 10⁻⁴ on the norm itself, asks 10,000 times more and only adds
/// iterations that no longer change who is in which cluster.
const CONVERGED_SHIFT: f64 = 0.01;

/// Restarts run on a seeded uniform sample of this many customers when there are more, and the
/// best of them (least inertia on the sample) seeds one run over everyone. Ten full-size restarts
/// cost ten times the final run while, on a few well-populated features, a 50,000-customer sample
/// already ranks initialisations the way the full data would; the final run then settles the
/// centres on everyone. The report's inertia shows the result's quality.
const RESTART_SAMPLE: usize = 50_000;
/// Restarts from different k-means++ initialisations, keeping the best.
const RESTARTS: usize = 10;

/// Clusters asked for when the caller does not say.
pub const DEFAULT_K: usize = 5;
/// The most clusters one analysis may ask for; more says nothing useful about RFM groups and
/// costs time linear in k.
pub const MAX_K: usize = 50;
/// The seed used when the caller does not choose one.
pub const DEFAULT_SEED: u64 = 0x5EED_0FC0_4047;

/// One customer's order history inside the analysis window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RfmInput {
    pub customer_id: i64,
    /// Whole days between the last order in the window and the analysis date (0 = that day).
    pub recency_days: u32,
    /// Orders in the window.
    pub orders: u64,
    /// Revenue in the window.
    pub revenue: f64,
}

/// How to run an analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RfmOptions {
    /// Clusters wanted: 1 to [`MAX_K`].
    pub k: usize,
    /// Seed of the k-means initialisation.
    pub seed: u64,
}

impl Default for RfmOptions {
    fn default() -> Self {
        RfmOptions {
            k: DEFAULT_K,
            seed: DEFAULT_SEED,
        }
    }
}

/// Why an analysis could not run.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RfmError {
    #[error("k must be between 1 and {MAX_K}, got {0}")]
    InvalidK(usize),
    #[error("customer {0} appears more than once")]
    DuplicateCustomer(i64),
    #[error("customer {0} has a revenue that is not a finite number")]
    NotFinite(i64),
    #[error("clustering failed: {0}")]
    Clustering(String),
}

/// The three scores, each 1 (worst) to 5 (best).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RfmScores {
    pub recency: u8,
    pub frequency: u8,
    pub monetary: u8,
}

impl RfmScores {
    /// The rounded-up mean of frequency and monetary, the vertical axis of the segment grid.
    pub fn fm(self) -> u8 {
        (self.frequency + self.monetary).div_ceil(2)
    }

    /// The usual three-digit code, recency first: `"545"`.
    pub fn code(self) -> String {
        format!("{}{}{}", self.recency, self.frequency, self.monetary)
    }

    /// The named segment of these scores (see the module documentation for the grid).
    pub fn segment(self) -> RfmSegment {
        use RfmSegment::*;
        match (self.recency, self.fm()) {
            (5, 1) => NewCustomers,
            (5, 2 | 3) | (4, 2 | 3) => PotentialLoyalist,
            (5, _) => Champions,
            (4, 1) => Promising,
            (4, _) => Loyal,
            (3, 1 | 2) => AboutToSleep,
            (3, 3) => NeedAttention,
            (3, _) => Loyal,
            (2, 1 | 2) => Hibernating,
            (_, 1 | 2) => Lost,
            (_, 3 | 4) => AtRisk,
            _ => CannotLoseThem,
        }
    }
}

/// The standard named RFM segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RfmSegment {
    Champions,
    Loyal,
    #[serde(rename = "Potential Loyalist")]
    PotentialLoyalist,
    #[serde(rename = "New Customers")]
    NewCustomers,
    Promising,
    #[serde(rename = "Need Attention")]
    NeedAttention,
    #[serde(rename = "About to Sleep")]
    AboutToSleep,
    #[serde(rename = "At Risk")]
    AtRisk,
    #[serde(rename = "Cannot Lose Them")]
    CannotLoseThem,
    Hibernating,
    Lost,
}

impl RfmSegment {
    /// Every segment, from the most valuable to the least.
    pub const ALL: [RfmSegment; 11] = [
        RfmSegment::Champions,
        RfmSegment::Loyal,
        RfmSegment::PotentialLoyalist,
        RfmSegment::NewCustomers,
        RfmSegment::Promising,
        RfmSegment::NeedAttention,
        RfmSegment::AboutToSleep,
        RfmSegment::AtRisk,
        RfmSegment::CannotLoseThem,
        RfmSegment::Hibernating,
        RfmSegment::Lost,
    ];

    /// The display name, also the value of the `rfm_segment` trait.
    pub fn name(self) -> &'static str {
        match self {
            RfmSegment::Champions => "Champions",
            RfmSegment::Loyal => "Loyal",
            RfmSegment::PotentialLoyalist => "Potential Loyalist",
            RfmSegment::NewCustomers => "New Customers",
            RfmSegment::Promising => "Promising",
            RfmSegment::NeedAttention => "Need Attention",
            RfmSegment::AboutToSleep => "About to Sleep",
            RfmSegment::AtRisk => "At Risk",
            RfmSegment::CannotLoseThem => "Cannot Lose Them",
            RfmSegment::Hibernating => "Hibernating",
            RfmSegment::Lost => "Lost",
        }
    }

    /// The segment with this display name.
    pub fn from_name(name: &str) -> Option<RfmSegment> {
        RfmSegment::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl std::fmt::Display for RfmSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One customer's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RfmCustomer {
    pub customer_id: i64,
    pub scores: RfmScores,
    pub segment: RfmSegment,
    /// 0 to `report.clusters.len() - 1`.
    pub cluster: usize,
}

/// Everything an analysis produces: per-customer results in input order, and the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RfmAnalysis {
    pub customers: Vec<RfmCustomer>,
    pub report: RfmReport,
}

/// The summary of one analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RfmReport {
    /// Customers scored (those with an order in the window).
    pub customers: usize,
    /// Their revenue in the window.
    pub revenue: f64,
    /// Clusters asked for, and clusters found (fewer when customers are few or alike).
    pub k_requested: usize,
    pub k: usize,
    /// Mean squared distance of a customer to its cluster's centre, in standard deviations of
    /// the clustered features: lower means tighter clusters.
    pub inertia: f64,
    pub seed: u64,
    /// The range of raw values behind each score.
    pub score_ranges: ScoreRanges,
    /// Every named segment, in [`RfmSegment::ALL`] order, including empty ones.
    pub segments: Vec<SegmentReport>,
    pub clusters: Vec<ClusterReport>,
}

/// For each measure, `[min, max]` of the raw values that got score 1, 2, …, 5 (index 0 is
/// score 1); `None` where no customer got that score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRanges {
    pub recency_days: Vec<Option<[f64; 2]>>,
    pub orders: Vec<Option<[f64; 2]>>,
    pub revenue: Vec<Option<[f64; 2]>>,
}

/// Size, revenue and averages of a group of customers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupStats {
    pub customers: usize,
    /// Share of all scored customers, 0 to 1.
    pub customer_share: f64,
    pub revenue: f64,
    /// Share of all revenue, 0 to 1 (0 when total revenue is 0).
    pub revenue_share: f64,
    /// Mean scores; `None` for an empty group.
    pub mean_recency_score: Option<f64>,
    pub mean_frequency_score: Option<f64>,
    pub mean_monetary_score: Option<f64>,
    /// Mean raw measures; `None` for an empty group.
    pub mean_recency_days: Option<f64>,
    pub mean_orders: Option<f64>,
    pub mean_revenue: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentReport {
    pub segment: RfmSegment,
    #[serde(flatten)]
    pub stats: GroupStats,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterReport {
    pub cluster: usize,
    #[serde(flatten)]
    pub stats: GroupStats,
    /// The cluster centre mapped back to original units.
    pub centroid: Centroid,
    /// The named segment most of the cluster's customers are in (ties: the more valuable).
    pub main_segment: Option<RfmSegment>,
}

/// A k-means centre in original units. Orders and revenue are averaged on the log scale, so
/// they are geometric-style means (`exp(mean(ln(1 + x))) - 1`), below the arithmetic means when
/// values spread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Centroid {
    pub recency_days: f64,
    pub orders: f64,
    pub revenue: f64,
}

/// Scores, names and clusters the customers, and summarises them.
pub fn analyse(rows: &[RfmInput], options: &RfmOptions) -> Result<RfmAnalysis, RfmError> {
    if options.k == 0 || options.k > MAX_K {
        return Err(RfmError::InvalidK(options.k));
    }
    let mut seen = HashSet::with_capacity(rows.len());
    for row in rows {
        if !seen.insert(row.customer_id) {
            return Err(RfmError::DuplicateCustomer(row.customer_id));
        }
        if !row.revenue.is_finite() {
            return Err(RfmError::NotFinite(row.customer_id));
        }
    }

    let scores = rfm_scores(rows);

    let clustering = cluster(rows, options)?;
    let customers: Vec<RfmCustomer> = rows
        .iter()
        .zip(&scores)
        .zip(&clustering.labels)
        .map(|((row, s), &cluster)| RfmCustomer {
            customer_id: row.customer_id,
            scores: *s,
            segment: s.segment(),
            cluster,
        })
        .collect();

    let totals = Totals {
        customers: rows.len(),
        revenue: rows.iter().fold(0.0, |sum, r| sum + r.revenue),
    };
    let segments = RfmSegment::ALL
        .into_iter()
        .map(|segment| SegmentReport {
            segment,
            stats: group_stats(rows, &customers, &totals, |c| c.segment == segment),
        })
        .collect();
    let clusters = clustering
        .centroids
        .iter()
        .enumerate()
        .map(|(i, centroid)| ClusterReport {
            cluster: i,
            stats: group_stats(rows, &customers, &totals, |c| c.cluster == i),
            centroid: centroid.clone(),
            main_segment: main_segment(customers.iter().filter(|c| c.cluster == i)),
        })
        .collect();

    let report = RfmReport {
        customers: totals.customers,
        revenue: totals.revenue,
        k_requested: options.k,
        k: clustering.centroids.len(),
        inertia: clustering.inertia,
        seed: options.seed,
        score_ranges: ScoreRanges {
            recency_days: ranges(rows, &scores, |r| f64::from(r.recency_days), |s| s.recency),
            orders: ranges(rows, &scores, |r| r.orders as f64, |s| s.frequency),
            revenue: ranges(rows, &scores, |r| r.revenue, |s| s.monetary),
        },
        segments,
        clusters,
    };
    Ok(RfmAnalysis { customers, report })
}

/// Each row's recency, frequency and monetary scores ([`quintile_scores`] of each measure), the
/// three rankings on threads of their own.
pub fn rfm_scores(rows: &[RfmInput]) -> Vec<RfmScores> {
    // Scores are computed on "goodness", higher being better, so recency is negated.
    let measure =
        |f: fn(&RfmInput) -> f64| move || quintile_scores(&rows.iter().map(f).collect::<Vec<_>>());
    let (recency, frequency, monetary) = std::thread::scope(|scope| {
        let recency = scope.spawn(measure(|r| -f64::from(r.recency_days)));
        let frequency = scope.spawn(measure(|r| r.orders as f64));
        let monetary = measure(|r| r.revenue)();
        let joined = |h: std::thread::ScopedJoinHandle<'_, Vec<u8>>| {
            h.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        };
        (joined(recency), joined(frequency), monetary)
    });
    (0..rows.len())
        .map(|i| RfmScores {
            recency: recency[i],
            frequency: frequency[i],
            monetary: monetary[i],
        })
        .collect()
}

/// Scores 1 to 5 by quintile of `goodness` (higher is better), ties taking the rank of their
/// first position; see the module documentation. NaN sorts above every number, so it is "best"; callers pass none.
pub fn quintile_scores(goodness: &[f64]) -> Vec<u8> {
    let n = goodness.len();
    // (order key, position) pairs sorted in place: ties form one run whatever their order, so
    // an unstable sort of plain integers serves, 3× faster at half a million customers than a
    // stable sort through an index.
    let mut keyed: Vec<(i64, usize)> = goodness
        .iter()
        .enumerate()
        .map(|(i, &v)| (total_order_key(v), i))
        .collect();
    keyed.sort_unstable();
    let mut scores = vec![0u8; n];
    let mut start = 0;
    for run in keyed.chunk_by(|a, b| a.0 == b.0) {
        // The run's rank is its first 1-based position a = start + 1, so 2a - 1 = 2 start + 1.
        let score = (5 * (2 * start + 1) / (2 * n) + 1).min(5) as u8;
        for &(_, i) in run {
            scores[i] = score;
        }
        start += run.len();
    }
    scores
}

/// An integer that orders like `f64::total_cmp`: negative numbers have their magnitude bits
/// flipped so that they count down.
fn total_order_key(v: f64) -> i64 {
    let bits = v.to_bits() as i64;
    bits ^ ((((bits >> 63) as u64) >> 1) as i64)
}

struct Totals {
    customers: usize,
    revenue: f64,
}

fn share(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { part / whole } else { 0.0 }
}

fn group_stats(
    rows: &[RfmInput],
    customers: &[RfmCustomer],
    totals: &Totals,
    member: impl Fn(&RfmCustomer) -> bool,
) -> GroupStats {
    let members: Vec<(&RfmInput, &RfmCustomer)> = rows
        .iter()
        .zip(customers)
        .filter(|(_, c)| member(c))
        .collect();
    let size = members.len();
    // A fold from +0.0: an empty f64 sum is -0.0, which prints as "-0".
    let revenue = members.iter().fold(0.0, |sum, (r, _)| sum + r.revenue);
    let mean = |f: &dyn Fn(&RfmInput, &RfmCustomer) -> f64| {
        (size > 0).then(|| members.iter().map(|(r, c)| f(r, c)).sum::<f64>() / size as f64)
    };
    GroupStats {
        customers: size,
        customer_share: share(size as f64, totals.customers as f64),
        revenue,
        revenue_share: share(revenue, totals.revenue),
        mean_recency_score: mean(&|_, c| f64::from(c.scores.recency)),
        mean_frequency_score: mean(&|_, c| f64::from(c.scores.frequency)),
        mean_monetary_score: mean(&|_, c| f64::from(c.scores.monetary)),
        mean_recency_days: mean(&|r, _| f64::from(r.recency_days)),
        mean_orders: mean(&|r, _| r.orders as f64),
        mean_revenue: mean(&|r, _| r.revenue),
    }
}

fn main_segment<'a>(members: impl Iterator<Item = &'a RfmCustomer>) -> Option<RfmSegment> {
    let mut counts: HashMap<RfmSegment, usize> = HashMap::new();
    for c in members {
        *counts.entry(c.segment).or_default() += 1;
    }
    // Largest count first; among equals the segment listed first in ALL (the more valuable).
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .map(|(s, _)| s)
}

fn ranges(
    rows: &[RfmInput],
    scores: &[RfmScores],
    value: impl Fn(&RfmInput) -> f64,
    score: impl Fn(&RfmScores) -> u8,
) -> Vec<Option<[f64; 2]>> {
    let mut out: Vec<Option<[f64; 2]>> = vec![None; 5];
    for (row, s) in rows.iter().zip(scores) {
        let v = value(row);
        let slot = &mut out[usize::from(score(s).clamp(1, 5) - 1)];
        *slot = Some(match *slot {
            None => [v, v],
            Some([lo, hi]) => [lo.min(v), hi.max(v)],
        });
    }
    out
}

struct Clustering {
    /// Per input row, its cluster number.
    labels: Vec<usize>,
    /// Per cluster number, its centre in original units.
    centroids: Vec<Centroid>,
    /// Mean squared distance of a row to its centre, in standardised units.
    inertia: f64,
}

/// The three clustering features of a row, before standardisation.
fn features(row: &RfmInput) -> [f64; 3] {
    [
        f64::from(row.recency_days),
        (row.orders as f64).ln_1p(),
        row.revenue.max(0.0).ln_1p(),
    ]
}

fn cluster(rows: &[RfmInput], options: &RfmOptions) -> Result<Clustering, RfmError> {
    let n = rows.len();
    if n == 0 {
        return Ok(Clustering {
            labels: Vec::new(),
            centroids: Vec::new(),
            inertia: 0.0,
        });
    }
    let raw: Vec<[f64; 3]> = rows.iter().map(features).collect();
    let distinct = raw
        .iter()
        .map(|f| f.map(f64::to_bits))
        .collect::<HashSet<_>>()
        .len();
    let k = options.k.min(distinct);

    let mut mean = [0.0; 3];
    let mut sd = [0.0; 3];
    for j in 0..3 {
        mean[j] = raw.iter().map(|f| f[j]).sum::<f64>() / n as f64;
        sd[j] = (raw.iter().map(|f| (f[j] - mean[j]).powi(2)).sum::<f64>() / n as f64).sqrt();
    }
    let mut records = Array2::<f64>::zeros((n, 3));
    for (i, f) in raw.iter().enumerate() {
        for j in 0..3 {
            // A constant feature separates nobody; 0 keeps it out of the distances.
            records[[i, j]] = if sd[j] > 0.0 {
                (f[j] - mean[j]) / sd[j]
            } else {
                0.0
            };
        }
    }

    let params = |runs: usize, init: KMeansInit<f64>| {
        KMeans::params_with_rng(k, Xoshiro256Plus::seed_from_u64(options.seed))
            .n_runs(runs)
            .tolerance(CONVERGED_SHIFT)
            .init_method(init)
    };
    let fail = |e: KMeansError| RfmError::Clustering(e.to_string());
    let model = if n > RESTART_SAMPLE {
        let sample = sample_rows(&records, RESTART_SAMPLE, options.seed);
        let best = params(RESTARTS, KMeansInit::KMeansPlusPlus)
            .fit(&DatasetBase::from(sample))
            .map_err(fail)?;
        params(1, KMeansInit::Precomputed(best.centroids().clone()))
            .fit(&DatasetBase::from(records.view()))
            .map_err(fail)?
    } else {
        params(RESTARTS, KMeansInit::KMeansPlusPlus)
            .fit(&DatasetBase::from(records.view()))
            .map_err(fail)?
    };
    let labels: Array1<usize> = model.predict(&records);
    let centres = model.centroids();
    let inertia = records
        .rows()
        .into_iter()
        .zip(&labels)
        .map(|(row, &l)| {
            row.iter()
                .zip(centres.row(l))
                .map(|(x, c)| (x - c).powi(2))
                .sum::<f64>()
        })
        .sum::<f64>()
        / n as f64;

    // Centres in original units, and the renumbering: non-empty clusters only, most valuable
    // first, so numbers are stable and meaningful.
    let mut used: Vec<(usize, Centroid)> = (0..centres.nrows())
        .filter(|&c| labels.iter().any(|&l| l == c))
        .map(|c| {
            let back = |j: usize| centres[[c, j]] * sd[j] + mean[j];
            (
                c,
                Centroid {
                    recency_days: back(0),
                    orders: back(1).exp_m1(),
                    revenue: back(2).exp_m1(),
                },
            )
        })
        .collect();
    used.sort_by(|(a, ca), (b, cb)| {
        cb.revenue
            .total_cmp(&ca.revenue)
            .then(cb.orders.total_cmp(&ca.orders))
            .then(ca.recency_days.total_cmp(&cb.recency_days))
            .then(a.cmp(b))
    });
    let renumber: HashMap<usize, usize> = used
        .iter()
        .enumerate()
        .map(|(new, (old, _))| (*old, new))
        .collect();
    Ok(Clustering {
        labels: labels
            .iter()
            .map(|l| renumber.get(l).copied().unwrap_or(0))
            .collect(),
        centroids: used.into_iter().map(|(_, c)| c).collect(),
        inertia,
    })
}

/// `size` distinct rows drawn uniformly with a seeded generator (a partial Fisher–Yates shuffle).
fn sample_rows(records: &Array2<f64>, size: usize, seed: u64) -> Array2<f64> {
    let n = records.nrows();
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = Xoshiro256Plus::seed_from_u64(seed ^ 0x5a3c_0f1e_9b27_d684);
    for i in 0..size.min(n) {
        let j = i + (rng.next_u64() % (n - i) as u64) as usize;
        order.swap(i, j);
    }
    records.select(Axis(0), &order[..size.min(n)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(customer_id: i64, recency_days: u32, orders: u64, revenue: f64) -> RfmInput {
        RfmInput {
            customer_id,
            recency_days,
            orders,
            revenue,
        }
    }

    #[test]
    fn ten_distinct_values_make_exact_quintiles() {
        let values: Vec<f64> = [7, 3, 9, 1, 10, 5, 2, 8, 4, 6].map(f64::from).to_vec();
        // Ranks 1-2 score 1, 3-4 score 2, …, 9-10 score 5.
        assert_eq!(quintile_scores(&values), vec![4, 2, 5, 1, 5, 3, 1, 4, 2, 3]);
    }

    #[test]
    fn ties_take_the_score_of_their_first_rank() {
        // Four tied at the bottom share rank 1 of 5: percentile 0.1, score 1.
        assert_eq!(
            quintile_scores(&[1.0, 1.0, 2.0, 1.0, 1.0]),
            vec![1, 1, 5, 1, 1]
        );
        // Everybody equal: the first rank, so 1, except for one or two customers.
        assert_eq!(quintile_scores(&[4.0; 7]), vec![1; 7]);
        assert_eq!(quintile_scores(&[4.0; 2]), vec![2; 2]);
        // 7 of 10 ordered once (rank 1: F = 1); the two with 2 orders share rank 8
        // (percentile 0.75, score 4); the best is rank 10.
        let orders = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 5.0];
        assert_eq!(quintile_scores(&orders), vec![1, 1, 1, 1, 1, 1, 1, 4, 4, 5]);
        // Three tied at the top start at rank 8: they score 4, and nobody scores 5.
        let top = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 9.0, 9.0, 9.0];
        assert_eq!(quintile_scores(&top), vec![1, 1, 2, 2, 3, 3, 4, 4, 4, 4]);
        // Input order never matters.
        let mut reversed = orders;
        reversed.reverse();
        let mut expected = quintile_scores(&orders);
        expected.reverse();
        assert_eq!(quintile_scores(&reversed), expected);
    }

    #[test]
    fn order_keys_sort_like_total_cmp() {
        let values = [
            f64::NEG_INFINITY,
            -1e300,
            -2.5,
            -f64::MIN_POSITIVE,
            -0.0,
            0.0,
            5e-324,
            1.0,
            2.5,
            f64::MAX,
            f64::INFINITY,
            f64::NAN,
        ];
        for a in values {
            for b in values {
                assert_eq!(
                    total_order_key(a).cmp(&total_order_key(b)),
                    a.total_cmp(&b),
                    "{a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn one_time_buyers_who_just_ordered_are_new_customers() {
        // Six of ten ordered once; the two most recent of them spent least.
        let rows = vec![
            row(1, 0, 1, 10.0),
            row(2, 5, 1, 20.0),
            row(3, 10, 1, 500.0),
            row(4, 40, 1, 30.0),
            row(5, 60, 1, 600.0),
            row(6, 90, 1, 40.0),
            row(7, 20, 3, 900.0),
            row(8, 30, 5, 1500.0),
            row(9, 100, 2, 700.0),
            row(10, 200, 8, 3000.0),
        ];
        let result = analyse(&rows, &RfmOptions::default()).unwrap();
        let c = &result.customers;
        assert_eq!(c[0].scores.code(), "511");
        assert_eq!(c[1].scores.code(), "511");
        assert_eq!(c[0].segment, RfmSegment::NewCustomers);
        assert_eq!(c[1].segment, RfmSegment::NewCustomers);
        assert!(c[..6].iter().all(|c| c.scores.frequency == 1));
        // Recency 10 days is the third best (rank 8): R = 4; revenue 500 is rank 5: M = 3.
        assert_eq!(c[2].scores.code(), "413");
        assert_eq!(c[2].segment, RfmSegment::PotentialLoyalist);
    }

    #[test]
    fn small_populations_spread_from_the_middle() {
        assert_eq!(quintile_scores(&[]), Vec::<u8>::new());
        assert_eq!(quintile_scores(&[3.0]), vec![3]);
        assert_eq!(quintile_scores(&[2.0, 1.0]), vec![4, 2]);
        assert_eq!(quintile_scores(&[1.0, 2.0, 3.0]), vec![1, 3, 5]);
        assert_eq!(quintile_scores(&[1.0, 2.0, 3.0, 4.0]), vec![1, 2, 4, 5]);
    }

    #[test]
    fn the_grid_names_every_cell_as_documented() {
        let grid = [
            // FM:     1                2                    3                    4              5
            (
                5,
                [
                    "New Customers",
                    "Potential Loyalist",
                    "Potential Loyalist",
                    "Champions",
                    "Champions",
                ],
            ),
            (
                4,
                [
                    "Promising",
                    "Potential Loyalist",
                    "Potential Loyalist",
                    "Loyal",
                    "Loyal",
                ],
            ),
            (
                3,
                [
                    "About to Sleep",
                    "About to Sleep",
                    "Need Attention",
                    "Loyal",
                    "Loyal",
                ],
            ),
            (
                2,
                [
                    "Hibernating",
                    "Hibernating",
                    "At Risk",
                    "At Risk",
                    "Cannot Lose Them",
                ],
            ),
            (
                1,
                ["Lost", "Lost", "At Risk", "At Risk", "Cannot Lose Them"],
            ),
        ];
        let mut reached = HashSet::new();
        for (r, names) in grid {
            for f in 1..=5u8 {
                for m in 1..=5u8 {
                    let s = RfmScores {
                        recency: r,
                        frequency: f,
                        monetary: m,
                    };
                    let fm = usize::from((f + m).div_ceil(2));
                    assert_eq!(s.segment().name(), names[fm - 1], "{}", s.code());
                    reached.insert(s.segment());
                }
            }
        }
        assert_eq!(reached.len(), 11);
        for s in RfmSegment::ALL {
            assert_eq!(RfmSegment::from_name(s.name()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.name());
        }
    }

    /// Fifteen customers, three per score on every measure, one or two in each named segment.
    /// Raw values are chosen so the scores can be read off: recency 1-3 days scores 5, 10-12
    /// scores 4, 30-32 scores 3, 90-92 scores 2, 200-202 scores 1; orders 1-3 score 1, 4-6 score
    /// 2, …, 13-15 score 5; revenue 10-30 scores 1, 100-120 2, 300-320 3, 800-820 4, 2000-2200 5.
    fn fifteen() -> Vec<(RfmInput, &'static str, &'static str)> {
        vec![
            (row(1, 1, 13, 2000.0), "555", "Champions"),
            (row(2, 2, 1, 10.0), "511", "New Customers"),
            (row(3, 3, 4, 300.0), "523", "Potential Loyalist"),
            (row(4, 10, 2, 20.0), "411", "Promising"),
            (row(5, 11, 10, 800.0), "444", "Loyal"),
            (row(6, 12, 7, 100.0), "432", "Potential Loyalist"),
            (row(7, 30, 8, 310.0), "333", "Need Attention"),
            (row(8, 31, 5, 110.0), "322", "About to Sleep"),
            (row(9, 32, 14, 810.0), "354", "Loyal"),
            (row(10, 90, 3, 120.0), "212", "Hibernating"),
            (row(11, 91, 11, 320.0), "243", "At Risk"),
            (row(12, 92, 15, 2100.0), "255", "Cannot Lose Them"),
            (row(13, 200, 6, 30.0), "121", "Lost"),
            (row(14, 201, 9, 820.0), "134", "At Risk"),
            (row(15, 202, 12, 2200.0), "145", "Cannot Lose Them"),
        ]
    }

    #[test]
    fn fifteen_customers_reach_every_named_segment() {
        let fixture = fifteen();
        let rows: Vec<RfmInput> = fixture.iter().map(|(r, _, _)| r.clone()).collect();
        let result = analyse(&rows, &RfmOptions::default()).unwrap();
        for ((row, code, name), c) in fixture.iter().zip(&result.customers) {
            assert_eq!(c.customer_id, row.customer_id);
            assert_eq!(c.scores.code(), *code, "customer {}", row.customer_id);
            assert_eq!(c.segment.name(), *name, "customer {}", row.customer_id);
        }
        let report = &result.report;
        assert_eq!(report.customers, 15);
        assert_eq!(report.revenue, 10_050.0);
        let by_name = |n: &str| {
            report
                .segments
                .iter()
                .find(|s| s.segment.name() == n)
                .unwrap()
        };
        assert_eq!(report.segments.len(), 11);
        assert!(report.segments.iter().all(|s| s.stats.customers >= 1));
        let cannot_lose = &by_name("Cannot Lose Them").stats;
        assert_eq!(cannot_lose.customers, 2);
        assert!((cannot_lose.customer_share - 2.0 / 15.0).abs() < 1e-12);
        assert_eq!(cannot_lose.revenue, 4300.0);
        assert!((cannot_lose.revenue_share - 4300.0 / 10_050.0).abs() < 1e-12);
        assert_eq!(cannot_lose.mean_recency_score, Some(1.5));
        assert_eq!(cannot_lose.mean_frequency_score, Some(4.5));
        assert_eq!(cannot_lose.mean_monetary_score, Some(5.0));
        assert_eq!(cannot_lose.mean_recency_days, Some(147.0));
        assert_eq!(cannot_lose.mean_orders, Some(13.5));
        assert_eq!(report.score_ranges.recency_days[4], Some([1.0, 3.0]));
        assert_eq!(report.score_ranges.recency_days[0], Some([200.0, 202.0]));
        assert_eq!(report.score_ranges.orders[2], Some([7.0, 9.0]));
        assert_eq!(report.score_ranges.revenue[3], Some([800.0, 820.0]));
        // Shares add up.
        let share: f64 = report.segments.iter().map(|s| s.stats.customer_share).sum();
        assert!((share - 1.0).abs() < 1e-12);
    }

    /// A deterministic jitter in [-1, 1) so blobs are clouds, not points.
    fn jitter(i: u64) -> f64 {
        let x = i
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((x >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    #[test]
    fn k_means_recovers_clearly_separated_groups() {
        recovers_groups(20);
    }

    /// Above `RESTART_SAMPLE` customers the restarts run on a sample and one run refines on all.
    #[test]
    fn k_means_on_a_sample_then_everyone_recovers_the_groups() {
        recovers_groups(RESTART_SAMPLE as u64 / 4);
    }

    fn recovers_groups(per_group: u64) {
        // Five kinds of customers: (recency days, orders, revenue) around these centres.
        let centres = [
            (3.0, 40.0, 20_000.0),
            (20.0, 10.0, 3_000.0),
            (60.0, 3.0, 400.0),
            (150.0, 1.0, 60.0),
            (330.0, 2.0, 5_000.0),
        ];
        let mut rows = Vec::new();
        let mut truth = Vec::new();
        for (g, (days, orders, revenue)) in centres.iter().enumerate() {
            for i in 0..per_group {
                let id = (g as u64) * per_group + i;
                rows.push(row(
                    id as i64,
                    (days * (1.0 + 0.1 * jitter(id * 3))).round() as u32,
                    (orders * (1.0 + 0.1 * jitter(id * 3 + 1))).round().max(1.0) as u64,
                    revenue * (1.0 + 0.1 * jitter(id * 3 + 2)),
                ));
                truth.push(g);
            }
        }
        let result = analyse(&rows, &RfmOptions::default()).unwrap();
        let labels: Vec<usize> = result.customers.iter().map(|c| c.cluster).collect();
        // Each true group maps to exactly one cluster, and different groups to different ones.
        let mut group_of_cluster = HashMap::new();
        for (g, l) in truth.iter().zip(&labels) {
            assert_eq!(
                *group_of_cluster.entry(*l).or_insert(*g),
                *g,
                "cluster {l} mixes groups"
            );
        }
        assert_eq!(group_of_cluster.len(), 5);
        // Clusters are numbered by descending centroid revenue.
        let order: Vec<usize> = (0..5).map(|c| group_of_cluster[&c]).collect();
        assert_eq!(order, vec![0, 4, 1, 2, 3]);
        let report = &result.report;
        assert_eq!(report.k, 5);
        // Within-group spread only: the features' total variance is 3.
        assert!(
            report.inertia > 0.0 && report.inertia < 0.1,
            "{}",
            report.inertia
        );
        for c in &report.clusters {
            assert_eq!(c.stats.customers, per_group as usize);
            let (days, orders, revenue) = centres[group_of_cluster[&c.cluster]];
            assert!(
                (c.centroid.recency_days - days).abs() < days * 0.1 + 1.0,
                "{c:?}"
            );
            assert!(
                (c.centroid.orders - orders).abs() < orders * 0.2 + 0.5,
                "{c:?}"
            );
            assert!(
                (c.centroid.revenue - revenue).abs() < revenue * 0.1,
                "{c:?}"
            );
        }
        // The same seed gives the same clusters.
        let again = analyse(&rows, &RfmOptions::default()).unwrap();
        assert_eq!(again, result);
    }

    #[test]
    fn k_is_clamped_to_distinct_customers_and_validated() {
        let rows = vec![
            row(1, 5, 2, 100.0),
            row(2, 5, 2, 100.0),
            row(3, 90, 1, 10.0),
        ];
        let result = analyse(&rows, &RfmOptions::default()).unwrap();
        assert_eq!(result.report.k_requested, 5);
        assert_eq!(result.report.k, 2);
        assert_eq!(result.customers[0].cluster, result.customers[1].cluster);
        assert_ne!(result.customers[0].cluster, result.customers[2].cluster);
        // Cluster 0 is the more valuable one.
        assert_eq!(result.customers[0].cluster, 0);

        let one = analyse(&[row(7, 0, 1, 0.0)], &RfmOptions::default()).unwrap();
        assert_eq!(one.customers[0].scores.code(), "333");
        assert_eq!(one.customers[0].segment, RfmSegment::NeedAttention);
        assert_eq!(one.report.k, 1);
        assert_eq!(one.report.segments[5].stats.revenue_share, 0.0);

        let none = analyse(&[], &RfmOptions::default()).unwrap();
        assert_eq!(none.report.customers, 0);
        assert!(none.report.clusters.is_empty());
        assert_eq!(none.report.segments.len(), 11);
        assert_eq!(none.report.segments[0].stats.mean_revenue, None);

        let bad_k = RfmOptions {
            k: 0,
            ..RfmOptions::default()
        };
        assert_eq!(analyse(&rows, &bad_k), Err(RfmError::InvalidK(0)));
        assert_eq!(
            analyse(
                &[row(1, 1, 1, 1.0), row(1, 2, 2, 2.0)],
                &RfmOptions::default()
            ),
            Err(RfmError::DuplicateCustomer(1))
        );
        assert_eq!(
            analyse(&[row(1, 1, 1, f64::INFINITY)], &RfmOptions::default()),
            Err(RfmError::NotFinite(1))
        );
    }

    #[test]
    fn the_report_serialises_with_flat_group_fields() {
        let rows: Vec<RfmInput> = fifteen().into_iter().map(|(r, _, _)| r).collect();
        let report = analyse(&rows, &RfmOptions::default()).unwrap().report;
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["segments"][0]["segment"], "Champions");
        assert_eq!(json["segments"][0]["customers"], 1);
        assert!(json["clusters"][0]["centroid"]["revenue"].is_number());
        let back: RfmReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
    }
}
