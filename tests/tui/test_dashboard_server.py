"""The TUI against a real malti-server with known data (ingested through
POST /api/v1/ingest with the fixture's service keys), read through malti_sdk."""

from __future__ import annotations

import os
import stat
from datetime import datetime, timedelta, timezone

import pytest

from malti_tui.app import MaltiApp
from malti_tui.config import CONFIG_FILE_NAME, Settings, load_saved
from malti_tui.formatting import format_latency, format_rate
from malti_tui.screens.dashboard import DashboardScreen
from malti_tui.screens.drilldown import DrilldownScreen
from malti_tui.screens.login import LoginScreen
from malti_tui.screens.picker import PickerScreen
from malti_tui.widgets.cards import MetricCards
from malti_tui.widgets.header import Banner, StatusIndicator
from malti_tui.widgets.request_log import RequestLog
from malti_tui.widgets.tables import EndpointsTable

from .conftest import screen_text, wait_until

NOW = datetime.now(timezone.utc).replace(microsecond=0)
BASE = NOW - timedelta(minutes=10)
MARKUP = "[bold red]x[/]"


def at(seconds: float) -> str:
    return (BASE + timedelta(seconds=seconds)).isoformat()


def known_records() -> dict[str, list[dict]]:
    """23 requests: 3 errors (500, 500, 404; the 401 is not an error), 19 with 2xx."""
    def rec(service, method, endpoint, status, ms, consumer, t, node="node-1"):
        return {"service": service, "node": node, "method": method, "endpoint": endpoint, "status": status,
                "response_time": ms, "consumer": consumer, "context": None, "created_at": at(t)}

    auth = [rec("auth-service", "POST", "/login", 200, 10.0 * (i + 1), "web-app", i) for i in range(10)]
    auth += [rec("auth-service", "POST", "/login", 500, 5.0, "mobile", 11),
             rec("auth-service", "POST", "/login", 500, 5.0, "mobile", 12),
             rec("auth-service", "POST", "/login", 401, 1.0, "web-app", 13)]
    users = [rec("user-service", "GET", "/users/{user_id}", 200, 1.5, "web-app", 14 + i, "node-2") for i in range(5)]
    users.append(rec("user-service", "GET", "/users/{user_id}", 404, 0.25, "web-app", 19.5, "node-2"))
    users.append(rec("user-service", "GET", MARKUP, 200, 2.0, "[blue]c[/]", 19.7, "node-2"))
    payments = [rec("payment-service", "POST", "/pay", 201, 250.0, "checkout", 20, None) for _ in range(3)]
    return {"auth-service": auth, "user-service": users, "payment-service": payments}


@pytest.fixture(scope="module")
def seeded(malti_server):
    for service, records in known_records().items():
        response = malti_server.ingest(records, service=service)
        assert response.status_code == 200, response.text
    malti_server.compact()
    return malti_server


def connected_app(server, config_dir, user: str = "viewer", **settings) -> MaltiApp:
    options = {"url": server.url, "api_key": server.user_keys[user], "auto_refresh": False, "config_dir": config_dir}
    options.update(settings)
    return MaltiApp(Settings(**options))


async def dashboard_loaded(pilot, count: int = 1) -> DashboardScreen:
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, DashboardScreen) and pilot.app.screen.loads >= count,
                     what="the dashboard to load")
    return pilot.app.screen


def card_values(screen) -> dict[str, str]:
    cards = screen.query_one(MetricCards)
    return {card_id: cards.card(card_id).value for card_id in ("total", "rpm", "error-rate", "avg", "p95", "p99")}


async def test_each_card_shows_the_right_number(seeded, config_dir):
    summary = seeded.get("/api/v1/metrics/aggregate/realtime").json()["metrics_summary"]
    app = connected_app(seeded, config_dir)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await dashboard_loaded(pilot)
        values = card_values(screen)
        assert values["total"] == "23"
        assert values["error-rate"] == "13.04%"  # 3 of 23
        assert values["avg"] == "68.9 ms"  # (550 + 7.5 + 2 + 750) / 19 successful requests
        assert values["p95"] == format_latency(summary["p95_latency"])
        assert values["p99"] == format_latency(summary["p99_latency"])
        assert values["rpm"] == format_rate(summary["requests_per_minute"])
        await wait_until(pilot, lambda: app.auth is not None, what="the auth test")
        assert screen.query_one(StatusIndicator).state == "error"  # 13 % errors is over 1 %


async def test_service_filter_and_time_keys_change_the_numbers(seeded, config_dir):
    app = connected_app(seeded, config_dir)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await dashboard_loaded(pilot)
        await pilot.press("s")
        await wait_until(pilot, lambda: isinstance(app.screen, PickerScreen), what="the service picker")
        await pilot.press(*"user-service", "enter")
        await wait_until(pilot, lambda: card_values(screen)["total"] == "7", what="user-service figures")
        assert card_values(screen)["error-rate"] == "14.29%"  # one 404 in 7
        assert screen.query_state.filters.service == "user-service"
        loads = screen.loads
        await pilot.press("3")  # 24 hours: 5-minute rollups, same records
        await wait_until(pilot, lambda: screen.loads > loads)
        assert screen.dashboard.resolution == "5min"
        assert card_values(screen)["total"] == "7"
        await pilot.press("0")
        await wait_until(pilot, lambda: card_values(screen)["total"] == "23", what="unfiltered figures")


