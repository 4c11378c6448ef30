"""8 concurrent senders x 20 batches x 500 records: exactly 80,000 rows, and every rollup view
counts exactly 80,000 records too (before and after compaction)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import httpx
import orjson

SENDERS = 8
BATCHES = 20
RECORDS = 500
TOTAL = SENDERS * BATCHES * RECORDS
SERVICES = ["auth-service", "payment-service", "user-service"]


def make_batch(sender: int, batch: int, service: str) -> bytes:
    base = datetime.now(timezone.utc) - timedelta(minutes=90)
    records = [
        {
            "service": service,
            "node": f"node-{sender % 3}",
            "method": ("GET", "POST", "PUT")[i % 3],
            "endpoint": f"/load/{i % 7}",
            "status": (200, 201, 404, 500)[i % 4],
            "response_time": (i % 50) * 1.5 + sender,
            "consumer": f"consumer-{i % 5}",
            "context": None if i % 2 else "ctx",
            # spread over ~90 minutes: several 5-minute and 1-hour buckets
            "created_at": (base + timedelta(seconds=(batch * RECORDS + i) % 5400)).isoformat(),
        }
        for i in range(RECORDS)
    ]
    return orjson.dumps({"requests": records})


def totals(server) -> dict[str, int]:
    q = {
        "requests": "SELECT count(*) AS n FROM requests",
        "rollup_5min_all": "SELECT coalesce(sum(n), 0) AS n FROM rollup_5min_all",
        "rollup_1h_all": "SELECT coalesce(sum(n), 0) AS n FROM rollup_1h_all",
        "hist_5min": "SELECT coalesce(sum(c), 0) AS n FROM rollup_5min_all, unnest(lat_counts) AS c",
        "hist_1h": "SELECT coalesce(sum(c), 0) AS n FROM rollup_1h_all, unnest(lat_counts) AS c",
    }
    return {name: int(server.sql(sql)[0]["n"]) for name, sql in q.items()}


def test_eight_concurrent_senders_store_exactly_80000_records(malti_server):
    before = totals(malti_server)
    errors: list[str] = []
    barrier = threading.Barrier(SENDERS)

    def sender(n: int) -> None:
        service = SERVICES[n % len(SERVICES)]
        headers = {"X-API-Key": malti_server.service_keys[service], "Content-Type": "application/json"}
        bodies = [make_batch(n, b, service) for b in range(BATCHES)]
        with httpx.Client(base_url=malti_server.url, timeout=60) as client:
            barrier.wait()
            for body in bodies:
                r = client.post("/api/v1/ingest", content=body, headers=headers)
                if r.status_code != 200 or r.json()["count"] != RECORDS:
                    errors.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(SENDERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []

    after = totals(malti_server)
    assert {k: after[k] - before[k] for k in after} == {k: TOTAL for k in after}

    malti_server.compact()
    compacted = totals(malti_server)
    assert {k: compacted[k] - before[k] for k in compacted} == {k: TOTAL for k in compacted}
    assert malti_server.sql("SELECT count(*) AS n FROM rollup_pending")[0]["n"] == 0

    # Per-dimension sums agree with the raw table too (merging never loses or doubles a record).
    raw = malti_server.sql(
        "SELECT service, status, count(*) AS n, sum(response_time) AS s FROM requests GROUP BY 1, 2 ORDER BY 1, 2")
    for view in ("rollup_5min_all", "rollup_1h_all"):
        rolled = malti_server.sql(
            f"SELECT service, status, sum(n) AS n, sum(sum_ms) AS s FROM {view} GROUP BY 1, 2 ORDER BY 1, 2")
        assert [(r["service"], r["status"], r["n"]) for r in rolled] == \
               [(r["service"], r["status"], r["n"]) for r in raw]
        for a, b in zip(rolled, raw):
            assert abs(a["s"] - b["s"]) < 1e-6 * max(1.0, b["s"])
