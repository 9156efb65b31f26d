//! The experiment report: from per-variation sums ([`ReportInput`]) to every figure a reader
//! needs and a plain-language verdict in English and Chinese; and planning ([`plan_sample_size`]).
//!
//! [`analyze`] compares every variation with the control (the first variation) on every
//! metric, with the engine the options choose:
//!
//! - `frequentist` (default): gbstats' unpooled Welch t-test, relative lifts by the delta
//!   method. Proportion metrics also carry statsmodels' pooled two-proportion z-test, labelled,
//!   for readers who expect it; the verdict uses the unpooled test.
//! - `sequential`: the same effect with an always-valid confidence sequence and p-value.
//! - `bayesian`: the Gaussian effect model: chance to win and the risk of each choice.
//!
//! Both lifts (relative and absolute) are reported with their intervals; the p-value, the
//! multiple-comparison correction (Holm or Benjamini–Hochberg, over every metric × variation
//! comparison), the chance to win and the verdict are those of the `difference` the options
//! choose. Metrics whose sums carry pre-period values are CUPED-adjusted; ratio metrics use the
//! delta method. The report also checks the sample ratio (flagged at p < 0.001, weight-0 arms
//! left out of the statistic), the share of units exposed to several variations (flagged at
//! 1 % with at least 10 units, GrowthBook's defaults), and, given a target effect, the power
//! reached, the detectable effect and the days still needed.
//!
//! A comparison the data cannot support (fewer than two units, a control whose mean is zero,
//! no variance) carries a [`Reason`] and no figures: a report never holds NaN or infinity, and
//! its JSON never holds `null`.
//!
//! ```
//! use cohort_experiment::report::{analyze, Outcome};
//! use cohort_experiment::summary_input::from_json;
//! let input = from_json(r#"{
//!   "variations": [{"key": "a", "name": "A"}, {"key": "b", "name": "B"}],
//!   "metrics": [{"key": "purchase", "name": "Purchase", "kind": "proportion",
//!                "data": {"a": {"n": 10000, "sum": 1000}, "b": {"n": 10000, "sum": 1100}}}]
//! }"#).unwrap();
//! let report = analyze(&input).unwrap();
//! let comparison = &report.metrics[0].comparisons[0];
//! assert_eq!(comparison.outcome, Outcome::Better);
//! assert_eq!(
//!     comparison.verdict.en,
//!     "B beats A on Purchase: +10.0% (95% CI +1.1% to +18.9%), p = 0.028"
//! );
//! assert_eq!(
//!     comparison.verdict.zh,
//!     "B 在「Purchase」上优于 A：+10.0%（95% 置信区间 +1.1% 至 +18.9%），p = 0.028"
//! );
//! ```

use crate::stats::{self, Degenerate, Difference, Moments, Prior, Summary};
use crate::summary_input::{
    Correction, DifferenceType, Direction, Engine, MetricInput, MetricKind, Options, PriorInput,
    ReportInput, Sums,
};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

/// A sample-ratio mismatch is flagged below this p-value.
pub const SRM_THRESHOLD: f64 = 0.001;
/// Multiple exposures are flagged from this share of units …
pub const MULTIPLE_EXPOSURE_SHARE: f64 = 0.01;
/// … when at least this many units saw several variations.
pub const MULTIPLE_EXPOSURE_MIN_COUNT: u64 = 10;

/// Why a report could not be made: the input is inconsistent. `at` names the place (an option,
/// a variation, a metric and variation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct ReportError {
    pub at: String,
    pub message: String,
}

fn invalid(at: impl Into<String>, message: impl Into<String>) -> ReportError {
    ReportError {
        at: at.into(),
        message: message.into(),
    }
}

/// A sentence in English and in Chinese.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Text {
    pub en: String,
    pub zh: String,
}

/// Why a figure is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// Fewer than two units in a variation.
    NotEnoughData,
    /// The control's mean is zero: no relative lift (gbstats' `BASELINE_VARIATION_ZERO`).
    BaselineZero,
    /// Every unit has the same value, or the sums imply a negative variance (gbstats'
    /// `ZERO_NEGATIVE_VARIANCE`).
    ZeroVariance,
    /// A variation has no units.
    NoUnits,
    /// A ratio's denominator adds up to zero.
    DenominatorZero,
    /// The arithmetic overflowed (sums too large to be real).
    NotFinite,
    /// The target effect takes a rate outside 0 to 1.
    TargetOutOfRange,
    /// No realistic sample detects the target effect.
    EffectTooSmall,
}

/// A [`ReasonCode`] with its sentence in English and Chinese.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub code: ReasonCode,
    pub en: String,
    pub zh: String,
}

impl From<ReasonCode> for Reason {
    fn from(code: ReasonCode) -> Self {
        let (en, zh) = match code {
            ReasonCode::NotEnoughData => (
                "not enough data: each variation needs at least two units",
                "数据不足：每个变体至少需要两个单位",
            ),
            ReasonCode::BaselineZero => (
                "the control's mean is zero, so there is no lift to measure against it",
                "对照组的均值为零，无法据此计算提升",
            ),
            ReasonCode::ZeroVariance => (
                "no variance: every unit has the same value (or the sums are inconsistent)",
                "没有方差：所有单位的取值相同（或汇总值互相矛盾）",
            ),
            ReasonCode::NoUnits => ("no units", "没有单位"),
            ReasonCode::DenominatorZero => ("the denominator adds up to zero", "分母之和为零"),
            ReasonCode::NotFinite => (
                "the figures overflow: check the sums",
                "数值溢出：请检查汇总值",
            ),
            ReasonCode::TargetOutOfRange => (
                "the target effect takes the rate outside 0 to 1",
                "目标效应使比率超出 0 到 1 的范围",
            ),
            ReasonCode::EffectTooSmall => (
                "the target effect is too small to detect with any realistic sample",
                "目标效应过小，任何现实的样本量都无法检测",
            ),
        };
        Reason {
            code,
            en: en.to_string(),
            zh: zh.to_string(),
        }
    }
}

impl From<Degenerate> for Reason {
    fn from(d: Degenerate) -> Self {
        match d {
            Degenerate::ControlMeanZero => ReasonCode::BaselineZero,
            Degenerate::ZeroVariance => ReasonCode::ZeroVariance,
            Degenerate::TooFewUnits => ReasonCode::NotEnoughData,
        }
        .into()
    }
}

/// Figures, or the reason there are none. Serialised as the figures' fields, or as
/// `{"reason": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Computed<T> {
    Figures(T),
    Refused { reason: Reason },
}

impl<T> Computed<T> {
    pub fn figures(&self) -> Option<&T> {
        match self {
            Computed::Figures(f) => Some(f),
            Computed::Refused { .. } => None,
        }
    }

    pub fn reason(&self) -> Option<&Reason> {
        match self {
            Computed::Figures(_) => None,
            Computed::Refused { reason } => Some(reason),
        }
    }

    fn refused(code: ReasonCode) -> Self {
        Computed::Refused {
            reason: code.into(),
        }
    }
}

/// The expected loss of shipping the control and of shipping the variation, in the lift's
/// terms, with the metric's direction taken into account (gbstats' `risk`, swapped for
/// metrics where lower is better, as gbstats does for its inverse metrics).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Risk {
    pub control: f64,
    pub variation: f64,
}

/// One lift (relative or absolute) of a variation over the control.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiftFigures {
    /// The effect (the posterior mean with the Bayesian engine).
    pub estimate: f64,
    /// The confidence interval (confidence sequence, credible interval) at 1 − alpha.
    pub ci: [f64; 2],
    /// Frequentist and sequential engines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// Bayesian engine: the chance the variation is better, given the metric's direction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chance_to_win: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub risk: Option<Risk>,
}

impl LiftFigures {
    fn all_finite(&self) -> bool {
        let optional = [
            self.p_value,
            self.chance_to_win,
            self.risk.map(|r| r.control),
            self.risk.map(|r| r.variation),
        ];
        self.estimate.is_finite()
            && self.ci.iter().all(|x| x.is_finite())
            && optional.iter().flatten().all(|x| x.is_finite())
    }
}

/// statsmodels' pooled two-proportion z-test, for proportion metrics; z is (variation −
/// control) over the pooled standard error.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZTest {
    pub test: &'static str,
    pub z: f64,
    pub p_value: f64,
}

/// What the sample can detect: a two-sided z-test at the report's alpha on the standardised
/// effect (Cohen's h between rates for proportion metrics, Cohen's d with the pooled unit
/// variance otherwise), as statsmodels' `NormalIndPower` with the arms' actual sizes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PowerFigures {
    pub method: &'static str,
    /// The power wanted.
    pub wanted: f64,
    /// The smallest effect (in the report's `difference` terms, in the good direction) the
    /// sample detects with the power wanted; absent when none can be.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum_detectable_effect: Option<f64>,
    /// The options' `target_mde` (its size, in the good direction), when given, and the
    /// figures below.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_effect: Option<f64>,
    /// Cohen's h or d of the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effect_size: Option<f64>,
    /// The power against the target with the units so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reached: Option<bool>,
    /// Units each arm needs at an even split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub units_needed_per_variation: Option<f64>,
    /// At the traffic so far (with `days_running`), the days until the power is reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days_remaining: Option<f64>,
}

/// What a comparison concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Significantly (or probably) better, given the metric's direction.
    Better,
    /// Significantly (or probably) worse.
    Worse,
    Inconclusive,
    /// The data cannot support a comparison (see `reason`).
    NoFigures,
}

/// A variation against the control on one metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub variation: String,
    pub control: String,
    /// The test behind the p-value or chance to win.
    pub test: String,
    pub outcome: Outcome,
    /// Why the chosen lift has no figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    pub relative: Computed<LiftFigures>,
    pub absolute: Computed<LiftFigures>,
    /// The chosen lift's p-value (frequentist and sequential engines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// With a correction: the p-value adjusted over every comparison of the report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adjusted_p_value: Option<f64>,
    /// The chosen lift's chance to win (Bayesian engine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chance_to_win: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub risk: Option<Risk>,
    /// CUPED's theta for this pair (0: no adjustment was possible, as in gbstats).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cuped_theta: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pooled_z_test: Option<Computed<ZTest>>,
    pub power: Computed<PowerFigures>,
    pub verdict: Text,
}

