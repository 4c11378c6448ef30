"""Typed results of the metrics query client.

Each class mirrors one JSON object of ``docs/api.md`` and is built by its ``from_json``
classmethod. Parsing is lenient where the API grew (fields that the original Malti server
does not send default to ``None``/``0``/empty) and strict where a value is unusable (a
missing required field or a wrong type raises :class:`~malti_sdk.MaltiResponseError`).
Times are timezone-aware UTC ``datetime`` objects; latencies are milliseconds (``None``
where there was no 2xx response); error rates are percent (0-100).

Every result has an HTML representation for Jupyter in which text from the data is escaped.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ._exceptions import MaltiResponseError

__all__ = [
    "TimeSeriesPoint",
    "MetricsSummary",
    "EndpointStats",
    "StatusDistribution",
    "ConsumerStats",
    "SystemOverview",
    "Dashboard",
    "RequestRecord",
    "RequestPage",
    "DimensionEndpoint",
    "Dimensions",
    "Thresholds",
    "AuthUser",
    "AuthInfo",
    "Health",
]

_HTML_MAX_ROWS = 20

# --- parsing helpers -------------------------------------------------------------------------


def _require(data: Mapping[str, Any], key: str, what: str) -> Any:
    try:
        return data[key]
    except KeyError:
        raise MaltiResponseError(f"{what}: missing field {key!r}") from None
    except TypeError:
        raise MaltiResponseError(f"{what}: expected a JSON object, got {type(data).__name__}") from None


def _object(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise MaltiResponseError(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


def _list(data: Any, what: str) -> list[Any]:
    if data is None:
        return []
    if not isinstance(data, list):
        raise MaltiResponseError(f"{what}: expected a JSON array, got {type(data).__name__}")
    return data


def _int(value: Any, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MaltiResponseError(f"{what}: expected a number, got {value!r}")
    return int(value)


def _float(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MaltiResponseError(f"{what}: expected a number, got {value!r}")
    return float(value)


def _floats(data: dict, what: str, *names: str) -> dict[str, float | None]:
    """The optional number fields ``names`` of one JSON object (latencies), checked like :func:`_float`."""
    return {name: _float(data.get(name), f"{what}.{name}") for name in names}


_ALL_LATENCIES = ("min_latency", "avg_latency", "p50_latency", "p95_latency", "p99_latency", "max_latency")
_GROUP_LATENCIES = ("avg_latency", "p50_latency", "p95_latency", "p99_latency")


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise MaltiResponseError(f"{what}: expected a string, got {value!r}")
    return value


def _opt_str(value: Any, what: str) -> str | None:
    return None if value is None else _str(value, what)


def _strings(value: Any, what: str) -> list[str]:
    return [_str(item, what) for item in _list(value, what)]


def parse_datetime(value: Any, what: str = "time") -> datetime:
    """An ISO 8601 string from the server as a timezone-aware UTC datetime (naive means UTC)."""
    if not isinstance(value, str):
        raise MaltiResponseError(f"{what}: expected an ISO 8601 string, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise MaltiResponseError(f"{what}: not an ISO 8601 time: {value!r}") from None
    if parsed.tzinfo is timezone.utc:
        return parsed
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _opt_datetime(value: Any, what: str) -> datetime | None:
    return None if value is None else parse_datetime(value, what)


# --- HTML representation ---------------------------------------------------------------------


def _html_value(value: Any) -> str:
    if value is None:
        return '<span style="opacity:0.5">—</span>'
    if isinstance(value, float):
        return html.escape(f"{value:,.2f}")
    if isinstance(value, datetime):
        return html.escape(value.isoformat())
    if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
        return _html_table(value)
    if isinstance(value, list):
        return html.escape(", ".join(str(item) for item in value))
    if dataclasses.is_dataclass(value):
        return _html_fields(value)
    if isinstance(value, Mapping):
        return html.escape(", ".join(f"{key}: {item}" for key, item in value.items()))
    return html.escape(str(value))


def _html_table(rows: list[Any]) -> str:
    names = [f.name for f in dataclasses.fields(rows[0])]
    head = "".join(f"<th>{html.escape(name)}</th>" for name in names)
    body = "".join(
        "<tr>" + "".join(f"<td>{_html_value(getattr(row, name))}</td>" for name in names) + "</tr>"
        for row in rows[:_HTML_MAX_ROWS]
    )
    more = ""
    if len(rows) > _HTML_MAX_ROWS:
        more = f"<caption style='caption-side:bottom'>{len(rows) - _HTML_MAX_ROWS} more rows</caption>"
    return f"<table>{more}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_fields(obj: Any) -> str:
    rows = "".join(
        f"<tr><th style='text-align:left;vertical-align:top'>{html.escape(f.name)}</th>"
        f"<td style='text-align:left'>{_html_value(getattr(obj, f.name))}</td></tr>"
        for f in dataclasses.fields(obj)
    )
    return f"<table>{rows}</table>"


class _HtmlRepr:
    """Jupyter shows results as a table of their fields; every text value is escaped."""

    __slots__ = ()

    def _repr_html_(self) -> str:
        title = html.escape(type(self).__name__)
        return f"<div><strong>{title}</strong>{_html_fields(self)}</div>"


# --- aggregate -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimeSeriesPoint(_HtmlRepr):
    """One time bucket of the dashboard: counts and 2xx latencies (ms) of the bucket."""

    bucket: datetime
    total_requests: int = 0
    error_count: int = 0
    min_latency: float | None = None
    avg_latency: float | None = None
    p50_latency: float | None = None
    p95_latency: float | None = None
    p99_latency: float | None = None
    max_latency: float | None = None

    @classmethod
    def from_json(cls, data: Any) -> TimeSeriesPoint:
        what = "time_series item"
        data = _object(data, what)
        return cls(
            bucket=parse_datetime(_require(data, "bucket", what), f"{what}.bucket"),
            total_requests=_int(data.get("total_requests"), f"{what}.total_requests"),
            error_count=_int(data.get("error_count"), f"{what}.error_count"),
            **_floats(data, what, *_ALL_LATENCIES),
        )


@dataclass(frozen=True, slots=True)
class MetricsSummary(_HtmlRepr):
    """Totals over the whole range: counts, error rate (percent), request rate and 2xx latencies (ms)."""

    total_requests: int = 0
    error_count: int = 0
    error_rate: float = 0.0
    requests_per_minute: float | None = None
    min_latency: float | None = None
    avg_latency: float | None = None
    p50_latency: float | None = None
    p95_latency: float | None = None
    p99_latency: float | None = None
    max_latency: float | None = None

    @classmethod
    def from_json(cls, data: Any) -> MetricsSummary:
        what = "metrics_summary"
        data = _object(data, what)
        return cls(
            total_requests=_int(data.get("total_requests"), f"{what}.total_requests"),
            error_count=_int(data.get("error_count"), f"{what}.error_count"),
            error_rate=_float(data.get("error_rate"), f"{what}.error_rate") or 0.0,
            requests_per_minute=_float(data.get("requests_per_minute"), f"{what}.requests_per_minute"),
            **_floats(data, what, *_ALL_LATENCIES),
        )


@dataclass(frozen=True, slots=True)
class EndpointStats(_HtmlRepr):
    """Traffic of one endpoint (route pattern + method) of one service."""

    endpoint: str
    method: str
    service: str | None = None
    total_requests: int = 0
    error_count: int = 0
    error_rate: float = 0.0
    avg_latency: float | None = None
    p50_latency: float | None = None
    p95_latency: float | None = None
    p99_latency: float | None = None

    @classmethod
    def from_json(cls, data: Any) -> EndpointStats:
        what = "endpoints item"
        data = _object(data, what)
        return cls(
            endpoint=_str(_require(data, "endpoint", what), f"{what}.endpoint"),
            method=_str(_require(data, "method", what), f"{what}.method"),
            service=_opt_str(data.get("service"), f"{what}.service"),
            total_requests=_int(data.get("total_requests"), f"{what}.total_requests"),
            error_count=_int(data.get("error_count"), f"{what}.error_count"),
            error_rate=_float(data.get("error_rate"), f"{what}.error_rate") or 0.0,
            **_floats(data, what, *_GROUP_LATENCIES),
        )


@dataclass(frozen=True, slots=True)
class StatusDistribution(_HtmlRepr):
    """Status classes of one service; ``status_breakdown`` maps each status code to its count."""

    service: str
    total_requests: int = 0
    success_2xx: int = 0
    warning_3xx: int = 0
    error_4xx_5xx: int = 0
    status_breakdown: dict[int, int] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any) -> StatusDistribution:
        what = "status_distribution item"
        data = _object(data, what)
        breakdown_raw = data.get("status_breakdown") or {}
        if not isinstance(breakdown_raw, Mapping):
            raise MaltiResponseError(f"{what}.status_breakdown: expected a JSON object")
        breakdown: dict[int, int] = {}
        for code, count in breakdown_raw.items():
            try:
                status = int(code)
            except (TypeError, ValueError):
                raise MaltiResponseError(f"{what}.status_breakdown: {code!r} is not a status code") from None
            breakdown[status] = _int(count, f"{what}.status_breakdown[{code}]")
        return cls(
            service=_str(_require(data, "service", what), f"{what}.service"),
            total_requests=_int(data.get("total_requests"), f"{what}.total_requests"),
            success_2xx=_int(data.get("success_2xx"), f"{what}.success_2xx"),
            warning_3xx=_int(data.get("warning_3xx"), f"{what}.warning_3xx"),
            error_4xx_5xx=_int(data.get("error_4xx_5xx"), f"{what}.error_4xx_5xx"),
            status_breakdown=breakdown,
        )


@dataclass(frozen=True, slots=True)
class ConsumerStats(_HtmlRepr):
    """Traffic of one consumer (the caller identity the middleware recorded)."""

    consumer: str
    total_requests: int = 0
    error_count: int = 0
    error_rate: float = 0.0
    avg_latency: float | None = None
    p50_latency: float | None = None
    p95_latency: float | None = None
    p99_latency: float | None = None

    @classmethod
    def from_json(cls, data: Any) -> ConsumerStats:
        what = "consumers item"
        data = _object(data, what)
        return cls(
            consumer=_str(_require(data, "consumer", what), f"{what}.consumer"),
            total_requests=_int(data.get("total_requests"), f"{what}.total_requests"),
            error_count=_int(data.get("error_count"), f"{what}.error_count"),
            error_rate=_float(data.get("error_rate"), f"{what}.error_rate") or 0.0,
            **_floats(data, what, *_GROUP_LATENCIES),
        )


@dataclass(frozen=True, slots=True)
class SystemOverview(_HtmlRepr):
    """The original Malti's headline figures: totals, error rate (percent), average 2xx latency (ms)."""

    total_requests: int = 0
    total_errors: int = 0
    error_rate: float = 0.0
    avg_latency: float | None = None

    @classmethod
    def from_json(cls, data: Any) -> SystemOverview:
        what = "system_overview"
        data = _object(data, what)
        return cls(
            total_requests=_int(data.get("total_requests"), f"{what}.total_requests"),
            total_errors=_int(data.get("total_errors"), f"{what}.total_errors"),
            error_rate=_float(data.get("error_rate"), f"{what}.error_rate") or 0.0,
            avg_latency=_float(data.get("avg_latency"), f"{what}.avg_latency"),
        )


