"""A deterministic data source for snapshot tests and layout checks: a fixed
dashboard, fixed dimensions and fixed requests, whatever the clock says."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta, timezone

from malti_tui.data import (
    AuthFailed,
    AuthInfo,
    Bucket,
    ConsumerStat,
    Dashboard,
    Dimensions,
    EndpointRef,
    EndpointStat,
    Query,
    RequestRecord,
    ServerUnavailable,
    ServiceStatus,
    Summary,
    Thresholds,
)

FIXED_NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=timezone.utc)
GOOD_KEY = "user-key-ok"
INJECTION = "[bold red]x[/]"


def fixed_clock() -> datetime:
    return FIXED_NOW


def _series(count: int, step: timedelta) -> tuple[Bucket, ...]:
    start = FIXED_NOW - step * count
    buckets = []
    for i in range(count):
        wave = (i * 37) % 11
        total = 100 + wave * 12 + (i % 7) * 5
        errors = (i * 13) % 5
        buckets.append(
            Bucket(
                bucket=start + step * (i + 1),
                total_requests=total,
                error_count=errors,
                min_latency=1.0 + (i % 3) * 0.5,
                avg_latency=20.0 + wave * 2.0,
                p50_latency=15.0 + wave,
                p95_latency=60.0 + wave * 8.0,
                p99_latency=120.0 + wave * 10.0,
                max_latency=200.0 + wave * 25.0,
            )
        )
    return tuple(buckets)


ENDPOINTS = (
    EndpointStat("/users/{user_id}", "GET", "user-service", 2400, 12, 0.5, 18.2, 14.0, 52.0, 110.0),
    EndpointStat("/login", "POST", "auth-service", 1500, 45, 3.0, 95.0, 80.0, 420.0, 900.0),
    EndpointStat("/payments", "POST", "payment-service", 900, 9, 1.0, 310.0, 250.0, 820.0, 1450.0),
    EndpointStat(INJECTION, "GET", "user-service", 300, 0, 0.0, 5.0, 4.0, 9.0, 12.0),
    EndpointStat("/health", "GET", "auth-service", 120, 0, 0.0, 0.8, 0.7, 1.2, 2.0),
)
CONSUMERS = (
    ConsumerStat("web-app", 2600, 20, 0.77, 25.0, 80.0),
    ConsumerStat("mobile-app", 1700, 30, 1.76, 60.0, 300.0),
    ConsumerStat("batch-job", 640, 16, 2.5, 200.0, 700.0),
    ConsumerStat(INJECTION, 200, 0, 0.0, 4.0, 8.0),
    ConsumerStat("", 80, 0, 0.0, 1.0, 2.0),
)
STATUSES = (
    ServiceStatus("user-service", 2700, 2640, 40, 20, {"200": 2600, "201": 40, "304": 40, "404": 15, "500": 5}),
    ServiceStatus("auth-service", 1620, 1530, 0, 90, {"200": 1530, "401": 45, "403": 20, "500": 25}),
    ServiceStatus("payment-service", 900, 880, 0, 20, {"200": 870, "201": 10, "502": 20}),
)


def fixed_dashboard(query: Query) -> Dashboard:
    realtime = query.time_range.realtime
    series = _series(60, timedelta(minutes=1)) if realtime else _series(72, timedelta(minutes=5))
    return Dashboard(
        summary=Summary(
            total_requests=5220,
            error_count=66,
            error_rate=1.26,
            requests_per_minute=87.0,
            min_latency=0.4,
            avg_latency=42.5,
            p50_latency=18.0,
            p95_latency=350.0,
            p99_latency=980.0,
            max_latency=2500.0,
        ),
        time_series=series,
        endpoints=ENDPOINTS,
        consumers=CONSUMERS,
        status_distribution=STATUSES,
        distinct_nodes=("node-1", "node-2"),
        distinct_contexts=("password",),
        resolution="1min" if realtime else "5min",
    )


def fixed_requests(count: int = 30) -> list[RequestRecord]:
    records = []
    for i in range(count):
        endpoint = ENDPOINTS[i % len(ENDPOINTS)]
        records.append(
            RequestRecord(
                id=1000 - i,
                created_at=FIXED_NOW - timedelta(seconds=7 * i),
                service=endpoint.service,
                method=endpoint.method,
                endpoint=endpoint.endpoint,
                status=(200, 200, 201, 404, 500, 200, 304)[i % 7],
                response_time=0.5 + (i * 17 % 90),
                consumer=CONSUMERS[i % len(CONSUMERS)].consumer,
                node="node-1",
            )
        )
    return records


class FixedDataSource:
    """Serves the fixed data set; records every query it was asked."""

    def __init__(self, url: str = "http://malti.test", api_key: str = GOOD_KEY, *, empty: bool = False,
                 down: bool = False, delay: float = 0.0) -> None:
        self.url = url
        self.api_key = api_key
        self.empty = empty
        self.down = down
        self.delay = delay
        self.queries: list[Query] = []
        self.closed = False

    async def _wait(self) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            raise ServerUnavailable(f"Cannot reach the Malti server at {self.url} (connection refused). Retrying.")

    async def auth_test(self) -> AuthInfo:
        await self._wait()
        if self.api_key != GOOD_KEY:
            raise AuthFailed("The server refused the API key (401): Invalid API key. Check the user key.")
        return AuthInfo("viewer", None, Thresholds())

    async def dashboard(self, query: Query) -> Dashboard:
        self.queries.append(query)
        await self._wait()
        if self.api_key != GOOD_KEY:
            raise AuthFailed("The server refused the API key (401): Invalid API key. Check the user key.")
        if self.empty:
            return replace(Dashboard(), time_series=_series(60, timedelta(minutes=1)))
        return fixed_dashboard(query)

    async def dimensions(self, query: Query) -> Dimensions:
        await self._wait()
        return Dimensions(
            services=tuple(s.service for s in STATUSES),
            nodes=("node-1", "node-2"),
            endpoints=tuple(EndpointRef(e.endpoint, e.method, e.service) for e in ENDPOINTS),
            methods=("GET", "POST"),
            consumers=tuple(c.consumer for c in CONSUMERS),
            contexts=("password",),
        )

    async def requests(self, query: Query, limit: int = 100, status: int | None = None) -> list[RequestRecord]:
        await self._wait()
        if self.empty:
            return []
        return fixed_requests()[:limit]

    async def aclose(self) -> None:
        self.closed = True