/// A variation's value of a metric: the mean (the rate, the ratio) and its interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricValue {
    pub variation: String,
    pub units: u64,
    /// The plain mean (before CUPED).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stddev: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ci: Option<[f64; 2]>,
    /// Why there is no mean (and so no interval).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// Why there is a mean but no interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ci_reason: Option<Reason>,
}

/// One metric's values and comparisons.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricReport {
    pub key: String,
    pub name: String,
    pub kind: MetricKind,
    pub direction: Direction,
    pub guardrail: bool,
    pub cuped: bool,
    /// How the variations' intervals are computed.
    pub value_interval: &'static str,
    pub variations: Vec<MetricValue>,
    pub comparisons: Vec<Comparison>,
}

/// A variation as the report names it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariationInfo {
    pub key: String,
    pub name: String,
    /// Its share of traffic (the weights normalised).
    pub weight: f64,
}

/// Whether the sample-ratio check ran and what it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SrmStatus {
    Ok,
    Mismatch,
    NotChecked,
}

/// One arm of the sample-ratio check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SrmArm {
    pub variation: String,
    pub expected_share: f64,
    pub expected_units: f64,
    pub observed_units: u64,
    pub observed_share: f64,
    /// Weight 0: left out of the statistic.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

/// The sample-ratio mismatch check (Pearson's chi-square, as gbstats' `check_srm`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Srm {
    pub status: SrmStatus,
    pub threshold: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    pub arms: Vec<SrmArm>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
}

/// Units that saw more than one variation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MultipleExposures {
    pub count: u64,
    /// count / (count + units analysed).
    pub share: f64,
    pub flagged: bool,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub engine: Engine,
    pub difference: DifferenceType,
    pub alpha: f64,
    pub correction: Correction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequential_tuning: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prior: Option<PriorInput>,
    /// The control's key.
    pub control: String,
    pub variations: Vec<VariationInfo>,
    pub srm: Srm,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multiple_exposures: Option<MultipleExposures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days_running: Option<f64>,
    pub metrics: Vec<MetricReport>,
    /// Warnings first (sample-ratio mismatch, multiple exposures), then one line per
    /// comparison.
    pub verdict: Verdict,
}

/// The report's verdict, line by line, in English and Chinese.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub en: Vec<String>,
    pub zh: Vec<String>,
}

impl Verdict {
    fn push(&mut self, text: &Text) {
        self.en.push(text.en.clone());
        self.zh.push(text.zh.clone());
    }
}

/// A metric after validation: its summaries, aligned with the variations, with theta 0.
struct Checked<'a> {
    input: &'a MetricInput,
    summaries: Vec<Summary>,
    /// The plain (unadjusted) summaries the variations' values are shown from.
    plain: Vec<Summary>,
    cuped: bool,
}

fn finite(at: &str, field: &str, x: f64) -> Result<f64, ReportError> {
    if x.is_finite() {
        Ok(x)
    } else {
        Err(invalid(at, format!("{field} must be a finite number")))
    }
}

fn check_options(o: &Options) -> Result<(), ReportError> {
    let open_unit = |x: f64| x > 0.0 && x < 1.0;
    if !open_unit(o.alpha) {
        return Err(invalid("options.alpha", "must be between 0 and 1"));
    }
    if !open_unit(o.power) {
        return Err(invalid("options.power", "must be between 0 and 1"));
    }
    if !(o.sequential_tuning.is_finite() && o.sequential_tuning > 0.0) {
        return Err(invalid(
            "options.sequential_tuning",
            "must be a positive number",
        ));
    }
    finite("options.prior", "mean", o.prior.mean)?;
    if o.prior.proper && !(o.prior.stddev.is_finite() && o.prior.stddev > 0.0) {
        return Err(invalid(
            "options.prior.stddev",
            "must be a positive number for a proper prior",
        ));
    }
    if let Some(mde) = o.target_mde
        && !(mde.is_finite() && mde != 0.0)
    {
        return Err(invalid("options.target_mde", "must be a non-zero number"));
    }
    Ok(())
}

/// The moments of a CUPED pre-period value: 0/1 when the metric is a proportion and no sum of
/// squares is given.
fn pre_moments(kind: MetricKind, s: &Sums) -> Option<Moments> {
    let sum = s.pre_sum?;
    match (kind, s.pre_sum_squares) {
        (_, Some(sum_squares)) => Some(Moments::Mean { sum, sum_squares }),
        (MetricKind::Proportion, None) => Some(Moments::Proportion { sum }),
        _ => None,
    }
}

fn check_metric<'a>(m: &'a MetricInput, variations: &[String]) -> Result<Checked<'a>, ReportError> {
    let at = |v: &str| format!("metric {:?}, variation {v:?}", m.key);
    if let Some(unknown) = m.data.keys().find(|k| !variations.contains(k)) {
        return Err(invalid(
            format!("metric {:?}", m.key),
            format!("has data for {unknown:?}, which is not a variation"),
        ));
    }
    let cuped = m.data.values().any(|s| s.pre_sum.is_some());
    let pre_is_mean = m.data.values().any(|s| s.pre_sum_squares.is_some());
    let mut summaries = Vec::new();
    let mut plain = Vec::new();
    for v in variations {
        let Some(s) = m.data.get(v) else {
            return Err(invalid(
                format!("metric {:?}", m.key),
                format!("has no data for variation {v:?}"),
            ));
        };
        let at = at(v);
        let fields = [
            ("sum", Some(s.sum)),
            ("sum_squares", s.sum_squares),
            ("denominator_sum", s.denominator_sum),
            ("denominator_sum_squares", s.denominator_sum_squares),
            (
                "numerator_denominator_sum_of_products",
                s.numerator_denominator_sum_of_products,
            ),
            ("pre_sum", s.pre_sum),
            ("pre_sum_squares", s.pre_sum_squares),
            ("post_pre_sum_of_products", s.post_pre_sum_of_products),
        ];
        for (field, value) in fields {
            if let Some(x) = value {
                finite(&at, field, x)?;
            }
        }
        let needs = |field: &str, value: Option<f64>| {
            value.ok_or_else(|| invalid(&at, format!("a {} metric needs {field}", m.kind.as_str())))
        };
        let refuses = |field: &str, value: Option<f64>, why: &str| match value {
            Some(_) => Err(invalid(&at, format!("{field} is not used {why}"))),
            None => Ok(()),
        };
        let ratio_fields = [
            ("denominator_sum", s.denominator_sum),
            ("denominator_sum_squares", s.denominator_sum_squares),
            (
                "numerator_denominator_sum_of_products",
                s.numerator_denominator_sum_of_products,
            ),
        ];
        if m.kind == MetricKind::Ratio {
            let why = "by a ratio metric (gbstats 0.8.0 has no CUPED for ratios)";
            refuses("pre_sum", s.pre_sum, why)?;
            refuses("pre_sum_squares", s.pre_sum_squares, why)?;
            refuses("post_pre_sum_of_products", s.post_pre_sum_of_products, why)?;
        } else {
            for (field, value) in ratio_fields {
                refuses(field, value, "by a proportion or mean metric")?;
            }
        }
        if cuped != s.pre_sum.is_some() || pre_is_mean != s.pre_sum_squares.is_some() {
            return Err(invalid(
                &at,
                "give the CUPED fields (pre_sum, pre_sum_squares, post_pre_sum_of_products) in every variation of the metric or in none",
            ));
        }
        let plain_summary = match m.kind {
            MetricKind::Proportion => {
                if s.sum < 0.0 || s.sum > s.n as f64 || s.sum.fract() != 0.0 {
                    return Err(invalid(
                        &at,
                        format!(
                            "a proportion's sum counts converted units: a whole number from 0 to n ({}), not {}",
                            s.n, s.sum
                        ),
                    ));
                }
                if let Some(ss) = s.sum_squares
                    && ss != s.sum
                {
                    return Err(invalid(
                        &at,
                        "a proportion's values are 0 or 1, so sum_squares must equal sum (or be left out)",
                    ));
                }
                Summary::Proportion { n: s.n, sum: s.sum }
            }
            MetricKind::Mean => Summary::SampleMean {
                n: s.n,
                sum: s.sum,
                sum_squares: needs("sum_squares", s.sum_squares)?,
            },
            MetricKind::Ratio => Summary::Ratio {
                n: s.n,
                numerator: Moments::Mean {
                    sum: s.sum,
                    sum_squares: needs("sum_squares", s.sum_squares)?,
                },
                denominator: Moments::Mean {
                    sum: needs("denominator_sum", s.denominator_sum)?,
                    sum_squares: needs("denominator_sum_squares", s.denominator_sum_squares)?,
                },
                sum_of_products: needs(
                    "numerator_denominator_sum_of_products",
                    s.numerator_denominator_sum_of_products,
                )?,
            },
        };
        let summary = if cuped {
            let pre = pre_moments(m.kind, s)
                .ok_or_else(|| invalid(&at, "a CUPED mean metric needs pre_sum_squares"))?;
            if let Moments::Proportion { sum } = pre
                && (sum < 0.0 || sum > s.n as f64)
            {
                return Err(invalid(
                    &at,
                    "a 0/1 pre-period value (no pre_sum_squares) needs pre_sum from 0 to n",
                ));
            }
            let post = match m.kind {
                MetricKind::Proportion => Moments::Proportion { sum: s.sum },
                _ => Moments::Mean {
                    sum: s.sum,
                    sum_squares: needs("sum_squares", s.sum_squares)?,
                },
            };
            Summary::Adjusted {
                n: s.n,
                post,
                pre,
                sum_of_products: needs("post_pre_sum_of_products", s.post_pre_sum_of_products)?,
                theta: 0.0,
            }
        } else {
            refuses(
                "post_pre_sum_of_products",
                s.post_pre_sum_of_products,
                "without pre_sum",
            )?;
            plain_summary
        };
        summaries.push(summary);
        plain.push(plain_summary);
    }
    Ok(Checked {
        input: m,
        summaries,
        plain,
        cuped,
    })
}

