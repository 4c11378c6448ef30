"""The ingest write path: one SQL statement per batch stores the raw rows, appends the batch's
partial rollups (count, sum, min, max and latency histogram per 5-minute bucket and dimensions)
and records the Idempotency-Key, atomically. A replayed key stores nothing.

The histogram key expression below must match :func:`malti_server.histogram.key`.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from . import histogram
from .validation import Columns

_KEY_SQL = (
    f"CASE WHEN response_time <= {histogram.X_MIN_MS!r} THEN 0"
    f" ELSE least({histogram.MAX_KEY}, ceil(ln(response_time / {histogram.X_MIN_MS!r})"
    f" / {histogram.LN_GAMMA!r}))::smallint END"
)

STORE_BATCH_SQL = f"""
WITH idem AS (
    INSERT INTO ingest_batches (service, key, record_count)
    SELECT $10, $11, cardinality($1::timestamptz[])
    WHERE $11::text IS NOT NULL
    ON CONFLICT DO NOTHING
    RETURNING 1
), raw AS (
    INSERT INTO requests (created_at, service, node, method, endpoint, status, response_time, consumer, context)
    SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::smallint[], $7::float8[], $8::text[], $9::text[])
    WHERE $11::text IS NULL OR EXISTS (SELECT 1 FROM idem)
    RETURNING created_at, service, node, method, endpoint, status, response_time, consumer, context
), cells AS (
    SELECT date_bin('5 minutes', created_at, timestamptz '2000-01-01 00:00:00+00') AS bucket,
           service, node, method, endpoint, consumer, context, status,
           {_KEY_SQL} AS k,
           count(*)::integer AS c, sum(response_time) AS s, min(response_time) AS lo, max(response_time) AS hi
    FROM raw
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
), pending AS (
    INSERT INTO rollup_pending (bucket, service, node, method, endpoint, consumer, context, status,
                                n, sum_ms, min_ms, max_ms, lat_keys, lat_counts)
    SELECT bucket, service, node, method, endpoint, consumer, context, status,
           sum(c), sum(s), min(lo), max(hi), array_agg(k ORDER BY k), array_agg(c ORDER BY k)
    FROM cells
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
)
SELECT count(*) FROM raw
"""

DUPLICATE_COUNT_SQL = "SELECT record_count FROM ingest_batches WHERE service = $1 AND key = $2"


@dataclass(frozen=True)
class StoreResult:
    count: int
    duplicate: bool


async def store_batch(
    conn: asyncpg.Connection, service: str, cols: Columns, idempotency_key: str | None = None
) -> StoreResult:
    """Store one validated batch of ``service`` (all or nothing); replays of a key store nothing."""
    count = await conn.fetchval(
        STORE_BATCH_SQL,
        cols.created_at,
        cols.service,
        cols.node,
        cols.method,
        cols.endpoint,
        cols.status,
        cols.response_time,
        cols.consumer,
        cols.context,
        service,
        idempotency_key,
    )
    if idempotency_key is not None and count == 0:
        original = await conn.fetchval(DUPLICATE_COUNT_SQL, service, idempotency_key)
        return StoreResult(count=original if original is not None else len(cols), duplicate=True)
    return StoreResult(count=count, duplicate=False)
