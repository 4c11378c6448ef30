"""What ingest stores: Idempotency-Key replays stored once, gzip bodies, cleaned text, times in UTC."""

from __future__ import annotations

import gzip
import threading
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import orjson

from malti_testing import record
from server_test_helpers import counts, nothing_stored, post_raw, service_headers, unique


def idem(server, records, key, service="auth-service"):
    return server.ingest(records, service=service, headers={"Idempotency-Key": key})


# --- Idempotency-Key ---------------------------------------------------------------------------


def test_same_idempotency_key_twice_is_stored_once(malti_server):
    ep = unique()
    batch = [record(endpoint=ep, response_time=float(i)) for i in range(50)]
    key = uuid.uuid4().hex
    first = idem(malti_server, batch, key)
    assert first.status_code == 200, first.text
    assert first.json()["count"] == 50
    assert not first.json().get("duplicate")
    second = idem(malti_server, batch, key)
    assert second.status_code == 200, second.text
    assert second.json()["count"] == 50
    assert second.json()["duplicate"] is True
    assert counts(malti_server, ep) == {"requests": 50, "rollup_5min": 50, "rollup_1h": 50}
    malti_server.compact()
    assert counts(malti_server, ep) == {"requests": 50, "rollup_5min": 50, "rollup_1h": 50}


def test_different_idempotency_keys_store_twice(malti_server):
    ep = unique()
    batch = [record(endpoint=ep) for _ in range(10)]
    assert idem(malti_server, batch, uuid.uuid4().hex).status_code == 200
    r = idem(malti_server, batch, uuid.uuid4().hex)
    assert r.status_code == 200
    assert not r.json().get("duplicate")
    assert counts(malti_server, ep) == {"requests": 20, "rollup_5min": 20, "rollup_1h": 20}


def test_batches_without_idempotency_key_are_all_stored(malti_server):
    ep = unique()
    batch = [record(endpoint=ep) for _ in range(3)]
    assert malti_server.ingest(batch).status_code == 200
    assert malti_server.ingest(batch).status_code == 200
    assert counts(malti_server, ep)["requests"] == 6


def test_same_idempotency_key_for_different_services_is_independent(malti_server):
    ep = unique()
    key = uuid.uuid4().hex
    a = idem(malti_server, [record("auth-service", endpoint=ep)], key, "auth-service")
    b = idem(malti_server, [record("payment-service", endpoint=ep)], key, "payment-service")
    assert a.status_code == b.status_code == 200
    assert not a.json().get("duplicate") and not b.json().get("duplicate")
    rows = malti_server.sql("SELECT service, count(*) AS n FROM requests WHERE endpoint = $1 GROUP BY 1 ORDER BY 1", ep)
    assert [(r["service"], r["n"]) for r in rows] == [("auth-service", 1), ("payment-service", 1)]


