"""POST /api/v1/ingest: authenticate the service, read the (possibly gzipped) body within the size
limits, validate the whole batch, store it all or nothing."""

from __future__ import annotations

import zlib
from datetime import datetime, timedelta, timezone

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response

from .auth import require_service, settings_of
from .errors import ApiError
from .validation import BatchError, decode_batch, to_columns
from .writer import store_batch

MAX_IDEMPOTENCY_KEY = 200


def _json(body: dict, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, decompressed if gzipped; 413 past ``limit`` bytes, 415 for other encodings."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"Request body too large: {declared} bytes, the limit is {limit}")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"Request body too large: over the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise ApiError(415, f"Unsupported Content-Encoding {encoding!r}: send identity or gzip")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise ApiError(400, "Body is not valid gzip data") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise ApiError(413, f"Decompressed body too large: over the limit of {limit} bytes")
    if not inflater.eof:
        raise ApiError(400, "Body is not valid gzip data (truncated)")
    return data


def _check_content_type(request: Request) -> None:
    ctype = request.headers.get("content-type")
    if ctype is None:
        return  # lenient: a body without a type is tried as JSON
    media = ctype.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise ApiError(415, f"Unsupported Content-Type {media!r}: send application/json")


async def ingest(request: Request) -> Response:
    principal = await require_service(request)
    settings = settings_of(request)
    limits = settings.limits
    await request.app.state.limiter.enforce(limits.ingest_rate, "ingest", principal.name, "ingest batches")
    _check_content_type(request)

    idem_key = request.headers.get("idempotency-key")
    if idem_key is not None:
        idem_key = idem_key.strip()
        if not idem_key or len(idem_key) > MAX_IDEMPOTENCY_KEY or not idem_key.isprintable():
            raise ApiError(400, f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} printable characters")

    body = await read_body(request, limits.max_body_bytes)
    now = datetime.now(timezone.utc)
    try:
        records = decode_batch(body, limits.max_batch_records)
        oldest = now - timedelta(seconds=max(settings.retention.rollup_1hour, settings.retention.rollup_5min))
        cols = to_columns(records, principal.name, now, oldest,
                          timedelta(seconds=limits.max_future_skew_seconds))
    except BatchError as exc:
        raise ApiError(exc.status, exc.detail, exc.errors) from None

    # An unreachable database raises one of db.UNAVAILABLE_ERRORS: the app answers 503 + Retry-After.
    state = request.app.state
    async with state.pool.acquire() as conn:
        days = {ts.date() for ts in set(cols.created_at)}
        await state.partitions.ensure(conn, days)
        try:
            result = await store_batch(conn, principal.name, cols, idem_key)
        except asyncpg.exceptions.CheckViolationError:
            # Another process dropped a day this one still believed in (retention): the
            # statement stored nothing, so create the day again and retry once.
            state.partitions.forget(days)
            await state.partitions.ensure(conn, days)
            result = await store_batch(conn, principal.name, cols, idem_key)
    body_out = {
        "message": f"Successfully ingested {result.count} requests",
        "count": result.count,
        "service": principal.name,
    }
    if result.duplicate:
        body_out["duplicate"] = True
    return _json(body_out)
