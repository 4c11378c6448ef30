"""The metrics query client: ``MaltiClient`` (sync) and ``AsyncMaltiClient`` (asyncio).

Both wrap every read endpoint of the Malti REST API (``docs/api.md``) once. They share
everything except the I/O edge: building a call (path, query parameters, how to parse the
answer) and turning an HTTP response into a typed result or an exception are plain
functions used by both; only ``_send`` differs (``httpx.Client.get`` vs ``await
httpx.AsyncClient.get``).

URL and key come from the arguments or from ``MALTI_URL`` / ``MALTI_USER_KEY``. The key is
a *user* key (read metrics); a service key (``MALTI_API_KEY``, ingest only) gets 403.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Generic, TypeVar

import httpx

from ._exceptions import (
    MaltiAPIError,
    MaltiError,
    MaltiAuthError,
    MaltiConnectionError,
    MaltiNotFoundError,
    MaltiRateLimitError,
    MaltiResponseError,
    MaltiServerError,
    MaltiTimeoutError,
    MaltiUsageError,
    MaltiValidationError,
)
from ._models import AuthInfo, Dashboard, Dimensions, Health, RequestPage, RequestRecord

__all__ = ["MaltiClient", "AsyncMaltiClient"]

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 30.0
MAX_PAGE_SIZE = 1000  # the server's upper bound for ``limit`` on /metrics/requests
URL_ENV = "MALTI_URL"
KEY_ENV = "MALTI_USER_KEY"

_USER_AGENT = "malti-sdk-client/0.1.0"
_INTERVALS = {
    "1min": "1min", "1m": "1min", "minute": "1min",
    "5min": "5min", "5m": "5min",
    "1hour": "1hour", "1h": "1hour", "hour": "1hour", "60min": "1hour",
}  # fmt: skip
_RELATIVE = re.compile(
    r"^\s*-?\s*(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>[a-z]+)\s*(?:ago)?\s*$", re.IGNORECASE
)
_UNIT_SECONDS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "wk", "week", "weeks"), 7 * 86400),
    **dict.fromkeys(("mo", "month", "months"), 30 * 86400),
    **dict.fromkeys(("y", "yr", "year", "years"), 365 * 86400),
}

T = TypeVar("T")
TimeLike = datetime | date | timedelta | str | None


# --- arguments -------------------------------------------------------------------------------


def resolve_time(value: TimeLike, *, now: datetime | None = None) -> datetime | None:
    """A time argument as a timezone-aware UTC datetime.

    Accepts ``datetime`` (naive means UTC; pandas ``Timestamp`` included), ``date``
    (midnight UTC), ISO 8601 strings, ``"now"``, relative strings meaning that long before
    now (``"90s"``, ``"15m"``, ``"24h"``, ``"7d"``, ``"2w"``, ``"1y"``) and ``timedelta``
    (also that long before now).
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    current = now or datetime.now(timezone.utc)
    if isinstance(value, timedelta):
        return current - abs(value)
    if not isinstance(value, str):
        raise MaltiUsageError(
            f"time must be a datetime, date, timedelta or string, not {type(value).__name__}"
        )
    text = value.strip()
    if text.lower() == "now":
        return current
    relative = _RELATIVE.match(text)
    if relative and relative["unit"] == "M":
        raise MaltiUsageError(f"{value!r} is ambiguous: write '{relative['amount']}min' or '{relative['amount']}mo'")
    if relative and relative["unit"].lower() in _UNIT_SECONDS:
        seconds = float(relative["amount"]) * _UNIT_SECONDS[relative["unit"].lower()]
        return current - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise MaltiUsageError(
            f"cannot read {value!r} as a time: use ISO 8601 (2026-11-23T10:00:00Z), "
            "a relative span like '24h' or '7d', or a datetime"
        ) from None
    return resolve_time(parsed)


def format_time(value: datetime) -> str:
    """A UTC datetime as the API's ISO 8601 form with a ``Z``."""
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _time_param(value: TimeLike, name: str, now: datetime | None = None) -> str | None:
    try:
        resolved = resolve_time(value, now=now)
    except MaltiUsageError as error:
        raise MaltiUsageError(f"{name}: {error}") from None
    return None if resolved is None else format_time(resolved)


