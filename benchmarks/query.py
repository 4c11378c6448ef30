"""Metrics query benchmark: dashboard queries over HTTP against a month of synthetic traffic.

Builds a data set in a throwaway database — 30 days of traffic for 5 services x 40 endpoints x
20 consumers x 3 nodes, summarised into every rollup level, and the last 7 days also as raw rows
(bulk-loaded with SQL, not through HTTP) — starts a real ``malti-server`` on it and times each
query shape over HTTP (median of several runs): realtime 1 h, 24 h, 7 d and 30 d, each unfiltered
and with service+endpoint filters, a page of raw requests and the dimensions list. In the same run
it times the naive answer (the same dashboard computed from the raw table with percentile_cont) for
the ranges raw data covers and prints the ratio, then the storage per rollup row and per raw row
and the cost of one compaction.

    python benchmarks/query.py                 # 2.5 M requests (scale 0.05), about 6 minutes
    python benchmarks/query.py --scale 0.1     # 5 M requests, about 11 minutes
    python benchmarks/query.py --scale 1       # the full ~50 M requests (slow: over an hour)
    python benchmarks/query.py --database-url postgresql://...   # instead of an embedded PostgreSQL
    python benchmarks/query.py --scale 1 --keep --database-url URL   # build once and keep it, then
    python benchmarks/query.py --reuse postgresql://.../malti_bench_xxxx  # time queries again on it

Query ranges end at the moment the data set was built (kept in table bench_meta), so a reused
data set is timed on the same shapes.

Targets (issue #3): every dashboard query < 150 ms median, 30 days < 100 ms, >= 20x faster than
the naive raw-table query on 7 days.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from malti_server import histogram  # noqa: E402
from malti_server.db import Partitions, migrate  # noqa: E402
from malti_server.queries.params import parse_aggregate  # noqa: E402

UTC = timezone.utc
FULL_RECORDS = 50_000_000
DAYS = 30
RAW_DAYS = 7
USER_KEY = "bench-user-key-" + uuid.uuid4().hex
SERVICE_KEY = "bench-service-key-" + uuid.uuid4().hex

KEY_SQL = (
    f"CASE WHEN rt <= {histogram.X_MIN_MS!r} THEN 0"
    f" ELSE least({histogram.MAX_KEY}, ceil(ln(rt / {histogram.X_MIN_MS!r}) / {histogram.LN_GAMMA!r}))::smallint END"
)

FULL_LEVELS = [("rollup_5min", "5 minutes"), ("rollup_1h", "1 hour")]


STAGE_SQL = """
CREATE UNLOGGED TABLE bench_stage AS
WITH draws AS (
    SELECT $1::timestamptz + ($2::interval * ((i - 1 + random()) / $3::float8)) AS created_at,
           floor(random() * 5)::int AS s,
           floor(power(random(), 1.6) * 40)::int AS e,
           floor(power(random(), 2) * 20)::int AS c,
           floor(random() * 3)::int AS nd,
           random() AS ctx_r, random() AS st_r, random_normal() AS z
    FROM generate_series(1, $3::bigint) AS i
)
SELECT created_at,
       'service-' || s AS service,
       'node-' || nd AS node,
       (ARRAY['GET', 'POST', 'PUT', 'DELETE'])[1 + e % 4] AS method,
       '/api/v1/resource-' || e || '/{item_id}' AS endpoint,
       'consumer-' || c AS consumer,
       CASE WHEN ctx_r < 0.7 THEN NULL ELSE 'ctx-' || floor(ctx_r * 10)::int % 3 END AS context,
       (CASE WHEN st_r < 0.85 THEN 200 WHEN st_r < 0.90 THEN 201 WHEN st_r < 0.92 THEN 204
             WHEN st_r < 0.94 THEN 304 WHEN st_r < 0.96 THEN 404 WHEN st_r < 0.97 THEN 401
             WHEN st_r < 0.98 THEN 400 WHEN st_r < 0.995 THEN 500 ELSE 503 END)::smallint AS status,
       round((exp(ln(500) * (((s * 40 + e) * 7919) % 1000) / 1000.0 + (0.4 + ((s * 40 + e) % 7) / 10.0) * z)
              * (1 + (c % 3) * 0.2))::numeric, 3)::float8 AS rt
