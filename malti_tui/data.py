"""The TUI's one narrow door to data.

Screens and widgets never fetch anything themselves: they hold a
:class:`DataSource` and get back the small, display-ready records defined here.
:class:`ClientDataSource` implements it with ``malti_sdk``'s
:class:`~malti_sdk.AsyncMaltiClient`; tests and benchmarks plug in their own
source (a fixed data set, a deliberately slow one) without touching the UI.

Failures reach the UI as one of the :class:`DataError` subclasses, each with a
message a user can act on; the UI never sees a raw HTTP or client exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Protocol

from .timeranges import TimeRange

# --------------------------------------------------------------------------- errors


class DataError(Exception):
    """A query failed; ``str(error)`` says why and what to do.

    Tree::

        DataError
        ├── AuthFailed         the key was refused (401) or lacks the right (403)
        ├── ServerUnavailable  cannot connect, timeout, 5xx, restarting
        ├── RateLimited        429, retry after ``retry_after`` seconds
        └── BadQuery           the server refused the parameters (422)
    """

    retry_after: float | None = None


class AuthFailed(DataError):
    """The server refused the key."""


class ServerUnavailable(DataError):
    """The server could not be reached or could not answer right now."""


class RateLimited(DataError):
    """Too many requests; wait ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BadQuery(DataError):
    """The server refused the query's parameters."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Colour limits from ``/api/v1/auth/test`` (error rates in percent, latency in ms)."""

    error_rate_success: float = 0.5
    error_rate_warning: float = 1.0
    latency_success: float = 300.0
    latency_warning: float = 800.0


@dataclass(frozen=True, slots=True)
class AuthInfo:
    """Who the key belongs to and the dashboard thresholds."""

    user: str
    services: tuple[str, ...] | None
    thresholds: Thresholds


@dataclass(frozen=True, slots=True)
class Bucket:
    """One point of the time series."""

    bucket: datetime
    total_requests: int = 0
    error_count: int = 0
    min_latency: float | None = None
    avg_latency: float | None = None
    p50_latency: float | None = None
    p95_latency: float | None = None
    p99_latency: float | None = None
    max_latency: float | None = None


@dataclass(frozen=True, slots=True)
class Summary:
    """The metric cards' figures."""

    total_requests: int = 0
    error_count: int = 0
    error_rate: float = 0.0
    requests_per_minute: float = 0.0
    min_latency: float | None = None
    avg_latency: float | None = None
    p50_latency: float | None = None
    p95_latency: float | None = None
    p99_latency: float | None = None
    max_latency: float | None = None


@dataclass(frozen=True, slots=True)
class EndpointStat:
    """A row of the top-endpoints table."""

    endpoint: str
    method: str
    service: str
    total_requests: int = 0
    error_count: int = 0
    error_rate: float = 0.0
    avg_latency: float | None = None
    p50_latency: float | None = None
    p95_latency: float | None = None
    p99_latency: float | None = None


@dataclass(frozen=True, slots=True)
class ConsumerStat:
    """A row of the consumers chart and table."""

    consumer: str
    total_requests: int = 0
    error_count: int = 0
    error_rate: float = 0.0
    avg_latency: float | None = None
    p95_latency: float | None = None


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """Status-code distribution of one service."""

    service: str
    total_requests: int = 0
    success_2xx: int = 0
    warning_3xx: int = 0
    error_4xx_5xx: int = 0
    status_breakdown: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Dashboard:
    """Everything one dashboard refresh shows."""

    summary: Summary = field(default_factory=Summary)
    time_series: tuple[Bucket, ...] = ()
    endpoints: tuple[EndpointStat, ...] = ()
    consumers: tuple[ConsumerStat, ...] = ()
    status_distribution: tuple[ServiceStatus, ...] = ()
    distinct_nodes: tuple[str, ...] = ()
    distinct_contexts: tuple[str, ...] = ()
    resolution: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None

    @property
    def is_empty(self) -> bool:
        """No request at all in the window."""
        return self.summary.total_requests == 0


@dataclass(frozen=True, slots=True)
class EndpointRef:
    """An endpoint as the dimensions list it."""

    endpoint: str
    method: str
    service: str | None = None


