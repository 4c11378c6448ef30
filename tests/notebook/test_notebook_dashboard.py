"""The ipywidgets dashboard driven from Python against a real server, and the notebook's errors."""

from __future__ import annotations

import time

import ipywidgets as widgets
import matplotlib
import pytest
from notebook_data import HOSTILE_ENDPOINT, TOTAL

from malti_notebook import MaltiAuthError, MaltiConnectionError, MaltiUsageError, connect

matplotlib.use("Agg")


@pytest.fixture
def dash(m):
    dashboard = m.dashboard(range="24h")
    yield dashboard
    dashboard.close()


def test_dashboard_is_an_embeddable_widget_showing_the_data(dash):
    assert isinstance(dash, widgets.VBox)
    assert dash.last_error is None and dash.refresh_count == 1
    assert dash.last_dashboard.metrics_summary.total_requests == TOTAL
    assert f">{TOTAL}<" in dash.cards.value
    assert bytes(dash.latency_chart.value).startswith(b"\x89PNG")
    assert bytes(dash.requests_chart.value).startswith(b"\x89PNG")
    assert "/login" in dash.endpoints_table.value


def test_filter_dropdowns_are_filled_from_the_dimensions(dash):
    services = [value for _label, value in dash.filters["service"].options]
    assert set(services) == {None, "auth-service", "payment-service", "user-service"}
    assert "/login" in [value for _label, value in dash.filters["endpoint"].options]
    assert "mobile" in [value for _label, value in dash.filters["consumer"].options]


def test_changing_a_dropdown_requeries_and_updates(dash):
    dash.filters["service"].value = "auth-service"
    assert dash.refresh_count == 2
    assert dash.last_query["service"] == "auth-service"
    assert dash.last_dashboard.metrics_summary.total_requests == 6
    assert ">6<" in dash.cards.value
    assert "/pay" not in dash.endpoints_table.value
    # the other services stay selectable while one is chosen
    assert "payment-service" in [value for _label, value in dash.filters["service"].options]
    dash.filters["consumer"].value = "mobile"
    assert dash.last_query["consumer"] == "mobile"
    assert dash.last_dashboard.metrics_summary.total_requests == 2
    dash.filters["service"].value = None
    dash.filters["consumer"].value = None
    assert dash.last_dashboard.metrics_summary.total_requests == TOTAL


def test_range_buttons_requery_with_the_matching_range_and_interval(dash):
    dash.range_buttons.value = "7d"
    assert dash.last_query["start_time"] == "7d" and dash.last_query["interval"] == "1hour"
    assert dash.last_dashboard.resolution == "1hour"
    assert dash.last_dashboard.metrics_summary.total_requests == TOTAL
    dash.range_buttons.value = "1h"
    assert dash.last_query["interval"] == "1min" and dash.last_dashboard.resolution == "1min"
    assert dash.refresh_count == 3


def test_refresh_button_requeries(dash):
    dash.refresh_button.click()
    assert dash.refresh_count == 2


def test_auto_refresh_keeps_requerying_until_stopped(dash):
    dash.refresh_seconds = 0.05
    dash.auto_refresh.value = True
    deadline = time.monotonic() + 20
    while dash.refresh_count < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dash.refresh_count >= 3
    dash.auto_refresh.value = False
    dash._timer.join(timeout=10)
    assert not dash._timer.is_alive()


def test_dashboard_escapes_text_from_the_data(dash):
    assert HOSTILE_ENDPOINT not in dash.endpoints_table.value
    assert "&lt;img src=x onerror=alert(1)&gt;" in dash.endpoints_table.value


def test_dashboard_with_a_bad_key_shows_the_error_instead_of_raising(seeded):
    with connect(seeded.url, "wrong-key") as m:
        dashboard = m.dashboard()
        assert isinstance(dashboard.last_error, MaltiAuthError)
        assert "401" in dashboard.status.value
        dashboard.close()


def test_bad_key_raises_an_auth_error(seeded):
    with connect(seeded.url, "wrong-key") as m, pytest.raises(MaltiAuthError) as caught:
        m.timeseries()
    assert caught.value.status == 401 and caught.value.detail


def test_missing_key_raises_a_usage_error(seeded, monkeypatch):
    monkeypatch.delenv("MALTI_USER_KEY", raising=False)
    with connect(seeded.url) as m, pytest.raises(MaltiUsageError, match="MALTI_USER_KEY"):
        m.summary()