@dataclass(frozen=True, slots=True)
class Dashboard(_HtmlRepr):
    """The answer of ``/api/v1/metrics/aggregate`` (and ``.../realtime``)."""

    time_series: list[TimeSeriesPoint]
    metrics_summary: MetricsSummary
    endpoints: list[EndpointStats]
    status_distribution: list[StatusDistribution]
    consumers: list[ConsumerStats]
    system_overview: SystemOverview
    distinct_nodes: list[str]
    distinct_contexts: list[str]
    resolution: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None

    @classmethod
    def from_json(cls, data: Any) -> Dashboard:
        what = "aggregate response"
        data = _object(data, what)
        return cls(
            time_series=[
                TimeSeriesPoint.from_json(item)
                for item in _list(_require(data, "time_series", what), "time_series")
            ],
            metrics_summary=MetricsSummary.from_json(data.get("metrics_summary") or {}),
            endpoints=[EndpointStats.from_json(item) for item in _list(data.get("endpoints"), "endpoints")],
            status_distribution=[
                StatusDistribution.from_json(item)
                for item in _list(data.get("status_distribution"), "status_distribution")
            ],
            consumers=[ConsumerStats.from_json(item) for item in _list(data.get("consumers"), "consumers")],
            system_overview=SystemOverview.from_json(data.get("system_overview") or {}),
            distinct_nodes=_strings(data.get("distinct_nodes"), "distinct_nodes"),
            distinct_contexts=_strings(data.get("distinct_contexts"), "distinct_contexts"),
            resolution=_opt_str(data.get("resolution"), "resolution"),
            start_time=_opt_datetime(data.get("start_time"), "start_time"),
            end_time=_opt_datetime(data.get("end_time"), "end_time"),
        )

    def _repr_html_(self) -> str:
        s = self.metrics_summary
        span = ""
        if self.start_time and self.end_time:
            span = f"{self.start_time.isoformat()} → {self.end_time.isoformat()}"
        parts = [
            f"<div><strong>Dashboard</strong> {html.escape(span)}"
            f" <span style='opacity:0.6'>({html.escape(self.resolution or '?')} buckets,"
            f" {len(self.time_series)} points)</span>",
            "<h4>Summary</h4>",
            _html_fields(s),
        ]
        if self.endpoints:
            parts += ["<h4>Endpoints</h4>", _html_table(self.endpoints)]
        if self.consumers:
            parts += ["<h4>Consumers</h4>", _html_table(self.consumers)]
        if self.status_distribution:
            parts += ["<h4>Status</h4>", _html_table(self.status_distribution)]
        parts.append("</div>")
        return "".join(parts)


