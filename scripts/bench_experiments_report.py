"""`cohort bench experiments`' report peer: DuckDB computing an experiment's per-variation sums
from the lake's Parquet files, then gbstats 0.8.0 computing the effects from those sums.

It is what a team without Cohort would run over the same lake: its own SQL (written here from
the rules, not copied from Cohort's) for each customer's first exposure, the customers exposed
to more than one variation (counted and left out), each metric's per-unit value after exposure
(within its window, capped), and per variation the units, sums, sums of squares and the cross
products a ratio needs; then gbstats' two-sided t-test (relative lift) for every metric and its
sample-ratio check.

`cohort bench experiments` runs it as `python -c <this file>` with a JSON spec as the first
line of stdin (by hand: `python scripts/bench_experiments_report.py < spec.json`):
{"events": "<data>/lake/events/*/*.parquet", "experiment", "start", "end" (RFC 3339, UTC),
 "values": [{"key", "event", "aggregate": "any"|"count"|"sum", "property", "window_seconds",
 "cap"}], "products": [[a, b]], "variations": [keys], "weights": [...], "metrics": [{"key",
 "kind": "proportion"|"mean"|"ratio", "value" | "numerator", "denominator"}], "alpha",
 "repeat", "driven"}.
Without "driven" it makes "repeat" runs. With it, it answers {"ready": true}, then makes one run
for each line "run" it reads and answers each with that run's times, so that the caller can
alternate its own runs with these. Every run is timed inside this process after DuckDB is
connected and the view created: the SQL (time.perf_counter) and gbstats, and the process's CPU
over both (time.process_time, every thread). The last line of output is one line of JSON:
versions, "runs": [{"sql", "stats", "cpu"}], the sums of the last run by variation,
"multiple_exposures", the effects and the sample-ratio p-value.
"""

import importlib.metadata
import json
import sys
import time
import warnings

spec = json.loads(sys.stdin.readline())
try:
    import duckdb
    import numpy as np
    from gbstats.frequentist.tests import FrequentistConfig, TwoSidedTTest
    from gbstats.models.statistics import (
        ProportionStatistic,
        RatioStatistic,
        SampleMeanStatistic,
    )
    from gbstats.utils import check_srm
except ImportError as e:
    print(json.dumps({"missing": str(e)}))
    sys.exit(0)


def lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def ts(text: str) -> str:
    return f"TIMESTAMPTZ {lit(text)}"


values = spec["values"]
events = sorted({v["event"] for v in values})
properties = sorted({v["property"] for v in values if v["aggregate"] == "sum"})
prop_column = {p: f"p{i}" for i, p in enumerate(properties)}


def unit_value(v: dict) -> str:
    hit = f"o.event = {lit(v['event'])}"
    if v.get("window_seconds") is not None:
        hit += f" AND o.ts < u.exposed_at + to_seconds({int(v['window_seconds'])})"
    if v["aggregate"] == "any":
        expr = f"COALESCE(max(CASE WHEN {hit} THEN 1.0 END), 0.0)"
    elif v["aggregate"] == "count":
        expr = f"CAST(count(CASE WHEN {hit} THEN 1 END) AS DOUBLE)"
    else:
        column = prop_column[v["property"]]
        expr = f"COALESCE(sum(CASE WHEN {hit} THEN COALESCE(o.{column}, 0.0) END), 0.0)"
    if v.get("cap") is not None:
        expr = f"least({expr}, {float(v['cap'])!r})"
    return expr


exposures = f"""
    SELECT customer_id, "timestamp" AS ts,
           json_extract_string(properties, '$.variation_id') AS variation
    FROM events
    WHERE event = 'Experiment Viewed'
      AND json_extract_string(properties, '$.experiment_id') = {lit(spec['experiment'])}
      AND date >= CAST({ts(spec['start'])} AS DATE) AND date <= CAST({ts(spec['end'])} AS DATE)
      AND "timestamp" >= {ts(spec['start'])} AND "timestamp" < {ts(spec['end'])}
      AND customer_id IS NOT NULL"""
extracted = "".join(
    f", TRY_CAST(json_extract_string(properties, {lit('$.' + p)}) AS DOUBLE) AS {c}"
    for p, c in prop_column.items()
)
outcomes = f"""
    SELECT customer_id, event, "timestamp" AS ts{extracted}
    FROM events
    WHERE event IN ({', '.join(lit(e) for e in events)})
      AND date >= CAST({ts(spec['start'])} AS DATE) AND date <= CAST({ts(spec['end'])} AS DATE)
      AND "timestamp" < {ts(spec['end'])} AND customer_id IS NOT NULL"""
