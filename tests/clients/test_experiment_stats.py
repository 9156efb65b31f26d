"""Cohort's experiment statistics against the reference libraries, through the real CLI.

`cohort experiment analyze --json` and `cohort experiment sample-size --json` run on a grid of
inputs with its edges (zero conversions, zero variance, one unit, inconsistent sums, a 100 :
1,000,000 split, twenty million units a variation, ratio metrics, CUPED on means and on rates,
three arms, a sample-ratio mismatch, a weight-0 arm, a metric where lower is better), under
every engine, and each figure of the reports is compared with:

- gbstats 0.8.0: effects, intervals and unpooled p-values (`TwoSidedTTest`), sequential
  intervals and p-values (`SequentialTwoSidedTTest`), chance to win, credible intervals and
  risk (`EffectBayesianABTest`, `inverse` for lower-is-better metrics), CUPED's theta
  (`compute_theta`), sample-ratio mismatch (`check_srm`);
- statsmodels: the pooled z-test (`proportions_ztest`), Wilson intervals
  (`proportion_confint`), power (`NormalIndPower.power`), units needed and detectable effects
  (`NormalIndPower.power` solved with scipy's `brentq` to 1e-12: statsmodels' own solver stops
  early, at a power of 0.80005), Holm and Benjamini-Hochberg (`multipletests`);
- scipy: Student-t intervals of the variations' means.

Tolerance: |cohort - reference| <= 1e-6 * max(1, |reference|): absolute 1e-6 for figures of
size up to 1 (p-values, probabilities, rates, most lifts), relative 1e-6 above (means, units
needed, large lifts). Where the reference refuses (a gbstats error message, an exception, NaN),
the check is that Cohort states a reason (in English and Chinese) and gives no number there.
Every mismatch is collected, so one run lists them all.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pytest
from scipy import stats as sps
from scipy.optimize import brentq
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    proportion_confint,
    proportion_effectsize,
    proportions_ztest,
)

from gbstats.bayesian.tests import EffectBayesianABTest, EffectBayesianConfig, GaussianPrior
from gbstats.frequentist.tests import (
    FrequentistConfig,
    SequentialConfig,
    SequentialTwoSidedTTest,
    TwoSidedTTest,
)
from gbstats.models.statistics import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    compute_theta,
)
from gbstats.utils import check_srm

from conftest import cohort_bin

TOL = 1e-6
SRM_THRESHOLD = 0.001
# Keys that hold a figure: none may stand beside a reason.
FIGURE_KEYS = {
    "estimate", "ci", "p_value", "adjusted_p_value", "chance_to_win", "risk", "z", "mean",
    "stddev", "effect_size", "minimum_detectable_effect", "units_needed_per_variation",
    "days_remaining",
}


def test_reference_versions():
    assert importlib.metadata.version("gbstats") == "0.8.0"


# -- running Cohort ---------------------------------------------------------------------------

def _no_constants(name: str):
    raise AssertionError(f"the JSON holds {name}")


def cohort_json(args: list[str], stdin: Optional[str] = None) -> Any:
    out = subprocess.run(
        [cohort_bin(), *args], input=stdin, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, f"cohort {' '.join(args)} failed ({out.returncode}): {out.stderr}"
    value = json.loads(out.stdout, parse_constant=_no_constants)
    assert_no_null(value, "output")
    return value


def assert_no_null(value: Any, path: str) -> None:
    """No null anywhere, every number finite, no figure beside a reason."""
    if value is None:
        raise AssertionError(f"{path} is null")
    if isinstance(value, float):
        assert math.isfinite(value), f"{path} = {value}"
    elif isinstance(value, dict):
        if "reason" in value:
            beside = FIGURE_KEYS & value.keys()
            assert not beside, f"{path}: {sorted(beside)} beside the reason {value['reason']}"
            assert value["reason"]["en"] and value["reason"]["zh"], f"{path}: empty reason"
        for k, v in value.items():
            assert_no_null(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            assert_no_null(v, f"{path}[{i}]")


def analyze(case: dict, options: dict) -> dict:
    body = {k: v for k, v in case.items() if k != "id"}
    body["options"] = options
    return cohort_json(["experiment", "analyze", "-", "--format", "json", "--json"],
                       json.dumps(body))


# -- comparing ---------------------------------------------------------------------------------

@dataclass
class Checker:
    failures: list = field(default_factory=list)
    figures: int = 0
    refusals: int = 0

    def close(self, got: Any, want: float, what: str) -> None:
        self.figures += 1
        if not isinstance(got, (int, float)) or isinstance(got, bool) or not math.isfinite(got):
            self.failures.append(f"{what}: cohort gave {got!r}, reference {want!r}")
        elif abs(got - want) > TOL * max(1.0, abs(want)):
            self.failures.append(
                f"{what}: cohort {got!r}, reference {want!r} (off by {abs(got - want):.3g})")

    def refused(self, obj: Any, what: str, codes: Optional[set] = None) -> None:
        """Cohort states a reason and gives no number (the reference refused)."""
        self.refusals += 1
        if not isinstance(obj, dict) or "reason" not in obj:
            self.failures.append(f"{what}: the reference refuses, cohort gave {obj!r}")
            return
        code = obj["reason"].get("code")
        if codes is not None and code not in codes:
            self.failures.append(f"{what}: reason {code!r}, expected one of {sorted(codes)}")
        beside = FIGURE_KEYS & obj.keys()
        if beside:
            self.failures.append(f"{what}: figures {sorted(beside)} beside the reason")

    def check(self, condition: bool, what: str) -> None:
        if not condition:
            self.failures.append(what)

    def done(self, minimum_figures: int) -> None:
        assert not self.failures, f"{len(self.failures)} mismatches:\n" + "\n".join(self.failures)
        assert self.figures >= minimum_figures, (
            f"only {self.figures} figures compared (expected at least {minimum_figures})")


@dataclass
class Refusal:
    why: str

    def codes(self) -> set:
        return {
            "ZERO_NEGATIVE_BASELINE_VARIATION": {"baseline_zero"},
            # gbstats finds one unit's variance zero; Cohort says so, or that there is too little.
            "ZERO_NEGATIVE_VARIANCE": {"zero_variance", "not_enough_data"},
            "NO_UNITS_IN_VARIATION": {"not_enough_data", "no_units"},
            # gbstats' Bayesian test divides by the rescaled prior: control mean zero.
            "ZeroDivisionError": {"baseline_zero"},
        }.get(self.why)


def finite(*xs: float) -> bool:
    return all(isinstance(x, (int, float)) and math.isfinite(x) for x in xs)


# -- the references ----------------------------------------------------------------------------

def statistic(kind: str, s: dict, plain: bool = False):
    """gbstats' statistic for one variation's sums (fresh: gbstats' tests set theta on it)."""
    n = s["n"]
    if kind == "ratio":
        return RatioStatistic(
            n=n,
            m_statistic=SampleMeanStatistic(n=n, sum=s["sum"], sum_squares=s["sum_squares"]),
            d_statistic=SampleMeanStatistic(n=n, sum=s["denominator_sum"],
                                            sum_squares=s["denominator_sum_squares"]),
            m_d_sum_of_products=s["numerator_denominator_sum_of_products"],
        )
    if kind == "proportion":
        post = ProportionStatistic(n=n, sum=s["sum"])
    else:
        post = SampleMeanStatistic(n=n, sum=s["sum"], sum_squares=s["sum_squares"])
    if plain or "pre_sum" not in s:
        return post
    if "pre_sum_squares" in s:
        pre = SampleMeanStatistic(n=n, sum=s["pre_sum"], sum_squares=s["pre_sum_squares"])
    else:
        pre = ProportionStatistic(n=n, sum=s["pre_sum"])
    return RegressionAdjustedStatistic(
        n=n, post_statistic=post, pre_statistic=pre,
        post_pre_sum_of_products=s["post_pre_sum_of_products"], theta=0,
    )


def gbstats_lift(options: dict, kind: str, sa: dict, sb: dict, difference: str,
                 inverse: bool):
    """gbstats' figures for one lift, or a Refusal."""
    engine = options.get("engine", "frequentist")
    alpha = options.get("alpha", 0.05)
    a, b = statistic(kind, sa), statistic(kind, sb)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with np.errstate(all="ignore"):
                if engine == "frequentist":
                    test = TwoSidedTTest(a, b, FrequentistConfig(difference_type=difference,
                                                                  alpha=alpha))
                elif engine == "sequential":
                    test = SequentialTwoSidedTTest(a, b, SequentialConfig(
                        difference_type=difference, alpha=alpha,
                        sequential_tuning_parameter=options.get("sequential_tuning", 5000)))
                else:
                    p = options.get("prior", {})
                    prior = (GaussianPrior(mean=p.get("mean", 0), variance=p.get("stddev", 0.3) ** 2,
                                           proper=True)
                             if p.get("proper") else GaussianPrior())
                    test = EffectBayesianABTest(a, b, EffectBayesianConfig(
                        difference_type=difference, alpha=alpha, inverse=inverse,
                        prior_effect=prior, prior_type="relative"))
                result = test.compute_result()
    except ZeroDivisionError:
        return Refusal("ZeroDivisionError")
    if result.error_message:
        return Refusal(result.error_message)
    figures = {"estimate": result.expected, "ci": list(result.ci)}
    if engine == "bayesian":
        figures["chance_to_win"] = result.chance_to_win
        figures["risk"] = list(result.risk)
    else:
        figures["p_value"] = result.p_value
    flat = [figures["estimate"], *figures["ci"], figures.get("p_value", 0),
            figures.get("chance_to_win", 0), *figures.get("risk", [])]
    if not finite(*flat):
        return Refusal("NaN")
    return figures


def theta_reference(kind: str, sa: dict, sb: dict) -> float:
    return compute_theta(statistic(kind, sa), statistic(kind, sb))


def comparison_statistics(kind: str, sa: dict, sb: dict):
    """The two statistics a comparison tests (CUPED with its theta, as gbstats sets it)."""
    a, b = statistic(kind, sa), statistic(kind, sb)
    if isinstance(a, RegressionAdjustedStatistic):
        theta = compute_theta(a, b)
        if theta == 0:
            return a.post_statistic, b.post_statistic
        a.theta = b.theta = theta
    return a, b


def solve_power(size: float, n_a: float, ratio: float, alpha: float, wanted: float) -> float:
    return NormalIndPower().power(size, n_a, alpha, ratio=ratio) - wanted


def units_needed(size: float, alpha: float, wanted: float) -> float:
    return brentq(lambda n: solve_power(size, n, 1.0, alpha, wanted), 1e-6, 1e16,
                  xtol=1e-12, rtol=1e-15 * 4.5, maxiter=500)


def detectable_size(n_a: float, ratio: float, alpha: float, wanted: float) -> Optional[float]:
    """The effect size detected with `wanted` power; None beyond pi (as Cohort caps h)."""
    if solve_power(math.pi, n_a, ratio, alpha, wanted) < 0:
        return None
    return brentq(lambda h: solve_power(h, n_a, ratio, alpha, wanted), 0.0, math.pi,
                  xtol=1e-14, rtol=1e-15 * 4.5, maxiter=500)


def power_reference(options: dict, kind: str, sa: dict, sb: dict, direction: str,
                    days: Optional[float]):
    """statsmodels' figures for the power section, or a Refusal (with Cohort's code)."""
    alpha = options.get("alpha", 0.05)
    wanted = options.get("power", 0.8)
    relative = options.get("difference", "relative") == "relative"
    target = options.get("target_mde")
    n_a, n_b = sa["n"], sb["n"]
    if n_a < 2 or n_b < 2:
        return Refusal("not_enough_data")
    a, b = comparison_statistics(kind, sa, sb)
    base = a.unadjusted_mean
    if relative and base == 0:
        return Refusal("baseline_zero")
    good = 1.0 if direction == "increase" else -1.0
    ratio = n_b / n_a
    n_equal = 2.0 / (1.0 / n_a + 1.0 / n_b)
    out: dict = {"wanted": wanted}
    h_min = detectable_size(n_a, ratio, alpha, wanted)
    rate = kind == "proportion" and "pre_sum" not in sa
    if rate:
        if h_min is not None:
            angle = math.asin(math.sqrt(base)) + good * h_min / 2
            if 0 <= angle <= math.pi / 2:
                r = math.sin(angle) ** 2
                out["minimum_detectable_effect"] = r / base - 1 if relative else r - base
        if target is not None:
            t = good * abs(target)
            target_rate = base * (1 + t) if relative else base + t
            if not 0 <= target_rate <= 1:
                return Refusal("target_out_of_range")
            size = abs(proportion_effectsize(target_rate, base))
    else:
        pooled = ((n_a - 1) * a.variance + (n_b - 1) * b.variance) / (n_a + n_b - 2)
        if not pooled > 0:
            return Refusal("zero_variance")
        sd = math.sqrt(pooled)
        per_unit = abs(base) if relative else 1.0
        if h_min is not None:
            out["minimum_detectable_effect"] = good * h_min * sd / per_unit
        if target is not None:
            size = abs(target * per_unit) / sd
    if target is not None:
        out["target_effect"] = good * abs(target)
        out["effect_size"] = size
        out["power"] = NormalIndPower().power(size, n_a, alpha, ratio=ratio)
        out["units_needed_per_variation"] = units_needed(size, alpha, wanted)
        if days:
            # Cohort's own arithmetic on the reference's units: traffic is taken as steady.
            out["days_remaining"] = max(
                0.0, days * out["units_needed_per_variation"] / n_equal - days)
    return out


# -- the grid ----------------------------------------------------------------------------------

def prop(n, x):
    return {"n": n, "sum": x}


def mean(n, s, ss):
    return {"n": n, "sum": s, "sum_squares": ss}


def ratio(n, m, mm, d, dd, md):
    return {"n": n, "sum": m, "sum_squares": mm, "denominator_sum": d,
            "denominator_sum_squares": dd, "numerator_denominator_sum_of_products": md}


def cuped_mean(n, s, ss, pre, pre_ss, pp):
    return {"n": n, "sum": s, "sum_squares": ss, "pre_sum": pre, "pre_sum_squares": pre_ss,
            "post_pre_sum_of_products": pp}


def cuped_rate(n, x, pre, pp):
    return {"n": n, "sum": x, "pre_sum": pre, "post_pre_sum_of_products": pp}


AB = [{"key": "a", "name": "Control"}, {"key": "b", "name": "Treatment"}]


def metric(key, kind, a, b, **extra):
    return {"key": key, "kind": kind, "data": {"a": a, "b": b}, **extra}


GRID = [
    {"id": "rates", "variations": AB, "days_running": 10,
     "metrics": [metric("purchase", "proportion", prop(1000, 100), prop(1000, 130),
                        name="Purchase")]},
    {"id": "gbstats_pair", "variations": AB,
     "metrics": [metric("spend", "mean", mean(3407, 1396.87, 52377.9767),
                        mean(3461, 2422.7, 134698.29))]},
    {"id": "zero_conversions", "variations": AB,
     "metrics": [metric("none", "proportion", prop(1000, 0), prop(1000, 0)),
                 metric("control_none", "proportion", prop(1000, 0), prop(1000, 7))]},
    {"id": "everyone_converts", "variations": AB,
     "metrics": [metric("all", "proportion", prop(50, 50), prop(50, 50))]},
    {"id": "zero_variance", "variations": AB,
     "metrics": [metric("flat", "mean", mean(100, 500, 2500), mean(100, 600, 3600)),
                 metric("inconsistent", "mean", mean(100, 500, 10), mean(100, 600, 3700))]},
    {"id": "one_unit", "variations": AB,
     "metrics": [metric("one", "mean", mean(1, 3, 9), mean(1, 4, 16)),
                 metric("one_rate", "proportion", prop(1, 1), prop(1, 0))]},
    {"id": "three_against_four", "variations": AB,
     "metrics": [metric("tiny", "mean", mean(3, 3, 5), mean(4, 8, 20))]},
    {"id": "control_mean_zero", "variations": AB,
     "metrics": [metric("profit", "mean", mean(50, 0, 100), mean(50, 10, 120))]},
    {"id": "unequal_split", "variations": AB,
     "metrics": [metric("spend", "mean", mean(100, 250, 900), mean(1_000_000, 2_600_000, 9_000_000)),
                 metric("buy", "proportion", prop(100, 12), prop(1_000_000, 101_000))]},
    {"id": "twenty_million", "variations": AB, "days_running": 28, "multiple_exposures": 1234,
     "metrics": [metric("buy", "proportion", prop(20_000_000, 2_000_000),
                        prop(20_000_000, 2_006_000)),
                 metric("spend", "mean", mean(20_000_000, 5.0e8, 4.0e10),
                        mean(20_000_000, 5.01e8, 4.01e10))]},
    {"id": "ratio", "variations": AB,
     "metrics": [metric("per_order", "ratio", ratio(5000, 12000, 60000, 8000, 20000, 25000),
                        ratio(5100, 13100, 66000, 8100, 20500, 26500))]},
    {"id": "ratio_empty", "variations": AB,
     "metrics": [metric("per_order", "ratio", ratio(0, 0, 0, 0, 0, 0), ratio(0, 0, 0, 0, 0, 0))]},
    {"id": "cuped", "variations": AB, "days_running": 14,
     "metrics": [metric("spend", "mean", cuped_mean(3000, 9000, 33000, 8700, 30000, 30500),
                        cuped_mean(3050, 9500, 36000, 8800, 30500, 32000)),
                 metric("buy", "proportion", cuped_rate(5000, 600, 550, 400),
                        cuped_rate(5000, 680, 560, 420)),
                 # No pre-period variance: theta 0, the plain test.
                 metric("fresh", "proportion", cuped_rate(1000, 100, 0, 0),
                        cuped_rate(1000, 120, 0, 0))]},
    {"id": "three_arms", "days_running": 7,
     "variations": [{"key": "a"}, {"key": "b"}, {"key": "c"}],
     "metrics": [
         {"key": "buy", "kind": "proportion",
          "data": {"a": prop(2000, 200), "b": prop(2000, 250), "c": prop(2000, 190)}},
         {"key": "spend", "kind": "mean",
          "data": {"a": mean(2000, 50000, 1.8e6), "b": mean(2000, 53000, 2.0e6),
                   "c": mean(2000, 49000, 1.7e6)}},
         {"key": "refunds", "kind": "proportion", "direction": "decrease", "guardrail": True,
          "data": {"a": prop(2000, 40), "b": prop(2000, 70), "c": prop(2000, 35)}}]},
    {"id": "sample_ratio_mismatch", "variations": AB, "multiple_exposures": 300,
     "metrics": [metric("buy", "proportion", prop(10000, 1000), prop(10500, 1090))]},
    {"id": "weight_zero",
     "variations": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5},
                    {"key": "c", "weight": 0, "units": 0}],
     "metrics": [{"key": "buy", "kind": "proportion",
                  "data": {"a": prop(5050, 500), "b": prop(4950, 520), "c": prop(0, 0)}}]},
    {"id": "unequal_weights",
     "variations": [{"key": "a", "weight": 0.2, "units": 2100},
                    {"key": "b", "weight": 0.8, "units": 7900}],
     "metrics": [metric("latency", "mean", mean(2100, 420000, 9.0e7), mean(7900, 1.55e6, 3.3e8),
                        direction="decrease", guardrail=True)]},
]