# --- raw requests ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestRecord(_HtmlRepr):
    """One stored request, as the middleware recorded it (``response_time`` in ms)."""

    id: int | None
    service: str
    node: str | None
    method: str
    endpoint: str
    status: int
    response_time: float
    consumer: str | None
    context: str | None
    created_at: datetime

    @classmethod
    def from_json(cls, data: Any) -> RequestRecord:
        # Fast path: pages hold up to 1000 records and the notebook reads 100,000 at a time.
        try:
            record_id = data["id"]
            service = data["service"]
            node = data.get("node")
            method = data["method"]
            endpoint = data["endpoint"]
            status = data["status"]
            response_time = data["response_time"]
            consumer = data.get("consumer")
            context = data.get("context")
            created_at = data["created_at"]
        except (KeyError, TypeError, AttributeError):
            return cls._checked(data)
        if (
            type(record_id) is int
            and type(service) is str
            and type(method) is str
            and type(endpoint) is str
            and type(status) is int
            and type(response_time) in (float, int)
            and (node is None or type(node) is str)
            and (consumer is None or type(consumer) is str)
            and (context is None or type(context) is str)
        ):
            return cls(
                record_id, service, node, method, endpoint, status, float(response_time),
                consumer, context, parse_datetime(created_at, "requests item.created_at"),
            )  # fmt: skip
        return cls._checked(data)

    @classmethod
    def _checked(cls, data: Any) -> RequestRecord:
        what = "requests item"
        data = _object(data, what)
        record_id = data.get("id")
        return cls(
            id=None if record_id is None else _int(record_id, f"{what}.id"),
            service=_str(_require(data, "service", what), f"{what}.service"),
            node=_opt_str(data.get("node"), f"{what}.node"),
            method=_str(_require(data, "method", what), f"{what}.method"),
            endpoint=_str(_require(data, "endpoint", what), f"{what}.endpoint"),
            status=_int(_require(data, "status", what), f"{what}.status"),
            response_time=_float(_require(data, "response_time", what), f"{what}.response_time") or 0.0,
            consumer=_opt_str(data.get("consumer"), f"{what}.consumer"),
            context=_opt_str(data.get("context"), f"{what}.context"),
            created_at=parse_datetime(_require(data, "created_at", what), f"{what}.created_at"),
        )


