"""A client written for the original Malti server (muzy/malti) works unchanged: the same paths,
the X-API-Key header, the JSON its test suite and its SDK (malti-telemetry 1.0.4) send, and the
original config file format."""

from __future__ import annotations

import random
import threading
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from malti_testing import TEST_LIMITS

# The original test suite's constants, as in its test/test_config.py.
INVALID_API_KEYS = ["invalid-key-12345", "wrong-service-key", "expired-key-xyz", "", None]

# The original's config/malti.toml, verbatim apart from limits (extra [limits] so tests are not throttled).
ORIGINAL_CONFIG = """# Malti Configuration File

[services]
# Define services that can send telemetry data

[services.auth-service]
api_key = "auth-service-key"
description = "Authentication service"

[services.payment-service]
api_key = "payment-service-key"
description = "Payment processing service"

[services.user-service]
api_key = "user-service-key"
description = "User management service"

[services.test-service]
api_key = "test-service-key"
description = "Test service"

[users]
# Define users who can query metrics and login to dashboard

[users.user1]
username = "user1"
api_key = "user-api-key"

[users.user2]
username = "user2"
api_key = "user2-api-key"

[api]
# API configuration (for test)
base_url = "http://localhost:8000"
ingest_endpoint = "/api/v1/ingest"
metrics_endpoint = "/api/v1/metrics"

[dashboard]
# Dashboard-specific configuration for visual indicators and thresholds

[dashboard.thresholds]
error_rate_success_threshold = 0.5
error_rate_warning_threshold = 1.0
latency_success_threshold = 300
latency_warning_threshold = 800
"""


def sample_telemetry_data(services) -> list[dict]:
    """The original test suite's SAMPLE_TELEMETRY_DATA: two records per service, integer response times."""
    now = datetime.now(timezone.utc)
    data = []
    for service_name in services:
        data.append({
            "service": service_name, "node": f"{service_name}-node-1", "method": "POST",
            "endpoint": f"/api/v1/{service_name}/action", "status": 200, "response_time": 150,
            "consumer": "web-app", "created_at": now.isoformat(),
        })
        data.append({
            "service": service_name, "node": f"{service_name}-node-1", "method": "GET",
            "endpoint": f"/api/v1/{service_name}/status", "status": 200, "response_time": 75,
            "consumer": "mobile-app", "created_at": now.isoformat(),
        })
    return data


def large_batch(service_name: str, batch_size: int = 500) -> list[dict]:
    """Like the original's generate_large_batch_data: every method, weighted statuses, int times, last hour."""
    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    statuses = [200, 201, 400, 401, 403, 404, 422, 500, 502, 503]
    times = [50, 100, 150, 200, 300, 500, 1000, 2000, 5000]
    consumers = ["web-app", "mobile-app", "api-client", "admin-panel", "webhook", "cron-job"]
    base = datetime.now(timezone.utc)
    rng = random.Random(7)
    batch = []
    for i in range(batch_size):
        entry = {
            "service": service_name,
            "node": f"{service_name}-node-{rng.randint(1, 5)}",
            "method": rng.choice(methods),
            "endpoint": f"/api/v1/{service_name}/action",
            "status": rng.choice(statuses),
            "response_time": int(rng.choice(times) * 1.5),
            "consumer": rng.choice(consumers),
            "created_at": (base - timedelta(minutes=rng.randint(0, 60))).isoformat(),
        }
        if i % 3 == 0:
            entry["context"] = rng.choice(["password", "oauth", "sso"])
        batch.append(entry)
    return batch


@pytest.fixture(scope="module")
def session():
    with httpx.Client(timeout=30) as client:
        yield client


def post(session, server, payload, key):
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["X-API-Key"] = key
    return session.post(f"{server.url}/api/v1/ingest", json=payload, headers=headers)


# --- ingest, as the original test suite does it -------------------------------------------------


