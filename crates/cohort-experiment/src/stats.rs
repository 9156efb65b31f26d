//! The statistics of an experiment report, from per-variation sufficient statistics, with the
//! formulas GrowthBook's gbstats 0.8.0 uses, so that a report agrees with it to 1e-6.
//!
//! - [`Summary`]: what a variation's units add up to: a count and a sum (conversion), also the
//!   sum of squares (a mean), two such sums and their cross-products (a ratio metric, by the
//!   delta method), or post- and pre-exposure sums (CUPED, with [`cuped_theta`]).
//! - [`t_test`]: the frequentist comparison of a variation with the control: the lift
//!   (relative, by the delta method, or absolute), its two-sided interval and p-value, on
//!   Welch–Satterthwaite degrees of freedom. Inputs it cannot judge (a control whose mean is
//!   zero, a variance of zero) give a [`Degenerate`] reason, never NaN.
//! - [`sequential`]: the same comparison with an always-valid confidence sequence and p-value,
//!   for reports looked at while the experiment runs.
//! - [`bayesian`]: the same comparison with a Gaussian prior on the effect: posterior mean,
//!   credible interval, chance to win and the risk of each choice.
//! - [`srm_p_value`]: sample-ratio mismatch, Pearson's chi-square of the observed split against
//!   the weights.
//! - [`pooled_z_test`], [`power`], [`sample_size_per_arm`], [`minimum_detectable_rate`],
//!   [`holm`], [`benjamini_hochberg`]:
//!   the pooled two-proportion test, planning and multiple-comparison adjustments, agreeing with
//!   statsmodels.
//!
//! ```
//! use cohort_experiment::stats::{t_test, Difference, Summary};
//! let control = Summary::Proportion { n: 1000, sum: 100.0 };
//! let treatment = Summary::Proportion { n: 1000, sum: 130.0 };
//! let result = t_test(&control, &treatment, Difference::Relative, 0.05).unwrap();
//! assert!((result.effect - 0.3).abs() < 1e-12);
//! assert!(result.p_value > 0.05);
//! ```

use statrs::distribution::{ChiSquared, ContinuousCDF, Normal, StudentsT};

/// The sums of one quantity over a variation's units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Moments {
    /// A 0/1 quantity: how many units had it.
    Proportion { sum: f64 },
    /// Any quantity: its sum and the sum of its squares.
    Mean { sum: f64, sum_squares: f64 },
}

impl Moments {
    fn sum(&self) -> f64 {
        match *self {
            Moments::Proportion { sum } | Moments::Mean { sum, .. } => sum,
        }
    }

    fn mean(&self, n: u64) -> f64 {
        if n == 0 { 0.0 } else { self.sum() / n as f64 }
    }

    /// p(1 − p) for a proportion, the sample variance for a mean.
    fn variance(&self, n: u64) -> f64 {
        match *self {
            Moments::Proportion { .. } => {
                let p = self.mean(n);
                p * (1.0 - p)
            }
            Moments::Mean { .. } if n <= 1 => 0.0,
            Moments::Mean { sum, sum_squares } => {
                let n = n as f64;
                (sum_squares - sum * sum / n) / (n - 1.0)
            }
        }
    }
}

/// The sample covariance of two quantities from the sum of their products.
fn covariance(n: u64, a: &Moments, b: &Moments, sum_of_products: f64) -> f64 {
    if n <= 1 {
        return 0.0;
    }
    (sum_of_products - a.sum() * b.sum() / n as f64) / (n as f64 - 1.0)
}

/// A variation's sufficient statistics for one metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Summary {
    /// A conversion: `sum` of `n` units converted.
    Proportion { n: u64, sum: f64 },
    /// A mean: the `n` units' values add up to `sum`, their squares to `sum_squares`.
    SampleMean { n: u64, sum: f64, sum_squares: f64 },
    /// A ratio of two sums over the same units (revenue per order, say), with the sum of the
    /// units' numerator × denominator products; its variance comes by the delta method.
    Ratio {
        n: u64,
        numerator: Moments,
        denominator: Moments,
        sum_of_products: f64,
    },
    /// CUPED: the metric after the experiment, adjusted by the same units' value before it,
    /// `post − theta · pre` ([`cuped_theta`] gives the theta of a comparison).
    Adjusted {
        n: u64,
        post: Moments,
        pre: Moments,
        sum_of_products: f64,
        theta: f64,
    },
}

impl Summary {
    pub fn n(&self) -> u64 {
        match *self {
            Summary::Proportion { n, .. }
            | Summary::SampleMean { n, .. }
            | Summary::Ratio { n, .. }
            | Summary::Adjusted { n, .. } => n,
        }
    }

