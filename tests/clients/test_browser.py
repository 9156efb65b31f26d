"""End-to-end in a real browser: Segment's and RudderStack's browser SDKs, unmodified from npm,
load in headless Chromium from a page on a second loopback origin and send to `cohort serve`.

`browser/run.mjs` drives the page (page, identify, track, group, alias, then one more track
while the page is left); these tests check what Cohort stored and what the browser saw.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from conftest import CohortServer, poll, poll_profile

HERE = Path(__file__).resolve().parent
BROWSER_DIR = HERE / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

# What the story stores for the user, by event name.
EXPECTED_COUNTS = {
    "$page": 1,
    "$identify": 1,
    "Product Viewed": 1,
    "$group": 1,
    "$alias": 1,
    "Left Shop": 1,
}


def require_browser() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed", pytrace=False)
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        pytest.fail("browser test deps missing: run `npm ci --prefix tests/clients/browser`",
                    pytrace=False)
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium package",
                    pytrace=False)
    return node


def client_source(srv: CohortServer, name: str, origins=None) -> str:
    """A client-side source (a website's), optionally limited to `origins`; its write key."""
    body = {"name": name, "kind": "client"}
    if origins is not None:
        body["allowed_origins"] = origins
    r = requests.post(srv.base_url + "/api/v1/sources", json=body,
                      headers=srv.admin_headers(), timeout=10)
    assert r.status_code == 201, f"POST /api/v1/sources -> {r.status_code}: {r.text}"
    return r.json()["write_key"]


def run_page(node: str, scenario: str, srv: CohortServer, key: str, user: str) -> dict:
    proc = subprocess.run(
        [node, str(BROWSER_DIR / "run.mjs"), scenario, srv.base_url, key, user],
        capture_output=True, text=True, timeout=120, cwd=BROWSER_DIR,
        env={**os.environ, "CHROMIUM": CHROMIUM},
    )
    assert proc.returncode == 0, (
        f"run.mjs {scenario} exited {proc.returncode}\n--- stdout ---\n{proc.stdout}"
        f"\n--- stderr ---\n{proc.stderr}\n--- server log ---\n{srv.log_tail(30)}"
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "scenario", ["segment", "segment-batching", "rudderstack", "rudderstack-beacon"]
)
def test_browser_sdk_sends_every_event_once(cohort: CohortServer, run_id: str, scenario: str):
    node = require_browser()
    key = client_source(cohort, f"site-{scenario}-{run_id}")
    user = f"{scenario}-shopper-{run_id}"
    seen = run_page(node, scenario, cohort, key, user)

    assert seen["consoleErrors"] == [], seen
    assert seen["failedRequests"] == [], seen
    bad = [r for r in seen["requests"] if r["status"] >= 400]
    assert bad == [], seen
    # The SDK loaded its settings from Cohort, not from its vendor.
    settings = [r for r in seen["requests"] if r["method"] == "GET"]
    assert settings, seen
    if scenario == "segment-batching":
        assert any(r["url"].endswith("/v1/b") for r in seen["requests"]), seen

    total = sum(EXPECTED_COUNTS.values())

    def complete(p: dict) -> bool:
        return (p.get("computed") or {}).get("event_count", 0) >= total

    poll_profile(cohort, "user_id", user, complete, what=f"{scenario}: all events of {user}")
    poll(cohort.stats, lambda s: s.get("inbox_lag") == 0, what="inbox_lag == 0")
    profile = cohort.profile("user_id", user)
    assert profile["computed"]["event_counts"] == EXPECTED_COUNTS, (profile, seen)
    assert profile["traits"].get("plan") == "pro", profile
    # The visit before the sign-up joined the customer.
    visitor = cohort.profile("anonymous_id", seen["anonymousId"])
    assert visitor is not None and visitor["customer_id"] == profile["customer_id"], visitor


def test_a_page_from_an_origin_the_source_does_not_allow_stores_nothing(
    cohort: CohortServer, run_id: str
):
    node = require_browser()
    key = client_source(cohort, f"site-closed-{run_id}", origins=["https://shop.example"])
    user = f"stranger-{run_id}"
    proc = subprocess.run(
        [node, str(BROWSER_DIR / "run.mjs"), "segment", cohort.base_url, key, user],
        capture_output=True, text=True, timeout=120, cwd=BROWSER_DIR,
        env={**os.environ, "CHROMIUM": CHROMIUM},
    )
    # The SDK cannot load its settings (403 origin_not_allowed), so the story never finishes.
    assert proc.returncode != 0, proc.stdout
    r = requests.get(f"{cohort.base_url}/v1/projects/{key}/settings",
                     headers={"Origin": "http://127.0.0.1:1"}, timeout=10)
    assert r.status_code == 403 and r.json()["code"] == "origin_not_allowed", r.text
    assert r.headers["access-control-allow-origin"] == "http://127.0.0.1:1"
    r = requests.post(f"{cohort.base_url}/v1/t", auth=(key, ""),
                      headers={"Origin": "http://127.0.0.1:1"},
                      json={"userId": user, "event": "Sneaky"}, timeout=10)
    assert r.status_code == 403, r.text
    poll(cohort.stats, lambda s: s.get("inbox_lag") == 0, what="inbox_lag == 0")
    assert cohort.profile("user_id", user) is None
    # The allowed origin, and clients without an Origin (servers), still send.
    r = requests.post(f"{cohort.base_url}/v1/t", auth=(key, ""),
                      headers={"Origin": "https://shop.example"},
                      json={"userId": user, "event": "Allowed"}, timeout=10)
    assert r.status_code == 200, r.text


def test_preflights_and_errors_carry_cors_headers_and_the_admin_api_does_not(
    cohort: CohortServer,
):
    origin = "http://127.0.0.1:9"
    r = requests.options(f"{cohort.base_url}/v1/t", headers={
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-retry-count",
    }, timeout=10)
    assert r.status_code == 204, r.text
    assert r.headers["access-control-allow-origin"] == origin
    allowed = r.headers["access-control-allow-headers"]
    for h in ["authorization", "content-type", "x-retry-count", "anonymousid"]:
        assert h in allowed, allowed
    assert "POST" in r.headers["access-control-allow-methods"]
    assert int(r.headers["access-control-max-age"]) > 0
    # A refused request is readable by the page, and so is Retry-After on a 429.
    r = requests.post(f"{cohort.base_url}/v1/t", headers={"Origin": origin},
                      data=b"{not json", timeout=10)
    assert r.status_code in (400, 401), r.text
    assert r.headers["access-control-allow-origin"] == origin
    assert "retry-after" in r.headers["access-control-expose-headers"].lower()
    r = requests.get(f"{cohort.base_url}/v1/projects/wk_nobody/settings",
                     headers={"Origin": origin}, timeout=10)
    assert r.status_code == 404 and r.headers["access-control-allow-origin"] == origin
    # The admin API is not open to other origins.
    r = requests.options(f"{cohort.base_url}/api/v1/sources", headers={
        "Origin": origin, "Access-Control-Request-Method": "GET"}, timeout=10)
    assert "access-control-allow-origin" not in r.headers, r.headers
    r = requests.get(f"{cohort.base_url}/api/v1/sources",
                     headers={**cohort.admin_headers(), "Origin": origin}, timeout=10)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_a_retried_browser_event_is_stored_once(cohort: CohortServer, run_id: str):
    """analytics-next retries a failed send with the same messageId and `X-Retry-Count`."""
    key = client_source(cohort, f"site-retry-{run_id}")
    user = f"retrier-{run_id}"
    body = {"userId": user, "event": "Order Completed", "messageId": f"ajs-next-{run_id}",
            "properties": {"revenue": 10}}
    answers = []
    for attempt in range(3):
        headers = {"Origin": "http://127.0.0.1:9", "Content-Type": "text/plain"}
        if attempt:
            headers["X-Retry-Count"] = str(attempt)
        r = requests.post(f"{cohort.base_url}/v1/t", auth=(key, ""), headers=headers,
                          data=json.dumps(body), timeout=10)
        assert r.status_code == 200, r.text
        answers.append(r.json())
    assert [a["accepted"] for a in answers] == [1, 0, 0], answers
    assert [a["duplicates"] for a in answers] == [0, 1, 1], answers
    poll_profile(cohort, "user_id", user)
    poll(cohort.stats, lambda s: s.get("inbox_lag") == 0, what="inbox_lag == 0")
    profile = cohort.profile("user_id", user)
    assert profile["computed"]["orders"] == 1, profile
