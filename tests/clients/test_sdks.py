"""End-to-end: real Segment-compatible SDKs send to `cohort serve`, and the
profile + timeline APIs must show every event.

Each client sends the same story for its own, run-unique user:
  1. track "Signup Started"       (anonymousId only)
  2. identify userId+anonymousId  (traits incl. email)
  3. track "Product Viewed"
  4. track "Order Completed"      revenue 42.5
  5. track "Order Completed"      revenue 17.5
  6. page "Home"
  7. screen "Dashboard"
  8. group
  9. alias previousId -> userId
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest

from conftest import CohortServer, poll, poll_profile

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"

EXPECTED_COUNTS = {
    "Signup Started": 1,
    "Product Viewed": 1,
    "Order Completed": 2,
    "$identify": 1,
    "$page": 1,
    "$screen": 1,
    "$group": 1,
    "$alias": 1,
}
EXPECTED_TOTAL = sum(EXPECTED_COUNTS.values())
EXPECTED_TYPES = Counter(
    {"track": 4, "identify": 1, "page": 1, "screen": 1, "group": 1, "alias": 1}
)
TRAITS = {"name": "Ada Lovelace", "plan": "pro", "age": 36}


def story_ids(prefix: str, run_id: str) -> dict:
    return {
        "user_id": f"{prefix}-user-{run_id}",
        "anonymous_id": f"{prefix}-anon-{run_id}",
        "email": f"{prefix}.{run_id}@example.com",
        "previous_id": f"{prefix}-legacy-{run_id}",
        "group_id": f"{prefix}-acme-{run_id}",
        "order1": f"{prefix}-o1-{run_id}",
        "order2": f"{prefix}-o2-{run_id}",
    }


def send_story_python(client, ids: dict) -> list[str]:
    """Send the story with a segment/rudder python Client; return messageIds."""
    uid = ids["user_id"]
    results = [
        client.track(anonymous_id=ids["anonymous_id"], event="Signup Started",
                     properties={"plan": "pro"}),
        client.identify(user_id=uid, anonymous_id=ids["anonymous_id"],
                        traits={"email": ids["email"], **TRAITS}),
        client.track(user_id=uid, event="Product Viewed",
                     properties={"product_id": "p-1", "price": 10}),
        client.track(user_id=uid, event="Order Completed",
                     properties={"order_id": ids["order1"], "revenue": 42.5, "currency": "USD"}),
        client.track(user_id=uid, event="Order Completed",
                     properties={"order_id": ids["order2"], "revenue": 17.5, "currency": "USD"}),
        client.page(user_id=uid, name="Home",
                    properties={"url": "https://example.com/", "path": "/"}),
        client.screen(user_id=uid, name="Dashboard", properties={"tab": "overview"}),
        client.group(user_id=uid, group_id=ids["group_id"], traits={"name": "Acme Inc"}),
        client.alias(previous_id=ids["previous_id"], user_id=uid),
    ]
    ids_out = []
    for ok, msg in results:
        assert ok, f"SDK refused to enqueue {msg}"
        ids_out.append(msg["messageId"])
    return ids_out


def verify_story(srv: CohortServer, ids: dict, message_ids: list[str]) -> None:
    uid = ids["user_id"]
    assert len(set(message_ids)) == EXPECTED_TOTAL, message_ids

    # Wait for asynchronous processing to reach the expected state.
    def done(p: dict) -> bool:
        c = p.get("computed") or {}
        values = {i.get("value") for i in p.get("identities", [])}
        return (
            c.get("event_count", 0) >= EXPECTED_TOTAL
            and ids["previous_id"] in values
            and ids["anonymous_id"] in values
        )

    try:
        poll_profile(srv, "user_id", uid, done, what=f"profile of {uid} to contain all events")
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- server log (tail) ---\n{srv.log_tail(40)}") from None

    # Then let the processor drain completely so over-counting would show up too.
    poll(srv.stats, lambda s: s.get("inbox_lag") == 0, what="inbox_lag == 0")
    prof = srv.profile("user_id", uid)
    assert prof is not None
    cid = prof["customer_id"]
    comp = prof["computed"]

    # --- counts ---
    assert comp["event_counts"] == EXPECTED_COUNTS, json.dumps(prof, indent=2)
    assert comp["event_count"] == EXPECTED_TOTAL, json.dumps(prof, indent=2)

    # --- orders / revenue ---
    assert comp["orders"] == 2, comp
    assert comp["total_revenue"] == pytest.approx(60.0), comp
    assert comp["revenue_30d"] == pytest.approx(60.0), comp
    assert comp["orders_30d"] == 2, comp
    assert comp["average_order_value"] == pytest.approx(30.0), comp
    assert comp["last_order_at"], comp
    assert comp["first_seen"] and comp["last_seen"], comp

    # --- traits ---
    traits = prof["traits"]
    if not traits:
        # Give a late trait write a moment before failing.
        prof = poll_profile(srv, "user_id", uid, lambda p: bool(p.get("traits")), timeout=3,
                            what=f"traits of {uid}: identify sent them in `traits` "
                            "(rudder-sdk-python: only in `context.traits`)")
        traits = prof["traits"]
    assert traits.get("email") == ids["email"], traits
    for k, v in TRAITS.items():
        assert traits.get(k) == v, f"trait {k}: {traits}"

    # --- identities: all lead to the same customer ---
    idents = {(i["kind"], i["value"]) for i in prof["identities"]}
    assert ("user_id", uid) in idents, idents
    assert ("anonymous_id", ids["anonymous_id"]) in idents, idents
    assert ("email", ids["email"]) in idents, idents
    prev_kinds = [k for (k, v) in idents if v == ids["previous_id"]]
    assert prev_kinds, f"aliased previousId {ids['previous_id']} not among identities {idents}"
    lookups = [("anonymous_id", ids["anonymous_id"]), ("email", ids["email"])]
    lookups += [(k, ids["previous_id"]) for k in prev_kinds]
    for kind, value in lookups:
        other = srv.profile(kind, value)
        assert other is not None, f"GET /api/v1/profiles/{kind}/{value} -> 404"
        assert other["customer_id"] == cid, (
            f"{kind}/{value} resolves to customer {other['customer_id']}, expected {cid}"
        )

    # --- timeline: every message exactly once, paged with a small limit ---
    events = srv.timeline("user_id", uid, limit=4)
    got = [e["message_id"] for e in events]
    dups = [m for m, n in Counter(got).items() if n > 1]
    assert not dups, f"duplicate message_ids in timeline: {dups}"
    assert set(got) == set(message_ids), (
        f"timeline message_ids differ: missing={set(message_ids) - set(got)} "
        f"extra={set(got) - set(message_ids)}"
    )
    assert Counter(e["type"] for e in events) == EXPECTED_TYPES, [e["type"] for e in events]
    track_names = Counter(e["name"] for e in events if e["type"] == "track")
    assert track_names == Counter(
        {"Signup Started": 1, "Product Viewed": 1, "Order Completed": 2}
    ), track_names
    for e in events:
        assert isinstance(e["message"], dict) and e["message"].get("messageId") == e["message_id"], e
    seqs = [e["seq"] for e in events]
    assert len(set(seqs)) == len(seqs), f"duplicate seqs: {seqs}"

    # A single page with a large limit gives the same set.
    r = srv.get(f"/api/v1/profiles/user_id/{uid}/events", params={"limit": 100})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["next_cursor"] is None, body["next_cursor"]
    assert {e["message_id"] for e in body["events"]} == set(message_ids)


class ErrorSink:
    def __init__(self):
        self.errors = []
        self.lock = threading.Lock()

    def __call__(self, err, batch):
        with self.lock:
            self.errors.append((repr(err), len(batch)))


def test_segment_python_sdk(cohort: CohortServer, run_id: str):
    from segment.analytics.client import Client

    sink = ErrorSink()
    client = Client(
        write_key=cohort.write_key,
        host=cohort.base_url,  # posts to {host}/v1/batch, writeKey in body + Basic auth
        on_error=sink,
        gzip=False,
        max_retries=3,
        upload_interval=0.1,
        timeout=10,
        max_total_backoff_duration=30,
    )
    ids = story_ids("segpy", run_id)
    message_ids = send_story_python(client, ids)
    client.flush()
    client.shutdown()
    assert not sink.errors, f"segment SDK reported errors: {sink.errors}"
    verify_story(cohort, ids, message_ids)


def test_segment_python_sdk_gzip(cohort: CohortServer, run_id: str):
    from segment.analytics.client import Client

    sink = ErrorSink()
    client = Client(
        write_key=cohort.write_key,
        host=cohort.base_url,
        on_error=sink,
        gzip=True,
        max_retries=3,
        upload_size=3,  # several requests
        upload_interval=0.05,
        timeout=10,
        max_total_backoff_duration=30,
    )
    ids = story_ids("segpygz", run_id)
    message_ids = send_story_python(client, ids)
    client.flush()
    client.shutdown()
    assert not sink.errors, f"segment SDK (gzip) reported errors: {sink.errors}"
    verify_story(cohort, ids, message_ids)


def test_rudder_python_sdk(cohort: CohortServer, run_id: str):
    from rudderstack.analytics.client import Client

    sink = ErrorSink()
    client = Client(
        write_key=cohort.write_key,
        host=cohort.base_url,  # posts to {host}/v1/batch with Basic auth
        on_error=sink,
        gzip=True,  # the default, set explicitly: body is gzip-encoded
        max_retries=3,
        upload_interval=0.1,
        timeout=10,
    )
    ids = story_ids("rudpy", run_id)
    # Note: rudder's identify() puts traits only under context.traits.
    message_ids = send_story_python(client, ids)
    client.flush()
    client.shutdown()
    assert not sink.errors, f"rudder SDK reported errors: {sink.errors}"
    verify_story(cohort, ids, message_ids)


def test_node_sdk(cohort: CohortServer, run_id: str):
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed", pytrace=False)
    if not (NODE_DIR / "node_modules" / "@segment" / "analytics-node").is_dir():
        pytest.fail("node deps missing: run `npm ci --prefix tests/clients/node`", pytrace=False)
    env = dict(os.environ)
    env.update(COHORT_HOST=cohort.base_url, WRITE_KEY=cohort.write_key, RUN_ID=run_id)
    proc = subprocess.run(
        [node, str(NODE_DIR / "send.mjs")],
        cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, (
        f"send.mjs exited {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ids"] == story_ids("node", run_id), result["ids"]
    verify_story(cohort, result["ids"], result["message_ids"])