    /// The mean the effect is measured on (adjusted, for CUPED).
    pub fn mean(&self) -> f64 {
        match *self {
            Summary::Proportion { n, sum } | Summary::SampleMean { n, sum, .. } => {
                Moments::Proportion { sum }.mean(n)
            }
            Summary::Ratio {
                numerator,
                denominator,
                ..
            } => {
                if denominator.sum() == 0.0 {
                    0.0
                } else {
                    numerator.sum() / denominator.sum()
                }
            }
            Summary::Adjusted {
                n,
                post,
                pre,
                theta,
                ..
            } => post.mean(n) - theta * pre.mean(n),
        }
    }

    /// The mean before any adjustment: a relative lift is relative to it.
    pub fn unadjusted_mean(&self) -> f64 {
        match *self {
            Summary::Adjusted { n, post, .. } => post.mean(n),
            _ => self.mean(),
        }
    }

    /// The variance of a unit's value (of the ratio's linearisation, of the adjusted value).
    pub fn variance(&self) -> f64 {
        match *self {
            Summary::Proportion { n, sum } => Moments::Proportion { sum }.variance(n),
            Summary::SampleMean {
                n,
                sum,
                sum_squares,
            } => Moments::Mean { sum, sum_squares }.variance(n),
            Summary::Ratio {
                n,
                numerator,
                denominator,
                sum_of_products,
            } => {
                let d = denominator.mean(n);
                if d == 0.0 || n <= 1 {
                    return 0.0;
                }
                let m = numerator.mean(n);
                let cov = covariance(n, &numerator, &denominator, sum_of_products);
                numerator.variance(n) / d.powi(2) - 2.0 * cov * m / d.powi(3)
                    + m.powi(2) * denominator.variance(n) / d.powi(4)
            }
            Summary::Adjusted {
                n,
                post,
                pre,
                sum_of_products,
                theta,
            } => {
                if n <= 1 {
                    return 0.0;
                }
                post.variance(n) + theta.powi(2) * pre.variance(n)
                    - 2.0 * theta * covariance(n, &post, &pre, sum_of_products)
            }
        }
    }
}

/// CUPED's theta for comparing `a` with `b`: the pooled covariance of post and pre values over
/// the pooled variance of the pre values; 0 when either pooled variance is 0. Only for
/// [`Summary::Adjusted`] inputs (others give 0).
pub fn cuped_theta(a: &Summary, b: &Summary) -> f64 {
    let (
        Summary::Adjusted {
            n: n_a,
            post: post_a,
            pre: pre_a,
            sum_of_products: sp_a,
            ..
        },
        Summary::Adjusted {
            n: n_b,
            post: post_b,
            pre: pre_b,
            sum_of_products: sp_b,
            ..
        },
    ) = (a, b)
    else {
        return 0.0;
    };
    let n = n_a + n_b;
    let joint = |x: &Moments, y: &Moments| match (x, y) {
        (Moments::Proportion { sum: s1 }, Moments::Proportion { sum: s2 }) => {
            Moments::Proportion { sum: s1 + s2 }
        }
        _ => Moments::Mean {
            sum: x.sum() + y.sum(),
            sum_squares: x.sum_squares() + y.sum_squares(),
        },
    };
    let (post, pre) = (joint(post_a, post_b), joint(pre_a, pre_b));
    if pre.variance(n) == 0.0 || post.variance(n) == 0.0 {
        return 0.0;
    }
    covariance(n, &post, &pre, sp_a + sp_b) / pre.variance(n)
}

impl Moments {
    /// For a proportion the squares of 0/1 values add up to the sum.
    fn sum_squares(&self) -> f64 {
        match *self {
            Moments::Proportion { sum } => sum,
            Moments::Mean { sum_squares, .. } => sum_squares,
        }
    }
}

/// How the effect is expressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Difference {
    /// (treatment − control) / control.
    Relative,
    /// treatment − control.
    Absolute,
}

/// A comparison of a variation with the control.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub effect: f64,
    /// The two-sided interval at the chosen level.
    pub interval: (f64, f64),
    pub p_value: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub dof: f64,
}

/// Why a comparison has no figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Degenerate {
    #[error("the control's mean is zero, so a relative lift is undefined")]
    ControlMeanZero,
    #[error("a variation has no variance (every unit has the same value)")]
    ZeroVariance,
    #[error("not enough data: each variation needs at least two units")]
    TooFewUnits,
}