FROM draws
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg: str) -> None:
    print(msg, flush=True)


async def drop_indexes(conn: asyncpg.Connection, table: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT indexrelid::regclass::text AS name, pg_get_indexdef(indexrelid) AS def"
        " FROM pg_index WHERE indrelid = $1::regclass", table)
    for r in rows:
        await conn.execute(f'DROP INDEX "{r["name"]}"')
    return [r["def"] for r in rows]


def family_cells_sql(name: str, keep: set[str], width: str, since: bool) -> str:
    """Histogram cells of one dimension family (keeping ``keep``) at ``width`` from the staged records."""
    cols = [
        "service" if "service" in keep else "''",
        "coalesce(node, E'\\x01')" if "node" in keep else "E'\\x01'",
        "method" if "method" in keep else "''",
        "endpoint" if "endpoint" in keep else "''",
        "consumer" if "consumer" in keep else "''",
        "coalesce(context, E'\\x01')" if "context" in keep else "E'\\x01'",
    ]
    names = ["service", "node_k", "method", "endpoint", "consumer", "context_k"]
    proj = ", ".join(f"{c} AS {n}" for c, n in zip(cols, names))
    where = "WHERE created_at >= $1" if since else ""
    return f"""
        CREATE UNLOGGED TABLE {name} AS
        SELECT date_bin('{width}', created_at, timestamptz '2000-01-01Z') AS bucket, {proj},
               status, {KEY_SQL} AS k, count(*) AS c, sum(rt) AS s, min(rt) AS lo, max(rt) AS hi
        FROM bench_stage {where} GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9"""


def regroup_sql(name: str, width: str, source: str) -> str:
    """Family cells re-binned to a wider bucket."""
    return f"""
        CREATE UNLOGGED TABLE {name} AS
        SELECT date_bin('{width}', bucket, timestamptz '2000-01-01Z') AS bucket, service, node_k, method,
               endpoint, consumer, context_k, status, k, sum(c) AS c, sum(s) AS s, min(lo) AS lo, max(hi) AS hi
        FROM {source} GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9"""


def coarse_sql(table: str, source: str) -> str:
    """One coarse level from family cells at its width (the rows the compactor's fold produces)."""
    return f"""
        INSERT INTO {table} (bucket, service, node, method, endpoint, consumer, context,
                             n, err, n2, s2, lo2, hi2, st_codes, st_counts, lat_cells)
        WITH cells AS (
            SELECT * FROM {source}
        ), per_status AS (
            SELECT bucket, service, node_k, method, endpoint, consumer, context_k, status,
                   sum(c) AS n, sum(s) AS s, min(lo) AS lo, max(hi) AS hi
            FROM cells GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
        ), totals AS (
            SELECT bucket, service, node_k, method, endpoint, consumer, context_k, sum(n)::bigint AS n,
                   coalesce(sum(n) FILTER (WHERE status >= 400 AND status <> 401), 0)::bigint AS err,
                   coalesce(sum(n) FILTER (WHERE status BETWEEN 200 AND 299), 0)::bigint AS n2,
                   sum(s) FILTER (WHERE status BETWEEN 200 AND 299) AS s2,
                   min(lo) FILTER (WHERE status BETWEEN 200 AND 299) AS lo2,
                   max(hi) FILTER (WHERE status BETWEEN 200 AND 299) AS hi2,
                   array_agg(status ORDER BY status) AS codes, array_agg(n::integer ORDER BY status) AS counts
            FROM per_status GROUP BY 1, 2, 3, 4, 5, 6, 7
        ), hists AS (
            SELECT bucket, service, node_k, method, endpoint, consumer, context_k,
                   array_agg((k::integer << 20) | least(c - g * 1048575, 1048575)::integer ORDER BY k, g) AS cells
            FROM (SELECT bucket, service, node_k, method, endpoint, consumer, context_k, k, sum(c)::bigint AS c
                  FROM cells WHERE status BETWEEN 200 AND 299 GROUP BY 1, 2, 3, 4, 5, 6, 7, 8) AS h,
                 generate_series(0, (c - 1) / 1048575) AS g
            GROUP BY 1, 2, 3, 4, 5, 6, 7
        )
        SELECT t.bucket, t.service, nullif(t.node_k, E'\\x01'), t.method, t.endpoint, t.consumer,
               nullif(t.context_k, E'\\x01'), t.n, t.err, t.n2, t.s2, t.lo2, t.hi2, t.codes, t.counts,
               coalesce(h.cells, '{{}}')
        FROM totals AS t LEFT JOIN hists AS h USING (bucket, service, node_k, method, endpoint, consumer, context_k)
    """