fn with_theta(s: Summary, theta: f64) -> Summary {
    match s {
        Summary::Adjusted {
            n,
            post,
            pre,
            sum_of_products,
            ..
        } => Summary::Adjusted {
            n,
            post,
            pre,
            sum_of_products,
            theta,
        },
        other => other,
    }
}

fn normal_quantile(p: f64) -> f64 {
    Normal::standard().inverse_cdf(p)
}

/// A variation's value: Wilson's score interval for a rate (statsmodels'
/// `proportion_confint(method="wilson")`), a Student-t interval on n − 1 degrees of freedom for
/// a mean or a ratio (the ratio's variance by the delta method).
fn metric_value(variation: &str, s: &Summary, alpha: f64) -> MetricValue {
    let n = s.n();
    let mut value = MetricValue {
        variation: variation.to_string(),
        units: n,
        mean: None,
        stddev: None,
        ci: None,
        reason: None,
        ci_reason: None,
    };
    if n == 0 {
        value.reason = Some(ReasonCode::NoUnits.into());
        return value;
    }
    if let Summary::Ratio {
        denominator: Moments::Mean { sum, .. } | Moments::Proportion { sum },
        ..
    } = s
        && *sum == 0.0
    {
        value.reason = Some(ReasonCode::DenominatorZero.into());
        return value;
    }
    let mean = s.mean();
    let variance = s.variance();
    value.mean = Some(mean);
    if variance >= 0.0 {
        value.stddev = Some(variance.sqrt());
    }
    let nf = n as f64;
    let ci = match s {
        Summary::Proportion { .. } => {
            let z = normal_quantile(1.0 - alpha / 2.0);
            let z2 = z * z;
            let denominator = 1.0 + z2 / nf;
            let centre = (mean + z2 / (2.0 * nf)) / denominator;
            let half = z * (mean * (1.0 - mean) / nf + z2 / (4.0 * nf * nf)).sqrt() / denominator;
            // The bounds are within [0, 1]; rounding can push a bound of 0 a hair below.
            Ok([(centre - half).max(0.0), (centre + half).min(1.0)])
        }
        _ if n < 2 => Err(ReasonCode::NotEnoughData),
        // Every unit alike (or sums that contradict each other): a zero-width interval
        // would claim a certainty the data cannot give.
        _ if variance <= 0.0 => Err(ReasonCode::ZeroVariance),
        _ => match crate::stats::student_t_quantile(nf - 1.0, 1.0 - alpha / 2.0) {
            Some(t) => {
                let half = t * (variance / nf).sqrt();
                Ok([mean - half, mean + half])
            }
            None => Err(ReasonCode::NotEnoughData),
        },
    };
    match ci {
        Ok(ci) if ci.iter().all(|x| x.is_finite()) && mean.is_finite() => value.ci = Some(ci),
        Ok(_) => {
            value.mean = None;
            value.stddev = None;
            value.reason = Some(ReasonCode::NotFinite.into());
        }
        Err(code) => value.ci_reason = Some(code.into()),
    }
    value
}

/// Everything a comparison needs from the report's options.
struct Settings<'a> {
    options: &'a Options,
    direction: Direction,
}

fn lift(
    settings: &Settings<'_>,
    control: &Summary,
    variation: &Summary,
    difference: Difference,
) -> Computed<LiftFigures> {
    let o = settings.options;
    let result = match o.engine {
        Engine::Frequentist | Engine::Sequential => {
            let estimate = if o.engine == Engine::Frequentist {
                stats::t_test(control, variation, difference, o.alpha)
            } else {
                stats::sequential(control, variation, difference, o.alpha, o.sequential_tuning)
            };
            estimate.map(|e| LiftFigures {
                estimate: e.effect,
                ci: [e.interval.0, e.interval.1],
                p_value: Some(e.p_value),
                chance_to_win: None,
                risk: None,
            })
        }
        Engine::Bayesian => bayesian_lift(settings, control, variation, difference),
    };
    match result {
        Ok(f) if f.all_finite() => Computed::Figures(f),
        Ok(_) => Computed::refused(ReasonCode::NotFinite),
        Err(d) => Computed::Refused { reason: d.into() },
    }
}

fn bayesian_lift(
    settings: &Settings<'_>,
    control: &Summary,
    variation: &Summary,
    difference: Difference,
) -> Result<LiftFigures, Degenerate> {
    let p = settings.options.prior;
    // The prior is stated on the relative effect (gbstats' runner), so an absolute lift takes
    // it scaled by the control's plain mean. With a mean of zero it cannot be expressed, and
    // gbstats refuses (even the flat prior, which it rescales too); so does the report.
    if difference == Difference::Absolute && control.unadjusted_mean() == 0.0 {
        // gbstats finds too few units or no variance before it divides: so does the report.
        stats::bayesian(
            control,
            variation,
            difference,
            Prior::default(),
            settings.options.alpha,
        )?;
        return Err(Degenerate::ControlMeanZero);
    }
    let prior = match (difference, p.proper) {
        (_, false) => Prior::default(),
        (Difference::Relative, true) => Prior {
            mean: p.mean,
            variance: p.stddev.powi(2),
            proper: true,
        },
        (Difference::Absolute, true) => {
            let base = control.unadjusted_mean();
            Prior {
                mean: p.mean * base.abs(),
                variance: p.stddev.powi(2) * base.powi(2),
                proper: true,
            }
        }
    };
    if prior.proper {
        // A proper prior hides data whose variance overflowed behind the prior's own finite
        // figures; the flat prior's posterior is the data alone, so check that first.
        let data = stats::bayesian(
            control,
            variation,
            difference,
            Prior::default(),
            settings.options.alpha,
        )?;
        if ![data.effect, data.interval.0, data.interval.1]
            .iter()
            .all(|x| x.is_finite())
        {
            return Ok(LiftFigures {
                estimate: f64::NAN,
                ci: [f64::NAN; 2],
                p_value: None,
                chance_to_win: None,
                risk: None,
            });
        }
    }
    let post = stats::bayesian(
        control,
        variation,
        difference,
        prior,
        settings.options.alpha,
    )?;
    let (chance_to_win, risk) = match settings.direction {
        Direction::Increase => (
            post.chance_to_win,
            Risk {
                control: post.risk.0,
                variation: post.risk.1,
            },
        ),
        Direction::Decrease => (
            1.0 - post.chance_to_win,
            Risk {
                control: post.risk.1,
                variation: post.risk.0,
            },
        ),
    };
    Ok(LiftFigures {
        estimate: post.effect,
        ci: [post.interval.0, post.interval.1],
        p_value: None,
        chance_to_win: Some(chance_to_win),
        risk: Some(risk),
    })
}

/// How an effect in the report's terms becomes a standardised effect size.
enum EffectScale {
    /// Cohen's h between the control's rate and the rate the effect leads to.
    Rate { base: f64, relative: bool },
    /// Cohen's d: the absolute effect (`effect × per_unit`) over the pooled unit deviation.
    Standardised { sd: f64, per_unit: f64 },
}

impl EffectScale {
    fn method(&self) -> &'static str {
        match self {
            EffectScale::Rate { .. } => {
                "two-sided z-test on Cohen's h between the rates (statsmodels NormalIndPower)"
            }
            EffectScale::Standardised { .. } => {
                "two-sided z-test on Cohen's d with the pooled unit variance (statsmodels NormalIndPower)"
            }
        }
    }

    fn size(&self, effect: f64) -> Result<f64, ReasonCode> {
        match *self {
            EffectScale::Rate { base, relative } => {
                let target = if relative {
                    base * (1.0 + effect)
                } else {
                    base + effect
                };
                if (0.0..=1.0).contains(&target) {
                    Ok(stats::cohens_h(target, base).abs())
                } else {
                    Err(ReasonCode::TargetOutOfRange)
                }
            }
            EffectScale::Standardised { sd, per_unit } => Ok((effect * per_unit).abs() / sd),
        }
    }
}

/// The power section: see [`PowerFigures`].
fn power(
    settings: &Settings<'_>,
    kind: MetricKind,
    cuped: bool,
    control: &Summary,
    variation: &Summary,
    days_running: Option<f64>,
) -> Computed<PowerFigures> {
    let o = settings.options;
    let relative = o.difference == DifferenceType::Relative;
    let (n_a, n_b) = (control.n(), variation.n());
    if n_a < 2 || n_b < 2 {
        return Computed::refused(ReasonCode::NotEnoughData);
    }
    // Two arms of n_a and n_b units test like two of this many each.
    let n = 2.0 / (1.0 / n_a as f64 + 1.0 / n_b as f64);
    let base = control.unadjusted_mean();
    if relative && base == 0.0 {
        return Computed::refused(ReasonCode::BaselineZero);
    }
    let rate = kind == MetricKind::Proportion && !cuped;
    let good = match settings.direction {
        Direction::Increase => 1.0,
        Direction::Decrease => -1.0,
    };
    let (scale, mde) = if rate {
        // The detectable rate in the good direction: for a falling rate, mirror it (h is
        // symmetric under p → 1 − p).
        let detectable = match settings.direction {
            Direction::Increase => stats::minimum_detectable_rate(base, n, o.alpha, o.power),
            Direction::Decrease => {
                stats::minimum_detectable_rate(1.0 - base, n, o.alpha, o.power).map(|r| 1.0 - r)
            }
        };
        let mde = detectable.map(|r| if relative { r / base - 1.0 } else { r - base });
        (EffectScale::Rate { base, relative }, mde)
    } else {
        let (v_a, v_b) = (control.variance(), variation.variance());
        let (na, nb) = (n_a as f64, n_b as f64);
        let pooled = ((na - 1.0) * v_a + (nb - 1.0) * v_b) / (na + nb - 2.0);
        if pooled.is_nan() || pooled <= 0.0 {
            return Computed::refused(ReasonCode::ZeroVariance);
        }
        let sd = pooled.sqrt();
        let per_unit = if relative { base.abs() } else { 1.0 };
        let mde =
            stats::minimum_detectable_h(n, o.alpha, o.power).map(|d| good * d * sd / per_unit);
        (EffectScale::Standardised { sd, per_unit }, mde)
    };
    let mut figures = PowerFigures {
        method: scale.method(),
        wanted: o.power,
        minimum_detectable_effect: mde.filter(|x| x.is_finite()),
        target_effect: None,
        effect_size: None,
        power: None,
        reached: None,
        units_needed_per_variation: None,
        days_remaining: None,
    };
    if let Some(target) = o.target_mde {
        // The target is a size; it is looked for in the good direction.
        let target = good * target.abs();
        let size = match scale.size(target) {
            Ok(size) => size,
            Err(code) => return Computed::refused(code),
        };
        let reached = stats::power(size, n, o.alpha);
        let Some(needed) = stats::sample_size_per_arm(size, o.alpha, o.power) else {
            return Computed::refused(ReasonCode::EffectTooSmall);
        };
        figures.target_effect = Some(target);
        figures.effect_size = Some(size);
        figures.power = Some(reached);
        figures.reached = Some(reached >= o.power);
        figures.units_needed_per_variation = Some(needed);
        // Units arrive at a steady rate, so the equivalent arm size grows in proportion to time.
        figures.days_remaining = days_running
            .filter(|d| *d > 0.0)
            .map(|days| (days * needed / n - days).max(0.0));
    }
    let all = [
        Some(figures.wanted),
        figures.target_effect,
        figures.effect_size,
        figures.power,
        figures.units_needed_per_variation,
        figures.days_remaining,
    ];
    if all.iter().flatten().all(|x| x.is_finite()) {
        Computed::Figures(figures)
    } else {
        Computed::refused(ReasonCode::NotFinite)
    }
}