def test_original_valid_service_ingest(malti_server, session):
    data = sample_telemetry_data(malti_server.service_keys)
    for service_name, api_key in malti_server.service_keys.items():
        service_data = [r for r in data if r["service"] == service_name]
        r = post(session, malti_server, {"requests": service_data}, api_key)
        assert r.status_code == 200, r.text
        assert r.json()["count"] == 2


def test_original_naive_utcnow_created_at(malti_server, session):
    record = {"service": "auth-service", "node": "test-node", "method": "GET", "endpoint": "/api/v1/test",
              "status": 200, "response_time": 100, "consumer": "test-consumer",
              "created_at": datetime.now(timezone.utc).replace(tzinfo=None).isoformat()}
    r = post(session, malti_server, {"requests": [record]}, malti_server.service_keys["auth-service"])
    assert r.status_code == 200, r.text
    assert r.json()["count"] == 1


def test_original_invalid_api_keys_are_401(malti_server, session):
    payload = {"requests": [sample_telemetry_data(["auth-service"])[0]]}
    for key in INVALID_API_KEYS:
        assert post(session, malti_server, payload, key).status_code == 401, key


def test_original_user_key_ingest_is_403(malti_server, session):
    payload = {"requests": [sample_telemetry_data(["auth-service"])[0]]}
    for key in malti_server.user_keys.values():
        assert post(session, malti_server, payload, key).status_code == 403


def test_original_service_mismatch_is_403(malti_server, session):
    payment = [r for r in sample_telemetry_data(malti_server.service_keys) if r["service"] == "payment-service"][0]
    r = post(session, malti_server, {"requests": [payment]}, malti_server.service_keys["auth-service"])
    assert r.status_code == 403


def test_original_invalid_payloads_are_400_or_422(malti_server, session):
    key = malti_server.service_keys["auth-service"]
    sample = sample_telemetry_data(["auth-service"])[0]
    for payload in ({}, {"requests": []}, {"requests": [{"invalid": "data"}]}, {"not_requests": [sample]}):
        assert post(session, malti_server, payload, key).status_code in (400, 422), payload


def test_original_large_batches_of_500(malti_server, session):
    for service_name, api_key in malti_server.service_keys.items():
        r = post(session, malti_server, {"requests": large_batch(service_name)}, api_key)
        assert r.status_code == 200, r.text
        assert r.json()["count"] == 500


def test_original_invalid_and_mixed_batches_are_422(malti_server, session):
    key = malti_server.service_keys["auth-service"]
    invalid = [
        {"invalid": "data", "service": "auth-service", "context": "invalid"},
        {"service": "auth-service", "node": "test", "method": "GET", "endpoint": "/test", "status": "invalid",
         "response_time": 100, "consumer": "test", "context": "simple", "created_at": "invalid-date"},
        {"service": "auth-service", "node": "test", "method": "INVALID", "endpoint": "/test", "status": 200,
         "response_time": -100, "consumer": "test", "context": "extended",
         "created_at": datetime.now(timezone.utc).isoformat()},
    ]
    assert post(session, malti_server, {"requests": invalid}, key).status_code == 422
    mixed = large_batch("auth-service", 10) + [{"invalid": "data", "service": "auth-service", "context": "invalid"}]
    assert post(session, malti_server, {"requests": mixed}, key).status_code == 422