def test_server_down_raises_a_connection_error(start_server):
    server = start_server()
    with connect(server.url, server.user_keys["viewer"]) as m:
        assert m.summary(start="1h").iloc[0].total_requests == 0
        server.stop()
        with pytest.raises(MaltiConnectionError, match="cannot reach"):
            m.requests()
        dashboard = m.dashboard()
        assert isinstance(dashboard.last_error, MaltiConnectionError)
        dashboard.close()


def test_connect_reads_the_environment(seeded, monkeypatch):
    monkeypatch.setenv("MALTI_URL", seeded.url)
    monkeypatch.setenv("MALTI_USER_KEY", seeded.user_keys["restricted"])
    with connect() as m:
        assert m.url == seeded.url
        assert set(m.endpoints(start="6h").service) == {"auth-service"}


def test_every_range_button_is_accepted_by_the_server(dash):
    for label in dash.range_buttons.options:
        if label == dash.range_buttons.value:
            continue
        dash.range_buttons.value = label
        assert dash.last_error is None, (label, dash.last_error)
        assert dash.last_query["start_time"] and dash.last_dashboard.time_series


def test_stopping_and_restarting_auto_refresh_at_once_keeps_it_running(dash):
    # The stopped loop may still be alive (finishing a refresh) when it is started again:
    # the new start must not be swallowed by it.
    dash.refresh_seconds = 0.05
    dash.start_auto_refresh()
    first = dash._timer
    dash.stop_auto_refresh()
    dash.start_auto_refresh()
    assert dash.auto_refresh.value is True
    first.join(timeout=10)
    counted = dash.refresh_count
    deadline = time.monotonic() + 20
    while dash.refresh_count < counted + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dash._timer.is_alive() and dash.refresh_count >= counted + 2
    dash.stop_auto_refresh()


def test_select_accepts_values_not_seen_in_the_range(dash):
    dash.select(service="auth-service", consumer="nobody-ever")
    assert dash.last_query["service"] == "auth-service" and dash.last_query["consumer"] == "nobody-ever"
    assert dash.last_error is None and dash.last_dashboard.metrics_summary.total_requests == 0
    assert "nobody-ever" in [value for _label, value in dash.filters["consumer"].options]
    dash.select(consumer=None)
    assert dash.last_dashboard.metrics_summary.total_requests == 6
    with pytest.raises(MaltiUsageError, match="servce"):
        dash.select(servce="auth-service")


def test_a_bad_range_is_a_usage_error_and_leaves_nothing_half_built():
    import gc
    import sys

    unraisable = []
    previous, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        with connect("http://127.0.0.1:9", "key") as m, pytest.raises(MaltiUsageError, match="range"):
            m.dashboard(range="2d")
        gc.collect()
    finally:
        sys.unraisablehook = previous
    assert unraisable == []


def test_outage_then_recovery_clears_stale_figures_and_refills_the_dropdowns(start_server):
    from malti_testing import record

    server = start_server()
    assert server.ingest([record("auth-service", consumer="web")]).status_code == 200
    with connect(server.url, server.user_keys["viewer"]) as m:
        server.stop()
        dashboard = m.dashboard(range="1h")  # built while the server is down
        assert isinstance(dashboard.last_error, MaltiConnectionError)
        assert [value for _label, value in dashboard.filters["service"].options] == [None]
        server.start()
        dashboard.refresh()
        assert dashboard.last_error is None and dashboard.last_dashboard.metrics_summary.total_requests == 1
        assert "auth-service" in [value for _label, value in dashboard.filters["service"].options]
        assert "web" in [value for _label, value in dashboard.filters["consumer"].options]

        server.stop()
        dashboard.range_buttons.value = "24h"  # a new selection that cannot be loaded
        assert isinstance(dashboard.last_error, MaltiConnectionError)
        assert dashboard.cards.value == "" and dashboard.last_dashboard is None  # not the 1h figures as 24h's
        assert "nothing shown for this selection" in dashboard.status.value
        dashboard.close()


def test_notebook_times_refuse_numbers_and_read_nat_as_unset(m):
    import pandas as pd

    assert m.summary(start=pd.NaT).iloc[0].total_requests == TOTAL
    with pytest.raises(MaltiUsageError, match="not a time"):
        m.summary(start=5)


def test_a_24_hour_range_at_one_minute_resolution_is_accepted(m):
    frame = m.timeseries(start="24h", interval="1min")
    assert len(frame) >= 24 * 60
