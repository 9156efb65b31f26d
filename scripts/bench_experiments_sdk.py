"""`cohort bench experiments`' Python peer: GrowthBook's own Python SDK (growthbook on PyPI)
assigning the same units to the same experiment as Cohort, on one thread.

`cohort bench experiments` runs it as `python -c <this file>` with a JSON spec on stdin; by hand:

    echo '{"payload": {...}, "flag": "checkout-redesign", "ids": 100000, "prefix": "u",
           "repeat": 3}' | python scripts/bench_experiments_sdk.py

The units are "<prefix>1" … "<prefix><ids>". Each mode runs `repeat` times, timed inside this
process (time.perf_counter, time.process_time) after the SDK is imported and the IDs built:
- eval_feature: one GrowthBook instance, set_attributes({"id": …}), then eval_feature(flag);
- run: the same instance's run(Experiment(...)) on the experiment of the flag's rule;
- floor: the SDK's own gbhash and chooseVariation over precomputed bucket ranges.
Output (stdout, one line of JSON): {"sdk", "version", "python", "modes": {mode: {"wall": [...],
"cpu": [...], "variations": "0110-…"}}}, one character per unit ('-' for not in the experiment),
from each mode's last run.
"""

import importlib.metadata
import json
import platform
import sys
import time

from growthbook import Experiment, GrowthBook
from growthbook.core import chooseVariation, gbhash, getBucketRanges

spec = json.load(sys.stdin)
payload = spec["payload"]
flag = spec["flag"]
rule = payload["features"][flag]["rules"][0]
ids = [f"{spec['prefix']}{i + 1}" for i in range(spec["ids"])]


def mark(result) -> str:
    if result is None or not result.inExperiment:
        return "-"
    return str(result.variationId)


def eval_feature(out: list) -> None:
    gb = GrowthBook(features=payload["features"], saved_groups=payload.get("savedGroups") or {})
    for i, unit in enumerate(ids):
        gb.set_attributes({"id": unit})
        out[i] = mark(gb.eval_feature(flag).experimentResult)
    gb.destroy()


def run(out: list) -> None:
    gb = GrowthBook(features=payload["features"], saved_groups=payload.get("savedGroups") or {})
    experiment = Experiment(
        key=rule["key"],
        variations=rule["variations"],
        weights=rule["weights"],
        coverage=rule["coverage"],
        hashAttribute=rule["hashAttribute"],
        hashVersion=rule["hashVersion"],
        seed=rule["seed"],
        meta=rule["meta"],
        name=rule.get("name"),
        phase=rule.get("phase"),
    )
    for i, unit in enumerate(ids):
        gb.set_attributes({"id": unit})
        out[i] = mark(gb.run(experiment))
    gb.destroy()


def floor(out: list) -> None:
    ranges = getBucketRanges(len(rule["variations"]), rule["coverage"], rule["weights"])
    seed, version = rule["seed"], rule["hashVersion"]
    for i, unit in enumerate(ids):
        n = gbhash(seed, unit, version)
        v = -1 if n is None else chooseVariation(n, ranges)
        out[i] = "-" if v < 0 else str(v)


result = {
    "sdk": "growthbook",
    "version": importlib.metadata.version("growthbook"),
    "python": platform.python_version(),
    "modes": {},
}
for name, body in [("eval_feature", eval_feature), ("run", run), ("floor", floor)]:
    if spec.get("modes") and name not in spec["modes"]:
        continue
    mode = {"wall": [], "cpu": [], "variations": ""}
    for _ in range(spec["repeat"]):
        out = [""] * len(ids)
        cpu0, t0 = time.process_time(), time.perf_counter()
        body(out)
        mode["wall"].append(time.perf_counter() - t0)
        mode["cpu"].append(time.process_time() - cpu0)
        mode["variations"] = "".join(out)
    result["modes"][name] = mode
    walls = ", ".join(f"{w:.2f}" for w in mode["wall"])
    print(f"  Python SDK {name}: {walls} s", file=sys.stderr)
print(json.dumps(result))
