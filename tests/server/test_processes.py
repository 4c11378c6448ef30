"""Restarts keep data and re-run no migration; several worker processes and several servers
starting at once on one fresh database all work."""

from __future__ import annotations

import threading
import uuid

import httpx

from malti_testing import record
from server_test_helpers import counts, unique


def migrations(server) -> list[tuple[str, object]]:
    return [(r["version"], r["applied_at"])
            for r in server.sql("SELECT version, applied_at FROM schema_migrations ORDER BY version")]


def test_restart_keeps_data_and_reruns_no_migration(start_server):
    server = start_server()
    ep, key = unique(), uuid.uuid4().hex
    assert server.ingest([record(endpoint=ep, response_time=float(i)) for i in range(25)],
                         headers={"Idempotency-Key": key}).status_code == 200
    applied = migrations(server)
    assert applied, "no migration recorded"
    assert len({v for v, _ in applied}) == len(applied)

    server.stop()
    server.start()

    assert counts(server, ep) == {"requests": 25, "rollup_5min": 25, "rollup_1h": 25}
    assert migrations(server) == applied
    # Idempotency keys survive too: a retry after the restart is still a duplicate.
    r = server.ingest([record(endpoint=ep, response_time=float(i)) for i in range(25)],
                      headers={"Idempotency-Key": key})
    assert r.status_code == 200 and r.json().get("duplicate") is True
    # And it still ingests.
    assert server.ingest([record(endpoint=ep)]).status_code == 200
    assert counts(server, ep)["requests"] == 26


def test_two_workers_answer_and_store_correctly(start_server):
    server = start_server(workers=2)
    ep = unique()
    results: list[int] = []

    def send(n: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for b in range(10):
                r = client.post("/api/v1/ingest",
                                json={"requests": [record(endpoint=ep, response_time=float(n * 100 + b))] * 50},
                                headers={"X-API-Key": server.service_keys["auth-service"],
                                         "Idempotency-Key": f"w{n}-b{b}"})
                results.append(r.status_code)
                # Each batch posted twice: whichever worker gets the retry, it is stored once.
                r = client.post("/api/v1/ingest",
                                json={"requests": [record(endpoint=ep, response_time=float(n * 100 + b))] * 50},
                                headers={"X-API-Key": server.service_keys["auth-service"],
                                         "Idempotency-Key": f"w{n}-b{b}"})
                results.append(r.status_code)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 80
    assert counts(server, ep) == {"requests": 2000, "rollup_5min": 2000, "rollup_1h": 2000}
    server.compact()
    assert counts(server, ep) == {"requests": 2000, "rollup_5min": 2000, "rollup_1h": 2000}
    assert server.get("/health").json()["status"] == "healthy"


def test_two_servers_started_at_once_on_a_fresh_database_both_migrate(database_url, start_server):
    a = start_server(database_url=database_url, start=False)
    b = start_server(database_url=database_url, start=False, workers=2)
    failures: list[BaseException] = []

    def start(server) -> None:
        try:
            server.start()
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == [], [str(f) for f in failures]
    assert a.running and b.running

    versions = [v for v, _ in migrations(a)]
    assert versions and len(versions) == len(set(versions))
    for name in ("Traceback", "ERROR"):
        assert name not in a.log() and name not in b.log(), a.log() + b.log()

    ep = unique()
    assert a.ingest([record(endpoint=ep)] * 3).status_code == 200
    assert b.ingest([record(endpoint=ep)] * 4).status_code == 200
    assert counts(a, ep) == {"requests": 7, "rollup_5min": 7, "rollup_1h": 7}