async def build(url: str, records: int, now: datetime, complete: bool) -> None:
    conn = await asyncpg.connect(url, server_settings={"timezone": "UTC", "work_mem": "1GB",
                                                       "maintenance_work_mem": "1GB"})
    await migrate(conn)
    start = now - timedelta(days=DAYS)
    t = time.perf_counter()
    await conn.execute("DROP TABLE IF EXISTS bench_stage")
    await conn.execute(STAGE_SQL, start, timedelta(days=DAYS), records)
    await conn.execute("ANALYZE bench_stage")
    log(f"  generated {records:,} records in {time.perf_counter() - t:.1f} s")
    # 5-minute levels serve ranges up to 4 days, the full-dimension 1-hour level only queries that
    # filter by node or context with other dimensions: unless --complete they hold recent days only
    recent5 = None if complete else now - timedelta(days=4)
    recent_full_1h = None if complete else now - timedelta(days=RAW_DAYS + 1)

    def span(lower: datetime | None) -> str:
        return f"last {(now - lower).days} days" if lower else f"{DAYS} days"

    for table, width in FULL_LEVELS:
        t = time.perf_counter()
        lower = recent5 if width == "5 minutes" else recent_full_1h
        defs = await drop_indexes(conn, table)
        where = "WHERE created_at >= $1" if lower else ""
        await conn.execute(f"""
            INSERT INTO {table} (bucket, service, node, method, endpoint, consumer, context, status,
                                 n, sum_ms, min_ms, max_ms, lat_keys, lat_counts)
            SELECT bucket, service, node, method, endpoint, consumer, context, status,
                   sum(c), sum(s), min(lo), max(hi), array_agg(k ORDER BY k), array_agg(c ORDER BY k)
            FROM (SELECT date_bin('{width}', created_at, timestamptz '2000-01-01Z') AS bucket,
                         service, node, method, endpoint, consumer, context, status, {KEY_SQL} AS k,
                         count(*)::integer AS c, sum(rt) AS s, min(rt) AS lo, max(rt) AS hi
                  FROM bench_stage {where} GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9) AS cells
            GROUP BY 1, 2, 3, 4, 5, 6, 7, 8""", *([lower] if lower else []))
        for d in defs:
            await conn.execute(d)
        n = await conn.fetchval(f"SELECT count(*) FROM {table}")
        log(f"  {table:<18} {n:>11,} rows ({span(lower)}) in {time.perf_counter() - t:.1f} s")

    levels = await conn.fetch(
        "SELECT name, width::text AS width, width AS width_iv, dims FROM malti_rollup_levels ORDER BY dims, width")
    # every family the migrations define, with the dimensions it keeps (schema/005 and later)
    families = {r["family"]: set(r["dims"]) for r in await conn.fetch(
        "SELECT family, dims FROM malti_rollup_families ORDER BY family")}
    sources = {"00:05:00": "bench_fam_5", "01:00:00": "bench_fam_h", "06:00:00": "bench_fam_6", "1 day": "bench_fam_d",
               "7 days": "bench_fam_w"}
    for dims, keep in families.items():
        t = time.perf_counter()
        family = [lv for lv in levels if lv["dims"] == dims]
        await conn.execute(family_cells_sql("bench_fam_h", keep, "1 hour", False))
        if any(lv["width"] == "00:05:00" for lv in family):
            await conn.execute(family_cells_sql("bench_fam_5", keep, "5 minutes", recent5 is not None),
                               *([recent5] if recent5 else []))
        if any(lv["width"] in ("06:00:00", "1 day", "7 days") for lv in family):
            await conn.execute(regroup_sql("bench_fam_6", "6 hours", "bench_fam_h"))
            await conn.execute(regroup_sql("bench_fam_d", "1 day", "bench_fam_6"))
        if any(lv["width"] == "7 days" for lv in family):
            await conn.execute(regroup_sql("bench_fam_w", "7 days", "bench_fam_d"))
        log(f"  {dims} cells in {time.perf_counter() - t:.1f} s")
        for lv in family:
            t = time.perf_counter()
            table, width = lv["name"], lv["width"]
            five = width == "00:05:00"
            defs = await drop_indexes(conn, table)
            await conn.execute(coarse_sql(table, sources[width]))
            for d in defs:
                await conn.execute(d)
            n = await conn.fetchval(f"SELECT count(*) FROM {table}")
            log(f"  {table:<18} {n:>11,} rows ({span(recent5 if five else None)}) in {time.perf_counter() - t:.1f} s")
        for name in sources.values():
            await conn.execute(f"DROP TABLE IF EXISTS {name}")
    # 6-hour, 1-day and 7-day rows exist only for closed blocks (schema/005); the open ones are read from
    # the hourly levels until the server's compactor closes them
    for lv in levels:
        await conn.execute(
            f"DELETE FROM {lv['name']} WHERE bucket >= (SELECT closed_until FROM malti_rollup_closed WHERE width = $1)",
            lv["width_iv"])

    t = time.perf_counter()
    raw_from = now - timedelta(days=RAW_DAYS)
    days = {raw_from.date() + timedelta(days=i) for i in range(RAW_DAYS + 2)}
    if await conn.fetchval("SELECT relkind = 'p' FROM pg_class WHERE relname = 'requests'"):
        await Partitions(True).ensure(conn, days)
    n = await conn.execute(
        "INSERT INTO requests (created_at, service, node, method, endpoint, status, response_time, consumer, context)"
        " SELECT created_at, service, node, method, endpoint, status, rt, consumer, context FROM bench_stage"
        " WHERE created_at >= $1 ORDER BY created_at", raw_from)
    log(f"  raw requests: {int(n.split()[-1]):,} rows (last {RAW_DAYS} days) in {time.perf_counter() - t:.1f} s")
    await conn.execute("DROP TABLE bench_stage")
    await conn.execute("CREATE TABLE bench_meta (built_at timestamptz NOT NULL, records bigint NOT NULL)")
    await conn.execute("INSERT INTO bench_meta VALUES ($1, $2)", now, records)
    t = time.perf_counter()
    await conn.execute("VACUUM ANALYZE")
    log(f"  vacuum analyze in {time.perf_counter() - t:.1f} s")
    await conn.close()


