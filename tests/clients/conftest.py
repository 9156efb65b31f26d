"""Shared fixtures and helpers for Cohort's client (SDK) tests.

Nothing here builds anything: the server binary is taken from $COHORT_BIN
(default: $HOME/.cache/cohort/target/debug/cohort), as built by scripts/test.sh.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import quote

import pytest
import requests

READY_TIMEOUT = 30.0
POLL_TIMEOUT = 20.0


def cohort_bin() -> str:
    default = Path.home() / ".cache" / "cohort" / "target" / "debug" / "cohort"
    path = os.environ.get("COHORT_BIN") or str(default)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(
            f"cohort binary not found or not executable at {path!r}; "
            "build it with `cargo build -p cohort` or set COHORT_BIN",
            pytrace=False,
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class CohortServer:
    """One `cohort serve` process on a data dir, restartable on the same port."""

    data_dir: str
    port: int
    admin_key: str
    bin: str = field(default_factory=cohort_bin)
    write_key: Optional[str] = None
    source_id: Optional[Any] = None
    proc: Optional[subprocess.Popen] = None
    starts: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> str:
        return os.path.join(os.path.dirname(self.data_dir), "server.log")

    def env(self) -> dict:
        env = dict(os.environ)
        env["COHORT_ADMIN_KEY"] = self.admin_key
        env.setdefault("RUST_BACKTRACE", "1")
        env.setdefault("NO_COLOR", "1")
        return env

    # -- process management -------------------------------------------------

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"\n===== start #{self.starts} at {time.time():.3f} =====\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [self.bin, "serve", "--data", self.data_dir, "--listen", f"127.0.0.1:{self.port}"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=self.env(),
        )
        log.close()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"cohort serve exited with code {code} before becoming ready.\n"
                    f"--- server log (tail) ---\n{self.log_tail()}"
                )
            try:
                r = requests.get(self.base_url + "/readyz", timeout=1)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}: {r.text[:200]}"
            except requests.RequestException as e:
                last = repr(e)
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(
            f"cohort serve not ready after {timeout}s (last: {last}).\n"
            f"--- server log (tail) ---\n{self.log_tail()}"
        )

    def kill(self) -> None:
        """SIGKILL, no chance to clean up (crash simulation)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, grace: float = 10.0) -> Optional[int]:
        """SIGTERM, then SIGKILL after `grace` seconds. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def log_tail(self, n: int = 60) -> str:
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return "(no log)"

    # -- admin ----------------------------------------------------------------

    def admin_headers(self) -> dict:
        return {"Authorization": f"Bearer {self.admin_key}"}

    def create_source(self, name: str = "web") -> str:
        r = requests.post(
            self.base_url + "/api/v1/sources",
            json={"name": name},
            headers=self.admin_headers(),
            timeout=10,
        )
        assert r.status_code == 201, f"POST /api/v1/sources -> {r.status_code}: {r.text}"
        body = r.json()
        self.write_key = body["write_key"]
        self.source_id = body["source"]["id"]
        assert self.write_key, body
        return self.write_key

    def create_source_cli(self, name: str = "web") -> str:
        out = subprocess.run(
            [self.bin, "admin", "--data", self.data_dir, "source", "create", name, "--json"],
            capture_output=True,
            text=True,
            timeout=30,
            env=self.env(),
        )
        assert out.returncode == 0, f"cohort admin source create failed: {out.stderr}"
        body = json.loads(out.stdout)
        self.write_key = body["write_key"]
        self.source_id = body["id"]
        return self.write_key

    def get(self, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 10)
        return requests.get(self.base_url + path, headers=self.admin_headers(), **kw)

    def profile(self, id_type: str, value: str) -> Optional[dict]:
        r = self.get(f"/api/v1/profiles/{quote(id_type, safe='')}/{quote(value, safe='')}")
        if r.status_code == 404:
            return None
        assert r.status_code == 200, f"GET profile {id_type}/{value} -> {r.status_code}: {r.text}"
        return r.json()

    def stats(self) -> dict:
        r = self.get("/api/v1/stats")
        assert r.status_code == 200, f"GET /api/v1/stats -> {r.status_code}: {r.text}"
        return r.json()

    def timeline(self, id_type: str, value: str, limit: int = 50, max_pages: int = 10_000) -> list:
        """All events of a profile, following next_cursor to the end."""
        events: list = []
        cursor = None
        base = f"/api/v1/profiles/{quote(id_type, safe='')}/{quote(value, safe='')}/events"
        for _ in range(max_pages):
            params = {"limit": limit}
            if cursor is not None:
                params["cursor"] = cursor
            r = self.get(base, params=params)
            assert r.status_code == 200, f"GET {base} {params} -> {r.status_code}: {r.text}"
            body = r.json()
            page = body["events"]
            assert len(page) <= limit, f"page larger than limit={limit}: {len(page)}"
            events.extend(page)
            cursor = body.get("next_cursor")
            if cursor is None:
                return events
            assert page, f"empty page with non-null next_cursor {cursor!r}"
        raise AssertionError(f"timeline paging did not end after {max_pages} pages")


def new_server(tmp_root: str) -> CohortServer:
    data_dir = os.path.join(tmp_root, "data")
    os.makedirs(data_dir, exist_ok=True)
    return CohortServer(
        data_dir=data_dir,
        port=free_port(),
        admin_key="ak_test_" + secrets.token_hex(16),
    )


def poll(fn: Callable[[], Any], cond: Callable[[Any], bool], timeout: float = POLL_TIMEOUT,
         interval: float = 0.2, what: str = "condition") -> Any:
    """Call fn() until cond(result) holds; return that result or fail with the last one."""
    deadline = time.monotonic() + timeout
    last: Any = None
    last_exc: Optional[BaseException] = None
    while True:
        try:
            last = fn()
            last_exc = None
            if cond(last):
                return last
        except AssertionError as e:  # e.g. a transient non-200
            last_exc = e
        if time.monotonic() >= deadline:
            detail = f"last exception: {last_exc}" if last_exc else f"last value: {json.dumps(last, indent=2, default=str)[:4000]}"
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; {detail}")
        time.sleep(interval)


def poll_profile(server: CohortServer, id_type: str, value: str,
                 cond: Callable[[dict], bool] = lambda p: True,
                 timeout: float = POLL_TIMEOUT, what: Optional[str] = None) -> dict:
    """Poll GET /api/v1/profiles/{id_type}/{value} until it exists and cond(profile) holds."""
    return poll(
        lambda: server.profile(id_type, value),
        lambda p: p is not None and cond(p),
        timeout=timeout,
        what=what or f"profile {id_type}/{value}",
    )


def _start_with_source(tmp_root: str) -> CohortServer:
    srv = new_server(tmp_root)
    srv.start()
    srv.create_source("web")
    return srv


@pytest.fixture(scope="session")
def cohort():
    """A running `cohort serve` on a fresh data dir with one source ("web").

    Yields a CohortServer: base_url, admin_key, write_key, data_dir, plus helpers.
    """
    tmp_root = tempfile.mkdtemp(prefix="cohort-clients-")
    srv = None
    try:
        srv = _start_with_source(tmp_root)
        yield srv
    finally:
        if srv is not None:
            code = srv.stop()
            if os.environ.get("COHORT_TEST_VERBOSE"):
                print(f"\ncohort serve exited with {code}\n{srv.log_tail()}")
        if not os.environ.get("COHORT_KEEP_DATA"):
            shutil.rmtree(tmp_root, ignore_errors=True)


@pytest.fixture
def run_id() -> str:
    return secrets.token_hex(6)
