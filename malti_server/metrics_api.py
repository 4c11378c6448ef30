"""HTTP handlers of the metrics read API (user keys): dashboard aggregates, raw records, dimensions.

The handlers only authenticate, parse (malti_server.queries.params), run one query on a pooled
connection and encode JSON; the SQL and the maths live in malti_server.queries.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import asyncpg
import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .auth import require_user
from .db import UNAVAILABLE_ERRORS
from .errors import ApiError, unavailable
from .queries import dashboard as dashboard_q
from .queries import dimensions as dimensions_q
from .queries import params as params_q
from .queries import raw_requests as raw_q
from .queries.params import MetricsQuery, QueryError

_encoder = msgspec.json.Encoder()


def _json(body: Any) -> Response:
    return Response(_encoder.encode(body), media_type="application/json", headers={"Cache-Control": "no-store"})


def _api_error(exc: QueryError) -> ApiError:
    if exc.status == 422:
        return ApiError(422, exc.message, errors=[{"index": None, "field": exc.field, "error": exc.message}])
    return ApiError(exc.status, exc.message)


async def _run(
    request: Request,
    parse: Callable[[Any, frozenset[str] | None, datetime], MetricsQuery],
    run: Callable[[asyncpg.Connection, MetricsQuery, datetime], Awaitable[dict[str, Any]]],
) -> Response:
    principal = await require_user(request)
    now = datetime.now(timezone.utc)
    try:
        query = parse(request.query_params, principal.services, now)
    except QueryError as exc:
        raise _api_error(exc) from None
    try:
        async with request.app.state.pool.acquire() as conn:
            result = await run(conn, query, now)
    except QueryError as exc:
        raise _api_error(exc) from None
    except UNAVAILABLE_ERRORS:
        raise unavailable() from None
    return _json(result)


async def aggregate(request: Request) -> Response:
    """GET /api/v1/metrics/aggregate: the dashboard (resolution by range and interval)."""
    return await _run(request, params_q.parse_aggregate, dashboard_q.dashboard)


async def aggregate_realtime(request: Request) -> Response:
    """GET /api/v1/metrics/aggregate/realtime: the dashboard in 1-minute buckets, at most 60 minutes."""
    return await _run(
        request,
        lambda p, allowed, now: params_q.parse_aggregate(p, allowed, now, realtime=True),
        dashboard_q.dashboard,
    )


async def requests(request: Request) -> Response:
    """GET /api/v1/metrics/requests (alias /raw): raw records, newest first, keyset-paginated."""
    return await _run(request, params_q.parse_requests, lambda conn, q, now: raw_q.list_requests(conn, q))


async def dimensions(request: Request) -> Response:
    """GET /api/v1/metrics/dimensions: distinct services, nodes, endpoints, consumers, contexts."""
    return await _run(request, params_q.parse_dimensions, lambda conn, q, now: dimensions_q.dimensions(conn, q))


routes = [
    Route("/api/v1/metrics/aggregate", aggregate, methods=["GET"]),
    Route("/api/v1/metrics/aggregate/realtime", aggregate_realtime, methods=["GET"]),
    Route("/api/v1/metrics/requests", requests, methods=["GET"]),
    Route("/api/v1/metrics/raw", requests, methods=["GET"]),
    Route("/api/v1/metrics/dimensions", dimensions, methods=["GET"]),
]