ENGINES = [
    {"engine": "frequentist", "target_mde": 0.1},
    {"engine": "frequentist", "alpha": 0.1, "correction": "holm", "difference": "absolute",
     "target_mde": 0.01, "power": 0.9},
    {"engine": "frequentist", "correction": "benjamini_hochberg", "target_mde": 0.05},
    {"engine": "sequential"},
    {"engine": "sequential", "sequential_tuning": 100, "difference": "absolute"},
    {"engine": "bayesian"},
    {"engine": "bayesian", "prior": {"proper": True, "mean": 0, "stddev": 0.3}},
    {"engine": "bayesian", "prior": {"proper": True, "mean": 0.02, "stddev": 0.1},
     "difference": "absolute", "alpha": 0.1},
]


def engine_id(options: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in options.items())


def check_values(c: Checker, case: dict, m_in: dict, m_out: dict, alpha: float) -> None:
    keys = [v["key"] for v in case["variations"]]
    for key, value in zip(keys, m_out["variations"]):
        s = m_in["data"][key]
        what = f"{m_in['key']}/{key} value"
        c.check(value["units"] == s["n"], f"{what}: units {value['units']} != {s['n']}")
        st = statistic(m_in["kind"], s, plain=True)
        if s["n"] == 0 or (m_in["kind"] == "ratio" and s["denominator_sum"] == 0):
            c.refused(value, what)
            continue
        c.close(value.get("mean"), st.mean, f"{what} mean")
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if m_in["kind"] == "proportion":
                ci = proportion_confint(s["sum"], s["n"], alpha=alpha, method="wilson")
            else:
                ci = sps.t.interval(1 - alpha, s["n"] - 1, loc=st.mean,
                                    scale=math.sqrt(st.variance / s["n"])
                                    if st.variance >= 0 else float("nan"))
        if finite(*ci):
            got = value.get("ci") or [None, None]
            c.close(got[0], ci[0], f"{what} ci low")
            c.close(got[1], ci[1], f"{what} ci high")
        else:
            c.check("ci" not in value and "ci_reason" in value,
                    f"{what}: the reference has no interval, cohort gave {value}")