/// Compares `treatment` with `control`: the effect, its `1 − alpha` two-sided interval and the
/// p-value of a Student-t test on Welch–Satterthwaite degrees of freedom. The relative effect's
/// variance comes by the delta method, var_b/(a²·n_b) + var_a·b²/(a⁴·n_a), with a and b the
/// unadjusted means (so a CUPED lift is relative to the control's plain mean, as in gbstats).
pub fn t_test(
    control: &Summary,
    treatment: &Summary,
    difference: Difference,
    alpha: f64,
) -> Result<Estimate, Degenerate> {
    if control.n() < 2 || treatment.n() < 2 {
        return Err(Degenerate::TooFewUnits);
    }
    if control.mean() == 0.0 || control.unadjusted_mean() == 0.0 {
        return Err(Degenerate::ControlMeanZero);
    }
    if control.variance() <= 0.0 || treatment.variance() <= 0.0 {
        return Err(Degenerate::ZeroVariance);
    }
    let Data {
        effect,
        variance,
        dof,
    } = data(control, treatment, difference);
    let t = StudentsT::new(0.0, 1.0, dof).map_err(|_| Degenerate::ZeroVariance)?;
    let se = variance.sqrt();
    let p_value = 2.0 * (1.0 - t.cdf((effect / se).abs()));
    let width = t_quantile(&t, 1.0 - alpha / 2.0) * se;
    Ok(Estimate {
        effect,
        interval: (effect - width, effect + width),
        p_value,
        dof,
    })
}

/// The data's estimate of the effect, the variance of that estimate and its Welch–Satterthwaite
/// degrees of freedom; the callers have checked the inputs.
struct Data {
    effect: f64,
    variance: f64,
    dof: f64,
}

fn data(control: &Summary, treatment: &Summary, difference: Difference) -> Data {
    let (mean_a, mean_b) = (control.mean(), treatment.mean());
    let (raw_a, raw_b) = (control.unadjusted_mean(), treatment.unadjusted_mean());
    let (var_a, var_b) = (control.variance(), treatment.variance());
    let (n_a, n_b) = (control.n() as f64, treatment.n() as f64);
    let (effect, variance) = match difference {
        Difference::Relative => (
            (mean_b - mean_a) / raw_a,
            var_b / (raw_a.powi(2) * n_b) + var_a * raw_b.powi(2) / (raw_a.powi(4) * n_a),
        ),
        Difference::Absolute => (mean_b - mean_a, var_b / n_b + var_a / n_a),
    };
    let dof = (var_b / n_b + var_a / n_a).powi(2)
        / (var_b.powi(2) / (n_b.powi(2) * (n_b - 1.0))
            + var_a.powi(2) / (n_a.powi(2) * (n_a - 1.0)));
    Data {
        effect,
        variance,
        dof,
    }
}

/// The `p` quantile of Student's t with `dof` degrees of freedom; `None` for degrees of freedom
/// that define no distribution.
pub fn student_t_quantile(dof: f64, p: f64) -> Option<f64> {
    StudentsT::new(0.0, 1.0, dof)
        .ok()
        .map(|t| t_quantile(&t, p))
}

/// The `p` quantile of `t`, by bisection on its cdf. statrs' own inverse loses accuracy at large
/// degrees of freedom (1.2e-4 at a million), while its cdf stays accurate to 1e-9.
fn t_quantile(t: &StudentsT, p: f64) -> f64 {
    let (mut lo, mut hi) = (-1.0, 1.0);
    while t.cdf(lo) > p {
        lo *= 2.0;
    }
    while t.cdf(hi) < p {
        hi *= 2.0;
    }
    bisect(lo, hi, |x| t.cdf(x) < p)
}