@dataclass(frozen=True, slots=True)
class RequestPage(_HtmlRepr):
    """One page of raw records, newest first; ``next_cursor`` is ``None`` on the last page."""

    requests: list[RequestRecord]
    next_cursor: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> RequestPage:
        what = "requests response"
        data = _object(data, what)
        return cls(
            requests=[
                RequestRecord.from_json(item) for item in _list(_require(data, "requests", what), "requests")
            ],
            next_cursor=_opt_str(data.get("next_cursor"), "next_cursor"),
        )

    def __len__(self) -> int:
        return len(self.requests)

    def __iter__(self) -> Iterator[RequestRecord]:
        return iter(self.requests)


# --- dimensions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DimensionEndpoint(_HtmlRepr):
    """An endpoint seen in the range: route pattern, method and (when the server says) service."""

    endpoint: str
    method: str
    service: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> DimensionEndpoint:
        what = "dimensions endpoint"
        if isinstance(data, str):  # tolerate a plain list of route patterns
            return cls(endpoint=data, method="")
        data = _object(data, what)
        return cls(
            endpoint=_str(_require(data, "endpoint", what), f"{what}.endpoint"),
            method=_str(data.get("method") or "", f"{what}.method"),
            service=_opt_str(data.get("service"), f"{what}.service"),
        )