def check_lift(c: Checker, options: dict, got: dict, want, what: str, few: bool) -> None:
    if isinstance(want, Refusal):
        codes = want.codes()
        if codes is not None and few:
            # With fewer than two units in an arm Cohort names that first, whatever else
            # gbstats tripped on (a zero mean, a zero variance).
            codes = codes | {"not_enough_data"}
        c.refused(got, f"{what} ({want.why})", codes)
        return
    c.close(got.get("estimate"), want["estimate"], f"{what} estimate")
    ci = got.get("ci") or [None, None]
    c.close(ci[0], want["ci"][0], f"{what} ci low")
    c.close(ci[1], want["ci"][1], f"{what} ci high")
    if options.get("engine") == "bayesian":
        c.close(got.get("chance_to_win"), want["chance_to_win"], f"{what} chance to win")
        risk = got.get("risk") or {}
        c.close(risk.get("control"), want["risk"][0], f"{what} risk of the control")
        c.close(risk.get("variation"), want["risk"][1], f"{what} risk of the variation")
    else:
        c.close(got.get("p_value"), want["p_value"], f"{what} p-value")


def check_power(c: Checker, want, got: dict, what: str) -> None:
    """A comparison's power figures against statsmodels' (`power_reference`)."""
    if isinstance(want, Refusal):
        c.refused(got, f"{what} power", {want.why})
        return
    for k, v in want.items():
        if k != "wanted":
            c.close(got.get(k), v, f"{what} {k.replace('_', ' ')}")
    if "minimum_detectable_effect" not in want:
        c.check("minimum_detectable_effect" not in got,
                f"{what}: cohort has a detectable effect, the reference none")
    if "power" in want:
        c.check(got["reached"] == (want["power"] >= want["wanted"]), f"{what}: power reached flag")