fn test_name(o: &Options, kind: MetricKind, cuped: bool) -> String {
    let mut name = match o.engine {
        Engine::Frequentist => "unpooled Welch t-test".to_string(),
        Engine::Sequential => format!(
            "sequential unpooled t-test (asymptotic confidence sequence, tuning {})",
            o.sequential_tuning
        ),
        Engine::Bayesian if o.prior.proper => format!(
            "Bayesian Gaussian effect model (prior N({}, {}²) on the relative effect)",
            o.prior.mean, o.prior.stddev
        ),
        Engine::Bayesian => "Bayesian Gaussian effect model (flat prior)".to_string(),
    };
    if kind == MetricKind::Ratio {
        name.push_str(", ratio by the delta method");
    }
    if cuped {
        name.push_str(", CUPED-adjusted");
    }
    name
}

fn compare(
    settings: &Settings<'_>,
    metric: &Checked<'_>,
    control: usize,
    variation: usize,
    keys: &[String],
    days_running: Option<f64>,
) -> Comparison {
    let o = settings.options;
    let kind = metric.input.kind;
    let (mut a, mut b) = (metric.summaries[control], metric.summaries[variation]);
    let mut cuped_theta = None;
    if metric.cuped {
        let theta = stats::cuped_theta(&a, &b);
        cuped_theta = Some(theta).filter(|t| t.is_finite());
        a = with_theta(a, theta);
        b = with_theta(b, theta);
    }
    let relative = lift(settings, &a, &b, Difference::Relative);
    let absolute = lift(settings, &a, &b, Difference::Absolute);
    let chosen = match o.difference {
        DifferenceType::Relative => &relative,
        DifferenceType::Absolute => &absolute,
    };
    let pooled_z_test = match (kind, metric.cuped, a, b) {
        (
            MetricKind::Proportion,
            false,
            Summary::Proportion { n: n_a, sum: x_a },
            Summary::Proportion { n: n_b, sum: x_b },
        ) => Some(
            // Validated as whole numbers from 0 to n.
            match stats::pooled_z_test(x_b as u64, n_b, x_a as u64, n_a) {
                Ok((z, p)) if z.is_finite() && p.is_finite() => Computed::Figures(ZTest {
                    test: "pooled two-proportion z-test (statsmodels proportions_ztest)",
                    z,
                    p_value: p,
                }),
                Ok(_) => Computed::refused(ReasonCode::NotFinite),
                Err(d) => Computed::Refused { reason: d.into() },
            },
        ),
        _ => None,
    };
    Comparison {
        variation: keys[variation].clone(),
        control: keys[control].clone(),
        test: test_name(o, kind, metric.cuped),
        outcome: Outcome::NoFigures,
        reason: chosen.reason().cloned(),
        p_value: chosen.figures().and_then(|f| f.p_value),
        adjusted_p_value: None,
        chance_to_win: chosen.figures().and_then(|f| f.chance_to_win),
        risk: chosen.figures().and_then(|f| f.risk),
        relative,
        absolute,
        cuped_theta,
        pooled_z_test,
        power: power(settings, kind, metric.cuped, &a, &b, days_running),
        verdict: Text {
            en: String::new(),
            zh: String::new(),
        },
    }
}

fn srm(keys: &[String], weights: &[f64], units: Option<Vec<u64>>) -> Srm {
    let total_weight: f64 = weights.iter().sum();
    let Some(units) = units.filter(|u| u.iter().any(|&x| x > 0)) else {
        return Srm {
            status: SrmStatus::NotChecked,
            threshold: SRM_THRESHOLD,
            p_value: None,
            arms: Vec::new(),
            reason: Some(ReasonCode::NoUnits.into()),
        };
    };
    let total: u64 = units.iter().sum();
    let arms = keys
        .iter()
        .zip(weights)
        .zip(&units)
        .map(|((key, &w), &o)| SrmArm {
            variation: key.clone(),
            expected_share: w / total_weight,
            expected_units: w / total_weight * total as f64,
            observed_units: o,
            observed_share: o as f64 / total as f64,
            skipped: w == 0.0,
        })
        .collect();
    let p = stats::srm_p_value(&units, weights);
    Srm {
        status: if p < SRM_THRESHOLD {
            SrmStatus::Mismatch
        } else {
            SrmStatus::Ok
        },
        threshold: SRM_THRESHOLD,
        p_value: Some(p),
        arms,
        reason: None,
    }
}

/// Builds the report. Errors name the option, variation or metric that is inconsistent; data
/// that is merely too thin gives reasons inside the report instead.
pub fn analyze(input: &ReportInput) -> Result<Report, ReportError> {
    let o = &input.options;
    check_options(o)?;
    if input.variations.len() < 2 {
        return Err(invalid(
            "variations",
            "an experiment needs a control and at least one variation",
        ));
    }
    let keys: Vec<String> = input.variations.iter().map(|v| v.key.clone()).collect();
    for (i, key) in keys.iter().enumerate() {
        if key.is_empty() {
            return Err(invalid(format!("variations[{i}]"), "the key is empty"));
        }
        if keys[..i].contains(key) {
            return Err(invalid(format!("variation {key:?}"), "appears twice"));
        }
    }
    let given: Vec<f64> = input.variations.iter().filter_map(|v| v.weight).collect();
    let weights: Vec<f64> = if given.is_empty() {
        vec![1.0; keys.len()]
    } else if given.len() == keys.len() {
        given
    } else {
        return Err(invalid(
            "variations",
            "give every variation a weight, or none (for an even split)",
        ));
    };
    for (key, w) in keys.iter().zip(&weights) {
        if !(w.is_finite() && *w >= 0.0) {
            return Err(invalid(
                format!("variation {key:?}"),
                "the weight must be a number, 0 or more",
            ));
        }
    }
    let total_weight: f64 = weights.iter().sum();
    if total_weight <= 0.0 {
        return Err(invalid("variations", "the weights add up to zero"));
    }
    if let Some(days) = input.days_running
        && !(days.is_finite() && days >= 0.0)
    {
        return Err(invalid("days_running", "must be a number, 0 or more"));
    }
    let mut metrics = Vec::new();
    for (i, m) in input.metrics.iter().enumerate() {
        if input.metrics[..i].iter().any(|other| other.key == m.key) {
            return Err(invalid(format!("metric {:?}", m.key), "appears twice"));
        }
        metrics.push(check_metric(m, &keys)?);
    }

    let names: Vec<String> = input
        .variations
        .iter()
        .map(|v| v.name.clone().unwrap_or_else(|| v.key.clone()))
        .collect();
    let units: Option<Vec<u64>> = input
        .variations
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.units
                .or_else(|| metrics.first().map(|m| m.summaries[i].n()))
        })
        .collect();
    let analysed: Option<u64> = units.as_ref().map(|u| u.iter().sum());
    let srm = srm(&keys, &weights, units);
    let multiple_exposures = input.multiple_exposures.map(|count| {
        let share = match analysed {
            Some(total) if count + total > 0 => count as f64 / (count + total) as f64,
            _ => 0.0,
        };
        MultipleExposures {
            count,
            share,
            flagged: count >= MULTIPLE_EXPOSURE_MIN_COUNT && share >= MULTIPLE_EXPOSURE_SHARE,
        }
    });

    let mut reports = Vec::new();
    for metric in &metrics {
        let settings = Settings {
            options: o,
            direction: metric.input.direction,
        };
        let value_interval = match metric.input.kind {
            MetricKind::Proportion => "Wilson score interval",
            MetricKind::Mean => "Student-t interval on n - 1 degrees of freedom",
            MetricKind::Ratio => {
                "Student-t interval on n - 1 degrees of freedom, variance by the delta method"
            }
        };
        reports.push(MetricReport {
            key: metric.input.key.clone(),
            name: metric
                .input
                .name
                .clone()
                .unwrap_or_else(|| metric.input.key.clone()),
            kind: metric.input.kind,
            direction: metric.input.direction,
            guardrail: metric.input.guardrail,
            cuped: metric.cuped,
            value_interval,
            variations: keys
                .iter()
                .zip(&metric.plain)
                .map(|(k, s)| metric_value(k, s, o.alpha))
                .collect(),
            comparisons: (1..keys.len())
                .map(|v| compare(&settings, metric, 0, v, &keys, input.days_running))
                .collect(),
        });
    }

    correct(&mut reports, o);
    let mut verdict = Verdict {
        en: Vec::new(),
        zh: Vec::new(),
    };
    if let (SrmStatus::Mismatch, Some(p)) = (srm.status, srm.p_value) {
        verdict.push(&Text {
            en: format!(
                "Sample ratio mismatch: do not trust these results (p = {}, below {SRM_THRESHOLD}: the units are not split as the weights say)",
                format_p(p)
            ),
            zh: format!(
                "样本比例不匹配：请勿信任这些结果（p = {}，低于 {SRM_THRESHOLD}：各组单位数与权重不符）",
                format_p(p)
            ),
        });
    }
    if let Some(m) = multiple_exposures.as_ref().filter(|m| m.flagged) {
        let share = format!("{:.1}%", m.share * 100.0);
        verdict.push(&Text {
            en: format!(
                "{share} of units ({}) saw more than one variation: check the assignment and the exposure logging",
                m.count
            ),
            zh: format!(
                "{share} 的单位（{} 个）看到了不止一个变体：请检查分流和曝光记录",
                m.count
            ),
        });
    }
    if reports.is_empty() {
        verdict.push(&Text {
            en: "No metrics to compare".to_string(),
            zh: "没有可比较的指标".to_string(),
        });
    }
    for metric in &mut reports {
        for c in &mut metric.comparisons {
            let v = keys.iter().position(|k| *k == c.variation).unwrap_or(0);
            let names = Names {
                metric: &metric.name,
                variation: &names[v],
                control: &names[0],
            };
            conclude(
                c,
                &names,
                metric.kind,
                metric.guardrail,
                metric.direction,
                o,
            );
            verdict.push(&c.verdict);
        }
    }

    Ok(Report {
        name: input.name.clone(),
        engine: o.engine,
        difference: o.difference,
        alpha: o.alpha,
        correction: o.correction,
        sequential_tuning: (o.engine == Engine::Sequential).then_some(o.sequential_tuning),
        prior: (o.engine == Engine::Bayesian).then_some(o.prior),
        control: keys[0].clone(),
        variations: keys
            .iter()
            .zip(&names)
            .zip(&weights)
            .map(|((key, name), w)| VariationInfo {
                key: key.clone(),
                name: name.clone(),
                weight: w / total_weight,
            })
            .collect(),
        srm,
        multiple_exposures,
        days_running: input.days_running,
        metrics: reports,
        verdict,
    })
}