/// The point in `[lo, hi]` where `below` turns from true to false, for a `below` that is true
/// up to one point and false after it.
fn bisect(mut lo: f64, mut hi: f64, below: impl Fn(f64) -> bool) -> f64 {
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if below(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= f64::EPSILON * hi.abs().max(1e-300) {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// The p-value of a sample-ratio mismatch: Pearson's chi-square of the units `observed` in each
/// variation against the split the `weights` expect, on (variations − 1) degrees of freedom.
/// Variations of weight zero add nothing to the statistic. 1 when nobody was observed.
pub fn srm_p_value(observed: &[u64], weights: &[f64]) -> f64 {
    let total: f64 = observed.iter().map(|&o| o as f64).sum();
    let total_weight: f64 = weights.iter().sum();
    if total == 0.0 || observed.len() < 2 || total_weight <= 0.0 {
        return 1.0;
    }
    let statistic: f64 = observed
        .iter()
        .zip(weights)
        .filter(|(_, w)| **w > 0.0)
        .map(|(&o, &w)| {
            let expected = w / total_weight * total;
            (o as f64 - expected).powi(2) / expected
        })
        .sum();
    match ChiSquared::new((observed.len() - 1) as f64) {
        Ok(chi) => chi.sf(statistic),
        Err(_) => 1.0,
    }
}

/// gbstats' default tuning parameter of the confidence sequences: the sample size at which
/// they are tightest.
pub const DEFAULT_SEQUENTIAL_TUNING: f64 = 5000.0;

/// The sequential comparison, valid however often the report is looked at: the effect as in
/// [`t_test`], an asymptotic confidence sequence (Waudby-Smith et al., arXiv 2103.06476, eq. 9)
/// for its interval and the matching always-valid p-value (eq. 155); `tuning` is the sample size
/// the sequence is tightest at.
pub fn sequential(
    control: &Summary,
    treatment: &Summary,
    difference: Difference,
    alpha: f64,
    tuning: f64,
) -> Result<Estimate, Degenerate> {
    let fixed = t_test(control, treatment, difference, alpha)?;
    let n = (control.n() + treatment.n()) as f64;
    let variance = data(control, treatment, difference).variance;
    let rho = ((-2.0 * alpha.ln() + (-2.0 * alpha.ln() + 1.0).ln()) / tuning).sqrt();
    let s2 = variance * n;
    let spread = n * rho * rho + 1.0;
    let width =
        s2.sqrt() * (2.0 * spread * (spread.sqrt() / alpha).ln() / (n * rho).powi(2)).sqrt();
    let st2 = fixed.effect.powi(2) * n / variance;
    let e_value = (rho * rho * st2 / (2.0 * spread)).exp() / spread.sqrt();
    Ok(Estimate {
        effect: fixed.effect,
        interval: (fixed.effect - width, fixed.effect + width),
        p_value: (1.0 / e_value).min(1.0),
        dof: fixed.dof,
    })
}

/// A Gaussian prior on the effect; improper (flat) unless `proper`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prior {
    pub mean: f64,
    pub variance: f64,
    pub proper: bool,
}

impl Default for Prior {
    /// gbstats' default: flat.
    fn default() -> Self {
        Prior {
            mean: 0.0,
            variance: 1.0,
            proper: false,
        }
    }
}

/// The Bayesian comparison of a variation with the control.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Posterior {
    /// The posterior mean of the effect.
    pub effect: f64,
    /// The equal-tailed credible interval at `1 − alpha`.
    pub interval: (f64, f64),
    /// P(effect > 0): the chance the variation beats the control.
    pub chance_to_win: f64,
    /// Expected loss of choosing the control, and of choosing the variation.
    pub risk: (f64, f64),
}

/// Compares `treatment` with `control` as gbstats' effect test does: the data's effect and
/// variance as in [`t_test`], combined with a Gaussian `prior` on the effect (expressed in the
/// same `difference`), a normal posterior, its chance to win, credible interval and risk.
pub fn bayesian(
    control: &Summary,
    treatment: &Summary,
    difference: Difference,
    prior: Prior,
    alpha: f64,
) -> Result<Posterior, Degenerate> {
    if control.n() == 0 || treatment.n() == 0 {
        return Err(Degenerate::TooFewUnits);
    }
    if difference == Difference::Relative
        && (control.mean() == 0.0 || control.unadjusted_mean() == 0.0)
    {
        return Err(Degenerate::ControlMeanZero);
    }
    let (var_a, var_b) = (control.variance(), treatment.variance());
    if var_a <= 0.0 || var_b <= 0.0 {
        return Err(Degenerate::ZeroVariance);
    }
    let Data {
        effect: data_mean,
        variance: data_variance,
        ..
    } = data(control, treatment, difference);
    let precision = 1.0 / data_variance
        + if prior.proper {
            1.0 / prior.variance
        } else {
            0.0
        };
    let effect = if prior.proper {
        (data_mean / data_variance + prior.mean / prior.variance) / precision
    } else {
        data_mean
    };
    let sd = (1.0 / precision).sqrt();
    let normal = standard_normal();
    let z = normal.inverse_cdf(1.0 - alpha / 2.0);
    // With a = −effect/sd: P(effect < 0) = Φ(a); the expected gain when positive and the
    // expected loss when negative, written without dividing by a vanishing probability.
    let a = -effect / sd;
    let below = normal.cdf(a);
    let density = (-0.5 * a * a).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let risk_control = (1.0 - below) * effect + sd * density;
    let risk_treatment = sd * density - below * effect;
    Ok(Posterior {
        effect,
        interval: (effect - z * sd, effect + z * sd),
        chance_to_win: normal.sf(a),
        risk: (risk_control, risk_treatment),
    })
}

/// The pooled two-proportion z-test (statsmodels' `proportions_ztest`): `(z, two-sided p)` for
/// conversions `x_a` of `n_a` against `x_b` of `n_b`, with the rate pooled under the null
/// hypothesis. gbstats' t-test leaves the variances unpooled; a report says which it shows.
pub fn pooled_z_test(x_a: u64, n_a: u64, x_b: u64, n_b: u64) -> Result<(f64, f64), Degenerate> {
    if n_a == 0 || n_b == 0 {
        return Err(Degenerate::TooFewUnits);
    }
    let (n_a, n_b) = (n_a as f64, n_b as f64);
    let pooled = (x_a + x_b) as f64 / (n_a + n_b);
    let se = (pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b)).sqrt();
    if se == 0.0 {
        return Err(Degenerate::ZeroVariance);
    }
    let z = (x_a as f64 / n_a - x_b as f64 / n_b) / se;
    Ok((z, 2.0 * standard_normal().sf(z.abs())))
}

