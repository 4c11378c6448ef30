"""The batch encoder: every record of every chunk size comes out as the server reads it."""

from __future__ import annotations

import asyncio
import gzip
import json
import random
from datetime import datetime, timezone

import pytest

from malti_sdk._records import CHUNK, RecordEncoder

# every test runs on the compiled encoder and on the pure-Python one
pytestmark = pytest.mark.usefixtures("encoder_path")

ENDPOINTS = ["/users/{user_id}", '/q"u\u00e9%s/{x}', "/100%", "/a\\b"]
CONSUMERS = ["anonymous", b"web-app%d", "line\nbreak", b"\xe9t\xe9"]
CONTEXTS = [None, "ctx%", 'with "quotes"']


def make_rows(count: int, seed: int) -> list[tuple]:
    rng = random.Random(seed)
    start = 1_764_900_000.0
    return [
        (
            rng.choice(["GET", "POST", "OTHER"]),
            rng.choice(ENDPOINTS),
            rng.choice([200, 201, 404, 500]),
            rng.random() * 250,
            rng.choice(CONSUMERS),
            rng.choice(CONTEXTS),
            start + i * 0.37 + rng.random(),  # crosses many seconds, a little out of order
        )
        for i in range(count)
    ]


def check(records: list[dict], rows: list[tuple], service: str, node: str | None) -> None:
    assert len(records) == len(rows)
    for record, (method, endpoint, status, response_time, consumer, context, created) in zip(records, rows):
        assert record["service"] == service and record["node"] == node
        assert (record["method"], record["endpoint"], record["status"]) == (method, endpoint, status)
        expected_consumer = consumer.decode("latin-1") if isinstance(consumer, bytes) else consumer
        assert record["consumer"] == expected_consumer and record["context"] == context
        assert record["response_time"] == pytest.approx(response_time, abs=0.0005 + 1e-9)
        assert str(record["response_time"]).split(".")[1].__len__() <= 3
        stamp = datetime.strptime(record["created_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        assert abs(stamp.timestamp() - created) < 2e-6


@pytest.mark.parametrize("count", [1, 2, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7])
@pytest.mark.parametrize("node", [None, "node-1%s"])
def test_rows_encode_to_the_ingest_format(count: int, node: str | None) -> None:
    rows = make_rows(count, seed=count)
    encoder = RecordEncoder()
    text = encoder.encode_rows(rows, "svc%d", node)
    check(json.loads("[" + text + "]"), rows, "svc%d", node)
    # the same encoder again (memoised prefixes and seconds), and the whole body
    body = json.loads(encoder.encode_body(rows, "svc%d", node))
    check(body["requests"], rows, "svc%d", node)


@pytest.mark.parametrize("count", [CHUNK, CHUNK + 1, 5 * CHUNK])
@pytest.mark.parametrize("use_gzip", [True, False])
def test_chunked_bodies_hold_every_record(count: int, use_gzip: bool) -> None:
    rows = make_rows(count, seed=7)
    body, gzipped = asyncio.run(RecordEncoder().encode_body_async(rows, "svc", None, use_gzip))
    assert gzipped is use_gzip
    check(json.loads(gzip.decompress(body) if gzipped else body)["requests"], rows, "svc", None)


def test_no_rows_is_an_empty_list() -> None:
    assert RecordEncoder().encode_rows([], "svc", None) == ""
    assert json.loads(RecordEncoder().encode_body([], "svc", None)) == {"requests": []}