/// Adjusts the p-values of every comparison that has one, as one family.
fn correct(reports: &mut [MetricReport], o: &Options) {
    let adjust = match o.correction {
        Correction::None => return,
        Correction::Holm => stats::holm,
        Correction::BenjaminiHochberg => stats::benjamini_hochberg,
    };
    let mut family: Vec<&mut Comparison> = reports
        .iter_mut()
        .flat_map(|m| m.comparisons.iter_mut())
        .filter(|c| c.p_value.is_some())
        .collect();
    let p_values: Vec<f64> = family.iter().filter_map(|c| c.p_value).collect();
    for (c, adjusted) in family.iter_mut().zip(adjust(&p_values)) {
        c.adjusted_p_value = Some(adjusted);
    }
}

struct Names<'a> {
    metric: &'a str,
    variation: &'a str,
    control: &'a str,
}

/// Decides the outcome and writes the verdict.
fn conclude(
    c: &mut Comparison,
    names: &Names<'_>,
    kind: MetricKind,
    guardrail: bool,
    direction: Direction,
    o: &Options,
) {
    let Names {
        metric,
        variation: b,
        control: a,
    } = *names;
    let chosen = match o.difference {
        DifferenceType::Relative => &c.relative,
        DifferenceType::Absolute => &c.absolute,
    };
    let f = match chosen {
        Computed::Figures(f) => f,
        Computed::Refused { reason } => {
            c.outcome = Outcome::NoFigures;
            c.verdict = Text {
                en: format!("{metric}, {b} vs {a}: {}", reason.en),
                zh: format!("「{metric}」{b} 对比 {a}：{}", reason.zh),
            };
            return;
        }
    };
    let effect = Effect::new(f, o.difference, kind);
    let level = format_level(o.alpha);
    let better_sign = match direction {
        Direction::Increase => f.estimate > 0.0,
        Direction::Decrease => f.estimate < 0.0,
    };
    let (outcome, mut text) = if o.engine == Engine::Bayesian {
        let chance = f.chance_to_win.unwrap_or(0.5);
        let chance_text = format!("{:.1}%", chance * 100.0);
        let figures_en = format!(
            "{chance_text} chance to win, {} ({level} credible interval {} to {})",
            effect.estimate, effect.low, effect.high
        );
        let figures_zh = format!(
            "胜出概率 {chance_text}，{}（{level} 可信区间 {} 至 {}）",
            effect.estimate, effect.low, effect.high
        );
        if chance >= 1.0 - o.alpha {
            (
                Outcome::Better,
                Text {
                    en: format!("{b} is probably better than {a} on {metric}: {figures_en}"),
                    zh: format!("{b} 在「{metric}」上很可能优于 {a}：{figures_zh}"),
                },
            )
        } else if chance <= o.alpha {
            let text = if guardrail {
                Text {
                    en: format!(
                        "Guardrail {metric} probably worsened in {b} against {a}: {figures_en}"
                    ),
                    zh: format!("护栏指标「{metric}」在 {b} 中很可能比 {a} 变差：{figures_zh}"),
                }
            } else {
                Text {
                    en: format!("{b} is probably worse than {a} on {metric}: {figures_en}"),
                    zh: format!("{b} 在「{metric}」上很可能劣于 {a}：{figures_zh}"),
                }
            };
            (Outcome::Worse, text)
        } else {
            (
                Outcome::Inconclusive,
                Text {
                    en: format!("Too close to call between {b} and {a} on {metric}: {figures_en}"),
                    zh: format!("{b} 与 {a} 在「{metric}」上尚无定论：{figures_zh}"),
                },
            )
        }
    } else {
        let p = c.adjusted_p_value.or(f.p_value).unwrap_or(1.0);
        let (ci_en, ci_zh) = if o.engine == Engine::Sequential {
            ("always-valid CI", "始终有效置信区间")
        } else {
            ("CI", "置信区间")
        };
        let (p_en, p_zh) = match (c.adjusted_p_value, o.correction) {
            (Some(_), Correction::Holm) => (" (Holm-adjusted)", "（Holm 校正）"),
            (Some(_), Correction::BenjaminiHochberg) => (
                " (Benjamini-Hochberg-adjusted)",
                "（Benjamini-Hochberg 校正）",
            ),
            _ => ("", ""),
        };
        let figures_en = format!(
            "{} ({level} {ci_en} {} to {}), p = {}{p_en}",
            effect.estimate,
            effect.low,
            effect.high,
            format_p(p)
        );
        let figures_zh = format!(
            "{}（{level} {ci_zh} {} 至 {}），p = {}{p_zh}",
            effect.estimate,
            effect.low,
            effect.high,
            format_p(p)
        );
        if p < o.alpha && better_sign {
            (
                Outcome::Better,
                Text {
                    en: format!("{b} beats {a} on {metric}: {figures_en}"),
                    zh: format!("{b} 在「{metric}」上优于 {a}：{figures_zh}"),
                },
            )
        } else if p < o.alpha {
            let text = if guardrail {
                Text {
                    en: format!("Guardrail {metric} worsened in {b} against {a}: {figures_en}"),
                    zh: format!("护栏指标「{metric}」在 {b} 中比 {a} 变差：{figures_zh}"),
                }
            } else {
                Text {
                    en: format!("{b} loses to {a} on {metric}: {figures_en}"),
                    zh: format!("{b} 在「{metric}」上劣于 {a}：{figures_zh}"),
                }
            };
            (Outcome::Worse, text)
        } else {
            (
                Outcome::Inconclusive,
                Text {
                    en: format!(
                        "No significant difference between {b} and {a} on {metric}: {figures_en}"
                    ),
                    zh: format!("{b} 与 {a} 在「{metric}」上无显著差异：{figures_zh}"),
                },
            )
        }
    };
    // An inconclusive result with too little power is "not enough data yet", not "no effect".
    if outcome == Outcome::Inconclusive
        && let Computed::Figures(power) = &c.power
        && let (Some(false), Some(reached), Some(target)) =
            (power.reached, power.power, power.target_effect)
    {
        let target = Effect::format_one(target, o.difference, kind, target.abs());
        let reached = format!("{:.0}%", reached * 100.0);
        let wanted = format!("{:.0}%", power.wanted * 100.0);
        match power.days_remaining {
            Some(days) => {
                let days = days.ceil();
                text.en.push_str(&format!(
                    "; not enough data yet: {reached} power to detect {target} ({wanted} wanted), about {days} more days"
                ));
                text.zh.push_str(&format!(
                    "；数据尚不足：检测 {target} 的功效为 {reached}（目标 {wanted}），约还需 {days} 天"
                ));
            }
            None => {
                text.en.push_str(&format!(
                    "; not enough data yet: {reached} power to detect {target} ({wanted} wanted)"
                ));
                text.zh.push_str(&format!(
                    "；数据尚不足：检测 {target} 的功效为 {reached}（目标 {wanted}）"
                ));
            }
        }
    }
    c.outcome = outcome;
    c.verdict = text;
}

/// A lift and its interval, formatted alike: percent for relative lifts, percentage points for
/// absolute lifts of rates, plain numbers otherwise, to two significant digits of the
/// interval's half-width.
struct Effect {
    estimate: String,
    low: String,
    high: String,
}

impl Effect {
    fn new(f: &LiftFigures, difference: DifferenceType, kind: MetricKind) -> Effect {
        let half = (f.ci[1] - f.ci[0]).abs() / 2.0;
        let one = |x| Effect::format_one(x, difference, kind, half);
        Effect {
            estimate: one(f.estimate),
            low: one(f.ci[0]),
            high: one(f.ci[1]),
        }
    }

    fn format_one(x: f64, difference: DifferenceType, kind: MetricKind, precision: f64) -> String {
        match (difference, kind) {
            (DifferenceType::Relative, _) => {
                format!("{}%", signed(x * 100.0, decimals(precision * 100.0, 1)))
            }
            (DifferenceType::Absolute, MetricKind::Proportion) => {
                format!("{} pp", signed(x * 100.0, decimals(precision * 100.0, 1)))
            }
            (DifferenceType::Absolute, _) => signed(x, decimals(precision, 0)),
        }
    }
}

/// Decimals showing two significant digits of `scale`, at least `min`, at most 8.
fn decimals(scale: f64, min: usize) -> usize {
    if !(scale.is_finite() && scale > 0.0) {
        return min;
    }
    let wanted = 1 - scale.log10().floor() as i64;
    wanted.clamp(min as i64, 8) as usize
}