def _interval_param(interval: str | None) -> str | None:
    if interval is None:
        return None
    if not isinstance(interval, str) or interval.strip().lower() not in _INTERVALS:
        raise MaltiUsageError(f"interval must be one of '1min', '5min', '1hour', not {interval!r}")
    return _INTERVALS[interval.strip().lower()]


def _filter_params(**filters: Any) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in filters.items():
        if value is None:
            continue
        if not isinstance(value, str):
            raise MaltiUsageError(f"{name} must be a string, not {type(value).__name__}")
        params[name] = value
    return params


def _query(
    *,
    service: str | None = None,
    node: str | None = None,
    method: str | None = None,
    endpoint: str | None = None,
    consumer: str | None = None,
    context: str | None = None,
    start_time: TimeLike = None,
    end_time: TimeLike = None,
    interval: str | None = None,
) -> dict[str, str]:
    params = _filter_params(
        service=service, node=node, method=method, endpoint=endpoint, consumer=consumer, context=context
    )
    now = datetime.now(timezone.utc)  # one "now" for both ends (no end: the server's now)
    start = _time_param(start_time, "start_time", now)
    end = _time_param(end_time, "end_time", now)
    if start is not None:
        params["start_time"] = start
    if end is not None:
        params["end_time"] = end
    resolved_interval = _interval_param(interval)
    if resolved_interval is not None:
        params["interval"] = resolved_interval
    return params


def _page_size(limit: int | None, what: str = "limit") -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise MaltiUsageError(f"{what} must be an integer from 1 to {MAX_PAGE_SIZE}, not {limit!r}")
    return limit


def _status_param(status: int | None) -> str | None:
    if status is None:
        return None
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise MaltiUsageError(f"status must be an HTTP status code (100-599), not {status!r}")
    return str(status)


# --- calls: what to ask and how to read the answer -------------------------------------------


@dataclass(frozen=True, slots=True)
class _Call(Generic[T]):
    path: str
    params: dict[str, str]
    parse: Callable[[Any], T]
    needs_key: bool = True
    accept: frozenset[int] = frozenset({200})


def _aggregate_call(path: str, params: dict[str, str]) -> _Call[Dashboard]:
    return _Call(path, params, Dashboard.from_json)


def _requests_call(
    params: dict[str, str], *, status: int | None, limit: int | None, cursor: str | None
) -> _Call[RequestPage]:
    params = dict(params)
    status_text = _status_param(status)
    if status_text is not None:
        params["status"] = status_text
    size = _page_size(limit)
    if size is not None:
        params["limit"] = str(size)
    if cursor is not None:
        if not isinstance(cursor, str):
            raise MaltiUsageError(f"cursor must be the string next_cursor of a previous page, not {cursor!r}")
        params["cursor"] = cursor
    return _Call("/api/v1/metrics/requests", params, RequestPage.from_json)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _error_for(response: httpx.Response) -> MaltiAPIError:
    """The exception for an error answer, carrying the server's ``detail`` and ``errors``."""
    status = response.status_code
    detail: str = response.reason_phrase or f"HTTP {status}"
    errors: list[dict[str, Any]] | None = None
    try:
        body = response.json()
    except ValueError:
        body = None
        text = response.text.strip()
        if "html" in response.headers.get("content-type", "").lower():
            # a page, not an API answer: most likely MALTI_URL points at another server
            detail = f"{detail} (an HTML page, not a Malti answer: is MALTI_URL a Malti server?)"
        elif text:
            detail = text[:500]
    if isinstance(body, dict):
        raw_detail = body.get("detail")
        if isinstance(raw_detail, str):
            detail = raw_detail
        elif raw_detail is not None:
            detail = str(raw_detail)
        raw_errors = body.get("errors")
        if isinstance(raw_errors, list):
            errors = [item for item in raw_errors if isinstance(item, dict)]
    try:
        url: str | None = str(response.request.url)
    except RuntimeError:  # a response built without a request (tests)
        url = None
    if 300 <= status < 400:
        location = response.headers.get("location", "?")
        detail = f"redirected to {location}: point the client at the final address (MALTI_URL)"
    if status in (401, 403):
        return MaltiAuthError(status, detail, errors, url=url)
    if status == 404:
        return MaltiNotFoundError(status, detail, errors, url=url)
    if status == 422:
        return MaltiValidationError(status, detail, errors, url=url)
    if status == 429:
        return MaltiRateLimitError(status, detail, errors, url=url, retry_after=_retry_after(response))
    if status >= 500:
        return MaltiServerError(status, detail, errors, url=url, retry_after=_retry_after(response))
    return MaltiAPIError(status, detail, errors, url=url)


