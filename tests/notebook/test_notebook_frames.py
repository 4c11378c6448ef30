"""DataFrames of malti_notebook against a real server holding notebook_data's known records."""

from __future__ import annotations

import io
from datetime import timedelta

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from notebook_data import ANCHOR, HOSTILE_CONSUMER, HOSTILE_ENDPOINT, HOUR_A, HOUR_B, HOUR_C, TOTAL, known_records

matplotlib.use("Agg")

LAST_3_HOURS = {"start": HOUR_A, "end": ANCHOR - timedelta(seconds=1)}


def is_utc_datetime(dtype) -> bool:
    return isinstance(dtype, pd.DatetimeTZDtype) and str(dtype.tz) == "UTC"


def test_timeseries_is_indexed_by_utc_buckets_with_numeric_columns(m):
    ts = m.timeseries(**LAST_3_HOURS, interval="1hour")
    assert isinstance(ts.index, pd.DatetimeIndex) and is_utc_datetime(ts.index.dtype)
    assert ts.index.name == "bucket"
    assert list(ts.index) == [pd.Timestamp(HOUR_A), pd.Timestamp(HOUR_B), pd.Timestamp(HOUR_C)]
    assert list(ts.columns) == ["total_requests", "error_count", "min_latency", "avg_latency", "p50_latency",
                                "p95_latency", "p99_latency", "max_latency"]  # fmt: skip
    assert ts.total_requests.dtype == np.int64 and ts.error_count.dtype == np.int64
    assert all(ts[c].dtype == np.float64 for c in ts.columns if c.endswith("_latency"))
    assert ts.total_requests.tolist() == [4, 5, 3]
    assert ts.error_count.tolist() == [0, 2, 1]  # 2 x 500, then a 404
    assert ts.loc[pd.Timestamp(HOUR_A), "min_latency"] == pytest.approx(10.0, rel=0.02)
    assert ts.loc[pd.Timestamp(HOUR_A), "max_latency"] == pytest.approx(40.0, rel=0.02)
    assert ts.loc[pd.Timestamp(HOUR_A), "avg_latency"] == pytest.approx(25.0, rel=0.02)
    assert ts.attrs["resolution"] == "1hour"


def test_empty_buckets_are_zero_counts_and_nan_latencies(m):
    ts = m.timeseries(start=HOUR_A - timedelta(hours=2), end=ANCHOR - timedelta(seconds=1), interval="1hour")
    assert len(ts) == 5
    assert ts.total_requests.iloc[:2].tolist() == [0, 0]
    assert ts.p95_latency.iloc[:2].isna().all()


def test_summary_is_one_row_of_totals(m):
    summary = m.summary(**LAST_3_HOURS)
    assert summary.shape[0] == 1
    row = summary.iloc[0]
    assert row.total_requests == TOTAL and row.error_count == 3
    assert row.error_rate == pytest.approx(25.0, abs=0.01)
    assert summary.total_requests.dtype == np.int64 and summary.p95_latency.dtype == np.float64


def test_endpoints_frame(m):
    endpoints = m.endpoints(**LAST_3_HOURS)
    assert list(endpoints.columns[:5]) == ["service", "method", "endpoint", "total_requests", "error_count"]
    assert endpoints.total_requests.dtype == np.int64 and endpoints.p95_latency.dtype == np.float64
    assert endpoints.total_requests.is_monotonic_decreasing
    login = endpoints.set_index(["service", "method", "endpoint"]).loc[("auth-service", "POST", "/login")]
    assert login.total_requests == 6 and login.error_count == 2
    assert set(endpoints.endpoint) == {"/login", "/users/{user_id}", "/pay", HOSTILE_ENDPOINT}


def test_consumers_status_and_status_codes(m):
    consumers = m.consumers(**LAST_3_HOURS).set_index("consumer")
    assert consumers.loc["web-app", "total_requests"] == 8
    assert consumers.loc["mobile", "error_count"] == 2
    assert np.isnan(consumers.loc["mobile", "p95_latency"])  # no 2xx response
    status = m.status(**LAST_3_HOURS).set_index("service")
    assert status.loc["auth-service", "success_2xx"] == 4 and status.loc["auth-service", "error_4xx_5xx"] == 2
    assert status.success_2xx.dtype == np.int64
    codes = m.status_codes(**LAST_3_HOURS)
    assert list(codes.columns) == ["service", "status", "count"]
    counts = {(row.service, row.status): row.count for row in codes.itertuples()}
    assert counts[("user-service", 404)] == 1 and counts[("auth-service", 500)] == 2
    assert codes["status"].dtype == np.int64 and codes["count"].dtype == np.int64


