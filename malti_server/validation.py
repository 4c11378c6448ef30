"""Decoding and validating ingest batches: msgspec decodes and type-checks the whole body in one C
pass; a slower per-record pass runs only when something is wrong, to report every bad record with
its index and field. Text is cleaned of control characters (ANSI escapes included) and cut to 500
characters, so nothing stored can restyle a terminal or a page."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

import msgspec

from .histogram import MAX_RESPONSE_TIME_MS

MAX_TEXT = 500
_TEXT_FIELDS = ("service", "node", "method", "endpoint", "consumer", "context")
_REQUIRED_TEXT = ("service", "method", "endpoint")
_METHOD = re.compile(r"^[A-Z][A-Z_-]{0,31}$")
# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ST), other two-byte ESC sequences, and 8-bit CSI.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]|\x9b[0-?]*[ -/]*[@-~]"
)
_STRIP_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"}


class Record(msgspec.Struct, forbid_unknown_fields=False):
    """One request record as clients send it (field names of the original Malti API)."""

    service: str
    method: str
    endpoint: str
    status: Annotated[int, msgspec.Meta(ge=100, le=599)]
    response_time: Annotated[float, msgspec.Meta(ge=0)]
    consumer: str
    node: str | None = None
    context: str | None = None
    created_at: datetime | None = None


class Batch(msgspec.Struct):
    requests: list[Record]


_batch_decoder = msgspec.json.Decoder(Batch, strict=False)
_any_decoder = msgspec.json.Decoder()


class BatchError(Exception):
    """A batch that cannot be stored, with the HTTP status and the per-record errors."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, Any]] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors


@dataclass(frozen=True)
class Columns:
    """A validated batch as parallel columns, ready for one bulk insert."""

    created_at: list[datetime]
    service: list[str]
    node: list[str | None]
    method: list[str]
    endpoint: list[str]
    status: list[int]
    response_time: list[float]
    consumer: list[str]
    context: list[str | None]

    def __len__(self) -> int:
        return len(self.status)


def clean_text(value: str) -> str:
    """Remove escape sequences and control/format characters, then cut to 500 characters."""
    if value.isprintable():
        return value if len(value) <= MAX_TEXT else value[:MAX_TEXT]
    value = _ESCAPES.sub("", value)
    value = "".join(
        ch if ch == " " or unicodedata.category(ch) not in _STRIP_CATEGORIES else ("" if ch not in "\t\n\r\u2028\u2029" else " ")
        for ch in value
    )
    return value[:MAX_TEXT]


_MISSING_FIELD = re.compile(r"missing required field `(\w+)`")


def _error_location(message: str) -> tuple[int | None, str]:
    m = re.search(r"\$\.requests\[(\d+)\]", message)
    if m:  # about one record: its field, as for a record checked alone
        return int(m.group(1)), _record_field(message.replace(m.group(0), "$", 1))
    m = re.search(r"\$\.(\w+)", message)
    return None, m.group(1) if m else "body"


def _record_field(message: str) -> str:
    """The field of one record an error of ``msgspec.convert(record, Record)`` is about."""
    m = re.search(r"`\$\.(\w+)", message)
    if m:
        return m.group(1)
    missing = _MISSING_FIELD.search(message)
    return missing.group(1) if missing else "record"


def _describe(message: str) -> str:
    return message.split(" - at `")[0]


MAX_REPORTED_ERRORS = 100


def _too_many(count: int, max_records: int) -> BatchError:
    return BatchError(413, f"Batch too large: {count} records, the limit is {max_records}")


def decode_batch(body: bytes, max_records: int | None = None) -> list[Record]:
    """Decode a JSON body into records, raising :class:`BatchError` (400/413/422) with every problem."""
    try:
        batch = _batch_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise _collect_errors(body, exc, max_records) from None
    except msgspec.DecodeError as exc:
        raise BatchError(400, f"Malformed JSON body: {exc}") from None
    except UnicodeDecodeError:
        raise BatchError(400, "Body is not valid UTF-8 JSON") from None
    except RecursionError:
        raise BatchError(400, "Malformed JSON body: nested too deeply") from None
    if not batch.requests:
        raise BatchError(400, "Empty batch: 'requests' must hold at least one record")
    if max_records is not None and len(batch.requests) > max_records:
        raise _too_many(len(batch.requests), max_records)
    return batch.requests