def check_corrections(c: Checker, options: dict, chosen_p: list) -> None:
    """The adjusted p-values of every (comparison, gbstats p, label) against statsmodels'
    multipletests, or their absence without a correction."""
    correction = options.get("correction", "none")
    if correction != "none" and chosen_p:
        method = {"holm": "holm", "benjamini_hochberg": "fdr_bh"}[correction]
        adjusted = multipletests([p for _, p, _ in chosen_p], method=method)[1]
        for (comp, _, what), want in zip(chosen_p, adjusted):
            c.close(comp.get("adjusted_p_value"), want, f"{what} {method}-adjusted p")
    else:
        for comp, _, what in chosen_p:
            c.check("adjusted_p_value" not in comp, f"{what}: adjusted without a correction")


def check_report(c: Checker, case: dict, options: dict, report: dict) -> None:
    alpha = options.get("alpha", 0.05)
    difference = options.get("difference", "relative")
    keys = [v["key"] for v in case["variations"]]
    weights = [v.get("weight", 1.0) for v in case["variations"]]
    units = [v.get("units", case["metrics"][0]["data"][v["key"]]["n"]) for v in case["variations"]]

    # Sample-ratio mismatch.
    srm = report["srm"]
    if sum(units) == 0:
        c.refused(srm, "srm")
    else:
        p = check_srm(units, weights)
        c.close(srm.get("p_value"), p, "srm p-value")
        c.check(srm["status"] == ("mismatch" if p < SRM_THRESHOLD else "ok"),
                f"srm status {srm['status']} at p = {p}")
        c.check(("Sample ratio mismatch" in report["verdict"]["en"][0]) == (p < SRM_THRESHOLD),
                f"the verdict's first line and the srm p {p}: {report['verdict']['en'][0]}")
        for arm, w, o in zip(srm["arms"], weights, units):
            c.close(arm["expected_share"], w / sum(weights), f"srm {arm['variation']} share")
            c.check(arm["observed_units"] == o, f"srm {arm['variation']} units")
            c.check(arm.get("skipped", False) == (w == 0), f"srm {arm['variation']} skipped")

    if "multiple_exposures" in case:
        count = case["multiple_exposures"]
        share = count / (count + sum(units))
        me = report["multiple_exposures"]
        c.close(me["share"], share, "multiple-exposure share")
        c.check(me["flagged"] == (count >= 10 and share >= 0.01), "multiple-exposure flag")

    chosen_p: list = []  # (comparison, gbstats p) in report order, for the corrections
    for m_in, m_out in zip(case["metrics"], report["metrics"]):
        kind = m_in["kind"]
        direction = m_in.get("direction", "increase")
        inverse = direction == "decrease"
        check_values(c, case, m_in, m_out, alpha)
        cuped = "pre_sum" in m_in["data"]["a"]
        c.check(m_out["cuped"] == cuped, f"{m_in['key']}: cuped flag")
        for key, comp in zip(keys[1:], m_out["comparisons"]):
            what = f"{m_in['key']} {key} vs a"
            sa, sb = m_in["data"]["a"], m_in["data"][key]
            c.check(comp["variation"] == key and comp["control"] == "a", f"{what}: order")
            if cuped:
                c.close(comp.get("cuped_theta"), theta_reference(kind, sa, sb), f"{what} theta")
            lifts = {}
            for diff in ("relative", "absolute"):
                want = gbstats_lift(options, kind, sa, sb, diff, inverse)
                lifts[diff] = want
                check_lift(c, options, comp[diff], want, f"{what} {diff}",
                           min(sa["n"], sb["n"]) < 2)
            want = lifts[difference]
            if isinstance(want, Refusal):
                c.check(comp["outcome"] == "no_figures" and "reason" in comp,
                        f"{what}: outcome {comp['outcome']} without figures")
                c.check(comp["reason"]["en"] in comp["verdict"]["en"]
                        and comp["reason"]["zh"] in comp["verdict"]["zh"],
                        f"{what}: the verdict does not give the reason: {comp['verdict']}")
            elif options.get("engine") == "bayesian":
                c.close(comp.get("chance_to_win"), want["chance_to_win"], f"{what} chance (chosen)")
            else:
                c.close(comp.get("p_value"), want["p_value"], f"{what} p-value (chosen)")
                chosen_p.append((comp, want["p_value"], what))
            c.check(bool(comp["verdict"]["en"]) and bool(comp["verdict"]["zh"]),
                    f"{what}: empty verdict")

            # statsmodels' pooled z-test, beside the unpooled one.
            if kind == "proportion" and not cuped:
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    z, p = proportions_ztest([sb["sum"], sa["sum"]], [sb["n"], sa["n"]]) \
                        if sa["n"] and sb["n"] else (float("nan"), float("nan"))
                pooled = comp["pooled_z_test"]
                if finite(z, p):
                    c.close(pooled.get("z"), z, f"{what} pooled z")
                    c.close(pooled.get("p_value"), p, f"{what} pooled p")
                    c.check(pooled["test"].startswith("pooled two-proportion z-test"),
                            f"{what}: pooled test label")
                else:
                    c.refused(pooled, f"{what} pooled z-test")
            else:
                c.check("pooled_z_test" not in comp, f"{what}: pooled test on a non-rate")

            # Power, detectable effect, units needed (statsmodels).
            want = power_reference(options, kind, sa, sb, direction, case.get("days_running"))
            check_power(c, want, comp["power"], what)

    check_corrections(c, options, chosen_p)


