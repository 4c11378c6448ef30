"""Metrics query parameters: parsing, validation, the resolution rule and bucket alignment.

Pure functions (no I/O): the HTTP layer hands in the query string as a mapping and gets back a
:class:`MetricsQuery` or a :class:`QueryError` naming the offending parameter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

UTC = timezone.utc
ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)  # bucket origin (a Saturday midnight, UTC)

MINUTE = timedelta(minutes=1)
FIVE_MINUTES = timedelta(minutes=5)
HOUR = timedelta(hours=1)
SIX_HOURS = timedelta(hours=6)
DAY = timedelta(days=1)
WEEK = timedelta(days=7)  # weeks start on Saturday 00:00 UTC, the weekday of ORIGIN

INTERVALS = {"1min": MINUTE, "5min": FIVE_MINUTES, "1hour": HOUR}
DEFAULT_RANGE = timedelta(days=7)
REALTIME_RANGE = timedelta(minutes=60)
MAX_1MIN_RANGE = timedelta(hours=24)  # interval=1min on /aggregate reads raw rows
#: a range given as "that long before now" by a client arrives a little longer than asked (its
#: now is earlier than ours, by the request's travel and the clocks' skew): the limits allow this
RANGE_SLACK = timedelta(minutes=5)
HOURLY_THRESHOLD = timedelta(days=4)  # longer ranges read the 1-hour rollups
MAX_BUCKETS = 20_000  # about 2.3 years of hourly points
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100

FILTER_FIELDS = ("service", "node", "method", "endpoint", "consumer", "context")
#: the times a query may name (earlier starts and later ends are clamped to them): bucket
#: arithmetic and ISO output stay well inside datetime's range
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


class QueryError(Exception):
    """An invalid query parameter (HTTP 422 / 403)."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Filters:
    """Equality filters on record dimensions; ``services`` is the reader's restriction (None: all)."""

    service: str | None = None
    node: str | None = None
    method: str | None = None
    endpoint: str | None = None
    consumer: str | None = None
    context: str | None = None
    services: frozenset[str] | None = None

    def dims(self) -> frozenset[str]:
        """Filtered dimensions other than service (every rollup level keeps service)."""
        return frozenset(f for f in FILTER_FIELDS[1:] if getattr(self, f) is not None)


@dataclass(frozen=True)
class MetricsQuery:
    filters: Filters
    start: datetime  # as asked (UTC)
    end: datetime
    step: timedelta  # bucket width: 1 minute, 5 minutes or 1 hour
    first_bucket: datetime  # floor(start)
    stop: datetime  # end of the last bucket: floor(end) + step
    status: int | None = None
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def resolution(self) -> str:
        return {MINUTE: "1min", FIVE_MINUTES: "5min", HOUR: "1hour"}[self.step]

    def buckets(self) -> list[datetime]:
        n = (self.stop - self.first_bucket) // self.step
        return [self.first_bucket + i * self.step for i in range(n)]


def floor_time(t: datetime, step: timedelta) -> datetime:
    """Start of the ``step``-wide bucket holding ``t`` (buckets aligned to midnight UTC)."""
    return t - (t - ORIGIN) % step


def ceil_time(t: datetime, step: timedelta) -> datetime:
    f = floor_time(t, step)
    return f if f == t else f + step


_OFFSET_SPACE = re.compile(r" (\d\d(:?\d\d)?)$")