def _read(call: _Call[T], response: httpx.Response) -> T:
    if response.status_code not in call.accept:
        raise _error_for(response)
    try:
        body = response.json()
    except ValueError:
        raise MaltiResponseError(
            f"{call.path}: the server answered {response.status_code} with a body that is not JSON "
            f"(is {response.request.url.copy_with(query=None)} a Malti server?)",
            status=response.status_code,
        ) from None
    try:
        return call.parse(body)
    except MaltiError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as error:
        # a shape the parsers did not foresee: still a MaltiError, never a stray TypeError
        raise MaltiResponseError(f"{call.path}: unexpected answer: {error}", status=response.status_code) from error


def _request_error(error: httpx.RequestError, base_url: str) -> MaltiError:
    """The client exception for an httpx failure before a usable answer arrived."""
    if not isinstance(error, httpx.TransportError):  # DecodingError, TooManyRedirects
        return MaltiResponseError(f"unreadable answer from {base_url}: {error}")
    if isinstance(error, httpx.UnsupportedProtocol):
        return MaltiUsageError(f"unsupported URL {base_url}: {error}")
    return _connection_error(error, base_url)


def _connection_error(error: httpx.TransportError, base_url: str) -> MaltiConnectionError:
    if isinstance(error, httpx.TimeoutException):
        return MaltiTimeoutError(f"the Malti server at {base_url} did not answer in time ({error})", url=base_url)
    return MaltiConnectionError(
        f"cannot reach the Malti server at {base_url}: {error or type(error).__name__}"
        f" (is it running? set MALTI_URL or pass url=...)",
        url=base_url,
    )


# --- shared client state ---------------------------------------------------------------------


class _ClientBase:
    """Configuration and call building shared by the sync and async clients."""

    def __init__(self, url: str | None, api_key: str | None, timeout: float | httpx.Timeout | None) -> None:
        resolved_url = (url or os.environ.get(URL_ENV) or DEFAULT_URL).strip()
        if not resolved_url.startswith(("http://", "https://")):
            raise MaltiUsageError(f"the Malti URL must start with http:// or https://, not {resolved_url!r}")
        try:
            host = httpx.URL(resolved_url).host
        except (httpx.InvalidURL, ValueError, TypeError) as error:
            raise MaltiUsageError(f"cannot use {resolved_url!r} as the Malti URL: {error}") from None
        if not host or " " in resolved_url:
            raise MaltiUsageError(f"the Malti URL {resolved_url!r} has no valid host (e.g. http://127.0.0.1:8000)")
        self._base_url = resolved_url.rstrip("/")
        key = api_key if api_key is not None else os.environ.get(KEY_ENV)
        self._api_key = key.strip() if key else None
        self._timeout = timeout if timeout is not None else DEFAULT_TIMEOUT

    @property
    def base_url(self) -> str:
        """The server URL this client talks to."""
        return self._base_url

    @property
    def has_key(self) -> bool:
        """Whether the client has a user key to send."""
        return bool(self._api_key)

    def __repr__(self) -> str:
        key = "set" if self._api_key else "missing"
        return f"{type(self).__name__}(url={self._base_url!r}, api_key={key})"

    def _headers(self) -> dict[str, str]:
        return {"User-Agent": _USER_AGENT, "Accept": "application/json"}

    def _request_headers(self, call: _Call[Any]) -> dict[str, str] | None:
        if not call.needs_key:
            return None
        if not self._api_key:
            hint = ""
            if os.environ.get("MALTI_API_KEY"):
                hint = " (MALTI_API_KEY is the middleware's service key: it may ingest, not read)"
            raise MaltiUsageError(
                f"no API key: pass api_key=... or set {KEY_ENV} to a user key of the Malti server{hint}"
            )
        return {"X-API-Key": self._api_key}


# --- sync ------------------------------------------------------------------------------------