@pytest.mark.parametrize("options", ENGINES, ids=engine_id)
def test_reports_agree_with_gbstats_and_statsmodels(options: dict):
    c = Checker()
    for case in GRID:
        report = analyze(case, options)
        before = len(c.failures)
        check_report(c, case, options, report)
        for i in range(before, len(c.failures)):
            c.failures[i] = f"[{case['id']}] {c.failures[i]}"
    c.done(minimum_figures=150)
    assert c.refusals >= 10, c.refusals


def test_the_comparison_catches_a_wrong_figure():
    """The checks can fail: a report with one figure moved by 2e-6 is caught."""
    case, options = GRID[0], ENGINES[0]
    report = analyze(case, options)
    comp = report["metrics"][0]["comparisons"][0]
    comp["relative"]["p_value"] += 2e-6
    c = Checker()
    check_report(c, case, options, report)
    assert len(c.failures) == 1 and "relative p-value" in c.failures[0], c.failures
    comp["relative"]["p_value"] -= 2e-6
    del comp["absolute"]["estimate"]
    comp["absolute"]["reason"] = {"code": "zero_variance", "en": "x", "zh": "x"}
    c = Checker()
    check_report(c, case, options, report)
    assert any("absolute estimate" in f for f in c.failures), c.failures


CSV = """metric,variation,kind,n,sum,sum_squares,metric_name,variation_name,direction
purchase,a,proportion,1000,100,,Purchase,Control,
purchase,b,proportion,1000,130,,,Treatment,
spend,a,mean,3407,1396.87,52377.9767,,,increase
spend,b,mean,3461,2422.7,134698.29,,,
"""