def parse_time(value: str, name: str) -> datetime:
    """ISO 8601 time; naive means UTC. A '+' offset that arrived as a space (unencoded URL) is
    accepted too."""
    text = value.strip()
    if not text:
        raise QueryError(name, f"{name} is empty: give an ISO 8601 time like 2026-11-23T10:00:00Z")
    text = _OFFSET_SPACE.sub(r"+\1", text)
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise QueryError(
            name, f"{name}: cannot parse {value[:100]!r} as an ISO 8601 time (e.g. 2026-11-23T10:00:00Z)"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    try:
        return t.astimezone(UTC)
    except (OverflowError, ValueError):
        raise QueryError(name, f"{name}: {value[:100]!r} is out of range") from None


def _text_param(params: Mapping[str, str], name: str) -> str | None:
    """A text parameter, or None when absent or empty; a NUL character is refused (no stored
    value can hold one)."""
    value = params.get(name)
    if not value:
        return None
    if "\x00" in value:
        raise QueryError(name, f"{name} must not contain a NUL character")
    return value


def parse_filters(params: Mapping[str, str], allowed: frozenset[str] | None) -> Filters:
    """Dimension filters (empty values mean no filter) and the reader's service restriction."""
    values = {name: _text_param(params, name) for name in FILTER_FIELDS}
    service = values["service"]
    if allowed is not None and service is not None and service not in allowed:
        raise QueryError("service", f"you may not read metrics of service {service!r}", status=403)
    return Filters(**values, services=allowed)


def _time_range(
    params: Mapping[str, str], now: datetime, default_range: timedelta
) -> tuple[datetime, datetime]:
    start_s, end_s = params.get("start_time"), params.get("end_time")
    start = parse_time(start_s, "start_time") if start_s else None
    end = parse_time(end_s, "end_time") if end_s else None
    # "since the beginning" / "until whenever" are fine: clamped to the times a query may name
    if start is not None and start < EARLIEST:
        start = EARLIEST
    if end is not None and end > LATEST:
        end = LATEST
    for name, t in (("start_time", start), ("end_time", end)):
        if t is not None and not EARLIEST <= t <= LATEST:
            raise QueryError(name, f"{name} is out of range ({EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d})")
    if end is None:
        end = now if start is None or start <= now else start
    if start is None:
        start = end - default_range
    if start > end:
        raise QueryError("start_time", "start_time must not be after end_time")
    return start, end


def _interval(params: Mapping[str, str]) -> str | None:
    interval = params.get("interval")
    if interval is None or interval == "":
        return None
    if interval not in INTERVALS:
        raise QueryError(
            "interval", f"unknown interval {interval[:50]!r}: use one of {', '.join(INTERVALS)}"
        )
    return interval


def _build(filters: Filters, start: datetime, end: datetime, step: timedelta, **kw) -> MetricsQuery:
    try:
        first = floor_time(start, step)
        stop = floor_time(end, step) + step
    except OverflowError:
        raise QueryError("start_time", "time range is out of bounds") from None
    if (stop - first) // step > MAX_BUCKETS:
        raise QueryError(
            "start_time",
            f"time range too long: at most {MAX_BUCKETS} buckets of {step} (narrow the range or use interval=1hour)",
        )
    return MetricsQuery(filters, start, end, step, first, stop, **kw)


def parse_aggregate(
    params: Mapping[str, str], allowed: frozenset[str] | None, now: datetime, realtime: bool = False
) -> MetricsQuery:
    """Parameters of /aggregate (resolution rule of DESIGN.md) or /aggregate/realtime."""
    interval = _interval(params)
    filters = parse_filters(params, allowed)
    if realtime:
        start, end = _time_range(params, now, REALTIME_RANGE)
        if end - start > REALTIME_RANGE + RANGE_SLACK:
            raise QueryError(
                "start_time", "Time range cannot exceed 60 minutes for real-time metrics"
            )
        return _build(filters, start, end, MINUTE)
    # interval=1min without a start: the last 60 minutes, as the original (7 days would be refused)
    start, end = _time_range(params, now, REALTIME_RANGE if interval == "1min" else DEFAULT_RANGE)
    if interval == "1min":
        if end - start > MAX_1MIN_RANGE + RANGE_SLACK:
            raise QueryError(
                "interval", "interval=1min reads raw data and allows at most 24 hours; use 5min or 1hour"
            )
        step = MINUTE
    elif interval == "1hour" or end - start > HOURLY_THRESHOLD:
        step = HOUR
    else:
        step = FIVE_MINUTES
    return _build(filters, start, end, step)


def parse_int(params: Mapping[str, str], name: str, lo: int, hi: int, default: int | None) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise QueryError(name, f"{name} must be an integer, got {raw[:50]!r}") from None
    if not lo <= value <= hi:
        raise QueryError(name, f"{name} must be between {lo} and {hi}, got {value}")
    return value


def parse_requests(params: Mapping[str, str], allowed: frozenset[str] | None, now: datetime) -> MetricsQuery:
    """Parameters of /requests: filters, status, limit, cursor; default range 7 days."""
    _interval(params)
    filters = parse_filters(params, allowed)
    start, end = _time_range(params, now, DEFAULT_RANGE)
    status = parse_int(params, "status", 100, 599, None)
    limit = parse_int(params, "limit", 1, MAX_LIMIT, DEFAULT_LIMIT)
    cursor = _text_param(params, "cursor")
    return MetricsQuery(filters, start, end, MINUTE, start, end, status=status, limit=limit, cursor=cursor)


def parse_dimensions(params: Mapping[str, str], allowed: frozenset[str] | None, now: datetime) -> MetricsQuery:
    """Parameters of /dimensions: time range and service."""
    _interval(params)  # not used here, but a wrong one is refused as on the other endpoints
    filters = parse_filters(params, allowed)
    start, end = _time_range(params, now, DEFAULT_RANGE)
    return MetricsQuery(filters, start, end, HOUR, floor_time(start, HOUR), floor_time(end, HOUR) + HOUR)
