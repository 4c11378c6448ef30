"""HTTP ingest throughput of malti-server against the embedded PostgreSQL, beside the database's
own COPY rate into the same table (the ceiling), in one run.

    python benchmarks/ingest.py [--seconds 10] [--batch 500]

For 1 and 2 server workers and 4 and 16 batches in flight it prints records/s (rollups and
Idempotency-Key included), server RSS per worker, and the ratio to the COPY ceiling measured on
the same database with 1 and 2 connections.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from malti_testing import (  # noqa: E402
    SERVICE_KEYS,
    EmbeddedCluster,
    ServerProcess,
    config_toml,
    create_database,
    drop_database,
)

ENDPOINTS = [f"/api/v1/resource{i}/{{item_id}}" for i in range(40)]
CONSUMERS = [f"consumer-{i}" for i in range(20)]
NODES = ["node-1", "node-2", "node-3"]
METHODS = ["GET", "GET", "GET", "POST", "PUT", "DELETE"]
STATUSES = [200] * 90 + [201] * 3 + [304] * 2 + [404] * 3 + [500] * 2


def make_records(service: str, n: int, rng: random.Random) -> list[dict]:
    now = datetime.now(timezone.utc)
    return [
        {
            "service": service,
            "node": rng.choice(NODES),
            "method": rng.choice(METHODS),
            "endpoint": rng.choice(ENDPOINTS),
            "status": rng.choice(STATUSES),
            "response_time": round(rng.lognormvariate(2.5, 1.0), 3),
            "consumer": rng.choice(CONSUMERS),
            "context": rng.choice([None, "mobile", "web"]),
            "created_at": (now - timedelta(seconds=rng.uniform(0, 60))).isoformat(),
        }
        for _ in range(n)
    ]


def make_bodies(count: int, batch: int) -> list[tuple[str, bytes]]:
    rng = random.Random(42)
    services = list(SERVICE_KEYS)
    out = []
    for i in range(count):
        service = services[i % len(services)]
        out.append((service, orjson.dumps({"requests": make_records(service, batch, rng)})))
    return out


async def drive(url: str, bodies: list[tuple[str, bytes]], in_flight: int, seconds: float, batch: int) -> float:
    """Send batches with ``in_flight`` concurrent requests for ``seconds``; records/s stored."""
    stop_at = time.perf_counter() + seconds
    sent = 0
    failures = 0
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def worker(wid: int) -> None:
            nonlocal sent, failures
            i = wid
            while time.perf_counter() < stop_at:
                service, body = bodies[i % len(bodies)]
                i += in_flight
                r = await client.post(
                    "/api/v1/ingest",
                    content=body,
                    headers={"X-API-Key": SERVICE_KEYS[service], "Content-Type": "application/json",
                             "Idempotency-Key": uuid.uuid4().hex},
                )
                if r.status_code == 200:
                    sent += batch
                else:
                    failures += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(in_flight)))
        elapsed = time.perf_counter() - start
    if failures:
        print(f"    ({failures} failed batches)")
    return sent / elapsed


def worker_rss_mb(server: ServerProcess) -> list[float]:
    proc = psutil.Process(server._proc.pid)  # noqa: SLF001  benchmark peeks at its own child
    procs = [p for p in proc.children(recursive=True) if "python" in (p.name() or "")] or [proc]
    if len(procs) > 1:  # uvicorn supervisor + workers: report the workers
        procs = [p for p in procs if p.pid != proc.pid]
    return [p.memory_info().rss / 2**20 for p in procs]


async def copy_ceiling(db_url: str, connections: int, seconds: float, batch: int) -> float:
    """Rows/s the database accepts by COPY into the raw table, ``connections`` at once."""
    import asyncpg

    rng = random.Random(7)
    rows = []
    for r in make_records("auth-service", batch, rng):
        rows.append((datetime.fromisoformat(r["created_at"]), r["service"], r["node"], r["method"], r["endpoint"],
                     r["status"], float(r["response_time"]), r["consumer"], r["context"]))
    cols = ["created_at", "service", "node", "method", "endpoint", "status", "response_time", "consumer", "context"]
    stop_at = time.perf_counter() + seconds
    total = 0

    async def one() -> None:
        nonlocal total
        conn = await asyncpg.connect(db_url)
        try:
            while time.perf_counter() < stop_at:
                await conn.copy_records_to_table("requests", records=rows, columns=cols)
                total += len(rows)
        finally:
            await conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(connections)))
    return total / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--database-url", help="admin URL of another PostgreSQL (default: embedded)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="malti-bench-"))
    cluster = None
    admin = args.database_url
    if not admin:
        cluster = EmbeddedCluster(tmp / "pgdata")
        admin = cluster.url
    bodies = make_bodies(200, args.batch)
    results: dict[tuple[int, int], float] = {}
    rss: dict[int, list[float]] = {}
    sustained: dict[int, float] = {}
    try:
        for workers in (1, 2):
            db = create_database(admin, "malti_bench")
            config = tmp / f"malti-{workers}.toml"
            config.write_text(config_toml())
            server = ServerProcess(database_url=db, config_path=config, workers=workers,
                                   log_path=tmp / f"server-{workers}.log").start()
            try:
                asyncio.run(drive(server.url, bodies, 4, 2, args.batch))  # warm-up
                for in_flight in (4, 16):
                    rate = asyncio.run(drive(server.url, bodies, in_flight, args.seconds, args.batch))
                    results[(workers, in_flight)] = rate
                    rss[workers] = worker_rss_mb(server)
                    print(f"HTTP ingest  workers={workers} in_flight={in_flight:>2}: {rate:>9,.0f} records/s"
                          f"  (worker RSS {', '.join(f'{m:.0f}' for m in rss[workers])} MB)", flush=True)
                stored = server.sql("SELECT count(*) AS n FROM requests")[0]["n"]
                rolled = server.sql("SELECT coalesce(sum(n),0)::bigint AS n FROM rollup_5min_all")[0]["n"]
                print(f"    stored rows {stored:,}, rollup count {rolled:,} (must match)")
                # Sustained rate: the last run's records, over its time plus the time the background
                # fold needs to empty rollup_pending into every rollup level.
                t0 = time.perf_counter()
                backlog = server.sql("SELECT coalesce(sum(n),0)::bigint AS n FROM rollup_pending")[0]["n"]
                while server.sql("SELECT count(*) AS n FROM rollup_pending")[0]["n"] > 0:
                    time.sleep(0.2)
                drain = time.perf_counter() - t0
                sustained[workers] = backlog / drain if drain > 0 else float("inf")
                print(f"    fold backlog after the runs: {backlog:,} records, drained in {drain:.1f} s"
                      f" -> the background fold processes {sustained[workers]:,.0f} records/s into every rollup level")
            finally:
                server.stop()
            ceiling_db = db
            if workers == 1:
                drop_database(admin, db)
        ceilings = {c: asyncio.run(copy_ceiling(ceiling_db, c, args.seconds, args.batch)) for c in (1, 2)}
        drop_database(admin, ceiling_db)
        for c, rate in ceilings.items():
            print(f"COPY ceiling connections={c}: {rate:>9,.0f} rows/s (raw table only, no rollups)")
        best = max(ceilings.values())
        print()
        print("workers in_flight  records/s  ratio to COPY ceiling")
        for (w, f), rate in sorted(results.items()):
            print(f"{w:>7} {f:>9} {rate:>10,.0f}  {rate / best:6.2f}")
        for w, rate in sustained.items():
            print(f"background fold rate after the {w}-worker runs (idle machine): {rate:,.0f} records/s")
        print(f"\ntarget: >= 60,000 records/s at 2 workers / 16 in flight -> "
              f"{results[(2, 16)]:,.0f} ({results[(2, 16)] / 60000:.2f}x target)")
    finally:
        if cluster:
            cluster.stop()


if __name__ == "__main__":
    main()