fn signed(x: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, x.abs());
    // "-0.0" reads as a loss; a value that rounds to zero gets no sign.
    if text.chars().all(|c| c == '0' || c == '.') {
        text
    } else if x < 0.0 {
        format!("-{text}")
    } else {
        format!("+{text}")
    }
}

/// p to two significant digits ("0.04", "0.066", "0.0016"), scientific below 0.0001.
pub fn format_p(p: f64) -> String {
    if p < 1e-4 {
        return format!("{p:.1e}");
    }
    let text = format!("{:.*}", decimals(p, 0), p);
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// "95%" for alpha 0.05, "99.5%" for 0.005.
fn format_level(alpha: f64) -> String {
    let level = format!("{:.4}", (1.0 - alpha) * 100.0);
    format!("{}%", level.trim_end_matches('0').trim_end_matches('.'))
}

/// What to plan for: a rate (`baseline_rate`) or a mean (`baseline_mean` and `baseline_sd`),
/// and the smallest effect worth detecting (`mde`, absolute unless `relative`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleSizeInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_sd: Option<f64>,
    pub mde: f64,
    #[serde(default)]
    pub relative: bool,
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    #[serde(default = "default_power")]
    pub power: f64,
    /// Arms, the control included.
    #[serde(default = "default_variations")]
    pub variations: u32,
    /// Units entering the experiment per day (all arms together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_units: Option<f64>,
}

fn default_alpha() -> f64 {
    0.05
}

fn default_power() -> f64 {
    0.8
}

fn default_variations() -> u32 {
    2
}

/// How many units an experiment needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleSizePlan {
    pub test: &'static str,
    pub baseline: f64,
    /// The rate or mean to detect.
    pub target: f64,
    pub mde_absolute: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mde_relative: Option<f64>,
    /// Cohen's h (rates) or d (means).
    pub effect_size: f64,
    pub alpha: f64,
    pub power: f64,
    pub variations: u32,
    /// statsmodels' `NormalIndPower().solve_power` answer.
    pub units_per_variation_exact: f64,
    pub units_per_variation: u64,
    pub total_units: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily_units: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days: Option<u64>,
    pub summary: Text,
}

/// Plans an experiment: units per variation for a two-sided z-test at `alpha` to detect the
/// effect with `power` (each variation against the control at that alpha, no correction),
/// total units, and days at `daily_units` a day.
///
/// ```
/// use cohort_experiment::report::{plan_sample_size, SampleSizeInput};
/// let plan = plan_sample_size(&SampleSizeInput {
///     baseline_rate: Some(0.10), baseline_mean: None, baseline_sd: None,
///     mde: 0.10, relative: true, alpha: 0.05, power: 0.8, variations: 2,
///     daily_units: Some(1000.0),
/// }).unwrap();
/// assert_eq!(plan.units_per_variation, 14745);
/// assert_eq!(plan.days, Some(30));
/// ```
pub fn plan_sample_size(input: &SampleSizeInput) -> Result<SampleSizePlan, ReportError> {
    let open_unit = |x: f64| x > 0.0 && x < 1.0;
    if !open_unit(input.alpha) {
        return Err(invalid("alpha", "must be between 0 and 1"));
    }
    if !open_unit(input.power) {
        return Err(invalid("power", "must be between 0 and 1"));
    }
    if input.variations < 2 {
        return Err(invalid(
            "variations",
            "an experiment needs at least two (the control included)",
        ));
    }
    if !(input.mde.is_finite() && input.mde != 0.0) {
        return Err(invalid("mde", "must be a non-zero number"));
    }
    if let Some(daily) = input.daily_units
        && !(daily.is_finite() && daily > 0.0)
    {
        return Err(invalid("daily_units", "must be a positive number"));
    }
    let to_target = |base: f64| {
        if input.relative {
            base * (1.0 + input.mde)
        } else {
            base + input.mde
        }
    };
    let (test, baseline, target, effect_size) =
        match (input.baseline_rate, input.baseline_mean, input.baseline_sd) {
            (Some(rate), None, None) => {
                if !open_unit(rate) {
                    return Err(invalid("baseline_rate", "must be between 0 and 1"));
                }
                let target = to_target(rate);
                if !(0.0..=1.0).contains(&target) {
                    return Err(invalid(
                        "mde",
                        format!("takes the rate from {rate} to {target}, outside 0 to 1"),
                    ));
                }
                (
                    "two-sided z-test on Cohen's h (statsmodels NormalIndPower)",
                    rate,
                    target,
                    stats::cohens_h(target, rate).abs(),
                )
            }
            (None, Some(mean), Some(sd)) => {
                finite("baseline_mean", "the mean", mean)?;
                if !(sd.is_finite() && sd > 0.0) {
                    return Err(invalid("baseline_sd", "must be a positive number"));
                }
                if input.relative && mean == 0.0 {
                    return Err(invalid(
                        "mde",
                        "a relative effect needs a baseline mean other than zero",
                    ));
                }
                let target = to_target(mean);
                (
                    "two-sided z-test on Cohen's d (statsmodels NormalIndPower)",
                    mean,
                    target,
                    (target - mean).abs() / sd,
                )
            }
            _ => {
                return Err(invalid(
                    "baseline",
                    "give a baseline rate, or a baseline mean and its standard deviation",
                ));
            }
        };
    let Some(exact) = stats::sample_size_per_arm(effect_size, input.alpha, input.power) else {
        return Err(invalid("mde", Reason::from(ReasonCode::EffectTooSmall).en));
    };
    // The solver's answer is exact to about 1e-12 relative; do not round 100.0000000001 up.
    let per = (exact * (1.0 - 1e-12)).ceil() as u64;
    let total = per * u64::from(input.variations);
    let days = input
        .daily_units
        .map(|daily| (total as f64 / daily * (1.0 - 1e-12)).ceil() as u64);
    let mde_absolute = target - baseline;
    let mde_relative = (baseline != 0.0).then(|| mde_absolute / baseline);
    let rate = input.baseline_rate.is_some();
    let show = |x: f64| {
        if rate {
            format!("{}%", trim(x * 100.0, 4))
        } else {
            trim(x, 6)
        }
    };
    let from_to = format!("{} → {}", show(baseline), show(target));
    let power_text = format!("{}%", trim(input.power * 100.0, 2));
    let mut summary = Text {
        en: format!(
            "{} units per variation, {} in all ({} variations), to detect {from_to} with {power_text} power at alpha {}",
            thousands(per),
            thousands(total),
            input.variations,
            input.alpha
        ),
        zh: format!(
            "每个变体需要 {} 个单位，共 {} 个（{} 个变体），才能以 {power_text} 的功效在 α = {} 下检测到 {from_to}",
            thousands(per),
            thousands(total),
            input.variations,
            input.alpha
        ),
    };
    if let (Some(days), Some(daily)) = (days, input.daily_units) {
        summary
            .en
            .push_str(&format!("; {days} days at {} units a day", trim(daily, 2)));
        summary
            .zh
            .push_str(&format!("；按每天 {} 个单位需 {days} 天", trim(daily, 2)));
    }
    Ok(SampleSizePlan {
        test,
        baseline,
        target,
        mde_absolute,
        mde_relative,
        effect_size,
        alpha: input.alpha,
        power: input.power,
        variations: input.variations,
        units_per_variation_exact: exact,
        units_per_variation: per,
        total_units: total,
        daily_units: input.daily_units,
        days,
        summary,
    })
}

