"""GrowthBook's own SDKs, unmodified, against `cohort serve` (issue 15, "Serving").

`@growthbook/growthbook` (npm) and `growthbook` (PyPI) each fetch the features payload from
the server themselves (`GET {apiHost}/api/features/{clientKey}`, the client key being the
source's write key) and evaluate every flag for 10,000 units, ASCII and not. Cohort's own
server-side evaluation (`POST /api/v1/flags/evaluate`) must give the same answer for each
unit and flag: the value, where it came from (source and rule), and for experiments the
variation.

The JS SDK is the reference and agrees on every unit. The Python SDK differs from it (and so
from Cohort) in one known place: a rollout rule includes a unit whose hash equals the
coverage exactly in JS (`n <= coverage`) and excludes it in Python (`n < coverage`). The test
computes those boundary identifiers itself, names them, and checks that they, and only they,
differ for Python (`visitor-657` on `promo-banner`, hash v1 0.25 against coverage 0.25, is
one of them by construction).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Optional

import pytest
import requests

from conftest import CohortServer

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"
UNITS = 10_000

# ---------------------------------------------------------------------------------------------
# GrowthBook's hash, written out here (not taken from either SDK) to find the boundary ids.


def fnv32a(s: str) -> int:
    """FNV-1a 32 over UTF-16 code units, as the JS SDK's `charCodeAt` loop reads a string."""
    h = 0x811C9DC5
    data = s.encode("utf-16-le", "surrogatepass")
    for i in range(0, len(data), 2):
        h ^= data[i] | (data[i + 1] << 8)
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def gb_hash(seed: str, value: str, version: int) -> Optional[float]:
    if version == 1:
        return (fnv32a(value + seed) % 1000) / 1000
    if version == 2:
        return (fnv32a(str(fnv32a(seed + value))) % 10000) / 10000
    return None