class MaltiClient(_ClientBase):
    """Synchronous client of the Malti metrics API.

    ::

        with MaltiClient("http://127.0.0.1:8000", api_key="...") as client:
            dashboard = client.aggregate(service="auth-service", start_time="24h")
            print(dashboard.metrics_summary.p95_latency)

    ``url`` defaults to ``MALTI_URL`` (else ``http://127.0.0.1:8000``), ``api_key`` to
    ``MALTI_USER_KEY``. ``transport`` is handed to ``httpx.Client`` (for tests or proxies).
    Every method raises a :class:`~malti_sdk.MaltiError` subclass on failure.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        verify: Any = True,
    ) -> None:
        super().__init__(url, api_key, timeout)
        try:
            self._http = httpx.Client(
                base_url=self._base_url,
                headers=self._headers(),
                timeout=self._timeout,
                transport=transport,
                verify=verify,
            )
        except (httpx.InvalidURL, ValueError, TypeError) as error:
            raise MaltiUsageError(f"cannot use {self._base_url!r} as the Malti URL: {error}") from None

    def __enter__(self) -> MaltiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _send(self, call: _Call[T]) -> T:
        headers = self._request_headers(call)
        if self._http.is_closed:
            raise MaltiUsageError("this client is closed; create a new one")
        try:
            response = self._http.get(call.path, params=call.params, headers=headers)
        except httpx.RequestError as error:
            raise _request_error(error, self._base_url) from error
        return _read(call, response)

    def aggregate(
        self,
        *,
        service: str | None = None,
        node: str | None = None,
        method: str | None = None,
        endpoint: str | None = None,
        consumer: str | None = None,
        context: str | None = None,
        start_time: TimeLike = None,
        end_time: TimeLike = None,
        interval: str | None = None,
    ) -> Dashboard:
        """The dashboard (``/api/v1/metrics/aggregate``): time series, summary, endpoints, status, consumers.

        Times accept ``datetime``, ISO strings and relative spans (``"24h"``, ``"7d"``);
        ``interval`` is ``"1min"``, ``"5min"`` or ``"1hour"`` (default: chosen by the range).
        """
        params = _query(
            service=service, node=node, method=method, endpoint=endpoint, consumer=consumer,
            context=context, start_time=start_time, end_time=end_time, interval=interval,
        )  # fmt: skip
        return self._send(_aggregate_call("/api/v1/metrics/aggregate", params))

    def realtime(
        self,
        *,
        service: str | None = None,
        node: str | None = None,
        method: str | None = None,
        endpoint: str | None = None,
        consumer: str | None = None,
        context: str | None = None,
        start_time: TimeLike = None,
        end_time: TimeLike = None,
    ) -> Dashboard:
        """The dashboard in 1-minute buckets over at most the last 60 minutes (``.../aggregate/realtime``)."""
        params = _query(
            service=service, node=node, method=method, endpoint=endpoint, consumer=consumer,
            context=context, start_time=start_time, end_time=end_time,
        )  # fmt: skip
        return self._send(_aggregate_call("/api/v1/metrics/aggregate/realtime", params))

    def requests(
        self,
        *,
        service: str | None = None,
        node: str | None = None,
        method: str | None = None,
        endpoint: str | None = None,
        consumer: str | None = None,
        context: str | None = None,
        status: int | None = None,
        start_time: TimeLike = None,
        end_time: TimeLike = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> RequestPage:
        """One page of raw records, newest first (``limit`` 1-1000, server default 100).

        Pass the page's ``next_cursor`` as ``cursor`` (with the same filters) for the next
        page, or use :meth:`iter_requests` to follow pages.
        """
        params = _query(
            service=service, node=node, method=method, endpoint=endpoint, consumer=consumer,
            context=context, start_time=start_time, end_time=end_time,
        )  # fmt: skip
        return self._send(_requests_call(params, status=status, limit=limit, cursor=cursor))

    def iter_request_pages(
        self,
        *,
        service: str | None = None,
        node: str | None = None,
        method: str | None = None,
        endpoint: str | None = None,
        consumer: str | None = None,
        context: str | None = None,
        status: int | None = None,
        start_time: TimeLike = None,
        end_time: TimeLike = None,
        limit: int | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> Iterator[RequestPage]:
        """Pages of raw records, newest first, following cursors until ``limit`` records or the end."""
        pager = _Pager(limit, page_size)
        params = _query(
            service=service, node=node, method=method, endpoint=endpoint, consumer=consumer,
            context=context, start_time=start_time, end_time=end_time,
        )  # fmt: skip
        while (size := pager.next_size()) is not None:
            page = self._send(_requests_call(params, status=status, limit=size, cursor=pager.cursor))
            yield pager.take(page)

    def iter_requests(
        self,
        *,
        service: str | None = None,
        node: str | None = None,
        method: str | None = None,
        endpoint: str | None = None,
        consumer: str | None = None,
        context: str | None = None,
        status: int | None = None,
        start_time: TimeLike = None,
        end_time: TimeLike = None,
        limit: int | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> Iterator[RequestRecord]:
        """Raw records one by one, newest first, across pages (at most ``limit`` when given)."""
        for page in self.iter_request_pages(
            service=service, node=node, method=method, endpoint=endpoint, consumer=consumer,
            context=context, status=status, start_time=start_time, end_time=end_time,
            limit=limit, page_size=page_size,
        ):  # fmt: skip
            yield from page.requests

    def dimensions(
        self,
        *,
        service: str | None = None,
        start_time: TimeLike = None,
        end_time: TimeLike = None,
    ) -> Dimensions:
        """Services, nodes, endpoints, methods, consumers and contexts seen in the range (default 7 days)."""
        params = _query(service=service, start_time=start_time, end_time=end_time)
        return self._send(_Call("/api/v1/metrics/dimensions", params, Dimensions.from_json))

    def auth_test(self) -> AuthInfo:
        """Who the key belongs to, and the dashboard thresholds (rate limited: 10 per minute per IP)."""
        return self._send(_Call("/api/v1/auth/test", {}, AuthInfo.from_json))

    def health(self) -> Health:
        """The server's health; ``Health.healthy`` is false (no exception) when its database is down."""
        return self._send(_Call("/health", {}, Health.from_json, needs_key=False, accept=frozenset({200, 503})))


