"""Crash safety: kill -9 the server repeatedly while clients send batches.

Invariants checked at the end, per user:
  * every messageId whose request got 200 is in the timeline (no ack'd loss),
  * no messageId appears twice in the timeline (dedup across resends/restarts),
  * nothing appears that was never sent,
  * computed.event_count == number of distinct stored messageIds, hence
    acknowledged <= stored (a request may commit and die before its 200).
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timezone

import pytest
import requests

from conftest import CohortServer, new_server, poll

SENDERS = 4
KILL_CYCLES = 15
KILL_PHASE_MAX_S = 45.0     # stop killing after this, whatever the cycle count
MAX_BATCHES_PER_SENDER = 150
DRAIN_TIMEOUT_S = 30.0
USERS = 5
EVENT_NAMES = ["Product Viewed", "Product Added", "Checkout Started", "Order Completed"]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


class Ledger:
    """What the senders know: every messageId sent, and which were acknowledged."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent: dict[str, str] = {}           # messageId -> userId
        self.acked: dict[str, set] = defaultdict(set)  # userId -> messageIds
        self.requests = Counter()                 # outcome -> count
        self.unexpected: list[str] = []           # 4xx etc.: test failure

    def note(self, outcome: str):
        with self.lock:
            self.requests[outcome] += 1


def make_batch(rng: random.Random, users: list[str], sender: int, n: int, run: str):
    events = []
    for i in range(rng.randint(20, 50)):
        uid = rng.choice(users)
        mid = f"crash-{run}-{sender}-{n}-{i}-{uuid.uuid4().hex[:8]}"
        kind = rng.random()
        if kind < 0.1:
            ev = {"type": "identify", "userId": uid,
                  "traits": {"email": f"{uid}@example.com", "seen_batch": n}}
        elif kind < 0.2:
            ev = {"type": "page", "userId": uid, "name": "Home", "properties": {"path": "/"}}
        else:
            name = rng.choice(EVENT_NAMES)
            props = {"i": i}
            if name == "Order Completed":
                props.update(order_id=mid, revenue=round(rng.uniform(1, 100), 2))
            ev = {"type": "track", "userId": uid, "event": name, "properties": props}
        ev.update(messageId=mid, timestamp=now_iso())
        events.append(ev)
    return events


def sender(idx: int, srv: CohortServer, users: list[str], run: str, ledger: Ledger,
           stop: threading.Event, seed: int):
    rng = random.Random(seed)
    session = requests.Session()
    auth = (srv.write_key, "")
    url = srv.base_url + "/v1/batch"

    def post(batch) -> bool:
        try:
            r = session.post(url, json={"batch": batch, "sentAt": now_iso()}, auth=auth, timeout=5)
        except requests.RequestException:
            ledger.note("conn_error")
            session.close()
            return False
        if r.status_code == 200:
            ledger.note("200")
            return True
        if r.status_code >= 500 or r.status_code == 429:
            ledger.note(str(r.status_code))
            return False
        ledger.note(str(r.status_code))
        with ledger.lock:
            ledger.unexpected.append(f"POST /v1/batch -> {r.status_code}: {r.text[:300]}")
        return False

    for n in range(MAX_BATCHES_PER_SENDER):
        if stop.is_set():
            break
        batch = make_batch(rng, users, idx, n, run)
        with ledger.lock:
            for ev in batch:
                ledger.sent[ev["messageId"]] = ev["userId"]
        # Usually retry the same batch until acknowledged (resends exercise dedup);
        # sometimes give up early, leaving events that may be stored unacknowledged.
        max_attempts = rng.choice([1, 2, 50, 50, 50])
        acked = False
        for attempt in range(max_attempts):
            if post(batch):
                acked = True
                break
            if stop.is_set() and attempt >= 3:
                break
            time.sleep(0.05 + rng.random() * 0.1)
        if acked:
            with ledger.lock:
                for ev in batch:
                    ledger.acked[ev["userId"]].add(ev["messageId"])
            # Sometimes resend an already-acknowledged batch verbatim.
            if rng.random() < 0.15:
                post(batch)
        time.sleep(rng.random() * 0.03)
    session.close()