def _collect_errors(body: bytes, first: msgspec.ValidationError, max_records: int | None = None) -> BatchError:
    try:
        data = _any_decoder.decode(body)
    except RecursionError:
        return BatchError(400, "Malformed JSON body: nested too deeply")
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return BatchError(400, f"Malformed JSON body: {exc}")
    except msgspec.ValidationError:
        # Not decodable even as plain JSON (e.g. a number out of range): report the typed error.
        index, field = _error_location(str(first))
        return BatchError(422, f"Invalid batch: {_describe(str(first))}; nothing was stored",
                          [{"index": index, "field": field, "error": _describe(str(first))}])
    if not isinstance(data, dict):
        return BatchError(400, "Body must be a JSON object like {\"requests\": [...]}")
    items = data.get("requests")
    if items is None:
        return BatchError(422, "Invalid batch: 'requests' is missing",
                          [{"index": None, "field": "requests", "error": "required"}])
    if not isinstance(items, list):
        return BatchError(422, "Invalid batch: 'requests' must be a list",
                          [{"index": None, "field": "requests", "error": "must be a list of records"}])
    if max_records is not None and len(items) > max_records:
        return _too_many(len(items), max_records)
    errors = []
    for i, item in enumerate(items):
        try:
            msgspec.convert(item, Record, strict=False)
        except msgspec.ValidationError as exc:
            errors.append({"index": i, "field": _record_field(str(exc)), "error": _describe(str(exc))})
    if not errors:  # should not happen, but never answer 422 without saying why
        errors.append({"index": None, "field": "requests", "error": "invalid batch"})
    return _invalid(errors)


def _invalid(errors: list[dict[str, Any]]) -> BatchError:
    """422 listing at most MAX_REPORTED_ERRORS errors (the detail gives the full count)."""
    bad = len({e["index"] for e in errors})
    shown = errors[:MAX_REPORTED_ERRORS]
    more = f" (the first {len(shown)} errors are listed)" if len(errors) > len(shown) else ""
    return BatchError(422, f"Invalid batch: {bad} invalid record(s); nothing was stored{more}", shown)


def to_columns(
    records: list[Record],
    service: str,
    now: datetime,
    oldest: datetime,
    max_future: timedelta,
) -> Columns:
    """Clean and check records of one service's batch; 403 for a foreign service, 422 otherwise."""
    created_at: list[datetime] = []
    services: list[str] = []
    nodes: list[str | None] = []
    methods: list[str] = []
    endpoints: list[str] = []
    statuses: list[int] = []
    times: list[float] = []
    consumers: list[str] = []
    contexts: list[str | None] = []
    errors: list[dict[str, Any]] = []
    foreign: set[str] = set()
    latest = now + max_future
    for i, r in enumerate(records):
        svc = clean_text(r.service)
        if svc != service:
            foreign.add(svc)
            continue
        method = clean_text(r.method).upper()
        endpoint = clean_text(r.endpoint)
        for name, val in (("service", svc), ("method", method), ("endpoint", endpoint)):
            if not val:
                errors.append({"index": i, "field": name, "error": "must not be empty"})
        if method and not _METHOD.match(method):
            errors.append({"index": i, "field": "method", "error": "not an HTTP method"})
        ts = r.created_at
        if ts is None:
            ts = now
        elif ts.tzinfo is None:
            ts = ts.replace(tzinfo=timezone.utc)
        elif ts.utcoffset():
            ts = ts.astimezone(timezone.utc)
        if ts < oldest:
            errors.append({"index": i, "field": "created_at",
                           "error": f"older than the longest retention ({oldest.isoformat()})"})
        elif ts > latest:
            errors.append({"index": i, "field": "created_at", "error": "too far in the future"})
        if r.response_time != r.response_time or r.response_time == float("inf"):
            errors.append({"index": i, "field": "response_time", "error": "must be a finite number"})
        elif r.response_time > MAX_RESPONSE_TIME_MS:
            errors.append({"index": i, "field": "response_time",
                           "error": f"must be at most {MAX_RESPONSE_TIME_MS:g} ms"})
        created_at.append(ts)
        services.append(svc)
        nodes.append(clean_text(r.node) or None if r.node is not None else None)
        methods.append(method)
        endpoints.append(endpoint)
        statuses.append(r.status)
        times.append(float(r.response_time))
        consumers.append(clean_text(r.consumer))
        contexts.append(clean_text(r.context) or None if r.context is not None else None)
    if foreign:
        names = ", ".join(sorted(repr(s) for s in foreign)[:5])
        raise BatchError(403, f"This key may only ingest records of service {service!r}; the batch has {names}")
    if errors:
        raise _invalid(errors)
    return Columns(created_at, services, nodes, methods, endpoints, statuses, times, consumers, contexts)