@dataclass(frozen=True, slots=True)
class Dimensions:
    """The values each filter can take in the current window."""

    services: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    endpoints: tuple[EndpointRef, ...] = ()
    methods: tuple[str, ...] = ()
    consumers: tuple[str, ...] = ()
    contexts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One raw request, as the recent-requests log shows it."""

    id: int
    created_at: datetime
    service: str
    method: str
    endpoint: str
    status: int
    response_time: float
    consumer: str = ""
    node: str | None = None
    context: str | None = None


# --------------------------------------------------------------------------- queries

FILTER_NAMES: tuple[str, ...] = ("service", "node", "endpoint", "method", "consumer", "context")
"""The dimensions a user can filter on, in the order the filter bar shows them."""


@dataclass(frozen=True, slots=True)
class Filters:
    """The active filters; ``None`` means "all"."""

    service: str | None = None
    node: str | None = None
    endpoint: str | None = None
    method: str | None = None
    consumer: str | None = None
    context: str | None = None

    def with_value(self, name: str, value: str | None) -> "Filters":
        """A copy with filter ``name`` set (``None`` clears it). Choosing another
        service clears the node, which belongs to a service."""
        if name not in FILTER_NAMES:
            raise ValueError(f"unknown filter {name!r}")
        changes: dict[str, str | None] = {name: value or None}
        if name == "service" and value != self.service:
            changes["node"] = None
        return replace(self, **changes)

    def active(self) -> dict[str, str]:
        """The filters that are set, as query parameters."""
        return {name: getattr(self, name) for name in FILTER_NAMES if getattr(self, name)}


@dataclass(frozen=True, slots=True)
class Query:
    """What to ask for: a time window and filters."""

    time_range: TimeRange
    filters: Filters = field(default_factory=Filters)

    def window(self, now: datetime) -> tuple[datetime, datetime]:
        """Start and end of the window ending at ``now``."""
        return now - self.time_range.duration, now


class DataSource(Protocol):
    """What the UI needs from a Malti server."""

    url: str

    async def auth_test(self) -> AuthInfo:
        """Check the key and fetch the thresholds."""

    async def dashboard(self, query: Query) -> Dashboard:
        """The dashboard figures for ``query``."""

    async def dimensions(self, query: Query) -> Dimensions:
        """The filter choices in ``query``'s window (honouring its service filter)."""

    async def requests(self, query: Query, limit: int = 100, status: int | None = None) -> list[RequestRecord]:
        """The newest raw requests matching ``query``, newest first."""

    async def aclose(self) -> None:
        """Release connections."""


# --------------------------------------------------------------------------- conversion


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """Field ``name`` of a client result (dataclass or mapping)."""
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _as_time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    text = str(value)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _num(value: Any, default: float | None = None) -> float | None:
    if value is None:
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _str(value: Any) -> str:
    return "" if value is None else str(value)


_LATENCIES = ("min_latency", "avg_latency", "p50_latency", "p95_latency", "p99_latency", "max_latency")