# --- async -----------------------------------------------------------------------------------


class AsyncMaltiClient(_ClientBase):
    """Asynchronous client of the Malti metrics API; the same methods as :class:`MaltiClient`, awaited.

    ::

        async with AsyncMaltiClient() as client:
            dashboard = await client.aggregate(start_time="1h")
            async for record in client.iter_requests(status=500, limit=50):
                print(record.endpoint)
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: Any = True,
    ) -> None:
        super().__init__(url, api_key, timeout)
        try:
            self._http = httpx.AsyncClient(
                base_url=self._base_url,
                headers=self._headers(),
                timeout=self._timeout,
                transport=transport,
                verify=verify,
            )
        except (httpx.InvalidURL, ValueError, TypeError) as error:
            raise MaltiUsageError(f"cannot use {self._base_url!r} as the Malti URL: {error}") from None

    async def __aenter__(self) -> AsyncMaltiClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _send(self, call: _Call[T]) -> T:
        headers = self._request_headers(call)
        if self._http.is_closed:
            raise MaltiUsageError("this client is closed; create a new one")
        try:
            response = await self._http.get(call.path, params=call.params, headers=headers)
        except httpx.RequestError as error:
            raise _request_error(error, self._base_url) from error
        return _read(call, response)

    async def aggregate(
        self,
        *,
        service: str | None = None,
        node: str | None = None,
        method: str | None = None,
        endpoint: str | None = None,
        consumer: str | None = None,
        context: str | None = None,
        start_time: TimeLike = None,
        end_time: TimeLike = None,
        interval: str | None = None,
    ) -> Dashboard:
        """The dashboard (``/api/v1/metrics/aggregate``); see :meth:`MaltiClient.aggregate`."""
        params = _query(
            service=service, node=node, method=method, endpoint=endpoint, consumer=consumer,
            context=context, start_time=start_time, end_time=end_time, interval=interval,
        )  # fmt: skip
        return await self._send(_aggregate_call("/api/v1/metrics/aggregate", params))

    async def realtime(
        self,
        *,
        service: str | None = None,
        node: str | None = None,
        method: str | None = None,
        endpoint: str | None = None,
        consumer: str | None = None,
        context: str | None = None,
        start_time: TimeLike = None,
        end_time: TimeLike = None,
    ) -> Dashboard:
        """The dashboard in 1-minute buckets over at most the last 60 minutes."""
        params = _query(
            service=service, node=node, method=method, endpoint=endpoint, consumer=consumer,
            context=context, start_time=start_time, end_time=end_time,
        )  # fmt: skip
        return await self._send(_aggregate_call("/api/v1/metrics/aggregate/realtime", params))

    async def requests(
        self,
        *,
        service: str | None = None,
        node: str | None = None,
        method: str | None = None,
        endpoint: str | None = None,
        consumer: str | None = None,
        context: str | None = None,
        status: int | None = None,
        start_time: TimeLike = None,
        end_time: TimeLike = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> RequestPage:
        """One page of raw records, newest first; see :meth:`MaltiClient.requests`."""
        params = _query(
            service=service, node=node, method=method, endpoint=endpoint, consumer=consumer,
            context=context, start_time=start_time, end_time=end_time,
        )  # fmt: skip
        return await self._send(_requests_call(params, status=status, limit=limit, cursor=cursor))

    async def iter_request_pages(
        self,
        *,
        service: str | None = None,
        node: str | None = None,
        method: str | None = None,
        endpoint: str | None = None,
        consumer: str | None = None,
        context: str | None = None,
        status: int | None = None,
        start_time: TimeLike = None,
        end_time: TimeLike = None,
        limit: int | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> AsyncIterator[RequestPage]:
        """Pages of raw records, newest first, following cursors until ``limit`` records or the end."""
        pager = _Pager(limit, page_size)
        params = _query(
            service=service, node=node, method=method, endpoint=endpoint, consumer=consumer,
            context=context, start_time=start_time, end_time=end_time,
        )  # fmt: skip
        while (size := pager.next_size()) is not None:
            page = await self._send(_requests_call(params, status=status, limit=size, cursor=pager.cursor))
            yield pager.take(page)

    async def iter_requests(
        self,
        *,
        service: str | None = None,
        node: str | None = None,
        method: str | None = None,
        endpoint: str | None = None,
        consumer: str | None = None,
        context: str | None = None,
        status: int | None = None,
        start_time: TimeLike = None,
        end_time: TimeLike = None,
        limit: int | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> AsyncIterator[RequestRecord]:
        """Raw records one by one, newest first, across pages (at most ``limit`` when given)."""
        async for page in self.iter_request_pages(
            service=service, node=node, method=method, endpoint=endpoint, consumer=consumer,
            context=context, status=status, start_time=start_time, end_time=end_time,
            limit=limit, page_size=page_size,
        ):  # fmt: skip
            for record in page.requests:
                yield record

    async def dimensions(
        self,
        *,
        service: str | None = None,
        start_time: TimeLike = None,
        end_time: TimeLike = None,
    ) -> Dimensions:
        """Services, nodes, endpoints, methods, consumers and contexts seen in the range (default 7 days)."""
        params = _query(service=service, start_time=start_time, end_time=end_time)
        return await self._send(_Call("/api/v1/metrics/dimensions", params, Dimensions.from_json))

    async def auth_test(self) -> AuthInfo:
        """Who the key belongs to, and the dashboard thresholds (rate limited: 10 per minute per IP)."""
        return await self._send(_Call("/api/v1/auth/test", {}, AuthInfo.from_json))

    async def health(self) -> Health:
        """The server's health; ``Health.healthy`` is false (no exception) when its database is down."""
        return await self._send(
            _Call("/health", {}, Health.from_json, needs_key=False, accept=frozenset({200, 503}))
        )


class _Pager:
    """Cursor-following state shared by the sync and async page iterators."""

    __slots__ = ("remaining", "page_size", "cursor", "done")

    def __init__(self, limit: int | None, page_size: int) -> None:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise MaltiUsageError(f"limit must be a non-negative integer or None, not {limit!r}")
        self.page_size = _page_size(page_size, "page_size") or MAX_PAGE_SIZE
        self.remaining = limit
        self.cursor: str | None = None
        self.done = limit == 0

    def next_size(self) -> int | None:
        if self.done:
            return None
        if self.remaining is None:
            return self.page_size
        return min(self.page_size, self.remaining)

    def take(self, page: RequestPage) -> RequestPage:
        if page.next_cursor is not None and page.next_cursor == self.cursor:
            raise MaltiResponseError("the server answered the same cursor twice; stopping instead of looping")
        records = page.requests
        if self.remaining is not None:
            records = records[: self.remaining]
            self.remaining -= len(records)
            if self.remaining <= 0:
                self.done = True
        if page.next_cursor is None or not page.requests:
            self.done = True
        self.cursor = page.next_cursor
        if records is not page.requests:
            return RequestPage(requests=records, next_cursor=page.next_cursor)
        return page