def start_server(url: str, folder: Path) -> tuple[subprocess.Popen, str]:
    config = folder / "malti.toml"
    config.write_text(
        f'[services.service-0]\napi_key = "{SERVICE_KEY}"\n\n[users.bench]\napi_key = "{USER_KEY}"\n\n'
        '[limits]\nmetrics_rate = "100000/minute"\ningest_rate = "100000/minute"\n'
        '\n[retention]\nraw = "400d"\nrollup_5min = "400d"\nrollup_1hour = "800d"\n'
    )
    port = free_port()
    log_file = open(folder / "server.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "malti_server", "--config", str(config), "--database-url", url,
         "--port", str(port), "--workers", "1", "--log-level", "warning", "--no-access-log"],
        stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True, cwd=str(ROOT),
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited:\n" + (folder / "server.log").read_text())
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not start")


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def timed_http(client: httpx.Client, path: str, params: dict, runs: int) -> tuple[float, dict]:
    times = []
    body = None
    for i in range(runs + 1):
        t = time.perf_counter()
        resp = client.get(path, params=params)
        dt = time.perf_counter() - t
        if resp.status_code != 200:
            raise RuntimeError(f"{path} {params}: {resp.status_code} {resp.text[:300]}")
        if i:  # first run warms caches
            times.append(dt)
        body = resp.json()
    return statistics.median(times) * 1000, body