def js_string(value: Any) -> str:
    """JavaScript's String() for the hash attribute values used here (strings, integers)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def test_hash_matches_growthbooks_published_vectors():
    assert gb_hash("", "a", 1) == 0.22
    assert gb_hash("b", "a", 1) == 0.946
    assert gb_hash("seed", "a", 2) == 0.0505
    assert gb_hash("foo", "ab", 2) == 0.2575
    assert gb_hash("abc", "def", 99) is None
    # The boundary this test is built around.
    assert gb_hash("promo-banner", "visitor-657", 1) == 0.25


# ---------------------------------------------------------------------------------------------
# What is defined: a realistic set of flags and experiments.

METRICS = [
    {"key": "purchase", "name": "Purchase", "type": "conversion", "event": "Order Completed"},
    {"key": "revenue", "name": "Revenue", "type": "sum", "event": "Order Completed",
     "property": "revenue"},
]

EXPERIMENTS = [
    # Hash v2, three arms with unequal weights, 80 % coverage, targeted by country, in a
    # namespace shared with `checkout-button`, behind the global holdout (the default).
    {
        "key": "checkout-layout", "name": "Checkout layout",
        "variations": [
            {"key": "control", "name": "Control", "value": "classic"},
            {"key": "compact", "name": "Compact", "value": "compact"},
            {"key": "wide", "name": "Wide", "value": "wide"},
        ],
        "weights": [0.5, 0.3, 0.2], "coverage": 0.8, "hash_version": 2,
        "condition": {"country": {"$in": ["US", "CA", "DE", "CN", "FR"]}},
        "namespace": {"id": "checkout", "range": [0, 0.6]},
        "metrics": ["purchase"], "guardrails": ["revenue"],
    },
    # The other part of the namespace: never the same unit as checkout-layout.
    {
        "key": "checkout-button", "name": "Checkout button colour",
        "variations": [
            {"key": "control", "name": "Blue", "value": {"color": "blue", "size": 1}},
            {"key": "green", "name": "Green", "value": {"color": "green", "size": 1}},
        ],
        "hash_version": 2, "namespace": {"id": "checkout", "range": [0.6, 1.0]},
        "metrics": ["purchase"],
    },
    # Hash v1 split by company (string or integer ids), unequal weights, partial coverage,
    # targeted on plan and app version; out of the holdout's reach.
    {
        "key": "pricing-page", "name": "Pricing page",
        "variations": [
            {"key": "control", "value": 0},
            {"key": "ten-off", "value": 10},
            {"key": "twenty-off", "value": 20},
        ],
        "weights": [0.6, 0.25, 0.15], "coverage": 0.9, "hash_attribute": "company",
        "hash_version": 1, "seed": "pricing-2026",
        "condition": {"$and": [{"plan": {"$ne": "enterprise"}},
                               {"app_version": {"$vgte": "2.3.0"}}]},
        "holdout": False, "metrics": ["revenue"],
    },
    # Split by device, with a fallback attribute (used by the SDKs with sticky bucketing only).
    {
        "key": "onboarding-copy", "name": "Onboarding copy",
        "variations": [
            {"key": "control", "value": "Welcome!"},
            {"key": "warm", "value": "欢迎，很高兴见到你 👋"},
        ],
        "weights": [0.4, 0.6], "coverage": 0.7, "hash_attribute": "device_id",
        "fallback_attribute": "id", "hash_version": 2,
        "condition": {"$or": [{"age": {"$gte": 18}}, {"beta": True}]},
        "metrics": ["purchase"],
    },
]

FLAGS = [
    # Rollout to 25 % (hash v1, seed = flag key): visitor-657 is exactly on the boundary.
    {
        "key": "promo-banner", "value_type": "boolean", "default_value": False,
        "rules": [
            {"id": "no-promo-in-jp", "type": "force", "value": False,
             "condition": {"country": "JP"}},
            {"id": "quarter", "type": "rollout", "value": True, "coverage": 0.25},
        ],
    },
    # Staff are forced to one layout; everyone else goes through the experiment.
    {
        "key": "checkout-layout", "value_type": "string", "default_value": "classic",
        "rules": [
            {"id": "staff", "type": "force", "value": "wide",
             "condition": {"email": {"$regex": "@staff\\.example$"}}},
            {"type": "experiment", "experiment": "checkout-layout"},
        ],
    },
    {
        "key": "checkout-button", "value_type": "json",
        "default_value": {"color": "blue", "size": 1},
        "rules": [{"type": "experiment", "experiment": "checkout-button"}],
    },
    # A rollout by device id (hash v1), for adults only.
    {
        "key": "new-nav", "value_type": "boolean", "default_value": False,
        "rules": [
            {"type": "rollout", "value": True, "coverage": 0.5, "hash_attribute": "device_id",
             "condition": {"age": {"$gte": 18}}},
        ],
    },
    # Only evaluated at all when new-nav is on (a flag-level prerequisite).
    {
        "key": "onboarding-copy", "value_type": "string", "default_value": "Welcome!",
        "prerequisites": [{"flag": "new-nav", "value": True}],
        "rules": [{"type": "experiment", "experiment": "onboarding-copy"}],
    },
    {
        "key": "pricing-discount", "value_type": "number", "default_value": 0,
        "rules": [
            {"id": "vip-tag", "type": "force", "value": 30,
             "condition": {"tags": {"$elemMatch": {"$eq": "vip"}}}},
            {"type": "experiment", "experiment": "pricing-page"},
        ],
    },
    # A JSON flag whose first rule needs the promo banner (a rule-level prerequisite).
    {
        "key": "theme", "value_type": "json", "default_value": {"mode": "light", "accent": None},
        "rules": [
            {"id": "festive", "type": "force", "value": {"mode": "festive", "accent": "红"},
             "prerequisites": [{"flag": "promo-banner", "value": True}],
             "condition": {"country": {"$nin": ["DE"]}}},
            {"id": "dark-browsers", "type": "force", "value": {"mode": "dark", "accent": None},
             "condition": {"browser": {"$in": ["firefox", "safari"]}}},
        ],
    },
]

HOLDOUT = {"fraction": 0.05, "hash_attribute": "id"}


def rollout_rules() -> list[dict]:
    """Every rollout rule as the payload serves it: flag, rule id, attribute, seed, coverage."""
    out = []
    for flag in FLAGS:
        for i, rule in enumerate(flag["rules"]):
            if rule["type"] == "rollout":
                out.append({
                    "flag": flag["key"],
                    "rule_id": rule.get("id") or f"rule-{i + 1}",
                    "attribute": rule.get("hash_attribute", "id"),
                    "seed": flag["key"],  # a rollout's seed is its flag's key
                    "coverage": rule["coverage"],
                })
    return out


# ---------------------------------------------------------------------------------------------
# The units: 10,000 attribute sets, deterministic.

CHINESE = ["访客", "用户", "张伟", "王芳", "李娜", "刘洋", "陈静", "深圳市", "北京", "顾客"]
EMOJI = ["🦊", "😀", "👩‍💻", "🎉", "🇨🇳", "🧪", "𝒳", "🚀", "❤️", "🐉"]  # astral: surrogate pairs
ACCENTED = ["josé", "zoë", "françois", "müller", "ñandú", "øystein", "łukasz", "crème",
            "Ångström", "e\u0301cole"]  # the last one with a combining accent
COUNTRIES = ["US", "US", "US", "CA", "DE", "CN", "CN", "FR", "JP", "BR", "GB"]
PLANS = ["free", "free", "pro", "enterprise"]
BROWSERS = ["chrome", "chrome", "firefox", "safari", "edge"]
VERSIONS = ["1.9.9", "2.2.10", "2.3.0", "2.3.1-beta", "2.10.0", "3.0.0"]


def unit_id(i: int, rng: random.Random) -> str:
    kind = i % 10
    if kind < 6:
        return f"visitor-{i // 10 * 6 + kind}"  # visitor-0 … visitor-5999, visitor-657 among them
    if kind == 6:
        return f"{rng.choice(CHINESE)}-{i}"
    if kind == 7:
        return f"{rng.choice(EMOJI)}{i}{rng.choice(EMOJI)}"
    if kind == 8:
        return f"{rng.choice(ACCENTED)}.{i}"
    return f"{rng.choice(CHINESE)}{rng.choice(EMOJI)}{rng.choice(ACCENTED)}-{i}"


def make_units(n: int = UNITS) -> list[dict]:
    rng = random.Random(15)
    units = []
    for i in range(n):
        uid = unit_id(i, rng)
        a: dict[str, Any] = {"id": uid, "country": rng.choice(COUNTRIES),
                             "plan": rng.choice(PLANS), "browser": rng.choice(BROWSERS)}
        if rng.random() < 0.85:
            a["age"] = rng.randint(13, 80)
        if rng.random() < 0.2:
            a["beta"] = rng.random() < 0.5
        if rng.random() < 0.9:
            a["app_version"] = rng.choice(VERSIONS)
        r = rng.random()
        if r < 0.6:
            a["company"] = f"company-{rng.randint(1, 400)}"
        elif r < 0.75:
            a["company"] = rng.randint(1, 5000)  # an integer id: hashed as String() gives it
        elif r < 0.85:
            a["company"] = f"{rng.choice(CHINESE)}有限公司-{rng.randint(1, 50)}"
        if rng.random() < 0.8:  # some units have no device id (fallback_attribute territory)
            a["device_id"] = f"dev-{rng.getrandbits(40):010x}" if rng.random() < 0.7 \
                else f"设备-{rng.choice(EMOJI)}-{rng.randint(1, 10 ** 6)}"
        if rng.random() < 0.05:
            a["email"] = f"{uid}@staff.example"
        elif rng.random() < 0.5:
            a["email"] = f"{uid}@example.com"
        if rng.random() < 0.1:
            a["tags"] = rng.sample(["vip", "newsletter", "churn-risk", "beta"], 2)
        units.append(a)
    return units


def test_the_unit_set_is_realistic():
    units = make_units()
    ids = [u["id"] for u in units]
    assert len(set(ids)) == UNITS
    assert "visitor-657" in ids
    non_ascii = [i for i in ids if not i.isascii()]
    astral = [i for i in ids if any(ord(c) > 0xFFFF for c in i)]
    assert len(non_ascii) >= 3000 and len(astral) >= 1000, (len(non_ascii), len(astral))
    assert any("\u4e00" <= c <= "\u9fff" for i in ids for c in i)
    assert make_units() == units, "the units are not deterministic"


# ---------------------------------------------------------------------------------------------
# Setting up the server, and the three evaluations.


def admin(server: CohortServer, method: str, path: str, body: Any, status: int) -> dict:
    r = requests.request(method, server.base_url + path, json=body,
                         headers=server.admin_headers(), timeout=30)
    assert r.status_code == status, f"{method} {path} -> {r.status_code}: {r.text}"
    return r.json()


def define_everything(server: CohortServer) -> None:
    for m in METRICS:
        admin(server, "POST", "/api/v1/metrics", m, 201)
    for e in EXPERIMENTS:
        admin(server, "POST", "/api/v1/experiments", e, 201)
    for f in FLAGS:
        admin(server, "POST", "/api/v1/flags", f, 201)
    admin(server, "PUT", "/api/v1/holdout", HOLDOUT, 200)
    for e in EXPERIMENTS:
        started = admin(server, "POST", f"/api/v1/experiments/{e['key']}/start", {}, 200)
        assert started["definition"]["status"] == "running", started


BATCH = 2_500


def cohort_evaluate(server: CohortServer, units: list[dict]) -> list[dict]:
    """Cohort's server-side answers, one `{flag: result}` per unit, in order."""
    session = requests.Session()
    session.headers.update(server.admin_headers())
    url = server.base_url + "/api/v1/flags/evaluate"
    answers: list[dict] = []
    for start in range(0, len(units), BATCH):
        chunk = units[start:start + BATCH]
        body = {"batch": [{"attributes": a, "log_exposures": False} for a in chunk]}
        r = session.post(url, json=body, timeout=120)
        assert r.status_code == 200, f"POST /api/v1/flags/evaluate (batch) -> {r.status_code}: {r.text[:500]}"
        got = r.json()["batch"]
        assert len(got) == len(chunk), f"{len(got)} answers for {len(chunk)} units"
        answers.extend(g["flags"] for g in got)
    return answers


