"""The hardening probe's lake fragmentation burst, against a release binary:

    python3 scripts/bench_lake_burst.py target/release/cohort

Starts `cohort serve` on a temporary data directory, sends 100,000 events over the last 30 days,
then 5,000 events over 5,000 distinct days (2010 onwards) in two requests, and prints the lake's
Parquet file count and the median time of a full-scan query (`count(*)`, `max(timestamp)`)
before and after the burst. Needs `requests`. docs/BENCHMARKS.md has the figures."""
import json, os, secrets, subprocess, sys, tempfile, time, statistics, datetime, socket
import requests

BIN = sys.argv[1]
data = tempfile.mkdtemp(prefix="cohort-burst-")
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
base = f"http://127.0.0.1:{port}"
admin = "ak_burst_" + secrets.token_hex(16)
env = dict(os.environ, COHORT_ADMIN_KEY=admin, COHORT_LOG="warn")
proc = subprocess.Popen([BIN, "serve", "--data", data, "--listen", f"127.0.0.1:{port}"], env=env,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(200):
        try:
            if requests.get(base + "/readyz", timeout=1).status_code == 200: break
        except requests.RequestException: pass
        time.sleep(0.1)
    H = {"Authorization": f"Bearer {admin}"}
    key = requests.post(base + "/api/v1/sources", json={"name": "probe"}, headers=H).json()["write_key"]
    now = datetime.datetime.now(datetime.timezone.utc)
    sent = 0
    def send(batch):
        global sent
        r = requests.post(base + "/v1/batch", auth=(key, ""), json={"batch": batch}, timeout=60)
        assert r.status_code == 200, r.text
        sent += len(batch)
    # Baseline: 100,000 events over the last 30 days.
    for b in range(40):
        send([{"type": "track", "anonymousId": f"v{(b*2500+i) % 5000}", "event": "Viewed",
               "timestamp": (now - datetime.timedelta(minutes=17 * (b * 2500 + i) % (30 * 1440))).isoformat()}
              for i in range(2500)])
    def wait_lake():
        for _ in range(600):
            try:
                mark = int(open(os.path.join(data, "lake/events/_complete_seq")).read().strip() or 0)
            except (OSError, ValueError): mark = 0
            if mark >= sent: return
            time.sleep(0.2)
        raise SystemExit("lake did not catch up")
    def files():
        n = 0
        for d in os.listdir(os.path.join(data, "lake/events")):
            p = os.path.join(data, "lake/events", d)
            if os.path.isdir(p): n += sum(f.endswith(".parquet") and not f.startswith(".") for f in os.listdir(p))
        return n
    def scan(k=15):
        times = []
        for _ in range(k):
            t = time.perf_counter()
            r = requests.post(base + "/api/v1/query", json={"sql": "SELECT count(*), max(timestamp) FROM events"}, headers=H)
            times.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text
        return statistics.median(times) * 1000, r.json()["rows"][0]
    wait_lake(); time.sleep(3)
    before_files = files(); before = scan()
    start = datetime.date(2010, 1, 1)
    for half in range(2):
        send([{"type": "track", "anonymousId": "burst", "event": "Burst",
               "timestamp": f"{start + datetime.timedelta(days=half * 2500 + i)}T12:00:00Z"} for i in range(2500)])
    wait_lake(); time.sleep(3)
    after_files = files(); after = scan()
    print(json.dumps({"before": {"files": before_files, "scan_ms": round(before[0], 2), "row": before[1]},
                      "after": {"files": after_files, "scan_ms": round(after[0], 2), "row": after[1]},
                      "ratio": round(after[0] / before[0], 2)}))
finally:
    proc.terminate(); proc.wait(timeout=30)
