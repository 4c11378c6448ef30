"""Typed query-client results as pandas DataFrames.

Conventions: snake_case columns named like the API's fields; counts are ``int64``;
latencies, rates and response times are ``float64`` (``NaN`` where the API says
``null``); times are timezone-aware UTC; time series are indexed by a ``DatetimeIndex``
named ``bucket``; raw requests by one named ``created_at`` (newest first, as the API
returns them). Repeated labels of raw requests are ``category`` columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from malti_sdk import (
    ConsumerStats,
    Dashboard,
    Dimensions,
    EndpointStats,
    MetricsSummary,
    RequestRecord,
    StatusDistribution,
    TimeSeriesPoint,
)

LATENCY_COLUMNS = ["min_latency", "avg_latency", "p50_latency", "p95_latency", "p99_latency", "max_latency"]
TIMESERIES_COLUMNS = ["total_requests", "error_count", *LATENCY_COLUMNS]
SUMMARY_COLUMNS = ["total_requests", "error_count", "error_rate", "requests_per_minute", *LATENCY_COLUMNS]
_RATE_LATENCY = ["error_rate", "avg_latency", "p50_latency", "p95_latency", "p99_latency"]
ENDPOINT_COLUMNS = ["service", "method", "endpoint", "total_requests", "error_count", *_RATE_LATENCY]
CONSUMER_COLUMNS = ["consumer", "total_requests", "error_count", *_RATE_LATENCY]
STATUS_COLUMNS = ["service", "total_requests", "success_2xx", "warning_3xx", "error_4xx_5xx"]
STATUS_CODE_COLUMNS = ["service", "status", "count"]
REQUEST_COLUMNS = ["id", "service", "node", "method", "endpoint", "status", "response_time", "consumer", "context"]
REQUEST_CATEGORIES = ["service", "node", "method", "endpoint", "consumer", "context"]
DIMENSION_COLUMNS = ["dimension", "value", "method", "service"]

_INT_COLUMNS = {"total_requests", "error_count", "success_2xx", "warning_3xx", "error_4xx_5xx", "status", "count", "id"}
_FLOAT_COLUMNS = {*LATENCY_COLUMNS, "error_rate", "requests_per_minute", "response_time"}


# pandas 3 has a real text dtype (``str``); pandas 2 keeps text in ``object`` columns.
TEXT_DTYPE: Any = "str" if int(pd.__version__.split(".")[0]) >= 3 else object


def _float_array(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if value is None else value for value in values], dtype="float64")


def _column(name: str, values: Sequence[Any]) -> Any:
    if name in _INT_COLUMNS:
        return np.array(values, dtype="int64")
    if name in _FLOAT_COLUMNS:
        return _float_array(values)
    return pd.Series(list(values), dtype=TEXT_DTYPE).array


def _frame(rows: Sequence[Any], columns: list[str], index: pd.Index | None = None) -> pd.DataFrame:
    data = {name: _column(name, [getattr(row, name) for row in rows]) for name in columns}
    return pd.DataFrame(data, columns=columns, index=index)


def _stamp(frame: pd.DataFrame, dashboard: Dashboard | None) -> pd.DataFrame:
    if dashboard is not None:
        frame.attrs.update(
            resolution=dashboard.resolution,
            start_time=pd.Timestamp(dashboard.start_time) if dashboard.start_time else None,
            end_time=pd.Timestamp(dashboard.end_time) if dashboard.end_time else None,
        )
    return frame


def utc_index(times: Sequence[Any], name: str) -> pd.DatetimeIndex:
    """Timezone-aware UTC DatetimeIndex of ``times`` (UTC datetimes from the client)."""
    if not times:
        return pd.DatetimeIndex([], tz="UTC", name=name)
    return pd.DatetimeIndex(pd.to_datetime(list(times), utc=True), name=name)


def timeseries_frame(points: Sequence[TimeSeriesPoint], dashboard: Dashboard | None = None) -> pd.DataFrame:
    """One row per bucket, indexed by ``bucket`` (UTC)."""
    index = utc_index([point.bucket for point in points], "bucket")
    return _stamp(_frame(points, TIMESERIES_COLUMNS, index), dashboard)


def summary_frame(summary: MetricsSummary, dashboard: Dashboard | None = None) -> pd.DataFrame:
    """One row: the range's totals and 2xx latencies."""
    return _stamp(_frame([summary], SUMMARY_COLUMNS), dashboard)


def endpoints_frame(endpoints: Sequence[EndpointStats], dashboard: Dashboard | None = None) -> pd.DataFrame:
    """One row per (service, method, endpoint), busiest first."""
    return _stamp(_frame(endpoints, ENDPOINT_COLUMNS), dashboard)


def consumers_frame(consumers: Sequence[ConsumerStats], dashboard: Dashboard | None = None) -> pd.DataFrame:
    """One row per consumer, busiest first."""
    return _stamp(_frame(consumers, CONSUMER_COLUMNS), dashboard)


def status_frame(rows: Sequence[StatusDistribution], dashboard: Dashboard | None = None) -> pd.DataFrame:
    """One row per service: status classes."""
    return _stamp(_frame(rows, STATUS_COLUMNS), dashboard)


def status_codes_frame(rows: Sequence[StatusDistribution], dashboard: Dashboard | None = None) -> pd.DataFrame:
    """Long form: one row per (service, status code) with its count."""
    long: list[tuple[str, int, int]] = [
        (row.service, code, count) for row in rows for code, count in sorted(row.status_breakdown.items())
    ]
    frame = pd.DataFrame(
        {
            "service": pd.Series([item[0] for item in long], dtype=TEXT_DTYPE).array,
            "status": np.array([item[1] for item in long], dtype="int64"),
            "count": np.array([item[2] for item in long], dtype="int64"),
        },
        columns=STATUS_CODE_COLUMNS,
    )
    return _stamp(frame, dashboard)


def requests_frame(records: Iterable[RequestRecord]) -> pd.DataFrame:
    """Raw records, newest first, indexed by ``created_at`` (UTC)."""
    rows = records if isinstance(records, list) else list(records)
    index = utc_index([row.created_at for row in rows], "created_at")
    data: dict[str, Any] = {
        "id": np.array([-1 if row.id is None else row.id for row in rows], dtype="int64"),
        "status": np.array([row.status for row in rows], dtype="int64"),
        "response_time": np.array([row.response_time for row in rows], dtype="float64"),
    }
    for name in REQUEST_CATEGORIES:
        values = [getattr(row, name) for row in rows]
        categories = pd.Index(sorted(set(values) - {None}), dtype=TEXT_DTYPE)
        data[name] = pd.Categorical(values, categories=categories)
    return pd.DataFrame(data, index=index, columns=REQUEST_COLUMNS)


def dimensions_frame(dimensions: Dimensions) -> pd.DataFrame:
    """Long form: one row per (dimension, value); endpoints also carry their method and service."""
    rows: list[tuple[str, str, str | None, str | None]] = []
    for name in ("services", "nodes", "methods", "consumers", "contexts"):
        rows += [(name[:-1], value, None, None) for value in getattr(dimensions, name)]
    rows += [("endpoint", item.endpoint, item.method or None, item.service) for item in dimensions.endpoints]
    frame = pd.DataFrame(
        {name: pd.Series([row[i] for row in rows], dtype=TEXT_DTYPE).array for i, name in enumerate(DIMENSION_COLUMNS)},
        columns=DIMENSION_COLUMNS,
    )
    frame["dimension"] = pd.Categorical(
        frame["dimension"], categories=["service", "node", "method", "endpoint", "consumer", "context"]
    )
    return frame
