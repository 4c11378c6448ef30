"""The query client's pure parts: arguments, JSON parsing, error mapping, cursor following.

A real server is used in test_client_server.py; here httpx.MockTransport stands in only to
produce answers a healthy server never gives (malformed JSON, 429, 5xx pages, ...).
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import httpx
import pytest

from malti_sdk import (
    AsyncMaltiClient,
    Dashboard,
    MaltiAPIError,
    MaltiAuthError,
    MaltiClient,
    MaltiConnectionError,
    MaltiError,
    MaltiNotFoundError,
    MaltiRateLimitError,
    MaltiResponseError,
    MaltiServerError,
    MaltiUsageError,
    MaltiValidationError,
    RequestPage,
)
from malti_sdk._client import format_time, resolve_time

DASHBOARD = {
    "time_series": [
        {"bucket": "2026-11-23T10:00:00Z", "total_requests": 120, "error_count": 3, "min_latency": 0.4,
         "avg_latency": 12.5, "p50_latency": 9.1, "p95_latency": 40.2, "p99_latency": 80.3, "max_latency": 120.0},
        {"bucket": "2026-11-23T10:05:00+00:00", "total_requests": 0, "error_count": 0, "min_latency": None,
         "avg_latency": None, "p50_latency": None, "p95_latency": None, "p99_latency": None, "max_latency": None},
    ],
    "metrics_summary": {"total_requests": 1200, "error_count": 30, "error_rate": 2.5, "requests_per_minute": 20.0,
                        "min_latency": 0.4, "avg_latency": 12.5, "p50_latency": 9.1, "p95_latency": 40.2,
                        "p99_latency": 80.3, "max_latency": 120.0},
    "endpoints": [{"endpoint": "/users/{user_id}", "method": "GET", "service": "user-service",
                   "total_requests": 500, "error_count": 5, "error_rate": 1.0, "avg_latency": 10.0,
                   "p50_latency": 8.0, "p95_latency": 30.0, "p99_latency": 50.0}],
    "status_distribution": [{"service": "user-service", "total_requests": 500, "success_2xx": 480,
                             "warning_3xx": 5, "error_4xx_5xx": 15,
                             "status_breakdown": {"200": 480, "304": 5, "404": 10, "500": 5}}],
    "consumers": [{"consumer": "web-app", "total_requests": 300, "error_count": 2, "error_rate": 0.67,
                   "avg_latency": 11.0, "p50_latency": 9.0, "p95_latency": 35.0, "p99_latency": 60.0}],
    "system_overview": {"total_requests": 1200, "total_errors": 30, "error_rate": 2.5, "avg_latency": 12.5},
    "distinct_nodes": ["node-1", "node-2"],
    "distinct_contexts": ["password"],
    "resolution": "5min",
    "start_time": "2026-11-16T10:00:00Z",
    "end_time": "2026-11-23T10:00:00Z",
}  # fmt: skip


def record(i: int) -> dict:
    return {"id": i, "service": "user-service", "node": "node-1", "method": "GET", "endpoint": "/users/{user_id}",
            "status": 200, "response_time": 0.731, "consumer": "web-app", "context": None,
            "created_at": "2026-11-23T10:00:01.123456Z"}  # fmt: skip


def client_for(handler, **kwargs) -> MaltiClient:
    return MaltiClient("http://malti.test", api_key="user-key", transport=httpx.MockTransport(handler), **kwargs)


def test_dashboard_parses_every_documented_field_into_typed_values():
    dashboard = Dashboard.from_json(DASHBOARD)
    first, empty = dashboard.time_series
    assert first.bucket == datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
    assert first.p95_latency == 40.2 and first.error_count == 3
    assert empty.bucket.tzinfo is not None and empty.avg_latency is None
    assert dashboard.metrics_summary.requests_per_minute == 20.0
    assert dashboard.endpoints[0].endpoint == "/users/{user_id}"
    assert dashboard.status_distribution[0].status_breakdown == {200: 480, 304: 5, 404: 10, 500: 5}
    assert dashboard.consumers[0].error_rate == 0.67
    assert dashboard.system_overview.total_errors == 30
    assert dashboard.distinct_nodes == ["node-1", "node-2"]
    assert dashboard.resolution == "5min"
    assert dashboard.start_time == datetime(2026, 11, 16, 10, tzinfo=timezone.utc)


def test_dashboard_of_the_original_server_without_new_fields_still_parses():
    original = {key: value for key, value in DASHBOARD.items() if key not in ("resolution", "start_time", "end_time")}
    original["time_series"] = [{"bucket": "2026-11-23T10:00:00", "total_requests": 5, "avg_latency": 3}]
    dashboard = Dashboard.from_json(original)
    assert dashboard.resolution is None
    assert dashboard.time_series[0].bucket.tzinfo == timezone.utc  # naive means UTC
    assert dashboard.time_series[0].p99_latency is None


def test_offset_times_are_converted_to_utc():
    dashboard = Dashboard.from_json({**DASHBOARD, "start_time": "2026-11-16T12:00:00+02:00"})
    assert dashboard.start_time == datetime(2026, 11, 16, 10, tzinfo=timezone.utc)
    assert dashboard.start_time.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "broken",
    [
        {"time_series": "nope"},
        {**DASHBOARD, "time_series": [{"total_requests": 1}]},
        {**DASHBOARD, "metrics_summary": {"total_requests": "many"}},
        {**DASHBOARD, "start_time": "yesterday"},
        [1, 2, 3],
    ],
)
def test_malformed_answers_raise_response_error(broken):
    with pytest.raises(MaltiResponseError):
        Dashboard.from_json(broken)


def test_request_page_parses_records_and_cursor():
    page = RequestPage.from_json({"requests": [record(1), record(2)], "next_cursor": "abc"})
    assert len(page) == 2 and page.next_cursor == "abc"
    assert page.requests[0].response_time == 0.731
    assert page.requests[0].created_at == datetime(2026, 11, 23, 10, 0, 1, 123456, tzinfo=timezone.utc)
    with pytest.raises(MaltiResponseError):
        RequestPage.from_json({"requests": [{**record(1), "status": "ok"}], "next_cursor": None})


def test_query_parameters_are_sent_in_the_api_form():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=DASHBOARD)

    with client_for(handler) as client:
        client.aggregate(
            service="auth-service", endpoint="/login", method="POST", consumer="web", context="pw", node="n1",
            start_time=datetime(2026, 11, 23, 12, 0, tzinfo=timezone(timedelta(hours=2))),
            end_time="2026-11-23T11:00:00", interval="1h",
        )  # fmt: skip
    request = seen[0]
    assert request.url.path == "/api/v1/metrics/aggregate"
    assert request.headers["X-API-Key"] == "user-key"
    assert dict(request.url.params) == {
        "service": "auth-service", "node": "n1", "method": "POST", "endpoint": "/login", "consumer": "web",
        "context": "pw", "start_time": "2026-11-23T10:00:00Z", "end_time": "2026-11-23T11:00:00Z",
        "interval": "1hour",
    }  # fmt: skip


def test_relative_times_mean_that_long_before_now():
    now = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
    assert resolve_time("24h", now=now) == now - timedelta(hours=24)
    assert resolve_time("7d", now=now) == now - timedelta(days=7)
    assert resolve_time("15m", now=now) == now - timedelta(minutes=15)
    assert resolve_time("1y", now=now) == now - timedelta(days=365)
    assert resolve_time("now", now=now) == now
    assert resolve_time(timedelta(hours=1), now=now) == now - timedelta(hours=1)
    assert resolve_time(date(2026, 11, 1)) == datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert format_time(now) == "2026-11-23T12:00:00Z"


def _sent_params(*calls) -> list[dict]:
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.url.params))
        return httpx.Response(200, json=DASHBOARD)

    with client_for(handler) as client:
        for call in calls:
            call(client)
    return seen


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_relative_start_and_end_share_one_now():
    (params,) = _sent_params(lambda c: c.aggregate(start_time="24h", end_time="now", interval="1min"))
    assert _utc(params["end_time"]) - _utc(params["start_time"]) == timedelta(hours=24)


def test_a_relative_start_alone_leaves_the_end_to_the_server():
    # the server's clock decides what "now" is (a client clock behind it must not hide records)
    (params,) = _sent_params(lambda c: c.aggregate(start_time="24h"))
    assert set(params) == {"start_time"}


def test_an_absolute_start_leaves_the_end_to_the_server():
    (params,) = _sent_params(lambda c: c.aggregate(start_time="2026-11-23T10:00:00Z"))
    assert params == {"start_time": "2026-11-23T10:00:00Z"}


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.aggregate(start_time="3M"),  # minutes or months? refused, with both spellings offered
        lambda c: c.aggregate(start_time="last tuesday"),
        lambda c: c.aggregate(interval="2min"),
        lambda c: c.aggregate(service=42),
        lambda c: c.requests(limit=0),
        lambda c: c.requests(limit=5000),
        lambda c: c.requests(status=42),
        lambda c: list(c.iter_requests(limit=-1)),
    ],
)
def test_bad_arguments_raise_usage_error_before_any_request(call):
    def handler(request):  # pragma: no cover - must not be reached
        raise AssertionError("no request expected")

    with client_for(handler) as client, pytest.raises(MaltiUsageError):
        call(client)


def test_missing_key_is_a_usage_error_naming_the_variable(monkeypatch):
    monkeypatch.delenv("MALTI_USER_KEY", raising=False)
    client = MaltiClient("http://malti.test", transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    with pytest.raises(MaltiUsageError, match="MALTI_USER_KEY"):
        client.aggregate()


def test_url_and_key_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("MALTI_URL", "http://from-env:9000/")
    monkeypatch.setenv("MALTI_USER_KEY", "env-key")
    seen = []

    def handler(request):
        seen.append(request)
        return httpx.Response(200, json={"status": "healthy"})

    client = MaltiClient(transport=httpx.MockTransport(handler))
    assert client.base_url == "http://from-env:9000"
    assert "env-key" not in repr(client)
    client.health()
    assert seen[0].url.host == "from-env"


def test_default_url_is_localhost(monkeypatch):
    monkeypatch.delenv("MALTI_URL", raising=False)
    assert MaltiClient().base_url == "http://127.0.0.1:8000"


@pytest.mark.parametrize(
    ("status", "exc_type"),
    [
        (400, MaltiAPIError),
        (401, MaltiAuthError),
        (403, MaltiAuthError),
        (404, MaltiNotFoundError),
        (422, MaltiValidationError),
        (429, MaltiRateLimitError),
        (500, MaltiServerError),
        (503, MaltiServerError),
    ],
)
def test_error_statuses_map_to_exceptions_carrying_status_and_detail(status, exc_type):
    def handler(request):
        return httpx.Response(
            status,
            json={"detail": f"went wrong {status}", "errors": [{"index": None, "field": "start_time", "error": "x"}]},
            headers={"Retry-After": "7"},
        )

    with client_for(handler) as client, pytest.raises(exc_type) as caught:
        client.dimensions()
    error = caught.value
    assert isinstance(error, MaltiAPIError) and isinstance(error, MaltiError)
    assert error.status == status
    assert error.detail == f"went wrong {status}"
    assert error.errors == [{"index": None, "field": "start_time", "error": "x"}]
    if isinstance(error, (MaltiRateLimitError, MaltiServerError)):
        assert error.retry_after == 7.0


def test_error_without_json_body_keeps_the_text():
    with client_for(lambda r: httpx.Response(502, text="Bad Gateway from proxy")) as client:
        with pytest.raises(MaltiServerError, match="Bad Gateway from proxy"):
            client.aggregate()


def test_an_html_error_page_is_named_as_such_not_quoted():
    page = "<!doctype html><html><body>" + "x" * 2000 + "</body></html>"
    answer = lambda r: httpx.Response(404, text=page, headers={"content-type": "text/html; charset=utf-8"})
    with client_for(answer) as client:
        with pytest.raises(MaltiNotFoundError) as caught:
            client.aggregate()
    assert "is MALTI_URL a Malti server?" in str(caught.value) and "<html" not in str(caught.value)


def test_a_200_that_is_not_json_is_a_response_error():
    with client_for(lambda r: httpx.Response(200, text="<html>hello</html>")) as client:
        with pytest.raises(MaltiResponseError, match="not JSON"):
            client.aggregate()


def test_unreachable_server_is_a_connection_error():
    def handler(request):
        raise httpx.ConnectError("connection refused", request=request)

    with client_for(handler) as client, pytest.raises(MaltiConnectionError, match="cannot reach"):
        client.aggregate()


def test_health_503_is_a_result_not_an_exception():
    answer = {"status": "unhealthy", "database": "connection refused"}
    with client_for(lambda r: httpx.Response(503, json=answer)) as client:
        health = client.health()
    assert not health.healthy and health.database == "connection refused"


def test_iter_requests_follows_cursors_and_stops_at_the_limit():
    seen = []

    def handler(request):
        seen.append(dict(request.url.params))
        cursor = int(request.url.params.get("cursor", "0"))
        size = int(request.url.params["limit"])
        records = [record(cursor + i) for i in range(size)]
        return httpx.Response(200, json={"requests": records, "next_cursor": str(cursor + size)})

    with client_for(handler) as client:
        ids = [r.id for r in client.iter_requests(service="user-service", limit=2500)]
    assert ids == list(range(2500))
    assert [params.get("limit") for params in seen] == ["1000", "1000", "500"]
    assert all(params["service"] == "user-service" for params in seen)
    assert "cursor" not in seen[0] and seen[1]["cursor"] == "1000"


def test_iter_requests_stops_on_the_last_page():
    pages = iter([{"requests": [record(1), record(2)], "next_cursor": "x"}, {"requests": [record(3)], "next_cursor": None}])
    with client_for(lambda r: httpx.Response(200, json=next(pages))) as client:
        assert [r.id for r in client.iter_requests()] == [1, 2, 3]


def test_html_repr_escapes_text_from_the_data():
    hostile = {**DASHBOARD, "endpoints": [{**DASHBOARD["endpoints"][0], "endpoint": "<script>alert(1)</script>"}]}
    markup = Dashboard.from_json(hostile)._repr_html_()
    assert "<script>" not in markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markup


async def test_async_client_shares_the_behaviour():
    def handler(request):
        if request.url.path == "/api/v1/metrics/aggregate":
            return httpx.Response(200, json=DASHBOARD)
        if request.url.path == "/api/v1/metrics/requests":
            cursor = request.url.params.get("cursor")
            if cursor is None:
                return httpx.Response(200, json={"requests": [record(1)], "next_cursor": "c1"})
            return httpx.Response(200, json={"requests": [record(2)], "next_cursor": None})
        return httpx.Response(401, json={"detail": "Invalid API key"})

    async with AsyncMaltiClient("http://malti.test", api_key="k", transport=httpx.MockTransport(handler)) as client:
        dashboard = await client.aggregate(start_time="1h")
        assert dashboard.metrics_summary.total_requests == 1200
        assert [r.id async for r in client.iter_requests()] == [1, 2]
        with pytest.raises(MaltiAuthError, match="Invalid API key"):
            await client.auth_test()


def test_result_objects_are_plain_dataclasses():
    dashboard = Dashboard.from_json(DASHBOARD)
    assert json.loads(json.dumps(dashboard.status_distribution[0].status_breakdown)) == {
        "200": 480, "304": 5, "404": 10, "500": 5,
    }  # fmt: skip


@pytest.mark.parametrize("url", ["ftp://host", "http://", "http://exa mple.com", "http://[::1", "localhost:8000"])
def test_unusable_urls_are_usage_errors(url):
    with pytest.raises(MaltiUsageError):
        MaltiClient(url, api_key="k")


def test_a_closed_client_says_so():
    client = client_for(lambda r: httpx.Response(200, json=DASHBOARD))
    client.close()
    with pytest.raises(MaltiUsageError, match="closed"):
        client.aggregate()


def test_a_redirect_names_the_final_address():
    redirect = httpx.Response(301, headers={"Location": "https://malti.example/"})
    with client_for(lambda r: redirect) as client, pytest.raises(MaltiAPIError, match="https://malti.example/"):
        client.aggregate()


def test_an_undecodable_body_is_a_response_error():
    def handler(request):
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=b"not gzip at all")

    with client_for(handler) as client, pytest.raises(MaltiResponseError):
        client.aggregate()


def test_a_cursor_that_does_not_advance_stops_the_iteration():
    stuck = {"requests": [record(1)], "next_cursor": "same"}
    with client_for(lambda r: httpx.Response(200, json=stuck)) as client, pytest.raises(MaltiResponseError):
        list(client.iter_requests())
