"""``connect()`` and ``Malti``: the notebook's entry point, DataFrames over the query client."""

from __future__ import annotations

import html
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from malti_sdk import (
    Dashboard,
    MaltiAPIError,
    Dimensions,
    MaltiClient,
    MaltiError,
    MaltiUsageError,
    RequestRecord,
    Thresholds,
)

from . import _frames, _plots

TimeArg = datetime | date | timedelta | pd.Timestamp | str | None
FILTERS = ("service", "node", "method", "endpoint", "consumer", "context")
DEFAULT_REQUEST_LIMIT = 1000


def _time(value: Any) -> Any:
    """Pass datetimes/strings/timedeltas to the client; convert the other pandas/numpy time types."""
    if value is pd.NaT:  # (a datetime subclass)
        return None
    if value is None or isinstance(value, (datetime, date, timedelta, str)):
        return value
    if isinstance(value, np.timedelta64):  # (a numpy number too) that long before now
        return pd.Timedelta(value).to_pytimedelta()
    if isinstance(value, (bool, int, float, np.number)):
        raise MaltiUsageError(
            f"{value!r} is not a time: use a datetime, an ISO string, or a span like '24h' (that long before now)"
        )
    try:
        converted = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise MaltiUsageError(f"cannot read {value!r} as a time") from None
    if pd.isna(converted):
        return None
    return converted.to_pydatetime()