def to_dashboard(result: Any) -> Dashboard:
    """Convert the client's aggregate result (or the raw JSON) to a :class:`Dashboard`."""
    s = _get(result, "metrics_summary") or _get(result, "summary") or {}
    summary = Summary(
        total_requests=_int(_get(s, "total_requests")),
        error_count=_int(_get(s, "error_count")),
        error_rate=_num(_get(s, "error_rate"), 0.0),
        requests_per_minute=_num(_get(s, "requests_per_minute"), 0.0),
        **{name: _num(_get(s, name)) for name in _LATENCIES},
    )
    series = tuple(
        Bucket(
            bucket=_as_time(_get(b, "bucket")) or datetime.min.replace(tzinfo=timezone.utc),
            total_requests=_int(_get(b, "total_requests")),
            error_count=_int(_get(b, "error_count")),
            **{name: _num(_get(b, name)) for name in _LATENCIES},
        )
        for b in _get(result, "time_series") or ()
    )
    endpoints = tuple(
        EndpointStat(
            endpoint=_str(_get(e, "endpoint")),
            method=_str(_get(e, "method")),
            service=_str(_get(e, "service")),
            total_requests=_int(_get(e, "total_requests")),
            error_count=_int(_get(e, "error_count")),
            error_rate=_num(_get(e, "error_rate"), 0.0),
            avg_latency=_num(_get(e, "avg_latency")),
            p50_latency=_num(_get(e, "p50_latency")),
            p95_latency=_num(_get(e, "p95_latency")),
            p99_latency=_num(_get(e, "p99_latency")),
        )
        for e in _get(result, "endpoints") or ()
    )
    consumers = tuple(
        ConsumerStat(
            consumer=_str(_get(c, "consumer")),
            total_requests=_int(_get(c, "total_requests")),
            error_count=_int(_get(c, "error_count")),
            error_rate=_num(_get(c, "error_rate"), 0.0),
            avg_latency=_num(_get(c, "avg_latency")),
            p95_latency=_num(_get(c, "p95_latency")),
        )
        for c in _get(result, "consumers") or ()
    )
    statuses = tuple(
        ServiceStatus(
            service=_str(_get(d, "service")),
            total_requests=_int(_get(d, "total_requests")),
            success_2xx=_int(_get(d, "success_2xx")),
            warning_3xx=_int(_get(d, "warning_3xx")),
            error_4xx_5xx=_int(_get(d, "error_4xx_5xx")),
            status_breakdown={str(k): _int(v) for k, v in (_get(d, "status_breakdown") or {}).items()},
        )
        for d in _get(result, "status_distribution") or ()
    )
    return Dashboard(
        summary=summary,
        time_series=series,
        endpoints=endpoints,
        consumers=consumers,
        status_distribution=statuses,
        distinct_nodes=tuple(_str(n) for n in _get(result, "distinct_nodes") or ()),
        distinct_contexts=tuple(_str(c) for c in _get(result, "distinct_contexts") or ()),
        resolution=_get(result, "resolution"),
        start_time=_as_time(_get(result, "start_time")),
        end_time=_as_time(_get(result, "end_time")),
    )


def to_dimensions(result: Any) -> Dimensions:
    """Convert the client's dimensions result to :class:`Dimensions`."""

    def strings(name: str) -> tuple[str, ...]:
        return tuple(_str(v) for v in _get(result, name) or () if v is not None)

    endpoints = []
    for e in _get(result, "endpoints") or ():
        if isinstance(e, str):
            endpoints.append(EndpointRef(e, ""))
        else:
            endpoints.append(EndpointRef(_str(_get(e, "endpoint")), _str(_get(e, "method")), _get(e, "service")))
    return Dimensions(
        services=strings("services"),
        nodes=strings("nodes"),
        endpoints=tuple(endpoints),
        methods=strings("methods"),
        consumers=strings("consumers"),
        contexts=strings("contexts"),
    )


def to_request(record: Any) -> RequestRecord:
    """Convert one raw record of the client's requests page."""
    return RequestRecord(
        id=_int(_get(record, "id")),
        created_at=_as_time(_get(record, "created_at")) or datetime.min.replace(tzinfo=timezone.utc),
        service=_str(_get(record, "service")),
        method=_str(_get(record, "method")),
        endpoint=_str(_get(record, "endpoint")),
        status=_int(_get(record, "status")),
        response_time=_num(_get(record, "response_time"), 0.0) or 0.0,
        consumer=_str(_get(record, "consumer")),
        node=_get(record, "node"),
        context=_get(record, "context"),
    )


def to_auth_info(result: Any) -> AuthInfo:
    """Convert the client's auth-test result."""
    user = _get(result, "user") or {}
    t = _get(result, "thresholds") or {}
    defaults = Thresholds()
    thresholds = Thresholds(
        error_rate_success=_num(_get(t, "error_rate_success_threshold"), defaults.error_rate_success),
        error_rate_warning=_num(_get(t, "error_rate_warning_threshold"), defaults.error_rate_warning),
        latency_success=_num(_get(t, "latency_success_threshold"), defaults.latency_success),
        latency_warning=_num(_get(t, "latency_warning_threshold"), defaults.latency_warning),
    )
    services = _get(user, "services")
    return AuthInfo(
        user=_str(_get(user, "name")),
        services=tuple(services) if services is not None else None,
        thresholds=thresholds,
    )


