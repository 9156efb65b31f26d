"""Raw Segment HTTP Tracking API compatibility (auth variants, short paths,
gzip, dedup, error shape), checked through the profile API."""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from datetime import datetime, timezone

import pytest
import requests

from conftest import CohortServer, poll, poll_profile


def track(uid: str, name: str = "Auth Tested", **extra) -> dict:
    return {
        "userId": uid,
        "event": name,
        "properties": {"k": "v"},
        "messageId": f"m-{uuid.uuid4()}",
        "timestamp": datetime.now(timezone.utc).isoformat(),
        **extra,
    }


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


AUTH_STYLES = ["basic", "bearer", "x-write-key", "query", "body"]


@pytest.mark.parametrize("style", AUTH_STYLES)
def test_auth_styles_accepted(cohort: CohortServer, run_id: str, style: str):
    uid = f"auth-{style}-{run_id}"
    body = track(uid)
    headers, params = {}, {}
    if style == "basic":
        headers["Authorization"] = basic(cohort.write_key)
    elif style == "bearer":
        headers["Authorization"] = f"Bearer {cohort.write_key}"
    elif style == "x-write-key":
        headers["X-Write-Key"] = cohort.write_key
    elif style == "query":
        params["writeKey"] = cohort.write_key
    else:
        body["writeKey"] = cohort.write_key
    r = requests.post(cohort.base_url + "/v1/track", json=body, headers=headers,
                      params=params, timeout=10)
    assert r.status_code == 200, f"{style}: {r.status_code} {r.text}"
    assert r.json() == {"success": True} or r.json().get("success") is True, r.text
    prof = poll_profile(cohort, "user_id", uid,
                        lambda p: p["computed"]["event_count"] >= 1)
    assert prof["computed"]["event_counts"] == {"Auth Tested": 1}, prof["computed"]


@pytest.mark.parametrize("path,msg_type,counted", [
    ("/v1/t", "track", "Short Track"),
    ("/v1/i", "identify", "$identify"),
    ("/v1/p", "page", "$page"),
    ("/v1/s", "screen", "$screen"),
    ("/v1/g", "group", "$group"),
])
def test_short_paths(cohort: CohortServer, run_id: str, path: str, msg_type: str, counted: str):
    uid = f"short-{msg_type}-{run_id}"
    body = {"userId": uid, "messageId": f"m-{uuid.uuid4()}"}
    if msg_type == "track":
        body["event"] = "Short Track"
    if msg_type == "group":
        body["groupId"] = f"g-{run_id}"
    if msg_type in ("page", "screen"):
        body["name"] = "Somewhere"
    r = requests.post(cohort.base_url + path, json=body,
                      headers={"Authorization": basic(cohort.write_key)}, timeout=10)
    assert r.status_code == 200, f"{path}: {r.status_code} {r.text}"
    prof = poll_profile(cohort, "user_id", uid, lambda p: p["computed"]["event_count"] >= 1)
    assert prof["computed"]["event_counts"] == {counted: 1}, prof["computed"]


def test_gzip_batch_and_dedup(cohort: CohortServer, run_id: str):
    uid = f"gz-{run_id}"
    events = [dict(track(uid, "Gzip Event"), type="track") for _ in range(5)]
    payload = gzip.compress(json.dumps({"batch": events}).encode())
    headers = {"Authorization": basic(cohort.write_key), "Content-Encoding": "gzip",
               "Content-Type": "application/json"}
    for _ in range(3):  # the same batch three times: stored once
        r = requests.post(cohort.base_url + "/v1/batch", data=payload, headers=headers, timeout=10)
        assert r.status_code == 200, f"{r.status_code} {r.text}"
    # and once more via /v1/b, uncompressed
    r = requests.post(cohort.base_url + "/v1/b", json={"batch": events},
                      headers={"Authorization": basic(cohort.write_key)}, timeout=10)
    assert r.status_code == 200, f"{r.status_code} {r.text}"
    poll(cohort.stats, lambda s: s.get("inbox_lag") == 0, what="inbox_lag == 0")
    prof = poll_profile(cohort, "user_id", uid, lambda p: p["computed"]["event_count"] >= 5)
    assert prof["computed"]["event_counts"] == {"Gzip Event": 5}, prof["computed"]
    ids = [e["message_id"] for e in cohort.timeline("user_id", uid, limit=2)]
    assert sorted(ids) == sorted(e["messageId"] for e in events)


@pytest.mark.parametrize("auth", [None, "wk_definitely_not_a_key"])
def test_bad_write_key_rejected_with_json_error(cohort: CohortServer, run_id: str, auth):
    headers = {"Authorization": basic(auth)} if auth else {}
    r = requests.post(cohort.base_url + "/v1/track", json=track(f"nokey-{run_id}"),
                      headers=headers, timeout=10)
    assert r.status_code in (400, 401, 403), f"{r.status_code} {r.text}"
    body = r.json()
    assert isinstance(body.get("code"), str) and isinstance(body.get("message"), str), body


def test_unknown_profile_is_404_json(cohort: CohortServer, run_id: str):
    r = cohort.get(f"/api/v1/profiles/user_id/nobody-{run_id}")
    assert r.status_code == 404, r.text
    assert r.json().get("code") == "not_found", r.text


def test_admin_api_requires_admin_key(cohort: CohortServer):
    r = requests.get(cohort.base_url + "/api/v1/stats", timeout=10)
    assert r.status_code in (401, 403), f"{r.status_code} {r.text}"
    r = requests.get(cohort.base_url + "/api/v1/stats",
                     headers={"Authorization": f"Bearer {cohort.write_key}"}, timeout=10)
    assert r.status_code in (401, 403), f"write key accepted as admin key: {r.status_code} {r.text}"


def test_cli_created_source_works_while_server_runs(cohort: CohortServer, run_id: str):
    """`cohort admin source create` on the live data dir yields a usable write key."""
    import subprocess

    out = subprocess.run(
        [cohort.bin, "admin", "--data", cohort.data_dir, "source", "create",
         f"cli-{run_id}", "--json"],
        capture_output=True, text=True, timeout=30, env=cohort.env(),
    )
    assert out.returncode == 0, f"exit {out.returncode}\nstdout: {out.stdout}\nstderr: {out.stderr}"
    src = json.loads(out.stdout)
    assert src["name"] == f"cli-{run_id}" and src["write_key"].startswith("wk_"), src
    uid = f"cli-{run_id}"
    r = requests.post(cohort.base_url + "/v1/track", json=track(uid, "Via CLI Key"),
                      headers={"Authorization": basic(src["write_key"])}, timeout=10)
    assert r.status_code == 200, f"{r.status_code} {r.text}"
    prof = poll_profile(cohort, "user_id", uid, lambda p: p["computed"]["event_count"] >= 1)
    assert prof["computed"]["event_counts"] == {"Via CLI Key": 1}
