"""POST /api/v1/ingest answers every status code of docs/api.md, and a refused batch stores nothing."""

from __future__ import annotations

import gzip

import httpx
import orjson
import pytest

from malti_testing import record
from server_test_helpers import nothing_stored, own_server, post_raw, service_headers, unique


def body(*records: dict) -> bytes:
    return orjson.dumps({"requests": list(records)})


# --- 200 ---------------------------------------------------------------------------------------


def test_valid_batch_answers_200_with_count_and_service(malti_server):
    ep = unique()
    r = malti_server.ingest([record(endpoint=ep), record(endpoint=ep, status=500)])
    assert r.status_code == 200, r.text
    assert r.json() == {"message": "Successfully ingested 2 requests", "count": 2, "service": "auth-service"}


def test_json_content_type_with_charset_is_accepted(malti_server):
    ep = unique()
    r = post_raw(malti_server, body(record(endpoint=ep)),
                 service_headers(malti_server, **{"Content-Type": "application/json; charset=utf-8"}))
    assert r.status_code == 200, r.text


# --- 400 ---------------------------------------------------------------------------------------


def test_empty_batch_is_400(malti_server):
    r = post_raw(malti_server, b'{"requests": []}', service_headers(malti_server))
    assert r.status_code == 400, r.text
    assert r.json()["detail"]


def test_body_not_an_object_is_400(malti_server):
    for payload in (b"[1, 2, 3]", b'"requests"', b"42", b"null"):
        r = post_raw(malti_server, payload, service_headers(malti_server))
        assert r.status_code == 400, (payload, r.text)
        assert r.json()["detail"]


def test_malformed_json_is_400(malti_server):
    for payload in (b'{"requests": [', b"{not json}", b"", b'{"requests": [{"service": "auth-service",}]}'):
        r = post_raw(malti_server, payload, service_headers(malti_server))
        assert r.status_code == 400, (payload, r.text)
        assert "detail" in r.json()


def test_bad_gzip_body_is_400(malti_server):
    r = post_raw(malti_server, b"this is not gzip data at all",
                 service_headers(malti_server, **{"Content-Encoding": "gzip"}))
    assert r.status_code == 400, r.text