async def test_drill_down_into_an_endpoint_and_back(seeded, config_dir):
    app = connected_app(seeded, config_dir)
    async with app.run_test(size=(100, 30)) as pilot:
        dashboard = await dashboard_loaded(pilot)
        await pilot.press("t")
        table = dashboard.query_one("#endpoints-table", EndpointsTable)
        assert table.records[0].endpoint == "/login"  # 13 requests, the most
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, DrilldownScreen))
        detail = app.screen
        await wait_until(pilot, lambda: detail.loads >= 1 or detail.last_error, what="the detail view to load")
        assert detail.last_error is None, str(detail.last_error)
        assert card_values(detail)["total"] == "13"
        log = detail.query_one(RequestLog)
        await wait_until(pilot, lambda: log.row_count == 13, what="the endpoint's 13 requests")
        assert "Endpoint POST /login" in screen_text(app)
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is dashboard)


async def test_data_text_is_shown_literally(seeded, config_dir):
    app = connected_app(seeded, config_dir)
    async with app.run_test(size=(120, 30)) as pilot:
        await dashboard_loaded(pilot)
        await pilot.press("t")
        await pilot.pause(0.1)
        assert MARKUP in screen_text(app)
        await pilot.press("l")
        await wait_until(pilot, lambda: "[blue]c[/]" in screen_text(app), what="the consumer name in the log")


async def test_restricted_user_sees_only_its_service(seeded, config_dir):
    app = connected_app(seeded, config_dir, user="restricted")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await dashboard_loaded(pilot)
        assert card_values(screen)["total"] == "13"


async def test_login_with_a_wrong_then_a_right_key(seeded, config_dir):
    app = MaltiApp(Settings(auto_refresh=False, config_dir=config_dir))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, LoginScreen))
        login = app.screen
        url_input = login.query_one("#login-url")
        url_input.value = seeded.url
        login.query_one("#login-key").focus()
        await pilot.press(*"not-a-key", "enter")
        await wait_until(pilot, lambda: "refused" in screen_text(app), what="the refusal")
        assert isinstance(app.screen, LoginScreen)
        login.query_one("#login-key").value = ""
        await pilot.press(*seeded.user_keys["viewer"], "enter")
        screen = await dashboard_loaded(pilot)
        assert card_values(screen)["total"] == "23"
    path = config_dir / CONFIG_FILE_NAME
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_saved(config_dir) == (seeded.url, seeded.user_keys["viewer"])


async def test_saved_login_is_used_next_time(seeded, config_dir):
    from malti_tui.config import save_credentials

    save_credentials(config_dir, seeded.url, seeded.user_keys["viewer"])
    app = MaltiApp(Settings(auto_refresh=False, config_dir=config_dir))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await dashboard_loaded(pilot)
        assert card_values(screen)["total"] == "23"


async def test_wrong_key_on_the_command_line_leads_to_the_login_screen(seeded, config_dir):
    app = MaltiApp(Settings(url=seeded.url, api_key="wrong", auto_refresh=False, config_dir=config_dir))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, LoginScreen) and "refused" in screen_text(app))


async def test_login_while_the_server_is_down_retries_by_itself(start_server, config_dir):
    server = start_server(start=False)
    app = MaltiApp(Settings(url=server.url, auto_refresh=False, config_dir=config_dir))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, LoginScreen))
        app.screen.query_one("#login-key").focus()
        await pilot.press(*server.user_keys["viewer"], "enter")
        await wait_until(pilot, lambda: "Retrying in" in screen_text(app), what="the retry countdown")
        server.start()
        await dashboard_loaded(pilot)


async def test_server_down_then_back(start_server, config_dir):
    server = start_server()
    server.ingest([{"service": "auth-service", "method": "GET", "endpoint": "/ping", "status": 200,
                    "response_time": 3.0, "consumer": "probe"}])
    app = connected_app(server, config_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await dashboard_loaded(pilot)
        assert card_values(screen)["total"] == "1"
        server.stop()
        await pilot.press("r")
        banner = screen.query_one(Banner)
        await wait_until(pilot, lambda: banner.display, what="the outage banner")
        assert "Cannot reach the Malti server" in screen_text(app)
        assert screen.query_one(StatusIndicator).state == "offline"
        assert card_values(screen)["total"] == "1"  # the last figures stay
        server.start()
        # No key pressed: the dashboard retries by itself.
        await wait_until(pilot, lambda: not banner.display, timeout=30, what="recovery")
        assert screen.query_one(StatusIndicator).state != "offline"


async def test_a_service_key_is_refused_with_a_hint(seeded, config_dir):
    key = seeded.service_keys["auth-service"]
    app = MaltiApp(Settings(url=seeded.url, api_key=key, auto_refresh=False, config_dir=config_dir))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, LoginScreen) and "user key" in screen_text(app),
                         what="the login screen explaining that a user key is needed")