def test_csv_and_json_give_the_same_report():
    case = {"variations": AB, "metrics": [
        {"key": "purchase", "name": "Purchase", "kind": "proportion",
         "data": {"a": prop(1000, 100), "b": prop(1000, 130)}},
        {"key": "spend", "kind": "mean",
         "data": {"a": mean(3407, 1396.87, 52377.9767), "b": mean(3461, 2422.7, 134698.29)}}]}
    from_json = analyze(case, {"engine": "bayesian"})
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "sums.csv")
        with open(path, "w") as f:
            f.write(CSV)
        from_file = cohort_json(["experiment", "analyze", path, "--engine", "bayesian", "--json"])
    from_stdin = cohort_json(["experiment", "analyze", "-", "--engine", "bayesian", "--json"], CSV)
    assert from_file == from_json
    assert from_stdin == from_json


def test_bad_input_is_refused_with_the_row_and_column():
    bad = CSV.replace("spend,b,mean,3461,2422.7", "spend,b,mean,3461,lots")
    out = subprocess.run([cohort_bin(), "experiment", "analyze", "-", "--format", "csv"],
                         input=bad, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert 'CSV row 5, column `sum`: "lots" is not a number' in out.stderr, out.stderr
    assert out.stdout == ""
    out = subprocess.run([cohort_bin(), "experiment", "analyze", "-"],
                         input='{"variations": [{"key": "a"}, {"key": "b"}], "metrics": ['
                               '{"key": "m", "kind": "mean", "data": {"a": {"n": 2, "sum": 1},'
                               ' "b": {"n": 2, "sum": 1, "sum_squares": 1}}}]}',
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert 'metric "m", variation "a": a mean metric needs sum_squares' in out.stderr, out.stderr


def test_table_output_and_help():
    out = subprocess.run([cohort_bin(), "experiment", "analyze", "-", "--format", "csv"],
                         input=CSV, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Purchase (proportion, higher is better)" in out.stdout, out.stdout
    assert "Verdict:" in out.stdout and "结论：" in out.stdout, out.stdout
    for args in (["experiment", "--help"], ["experiment", "analyze", "--help"],
                 ["experiment", "sample-size", "--help"]):
        out = subprocess.run([cohort_bin(), *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "Example" in out.stdout, (args, out.stdout)


PLANS = [
    {"baseline_rate": 0.10, "mde": 0.01},
    {"baseline_rate": 0.10, "mde": 0.1, "relative": True, "daily_units": 1000},
    {"baseline_rate": 0.5, "mde": 0.1, "relative": True, "alpha": 0.01, "power": 0.9,
     "variations": 3},
    {"baseline_rate": 0.02, "mde": -0.002, "daily_units": 12345, "variations": 4},
    {"baseline_rate": 0.001, "mde": 0.5, "relative": True, "power": 0.95},
    {"baseline_mean": 50, "baseline_sd": 10, "mde": 2},
    {"baseline_mean": 52.5, "baseline_sd": 30, "mde": 0.05, "relative": True,
     "daily_units": 800},
]


def plan_args(plan: dict) -> list[str]:
    args = ["experiment", "sample-size", "--json"]
    for k, v in plan.items():
        flag = "--" + k.replace("_", "-")
        if v is True:
            args.append(flag)
        else:
            args += [flag, str(v)]
    return args


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()))
def test_sample_sizes_agree_with_statsmodels(plan: dict):
    got = cohort_json(plan_args(plan))
    alpha, power = plan.get("alpha", 0.05), plan.get("power", 0.8)
    variations = plan.get("variations", 2)
    relative = plan.get("relative", False)
    if "baseline_rate" in plan:
        base = plan["baseline_rate"]
        target = base * (1 + plan["mde"]) if relative else base + plan["mde"]
        size = abs(proportion_effectsize(target, base))
    else:
        base = plan["baseline_mean"]
        target = base * (1 + plan["mde"]) if relative else base + plan["mde"]
        size = abs(target - base) / plan["baseline_sd"]
    n = units_needed(size, alpha, power)
    c = Checker()
    c.close(got["effect_size"], size, "effect size")
    c.close(got["target"], target, "target")
    c.close(got["units_per_variation_exact"], n, "units per variation")
    # statsmodels' own solver, within its tolerance.
    sm = NormalIndPower().solve_power(size, alpha=alpha, power=power, ratio=1.0)
    c.check(abs(sm - n) <= 1e-4 * n, f"statsmodels' solve_power {sm} far from brentq's {n}")
    c.check(got["units_per_variation"] == math.ceil(n), f"rounded up: {got['units_per_variation']}")
    c.check(got["total_units"] == math.ceil(n) * variations, "total units")
    if "daily_units" in plan:
        c.check(got["days"] == math.ceil(math.ceil(n) * variations / plan["daily_units"]),
                f"days {got['days']}")
    c.check(got["summary"]["en"] and got["summary"]["zh"], "summary")
    c.done(minimum_figures=3)


@pytest.mark.parametrize("plan,message", [
    ({"baseline_rate": 0.95, "mde": 0.1, "relative": True}, "outside 0 to 1"),
    ({"baseline_rate": 0.1, "mde": 1e-9}, "too small to detect"),
    ({"baseline_rate": 1.5, "mde": 0.1}, "baseline_rate: must be between 0 and 1"),
    ({"baseline_mean": 0, "baseline_sd": 1, "mde": 0.1, "relative": True},
     "a relative effect needs a baseline mean other than zero"),
])
def test_impossible_plans_are_refused_without_a_number(plan: dict, message: str):
    out = subprocess.run([cohort_bin(), *plan_args(plan)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode != 0 and out.stdout == "", out.stdout
    assert message in out.stderr, out.stderr