def test_truncated_gzip_body_is_400(malti_server):
    ep = unique()
    data = gzip.compress(body(record(endpoint=ep)))
    r = post_raw(malti_server, data[: len(data) // 2], service_headers(malti_server, **{"Content-Encoding": "gzip"}))
    assert r.status_code == 400, r.text
    assert nothing_stored(malti_server, ep)


def test_missing_requests_field_is_refused(malti_server):
    # The original server answers 400 or 422 for {} and {"not_requests": [...]}.
    for payload in (b"{}", orjson.dumps({"not_requests": [record()]})):
        r = post_raw(malti_server, payload, service_headers(malti_server))
        assert r.status_code in (400, 422), (payload, r.text)


def test_invalid_utf8_in_body_is_400(malti_server):
    ep = unique()
    payload = body(record(endpoint=ep, consumer="web-app")).replace(b"web-app", b"w\xe9b")
    r = post_raw(malti_server, payload, service_headers(malti_server))
    assert r.status_code == 400, r.text
    assert r.json()["detail"]
    assert nothing_stored(malti_server, ep)


def test_deeply_nested_json_is_400(malti_server):
    payload = b'{"requests": [' + b"[" * 10000 + b"]" * 10000 + b"]}"
    r = post_raw(malti_server, payload, service_headers(malti_server))
    assert r.status_code == 400, r.text
    assert r.json()["detail"]


def test_number_out_of_range_is_refused_not_500(malti_server):
    ep = unique()
    payload = body(record(endpoint=ep, response_time=1.0)).replace(b'"response_time":1.0', b'"response_time":1e400')
    assert b"1e400" in payload
    r = post_raw(malti_server, payload, service_headers(malti_server))
    assert r.status_code in (400, 422), r.text
    assert r.json()["detail"]
    assert nothing_stored(malti_server, ep)


def test_nan_literal_is_400(malti_server):
    payload = body(record(response_time=1.0)).replace(b'"response_time":1.0', b'"response_time":NaN')
    r = post_raw(malti_server, payload, service_headers(malti_server))
    assert r.status_code == 400, r.text


# --- 401 ---------------------------------------------------------------------------------------


def test_missing_api_key_is_401(malti_server):
    ep = unique()
    r = post_raw(malti_server, body(record(endpoint=ep)), {"Content-Type": "application/json"})
    assert r.status_code == 401, r.text
    assert r.json()["detail"]
    assert nothing_stored(malti_server, ep)


def test_empty_api_key_is_401(malti_server):
    r = post_raw(malti_server, body(record()), {"Content-Type": "application/json", "X-API-Key": ""})
    assert r.status_code == 401, r.text


def test_unknown_api_key_is_401(malti_server):
    ep = unique()
    for key in ("invalid-key-12345", "wrong-service-key", "test-auth-service-key-012345678"):
        r = post_raw(malti_server, body(record(endpoint=ep)), {"Content-Type": "application/json", "X-API-Key": key})
        assert r.status_code == 401, (key, r.text)
    assert nothing_stored(malti_server, ep)


# --- 403 ---------------------------------------------------------------------------------------


def test_user_key_on_ingest_is_403(malti_server):
    ep = unique()
    for user, key in malti_server.user_keys.items():
        r = post_raw(malti_server, body(record(endpoint=ep)), {"Content-Type": "application/json", "X-API-Key": key})
        assert r.status_code == 403, (user, r.text)
        assert r.json()["detail"]
    assert nothing_stored(malti_server, ep)


def test_record_of_foreign_service_is_403_and_nothing_stored(malti_server):
    ep = unique()
    r = malti_server.ingest([record("payment-service", endpoint=ep)], service="auth-service")
    assert r.status_code == 403, r.text
    assert nothing_stored(malti_server, ep)


def test_one_foreign_record_among_own_refuses_whole_batch(malti_server):
    ep = unique()
    batch = [record("auth-service", endpoint=ep) for _ in range(5)] + [record("user-service", endpoint=ep)]
    r = malti_server.ingest(batch, service="auth-service")
    assert r.status_code == 403, r.text
    assert nothing_stored(malti_server, ep)


# --- 415 ---------------------------------------------------------------------------------------


def test_text_plain_content_type_is_415(malti_server):
    ep = unique()
    r = post_raw(malti_server, body(record(endpoint=ep)),
                 service_headers(malti_server, **{"Content-Type": "text/plain"}))
    assert r.status_code == 415, r.text
    assert r.json()["detail"]
    assert nothing_stored(malti_server, ep)


def test_form_content_type_is_415(malti_server):
    r = post_raw(malti_server, b"requests=1",
                 service_headers(malti_server, **{"Content-Type": "application/x-www-form-urlencoded"}))
    assert r.status_code == 415, r.text


def test_unsupported_content_encoding_is_415(malti_server):
    ep = unique()
    for encoding in ("br", "deflate", "compress", "zstd"):
        r = post_raw(malti_server, body(record(endpoint=ep)),
                     service_headers(malti_server, **{"Content-Encoding": encoding}))
        assert r.status_code == 415, (encoding, r.text)
    assert nothing_stored(malti_server, ep)


# --- 422 ---------------------------------------------------------------------------------------


def _errors_at(r, index: int) -> set[str]:
    return {e["field"] for e in r.json()["errors"] if e["index"] == index}


def test_status_99_is_422(malti_server):
    ep = unique()
    r = malti_server.ingest([record(endpoint=ep, status=99)])
    assert r.status_code == 422, r.text
    assert "status" in _errors_at(r, 0)
    assert nothing_stored(malti_server, ep)


def test_status_600_is_422(malti_server):
    ep = unique()
    r = malti_server.ingest([record(endpoint=ep, status=600)])
    assert r.status_code == 422, r.text
    assert "status" in _errors_at(r, 0)
    assert nothing_stored(malti_server, ep)


def test_negative_response_time_is_422(malti_server):
    ep = unique()
    r = malti_server.ingest([record(endpoint=ep, response_time=-1)])
    assert r.status_code == 422, r.text
    assert "response_time" in _errors_at(r, 0)
    assert nothing_stored(malti_server, ep)


def test_response_time_over_the_maximum_is_422_not_500(malti_server):
    # 1e306 ms once overflowed the rollup's bucket arithmetic in PostgreSQL (a 500)
    for value in (1e12 * 1.000001, 1e306, 1.7e308):
        ep = unique()
        r = malti_server.ingest([record(endpoint=ep, response_time=1.0), record(endpoint=ep, response_time=value)])
        assert r.status_code == 422, (value, r.text)
        assert "response_time" in _errors_at(r, 1)
        assert nothing_stored(malti_server, ep)


def test_missing_field_is_422(malti_server):
    ep = unique()
    for missing in ("method", "status", "response_time", "consumer", "service"):
        rec = record(endpoint=ep)
        del rec[missing]
        r = post_raw(malti_server, body(rec), service_headers(malti_server))
        assert r.status_code == 422, (missing, r.text)
        errors = r.json()["errors"]
        assert errors and errors[0]["index"] == 0, errors
        assert errors[0]["field"] == missing and "error" in errors[0], errors  # names the missing field
    assert nothing_stored(malti_server, ep)


def test_wrong_type_is_422(malti_server):
    ep = unique()
    for field, value in (("status", "abc"), ("response_time", "fast"), ("status", [200]),
                         ("consumer", {"a": 1}), ("created_at", "invalid-date")):
        r = malti_server.ingest([record(endpoint=ep, **{field: value})])
        assert r.status_code == 422, (field, value, r.text)
        assert field in _errors_at(r, 0), (field, r.json())
    assert nothing_stored(malti_server, ep)


def test_record_that_is_not_an_object_is_422(malti_server):
    r = post_raw(malti_server, b'{"requests": [42]}', service_headers(malti_server))
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["index"] == 0


def test_422_lists_every_bad_record_with_index_and_field(malti_server):
    ep = unique()
    batch = [record(endpoint=ep) for _ in range(6)]
    batch[1]["status"] = 600
    batch[4]["response_time"] = -5
    r = malti_server.ingest(batch)
    assert r.status_code == 422, r.text
    data = r.json()
    assert data["detail"]
    for e in data["errors"]:
        assert set(e) >= {"index", "field", "error"}
    assert {(e["index"], e["field"]) for e in data["errors"]} == {(1, "status"), (4, "response_time")}


def test_one_bad_record_among_good_ones_stores_nothing(malti_server):
    ep = unique()
    batch = [record(endpoint=ep, response_time=float(i)) for i in range(499)]
    batch.insert(250, record(endpoint=ep, status=99))
    r = malti_server.ingest(batch)
    assert r.status_code == 422, r.text
    assert [(e["index"], e["field"]) for e in r.json()["errors"]] == [(250, "status")]
    malti_server.compact()
    assert nothing_stored(malti_server, ep)
    # The same batch without the bad record goes through completely.
    del batch[250]
    assert malti_server.ingest(batch).status_code == 200
    assert malti_server.sql("SELECT count(*) AS n FROM requests WHERE endpoint = $1", ep)[0]["n"] == 499


def test_empty_method_or_endpoint_is_422(malti_server):
    ep = unique()
    for field in ("method", "endpoint"):
        r = malti_server.ingest([record(endpoint=ep), record(**{"endpoint": ep, field: ""})])
        assert r.status_code == 422, (field, r.text)
        assert field in _errors_at(r, 1)
    assert nothing_stored(malti_server, ep)


# --- 413, 429: servers with small limits --------------------------------------------------------


SMALL_LIMITS = {"max_body_bytes": 4000, "max_batch_records": 5}


@pytest.fixture(scope="module")
def small_limits_server(pg_admin_url, tmp_path_factory):
    with own_server(pg_admin_url, tmp_path_factory.mktemp("limits"), limits=SMALL_LIMITS) as server:
        yield server


def test_body_over_max_body_bytes_is_413(small_limits_server):
    server = small_limits_server
    ep = unique()
    payload = body(*[record(endpoint=ep, consumer="c" * 100) for _ in range(4)]) + b" " * 4000
    assert len(payload) > SMALL_LIMITS["max_body_bytes"]
    r = post_raw(server, payload, service_headers(server))
    assert r.status_code == 413, r.text
    assert nothing_stored(server, ep)
    # Within the limit the same records are fine.
    r = post_raw(server, body(*[record(endpoint=ep) for _ in range(4)]), service_headers(server))
    assert r.status_code == 200, r.text


def test_chunked_body_over_limit_is_413(small_limits_server):
    server = small_limits_server
    ep = unique()
    payload = body(*[record(endpoint=ep, consumer="c" * 100) for _ in range(4)]) + b" " * 8000

    def chunks():
        for i in range(0, len(payload), 1000):
            yield payload[i:i + 1000]

    r = httpx.post(server.url + "/api/v1/ingest", content=chunks(), headers=service_headers(server), timeout=30)
    assert r.status_code == 413, r.text
    assert nothing_stored(server, ep)


def test_gzip_bomb_over_limit_after_decompression_is_413(small_limits_server):
    server = small_limits_server
    ep = unique()
    inflated = body(record(endpoint=ep))[:-2] + b" " * 1_000_000 + b"]}"
    bomb = gzip.compress(inflated)
    assert len(bomb) < SMALL_LIMITS["max_body_bytes"] < len(inflated)
    r = post_raw(server, bomb, service_headers(server, **{"Content-Encoding": "gzip"}))
    assert r.status_code == 413, r.text
    assert nothing_stored(server, ep)


def test_batch_over_max_batch_records_is_413(small_limits_server):
    server = small_limits_server
    ep = unique()
    r = server.ingest([record(endpoint=ep) for _ in range(6)])
    assert r.status_code == 413, r.text
    assert nothing_stored(server, ep)
    assert server.ingest([record(endpoint=ep) for _ in range(5)]).status_code == 200


def test_ingest_rate_limit_is_429_with_retry_after_per_service_key(start_server):
    server = start_server(limits={"ingest_rate": "2/minute"})
    ep = unique()
    assert server.ingest([record(endpoint=ep)]).status_code == 200
    assert server.ingest([record(endpoint=ep)]).status_code == 200
    r = server.ingest([record(endpoint=ep)])
    assert r.status_code == 429, r.text
    assert int(r.headers["Retry-After"]) >= 1
    assert r.json()["detail"]
    assert server.sql("SELECT count(*) AS n FROM requests WHERE endpoint = $1", ep)[0]["n"] == 2
    # The budget is per service key: another service still ingests.
    assert server.ingest([record("payment-service", endpoint=ep)]).status_code == 200