def js_evaluate(server: CohortServer, units: list[dict], tmp: Path) -> dict:
    units_path, out_path = tmp / "units.json", tmp / "js.json"
    units_path.write_text(json.dumps(units), encoding="utf-8")
    script = NODE_DIR / "growthbook.mjs"
    proc = subprocess.run(
        ["node", str(script), server.base_url, server.write_key, str(units_path), str(out_path)],
        cwd=NODE_DIR, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, f"growthbook.mjs failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout}"
    return json.loads(out_path.read_text(encoding="utf-8"))


def py_evaluate(server: CohortServer, units: list[dict]) -> dict:
    import growthbook
    from growthbook import GrowthBook

    gb = GrowthBook(api_host=server.base_url, client_key=server.write_key)
    gb.load_features()  # GET {api_host}/api/features/{client_key}
    features = sorted(gb.get_features())
    assert features, "the Python SDK loaded no features from the server"
    results = []
    for attributes in units:
        gb.set_attributes(dict(attributes))  # a copy: destroy() clears the dict it holds
        row = {}
        for key in features:
            r = gb.eval_feature(key)
            e = r.experimentResult
            row[key] = {
                "value": r.value,
                "source": r.source,
                "ruleId": r.ruleId or "",
                "experiment": None if e is None else {
                    "key": r.experiment.key if r.experiment else None,
                    "variationId": e.variationId,
                    "inExperiment": e.inExperiment,
                    "hashAttribute": e.hashAttribute,
                    "hashValue": e.hashValue,
                },
            }
        results.append(row)
    gb.destroy()
    version = getattr(growthbook, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version
        version = dist_version("growthbook")
    return {"sdk": "growthbook (PyPI)", "version": version, "features": features,
            "results": results}


def norm_cohort(r: dict) -> tuple:
    e = r.get("experiment")
    exp = None if e is None else (e["key"], e["variation_id"], e["in_experiment"])
    return (r["value"], r["source"], r.get("rule_id", ""), exp)


def norm_sdk(r: dict) -> tuple:
    e = r.get("experiment")
    exp = None if e is None else (e["key"], e["variationId"], e["inExperiment"])
    return (r["value"], r["source"], r["ruleId"], exp)


def show(t: tuple) -> str:
    value, source, rule, exp = t
    s = f"value={json.dumps(value, ensure_ascii=False)} source={source} rule={rule or '-'}"
    if exp:
        s += f" experiment={exp[0]} variation={exp[1]} in={exp[2]}"
    return s


def differences(units, flags, cohort_rows, sdk_rows) -> dict[int, dict[str, tuple]]:
    """{unit index: {flag: (cohort, sdk)}} for every unit and flag where they differ."""
    out: dict[int, dict[str, tuple]] = defaultdict(dict)
    for i, (c_row, s_row) in enumerate(zip(cohort_rows, sdk_rows)):
        for key in flags:
            c, s = norm_cohort(c_row[key]), norm_sdk(s_row[key])
            if c != s:
                out[i][key] = (c, s)
    return dict(out)


def describe(units, diffs: dict, sdk: str, limit: int = 8) -> str:
    lines = [f"{len(diffs)} of {len(units)} units differ between Cohort and {sdk}; the first {min(limit, len(diffs))}:"]
    for i in sorted(diffs)[:limit]:
        lines.append(f"  unit #{i} attributes={json.dumps(units[i], ensure_ascii=False)}")
        for key, (c, s) in sorted(diffs[i].items()):
            lines.append(f"    {key}:\n      Cohort: {show(c)}\n      {sdk}: {show(s)}")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def evaluated(cohort: CohortServer, tmp_path_factory) -> dict:
    define_everything(cohort)
    r = requests.get(f"{cohort.base_url}/api/features/{cohort.write_key}", timeout=10)
    assert r.status_code == 200, r.text
    payload = r.json()
    # The session's server may carry other tests' flags; these are the ones compared.
    flags = sorted(f["key"] for f in FLAGS)
    assert set(flags) <= set(payload["features"]), sorted(payload["features"])
    units = make_units()
    timings = {}
    t = time.monotonic()
    cohort_rows = cohort_evaluate(cohort, units)
    timings["cohort"] = time.monotonic() - t
    t = time.monotonic()
    js = js_evaluate(cohort, units, tmp_path_factory.mktemp("growthbook"))
    timings["js"] = time.monotonic() - t
    t = time.monotonic()
    py = py_evaluate(cohort, units)
    timings["python"] = time.monotonic() - t
    print(f"\nevaluated {len(units)} units x {len(flags)} flags: "
          + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
          + f"; {js['sdk']} {js['version']}, {py['sdk']} {py['version']}")
    return {"payload": payload, "flags": flags, "units": units, "cohort": cohort_rows,
            "js": js, "py": py}


def boundary_units(units: list[dict], cohort_rows: list[dict]) -> dict[int, list[str]]:
    """Units whose hash equals a rollout's coverage exactly, at a rollout rule that Cohort (and
    the JS SDK) reached and applied: {unit index: [rollout rule, …]}."""
    out: dict[int, list[dict]] = defaultdict(list)
    for rule in rollout_rules():
        for i, unit in enumerate(units):
            value = unit.get(rule["attribute"])
            if value in (None, "", 0) or isinstance(value, bool):
                continue
            n = gb_hash(rule["seed"], js_string(value), 1)
            if n == rule["coverage"] and cohort_rows[i][rule["flag"]].get("rule_id") == rule["rule_id"]:
                out[i].append(rule)
    return dict(out)


def name_boundary(unit: dict, rule: dict) -> str:
    how = "" if rule["attribute"] == "id" else f" by {rule['attribute']}={unit[rule['attribute']]!r}"
    return f"{rule['flag']}/{rule['rule_id']} (coverage {rule['coverage']}{how})"


# ---------------------------------------------------------------------------------------------
# The comparisons.


def test_the_sdks_loaded_cohorts_payload(evaluated):
    js, py = evaluated["js"], evaluated["py"]
    assert js["version"] == "1.8.0", js["version"]
    assert py["version"] == "4.0.0", py["version"]
    assert js["init"]["source"] == "network", js["init"]
    served = sorted(evaluated["payload"]["features"])
    assert js["features"] == served
    assert py["features"] == served
    assert len(js["results"]) == len(py["results"]) == len(evaluated["units"]) == UNITS


def test_every_rule_and_arm_is_exercised(evaluated):
    """The agreement below means something only if the units reach every rule and arm."""
    seen = defaultdict(Counter)
    for row in evaluated["cohort"]:
        for key, r in row.items():
            e = r.get("experiment")
            tag = f"{r['source']}:{r.get('rule_id') or '-'}"
            if e is not None:
                tag += f":v{e['variation_id']}"
            seen[key][tag] += 1
    missing = []
    for flag in FLAGS:
        tags = seen[flag["key"]]
        if not any(t.startswith("defaultValue") for t in tags):
            missing.append(f"{flag['key']}: default")
        for i, rule in enumerate(flag["rules"]):
            rid = rule.get("id") or f"rule-{i + 1}"
            if rule["type"] == "experiment":
                exp = next(e for e in EXPERIMENTS if e["key"] == rule["experiment"])
                for v in range(len(exp["variations"])):
                    if tags[f"experiment:{rid}:v{v}"] == 0:
                        missing.append(f"{flag['key']}: {rid} variation {v}")
            elif not any(t.startswith(f"force:{rid}") for t in tags):
                missing.append(f"{flag['key']}: {rid}")
        if flag.get("prerequisites") and not any(t.startswith("prerequisite") for t in tags):
            missing.append(f"{flag['key']}: prerequisite not met")
    assert not missing, f"never reached: {missing}\n{json.dumps(seen, indent=1)}"


def in_experiment(result: dict) -> bool:
    e = result.get("experiment")
    return result["source"] == "experiment" and e is not None and e["in_experiment"]


def test_the_global_holdout_keeps_its_units_out_of_the_experiments_that_honour_it(evaluated):
    units, rows = evaluated["units"], evaluated["cohort"]
    held = [i for i, u in enumerate(units)
            if gb_hash("cohort-global-holdout", js_string(u["id"]), 2) < HOLDOUT["fraction"]]
    assert 300 < len(held) < 700, len(held)
    honouring = [f["key"] for f in FLAGS for r in f["rules"] if r["type"] == "experiment"
                 and next(e for e in EXPERIMENTS if e["key"] == r["experiment"]).get("holdout", True)]
    leaked = [(units[i]["id"], k) for i in held for k in honouring if in_experiment(rows[i][k])]
    assert not leaked, f"held-out units in experiments: {leaked[:10]}"
    # pricing-page does not honour the holdout.
    assert any(in_experiment(rows[i]["pricing-discount"]) for i in held)


def test_a_namespace_keeps_its_experiments_apart(evaluated):
    """checkout-layout [0, 0.6) and checkout-button [0.6, 1) share the namespace "checkout":
    no unit is in both, as the SDKs evaluate the payload."""
    units, rows, js = evaluated["units"], evaluated["cohort"], evaluated["js"]["results"]
    both = [u["id"] for u, row in zip(units, rows)
            if in_experiment(row["checkout-layout"]) and in_experiment(row["checkout-button"])]
    both_js = [u["id"] for u, row in zip(units, js)
               if row["checkout-layout"]["source"] == "experiment"
               and row["checkout-button"]["source"] == "experiment"]
    rule = next(r for r in evaluated["payload"]["features"]["checkout-button"]["rules"]
                if r.get("key") == "checkout-button")
    assert not both and not both_js, (
        f"{len(both)} units are in both experiments of namespace 'checkout' by Cohort, "
        f"{len(both_js)} by the JS SDK, e.g. {both[:5]}; checkout-button's rule as served: "
        f"namespace={rule.get('namespace')} filters={json.dumps(rule.get('filters'))}")


def test_javascript_sdk_agrees_with_cohort_on_every_unit(evaluated):
    units, flags = evaluated["units"], evaluated["flags"]
    diffs = differences(units, flags, evaluated["cohort"], evaluated["js"]["results"])
    agreed = len(units) * len(flags) - sum(len(d) for d in diffs.values())
    print(f"\nJS SDK: {agreed} of {len(units) * len(flags)} evaluations agree "
          f"({len(units)} units x {len(flags)} flags)")
    assert not diffs, describe(units, diffs, "@growthbook/growthbook 1.8.0")


def test_python_sdk_agrees_except_on_the_named_rollout_boundary_ids(evaluated):
    units, flags, cohort_rows = evaluated["units"], evaluated["flags"], evaluated["cohort"]
    boundary = boundary_units(units, cohort_rows)
    named = {units[i]["id"]: [name_boundary(units[i], r) for r in rules]
             for i, rules in boundary.items()}
    print(f"\nrollout boundary ids (hash == coverage; JS and Cohort include them, Python not):\n"
          + "\n".join(f"  {uid}: {', '.join(rs)}" for uid, rs in named.items()))
    assert any(r.startswith("promo-banner/") for r in named.get("visitor-657", [])), (
        f"visitor-657 must be on promo-banner's boundary; boundary ids: {named}")

    diffs = differences(units, flags, cohort_rows, evaluated["py"]["results"])
    unexpected = {i: d for i, d in diffs.items() if i not in boundary}
    assert not unexpected, describe(units, unexpected, "growthbook 4.0.0 (PyPI)")

    # Every boundary id does differ, on its rollout flag: Cohort serves the rollout's value,
    # Python passes over the rule.
    not_differing = []
    for i, rules in boundary.items():
        for key in (r["flag"] for r in rules):
            got = diffs.get(i, {}).get(key)
            if got is None:
                not_differing.append(f"{units[i]['id']} on {key}")
                continue
            c, s = got
            assert c[1] == "force" and s[2] != c[2], describe(units, {i: diffs[i]}, "growthbook 4.0.0 (PyPI)")
    assert not not_differing, f"boundary ids that Python did not exclude: {not_differing}"
    agreed = len(units) * len(flags) - sum(len(d) for d in diffs.values())
    print(f"Python SDK: {agreed} of {len(units) * len(flags)} evaluations agree; "
          f"{sum(len(d) for d in diffs.values())} differ, all on the {len(boundary)} boundary ids")