class Malti:
    """A connection to a Malti server for notebooks: DataFrames, plots and a live dashboard.

    Create it with :func:`connect`. Every query method takes the API's filters as keyword
    arguments (``service``, ``node``, ``method``, ``endpoint``, ``consumer``, ``context``)
    and a time range: ``start`` / ``end`` as ``datetime``, pandas ``Timestamp``, ISO
    strings or relative strings (``"24h"``, ``"7d"``: that long before now). Default range:
    the last 7 days. ``interval`` is ``"1min"``, ``"5min"`` or ``"1hour"``.
    """

    def __init__(self, client: MaltiClient) -> None:
        self.client = client
        self._thresholds: Thresholds | None = None

    # --- lifecycle and display ---------------------------------------------------------------

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self.client.close()

    def __enter__(self) -> Malti:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        """The server URL."""
        return self.client.base_url

    def __repr__(self) -> str:
        return f"<Malti {self.url}>"

    def _repr_html_(self) -> str:
        key = "user key set" if self.client.has_key else "no user key (set MALTI_USER_KEY)"
        return (
            f"<div><strong>Malti</strong> at <code>{html.escape(self.url)}</code>"
            f" <span style='opacity:0.6'>({html.escape(key)})</span></div>"
        )

    # --- raw results -------------------------------------------------------------------------

    def aggregate(
        self, *, start: TimeArg = None, end: TimeArg = None, interval: str | None = None, **filters: str | None
    ) -> Dashboard:
        """The whole dashboard answer as the client's typed :class:`malti_sdk.Dashboard`."""
        return self.client.aggregate(
            start_time=_time(start), end_time=_time(end), interval=interval, **self._filters(filters)
        )

    def thresholds(self) -> Thresholds:
        """The server's dashboard thresholds (asked once; defaults if the server will not say)."""
        if self._thresholds is None:
            try:
                self._thresholds = self.client.auth_test().thresholds
            except MaltiAPIError:
                # e.g. 429 (auth/test allows 10 per minute): keep the defaults rather than ask again
                self._thresholds = Thresholds()
            except MaltiError:
                return Thresholds()  # unreachable for now: ask again next time
        return self._thresholds

    # --- DataFrames --------------------------------------------------------------------------

    def timeseries(
        self, *, start: TimeArg = None, end: TimeArg = None, interval: str | None = None, **filters: str | None
    ) -> pd.DataFrame:
        """Requests, errors and 2xx latencies per bucket, indexed by ``bucket`` (UTC).

        ``frame.attrs`` holds ``resolution``, ``start_time`` and ``end_time`` of the answer.
        """
        dashboard = self.aggregate(start=start, end=end, interval=interval, **filters)
        return _frames.timeseries_frame(dashboard.time_series, dashboard)

    def summary(
        self, *, start: TimeArg = None, end: TimeArg = None, interval: str | None = None, **filters: str | None
    ) -> pd.DataFrame:
        """One row of totals over the range: requests, errors, error rate (%), requests/min, latencies (ms)."""
        dashboard = self.aggregate(start=start, end=end, interval=interval, **filters)
        return _frames.summary_frame(dashboard.metrics_summary, dashboard)

    def endpoints(self, *, start: TimeArg = None, end: TimeArg = None, **filters: str | None) -> pd.DataFrame:
        """One row per (service, method, endpoint), busiest first (at most 100)."""
        dashboard = self.aggregate(start=start, end=end, **filters)
        return _frames.endpoints_frame(dashboard.endpoints, dashboard)

    def consumers(self, *, start: TimeArg = None, end: TimeArg = None, **filters: str | None) -> pd.DataFrame:
        """One row per consumer, busiest first (at most 100)."""
        dashboard = self.aggregate(start=start, end=end, **filters)
        return _frames.consumers_frame(dashboard.consumers, dashboard)

    def status(self, *, start: TimeArg = None, end: TimeArg = None, **filters: str | None) -> pd.DataFrame:
        """One row per service: total, 2xx, 3xx and 4xx/5xx counts."""
        dashboard = self.aggregate(start=start, end=end, **filters)
        return _frames.status_frame(dashboard.status_distribution, dashboard)

    def status_codes(self, *, start: TimeArg = None, end: TimeArg = None, **filters: str | None) -> pd.DataFrame:
        """Long form: one row per (service, status code) with its ``count``."""
        dashboard = self.aggregate(start=start, end=end, **filters)
        return _frames.status_codes_frame(dashboard.status_distribution, dashboard)

    def requests(
        self,
        *,
        start: TimeArg = None,
        end: TimeArg = None,
        status: int | None = None,
        limit: int | None = DEFAULT_REQUEST_LIMIT,
        **filters: str | None,
    ) -> pd.DataFrame:
        """Raw records, newest first, indexed by ``created_at`` (UTC); pages are followed up to ``limit``.

        ``limit=None`` reads every record of the range.
        """
        records: list[RequestRecord] = []
        for page in self.client.iter_request_pages(
            start_time=_time(start), end_time=_time(end), status=status, limit=limit, **self._filters(filters)
        ):
            records.extend(page.requests)
        return _frames.requests_frame(records)

    def dimensions(self, *, start: TimeArg = None, end: TimeArg = None, service: str | None = None) -> pd.DataFrame:
        """Long form: one row per (dimension, value) seen in the range; endpoints carry method and service."""
        return _frames.dimensions_frame(self.dimensions_raw(start=start, end=end, service=service))

    def dimensions_raw(self, *, start: TimeArg = None, end: TimeArg = None, service: str | None = None) -> Dimensions:
        """The client's typed :class:`malti_sdk.Dimensions` (lists per dimension)."""
        return self.client.dimensions(service=service, start_time=_time(start), end_time=_time(end))

    # --- plots and dashboard -----------------------------------------------------------------

    def plot_latency(
        self,
        *,
        start: TimeArg = None,
        end: TimeArg = None,
        interval: str | None = None,
        figsize: tuple[float, float] | None = None,
        **filters: str | None,
    ) -> Figure:
        """A matplotlib figure of p50/p95/p99 (and average) latency over time."""
        frame = self.timeseries(start=start, end=end, interval=interval, **filters)
        return _plots.latency_figure(frame, _title("Latency (2xx)", filters), figsize)

    def plot_requests(
        self,
        *,
        start: TimeArg = None,
        end: TimeArg = None,
        interval: str | None = None,
        figsize: tuple[float, float] | None = None,
        **filters: str | None,
    ) -> Figure:
        """A matplotlib figure of requests and errors over time."""
        frame = self.timeseries(start=start, end=end, interval=interval, **filters)
        return _plots.requests_figure(frame, _title("Requests and errors", filters), figsize)

    def dashboard(self, *, range: str = "24h", auto_refresh: bool = False, refresh_seconds: float = 30.0, **filters: str | None):
        """An ipywidgets dashboard (filters, range buttons, cards, charts, top endpoints); returns the widget."""
        from ._dashboard import MaltiDashboard

        return MaltiDashboard(
            self, range=range, auto_refresh=auto_refresh, refresh_seconds=refresh_seconds, **self._filters(filters)
        )

    # --- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _filters(filters: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(filters) - set(FILTERS))
        if unknown:
            raise MaltiUsageError(
                f"unknown argument(s) {', '.join(unknown)}: filters are {', '.join(FILTERS)};"
                " times are start= and end="
            )
        return filters


def _title(base: str, filters: dict[str, Any]) -> str:
    chosen = ", ".join(f"{name}={value}" for name, value in filters.items() if value)
    # "$" would start matplotlib mathtext (and a malformed formula fails at draw time): show it literally
    return f"{base} — {chosen}".replace("$", r"\$") if chosen else base


def connect(url: str | None = None, api_key: str | None = None, *, timeout: float = 30.0) -> Malti:
    """Connect to a Malti server; ``url`` / ``api_key`` default to ``MALTI_URL`` / ``MALTI_USER_KEY``.

    Nothing is sent until the first query; ``m.client.health()`` checks the server.
    """
    return Malti(MaltiClient(url, api_key, timeout=timeout))
