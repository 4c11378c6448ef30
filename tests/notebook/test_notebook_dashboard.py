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
