"""The dashboard query (/aggregate, /aggregate/realtime): one SQL statement, then numpy.

Rollup path (5-minute and 1-hour resolution): every section of the response reads the smallest
rollup level that keeps the dimensions it groups or filters by (schema/003), whole days from
1-day levels and whole hours from 1-hour levels where the section does not need finer buckets.
SQL sums the exact counts and concatenates the packed 2xx latency histograms per result group;
numpy merges them and reads p50/p95/p99 (within the histogram's 1 % bound of percentile_cont).

Raw path (1-minute resolution, at most 24 hours): exact figures from the raw rows. SQL counts and
collects each group's 2xx response times (array_agg, sent as binary arrays); numpy sorts them and
interpolates p50/p95/p99 exactly as percentile_cont does, which is several times faster than
percentile_cont's per-group sorts inside PostgreSQL.

Semantics kept from the original Malti: latency figures count only 2xx responses; an error is a
status >= 400 other than 401; error rates are percent. Buckets cover the whole range, aligned to
the resolution; totals count the records of those buckets.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import numpy as np

from . import packed
from .params import HOUR, MINUTE, UTC, MetricsQuery, ceil_time, floor_time
from .sql import Binds, Closed, fetch_closed, filter_conditions, pick_level, plan_sources, time_condition

QS = (0.5, 0.95, 0.99)
TOP_N = 100  # entries in `endpoints` and `consumers`
WORK_MEM = "64MB"

SEC_TS, SEC_ENDPOINTS, SEC_CONSUMERS, SEC_STATUS, SEC_NODES = range(5)

_IS_2XX = "status BETWEEN 200 AND 299"
_IS_ERROR = "status >= 400 AND status <> 401"

_ROLLUP_AGG = """sum(n)::bigint AS n,
       sum(err)::bigint AS err,
       sum(n2)::bigint AS n2,
       sum(s2) AS s2,
       min(lo2) AS lo2,
       max(hi2) AS hi2,
       string_agg(hist, ''::bytea) AS blob"""

# sections without latency figures: a count, then empty columns for the rest
_NO_LATENCY = "0::bigint, 0::bigint, NULL::float8, NULL::float8, NULL::float8, NULL::bytea"
_COUNTS_AGG = "sum(c)::bigint, " + _NO_LATENCY
_RAW_COUNTS_AGG = "count(*)::bigint, " + _NO_LATENCY
_NO_COUNTS = "0::bigint, " + _NO_LATENCY

_RAW_AGG = f"""count(*)::bigint AS n,
       count(*) FILTER (WHERE {_IS_ERROR})::bigint AS err,
       count(*) FILTER (WHERE {_IS_2XX})::bigint AS n2,
       sum(response_time) FILTER (WHERE {_IS_2XX}) AS s2,
       min(response_time) FILTER (WHERE {_IS_2XX}) AS lo2,
       max(response_time) FILTER (WHERE {_IS_2XX}) AS hi2,
       array_send(array_agg(response_time) FILTER (WHERE {_IS_2XX})) AS blob"""


def _section(sec: int, keys: str, agg: str, source: str, group: str, order_limit: str = "") -> str:
    return (
        f"(SELECT {sec} AS sec, {keys}, {agg}\n FROM {source}\n"
        + (f" GROUP BY {group}\n" if group else "")
        + order_limit
        + ")"
    )


def _rollup_source(q: MetricsQuery, start: datetime, stop: datetime, finest: timedelta,
                   need: frozenset[str], binds: Binds, closed: Closed, service_only: bool = False,
                   per_service: bool = True) -> str:
    parts = []
    for level, intervals in plan_sources(start, stop, finest, need, per_service, closed):
        conds = [time_condition("bucket", intervals, binds)]
        conds += filter_conditions(q.filters, binds, level.dims, service_only)
        parts.append(f"SELECT * FROM {level.view} WHERE " + " AND ".join(conds))
    if not parts:
        parts.append("SELECT * FROM rollup_full_1h_all WHERE false")
    return "(" + "\n UNION ALL ".join(parts) + ") AS src"


def build_rollup_sql(q: MetricsQuery, closed: Closed) -> tuple[str, list[Any]]:
    """The rollup statement; ``closed``: how far the 6-hour and 1-day levels are complete."""
    binds = Binds()
    f = q.filters.dims()
    a, b = q.first_bucket, q.stop
    step = q.step
    per_service = q.filters.service is not None or q.filters.services is not None
    ts_level = pick_level(step, f, per_service)
    assert ts_level is not None
    ts_conds = [time_condition("bucket", [(a, b)], binds)] + filter_conditions(q.filters, binds, ts_level.dims)
    ts_source = f"(SELECT * FROM {ts_level.view} WHERE {' AND '.join(ts_conds)}) AS src"
    sections = [
        _section(SEC_TS, "bucket, NULL::text AS g1, NULL::text AS g2, NULL::text AS g3, NULL::int AS status",
                 _ROLLUP_AGG, ts_source, "bucket"),
        _section(SEC_ENDPOINTS, "NULL::timestamptz, service, method, endpoint, NULL::int", _ROLLUP_AGG,
                 _rollup_source(q, a, b, step, f | {"method", "endpoint"}, binds, closed), "service, method, endpoint",
                 f"ORDER BY n DESC, service, method, endpoint LIMIT {TOP_N}\n"),
        _section(SEC_CONSUMERS, "NULL::timestamptz, consumer, NULL::text, NULL::text, NULL::int", _ROLLUP_AGG,
                 _rollup_source(q, a, b, step, f | {"consumer"}, binds, closed, per_service=per_service), "consumer",
                 f"ORDER BY n DESC, consumer LIMIT {TOP_N}\n"),
        _section(SEC_STATUS, "NULL::timestamptz, service, NULL::text, NULL::text, code::int", _COUNTS_AGG,
                 _rollup_source(q, a, b, step, f, binds, closed) + ", unnest(st_codes, st_counts) AS st(code, c)",
                 "service, code"),
        _section(SEC_NODES, "NULL::timestamptz, node, context, NULL::text, NULL::int",
                 _NO_COUNTS,
                 _rollup_source(q, floor_time(a, HOUR), ceil_time(b, HOUR), HOUR,
                                frozenset({"node", "context"}), binds, closed, service_only=True),
                 "node, context"),
    ]
    return "\nUNION ALL\n".join(sections), binds.values


def build_raw_sql(q: MetricsQuery) -> tuple[str, list[Any]]:
    binds = Binds()
    conds = [time_condition("created_at", [(q.first_bucket, q.stop)], binds)]
    conds += filter_conditions(q.filters, binds)
    width = binds(q.step, "::interval")
    origin = binds(datetime(2000, 1, 1, tzinfo=UTC), "::timestamptz")
    base = (
        "WITH base AS MATERIALIZED (SELECT created_at, service, node, method, endpoint, consumer, context,"
        " status, response_time FROM requests WHERE " + " AND ".join(conds) + ")\n"
    )
    # no summary section: the time series' buckets cover the same rows (assemble merges them);
    # distinct nodes ignore every filter but the service, so they read `base` when that is all
    nodes_src = "base"
    if q.filters.dims():
        node_conds = [time_condition("created_at", [(q.first_bucket, q.stop)], binds)]
        node_conds += filter_conditions(q.filters, binds, service_only=True)
        nodes_src = "(SELECT node, context FROM requests WHERE " + " AND ".join(node_conds) + ") AS src"
    sections = [
        _section(SEC_TS, f"date_bin({width}, created_at, {origin}) AS bucket, NULL::text AS g1, NULL::text AS g2,"
                 " NULL::text AS g3, NULL::int AS status", _RAW_AGG, "base", "2"),
        _section(SEC_ENDPOINTS, "NULL::timestamptz, service, method, endpoint, NULL::int", _RAW_AGG, "base",
                 "service, method, endpoint", f"ORDER BY n DESC, service, method, endpoint LIMIT {TOP_N}\n"),
        _section(SEC_CONSUMERS, "NULL::timestamptz, consumer, NULL::text, NULL::text, NULL::int", _RAW_AGG, "base",
                 "consumer", f"ORDER BY n DESC, consumer LIMIT {TOP_N}\n"),
        _section(SEC_STATUS, "NULL::timestamptz, service, NULL::text, NULL::text, status::int",
                 _RAW_COUNTS_AGG, "base", "service, status"),
        _section(SEC_NODES, "NULL::timestamptz, node, context, NULL::text, NULL::int",
                 _NO_COUNTS,
                 nodes_src, "node, context"),
    ]
    return base + "\nUNION ALL\n".join(sections), binds.values


def build_sql(q: MetricsQuery, closed: Closed) -> tuple[str, list[Any]]:
    return build_raw_sql(q) if q.step == MINUTE else build_rollup_sql(q, closed)


async def dashboard(conn: asyncpg.Connection, q: MetricsQuery, now: datetime) -> dict[str, Any]:
    """The dashboard response (docs/api.md) for one parsed query."""
    closed = await fetch_closed(conn) if q.step != MINUTE else {}
    sql, args = build_sql(q, closed)
    await conn.execute(f"SET work_mem = '{WORK_MEM}'")
    rows = await conn.fetch(sql, *args)
    return assemble(q, rows, now)


# ---------------------------------------------------------------- assembling the response


def _f(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def iso(t: datetime) -> str:
    t = t.astimezone(UTC)
    if t.microsecond:
        return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _rate(err: int, n: int) -> float:
    return err / n * 100.0 if n else 0.0


class _Group:
    """Figures of one result group: exact counts, 2xx latency and quantiles."""

    __slots__ = ("n", "err", "n2", "s2", "lo", "hi", "qs")

    def __init__(self, n: int, err: int, n2: int, s2: float | None, lo: float | None, hi: float | None,
                 qs: list[float | None]) -> None:
        self.n, self.err, self.n2, self.s2, self.lo, self.hi, self.qs = n, err, n2, s2, lo, hi, qs

    @property
    def avg(self) -> float | None:
        return self.s2 / self.n2 if self.n2 and self.s2 is not None else None

    def latency(self, with_min_max: bool = True) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        if with_min_max:
            out["min_latency"] = self.lo if self.n2 else None
        out["avg_latency"] = self.avg
        out["p50_latency"], out["p95_latency"], out["p99_latency"] = (self.qs if self.n2 else (None, None, None))
        if with_min_max:
            out["max_latency"] = self.hi if self.n2 else None
        return out


_RAW_VALUES = np.dtype([("len", ">i4"), ("v", ">f8")])


def _raw_values(blob: bytes | None) -> np.ndarray:
    """The values of an array_send'ed float8[]: a 1-dimensional array's 20-byte header, then
    a 4-byte length and an 8-byte big-endian value per element."""
    if not blob:
        return np.zeros(0)
    return np.frombuffer(blob, dtype=_RAW_VALUES, offset=20)["v"].astype(np.float64)


def _exact_quantiles(values: np.ndarray) -> list[float | None]:
    """percentile_cont of ``values``, interpolated the way PostgreSQL does: lo + (hi - lo) *
    fraction between the two order statistics around q*(n-1)."""
    if not values.size:
        return [None] * len(QS)
    v = np.sort(values)
    out: list[float | None] = []
    for q in QS:
        pos = q * (v.size - 1)
        i0 = math.floor(pos)
        i1 = math.ceil(pos)
        lo, hi = float(v[i0]), float(v[i1])
        out.append(lo + (hi - lo) * (pos - i0))
    return out


def _groups(rows: list[asyncpg.Record], raw: bool = False) -> tuple[list[_Group], np.ndarray | None]:
    """Groups of one section; for rollup rows also their dense merged histograms. ``raw``: the
    rows carry every 2xx response time (1-minute resolution), so quantiles are exact."""
    if not rows:
        return [], None
    if raw:
        return [_Group(r["n"], r["err"], r["n2"], _f(r["s2"]), _f(r["lo2"]), _f(r["hi2"]),
                       _exact_quantiles(_raw_values(r["blob"]))) for r in rows], None
    if all(r["blob"] is None for r in rows):  # no 2xx response in any group
        return [_Group(r["n"], r["err"], r["n2"], _f(r["s2"]), _f(r["lo2"]), _f(r["hi2"]), [None] * len(QS))
                for r in rows], None
    dense = packed.merge_blobs([r["blob"] for r in rows])
    lo = np.array([np.nan if r["lo2"] is None else r["lo2"] for r in rows], dtype=np.float64)
    hi = np.array([np.nan if r["hi2"] is None else r["hi2"] for r in rows], dtype=np.float64)
    est = packed.quantiles(dense, lo, hi, QS)
    out = [
        _Group(r["n"], r["err"], r["n2"], _f(r["s2"]), _f(r["lo2"]), _f(r["hi2"]), [_f(x) for x in est[i]])
        for i, r in enumerate(rows)
    ]
    return out, dense


def assemble(q: MetricsQuery, rows: list[asyncpg.Record], now: datetime) -> dict[str, Any]:
    by_sec: dict[int, list[asyncpg.Record]] = {s: [] for s in range(SEC_NODES + 1)}
    for r in rows:
        by_sec[r["sec"]].append(r)

    ts_rows = by_sec[SEC_TS]
    raw = q.step == MINUTE
    ts_groups, ts_dense = _groups(ts_rows, raw)
    by_bucket = {r["bucket"]: g for r, g in zip(ts_rows, ts_groups)}

    # summary: the merge of every bucket (their raw values, else their histograms)
    n = sum(g.n for g in ts_groups)
    err = sum(g.err for g in ts_groups)
    n2 = sum(g.n2 for g in ts_groups)
    s2 = sum(g.s2 for g in ts_groups if g.s2 is not None) if n2 else None
    los = [g.lo for g in ts_groups if g.n2 and g.lo is not None]
    his = [g.hi for g in ts_groups if g.n2 and g.hi is not None]
    lo, hi = (min(los), max(his)) if los else (None, None)
    qs: list[float | None] = [None] * 3
    if n2 and raw:
        qs = _exact_quantiles(np.concatenate([_raw_values(r["blob"]) for r in ts_rows]))
    elif n2 and ts_dense is not None:
        est = packed.quantiles(ts_dense.sum(axis=0, keepdims=True), np.array([lo]), np.array([hi]), QS)
        qs = [_f(x) for x in est[0]]
    total = _Group(n, err, n2, s2, lo, hi, qs)

    time_series = []
    for bucket in q.buckets():
        g = by_bucket.get(bucket)
        if g is None:
            time_series.append({
                "bucket": iso(bucket), "total_requests": 0, "error_count": 0,
                "min_latency": None, "avg_latency": None, "p50_latency": None, "p95_latency": None,
                "p99_latency": None, "max_latency": None,
            })
        else:
            time_series.append({"bucket": iso(bucket), "total_requests": g.n, "error_count": g.err, **g.latency()})

    span_end = min(q.stop, max(now, q.first_bucket + MINUTE))
    minutes = max((span_end - q.first_bucket).total_seconds() / 60.0, 1.0)
    metrics_summary = {
        "total_requests": total.n, "error_count": total.err, "error_rate": _rate(total.err, total.n),
        "requests_per_minute": total.n / minutes, **total.latency(),
    }

    ep_rows = by_sec[SEC_ENDPOINTS]
    ep_groups, _ = _groups(ep_rows, raw)
    endpoints = [
        {"endpoint": r["g3"], "method": r["g2"], "service": r["g1"], "total_requests": g.n,
         "error_count": g.err, "error_rate": _rate(g.err, g.n), **g.latency(with_min_max=False)}
        for r, g in zip(ep_rows, ep_groups)
    ]
    endpoints.sort(key=lambda e: (-e["total_requests"], e["service"], e["method"], e["endpoint"]))

    con_rows = by_sec[SEC_CONSUMERS]
    con_groups, _ = _groups(con_rows, raw)
    consumers = [
        {"consumer": r["g1"], "total_requests": g.n, "error_count": g.err, "error_rate": _rate(g.err, g.n),
         **g.latency(with_min_max=False)}
        for r, g in zip(con_rows, con_groups)
    ]
    consumers.sort(key=lambda c: (-c["total_requests"], c["consumer"]))

    services: dict[str, dict[str, Any]] = {}
    for r in by_sec[SEC_STATUS]:
        s = services.setdefault(r["g1"], {"service": r["g1"], "total_requests": 0, "success_2xx": 0,
                                          "warning_3xx": 0, "error_4xx_5xx": 0, "status_breakdown": {}})
        status, count = r["status"], r["n"]
        s["total_requests"] += count
        if 200 <= status < 300:
            s["success_2xx"] += count
        elif 300 <= status < 400:
            s["warning_3xx"] += count
        elif status >= 400:
            s["error_4xx_5xx"] += count
        s["status_breakdown"][str(status)] = count
    for s in services.values():
        s["status_breakdown"] = dict(sorted(s["status_breakdown"].items()))
    status_distribution = sorted(services.values(), key=lambda s: (-s["total_requests"], s["service"]))

    nodes = sorted({r["g1"] for r in by_sec[SEC_NODES] if r["g1"] is not None})
    contexts = sorted({r["g2"] for r in by_sec[SEC_NODES] if r["g2"] is not None})

    return {
        "time_series": time_series,
        "metrics_summary": metrics_summary,
        "endpoints": endpoints,
        "status_distribution": status_distribution,
        "consumers": consumers,
        "system_overview": {"total_requests": total.n, "total_errors": total.err,
                            "error_rate": _rate(total.err, total.n), "avg_latency": total.avg},
        "distinct_nodes": nodes,
        "distinct_contexts": contexts,
        "resolution": q.resolution,
        "start_time": iso(q.start),
        "end_time": iso(q.end),
    }