fn standard_normal() -> Normal {
    // Mean 0 and deviation 1 are valid parameters.
    Normal::standard()
}

/// Cohen's effect size h between two rates.
pub fn cohens_h(p1: f64, p2: f64) -> f64 {
    2.0 * p1.sqrt().asin() - 2.0 * p2.sqrt().asin()
}

/// The power of a two-sided z-test at level `alpha` to detect effect size `h` with `n` units in
/// each of two arms (statsmodels' `NormalIndPower`, both tails counted).
pub fn power(h: f64, n: f64, alpha: f64) -> f64 {
    let normal = standard_normal();
    let critical = normal.inverse_cdf(1.0 - alpha / 2.0);
    let shift = h.abs() * (n / 2.0).sqrt();
    normal.sf(critical - shift) + normal.cdf(-critical - shift)
}

/// Units per arm for `power` at level `alpha` against effect size `h`, as statsmodels'
/// `NormalIndPower().solve_power` finds them (a fractional count; round up to plan).
pub fn sample_size_per_arm(h: f64, alpha: f64, power_wanted: f64) -> Option<f64> {
    if h == 0.0 || !(0.0..1.0).contains(&power_wanted) || !(0.0..1.0).contains(&alpha) {
        return None;
    }
    let mut hi = 1.0_f64;
    while power(h, hi, alpha) < power_wanted {
        hi *= 2.0;
        if hi > 1e15 {
            return None;
        }
    }
    Some(bisect(1e-9, hi, |n| power(h, n, alpha) < power_wanted))
}

/// The smallest effect size h a two-sided z-test at level `alpha` detects with `power_wanted`
/// given `n` units per arm (statsmodels' `NormalIndPower().solve_power` for the effect size).
pub fn minimum_detectable_h(n: f64, alpha: f64, power_wanted: f64) -> Option<f64> {
    if n <= 0.0 || !(0.0..1.0).contains(&power_wanted) || !(0.0..1.0).contains(&alpha) {
        return None;
    }
    // h is at most π, between rates of 0 and 1.
    let hi = std::f64::consts::PI;
    if power(hi, n, alpha) < power_wanted {
        return None;
    }
    Some(bisect(0.0, hi, |h| power(h, n, alpha) < power_wanted))
}

/// The smallest conversion rate above `baseline` that [`minimum_detectable_h`] detects.
pub fn minimum_detectable_rate(
    baseline: f64,
    n: f64,
    alpha: f64,
    power_wanted: f64,
) -> Option<f64> {
    let h = minimum_detectable_h(n, alpha, power_wanted)?;
    let angle = baseline.sqrt().asin() + h / 2.0;
    (angle <= std::f64::consts::FRAC_PI_2).then(|| angle.sin().powi(2))
}