def test_concurrent_duplicates_with_same_key_store_once(malti_server):
    ep = unique()
    batch = [record(endpoint=ep, response_time=float(i)) for i in range(300)]
    payload = orjson.dumps({"requests": batch})
    headers = service_headers(malti_server, **{"Idempotency-Key": uuid.uuid4().hex})
    for _attempt in range(3):  # a few rounds, each with a fresh key, to catch a race
        headers["Idempotency-Key"] = uuid.uuid4().hex
        barrier = threading.Barrier(2)
        results: list[httpx.Response] = []

        def send():
            barrier.wait()
            results.append(post_raw(malti_server, payload, headers))

        threads = [threading.Thread(target=send) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [r.status_code for r in results] == [200, 200], [r.text for r in results]
        assert sorted(bool(r.json().get("duplicate")) for r in results) == [False, True]
        assert all(r.json()["count"] == 300 for r in results)
    assert counts(malti_server, ep) == {"requests": 900, "rollup_5min": 900, "rollup_1h": 900}


def test_refused_batch_does_not_burn_its_idempotency_key(malti_server):
    ep = unique()
    key = uuid.uuid4().hex
    bad = idem(malti_server, [record(endpoint=ep, status=99)], key)
    assert bad.status_code == 422
    good = idem(malti_server, [record(endpoint=ep)], key)
    assert good.status_code == 200
    assert not good.json().get("duplicate")
    assert counts(malti_server, ep)["requests"] == 1


def test_overlong_idempotency_key_is_400(malti_server):
    ep = unique()
    r = idem(malti_server, [record(endpoint=ep)], "k" * 201)
    assert r.status_code == 400, r.text
    assert nothing_stored(malti_server, ep)


# --- gzip ----------------------------------------------------------------------------------------


def test_gzip_body_is_accepted(malti_server):
    ep = unique()
    payload = gzip.compress(orjson.dumps({"requests": [record(endpoint=ep) for _ in range(100)]}))
    r = post_raw(malti_server, payload, service_headers(malti_server, **{"Content-Encoding": "gzip"}))
    assert r.status_code == 200, r.text
    assert r.json()["count"] == 100
    assert counts(malti_server, ep) == {"requests": 100, "rollup_5min": 100, "rollup_1h": 100}


def test_x_gzip_and_identity_encodings_are_accepted(malti_server):
    ep = unique()
    raw = orjson.dumps({"requests": [record(endpoint=ep)]})
    r = post_raw(malti_server, gzip.compress(raw), service_headers(malti_server, **{"Content-Encoding": "x-gzip"}))
    assert r.status_code == 200, r.text
    r = post_raw(malti_server, raw, service_headers(malti_server, **{"Content-Encoding": "identity"}))
    assert r.status_code == 200, r.text
    assert counts(malti_server, ep)["requests"] == 2


def test_gzip_body_with_invalid_record_is_422(malti_server):
    ep = unique()
    payload = gzip.compress(orjson.dumps({"requests": [record(endpoint=ep), record(endpoint=ep, status=700)]}))
    r = post_raw(malti_server, payload, service_headers(malti_server, **{"Content-Encoding": "gzip"}))
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["index"] == 1
    assert nothing_stored(malti_server, ep)


# --- text cleaning -------------------------------------------------------------------------------


def stored(server, column: str, consumer: str):
    rows = server.sql(f"SELECT {column} AS v FROM requests WHERE consumer = $1", consumer)
    return [r["v"] for r in rows]


def test_ansi_escapes_are_stripped(malti_server):
    consumer = unique("c")
    r = malti_server.ingest([record(endpoint="/x\u001b[31mred\u001b[0m", consumer=consumer)])
    assert r.status_code == 200, r.text
    assert stored(malti_server, "endpoint", consumer) == ["/xred"]
    n5 = malti_server.sql("SELECT sum(n) AS n FROM rollup_5min_all WHERE consumer = $1 AND endpoint = '/xred'",
                          consumer)[0]["n"]
    assert n5 == 1


def test_control_characters_are_stripped_from_every_text_field(malti_server):
    consumer = unique("c")
    rec = record(
        endpoint="/a\x00b\x07c\x08",
        node="node\x1b]0;title\x07-1",
        context="ctx\u009b31m\r",
        consumer=consumer + "\x1b[2J",
        method="GET\x7f",
    )
    r = malti_server.ingest([rec])
    assert r.status_code == 200, r.text
    rows = malti_server.sql("SELECT endpoint, node, context, method FROM requests WHERE consumer = $1", consumer)
    assert len(rows) == 1
    row = rows[0]
    for value in row.values():
        assert not any(ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0 for ch in value), repr(value)
    assert row["endpoint"] == "/abc"
    assert row["method"] == "GET"
    assert row["node"] == "node-1"


def test_text_is_cut_to_500_characters(malti_server):
    consumer = "k" * 700
    ep = "/" + "e" * 900
    r = malti_server.ingest([record(endpoint=ep, consumer=consumer, context="x" * 501, node="n" * 1000)])
    assert r.status_code == 200, r.text
    rows = malti_server.sql("SELECT endpoint, consumer, context, node FROM requests WHERE consumer = $1", "k" * 500)
    assert len(rows) == 1
    assert rows[0]["endpoint"] == ep[:500]
    assert {len(v) for v in rows[0].values()} == {500}


def test_unicode_text_is_kept(malti_server):
    consumer = unique("c")
    r = malti_server.ingest([record(endpoint="/café/{id}/日本", consumer=consumer)])
    assert r.status_code == 200
    assert stored(malti_server, "endpoint", consumer) == ["/café/{id}/日本"]


def test_fractional_response_time_is_kept(malti_server):
    ep = unique()
    assert malti_server.ingest([record(endpoint=ep, response_time=0.731)]).status_code == 200
    assert malti_server.sql("SELECT response_time FROM requests WHERE endpoint = $1", ep)[0]["response_time"] == 0.731


def test_unknown_fields_are_ignored(malti_server):
    ep = unique()
    r = malti_server.ingest([{**record(endpoint=ep), "extra": {"nested": True}}])
    assert r.status_code == 200, r.text
    assert counts(malti_server, ep)["requests"] == 1


# --- created_at ----------------------------------------------------------------------------------


def created(server, ep):
    return [r["created_at"] for r in server.sql("SELECT created_at FROM requests WHERE endpoint = $1", ep)]


def test_naive_created_at_means_utc(malti_server):
    ep = unique()
    when = (datetime.now(timezone.utc) - timedelta(hours=2)).replace(microsecond=123000)
    naive = when.replace(tzinfo=None).isoformat()
    assert malti_server.ingest([record(endpoint=ep, created_at=naive)]).status_code == 200
    assert created(malti_server, ep) == [when]


def test_created_at_with_offset_is_stored_as_the_same_instant(malti_server):
    ep = unique()
    when = (datetime.now(timezone.utc) - timedelta(hours=3)).replace(microsecond=0)
    plus2 = when.astimezone(timezone(timedelta(hours=2))).isoformat()
    minus5 = when.astimezone(timezone(timedelta(hours=-5, minutes=-30))).isoformat()
    zulu = when.isoformat().replace("+00:00", "Z")
    r = malti_server.ingest([record(endpoint=ep, created_at=t) for t in (plus2, minus5, zulu)])
    assert r.status_code == 200, r.text
    assert created(malti_server, ep) == [when, when, when]
    bucket = when.replace(minute=when.minute - when.minute % 5, second=0)
    rows = malti_server.sql("SELECT bucket, sum(n) AS n FROM rollup_5min_all WHERE endpoint = $1 GROUP BY 1", ep)
    assert [(r["bucket"], r["n"]) for r in rows] == [(bucket, 3)]


def test_missing_created_at_means_now(malti_server):
    ep = unique()
    before = datetime.now(timezone.utc)
    assert malti_server.ingest([record(endpoint=ep)]).status_code == 200
    after = datetime.now(timezone.utc)
    [ts] = created(malti_server, ep)
    assert before - timedelta(seconds=5) <= ts <= after + timedelta(seconds=5)


def test_created_at_far_in_the_future_is_422(malti_server):
    ep = unique()
    future = (datetime.now(timezone.utc) + timedelta(days=2)).isoformat()
    r = malti_server.ingest([record(endpoint=ep), record(endpoint=ep, created_at=future)])
    assert r.status_code == 422, r.text
    assert [(e["index"], e["field"]) for e in r.json()["errors"]] == [(1, "created_at")]
    assert nothing_stored(malti_server, ep)


def test_created_at_older_than_retention_is_422(malti_server):
    ep = unique()
    ancient = (datetime.now(timezone.utc) - timedelta(days=800)).isoformat()
    r = malti_server.ingest([record(endpoint=ep, created_at=ancient)])
    assert r.status_code == 422, r.text
    assert [(e["index"], e["field"]) for e in r.json()["errors"]] == [(0, "created_at")]
    assert nothing_stored(malti_server, ep)


def test_created_at_days_ago_within_retention_is_stored(malti_server):
    ep = unique()
    when = (datetime.now(timezone.utc) - timedelta(days=3)).replace(microsecond=0)
    r = malti_server.ingest([record(endpoint=ep, created_at=when.isoformat())])
    assert r.status_code == 200, r.text
    assert created(malti_server, ep) == [when]