per_unit = ", ".join(f"{unit_value(v)} AS v{i}" for i, v in enumerate(values))
totals = ", ".join(
    [f"sum(v{i}) AS s{i}, sum(v{i} * v{i}) AS q{i}" for i in range(len(values))]
    + [f"sum(v{a} * v{b}) AS c{j}" for j, (a, b) in enumerate(spec["products"])]
)
SUMS_SQL = f"""
WITH exposures AS ({exposures}),
firsts AS (
    SELECT customer_id, min(ts) AS exposed_at, min(variation) AS variation,
           count(DISTINCT variation) AS arms
    FROM exposures GROUP BY customer_id),
units AS (SELECT customer_id, exposed_at, variation FROM firsts WHERE arms = 1),
outcomes AS ({outcomes}),
per_unit AS (
    SELECT u.customer_id, u.variation, {per_unit}
    FROM units u LEFT JOIN outcomes o ON o.customer_id = u.customer_id AND o.ts >= u.exposed_at
    GROUP BY u.customer_id, u.variation)
SELECT variation, count(*) AS units, {totals}
FROM per_unit GROUP BY variation ORDER BY variation"""
MULTIPLE_SQL = f"""
SELECT count(*) FROM (
    SELECT customer_id FROM ({exposures}) GROUP BY customer_id
    HAVING count(DISTINCT variation) > 1)"""


def sums_of(rows: list) -> dict:
    out = {}
    for row in rows:
        variation, units, rest = row[0], row[1], row[2:]
        k = len(values)
        out[variation] = {
            "units": int(units),
            "values": [{"sum": float(rest[2 * i] or 0.0), "sum_squares": float(rest[2 * i + 1] or 0.0)}
                       for i in range(k)],
            "products": [float(x or 0.0) for x in rest[2 * k:]],
        }
    return out


def statistic(metric: dict, s: dict):
    n = s["units"]
    if metric["kind"] == "ratio":
        a, b = s["values"][metric["numerator"]], s["values"][metric["denominator"]]
        j = spec["products"].index([metric["numerator"], metric["denominator"]])
        return RatioStatistic(
            n=n,
            m_statistic=SampleMeanStatistic(n=n, sum=a["sum"], sum_squares=a["sum_squares"]),
            d_statistic=SampleMeanStatistic(n=n, sum=b["sum"], sum_squares=b["sum_squares"]),
            m_d_sum_of_products=s["products"][j],
        )
    x = s["values"][metric["value"]]
    if metric["kind"] == "proportion":
        return ProportionStatistic(n=n, sum=x["sum"])
    return SampleMeanStatistic(n=n, sum=x["sum"], sum_squares=x["sum_squares"])


def effects_of(sums: dict) -> tuple:
    empty = {"units": 0, "values": [{"sum": 0.0, "sum_squares": 0.0}] * len(values),
             "products": [0.0] * len(spec["products"])}
    arms = [sums.get(k, empty) for k in spec["variations"]]
    config = FrequentistConfig(difference_type="relative", alpha=spec["alpha"])
    effects = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            for metric in spec["metrics"]:
                control = statistic(metric, arms[0])
                per_variation = {}
                for key, arm in zip(spec["variations"][1:], arms[1:]):
                    r = TwoSidedTTest(control, statistic(metric, arm), config).compute_result()
                    per_variation[key] = {
                        "estimate": r.expected, "ci": list(r.ci), "p_value": r.p_value,
                        "error": r.error_message,
                    }
                effects[metric["key"]] = per_variation
            srm = check_srm([a["units"] for a in arms], spec["weights"])
    return effects, srm


con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
con.execute("SET enable_progress_bar = false")
con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet({lit(spec['events'])}, hive_partitioning = true)")
out = {
    "duckdb": duckdb.__version__,
    "gbstats": importlib.metadata.version("gbstats"),
    "threads": con.execute("SELECT current_setting('threads')").fetchone()[0],
    "runs": [],
}
sums, multiple, effects, srm = {}, 0, {}, None


def one_run(r: int) -> dict:
    global sums, multiple, effects, srm
    cpu0, t0 = time.process_time(), time.perf_counter()
    rows = con.execute(SUMS_SQL).fetchall()
    multiple = con.execute(MULTIPLE_SQL).fetchone()[0]
    sums = sums_of(rows)
    t1 = time.perf_counter()
    effects, srm = effects_of(sums)
    t2 = time.perf_counter()
    run = {"sql": t1 - t0, "stats": t2 - t1, "cpu": time.process_time() - cpu0}
    out["runs"].append(run)
    print(f"  DuckDB + gbstats, run {r}: {t1 - t0:.2f} s + {t2 - t1:.4f} s "
          f"(CPU {run['cpu']:.2f} s)", file=sys.stderr, flush=True)
    return run


if spec.get("driven"):
    # Driven run by run, so that its runs alternate with Cohort's: "ready" once, then one
    # line of JSON per "run" line read.
    print(json.dumps({"ready": True}), flush=True)
    for r, line in enumerate(sys.stdin, start=1):
        if line.strip() != "run":
            break
        print(json.dumps(one_run(r)), flush=True)
else:
    for r in range(1, spec["repeat"] + 1):
        one_run(r)
out["sums"] = sums
out["multiple_exposures"] = int(multiple)
out["effects"] = effects
out["srm_p_value"] = srm


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


out["peak_rss_mb"] = peak_rss_mb()
print(json.dumps(out))