/// A number with at most `decimals` decimals and no trailing zeros.
fn trim(x: f64, decimals: usize) -> String {
    let text = format!("{x:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// 14745 → "14,745".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary_input::{VariationInput, from_csv, from_json};
    use serde_json::{Value, json};

    fn input(value: Value) -> ReportInput {
        serde_json::from_value(value).expect("a valid input")
    }

    fn two_arms(metrics: Value, options: Value) -> ReportInput {
        input(json!({
            "variations": [{"key": "a", "name": "A"}, {"key": "b", "name": "B"}],
            "metrics": metrics,
            "options": options,
        }))
    }

    fn close(got: f64, want: f64) {
        assert!(
            (got - want).abs() <= 1e-6 * want.abs().max(1.0),
            "got {got}, want {want}"
        );
    }

    fn lift(c: &Comparison, relative: bool) -> &LiftFigures {
        let l = if relative { &c.relative } else { &c.absolute };
        l.figures().expect("figures")
    }

    /// gbstats' documented pair (experiments.md) through the whole report.
    #[test]
    fn the_reference_pair_reads_as_gbstats_does() {
        let report = analyze(&two_arms(
            json!([{"key": "spend", "kind": "mean", "data": {
                "a": {"n": 3407, "sum": 1396.87, "sum_squares": 52377.9767},
                "b": {"n": 3461, "sum": 2422.7, "sum_squares": 134698.29}}}]),
            json!({}),
        ))
        .unwrap();
        let c = &report.metrics[0].comparisons[0];
        let r = lift(c, true);
        close(r.estimate, 0.7073170731707317);
        close(r.ci[0], -0.03526008906611777);
        close(r.ci[1], 1.449894235407581);
        close(r.p_value.unwrap(), 0.06191182745618362);
        close(lift(c, false).p_value.unwrap(), 0.020158402643587037);
        assert_eq!(c.test, "unpooled Welch t-test");
        assert_eq!(c.outcome, Outcome::Inconclusive);
        assert_eq!(
            c.verdict.en,
            "No significant difference between B and A on spend: +70.7% (95% CI -3.5% to +145.0%), p = 0.062"
        );
        assert_eq!(
            c.verdict.zh,
            "B 与 A 在「spend」上无显著差异：+70.7%（95% 置信区间 -3.5% 至 +145.0%），p = 0.062"
        );
        assert_eq!(report.srm.status, SrmStatus::Ok);
        // Absolute lifts decide when asked to.
        let report = analyze(&two_arms(
            json!([{"key": "spend", "kind": "mean", "data": {
                "a": {"n": 3407, "sum": 1396.87, "sum_squares": 52377.9767},
                "b": {"n": 3461, "sum": 2422.7, "sum_squares": 134698.29}}}]),
            json!({"difference": "absolute"}),
        ))
        .unwrap();
        let c = &report.metrics[0].comparisons[0];
        assert_eq!(c.outcome, Outcome::Better);
        assert_eq!(
            c.verdict.en,
            "B beats A on spend: +0.29 (95% CI +0.05 to +0.53), p = 0.02"
        );
    }

    #[test]
    fn proportions_carry_the_pooled_z_test_and_wilson_intervals() {
        let report = analyze(&two_arms(
            json!([{"key": "buy", "name": "Purchase", "kind": "proportion",
                    "data": {"a": {"n": 1000, "sum": 100}, "b": {"n": 1000, "sum": 130}}}]),
            json!({}),
        ))
        .unwrap();
        let c = &report.metrics[0].comparisons[0];
        let Some(Computed::Figures(z)) = &c.pooled_z_test else {
            panic!("{c:?}")
        };
        close(z.z, 2.102740605622114);
        close(z.p_value, 0.03548845046647471);
        // statsmodels proportion_confint(100, 1000, method="wilson").
        let a = &report.metrics[0].variations[0];
        let ci = a.ci.unwrap();
        close(ci[0], 0.08290944359309571);
        close(ci[1], 0.1201519631953484);
    }

    #[test]
    fn degenerate_grids_give_reasons_and_no_numbers() {
        let grids = [
            // Zero conversions everywhere; one unit each; zero variance; no units at all.
            json!([{"key": "zero", "kind": "proportion",
                    "data": {"a": {"n": 1000, "sum": 0}, "b": {"n": 1000, "sum": 0}}}]),
            json!([{"key": "one", "kind": "mean",
                    "data": {"a": {"n": 1, "sum": 3, "sum_squares": 9},
                             "b": {"n": 1, "sum": 4, "sum_squares": 16}}}]),
            json!([{"key": "flat", "kind": "mean",
                    "data": {"a": {"n": 100, "sum": 500, "sum_squares": 2500},
                             "b": {"n": 100, "sum": 600, "sum_squares": 3600}}}]),
            json!([{"key": "empty", "kind": "ratio",
                    "data": {"a": {"n": 0, "sum": 0, "sum_squares": 0, "denominator_sum": 0,
                                   "denominator_sum_squares": 0,
                                   "numerator_denominator_sum_of_products": 0},
                             "b": {"n": 0, "sum": 0, "sum_squares": 0, "denominator_sum": 0,
                                   "denominator_sum_squares": 0,
                                   "numerator_denominator_sum_of_products": 0}}}]),
            json!([{"key": "all", "kind": "proportion",
                    "data": {"a": {"n": 50, "sum": 50}, "b": {"n": 50, "sum": 50}}}]),
            json!([{"key": "cuped", "kind": "mean",
                    "data": {"a": {"n": 1, "sum": 3, "sum_squares": 9, "pre_sum": 1,
                                   "pre_sum_squares": 1, "post_pre_sum_of_products": 3},
                             "b": {"n": 1, "sum": 4, "sum_squares": 16, "pre_sum": 2,
                                   "pre_sum_squares": 4, "post_pre_sum_of_products": 8}}}]),
            // The control's mean squared underflows: the relative lift's variance overflows.
            json!([{"key": "huge", "kind": "mean",
                    "data": {"a": {"n": 10, "sum": 1e-199, "sum_squares": 1.0},
                             "b": {"n": 10, "sum": 1.0, "sum_squares": 1.0}}}]),
        ];
        let figure_keys = [
            "estimate",
            "ci",
            "p_value",
            "adjusted_p_value",
            "chance_to_win",
            "risk",
            "z",
            "mean",
            "stddev",
            "effect_size",
            "minimum_detectable_effect",
            "units_needed_per_variation",
            "days_remaining",
        ];
        for engine in ["frequentist", "sequential", "bayesian"] {
            for grid in &grids {
                let report = analyze(&two_arms(
                    grid.clone(),
                    json!({"engine": engine, "correction": "holm", "target_mde": 0.05,
                           "prior": {"proper": true}}),
                ))
                .unwrap();
                let c = &report.metrics[0].comparisons[0];
                assert_eq!(c.outcome, Outcome::NoFigures, "{engine} {grid}: {c:?}");
                assert!(c.reason.is_some());
                let text = serde_json::to_string(&report).unwrap();
                assert!(!text.contains("null"), "{engine} {grid}: {text}");
                // Wherever a reason stands, no figure stands beside it.
                fn walk(v: &Value, keys: &[&str], path: &str) {
                    match v {
                        Value::Object(map) => {
                            if map.contains_key("reason") {
                                for k in keys {
                                    assert!(!map.contains_key(*k), "{path}.{k} beside a reason");
                                }
                            }
                            for (k, child) in map {
                                walk(child, keys, &format!("{path}.{k}"));
                            }
                        }
                        Value::Array(items) => {
                            for (i, child) in items.iter().enumerate() {
                                walk(child, keys, &format!("{path}[{i}]"));
                            }
                        }
                        Value::Number(n) => assert!(n.as_f64().is_some_and(f64::is_finite)),
                        _ => {}
                    }
                }
                let value: Value = serde_json::from_str(&text).unwrap();
                walk(&value, &figure_keys, "report");
                let comparison = &value["metrics"][0]["comparisons"][0];
                assert!(
                    comparison["reason"]["en"]
                        .as_str()
                        .is_some_and(|s| !s.is_empty())
                        && comparison["reason"]["zh"]
                            .as_str()
                            .is_some_and(|s| !s.is_empty())
                );
            }
        }
        let report = analyze(&two_arms(grids[0].clone(), json!({}))).unwrap();
        let c = &report.metrics[0].comparisons[0];
        assert_eq!(c.reason.as_ref().unwrap().code, ReasonCode::BaselineZero);
        assert_eq!(
            c.verdict.en,
            "zero, B vs A: the control's mean is zero, so there is no lift to measure against it"
        );
        assert_eq!(
            c.verdict.zh,
            "「zero」B 对比 A：对照组的均值为零，无法据此计算提升"
        );
        let reason_of = |grid: &Value| {
            let report = analyze(&two_arms(grid.clone(), json!({}))).unwrap();
            report.metrics[0].comparisons[0]
                .reason
                .as_ref()
                .map(|r| r.code)
        };
        assert_eq!(reason_of(&grids[1]), Some(ReasonCode::NotEnoughData));
        assert_eq!(reason_of(&grids[2]), Some(ReasonCode::ZeroVariance));
        assert_eq!(reason_of(&grids[6]), Some(ReasonCode::NotFinite));
    }

    #[test]
    fn corrections_cover_every_comparison() {
        let arm = |n: u64, sum: u64| json!({"n": n, "sum": sum});
        let report = analyze(&input(json!({
            "variations": [{"key": "a"}, {"key": "b"}, {"key": "c"}],
            "metrics": [
                {"key": "m1", "kind": "proportion",
                 "data": {"a": arm(1000, 100), "b": arm(1000, 130), "c": arm(1000, 95)}},
                {"key": "m2", "kind": "proportion",
                 "data": {"a": arm(1000, 0), "b": arm(1000, 3), "c": arm(1000, 2)}},
                {"key": "m3", "kind": "proportion",
                 "data": {"a": arm(2000, 300), "b": arm(2000, 360), "c": arm(2000, 280)}}
            ],
            "options": {"correction": "holm"}
        })))
        .unwrap();
        let comparisons: Vec<&Comparison> =
            report.metrics.iter().flat_map(|m| &m.comparisons).collect();
        let p: Vec<f64> = comparisons.iter().filter_map(|c| c.p_value).collect();
        assert_eq!(p.len(), 4, "the zero-baseline metric has no p-values");
        let adjusted: Vec<f64> = comparisons
            .iter()
            .filter_map(|c| c.adjusted_p_value)
            .collect();
        assert_eq!(adjusted, stats::holm(&p));
        assert!(
            report
                .verdict
                .en
                .iter()
                .any(|l| l.contains("(Holm-adjusted)"))
        );
    }

    #[test]
    fn sample_ratio_mismatch_and_multiple_exposures_lead_the_verdict() {
        let mut i = two_arms(
            json!([{"key": "m", "kind": "proportion",
                    "data": {"a": {"n": 10000, "sum": 1000}, "b": {"n": 10500, "sum": 1050}}}]),
            json!({}),
        );
        i.multiple_exposures = Some(300);
        let report = analyze(&i).unwrap();
        assert_eq!(report.srm.status, SrmStatus::Mismatch);
        close(
            report.srm.p_value.unwrap(),
            stats::srm_p_value(&[10000, 10500], &[1.0, 1.0]),
        );
        assert!(
            report.verdict.en[0].starts_with("Sample ratio mismatch: do not trust these results"),
            "{:?}",
            report.verdict
        );
        assert!(report.verdict.zh[0].starts_with("样本比例不匹配：请勿信任这些结果"));
        assert!(report.verdict.en[1].starts_with("1.4% of units (300) saw more than one"));
        // A weight-0 arm is listed but left out of the statistic.
        i.variations = vec![
            VariationInput {
                key: "a".into(),
                name: None,
                weight: Some(0.5),
                units: Some(5050),
            },
            VariationInput {
                key: "b".into(),
                name: None,
                weight: Some(0.5),
                units: Some(4950),
            },
            VariationInput {
                key: "c".into(),
                name: None,
                weight: Some(0.0),
                units: Some(0),
            },
        ];
        let copy = i.metrics[0].data["a"].clone();
        i.metrics[0].data.insert("c".into(), copy);
        let report = analyze(&i).unwrap();
        assert!(report.srm.arms[2].skipped);
        close(report.srm.p_value.unwrap(), 0.6065306597126334);
    }

    #[test]
    fn bayesian_direction_flips_chance_and_risk() {
        let data = json!({"a": {"n": 1000, "sum": 100}, "b": {"n": 1000, "sum": 130}});
        let up = analyze(&two_arms(
            json!([{"key": "m", "kind": "proportion", "data": data}]),
            json!({"engine": "bayesian"}),
        ))
        .unwrap();
        let down = analyze(&two_arms(
            json!([{"key": "m", "kind": "proportion", "direction": "decrease", "guardrail": true,
                    "data": data}]),
            json!({"engine": "bayesian"}),
        ))
        .unwrap();
        let (u, d) = (
            &up.metrics[0].comparisons[0],
            &down.metrics[0].comparisons[0],
        );
        close(u.chance_to_win.unwrap(), 0.9672763417294536);
        close(d.chance_to_win.unwrap(), 1.0 - 0.9672763417294536);
        close(u.risk.unwrap().control, 0.30208906485859227);
        close(d.risk.unwrap().variation, 0.30208906485859227);
        assert_eq!(u.outcome, Outcome::Better);
        assert_eq!(d.outcome, Outcome::Worse);
        assert_eq!(
            d.verdict.en,
            "Guardrail m probably worsened in B against A: 3.3% chance to win, +30.0% (95% credible interval -1.9% to +61.9%)"
        );
    }

    /// gbstats states its prior on the relative effect and rescales it by the control's mean
    /// for an absolute lift, so it refuses a control mean of zero even with the flat prior
    /// (after its unit and variance checks); the report refuses alike.
    #[test]
    fn bayesian_absolute_lifts_need_a_control_mean() {
        let report = analyze(&two_arms(
            json!([
                {"key": "profit", "kind": "mean",
                 "data": {"a": {"n": 50, "sum": 0, "sum_squares": 100},
                          "b": {"n": 50, "sum": 10, "sum_squares": 120}}},
                {"key": "buy", "kind": "proportion",
                 "data": {"a": {"n": 1000, "sum": 0}, "b": {"n": 1000, "sum": 7}}}
            ]),
            json!({"engine": "bayesian", "difference": "absolute"}),
        ))
        .unwrap();
        let code = |m: usize| {
            report.metrics[m].comparisons[0]
                .absolute
                .reason()
                .expect("a reason")
                .code
        };
        assert_eq!(code(0), ReasonCode::BaselineZero);
        assert_eq!(code(1), ReasonCode::ZeroVariance);
    }

    #[test]
    fn power_and_days_remaining() {
        let mut i = two_arms(
            json!([{"key": "m", "kind": "proportion",
                    "data": {"a": {"n": 5000, "sum": 500}, "b": {"n": 5000, "sum": 520}}}]),
            json!({"target_mde": 0.1}),
        );
        i.days_running = Some(7.0);
        let report = analyze(&i).unwrap();
        let c = &report.metrics[0].comparisons[0];
        let p = c.power.figures().unwrap();
        // statsmodels: NormalIndPower().power(proportion_effectsize(0.11, 0.10), 5000, 0.05)
        // and its solve_power for the units needed.
        close(p.power.unwrap(), 0.37143354213359486);
        close(p.units_needed_per_variation.unwrap(), 14744.104836925611);
        close(
            p.days_remaining.unwrap(),
            7.0 * 14744.104836925611 / 5000.0 - 7.0,
        );
        assert_eq!(p.reached, Some(false));
        assert!(
            c.verdict.en.ends_with(
                "; not enough data yet: 37% power to detect +10.0% (80% wanted), about 14 more days"
            ),
            "{}",
            c.verdict.en
        );
        let mde = p.minimum_detectable_effect.unwrap();
        let rate = 0.10 * (1.0 + mde);
        close(stats::power(stats::cohens_h(rate, 0.10), 5000.0, 0.05), 0.8);
    }

    #[test]
    fn cuped_and_ratio_metrics_agree_with_stats() {
        let report = analyze(&two_arms(
            json!([
                {"key": "r", "kind": "ratio", "data": {
                    "a": {"n": 5000, "sum": 12000, "sum_squares": 60000, "denominator_sum": 8000,
                          "denominator_sum_squares": 20000,
                          "numerator_denominator_sum_of_products": 25000},
                    "b": {"n": 5100, "sum": 13100, "sum_squares": 66000, "denominator_sum": 8100,
                          "denominator_sum_squares": 20500,
                          "numerator_denominator_sum_of_products": 26500}}},
                {"key": "c", "kind": "mean", "data": {
                    "a": {"n": 3000, "sum": 9000, "sum_squares": 33000, "pre_sum": 8700,
                          "pre_sum_squares": 30000, "post_pre_sum_of_products": 30500},
                    "b": {"n": 3050, "sum": 9500, "sum_squares": 36000, "pre_sum": 8800,
                          "pre_sum_squares": 30500, "post_pre_sum_of_products": 32000}}}
            ]),
            json!({}),
        ))
        .unwrap();
        let ratio = &report.metrics[0].comparisons[0];
        close(lift(ratio, true).estimate, 0.07818930041152268);
        close(lift(ratio, true).p_value.unwrap(), 0.0003207755039189575);
        assert_eq!(
            ratio.test,
            "unpooled Welch t-test, ratio by the delta method"
        );
        let cuped = &report.metrics[1].comparisons[0];
        close(cuped.cuped_theta.unwrap(), 0.9096612296110415);
        close(lift(cuped, true).estimate, 0.04272510987240382);
        close(lift(cuped, false).ci[1], 0.1703026496289551);
        assert!(report.metrics[1].cuped);
        // The variations' values are the plain means.
        close(report.metrics[1].variations[0].mean.unwrap(), 3.0);
    }

    #[test]
    fn csv_and_json_give_the_same_report() {
        let csv = "\
metric,variation,kind,n,sum,sum_squares,metric_name,variation_name
buy,a,proportion,1000,100,,Purchase,A
buy,b,proportion,1000,130,,,B
spend,a,mean,1000,25000,900000,,
spend,b,mean,1000,26000,950000,,
";
        let from_csv = analyze(&from_csv(csv.as_bytes()).unwrap()).unwrap();
        let from_json = analyze(
            &from_json(
                r#"{"variations": [{"key": "a", "name": "A"}, {"key": "b", "name": "B"}],
                    "metrics": [
                      {"key": "buy", "name": "Purchase", "kind": "proportion",
                       "data": {"a": {"n": 1000, "sum": 100}, "b": {"n": 1000, "sum": 130}}},
                      {"key": "spend", "kind": "mean",
                       "data": {"a": {"n": 1000, "sum": 25000, "sum_squares": 900000},
                                "b": {"n": 1000, "sum": 26000, "sum_squares": 950000}}}]}"#,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(from_csv, from_json);
    }

    #[test]
    fn inconsistent_inputs_are_errors_naming_the_place() {
        let error = |metrics: Value, options: Value| {
            analyze(&two_arms(metrics, options))
                .expect_err("an error")
                .to_string()
        };
        assert_eq!(
            error(
                json!([{"key": "m", "kind": "proportion", "data": {"a": {"n": 10, "sum": 1}}}]),
                json!({})
            ),
            "metric \"m\": has no data for variation \"b\""
        );
        assert_eq!(
            error(
                json!([{"key": "m", "kind": "proportion",
                        "data": {"a": {"n": 10, "sum": 1}, "b": {"n": 10, "sum": 1},
                                 "c": {"n": 10, "sum": 1}}}]),
                json!({})
            ),
            "metric \"m\": has data for \"c\", which is not a variation"
        );
        assert_eq!(
            error(
                json!([{"key": "m", "kind": "proportion",
                        "data": {"a": {"n": 10, "sum": 11}, "b": {"n": 10, "sum": 1}}}]),
                json!({})
            ),
            "metric \"m\", variation \"a\": a proportion's sum counts converted units: a whole number from 0 to n (10), not 11"
        );
        assert_eq!(
            error(
                json!([{"key": "m", "kind": "mean",
                        "data": {"a": {"n": 10, "sum": 1}, "b": {"n": 10, "sum": 1}}}]),
                json!({})
            ),
            "metric \"m\", variation \"a\": a mean metric needs sum_squares"
        );
        assert_eq!(
            error(json!([]), json!({"alpha": 1.5})),
            "options.alpha: must be between 0 and 1"
        );
        assert_eq!(
            error(
                json!([{"key": "m", "kind": "mean",
                        "data": {"a": {"n": 10, "sum": 1, "sum_squares": 1, "pre_sum": 1,
                                       "pre_sum_squares": 1, "post_pre_sum_of_products": 1},
                                 "b": {"n": 10, "sum": 1, "sum_squares": 1}}}]),
                json!({})
            ),
            "metric \"m\", variation \"b\": give the CUPED fields (pre_sum, pre_sum_squares, post_pre_sum_of_products) in every variation of the metric or in none"
        );
    }

    #[test]
    fn sample_sizes_agree_with_statsmodels() {
        let plan = |json: Value| {
            plan_sample_size(&serde_json::from_value(json).expect("valid")).expect("a plan")
        };
        let p = plan(json!({"baseline_rate": 0.10, "mde": 0.01, "daily_units": 1000}));
        close(p.units_per_variation_exact, 14744.104836925611);
        assert_eq!(
            (p.units_per_variation, p.total_units, p.days),
            (14745, 29490, Some(30))
        );
        assert_eq!(
            p.summary.en,
            "14,745 units per variation, 29,490 in all (2 variations), to detect 10% → 11% with 80% power at alpha 0.05; 30 days at 1000 units a day"
        );
        let p = plan(json!({"baseline_rate": 0.5, "mde": 0.1, "relative": true,
                            "alpha": 0.01, "power": 0.9, "variations": 3}));
        close(p.units_per_variation_exact, 2965.937904440001);
        assert_eq!(p.total_units, 2966 * 3);
        // A mean: d = 2 / 10.
        let p = plan(json!({"baseline_mean": 50, "baseline_sd": 10, "mde": 2}));
        close(p.effect_size, 0.2);
        assert!(
            plan_sample_size(
                &serde_json::from_value(
                    json!({"baseline_rate": 0.95, "mde": 0.1, "relative": true})
                )
                .unwrap()
            )
            .unwrap_err()
            .to_string()
            .starts_with("mde: takes the rate from 0.95 to 1.045")
        );
    }

    #[test]
    fn formats() {
        assert_eq!(format_p(0.0400001), "0.04");
        assert_eq!(format_p(0.06559), "0.066");
        assert_eq!(format_p(0.0016), "0.0016");
        assert_eq!(format_p(1.0), "1");
        assert_eq!(format_p(0.00001234), "1.2e-5");
        assert_eq!(format_level(0.05), "95%");
        assert_eq!(format_level(0.005), "99.5%");
        assert_eq!(thousands(20_000_000), "20,000,000");
        assert_eq!(signed(-0.00001, 2), "0.00");
    }
}
