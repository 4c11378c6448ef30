"""Randomised traffic for the query tests, stored through the real ingest SQL, and exact answers
computed from the raw rows with percentile_cont."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from malti_server.db import Partitions, migrate
from malti_server.writer import STORE_BATCH_SQL

UTC = timezone.utc
T0 = datetime(2026, 11, 1, 3, 17, 23, tzinfo=UTC)
T1 = datetime(2026, 11, 6, 7, 41, 0, tzinfo=UTC)
CLOSE_UPTO = T1 + timedelta(hours=20)  # after the load, blocks close up to here (a Saturday: a week closes)
SERVICES = ("auth-service", "payment-service", "user-service")
ENDPOINTS = (("GET", "/items/{id}"), ("POST", "/items"), ("GET", "/users/{user_id}"),
             ("DELETE", "/items/{id}"), ("GET", "/health"), ("PUT", "/users/{user_id}/profile"))
CONSUMERS = tuple(f"consumer-{i}" for i in range(8))
NODES = ("node-1", "node-2", None)
CONTEXTS = (None, "ctx-x", "ctx-y")
STATUSES = np.array([200, 201, 204, 304, 400, 401, 404, 500, 503])
STATUS_P = np.array([0.70, 0.08, 0.02, 0.04, 0.03, 0.04, 0.05, 0.03, 0.01])


def generate(n: int, seed: int = 7) -> dict[str, list]:
    """Columns of ``n`` records: skewed (lognormal, per-group medians 0.3-300 ms) latencies, and one
    endpoint whose responses stay open for minutes to weeks."""
    rng = np.random.default_rng(seed)
    span = (T1 - T0).total_seconds()
    # more traffic in some hours than others, so buckets differ
    secs = np.sort(rng.uniform(0, span, n) ** 1.0)
    svc = rng.choice(len(SERVICES), n, p=[0.5, 0.3, 0.2])
    ep = rng.choice(len(ENDPOINTS), n, p=[0.35, 0.2, 0.2, 0.05, 0.15, 0.05])
    con = rng.zipf(1.6, n) % len(CONSUMERS)
    node = rng.choice(len(NODES), n, p=[0.45, 0.45, 0.10])
    ctx = rng.choice(len(CONTEXTS), n, p=[0.6, 0.3, 0.1])
    status = rng.choice(STATUSES, n, p=STATUS_P)
    median = np.exp(rng.uniform(np.log(0.3), np.log(300), (len(SERVICES), len(ENDPOINTS))))
    sigma = rng.uniform(0.4, 1.3, (len(SERVICES), len(ENDPOINTS)))
    rt = median[svc, ep] * np.exp(sigma[svc, ep] * rng.standard_normal(n)) * (1 + 0.3 * (con % 3))
    slow = rng.random(n) < 0.01
    rt[slow] *= rng.uniform(5, 50, slow.sum())
    tiny = rng.random(n) < 0.002
    rt[tiny] = rng.uniform(0, 0.001, tiny.sum())
    # a streaming endpoint: responses open for minutes to weeks (up to the 1e12 ms ingest allows)
    stream = ep == 5
    rt[stream] = np.minimum(rt[stream] * 1e5, 1e12)
    rt = np.round(rt, 4)
    created = [T0 + timedelta(seconds=float(s)) for s in secs]
    return {
        "created_at": created,
        "service": [SERVICES[i] for i in svc],
        "node": [NODES[i] for i in node],
        "method": [ENDPOINTS[i][0] for i in ep],
        "endpoint": [ENDPOINTS[i][1] for i in ep],
        "status": [int(s) for s in status],
        "response_time": [float(x) for x in rt],
        "consumer": [CONSUMERS[i] for i in con],
        "context": [CONTEXTS[i] for i in ctx],
    }


async def load(conn: asyncpg.Connection, cols: dict[str, list], batch: int = 2000, seed: int = 3,
               schema: Path | None = None) -> None:
    """Schema (the migrations in ``schema``, default all), partitions, then the records in shuffled
    batches through the ingest SQL. The
    compactor runs every few batches (so folded rows get merged again and again); the last fifth
    stays pending (both must be visible). The clock of the compactor moves from T0 to T1 with the
    batches, so coarse blocks close during the load (schema/005) while shuffled records keep
    arriving for blocks already closed. At the end, with the last fifth still pending, blocks close
    up to CLOSE_UPTO (the week of the data included, schema/007)."""
    await migrate(conn, schema)
    days: set[date] = {t.date() for t in cols["created_at"]}
    await Partitions(True).ensure(conn, days)
    await conn.execute("UPDATE malti_rollup_closed SET closed_until = date_bin(width, $1, timestamptz '2000-01-01Z')", T0)
    n = len(cols["status"])
    order = np.random.default_rng(seed).permutation(n)
    for i, start in enumerate(range(0, n, batch)):
        idx = order[start:start + batch]
        by_service: dict[str, list[int]] = {}
        for j in idx:
            by_service.setdefault(cols["service"][j], []).append(int(j))
        for service, rows in by_service.items():
            args = [[cols[c][j] for j in rows] for c in
                    ("created_at", "service", "node", "method", "endpoint", "status", "response_time",
                     "consumer", "context")]
            await conn.fetchval(STORE_BATCH_SQL, *args, service, None)
        if i % 4 == 3 and start + batch <= n * 0.8:
            await conn.fetchval("SELECT malti_compact_pending($1)", T0 + (T1 - T0) * ((start + batch) / n))
    for _ in range(4):  # a call closes at most one day
        await conn.execute("SELECT malti_close_coarse($1)", CLOSE_UPTO)


# ------------------------------------------------------------------ exact reference answers

_2XX = "status BETWEEN 200 AND 299"
_ERR = "status >= 400 AND status <> 401"
_AGG = f"""count(*) AS n, count(*) FILTER (WHERE {_ERR}) AS err,
    min(response_time) FILTER (WHERE {_2XX}) AS lo, avg(response_time) FILTER (WHERE {_2XX}) AS avg,
    max(response_time) FILTER (WHERE {_2XX}) AS hi,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY response_time) FILTER (WHERE {_2XX}) AS p50,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY response_time) FILTER (WHERE {_2XX}) AS p95,
    percentile_cont(0.99) WITHIN GROUP (ORDER BY response_time) FILTER (WHERE {_2XX}) AS p99"""


def _where(filters: dict[str, Any], services: list[str] | None, first: int = 3) -> tuple[str, list]:
    conds, args = [], []
    for k, v in filters.items():
        args.append(v)
        conds.append(f"{k} = ${first + len(args) - 1}")
    if services is not None:
        args.append(services)
        conds.append(f"service = ANY(${first + len(args) - 1}::text[])")
    return "".join(f" AND {c}" for c in conds), args


async def expected(conn: asyncpg.Connection, start: datetime, stop: datetime, step: timedelta,
                   filters: dict[str, Any], services: list[str] | None = None,
                   nodes_range: tuple[datetime, datetime] | None = None) -> dict[str, Any]:
    """Exact figures from the raw rows in [start, stop) for the given equality filters."""
    where, args = _where(filters, services)
    base = f"FROM requests WHERE created_at >= $1 AND created_at < $2{where}"
    ts = await conn.fetch(
        f"SELECT date_bin(${3 + len(args)}::interval, created_at, timestamptz '2000-01-01Z') AS bucket, {_AGG}"
        f" {base} GROUP BY 1 ORDER BY 1", start, stop, *args, step)
    summary = await conn.fetchrow(f"SELECT {_AGG} {base}", start, stop, *args)
    endpoints = await conn.fetch(f"SELECT service, method, endpoint, {_AGG} {base} GROUP BY 1, 2, 3",
                                 start, stop, *args)
    consumers = await conn.fetch(f"SELECT consumer, {_AGG} {base} GROUP BY 1", start, stop, *args)
    status = await conn.fetch(f"SELECT service, status, count(*) AS n {base} GROUP BY 1, 2", start, stop, *args)
    svc_where, svc_args = _where({k: v for k, v in filters.items() if k == "service"}, services)
    lo, hi = nodes_range or (start, stop)
    nodes = await conn.fetch(
        f"SELECT DISTINCT node, context FROM requests WHERE created_at >= $1 AND created_at < $2{svc_where}",
        lo, hi, *svc_args)
    return {"ts": {r["bucket"]: dict(r) for r in ts}, "summary": dict(summary),
            "endpoints": {(r["service"], r["method"], r["endpoint"]): dict(r) for r in endpoints},
            "consumers": {r["consumer"]: dict(r) for r in consumers},
            "status": {(r["service"], r["status"]): r["n"] for r in status},
            "nodes": sorted({r["node"] for r in nodes if r["node"] is not None}),
            "contexts": sorted({r["context"] for r in nodes if r["context"] is not None})}
