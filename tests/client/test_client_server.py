"""The query client against a real malti-server process: known records go in through
POST /api/v1/ingest with service keys, and come back through the client with user keys."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from malti_sdk import (
    AsyncMaltiClient,
    DimensionEndpoint,
    MaltiAuthError,
    MaltiClient,
    MaltiConnectionError,
    MaltiValidationError,
)

# Recent enough for every view (realtime included): 10 minutes ago, spread over 20 seconds.
NOW = datetime.now(timezone.utc).replace(microsecond=0)
BASE = NOW - timedelta(minutes=10)


def at(seconds: float) -> str:
    return (BASE + timedelta(seconds=seconds)).isoformat()


def known_records() -> dict[str, list[dict]]:
    auth = [
        {"service": "auth-service", "node": "node-1", "method": "POST", "endpoint": "/login", "status": 200,
         "response_time": 10.0 * (i + 1), "consumer": "web-app", "context": "password", "created_at": at(i)}
        for i in range(10)
    ]  # fmt: skip
    auth += [
        {"service": "auth-service", "node": "node-1", "method": "POST", "endpoint": "/login", "status": 500,
         "response_time": 5.0, "consumer": "mobile", "context": None, "created_at": at(11)},
        {"service": "auth-service", "node": "node-1", "method": "POST", "endpoint": "/login", "status": 500,
         "response_time": 5.0, "consumer": "mobile", "context": None, "created_at": at(12)},
        {"service": "auth-service", "node": "node-1", "method": "POST", "endpoint": "/login", "status": 401,
         "response_time": 1.0, "consumer": "web-app", "context": None, "created_at": at(13)},
    ]  # fmt: skip
    users = [
        {"service": "user-service", "node": "node-2", "method": "GET", "endpoint": "/users/{user_id}", "status": 200,
         "response_time": 1.5, "consumer": "web-app", "context": None, "created_at": at(14 + i * 0.000123)}
        for i in range(5)
    ]  # fmt: skip
    users.append(
        {"service": "user-service", "node": "node-2", "method": "GET", "endpoint": "/users/{user_id}", "status": 404,
         "response_time": 0.25, "consumer": "web-app", "context": None, "created_at": at(19.5)}
    )  # fmt: skip
    payments = [
        {"service": "payment-service", "node": None, "method": "POST", "endpoint": "/pay", "status": 201,
         "response_time": 250.0, "consumer": "checkout", "context": None, "created_at": at(20)}
        for _ in range(3)
    ]  # fmt: skip
    return {"auth-service": auth, "user-service": users, "payment-service": payments}


@pytest.fixture(scope="module")
def seeded(malti_server):
    for service, records in known_records().items():
        response = malti_server.ingest(records, service=service)
        assert response.status_code == 200, response.text
    malti_server.compact()
    return malti_server


@pytest.fixture
def client(seeded):
    with MaltiClient(seeded.url, api_key=seeded.user_keys["viewer"]) as client:
        yield client


def test_health_of_a_running_server(seeded):
    health = MaltiClient(seeded.url).health()  # no key needed
    assert health.healthy and health.status == "healthy"


def test_aggregate_totals_match_the_ingested_records(client):
    dashboard = client.aggregate(start_time="1h")
    assert dashboard.metrics_summary.total_requests == 22
    assert dashboard.metrics_summary.error_count == 3  # 2 x 500 + 1 x 404; 401 is not an error
    assert dashboard.system_overview.total_requests == 22
    assert sum(point.total_requests for point in dashboard.time_series) == 22
    assert all(point.bucket.tzinfo is not None and point.bucket.utcoffset() == timedelta(0)
               for point in dashboard.time_series)  # fmt: skip
    assert dashboard.resolution in ("1min", "5min")
    assert sorted(dashboard.distinct_nodes) == ["node-1", "node-2"]
    assert dashboard.distinct_contexts == ["password"]


def test_aggregate_filtered_by_service(client):
    dashboard = client.aggregate(service="auth-service", start_time="1h")
    summary = dashboard.metrics_summary
    assert summary.total_requests == 13 and summary.error_count == 2
    assert summary.min_latency == pytest.approx(10.0, rel=0.02)
    assert summary.max_latency == pytest.approx(100.0, rel=0.02)
    assert summary.avg_latency == pytest.approx(55.0, rel=0.02)  # 2xx only
    assert 40.0 <= summary.p50_latency <= 70.0
    [endpoint] = dashboard.endpoints
    assert (endpoint.service, endpoint.method, endpoint.endpoint) == ("auth-service", "POST", "/login")
    assert endpoint.total_requests == 13 and endpoint.error_count == 2
    consumers = {c.consumer: c for c in dashboard.consumers}
    assert consumers["web-app"].total_requests == 11 and consumers["mobile"].total_requests == 2
    assert consumers["mobile"].avg_latency is None  # no 2xx response from mobile
    [status] = dashboard.status_distribution
    assert status.service == "auth-service" and status.success_2xx == 10
    assert status.status_breakdown == {200: 10, 401: 1, 500: 2}


def test_aggregate_filters_by_every_dimension(client):
    assert client.aggregate(consumer="checkout", start_time="1h").metrics_summary.total_requests == 3
    assert client.aggregate(node="node-2", start_time="1h").metrics_summary.total_requests == 6
    assert client.aggregate(method="GET", start_time="1h").metrics_summary.total_requests == 6
    assert client.aggregate(endpoint="/pay", start_time="1h").metrics_summary.total_requests == 3
    assert client.aggregate(context="password", start_time="1h").metrics_summary.total_requests == 10


def test_explicit_interval_and_datetime_range(client):
    dashboard = client.aggregate(start_time=NOW - timedelta(hours=2), end_time=NOW + timedelta(minutes=1),
                                 interval="1hour")  # fmt: skip
    assert dashboard.resolution == "1hour"
    assert dashboard.metrics_summary.total_requests == 22


def test_realtime_uses_minute_buckets(client):
    dashboard = client.realtime()
    assert dashboard.resolution == "1min"
    assert dashboard.metrics_summary.total_requests == 22
    steps = {b.bucket - a.bucket for a, b in zip(dashboard.time_series, dashboard.time_series[1:])}
    assert steps == {timedelta(minutes=1)}


def test_requests_pages_are_newest_first_and_follow_cursors(client):
    page = client.requests(limit=5)
    assert len(page) == 5 and page.next_cursor
    times = [r.created_at for r in page]
    assert times == sorted(times, reverse=True)
    records = list(client.iter_requests(page_size=4))
    assert len(records) == 22 and len({r.id for r in records}) == 22
    assert [r.created_at for r in records] == sorted((r.created_at for r in records), reverse=True)


def test_request_records_keep_their_fields_and_precision(client):
    records = list(client.iter_requests(service="user-service"))
    assert len(records) == 6
    not_found = [r for r in records if r.status == 404]
    assert len(not_found) == 1 and not_found[0].response_time == pytest.approx(0.25)
    sent = sorted(datetime.fromisoformat(r["created_at"]) for r in known_records()["user-service"])
    assert sorted(r.created_at for r in records) == sent  # microseconds survive, tz-aware UTC
    assert all(r.node == "node-2" and r.context is None for r in records)


def test_requests_filtered_by_status_and_limit(client):
    errors = list(client.iter_requests(status=500))
    assert len(errors) == 2 and {r.consumer for r in errors} == {"mobile"}
    assert len(list(client.iter_requests(limit=7))) == 7


def test_dimensions_list_the_values_seen(client):
    dimensions = client.dimensions()
    assert sorted(dimensions.services) == ["auth-service", "payment-service", "user-service"]
    assert DimensionEndpoint("/login", "POST", "auth-service") in dimensions.endpoints
    assert sorted(dimensions.methods) == ["GET", "POST"]
    assert sorted(dimensions.consumers) == ["checkout", "mobile", "web-app"]
    assert dimensions.contexts == ["password"]
    assert client.dimensions(service="payment-service").services == ["payment-service"]


def test_auth_test_names_the_user_and_thresholds(seeded, client):
    info = client.auth_test()
    assert info.authenticated and info.user.name == "viewer" and info.user.services is None
    assert info.thresholds.latency_warning_threshold > info.thresholds.latency_success_threshold
    with MaltiClient(seeded.url, api_key=seeded.user_keys["restricted"]) as restricted:
        assert restricted.auth_test().user.services == ["auth-service"]


def test_restricted_user_sees_only_their_services(seeded):
    with MaltiClient(seeded.url, api_key=seeded.user_keys["restricted"]) as restricted:
        assert restricted.aggregate(start_time="1h").metrics_summary.total_requests == 13
        with pytest.raises(MaltiAuthError) as caught:
            restricted.aggregate(service="payment-service")
        assert caught.value.status == 403 and caught.value.detail


def test_unknown_key_is_an_auth_error_with_status_401(seeded):
    with MaltiClient(seeded.url, api_key="not-a-key") as client, pytest.raises(MaltiAuthError) as caught:
        client.aggregate()
    assert caught.value.status == 401


def test_service_key_cannot_read_metrics(seeded):
    with MaltiClient(seeded.url, api_key=seeded.service_keys["auth-service"]) as client:
        with pytest.raises(MaltiAuthError) as caught:
            client.aggregate()
    assert caught.value.status == 403


def test_inverted_range_is_a_validation_error(client):
    with pytest.raises(MaltiValidationError) as caught:
        client.aggregate(start_time=NOW, end_time=NOW - timedelta(hours=1))
    assert caught.value.status == 422 and caught.value.detail


def test_stopped_server_is_a_connection_error(start_server):
    server = start_server()
    url = server.url
    server.stop()
    with MaltiClient(url, api_key="x", timeout=5) as client, pytest.raises(MaltiConnectionError, match=url):
        client.aggregate()


async def test_async_client_reads_the_same_numbers(seeded):
    async with AsyncMaltiClient(seeded.url, api_key=seeded.user_keys["viewer"]) as client:
        dashboard = await client.aggregate(service="auth-service", start_time="1h")
        assert dashboard.metrics_summary.total_requests == 13
        records = [r async for r in client.iter_requests(page_size=10)]
        assert len(records) == 22
        assert (await client.dimensions()).methods == ["GET", "POST"]
        assert (await client.health()).healthy


# The documented JSON fields (docs/api.md); the client parses leniently, so check the contract directly.
DOCUMENTED = {
    "aggregate": {"time_series", "metrics_summary", "endpoints", "status_distribution", "consumers",
                  "system_overview", "distinct_nodes", "distinct_contexts", "resolution", "start_time", "end_time"},
    "time_series": {"bucket", "total_requests", "error_count", "min_latency", "avg_latency", "p50_latency",
                    "p95_latency", "p99_latency", "max_latency"},
    "metrics_summary": {"total_requests", "error_count", "error_rate", "requests_per_minute", "min_latency",
                        "avg_latency", "p50_latency", "p95_latency", "p99_latency", "max_latency"},
    "endpoints": {"endpoint", "method", "service", "total_requests", "error_count", "error_rate", "avg_latency",
                  "p50_latency", "p95_latency", "p99_latency"},
    "status_distribution": {"service", "total_requests", "success_2xx", "warning_3xx", "error_4xx_5xx",
                            "status_breakdown"},
    "consumers": {"consumer", "total_requests", "error_count", "error_rate", "avg_latency", "p50_latency",
                  "p95_latency", "p99_latency"},
    "system_overview": {"total_requests", "total_errors", "error_rate", "avg_latency"},
    "request": {"id", "service", "node", "method", "endpoint", "status", "response_time", "consumer", "context",
                "created_at"},
    "dimensions": {"services", "nodes", "endpoints", "methods", "consumers", "contexts"},
}  # fmt: skip


def test_server_json_has_every_documented_field(seeded):
    body = seeded.get("/api/v1/metrics/aggregate", start_time=(NOW - timedelta(hours=1)).isoformat()).json()
    assert DOCUMENTED["aggregate"] <= set(body)
    for part in ("time_series", "endpoints", "status_distribution", "consumers"):
        assert body[part], part
        for item in body[part]:
            assert DOCUMENTED[part] <= set(item), (part, set(DOCUMENTED[part]) - set(item))
    for part in ("metrics_summary", "system_overview"):
        assert DOCUMENTED[part] <= set(body[part]), (part, DOCUMENTED[part] - set(body[part]))
    assert body["start_time"].endswith("Z") and body["time_series"][0]["bucket"].endswith("Z")
    page = seeded.get("/api/v1/metrics/requests", limit=2).json()
    assert set(page) == {"requests", "next_cursor"}
    assert all(DOCUMENTED["request"] <= set(r) for r in page["requests"])
    assert page["requests"][0]["created_at"].endswith("Z")
    dimensions = seeded.get("/api/v1/metrics/dimensions").json()
    assert DOCUMENTED["dimensions"] <= set(dimensions)
    assert all({"endpoint", "method", "service"} <= set(e) for e in dimensions["endpoints"])
    auth = seeded.get("/api/v1/auth/test").json()
    assert {"authenticated", "user", "thresholds"} <= set(auth)
    assert {"error_rate_success_threshold", "error_rate_warning_threshold", "latency_success_threshold",
            "latency_warning_threshold"} <= set(auth["thresholds"])  # fmt: skip
