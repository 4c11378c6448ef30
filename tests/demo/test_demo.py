"""``malti-server --demo`` as a user runs it: one command starts everything, live data from the
instrumented sample API is visible through the metrics API within seconds, history is there, and
SIGTERM (like Ctrl-C) stops every process it started, PostgreSQL included."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import psutil
import pytest

from malti_server.demo import SERVICES, history_batches
from malti_server.validation import decode_batch

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    """A free port below Linux's ephemeral range, so no outgoing connection takes it meanwhile,
    followed by five free ones for the sample API."""
    import random
    import socket

    for _ in range(200):
        port = random.randrange(20000, 32000)
        try:
            for p in range(port, port + 6):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


class DemoProcess:
    def __init__(self, data_dir: Path, port: int) -> None:
        env = dict(os.environ)
        for name in ("DATABASE_URL", "MALTI_CONFIG_PATH", "MALTI_URL", "MALTI_USER_KEY"):
            env.pop(name, None)
        env.update({"MALTI_DEMO_BACKFILL": "4000", "MALTI_DEMO_BACKFILL_DAYS": "2",
                    "MALTI_DEMO_RATE": "25", "PYTHONUNBUFFERED": "1"})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "malti_server", "--demo", "--port", str(port), "--data-dir", str(data_dir)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_ready(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            if line.startswith("MALTI_DEMO_READY "):
                return json.loads(line.split(" ", 1)[1])
        raise AssertionError("the demo did not get ready:\n" + "".join(self.output))

    def kill(self, data_dir: Path) -> None:
        """Teardown after a failure: the demo's own clean stop, else kill its tree and PostgreSQL."""
        if self.proc.poll() is not None:
            return
        tree = psutil.Process(self.proc.pid).children(recursive=True)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for child in tree:
            with contextlib.suppress(psutil.Error):
                child.kill()
        if (data_dir / "pgdata" / "postmaster.pid").exists():
            import pgserver

            with contextlib.suppress(Exception):
                pgserver.get_server(str(data_dir / "pgdata"), cleanup_mode="stop").cleanup()


