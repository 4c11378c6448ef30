"""Telemetry records: the public dataclass, the compact form kept in the buffer, and JSON encoding.

On the request path a record is a plain tuple (:data:`Row`): building it costs one
allocation (none with the compiled module, whose ``RowStore`` keeps the same fields in a
C slot and makes the tuple when the sender takes the row). Everything else (ISO
timestamps, JSON escaping, gzip) happens when a batch is encoded, in chunks that each
take well under a millisecond, so the event loop keeps serving requests while a large
backlog is sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
import zlib
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

# A buffered record: (method, endpoint, status, response_time_ms, consumer, context, created_unix).
# consumer may be str or the raw header bytes (decoded at encoding time, off the request path).
Row = tuple

_METHOD = re.compile(r"[A-Z][A-Z_-]{0,31}")  # what the Malti server accepts as an HTTP method
KNOWN_METHODS = {m: m for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT")}
_METHOD_CACHE_LIMIT = 256
#: recorded instead of a method the server would refuse (one such record would cost its whole batch)
OTHER_METHOD = "OTHER"


def normalize_method(method: str) -> str:
    """The method as the server accepts it (upper case), or ``OTHER`` for anything else."""
    known = KNOWN_METHODS.get(method)
    if known is not None:
        return known
    text = method.upper() if isinstance(method, str) else ""
    result = text if _METHOD.fullmatch(text) else OTHER_METHOD
    if len(KNOWN_METHODS) < _METHOD_CACHE_LIMIT and isinstance(method, str):
        KNOWN_METHODS[method] = result
    return result


#: records encoded between two yields to the event loop (each chunk: a few hundred µs).
CHUNK = 100
#: bodies smaller than this are sent uncompressed (gzip would not pay for itself).
GZIP_MIN_BYTES = 1024


@dataclass
class TelemetryRecord:
    """One HTTP request as sent to the Malti server (the original package's record type)."""

    service: str
    method: str
    endpoint: str
    status: int
    response_time: float
    consumer: str
    node: str | None = None
    context: str | None = None
    created_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as the ingest API expects it (``created_at`` as ISO 8601)."""
        data = asdict(self)
        created = data["created_at"]
        if created is None:
            data["created_at"] = datetime.now(timezone.utc).isoformat()
        elif isinstance(created, datetime):
            data["created_at"] = created.isoformat()
        return data

    def to_row(self) -> Row:
        """The compact buffered form of this record."""
        created = self.created_at
        if created is None:
            stamp = time.time()
        else:
            if created.tzinfo is None:
                created = created.replace(tzinfo=timezone.utc)
            stamp = created.timestamp()
        return (self.method, self.endpoint, self.status, float(self.response_time), self.consumer, self.context, stamp)

    @classmethod
    def from_row(cls, row: Row, service: str, node: str | None) -> "TelemetryRecord":
        method, endpoint, status, response_time, consumer, context, stamp = row
        if isinstance(consumer, bytes):
            consumer = consumer.decode("latin-1")
        return cls(
            service=service,
            method=method,
            endpoint=endpoint,
            status=status,
            response_time=response_time,
            consumer=consumer,
            node=node,
            context=context,
            created_at=datetime.fromtimestamp(stamp, timezone.utc),
        )


#: the variable part of an encoded record: prefix, response time, second, microseconds
_RECORD_TEMPLATE = '%s%.3f,"created_at":"%s.%06dZ"}'
_FULL_CHUNK = ",".join([_RECORD_TEMPLATE] * CHUNK)  # the sender's usual chunk; other sizes are built


def _json_text(value: Any) -> str:
    if value is None:
        return "null"
    return json.dumps(value.decode("latin-1") if isinstance(value, bytes) else str(value))


class RecordEncoder:
    """Turns buffered rows into ingest request bodies.

    Records of one batch mostly repeat the same method, endpoint, status, consumer and
    context: the JSON text of those fields is memoised as one prefix per combination,
    so a record costs one dict lookup and one small format.
    """

    _PREFIX_LIMIT = 20_000

    def __init__(self) -> None:
        self._prefixes: dict[tuple, str] = {}
        self._seconds: dict[int, str] = {}
        self._head_key: tuple = ()
        self._head = ""

    def _use_head(self, service: str, node: str | None) -> None:
        if self._head_key != (service, node):
            self._head_key = (service, node)
            self._head = '{"service":%s,"node":%s,"method":' % (_json_text(service), _json_text(node))
            self._prefixes.clear()

    def encode_rows(self, rows: Iterable[Row], service: str, node: str | None) -> str:
        """Comma-joined JSON objects for ``rows`` (no surrounding brackets)."""
        self._use_head(service, node)
        if _encode is not None:  # the compiled encoder: the same text (None: rows it leaves to us)
            text = _encode(rows, self._prefixes, self._prefix, self._stamp)
            if text is not None:
                return text
        return self._encode_rows_python(rows)

    def _encode_rows_python(self, rows: Iterable[Row]) -> str:
        prefixes = self._prefixes
        # Four values per record, formatted by one call for the whole chunk: in a hot
        # loop 27 % faster than one call per record, for the same bytes.
        values: list = []
        extend = values.extend
        last_second = None
        stamp = ""
        for method, endpoint, status, response_time, consumer, context, created in rows:
            key = (method, endpoint, status, consumer, context)
            prefix = prefixes.get(key)
            if prefix is None:
                prefix = self._prefix(key)
            second = int(created)
            if second != last_second:  # rows come mostly in time order: one lookup per second
                last_second = second
                stamp = self._stamp(second)
            extend((prefix, response_time, stamp, (created - second) * 1e6))
        count = len(values) >> 2
        if not count:
            return ""
        template = _FULL_CHUNK if count == CHUNK else ",".join([_RECORD_TEMPLATE] * count)
        return template % tuple(values)

    def _prefix(self, key: tuple) -> str:
        """The memoised JSON text of a record before its response time."""
        prefixes = self._prefixes
        if len(prefixes) >= self._PREFIX_LIMIT:
            prefixes.clear()  # bounded: high-cardinality consumers must not grow memory
        method, endpoint, status, consumer, context = key
        prefix = prefixes[key] = (
            '%s%s,"endpoint":%s,"status":%d,"consumer":%s,"context":%s,"response_time":'
            % (
                self._head,
                _json_text(method),
                _json_text(endpoint),
                status,
                _json_text(consumer),
                _json_text(context),
            )
        )
        return prefix

    def _stamp(self, second: int) -> str:
        """The memoised ISO text of a whole second (UTC)."""
        stamp = self._seconds.get(second)
        if stamp is None:
            if len(self._seconds) > 4096:
                self._seconds.clear()
            stamp = self._seconds[second] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return stamp

    def encode_body(self, rows: Sequence[Row], service: str, node: str | None) -> bytes:
        """The complete JSON body ``{"requests": [...]}``, in one go (for small batches and tests)."""
        return ('{"requests":[' + self.encode_rows(rows, service, node) + "]}").encode()

    async def encode_body_async(
        self, rows: Sequence[Row], service: str, node: str | None, gzip: bool
    ) -> tuple[bytes, bool]:
        """The body, encoded (and gzipped) chunk by chunk, yielding to the loop in between.

        Returns ``(body, gzipped)``.
        """
        if len(rows) <= CHUNK:
            body = self.encode_body(rows, service, node)
            if gzip and len(body) >= GZIP_MIN_BYTES:
                return _gzip_once(body), True
            return body, False
        if gzip and _GzipWriter is not None:
            return await self._gzip_compiled(rows, service, node), True
        compressor = zlib.compressobj(1, zlib.DEFLATED, 31) if gzip else None
        pieces: list[bytes] = []
        opening = b'{"requests":['
        pieces.append(compressor.compress(opening) if compressor else opening)
        for start in range(0, len(rows), CHUNK):
            text = self.encode_rows(rows[start : start + CHUNK], service, node)
            if start:
                text = "," + text
            data = text.encode()
            pieces.append(compressor.compress(data) if compressor else data)
            await asyncio.sleep(0)
        closing = b"]}"
        if compressor:
            pieces.append(compressor.compress(closing))
            pieces.append(compressor.flush())
        else:
            pieces.append(closing)
        return b"".join(pieces), compressor is not None

    async def _gzip_compiled(self, rows: Sequence[Row], service: str, node: str | None) -> bytes:
        """The same body as zlib's, through the compiled GzipWriter (see _speedups.c): the
        encoder's known repeats (a record's prefix, its created_at second) become gzip
        back-references, for a tenth of zlib's instructions (a third of its time) and twice
        its bytes."""
        writer = _GzipWriter()
        writer.write(b'{"requests":[')
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start : start + CHUNK]
            self._use_head(service, node)  # again after each yield: another batch may have changed it
            if not writer.write_rows(chunk, self._prefixes, self._prefix, self._stamp, start > 0):
                text = self._encode_rows_python(chunk)  # rows the compiled encoder leaves to us
                writer.write(("," + text if start else text).encode())
            await asyncio.sleep(0)
        writer.write(b"]}")
        return writer.finish()


#: the interface of malti_sdk/_speedups.c this code expects (its VERSION)
SPEEDUPS_VERSION = 7


def _load_speedups() -> Any:
    """The compiled module (malti_sdk/_speedups.c), or None: not built (no C compiler),
    switched off (``MALTI_SPEEDUPS`` read as a switch, like every ``MALTI_*`` one), or built
    from another version of the source (an in-place build not redone after an update)."""
    setting = os.environ.get("MALTI_SPEEDUPS")
    if setting is not None:
        from ._config import _parse_bool

        if not _parse_bool(setting):
            return None
    try:
        from . import _speedups
    except ImportError:
        return None
    if getattr(_speedups, "VERSION", None) != SPEEDUPS_VERSION:
        logging.getLogger("malti_sdk").warning(
            "Malti: malti_sdk._speedups was built from another version of the source; using the"
            " pure-Python path (rebuild: pip install -e . or python setup.py build_ext --inplace)"
        )
        return None
    return _speedups


#: the compiled module when used (the middleware takes its request path from here too)
speedups = _load_speedups()
_encode = speedups.encode if speedups is not None else None
_GzipWriter = speedups.GzipWriter if speedups is not None else None


def _gzip_once(body: bytes) -> bytes:
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    return compressor.compress(body) + compressor.flush()