def test_kill9_during_ingest_loses_nothing_acknowledged():
    t0 = time.monotonic()
    seed = int(os.environ.get("COHORT_CRASH_SEED", secrets.randbits(32)))
    print(f"crash test seed: {seed} (set COHORT_CRASH_SEED to reproduce)")
    rng = random.Random(seed)
    run = secrets.token_hex(4)
    users = [f"crash-u{i}-{run}" for i in range(USERS)]
    tmp_root = tempfile.mkdtemp(prefix="cohort-crash-")
    srv = new_server(tmp_root)
    ledger = Ledger()
    stop = threading.Event()
    threads = []
    try:
        srv.start()
        srv.create_source("crash")

        threads = [
            threading.Thread(target=sender, name=f"sender-{i}", daemon=True,
                             args=(i, srv, users, run, ledger, stop, seed + i + 1))
            for i in range(SENDERS)
        ]
        for t in threads:
            t.start()

        kills = 0
        for _ in range(KILL_CYCLES):
            if time.monotonic() - t0 > KILL_PHASE_MAX_S:
                break
            time.sleep(rng.uniform(0.2, 1.0))
            srv.kill()
            kills += 1
            time.sleep(rng.uniform(0.0, 0.2))
            srv.start()  # same data dir, same port; fails with the log if it dies
        # A little traffic on the last incarnation, then stop the senders.
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads), "sender threads did not stop"

        print(f"kills={kills} requests={dict(ledger.requests)} sent={len(ledger.sent)} "
              f"acked={sum(len(s) for s in ledger.acked.values())}")
        assert not ledger.unexpected, "unexpected responses:\n" + "\n".join(ledger.unexpected[:20])
        assert kills >= 5, f"only {kills} kill cycles ran"
        assert ledger.requests["200"] > 0, f"no request was ever acknowledged: {ledger.requests}"

        # Let the processor drain.
        stats = poll(srv.stats, lambda s: s.get("inbox_lag") == 0,
                     timeout=DRAIN_TIMEOUT_S, interval=0.25, what="inbox_lag == 0")
        assert stats.get("failed_events", 0) == 0, f"failed events after crashes: {stats}"

        total_stored = 0
        for uid in users:
            acked = ledger.acked.get(uid, set())
            prof = srv.profile("user_id", uid)
            if prof is None:
                assert not acked, f"{uid}: {len(acked)} acknowledged events but profile 404"
                continue
            timeline = srv.timeline("user_id", uid, limit=200)
            ids = [e["message_id"] for e in timeline]
            dups = [m for m, c in Counter(ids).items() if c > 1]
            assert not dups, f"{uid}: {len(dups)} messageIds stored twice, e.g. {dups[:5]}"
            stored = set(ids)
            missing = acked - stored
            assert not missing, (
                f"{uid}: {len(missing)} acknowledged events lost after kill -9, e.g. {sorted(missing)[:5]}"
            )
            foreign = [m for m in stored if ledger.sent.get(m) != uid]
            assert not foreign, f"{uid}: timeline has events not sent for this user: {foreign[:5]}"
            count = prof["computed"]["event_count"]
            assert count == len(stored), (
                f"{uid}: computed.event_count={count} but timeline has {len(stored)} distinct events "
                f"({len(acked)} acknowledged)"
            )
            assert len(acked) <= count
            assert sum(prof["computed"]["event_counts"].values()) == count, prof["computed"]
            total_stored += len(stored)

        # Global view agrees with the per-user view (all events here have a userId).
        stats = srv.stats()
        assert stats["events"] == total_stored, f"stats {stats} vs {total_stored} stored"
        assert stats["customers"] == USERS, stats
        print(f"stored={total_stored} stats={stats} elapsed={time.monotonic() - t0:.1f}s")
    except BaseException:
        print("--- server log (tail) ---\n" + srv.log_tail(80))
        raise
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        srv.stop()
        if not os.environ.get("COHORT_KEEP_DATA"):
            shutil.rmtree(tmp_root, ignore_errors=True)
    assert time.monotonic() - t0 < 90, f"crash test took {time.monotonic() - t0:.1f}s"
