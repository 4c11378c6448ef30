"""Distinct dimension values seen in a time range (filter pickers), from the small rollup levels.

Values are those of the hours overlapping the range; only the service filter (and the reader's
service restriction) applies.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from .params import HOUR, MetricsQuery
from .sql import Binds, Closed, fetch_closed, filter_conditions, plan_sources, time_condition


def _distinct(q: MetricsQuery, need: frozenset[str], columns: str, kind: int, binds: Binds, closed: Closed) -> str:
    parts = []
    for level, intervals in plan_sources(q.first_bucket, q.stop, HOUR, need, closed=closed):
        conds = [time_condition("bucket", intervals, binds)] + filter_conditions(q.filters, binds, service_only=True)
        parts.append(f"SELECT {columns} FROM {level.view} WHERE " + " AND ".join(conds))
    body = " UNION ".join(parts) if parts else f"SELECT {columns} FROM rollup_nc_1h_all WHERE false"
    return f"SELECT {kind} AS kind, * FROM ({body}) AS d{kind}"


def build_sql(q: MetricsQuery, closed: Closed) -> tuple[str, list[Any]]:
    binds = Binds()
    parts = [
        _distinct(q, frozenset({"node", "context"}), "service AS a, node AS b, context AS c", 0, binds, closed),
        _distinct(q, frozenset({"method", "endpoint"}), "service, method, endpoint", 1, binds, closed),
        _distinct(q, frozenset({"consumer"}), "service, consumer, NULL::text", 2, binds, closed),
    ]
    return "\nUNION ALL\n".join(parts), binds.values


async def dimensions(conn: asyncpg.Connection, q: MetricsQuery) -> dict[str, Any]:
    sql, args = build_sql(q, await fetch_closed(conn))
    rows = await conn.fetch(sql, *args)
    services: set[str] = set()
    nodes: set[str] = set()
    contexts: set[str] = set()
    endpoints: set[tuple[str, str, str]] = set()
    consumers: set[str] = set()
    for kind, a, b, c in rows:
        services.add(a)
        if kind == 0:
            if b is not None:
                nodes.add(b)
            if c is not None:
                contexts.add(c)
        elif kind == 1:
            endpoints.add((c, b, a))
        else:
            consumers.add(b)
    return {
        "services": sorted(services),
        "nodes": sorted(nodes),
        "endpoints": [{"endpoint": e, "method": m, "service": s} for e, m, s in sorted(endpoints)],
        "methods": sorted({m for _, m, _ in endpoints}),
        "consumers": sorted(consumers),
        "contexts": sorted(contexts),
    }
