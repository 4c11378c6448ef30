"""Scale-out: several stateless server processes on one database give the same answers, and share
one rate-limit budget through Redis."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest

from malti_testing import free_port, record


@pytest.fixture
def redis_url(tmp_path):
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def test_two_servers_on_one_database_answer_the_same(start_server, database_url):
    a = start_server(database_url=database_url)
    b = start_server(database_url=database_url)
    assert a.ingest([record(endpoint="/via-a", response_time=5.0)] * 3).status_code == 200
    assert b.ingest([record(endpoint="/via-b", response_time=7.0)] * 2).status_code == 200
    now = datetime.now(timezone.utc)
    window = {"start_time": (now - timedelta(hours=1)).isoformat(), "end_time": (now + timedelta(minutes=1)).isoformat()}
    for path, params in (("/api/v1/metrics/requests", {"limit": 100}),
                         ("/api/v1/metrics/aggregate", window),
                         ("/api/v1/metrics/dimensions", window)):
        ra, rb = a.get(path, **params), b.get(path, **params)
        assert ra.status_code == rb.status_code == 200, (ra.text, rb.text)
        ja, jb = ra.json(), rb.json()
        if "metrics_summary" in ja:  # a rate over the time elapsed so far: "now" moved between the calls
            rate_a = ja["metrics_summary"].pop("requests_per_minute")
            rate_b = jb["metrics_summary"].pop("requests_per_minute")
            assert rate_a == pytest.approx(rate_b, rel=0.01)
        assert ja == jb
    assert len(a.get("/api/v1/metrics/requests", limit=100).json()["requests"]) == 5


def test_rate_limit_is_shared_through_redis(start_server, database_url, redis_url):
    limits = {"ingest_rate": "4/minute", "storage_uri": redis_url}
    a = start_server(database_url=database_url, limits=limits)
    b = start_server(database_url=database_url, limits=limits)
    codes = [srv.ingest([record()]).status_code for srv in (a, b, a, b, a, b)]
    assert codes[:4] == [200, 200, 200, 200]
    assert codes[4:] == [429, 429]
    r = b.ingest([record()])
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1


def test_without_shared_storage_each_process_has_its_own_budget(start_server, database_url):
    limits = {"ingest_rate": "2/minute"}
    a = start_server(database_url=database_url, limits=limits)
    b = start_server(database_url=database_url, limits=limits)
    codes = [srv.ingest([record()]).status_code for srv in (a, a, b, b)]
    assert codes == [200, 200, 200, 200]
    assert a.ingest([record()]).status_code == 429