NAIVE_AGG = """count(*), count(*) FILTER (WHERE status >= 400 AND status <> 401),
       avg(response_time) FILTER (WHERE status BETWEEN 200 AND 299),
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY response_time)
           FILTER (WHERE status BETWEEN 200 AND 299)"""


def naive_sql(params: dict, now: datetime) -> tuple[str, list]:
    """The dashboard as a user would write it over the raw table: one statement, percentile_cont
    per section (summary, buckets of the same width as ours, endpoints, consumers, status codes)."""
    q = parse_aggregate(params, None, now)
    args: list = [q.first_bucket, q.stop, q.step]
    conds = ["created_at >= $1", "created_at < $2"]
    for name in ("service", "node", "method", "endpoint", "consumer", "context"):
        if params.get(name) is not None:
            args.append(params[name])
            conds.append(f"{name} = ${len(args)}")
    sql = f"""
        WITH base AS (SELECT * FROM requests WHERE {' AND '.join(conds)})
        SELECT 0, NULL::timestamptz, NULL, NULL, NULL, NULL::int, {NAIVE_AGG} FROM base
        UNION ALL
        SELECT 1, date_bin($3::interval, created_at, timestamptz '2000-01-01Z'), NULL, NULL, NULL, NULL, {NAIVE_AGG}
        FROM base GROUP BY 2
        UNION ALL
        (SELECT 2, NULL, service, method, endpoint, NULL, {NAIVE_AGG} FROM base GROUP BY 3, 4, 5
         ORDER BY 7 DESC LIMIT 100)
        UNION ALL
        (SELECT 3, NULL, consumer, NULL, NULL, NULL, {NAIVE_AGG} FROM base GROUP BY 3 ORDER BY 7 DESC LIMIT 100)
        UNION ALL
        SELECT 4, NULL, service, NULL, NULL, status, count(*), NULL, NULL, NULL FROM base GROUP BY 3, 6
        UNION ALL
        SELECT 5, NULL, node, context, NULL, NULL, NULL, NULL, NULL, NULL FROM base GROUP BY 3, 4"""
    return sql, args


async def timed_naive(url: str, params: dict, now: datetime, runs: int) -> float:
    """The dashboard computed from the raw table with percentile_cont (what a user would write)."""
    sql, args = naive_sql(params, now)
    conn = await asyncpg.connect(url, server_settings={"timezone": "UTC", "work_mem": "64MB"})
    times = []
    for i in range(runs + 1):
        t = time.perf_counter()
        await conn.fetch(sql, *args)
        if i:
            times.append(time.perf_counter() - t)
    await conn.close()
    return statistics.median(times) * 1000


async def storage(url: str) -> list[tuple[str, int, float]]:
    conn = await asyncpg.connect(url)
    out = []
    tables = [t for t, _ in FULL_LEVELS] + [
        r["name"] for r in await conn.fetch("SELECT name FROM malti_rollup_levels ORDER BY dims, width")]
    for table in tables:
        n = await conn.fetchval(f"SELECT count(*) FROM {table}")
        size = await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", table)
        out.append((table, n, size / n if n else 0.0))
    n = await conn.fetchval("SELECT count(*) FROM requests")
    size = await conn.fetchval(
        "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits WHERE inhparent = 'requests'::regclass"
    ) or await conn.fetchval("SELECT pg_total_relation_size('requests')")
    out.append(("requests (raw)", n, size / n if n else 0.0))
    await conn.close()
    return out


async def compaction_cost(url: str, base: str, now: datetime) -> str:
    """Ingest 20 batches of 500 records over HTTP, then time one compaction of the pending rows."""
    import random

    rnd = random.Random(1)
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": SERVICE_KEY}, timeout=60) as client:
        for _ in range(20):
            recs = [{"service": "service-0", "node": f"node-{rnd.randrange(3)}", "method": "GET",
                     "endpoint": f"/api/v1/resource-{rnd.randrange(40)}/{{item_id}}", "status": 200,
                     "response_time": rnd.lognormvariate(3, 1), "consumer": f"consumer-{rnd.randrange(20)}",
                     "created_at": iso(now - timedelta(seconds=rnd.randrange(600)))} for _ in range(500)]
            resp = await client.post("/api/v1/ingest", json={"requests": recs})
            resp.raise_for_status()
    conn = await asyncpg.connect(url)
    pending = await conn.fetchval("SELECT count(*) FROM rollup_pending")
    t = time.perf_counter()
    await conn.fetchval("SELECT malti_compact_pending()")
    dt = time.perf_counter() - t
    await conn.close()
    return f"compaction of {pending:,} pending rows (10,000 records) into every rollup table: {dt * 1000:.0f} ms"