# --------------------------------------------------------------------------- the client


def utc_now() -> datetime:
    """The current time, UTC."""
    return datetime.now(timezone.utc)


class ClientDataSource:
    """A :class:`DataSource` backed by ``malti_sdk.AsyncMaltiClient``."""

    def __init__(self, url: str, api_key: str, timeout: float = 10.0) -> None:
        from malti_sdk import AsyncMaltiClient, MaltiError  # imported here: the UI can start before it loads

        self.url = url
        try:
            self._client = AsyncMaltiClient(url=url, api_key=api_key, timeout=timeout)
        except MaltiError as error:
            raise translate_error(error, url) from error

    async def auth_test(self) -> AuthInfo:
        return to_auth_info(await self._call(self._client.auth_test))

    async def dashboard(self, query: Query) -> Dashboard:
        filters = query.filters.active()
        if query.time_range.realtime:
            result = await self._call(self._client.realtime, **filters)
        else:
            start, _ = query.window(utc_now())
            result = await self._call(self._client.aggregate, start_time=start, **filters)
        return to_dashboard(result)

    async def dimensions(self, query: Query) -> Dimensions:
        start, _ = query.window(utc_now())
        service = query.filters.service
        kwargs: dict[str, Any] = {"start_time": start}
        if service:
            kwargs["service"] = service
        return to_dimensions(await self._call(self._client.dimensions, **kwargs))

    async def requests(self, query: Query, limit: int = 100, status: int | None = None) -> list[RequestRecord]:
        start, _ = query.window(utc_now())
        kwargs: dict[str, Any] = {"start_time": start, "limit": limit, **query.filters.active()}
        if status is not None:
            kwargs["status"] = status
        page = await self._call(self._client.requests, **kwargs)
        records = _get(page, "requests")
        if records is None and isinstance(page, (list, tuple)):
            records = page
        return [to_request(r) for r in records or ()]

    async def aclose(self) -> None:
        try:
            await self._client.aclose()
        except Exception:  # closing must never take the UI down
            pass

    async def _call(self, call: Any, /, **kwargs: Any) -> Any:
        # ``call`` is positional-only: ``method`` is also a filter name in kwargs.
        try:
            return await call(**kwargs)
        except DataError:
            raise
        except Exception as error:  # every client failure becomes a DataError with a clear message
            raise translate_error(error, self.url) from error


def translate_error(error: BaseException, url: str) -> DataError:
    """Map a ``malti_sdk`` client exception to a :class:`DataError` a user can act on."""
    import malti_sdk as sdk

    if isinstance(error, sdk.MaltiConnectionError):
        why = "timed out" if isinstance(error, sdk.MaltiTimeoutError) else "connection failed"
        return ServerUnavailable(f"Cannot reach the Malti server at {url} ({why}). Is it running? Retrying.")
    if isinstance(error, sdk.MaltiAPIError):
        status, detail = error.status, error.detail
        if isinstance(error, sdk.MaltiAuthError):
            if status == 403:
                return AuthFailed(f"Not allowed (403): {detail}. Reading metrics needs a user key, not a service key.")
            return AuthFailed(f"The server refused the API key (401): {detail}. Check the user key.")
        if isinstance(error, sdk.MaltiRateLimitError):
            return RateLimited(f"Rate limited by the server (429): {detail}.", error.retry_after)
        if isinstance(error, sdk.MaltiServerError):
            failure = ServerUnavailable(f"The server at {url} answered {status}: {detail}. Retrying.")
            failure.retry_after = error.retry_after
            return failure
        if isinstance(error, sdk.MaltiNotFoundError):
            return BadQuery(f"No Malti API at {url} (404). Check the server URL.")
        if isinstance(error, sdk.MaltiValidationError):
            return BadQuery(f"The server refused the query: {error}")
        return DataError(f"Unexpected answer from {url}: {error}")
    if isinstance(error, sdk.MaltiResponseError):
        return ServerUnavailable(f"{url} did not answer like a Malti server ({error}). Check the URL.")
    if isinstance(error, sdk.MaltiUsageError):
        return BadQuery(f"Invalid setting: {error}")
    return DataError(f"Unexpected error talking to {url}: {type(error).__name__}: {error}")