@pytest.fixture
def demo_dir():
    # Not under pytest's basetemp: a concurrent pytest run resets /tmp/pytest-of-<user> to 0700,
    # which locks the embedded PostgreSQL (run as another user when testing as root) out mid-start.
    folder = Path(tempfile.mkdtemp(prefix="malti-demo-test-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_demo_starts_shows_live_and_history_and_stops_cleanly(demo_dir, stop_signal):
    data_dir = demo_dir / "demo"
    port = _free_port()
    demo = DemoProcess(data_dir, port)
    try:
        ready = demo.wait_ready(90)
        info = json.loads(Path(ready["info"]).read_text())
        started = info["started_at"]
        assert ready["url"] == f"http://127.0.0.1:{port}"
        headers = {"X-API-Key": ready["user_key"]}
        out = "".join(demo.output)
        assert f"malti-tui --url {ready['url']} --api-key {ready['user_key']}" in out
        assert "from malti_notebook import connect" in out

        with httpx.Client(base_url=ready["url"], headers=headers, timeout=30) as client:
            # Live traffic, through the sample API and its middleware, visible within 10 s.
            deadline = time.monotonic() + 10
            live: list[dict] = []
            while time.monotonic() < deadline:
                r = client.get("/api/v1/metrics/requests", params={"start_time": _iso(started), "limit": 1000})
                assert r.status_code == 200, r.text
                live = r.json()["requests"]
                realtime = client.get("/api/v1/metrics/aggregate/realtime").json()
                if (len({x["service"] for x in live}) == len(SERVICES) and len(live) >= 100
                        and realtime["metrics_summary"]["total_requests"]):
                    break
                time.sleep(0.5)
            assert {x["service"] for x in live} == {s.name for s in SERVICES}, live[:5]
            assert {x["node"] for x in live} <= {n for s in SERVICES for n, _ in s.nodes}
            assert len({x["node"] for x in live}) >= 3
            assert len({x["consumer"] for x in live}) >= 3
            assert all(x["consumer"] != "anonymous" for x in live)
            # Route patterns as the middleware records them (mount prefix included), not raw paths.
            patterns = {(e.method, e.pattern) for s in SERVICES for e in s.endpoints}
            assert {(x["method"], x["endpoint"]) for x in live} <= patterns
            assert any(x["endpoint"] == "/v1/products/{product_id}" for x in live)
            assert {x["context"] for x in live} - {None}
            assert realtime["metrics_summary"]["total_requests"] > 0

            # History was backfilled before the demo started, through ingest.
            r = client.get("/api/v1/metrics/aggregate", params={
                "start_time": _iso(started - 2 * 86400), "end_time": _iso(started - 60)})
            assert r.status_code == 200, r.text
            past = r.json()
            assert past["metrics_summary"]["total_requests"] > 3000
            assert len(past["distinct_nodes"]) == 5
            assert past["distinct_contexts"]
            statuses = {code for s in past["status_distribution"] for code in s["status_breakdown"]}
            assert {"200", "201"} <= statuses and statuses & {"404", "401", "422", "400"}

        # Every process the demo started, and its PostgreSQL.
        children = psutil.Process(demo.proc.pid).children(recursive=True)
        assert len(children) >= 6  # the server and five sample API nodes
        postmaster = int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
        assert psutil.pid_exists(postmaster)

        demo.proc.send_signal(stop_signal)
        assert demo.proc.wait(timeout=60) == 0, "".join(demo.output)
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, alive
        deadline = time.monotonic() + 10
        while psutil.pid_exists(postmaster) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not psutil.pid_exists(postmaster) or psutil.Process(postmaster).status() == psutil.STATUS_ZOMBIE
        assert not (data_dir / "pgdata" / "postmaster.pid").exists()
        assert "Malti demo stopped." in "".join(demo.output)
    finally:
        demo.kill(data_dir)


def test_history_records_are_valid_ingest_batches_with_the_demo_patterns():
    end = time.time()
    batches = list(history_batches(20_000, 30, end, end, seed=1))
    records = [r for _, batch in batches for r in batch]
    assert 19_000 < len(records) < 21_000
    for service, batch in batches:
        assert 0 < len(batch) <= 5000
        assert {r["service"] for r in batch} == {service}
        decoded = decode_batch(json.dumps({"requests": batch}).encode())  # the server's own decoder
        assert len(decoded) == len(batch)
    times = [datetime.fromisoformat(r["created_at"]) for r in records]
    assert min(times) >= datetime.fromtimestamp(end - 30 * 86400, timezone.utc)
    assert max(times) < datetime.fromtimestamp(end, timezone.utc)
    # Traffic grows toward today: the last day holds more than an average day of the month.
    last_day = sum(t > datetime.fromtimestamp(end, timezone.utc) - timedelta(days=1) for t in times)
    assert last_day > len(records) / 30
    # Several services, nodes, consumers and contexts; slow endpoints; errors.
    assert {r["service"] for r in records} == {s.name for s in SERVICES}
    assert len({r["node"] for r in records}) == 5
    assert len({r["consumer"] for r in records}) > 20
    assert {r["context"] for r in records} - {None}
    slow = [r["response_time"] for r in records if r["endpoint"] == "/v1/reports/sales" and r["status"] == 200]
    fast = [r["response_time"] for r in records if r["endpoint"] == "/me" and r["status"] == 200]
    assert sorted(slow)[len(slow) // 2] > 50 * sorted(fast)[len(fast) // 2]
    assert any(r["status"] >= 500 for r in records)


def test_demo_on_a_busy_port_fails_with_one_clear_line(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        r = subprocess.run(
            [sys.executable, "-m", "malti_server", "--demo", "--port", str(port), "--data-dir", str(tmp_path / "d")],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
        )
    assert r.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert not (tmp_path / "d" / "pgdata").exists()  # nothing was started
