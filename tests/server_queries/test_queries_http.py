"""The metrics read API over real HTTP against a real server: shapes, validation, access control,
pagination while data arrives, dimensions."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from malti_testing import record

UTC = timezone.utc
AGG = "/api/v1/metrics/aggregate"
RT = "/api/v1/metrics/aggregate/realtime"
REQ = "/api/v1/metrics/requests"
DIM = "/api/v1/metrics/dimensions"

TS_FIELDS = {"bucket", "total_requests", "error_count", "min_latency", "avg_latency", "p50_latency",
             "p95_latency", "p99_latency", "max_latency"}


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def tag() -> str:
    return uuid.uuid4().hex[:10]


def ingest_ok(server, records):
    for i in range(0, len(records), 500):
        chunk = records[i:i + 500]
        by_service = {}
        for r in chunk:
            by_service.setdefault(r["service"], []).append(r)
        for service, recs in by_service.items():
            resp = server.ingest(recs, service=service)
            assert resp.status_code == 200, resp.text


def test_aggregate_sees_records_as_soon_as_ingest_answers(malti_server):
    t = tag()
    now = datetime.now(UTC)
    recs = [record(endpoint=f"/agg/{t}", consumer=f"c-{t}", status=s, response_time=rt,
                   created_at=iso(now - timedelta(minutes=3)))
            for s, rt in [(200, 10.0), (200, 20.0), (201, 30.0), (500, 1000.0), (401, 5.0), (404, 7.0), (302, 1.0)]]
    ingest_ok(malti_server, recs)
    resp = malti_server.get(AGG, endpoint=f"/agg/{t}")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) >= {"time_series", "metrics_summary", "endpoints", "status_distribution", "consumers",
                         "system_overview", "distinct_nodes", "distinct_contexts", "resolution",
                         "start_time", "end_time"}
    assert body["resolution"] == "1hour"  # 7-day default range
    s = body["metrics_summary"]
    assert (s["total_requests"], s["error_count"]) == (7, 2)  # 500 and 404; 401 is not an error
    assert s["error_rate"] == pytest.approx(200 / 7)
    assert (s["min_latency"], s["max_latency"]) == (10.0, 30.0)  # 2xx only
    assert s["avg_latency"] == pytest.approx(20.0)
    assert s["p50_latency"] == pytest.approx(20.0, rel=0.01)
    assert [e["endpoint"] for e in body["endpoints"]] == [f"/agg/{t}"]
    assert body["consumers"][0]["consumer"] == f"c-{t}"
    assert body["status_distribution"][0]["status_breakdown"] == {"200": 2, "201": 1, "302": 1, "401": 1, "404": 1, "500": 1}
    assert body["status_distribution"][0]["error_4xx_5xx"] == 3
    assert body["system_overview"] == {"total_requests": 7, "total_errors": 2, "error_rate": pytest.approx(200 / 7),
                                       "avg_latency": pytest.approx(20.0)}
    assert all(set(p) == TS_FIELDS for p in body["time_series"])
    assert sum(p["total_requests"] for p in body["time_series"]) == 7
    assert sum(p["error_count"] for p in body["time_series"]) == 2

    rt = malti_server.get(RT, endpoint=f"/agg/{t}").json()
    assert rt["resolution"] == "1min"
    assert rt["metrics_summary"]["total_requests"] == 7
    assert rt["metrics_summary"]["p50_latency"] == 20.0  # exact on raw rows
    assert len(rt["time_series"]) in (60, 61)

    five = malti_server.get(AGG, endpoint=f"/agg/{t}", start_time=iso(now - timedelta(hours=2))).json()
    assert five["resolution"] == "5min"
    buckets = [p["bucket"] for p in five["time_series"]]
    assert all(b.endswith(("0:00Z", "5:00Z")) for b in buckets)
    assert five["metrics_summary"]["total_requests"] == 7


def test_every_bucket_present_and_aligned(malti_server):
    start = datetime(2026, 1, 5, 10, 7, 31, tzinfo=UTC)
    body = malti_server.get(AGG, start_time=iso(start), end_time=iso(start + timedelta(hours=3)),
                            endpoint=f"/none/{tag()}").json()
    assert body["resolution"] == "5min"
    assert body["time_series"][0]["bucket"] == "2026-01-05T10:05:00Z"
    assert body["time_series"][-1]["bucket"] == "2026-01-05T13:05:00Z"
    assert len(body["time_series"]) == 37
    assert all(p["total_requests"] == 0 and p["p95_latency"] is None for p in body["time_series"])
    assert body["metrics_summary"]["total_requests"] == 0 and body["metrics_summary"]["error_rate"] == 0.0
    hourly = malti_server.get(AGG, start_time=iso(start), end_time=iso(start + timedelta(hours=3)),
                              interval="1hour").json()
    assert [p["bucket"] for p in hourly["time_series"]] == [
        "2026-01-05T10:00:00Z", "2026-01-05T11:00:00Z", "2026-01-05T12:00:00Z", "2026-01-05T13:00:00Z"]


@pytest.mark.parametrize("path,params,field", [
    (AGG, {"start_time": "2026-01-02T00:00:00Z", "end_time": "2026-01-01T00:00:00Z"}, "start_time"),
    (AGG, {"interval": "2min"}, "interval"),
    (AGG, {"start_time": "yesterday"}, "start_time"),
    (AGG, {"end_time": "2026-13-45T00:00:00Z"}, "end_time"),
    (AGG, {"interval": "1min", "start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-03T00:00:00Z"}, "interval"),
    (RT, {"start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-01T01:05:01Z"}, "start_time"),
    (RT, {"interval": "weekly"}, "interval"),
    (REQ, {"limit": "0"}, "limit"),
    (REQ, {"limit": "1001"}, "limit"),
    (REQ, {"limit": "ten"}, "limit"),
    (REQ, {"status": "99"}, "status"),
    (REQ, {"cursor": "not-a-cursor"}, "cursor"),
    (DIM, {"start_time": "2026-01-02T00:00:00Z", "end_time": "2026-01-01T00:00:00Z"}, "start_time"),
    (DIM, {"interval": "2min"}, "interval"),
    # ranges outside the times a query may name (1970-9000; once 500s from datetime overflow)
    (AGG, {"start_time": "0001-01-01T00:00:00Z", "end_time": "0001-01-01T00:30:00Z"}, "end_time"),
    (RT, {"start_time": "0001-01-01T00:00:00Z", "end_time": "0001-01-01T00:30:00Z"}, "end_time"),
    (DIM, {"start_time": "9999-12-31T23:59:59Z"}, "start_time"),
    (AGG, {"start_time": "2026-01-01T00:00:00Z", "end_time": "9999-12-31T00:30:00Z"}, "start_time"),  # too many buckets
    # a NUL character (PostgreSQL text cannot hold one; once a 500)
    (AGG, {"service": "a\x00b"}, "service"),
    (REQ, {"endpoint": "/x\x00"}, "endpoint"),
    (DIM, {"consumer": "\x00"}, "consumer"),
    (REQ, {"cursor": "abc\x00"}, "cursor"),
])
def test_bad_parameters_are_422_with_the_field(malti_server, path, params, field):
    resp = malti_server.get(path, **params)
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["detail"]
    assert body["errors"][0]["field"] == field


def test_all_time_ranges_are_clamped_not_refused(malti_server):
    for path, params in ((REQ, {"start_time": "0001-01-01T00:00:00Z", "end_time": "9999-12-31T23:59:59Z"}),
                         (DIM, {"start_time": "1900-01-01T00:00:00Z"})):
        resp = malti_server.get(path, **params)
        assert resp.status_code == 200, (path, resp.text)


def test_realtime_range_of_exactly_60_minutes_is_fine(malti_server):
    resp = malti_server.get(RT, start_time="2026-01-01T00:00:00Z", end_time="2026-01-01T01:00:00Z")
    assert resp.status_code == 200
    assert len(resp.json()["time_series"]) == 61


def test_unencoded_plus_offset_is_understood(malti_server):
    resp = httpx.get(malti_server.url + AGG + "?start_time=2026-01-01T10:00:00+02:00&end_time=2026-01-01T12:00:00+02:00",
                     headers={"X-API-Key": malti_server.user_keys["viewer"]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["time_series"][0]["bucket"] == "2026-01-01T08:00:00Z"


def test_keys_are_checked(malti_server):
    assert httpx.get(malti_server.url + AGG).status_code == 401
    assert httpx.get(malti_server.url + AGG, headers={"X-API-Key": "nope"}).status_code == 401
    svc = httpx.get(malti_server.url + AGG, headers={"X-API-Key": malti_server.service_keys["auth-service"]})
    assert svc.status_code == 403


def test_restricted_user_sees_only_their_services(malti_server):
    t = tag()
    now = datetime.now(UTC)
    ingest_ok(malti_server, [record("auth-service", consumer=f"r-{t}", created_at=iso(now)),
                             record("payment-service", consumer=f"r-{t}", node=f"pay-node-{t}", created_at=iso(now))])
    for path in (AGG, RT, REQ, DIM):
        resp = malti_server.get(path, user="restricted", service="payment-service")
        assert resp.status_code == 403, (path, resp.text)
        assert "payment-service" in resp.json()["detail"]
        assert malti_server.get(path, user="restricted", service="auth-service").status_code == 200
    body = malti_server.get(AGG, user="restricted", consumer=f"r-{t}").json()
    assert body["metrics_summary"]["total_requests"] == 1
    assert {s["service"] for s in body["status_distribution"]} == {"auth-service"}
    assert f"pay-node-{t}" not in body["distinct_nodes"]
    reqs = malti_server.get(REQ, user="restricted", consumer=f"r-{t}").json()["requests"]
    assert [r["service"] for r in reqs] == ["auth-service"]
    dims = malti_server.get(DIM, user="restricted").json()
    assert dims["services"] == ["auth-service"]
    assert f"pay-node-{t}" not in dims["nodes"]
    everything = malti_server.get(AGG, consumer=f"r-{t}").json()
    assert everything["metrics_summary"]["total_requests"] == 2


def test_pages_never_repeat_or_skip_while_data_arrives(malti_server):
    t = tag()
    base = datetime.now(UTC) - timedelta(minutes=30)
    # many records share a timestamp, so the id tie-breaker matters
    recs = [record(consumer=f"p-{t}", endpoint=f"/page/{i % 7}", created_at=iso(base + timedelta(seconds=i // 5)),
                   response_time=float(i)) for i in range(530)]
    ingest_ok(malti_server, recs)
    seen: list[int] = []
    times: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"consumer": f"p-{t}", "limit": 100}
        if cursor:
            params["cursor"] = cursor
        resp = malti_server.get(REQ if pages % 2 == 0 else "/api/v1/metrics/raw", **params)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        seen += [r["id"] for r in body["requests"]]
        times += [r["created_at"] for r in body["requests"]]
        pages += 1
        # new, newer records arrive between pages
        ingest_ok(malti_server, [record(consumer=f"p-{t}", created_at=iso(datetime.now(UTC)))])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 6
    assert len(seen) == len(set(seen)) == 530
    assert times == sorted(times, reverse=True)
    r = body["requests"][0]
    assert set(r) == {"id", "service", "node", "method", "endpoint", "status", "response_time", "consumer",
                      "context", "created_at"}


def test_requests_filters(malti_server):
    t = tag()
    now = datetime.now(UTC)
    ingest_ok(malti_server, [record(consumer=f"f-{t}", status=s, node=n, created_at=iso(now))
                             for s, n in [(200, "a"), (404, "a"), (404, "b"), (500, None)]])
    def count(**kw):
        return len(malti_server.get(REQ, consumer=f"f-{t}", **kw).json()["requests"])
    assert count() == 4
    assert count(status=404) == 2
    assert count(status=404, node="b") == 1
    assert count(limit=1) == 1
    assert count(start_time=iso(now + timedelta(minutes=1))) == 0


def test_dimensions_lists_values_seen(malti_server):
    t = tag()
    now = datetime.now(UTC)
    ingest_ok(malti_server, [
        record("user-service", node=f"n-{t}", method="PATCH", endpoint=f"/d/{t}", consumer=f"dc-{t}",
               context=f"ctx-{t}", created_at=iso(now)),
    ])
    dims = malti_server.get(DIM).json()
    assert set(dims) == {"services", "nodes", "endpoints", "methods", "consumers", "contexts"}
    assert "user-service" in dims["services"]
    assert f"n-{t}" in dims["nodes"] and f"ctx-{t}" in dims["contexts"] and f"dc-{t}" in dims["consumers"]
    assert {"endpoint": f"/d/{t}", "method": "PATCH", "service": "user-service"} in dims["endpoints"]
    assert "PATCH" in dims["methods"]
    old = malti_server.get(DIM, start_time="2020-01-01T00:00:00Z", end_time="2020-01-02T00:00:00Z").json()
    assert old["services"] == [] and old["endpoints"] == []
    malti_server.compact()
    assert f"n-{t}" in malti_server.get(DIM).json()["nodes"]


def test_text_is_returned_literally(malti_server):
    t = tag()
    weird = f"/x/{t}/<script>alert(1)</script>/[bold]red[/bold]"
    ingest_ok(malti_server, [record(endpoint=weird, consumer=f"w-{t}", created_at=iso(datetime.now(UTC)))])
    body = malti_server.get(AGG, consumer=f"w-{t}").json()
    assert body["endpoints"][0]["endpoint"] == weird
    assert malti_server.get(REQ, endpoint=weird).json()["requests"][0]["endpoint"] == weird


def test_filter_values_are_data_never_sql(malti_server):
    t = tag()
    nasty = f"/q/{t}/'; DROP TABLE requests; --/%_\\"
    ingest_ok(malti_server, [record(endpoint=nasty, consumer=f"n-{t}", created_at=iso(datetime.now(UTC)))])
    for path in (AGG, RT, REQ, DIM):
        assert malti_server.get(path, endpoint=nasty, consumer=f"n-{t}").status_code == 200
    assert malti_server.get(AGG, endpoint=nasty).json()["metrics_summary"]["total_requests"] == 1
    # no LIKE semantics: wildcards match only themselves
    assert malti_server.get(AGG, endpoint=f"/q/{t}/%").json()["metrics_summary"]["total_requests"] == 0
    assert malti_server.sql("SELECT count(*) AS n FROM requests WHERE consumer = $1", f"n-{t}")[0]["n"] == 1
