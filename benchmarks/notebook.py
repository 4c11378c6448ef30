"""How fast malti_notebook turns server data into DataFrames.

    python benchmarks/notebook.py [--records 120000] [--history 100000] [--runs 5]

Starts an embedded PostgreSQL and a real malti-server (1 worker), ingests ``--records`` records
spread over the last 3 days plus ``--history`` spread over the last 30 days through the HTTP
ingest API (batches of 5,000, two in flight), then times, best and median of ``--runs``:

- ``m.requests(limit=100_000)`` to a DataFrame (100 pages of 1,000 followed by cursor), split into
  the client's share (HTTP + JSON + typed records) and the DataFrame build;
- ``m.timeseries(start="30d")`` (hourly buckets) and ``m.timeseries(start="30d", interval="5min")``;
- ``m.summary(start="24h")`` and ``m.endpoints(start="7d")`` for scale.

Targets (issue #6): requests 100k < 3 s, 30-day timeseries < 0.3 s.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from malti_testing import (  # noqa: E402
    SERVICE_KEYS,
    USER_KEYS,
    EmbeddedCluster,
    ServerProcess,
    config_toml,
    create_database,
)

from malti_notebook import _frames, connect  # noqa: E402

BATCH = 5000
ENDPOINTS = [f"/api/v1/resource{i}/{{item_id}}" for i in range(40)]
CONSUMERS = [f"consumer-{i}" for i in range(20)]
NODES = ["node-1", "node-2", "node-3"]
METHODS = ["GET", "GET", "GET", "POST", "PUT", "DELETE"]
STATUSES = [200] * 90 + [201] * 3 + [304] * 2 + [404] * 3 + [500] * 2


def make_batches(count: int, span: timedelta, rng: random.Random) -> list[tuple[str, list[dict]]]:
    now = datetime.now(timezone.utc) - timedelta(minutes=1)
    services = list(SERVICE_KEYS)
    batches = []
    for start in range(0, count, BATCH):
        service = services[(start // BATCH) % len(services)]
        size = min(BATCH, count - start)
        batches.append(
            (
                service,
                [
                    {
                        "service": service,
                        "node": rng.choice(NODES),
                        "method": rng.choice(METHODS),
                        "endpoint": rng.choice(ENDPOINTS),
                        "status": rng.choice(STATUSES),
                        "response_time": round(rng.lognormvariate(2.5, 1.0), 3),
                        "consumer": rng.choice(CONSUMERS),
                        "context": rng.choice([None, "mobile", "web"]),
                        "created_at": (now - span * rng.random()).isoformat(),
                    }
                    for _ in range(size)
                ],
            )
        )
    return batches


async def ingest(url: str, batches: list[tuple[str, list[dict]]], in_flight: int = 2) -> float:
    queue = list(batches)
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def worker() -> None:
            while queue:
                service, records = queue.pop()
                response = await client.post(
                    "/api/v1/ingest", json={"requests": records}, headers={"X-API-Key": SERVICE_KEYS[service]}
                )
                if response.status_code != 200:
                    raise RuntimeError(f"ingest failed: {response.status_code} {response.text[:300]}")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return time.perf_counter() - start


def _ago(days: int) -> str:
    return (datetime.now(timezone.utc) - timedelta(days=days)).isoformat()


def timed(runs: int, fn) -> tuple[float, float, object]:
    fn()  # warm-up (connections, server caches)
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=120_000, help="records in the last 3 days")
    parser.add_argument("--history", type=int, default=100_000, help="records spread over the last 30 days")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="malti-bench-notebook-") as folder:
        folder_path = Path(folder)
        print("starting embedded PostgreSQL and malti-server ...", flush=True)
        cluster = EmbeddedCluster(folder_path / "pgdata")
        server = None
        try:
            config = folder_path / "malti.toml"
            config.write_text(config_toml())
            server = ServerProcess(database_url=create_database(cluster.url, "malti_bench_nb"), config_path=config,
                                   log_path=folder_path / "server.log")  # fmt: skip
            server.start()

            rng = random.Random(42)
            batches = make_batches(args.records, timedelta(days=3), rng) + make_batches(
                args.history, timedelta(days=30), rng
            )
            total = args.records + args.history
            seconds = asyncio.run(ingest(server.url, batches))
            print(f"ingested {total:,} records over HTTP in {seconds:.1f} s ({total / seconds:,.0f} records/s)")
            server.compact()

            m = connect(server.url, USER_KEYS["viewer"])
            limit = min(100_000, args.records)
            print(f"\n{'measure':<48}{'best':>10}{'median':>10}{'target':>10}{'best/target':>13}")

            def row(label: str, best: float, median: float, target: float | None = None) -> None:
                target_text = f"{target:.2f} s" if target else ""
                ratio = f"{best / target:.2f}" if target else ""
                print(f"{label:<48}{best:>8.3f} s{median:>8.3f} s{target_text:>10}{ratio:>13}")

            best, median, frame = timed(args.runs, lambda: m.requests(limit=limit))
            assert len(frame) == limit, len(frame)
            row(f"m.requests(limit={limit:_}) -> DataFrame", best, median, 3.0)
            records: list = []

            def client_only():
                records.clear()
                for page in m.client.iter_request_pages(limit=limit):
                    records.extend(page.requests)
                return records

            best_c, median_c, _ = timed(args.runs, client_only)
            row("  of which client: HTTP + JSON + records", best_c, median_c)
            best_f, median_f, _ = timed(args.runs, lambda: _frames.requests_frame(records))
            row("  of which DataFrame build", best_f, median_f)
            http = httpx.Client(base_url=server.url, headers={"X-API-Key": USER_KEYS["viewer"]}, timeout=60)

            def raw_pages():
                cursor, count = None, 0
                while count < limit:
                    params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
                    body = http.get("/api/v1/metrics/requests", params=params).json()
                    count += len(body["requests"])
                    cursor = body["next_cursor"]
                    if cursor is None:
                        break
                return count

            best_r, median_r, _ = timed(args.runs, raw_pages)
            row("  reference: bare httpx GET + json, same pages", best_r, median_r)

            best, median, ts = timed(args.runs, lambda: m.timeseries(start="30d"))
            row(f"m.timeseries(start='30d')  [{len(ts)} x {ts.attrs['resolution']}]", best, median, 0.3)
            assert ts.total_requests.sum() > 0
            best_r, median_r, _ = timed(
                args.runs, lambda: http.get("/api/v1/metrics/aggregate", params={"start_time": _ago(30)}).json()
            )
            row("  reference: bare httpx GET + json of /aggregate", best_r, median_r)
            http.close()
            best, median, ts5 = timed(args.runs, lambda: m.timeseries(start="30d", interval="5min"))
            row(f"m.timeseries(start='30d', interval='5min') [{len(ts5)}]", best, median)
            best, median, _ = timed(args.runs, lambda: m.summary(start="24h"))
            row("m.summary(start='24h')", best, median)
            best, median, _ = timed(args.runs, lambda: m.endpoints(start="7d"))
            row("m.endpoints(start='7d')", best, median)
            m.close()
        finally:
            if server is not None:
                server.stop()
            cluster.stop()


if __name__ == "__main__":
    main()