@dataclass(frozen=True, slots=True)
class Dimensions(_HtmlRepr):
    """The values of each filter seen in a range (to fill filter pickers)."""

    services: list[str]
    nodes: list[str]
    endpoints: list[DimensionEndpoint]
    methods: list[str]
    consumers: list[str]
    contexts: list[str]

    @classmethod
    def from_json(cls, data: Any) -> Dimensions:
        what = "dimensions response"
        data = _object(data, what)
        return cls(
            services=_strings(data.get("services"), "services"),
            nodes=_strings(data.get("nodes"), "nodes"),
            endpoints=[DimensionEndpoint.from_json(item) for item in _list(data.get("endpoints"), "endpoints")],
            methods=_strings(data.get("methods"), "methods"),
            consumers=_strings(data.get("consumers"), "consumers"),
            contexts=_strings(data.get("contexts"), "contexts"),
        )


# --- auth and health -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Thresholds(_HtmlRepr):
    """Colour thresholds of the dashboards: error rates in percent, latencies in ms."""

    error_rate_success_threshold: float = 0.5
    error_rate_warning_threshold: float = 1.0
    latency_success_threshold: float = 300.0
    latency_warning_threshold: float = 800.0

    @classmethod
    def from_json(cls, data: Any) -> Thresholds:
        what = "thresholds"
        data = _object(data or {}, what)
        defaults = cls()
        values = {}
        for f in dataclasses.fields(cls):
            value = _float(data.get(f.name), f"{what}.{f.name}")
            values[f.name] = getattr(defaults, f.name) if value is None else value
        return cls(**values)


@dataclass(frozen=True, slots=True)
class AuthUser(_HtmlRepr):
    """Who the key belongs to; ``services`` is ``None`` when the user may read every service."""

    name: str
    type: str = "user"
    services: list[str] | None = None

    @classmethod
    def from_json(cls, data: Any) -> AuthUser:
        what = "user"
        data = _object(data, what)
        services = data.get("services")
        return cls(
            name=_str(_require(data, "name", what), f"{what}.name"),
            type=_str(data.get("type") or "user", f"{what}.type"),
            services=None if services is None else _strings(services, f"{what}.services"),
        )


@dataclass(frozen=True, slots=True)
class AuthInfo(_HtmlRepr):
    """The answer of ``/api/v1/auth/test``: the key's user and the dashboard thresholds."""

    authenticated: bool
    user: AuthUser
    thresholds: Thresholds

    @classmethod
    def from_json(cls, data: Any) -> AuthInfo:
        what = "auth/test response"
        data = _object(data, what)
        return cls(
            authenticated=bool(data.get("authenticated", True)),
            user=AuthUser.from_json(_require(data, "user", what)),
            thresholds=Thresholds.from_json(data.get("thresholds")),
        )


@dataclass(frozen=True, slots=True)
class Health(_HtmlRepr):
    """The answer of ``/health``; ``healthy`` is false when the server cannot reach its database."""

    status: str
    database: str | None = None
    version: str | None = None
    storage: str | None = None

    @property
    def healthy(self) -> bool:
        return self.status == "healthy"

    @classmethod
    def from_json(cls, data: Any) -> Health:
        what = "health response"
        data = _object(data, what)

        def text(key: str) -> str | None:
            value = data.get(key)
            return None if value is None else str(value)

        return cls(
            status=_str(_require(data, "status", what), f"{what}.status"),
            database=text("database"),
            version=text("version"),
            storage=text("storage"),
        )