def embedded_cluster(folder: str | None) -> tuple[str, callable]:
    """An embedded PostgreSQL; in ``folder`` (kept afterwards) or a temporary one (deleted)."""
    import pgserver

    keep = folder is not None
    path = Path(folder) if keep else Path(tempfile.gettempdir()) / f"malti-bench-pg-{uuid.uuid4().hex[:8]}"
    srv = pgserver.get_server(str(path), cleanup_mode="stop")

    def cleanup() -> None:
        try:
            srv.cleanup()
        finally:
            if not keep:
                shutil.rmtree(path, ignore_errors=True)

    return srv.get_uri(), cleanup


def with_database(admin_url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(admin_url)._replace(path="/" + name))


async def create_db(admin_url: str) -> str:
    name = f"malti_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return with_database(admin_url, name)


async def built_at(url: str) -> tuple[datetime, int]:
    conn = await asyncpg.connect(url)
    row = await conn.fetchrow("SELECT built_at, records FROM bench_meta")
    await conn.close()
    return row["built_at"], row["records"]


async def drop_db(admin_url: str, url: str) -> None:
    from urllib.parse import urlsplit

    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=0.05, help="fraction of the full 50 M requests (default 0.05)")
    ap.add_argument("--runs", type=int, default=7, help="timed runs per query (median reported)")
    ap.add_argument("--database-url", help="admin URL of a PostgreSQL server (default: an embedded one)")
    ap.add_argument("--keep", action="store_true", help="keep the benchmark database (prints its name)")
    ap.add_argument("--pg-dir", help="folder of the embedded PostgreSQL, kept afterwards (default: a temporary one)")
    ap.add_argument("--reuse", metavar="NAME", help="time the queries on database NAME, built and kept by an earlier run")
    ap.add_argument("--complete", action="store_true",
                    help="fill the 5-minute and full-dimension levels for all 30 days (slower build)")
    args = ap.parse_args()

    records = int(FULL_RECORDS * args.scale)
    cleanup = None
    admin = args.database_url or os.environ.get("MALTI_BENCH_DATABASE_URL")
    if not admin:
        admin, cleanup = embedded_cluster(args.pg_dir)
    keep = args.keep or args.reuse is not None
    folder = Path(tempfile.mkdtemp(prefix="malti-bench-"))
    proc = None
    url = None
    try:
        if args.reuse:
            url = with_database(admin, args.reuse)
            now, records = asyncio.run(built_at(url))
            log(f"reusing {args.reuse}: {records:,} requests, built {now:%Y-%m-%d %H:%M} UTC")
        else:
            url = asyncio.run(create_db(admin))
            now = datetime.now(UTC)
            log(f"building {records:,} requests over {DAYS} days (scale {args.scale}) ...")
            t = time.perf_counter()
            asyncio.run(build(url, records, now, args.complete))
            log(f"built in {time.perf_counter() - t:.0f} s\n")
        proc, base = start_server(url, folder)
        # every range ends when the data does: the moment the build started
        svc_ep = {"service": "service-1", "endpoint": "/api/v1/resource-3/{item_id}"}
        end = {"end_time": iso(now)}

        def last(**delta) -> dict:
            return {"start_time": iso(now - timedelta(**delta)), **end}

        shapes = [
            ("realtime 1 h", "/api/v1/metrics/aggregate/realtime", last(hours=1), None),
            ("realtime 1 h, service+endpoint", "/api/v1/metrics/aggregate/realtime", {**last(hours=1), **svc_ep}, None),
            ("24 h", "/api/v1/metrics/aggregate", last(hours=24), "24h"),
            ("24 h, service+endpoint", "/api/v1/metrics/aggregate", {**last(hours=24), **svc_ep}, "24h"),
            ("24 h, node", "/api/v1/metrics/aggregate", {**last(hours=24), "node": "node-1"}, "24h"),
            ("24 h, context", "/api/v1/metrics/aggregate", {**last(hours=24), "context": "ctx-1"}, "24h"),
            ("24 h, service+node", "/api/v1/metrics/aggregate",
             {**last(hours=24), "service": "service-1", "node": "node-1"}, "24h"),
            ("7 d", "/api/v1/metrics/aggregate", last(days=7), "7d"),
            ("7 d, service+endpoint", "/api/v1/metrics/aggregate", {**last(days=7), **svc_ep}, "7d"),
            ("7 d, node", "/api/v1/metrics/aggregate", {**last(days=7), "node": "node-1"}, "7d"),
            ("7 d, context", "/api/v1/metrics/aggregate", {**last(days=7), "context": "ctx-1"}, "7d"),
            ("30 d", "/api/v1/metrics/aggregate", last(days=30), None),
            ("30 d, service+endpoint", "/api/v1/metrics/aggregate", {**last(days=30), **svc_ep}, None),
            ("30 d, consumer", "/api/v1/metrics/aggregate", {**last(days=30), "consumer": "consumer-2"}, None),
            ("30 d, node", "/api/v1/metrics/aggregate", {**last(days=30), "node": "node-1"}, None),
            ("30 d, context", "/api/v1/metrics/aggregate", {**last(days=30), "context": "ctx-1"}, None),
            ("raw requests page (100)", "/api/v1/metrics/requests", {"limit": 100, **end}, None),
            ("raw requests page, service+endpoint", "/api/v1/metrics/requests", {"limit": 100, **end, **svc_ep}, None),
            ("dimensions 7 d", "/api/v1/metrics/dimensions", last(days=7), None),
        ]
        log(f"{'query (HTTP, median of ' + str(args.runs) + ')':<40} {'ms':>8} {'resolution':>10} {'requests':>12}"
            f" {'naive raw ms':>13} {'ratio':>7}")
        results = {}
        with httpx.Client(base_url=base, headers={"X-API-Key": USER_KEY}, timeout=120) as client:
            for name, path, params, naive in shapes:
                ms, body = timed_http(client, path, params, args.runs)
                res = body.get("resolution", "")
                total = body.get("metrics_summary", {}).get("total_requests", len(body.get("requests", [])) or "")
                line = f"{name:<40} {ms:>8.1f} {res:>10} {total:>12,}" if isinstance(total, int) else \
                    f"{name:<40} {ms:>8.1f} {res:>10} {'':>12}"
                if naive:
                    naive_ms = asyncio.run(timed_naive(url, params, now, max(3, args.runs // 2)))
                    line += f" {naive_ms:>13.1f} {naive_ms / ms:>6.1f}x"
                results[name] = ms
                log(line)
        dash = {k: v for k, v in results.items() if not k.startswith(("raw", "dimensions"))}
        log("")
        slowest = max(dash, key=dash.get)
        month = {k: v for k, v in dash.items() if k.startswith("30 d")}
        slowest_month = max(month, key=month.get)
        log(f"slowest dashboard query: {slowest} {dash[slowest]:.1f} ms (target < 150 ms); 30 d unfiltered: "
            f"{dash['30 d']:.1f} ms (target < 100 ms); slowest 30 d shape: {slowest_month} {month[slowest_month]:.1f} ms")
        log("\nstorage (table + indexes):")
        for table, n, per_row in asyncio.run(storage(url)):
            log(f"  {table:<18} {n:>11,} rows {per_row:>8.0f} bytes/row")
        log("\n" + asyncio.run(compaction_cost(url, base, now)))
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if url is not None and not keep:
            try:
                asyncio.run(drop_db(admin, url))
            except Exception as exc:  # noqa: BLE001 - best effort cleanup
                log(f"could not drop {url}: {exc}")
        elif url is not None:
            log(f"kept database {url}")
        if cleanup:
            cleanup()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