/// Holm's step-down adjustment of `p_values` (family-wise error), in their original order.
pub fn holm(p_values: &[f64]) -> Vec<f64> {
    let m = p_values.len();
    let order = ascending(p_values);
    let mut adjusted = vec![0.0; m];
    let mut running: f64 = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p_values[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

/// Benjamini and Hochberg's step-up adjustment of `p_values` (false discovery rate), in their
/// original order.
pub fn benjamini_hochberg(p_values: &[f64]) -> Vec<f64> {
    let m = p_values.len();
    let order = ascending(p_values);
    let mut adjusted = vec![0.0; m];
    let mut running: f64 = 1.0;
    for (rank, &i) in order.iter().enumerate().rev() {
        running = running.min((m as f64 / (rank + 1) as f64 * p_values[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

fn ascending(values: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    /// statsmodels 0.14 figures: `proportions_ztest`, `NormalIndPower` with
    /// `proportion_effectsize`, and `multipletests` (holm, fdr_bh).
    #[test]
    fn z_tests_power_and_adjustments_agree_with_statsmodels() {
        let (z, p) = pooled_z_test(130, 1000, 100, 1000).unwrap();
        close(z, 2.102740605622114);
        close(p, 0.03548845046647471);
        let (z, p) = pooled_z_test(5, 20, 0, 25).unwrap();
        close(z, 2.6516504294495533);
        close(p, 0.008009942329880022);
        let h = cohens_h(0.11, 0.10);
        close(h, 0.03262940076737697);
        close(
            sample_size_per_arm(h, 0.05, 0.8).unwrap(),
            14744.104836925611,
        );
        close(
            sample_size_per_arm(cohens_h(0.55, 0.5), 0.01, 0.9).unwrap(),
            2965.937904440001,
        );
        close(power(h, 10_000.0, 0.05), 0.6358205625038528);
        let p_values = [0.01, 0.04, 0.03, 0.005, 0.2];
        for (got, want) in holm(&p_values).iter().zip([0.04, 0.09, 0.09, 0.025, 0.2]) {
            close(*got, want);
        }
        for (got, want) in benjamini_hochberg(&p_values)
            .iter()
            .zip([0.025, 0.05, 0.05, 0.025, 0.2])
        {
            close(*got, want);
        }
        // statsmodels' solver stops early here: its effect size 0.039622750977047795 has power
        // 0.800047534 by its own `power`, while this one has power 0.8 to 1e-9. So the check is
        // the defining property, with statsmodels' answer within its solver's tolerance.
        for (n, alpha, wanted, statsmodels) in [
            (10_000.0, 0.05, 0.8, 0.039622750977047795),
            (500.0, 0.01, 0.9, 0.24396219896691385),
        ] {
            let h = minimum_detectable_h(n, alpha, wanted).unwrap();
            assert!((power(h, n, alpha) - wanted).abs() < 1e-9, "{h}");
            assert!((h - statsmodels).abs() < 1e-5, "{h} against {statsmodels}");
        }
        let rate = minimum_detectable_rate(0.10, 10_000.0, 0.05, 0.8).unwrap();
        assert!((rate - 0.11219766662725668).abs() < 1e-5, "{rate}");
        assert!(
            (cohens_h(rate, 0.10) - minimum_detectable_h(10_000.0, 0.05, 0.8).unwrap()).abs()
                < 1e-12
        );
        assert_eq!(pooled_z_test(0, 10, 0, 10), Err(Degenerate::ZeroVariance));
        assert_eq!(sample_size_per_arm(0.0, 0.05, 0.8), None);
    }

    /// gbstats' documented pair of means (experiments.md).
    fn means() -> (Summary, Summary) {
        (
            Summary::SampleMean {
                n: 3407,
                sum: 1396.87,
                sum_squares: 52377.9767,
            },
            Summary::SampleMean {
                n: 3461,
                sum: 2422.7,
                sum_squares: 134698.29,
            },
        )
    }

    /// 100 and 130 conversions of 1,000.
    fn proportions() -> (Summary, Summary) {
        (
            Summary::Proportion {
                n: 1000,
                sum: 100.0,
            },
            Summary::Proportion {
                n: 1000,
                sum: 130.0,
            },
        )
    }

    /// A 10 % and a 10.03 % rate over twenty million units each.
    fn twenty_million_each() -> (Summary, Summary) {
        (
            Summary::Proportion {
                n: 20_000_000,
                sum: 2_000_000.0,
            },
            Summary::Proportion {
                n: 20_000_000,
                sum: 2_006_000.0,
            },
        )
    }

    fn close(got: f64, want: f64) {
        assert!(
            (got - want).abs() <= 1e-6 * want.abs().max(1.0),
            "got {got}, want {want}"
        );
    }

    fn check(a: Summary, b: Summary, difference: Difference, want: (f64, f64, f64, f64)) {
        let got = t_test(&a, &b, difference, 0.05).expect("figures");
        close(got.effect, want.0);
        close(got.interval.0, want.1);
        close(got.interval.1, want.2);
        close(got.p_value, want.3);
    }

    /// Reference figures computed with gbstats 0.8.0 (`TwoSidedTTest(...).compute_result()`).
    #[test]
    fn t_tests_agree_with_gbstats() {
        let (a, b) = means();
        check(
            a,
            b,
            Difference::Relative,
            (
                0.7073170731707317,
                -0.03526008906611777,
                1.449894235407581,
                0.06191182745618362,
            ),
        );
        check(
            a,
            b,
            Difference::Absolute,
            (
                0.29,
                0.04537789255929012,
                0.5346221074407098,
                0.020158402643587037,
            ),
        );
        let (pa, pb) = proportions();
        check(
            pa,
            pb,
            Difference::Relative,
            (
                0.3,
                -0.019375372265978963,
                0.6193753722659789,
                0.06559733260262468,
            ),
        );
        check(
            pa,
            pb,
            Difference::Absolute,
            (
                0.03,
                0.0020507842909493826,
                0.057949215709050615,
                0.03541149025749646,
            ),
        );
    }

    /// The edges of the grid: twenty million units a variation, a 100 : 1,000,000 split, and
    /// three units against four (few degrees of freedom). gbstats 0.8.0 figures.
    #[test]
    fn t_tests_agree_with_gbstats_at_the_edges() {
        let (huge_a, huge_b) = twenty_million_each();
        check(
            huge_a,
            huge_b,
            Difference::Relative,
            (
                0.002999999999999947,
                0.0011365868232150597,
                0.004863413176784835,
                0.0016025526469560791,
            ),
        );
        check(
            huge_a,
            huge_b,
            Difference::Absolute,
            (
                0.0002999999999999947,
                0.00011393761341789118,
                0.00048606238658209825,
                0.0015767594426694398,
            ),
        );
        let small = Summary::SampleMean {
            n: 100,
            sum: 250.0,
            sum_squares: 900.0,
        };
        let large = Summary::SampleMean {
            n: 1_000_000,
            sum: 2_600_000.0,
            sum_squares: 9_000_000.0,
        };
        check(
            small,
            large,
            Difference::Relative,
            (
                0.040000000000000036,
                -0.09757722920211231,
                0.17757722920211239,
                0.5653152518910378,
            ),
        );
        check(
            small,
            large,
            Difference::Absolute,
            (
                0.10000000000000009,
                -0.23071549919705114,
                0.4307154991970513,
                0.5498929795521939,
            ),
        );
        let three = Summary::SampleMean {
            n: 3,
            sum: 3.0,
            sum_squares: 5.0,
        };
        let four = Summary::SampleMean {
            n: 4,
            sum: 8.0,
            sum_squares: 20.0,
        };
        check(
            three,
            four,
            Difference::Relative,
            (
                1.0,
                -2.360631376508714,
                4.360631376508714,
                0.47498234657807625,
            ),
        );
        check(
            three,
            four,
            Difference::Absolute,
            (
                1.0,
                -1.125449905198883,
                3.125449905198883,
                0.27735462530883104,
            ),
        );
    }

    #[test]
    fn ratio_and_cuped_comparisons_agree_with_gbstats() {
        let ratio = |n, m: (f64, f64), d: (f64, f64), sp| Summary::Ratio {
            n,
            numerator: Moments::Mean {
                sum: m.0,
                sum_squares: m.1,
            },
            denominator: Moments::Mean {
                sum: d.0,
                sum_squares: d.1,
            },
            sum_of_products: sp,
        };
        let a = ratio(5000, (12000.0, 60000.0), (8000.0, 20000.0), 25000.0);
        let b = ratio(5100, (13100.0, 66000.0), (8100.0, 20500.0), 26500.0);
        check(
            a,
            b,
            Difference::Relative,
            (
                0.07818930041152268,
                0.035605326356952606,
                0.12077327446609276,
                0.0003207755039189575,
            ),
        );
        check(
            a,
            b,
            Difference::Absolute,
            (
                0.11728395061728403,
                0.055741992725652584,
                0.17882590850891547,
                0.00018825505845554424,
            ),
        );
        let adjusted = |n, post: (f64, f64), pre: (f64, f64), sp, theta| Summary::Adjusted {
            n,
            post: Moments::Mean {
                sum: post.0,
                sum_squares: post.1,
            },
            pre: Moments::Mean {
                sum: pre.0,
                sum_squares: pre.1,
            },
            sum_of_products: sp,
            theta,
        };
        let a = adjusted(3000, (9000.0, 33000.0), (8700.0, 30000.0), 30500.0, 0.0);
        let b = adjusted(3050, (9500.0, 36000.0), (8800.0, 30500.0), 32000.0, 0.0);
        let theta = cuped_theta(&a, &b);
        close(theta, 0.9096612296110415);
        let a = adjusted(3000, (9000.0, 33000.0), (8700.0, 30000.0), 30500.0, theta);
        let b = adjusted(3050, (9500.0, 36000.0), (8800.0, 30500.0), 32000.0, theta);
        check(
            a,
            b,
            Difference::Relative,
            (
                0.04272510987240382,
                0.02842908384088983,
                0.05702113590391781,
                4.910733819585289e-09,
            ),
        );
        check(
            a,
            b,
            Difference::Absolute,
            (
                0.12817532961721145,
                0.0860480096054678,
                0.1703026496289551,
                2.5926645275120563e-09,
            ),
        );
    }

    /// gbstats 0.8.0 `SequentialTwoSidedTTest`: (effect, interval, p) at tuning 5000 and 100.
    #[test]
    fn sequential_comparisons_agree_with_gbstats() {
        let (mean_a, mean_b) = means();
        let (prop_a, prop_b) = proportions();
        let (huge_a, huge_b) = twenty_million_each();
        use Difference::{Absolute, Relative};
        for (a, b, difference, tuning, want) in [
            (
                mean_a,
                mean_b,
                Relative,
                5000.0,
                [
                    0.7073170731707317,
                    -0.4444237691289097,
                    1.859057915470373,
                    0.6986728582483058,
                ],
            ),
            (
                mean_a,
                mean_b,
                Relative,
                100.0,
                [
                    0.7073170731707317,
                    -0.6220698360805903,
                    2.0367039824220536,
                    1.0,
                ],
            ),
            (
                mean_a,
                mean_b,
                Absolute,
                5000.0,
                [
                    0.29,
                    -0.08941009553834556,
                    0.6694100955383455,
                    0.2907445591859732,
                ],
            ),
            (
                prop_a,
                prop_b,
                Relative,
                5000.0,
                [
                    0.3,
                    -0.20870625018398686,
                    0.8087062501839868,
                    0.5622208729310174,
                ],
            ),
            (
                prop_a,
                prop_b,
                Absolute,
                5000.0,
                [
                    0.03,
                    -0.014517962102267787,
                    0.07451796210226778,
                    0.37893150758579747,
                ],
            ),
            (
                huge_a,
                huge_b,
                Relative,
                5000.0,
                [
                    0.002999999999999947,
                    -0.0009257986334344189,
                    0.006925798633434313,
                    1.0,
                ],
            ),
            (
                huge_a,
                huge_b,
                Absolute,
                100.0,
                [
                    0.0002999999999999947,
                    -0.0001346383926829824,
                    0.0007346383926829718,
                    1.0,
                ],
            ),
        ] {
            let got = sequential(&a, &b, difference, 0.05, tuning).expect("figures");
            close(got.effect, want[0]);
            close(got.interval.0, want[1]);
            close(got.interval.1, want[2]);
            close(got.p_value, want[3]);
        }
    }

    /// gbstats 0.8.0 `EffectBayesianABTest`: (chance to win, effect, interval, risks).
    #[test]
    fn bayesian_comparisons_agree_with_gbstats() {
        let (mean_a, mean_b) = means();
        let (prop_a, prop_b) = proportions();
        let proper = Prior {
            mean: 0.0,
            variance: 0.09,
            proper: true,
        };
        for (a, b, difference, prior, want) in [
            (
                mean_a,
                mean_b,
                Difference::Relative,
                Prior::default(),
                [
                    0.9690691085323815,
                    0.7073170731707317,
                    -0.03510623324566797,
                    1.449740379587131,
                    0.7118738401388185,
                    0.004556766968086795,
                ],
            ),
            (
                mean_a,
                mean_b,
                Difference::Absolute,
                Prior::default(),
                [
                    0.9899378629114758,
                    0.29,
                    0.04542857622821292,
                    0.534571423771787,
                    0.2904257600997191,
                    0.00042576009971912116,
                ],
            ),
            (
                mean_a,
                mean_b,
                Difference::Relative,
                proper,
                [
                    0.8768365224575045,
                    0.2726448836685803,
                    -0.18829384805880633,
                    0.7335836153959668,
                    0.2869782584231163,
                    0.014333374754536003,
                ],
            ),
            (
                prop_a,
                prop_b,
                Difference::Relative,
                Prior::default(),
                [
                    0.9672763417294536,
                    0.3,
                    -0.019179397713587232,
                    0.6191793977135871,
                    0.30208906485859227,
                    0.002089064858592275,
                ],
            ),
            (
                prop_a,
                prop_b,
                Difference::Absolute,
                Prior::default(),
                [
                    0.9823573398747536,
                    0.03,
                    0.0020679344393763587,
                    0.057932065560623636,
                    0.030090899520195405,
                    9.08995201954058e-05,
                ],
            ),
            (
                prop_a,
                prop_b,
                Difference::Relative,
                proper,
                [
                    0.9472798425887837,
                    0.2317198764160659,
                    -0.048794980420210465,
                    0.5122347332523423,
                    0.2348998996507855,
                    0.003180023234719617,
                ],
            ),
        ] {
            let got = bayesian(&a, &b, difference, prior, 0.05).expect("figures");
            close(got.chance_to_win, want[0]);
            close(got.effect, want[1]);
            close(got.interval.0, want[2]);
            close(got.interval.1, want[3]);
            close(got.risk.0, want[4]);
            close(got.risk.1, want[5]);
        }
    }

    #[test]
    fn inputs_gbstats_refuses_get_a_reason() {
        let zero = Summary::Proportion { n: 1000, sum: 0.0 };
        let some = Summary::Proportion { n: 1000, sum: 10.0 };
        assert_eq!(
            t_test(&zero, &some, Difference::Relative, 0.05),
            Err(Degenerate::ControlMeanZero)
        );
        let all = Summary::Proportion {
            n: 1000,
            sum: 1000.0,
        };
        assert_eq!(
            t_test(&some, &all, Difference::Absolute, 0.05),
            Err(Degenerate::ZeroVariance)
        );
        let one = Summary::SampleMean {
            n: 1,
            sum: 3.0,
            sum_squares: 9.0,
        };
        assert_eq!(
            t_test(&one, &one, Difference::Absolute, 0.05),
            Err(Degenerate::TooFewUnits)
        );
    }

    #[test]
    fn sample_ratio_mismatch_agrees_with_gbstats() {
        close(srm_p_value(&[5050, 4950], &[0.5, 0.5]), 0.31731050786291115);
        close(
            srm_p_value(&[1000, 1100, 950], &[0.3, 0.4, 0.3]),
            2.7014800295271902e-05,
        );
        assert_eq!(srm_p_value(&[0, 0], &[0.5, 0.5]), 1.0);
    }
}