def test_requests_frame_follows_pages_up_to_the_limit(m):
    raw = m.requests(**LAST_3_HOURS, limit=None)
    assert len(raw) == TOTAL
    assert isinstance(raw.index, pd.DatetimeIndex) and is_utc_datetime(raw.index.dtype)
    assert raw.index.name == "created_at" and raw.index.is_monotonic_decreasing  # newest first
    assert list(raw.columns) == ["id", "service", "node", "method", "endpoint", "status", "response_time",
                                 "consumer", "context"]  # fmt: skip
    assert raw.id.dtype == np.int64 and raw.status.dtype == np.int64 and raw.response_time.dtype == np.float64
    assert isinstance(raw.service.dtype, pd.CategoricalDtype)
    assert raw.id.is_unique
    sent = sorted(pd.Timestamp(r["created_at"]) for r in known_records())
    assert sorted(raw.index) == sent
    assert len(m.requests(**LAST_3_HOURS, limit=5)) == 5


def test_requests_filters(m):
    failed = m.requests(**LAST_3_HOURS, status=500)
    assert len(failed) == 2 and set(failed.consumer) == {"mobile"}
    users = m.requests(**LAST_3_HOURS, service="user-service", node="node-2")
    assert len(users) == 5
    assert m.requests(**LAST_3_HOURS, consumer="nobody").empty


def test_relative_and_string_times(m):
    assert m.summary(start="6h").iloc[0].total_requests == TOTAL
    assert m.summary(start=pd.Timestamp(HOUR_C), end=ANCHOR.isoformat()).iloc[0].total_requests == 3


def test_dimensions_frame(m):
    dims = m.dimensions(start="6h")
    assert list(dims.columns) == ["dimension", "value", "method", "service"]
    services = set(dims[dims.dimension == "service"].value)
    assert services == {"auth-service", "payment-service", "user-service"}
    endpoints = dims[dims.dimension == "endpoint"]
    assert ("/login", "POST", "auth-service") in set(zip(endpoints.value, endpoints.method, endpoints.service))


def test_plot_helpers_return_figures(m):
    latency = m.plot_latency(**LAST_3_HOURS, interval="1hour")
    requests = m.plot_requests(**LAST_3_HOURS, service="auth-service")
    assert isinstance(latency, Figure) and isinstance(requests, Figure)
    assert {line.get_label() for line in latency.axes[0].get_lines()} >= {"p50", "p95", "p99"}
    empty = m.plot_latency(start=ANCHOR - timedelta(days=30), end=ANCHOR - timedelta(days=29))
    assert isinstance(empty, Figure)


def test_html_outputs_escape_text_from_the_data(m):
    for frame in (m.endpoints(**LAST_3_HOURS), m.consumers(**LAST_3_HOURS)):
        markup = frame._repr_html_()
        assert "<img" not in markup and "<b>bold" not in markup
    dashboard_markup = m.aggregate(**LAST_3_HOURS)._repr_html_()
    assert "<img" not in dashboard_markup and "&lt;img src=x" in dashboard_markup
    assert HOSTILE_CONSUMER not in dashboard_markup
    assert "&lt;" not in m._repr_html_()  # the URL is plain


def test_unknown_keyword_is_a_clear_error(m):
    from malti_notebook import MaltiUsageError

    with pytest.raises(MaltiUsageError, match="servce"):
        m.timeseries(servce="auth-service")


def test_plot_titles_show_filter_values_literally(m):
    figure = m.plot_requests(**LAST_3_HOURS, consumer=r"$\frac{broken$")
    figure.savefig(io.BytesIO(), format="png")  # a mathtext parse would fail here
    assert r"\frac{broken" in figure.axes[0].get_title(loc="left")