def test_original_concurrent_batches_from_all_services(malti_server):
    results = {}

    def ingest(service_name, api_key):
        with httpx.Client(timeout=30) as client:
            r = client.post(f"{malti_server.url}/api/v1/ingest", json={"requests": large_batch(service_name, 100)},
                            headers={"X-API-Key": api_key, "Content-Type": "application/json"})
            results[service_name] = (r.status_code, r.json().get("count"))

    threads = [threading.Thread(target=ingest, args=item) for item in malti_server.service_keys.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {s: (200, 100) for s in malti_server.service_keys}


def test_original_health_and_root(malti_server, session):
    r = session.get(f"{malti_server.url}/health")
    assert r.status_code == 200 and r.json()["status"] == "healthy"
    r = session.get(f"{malti_server.url}/")
    assert r.status_code == 200 and "html" in r.text


# --- the original SDK (malti-telemetry 1.0.4) ---------------------------------------------------


async def test_original_sdk_batch_sender_delivers_records(malti_server, monkeypatch):
    from malti_telemetry.core import BatchSender, TelemetryRecord

    monkeypatch.setenv("MALTI_API_KEY", malti_server.service_keys["user-service"])
    monkeypatch.setenv("MALTI_SERVICE_NAME", "user-service")
    monkeypatch.setenv("MALTI_URL", malti_server.url)
    monkeypatch.setenv("MALTI_NODE", "original-sdk-node")
    monkeypatch.setenv("MALTI_MAX_RETRIES", "0")
    sender = BatchSender()
    await sender.start()
    for i in range(37):
        sender.add_record(TelemetryRecord(service="user-service", method="GET", endpoint="/original-sdk/{id}",
                                          status=200 if i % 5 else 404, response_time=i, consumer="web-app",
                                          node="original-sdk-node", context="ctx" if i % 2 else None,
                                          created_at=datetime.now(timezone.utc)))
    await sender.stop()
    assert sender.buffer.get_stats()["total_sent"] == 37, sender.buffer.get_stats()
    rows = malti_server.sql("SELECT count(*) AS n, sum(response_time) AS s FROM requests"
                            " WHERE node = 'original-sdk-node'")
    assert (rows[0]["n"], rows[0]["s"]) == (37, float(sum(range(37))))


# --- the original config file ---------------------------------------------------------------------


def test_original_config_file_is_accepted(start_server):
    server = start_server(start=False)
    limits = "\n[limits]\n" + "\n".join(f'{k} = "{v}"' for k, v in TEST_LIMITS.items()) + "\n"
    server.config_path.write_text(ORIGINAL_CONFIG + limits)
    server.start()
    r = httpx.post(f"{server.url}/api/v1/ingest", json={"requests": sample_telemetry_data(["test-service"])},
                   headers={"X-API-Key": "test-service-key", "Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 200, r.text
    r = httpx.get(f"{server.url}/api/v1/auth/test", headers={"X-API-Key": "user2-api-key"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["user"]["name"] == "user2"


# --- auth/test, as the original's dashboard and test suite read it -------------------------------


def test_original_auth_test_response_fields(malti_server, session):
    r = session.get(f"{malti_server.url}/api/v1/auth/test", headers={"X-API-Key": malti_server.user_keys["viewer"]})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["authenticated"] is True
    assert data["user"]["name"] == "viewer" and data["user"]["type"] == "user"
    for k in ("error_rate_success_threshold", "error_rate_warning_threshold",
              "latency_success_threshold", "latency_warning_threshold"):
        assert isinstance(data["thresholds"][k], (int, float))
    # Fields the original returned and its own test suite checks.
    assert "metrics" in data["user"]["permissions"]
    assert isinstance(data["timestamp"], str)
    assert {"endpoint", "limit", "description"} <= set(data["rate_limit_info"])


# --- metrics, as the original test suite and dashboard query them --------------------------------

DASHBOARD_FIELDS = {"time_series", "metrics_summary", "endpoints", "status_distribution", "consumers",
                    "system_overview", "distinct_nodes", "distinct_contexts"}


def metrics_get(session, server, path, key, params=None):
    headers = {} if key is None else {"X-API-Key": key, "Content-Type": "application/json"}
    return session.get(f"{server.url}/api/v1/metrics/{path}", headers=headers, params=params)


def test_original_metrics_queries(malti_server, session):
    key = malti_server.user_keys["viewer"]
    r = metrics_get(session, malti_server, "aggregate", key, {"limit": 10, "interval": "5min"})
    assert r.status_code == 200, r.text
    assert DASHBOARD_FIELDS <= set(r.json())
    now = datetime.now(timezone.utc)
    for params in ({"service": "auth-service", "limit": 5}, {"method": "GET", "limit": 5},
                   {"endpoint": "/api/v1/login", "limit": 5}, {"consumer": "web-app", "limit": 5},
                   {"interval": "1hour", "limit": 5}, {"service": "auth-service", "method": "POST", "limit": 5},
                   {"start_time": (now - timedelta(hours=1)).isoformat(), "limit": 5},
                   {"end_time": now.isoformat(), "limit": 5},
                   {"start_time": (now - timedelta(days=1)).isoformat(), "end_time": now.isoformat(), "limit": 5}):
        for path in ("aggregate", "raw"):
            r = metrics_get(session, malti_server, path, key, params)
            assert r.status_code == 200, (path, params, r.text)
    for params in ({"limit": -1}, {"limit": 0}, {"interval": "invalid"}, {"limit": "not_a_number"}):
        for path in ("aggregate", "raw"):
            r = metrics_get(session, malti_server, path, key, params)
            assert r.status_code in (200, 422), (path, params, r.text)
    r = metrics_get(session, malti_server, "aggregate/realtime", key, {"limit": 10})
    assert r.status_code == 200, r.text
    assert DASHBOARD_FIELDS <= set(r.json())
    r = metrics_get(session, malti_server, "aggregate/realtime", key,
                    {"start_time": (now - timedelta(minutes=30)).isoformat(), "end_time": now.isoformat(), "limit": 20})
    assert r.status_code == 200, r.text
    r = metrics_get(session, malti_server, "aggregate/realtime", key, {"service": "auth-service", "limit": 15})
    assert r.status_code == 200, r.text


def test_original_metrics_auth_errors(malti_server, session):
    for path in ("aggregate", "raw", "aggregate/realtime"):
        for key in INVALID_API_KEYS:
            assert metrics_get(session, malti_server, path, key).status_code == 401, (path, key)
        for key in malti_server.service_keys.values():
            assert metrics_get(session, malti_server, path, key).status_code == 403, path


def test_original_metrics_count_what_was_ingested(malti_server, session):
    ep = "/api/v1/payment-service/counted"
    records = [{"service": "payment-service", "node": "payment-service-node-1", "method": "POST", "endpoint": ep,
                "status": 200 if i % 4 else 500, "response_time": 100 + i, "consumer": "web-app",
                "created_at": datetime.now(timezone.utc).isoformat()} for i in range(40)]
    assert post(session, malti_server, {"requests": records}, malti_server.service_keys["payment-service"]).status_code == 200
    key = malti_server.user_keys["viewer"]
    for path in ("aggregate", "aggregate/realtime"):
        r = metrics_get(session, malti_server, path, key, {"service": "payment-service", "endpoint": ep})
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["metrics_summary"]["total_requests"] == 40, (path, data["metrics_summary"])
        assert data["metrics_summary"]["error_count"] == 10
        assert sum(b["total_requests"] for b in data["time_series"]) == 40
        [row] = [e for e in data["endpoints"] if e["endpoint"] == ep]
        assert row["method"] == "POST" and row["total_requests"] == 40


def test_restricted_user_reads_only_its_services(malti_server, session):
    key = malti_server.user_keys["restricted"]
    r = metrics_get(session, malti_server, "aggregate", key, {"service": "payment-service"})
    assert r.status_code == 403, r.text
    r = metrics_get(session, malti_server, "aggregate", key, {"service": "auth-service"})
    assert r.status_code == 200, r.text
    r = metrics_get(session, malti_server, "aggregate", key)
    assert r.status_code == 200, r.text
    assert {s["service"] for s in r.json()["status_distribution"]} <= {"auth-service"}
