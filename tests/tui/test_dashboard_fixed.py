"""The dashboard driven by Textual's pilot on a fixed data set: keys, filters,
time ranges, drill-down, the palette, outages, and literal display of data."""

from __future__ import annotations

import re
from dataclasses import replace

from malti_tui.data import Filters
from malti_tui.screens.dashboard import DashboardScreen
from malti_tui.screens.drilldown import DrilldownScreen
from malti_tui.screens.help import HelpScreen
from malti_tui.screens.picker import PickerScreen
from malti_tui.widgets.cards import MetricCards
from malti_tui.widgets.header import Banner, StatusIndicator
from malti_tui.widgets.request_log import RequestLog
from malti_tui.widgets.tables import EndpointsTable

from .conftest import screen_text, wait_until
from .fixed_data import INJECTION, FixedDataSource


async def loaded(pilot, count: int = 1) -> DashboardScreen:
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, DashboardScreen) and pilot.app.screen.loads >= count,
                     what=f"{count} dashboard loads")
    return pilot.app.screen


async def test_cards_show_the_summary(fixed_app):
    app, _ = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await loaded(pilot)
        cards = screen.query_one(MetricCards)
        values = {card_id: cards.card(card_id).value for card_id in ("total", "rpm", "error-rate", "avg", "p95", "p99")}
        assert values == {"total": "5,220", "rpm": "87.0", "error-rate": "1.26%", "avg": "42.5 ms",
                          "p95": "350 ms", "p99": "980 ms"}
        # Thresholds 0.5/1.0 % and 300/800 ms: 1.26 % is over, 42.5 ms fine, 350 ms warning, 980 ms over.
        assert [cards.card(c).level for c in ("error-rate", "avg", "p95", "p99")] == ["error", "success", "warning", "error"]
        assert screen.query_one(StatusIndicator).state == "error"


async def test_time_keys_change_the_query_and_the_range_bar(fixed_app):
    app, source = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await loaded(pilot)
        assert source.queries[-1].time_range.name == "1h"
        for key, name in (("3", "24h"), ("4", "7d"), ("8", "1y"), ("1", "1h")):
            before = screen.loads
            await pilot.press(key)
            await wait_until(pilot, lambda: screen.loads > before)
            assert source.queries[-1].time_range.name == name
            assert screen.query_state.time_range.name == name


async def test_clicking_a_range_selects_it(fixed_app):
    app, source = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await loaded(pilot)
        bar = screen.query_one("#range-bar")
        text = bar.render().plain
        await pilot.click("#range-bar", offset=(text.index("7d") + 1, 0))
        await wait_until(pilot, lambda: source.queries[-1].time_range.name == "7d")


async def test_service_filter_from_the_picker(fixed_app):
    app, source = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("s")
        await wait_until(pilot, lambda: isinstance(app.screen, PickerScreen))
        await pilot.press(*"auth")  # type to search, Enter takes the first match
        await pilot.press("enter")
        await wait_until(pilot, lambda: source.queries[-1].filters.service == "auth-service")
        assert "service: auth-service" in screen_text(app)
        # A node can be chosen now that a service is set; 0 clears everything.
        await pilot.press("n")
        await wait_until(pilot, lambda: isinstance(app.screen, PickerScreen))
        await pilot.press("down", "enter")  # skip "(all)"
        await wait_until(pilot, lambda: source.queries[-1].filters.node == "node-1")
        await pilot.press("0")
        await wait_until(pilot, lambda: source.queries[-1].filters == Filters())


async def test_node_needs_a_service_first(fixed_app):
    app, source = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("n")
        await pilot.pause(0.2)
        assert not isinstance(app.screen, PickerScreen)


async def test_endpoint_filter_sets_endpoint_and_method(fixed_app):
    app, source = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("e")
        await wait_until(pilot, lambda: isinstance(app.screen, PickerScreen))
        await pilot.press(*"/login", "enter")
        await wait_until(pilot, lambda: source.queries[-1].filters.endpoint == "/login")
        assert source.queries[-1].filters.method == "POST"


async def test_filters_menu_then_consumer(fixed_app):
    app, source = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("f")
        await wait_until(pilot, lambda: isinstance(app.screen, PickerScreen))
        await pilot.press(*"consumer", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, PickerScreen) and "consumer" in app.screen.title_text)
        await pilot.press(*"mobile", "enter")
        await wait_until(pilot, lambda: source.queries[-1].filters.consumer == "mobile-app")


async def test_escape_closes_a_picker_without_changing_anything(fixed_app):
    app, source = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await loaded(pilot)
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, PickerScreen))
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen)
        assert screen.query_state.filters == Filters()


async def test_drill_down_into_an_endpoint_opens_and_closes(fixed_app):
    app, source = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        dashboard = await loaded(pilot)
        await pilot.press("t")  # endpoints view, table focused, first row = most requests
        await pilot.press("down", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, DrilldownScreen) and app.screen.loads >= 1)
        detail = app.screen
        assert detail.query_state.filters.endpoint == "/login"
        assert detail.query_state.filters.method == "POST"
        assert source.queries[-1].filters.endpoint == "/login"
        await wait_until(pilot, lambda: detail.query_one(RequestLog).row_count > 0)
        assert "Endpoint POST /login" in screen_text(app)
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is dashboard)
        assert dashboard.query_state.filters == Filters()


async def test_drill_down_into_a_consumer(fixed_app):
    app, source = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("o")
        await wait_until(pilot, lambda: isinstance(app.screen, PickerScreen))
        await pilot.press(*"batch", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, DrilldownScreen))
        assert app.screen.query_state.filters.consumer == "batch-job"
        assert "Consumer batch-job" in screen_text(app)


async def test_sorting_the_endpoints_table(fixed_app):
    app, _ = fixed_app()
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await loaded(pilot)
        await pilot.press("t")
        table = screen.query_one("#endpoints-table", EndpointsTable)
        assert [r.endpoint for r in table.records][:2] == ["/users/{user_id}", "/login"]
        table.sort_by("p95")
        assert table.records[0].endpoint == "/payments"
        await pilot.press("R")  # reverse
        assert table.records[0].endpoint == "/health"


async def test_request_log_follows_new_records(fixed_app):
    app, source = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await loaded(pilot)
        await pilot.press("l")
        log = screen.query_one(RequestLog)
        await wait_until(pilot, lambda: log.row_count == 30)
        assert log.record_ids == sorted(log.record_ids)  # oldest on top, newest at the bottom
        assert log.cursor_row == log.row_count - 1


async def test_markup_and_escape_codes_in_data_are_shown_literally(fixed_app):
    app, _ = fixed_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        await pilot.press("t")
        await pilot.pause(0.2)
        assert INJECTION in screen_text(app)
        await pilot.press("u")
        await pilot.pause(0.2)
        assert INJECTION in screen_text(app)
        await pilot.press("l")
        await wait_until(pilot, lambda: INJECTION in screen_text(app))


async def test_pause_stops_auto_refresh(fixed_app):
    app, source = fixed_app(auto_refresh=True)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await loaded(pilot)
        assert not screen.paused
        await pilot.press("p")
        assert screen.paused and "paused" in screen_text(app)
        await pilot.press("p")
        assert not screen.paused


async def test_server_down_then_back(fixed_app):
    app, source = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await loaded(pilot)
        source.down = True
        await pilot.press("r")
        banner = screen.query_one(Banner)
        await wait_until(pilot, lambda: banner.display)
        assert "Cannot reach" in screen_text(app)
        assert screen.query_one(StatusIndicator).state == "offline"
        assert screen.query_one(MetricCards).card("total").value == "5,220"  # last data kept
        source.down = False
        await pilot.press("r")
        await wait_until(pilot, lambda: not banner.display)
        assert screen.query_one(StatusIndicator).state == "error"


async def test_empty_state_shows_a_hint(fixed_app):
    from .fixed_data import FixedDataSource

    app, _ = fixed_app(FixedDataSource(empty=True))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await loaded(pilot)
        assert screen.has_class("-empty")
        assert "No requests in this time range yet" in screen_text(app)


async def test_help_screen_opens_on_question_mark(fixed_app):
    app, _ = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen))


async def test_every_dashboard_key_is_in_the_command_palette(fixed_app):
    from malti_tui.bindings import DASHBOARD_BINDINGS

    app, _ = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await loaded(pilot)
        titles = {command.title for command in app.get_system_commands(screen)}
        assert {b.description for b in DASHBOARD_BINDINGS} <= titles
        assert {"Help", "Light/dark", "Log out"} <= titles


async def test_theme_toggles_between_dark_and_light(fixed_app):
    app, _ = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        assert app.theme == "malti-dark"
        await pilot.press("d")
        assert app.theme == "malti-light"


async def test_small_and_large_terminals(fixed_app):
    app, _ = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await loaded(pilot)
        assert screen.has_class("-narrow")
        await pilot.resize_terminal(160, 48)
        await pilot.pause(0.2)
        assert screen.has_class("-wide")
        assert "1,26" not in screen_text(app)  # sanity: text intact after resize
        assert "5,220" in screen_text(app)


async def test_an_unusable_url_shows_the_login_screen_with_the_reason(config_dir):
    from malti_tui.app import MaltiApp
    from malti_tui.config import Settings
    from malti_tui.screens.login import LoginScreen

    app = MaltiApp(Settings(url="ftp://example", api_key="k", auto_refresh=False, config_dir=config_dir))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, LoginScreen))
        assert "http://" in screen_text(app)  # the client's explanation: the URL must be http(s)


async def test_a_dashboard_covered_by_a_detail_view_does_not_poll(fixed_app):
    app, source = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await loaded(pilot)
        await pilot.press("t", "enter")  # a detail view covers the dashboard
        await wait_until(pilot, lambda: isinstance(app.screen, DrilldownScreen) and app.screen.loads >= 1)
        before = len(source.queries)
        screen._tick()
        await pilot.pause(0.1)
        assert len(source.queries) == before


async def test_a_paused_dashboard_opens_a_paused_detail_view(fixed_app):
    app, _ = fixed_app(auto_refresh=True)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await loaded(pilot)
        await pilot.press("p")
        assert screen.paused
        await pilot.press("t", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, DrilldownScreen))
        assert app.screen.paused


async def test_a_command_from_the_palette_runs_its_action(fixed_app):
    from textual.command import CommandPalette

    app, source = fixed_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"last 7 days")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_until(pilot, lambda: source.queries[-1].time_range.name == "7d", what="the 7d query")


async def test_consumer_without_a_name_is_not_opened(fixed_app):
    app, _ = fixed_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await loaded(pilot)
        await pilot.press("u")
        await pilot.press("down", "down", "down", "down", "enter")  # the last row: no consumer name
        await pilot.pause(0.2)
        assert app.screen is screen


async def test_a_key_revoked_while_running_is_reported_and_retried(fixed_app):
    app, source = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await loaded(pilot)
        source.api_key = "revoked"
        await pilot.press("r")
        banner = screen.query_one(Banner)
        await wait_until(pilot, lambda: banner.display)
        assert "refused the API key" in screen_text(app)
        assert app.screen is screen  # the data stays; no jump to the login screen
        source.api_key = "user-key-ok"
        await pilot.press("r")
        await wait_until(pilot, lambda: not banner.display)


# ---------------------------------------------------------------- review fixes

class _Custom(FixedDataSource):
    """The fixed data set with some parts replaced."""

    def __init__(self, *, endpoints=None, consumers=None, statuses=None, records=None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.parts = {k: v for k, v in (("endpoints", endpoints), ("consumers", consumers),
                                        ("status_distribution", statuses)) if v is not None}
        self.records = records

    async def dashboard(self, query):
        return replace(await super().dashboard(query), **self.parts)

    async def requests(self, query, limit=100, status=None):
        records = await super().requests(query, limit, status)
        return records if self.records is None else self.records[:limit]


def _card_values(screen) -> list[str]:
    cards = screen.query_one(MetricCards)
    return [cards.card(c).value for c in ("total", "rpm", "error-rate", "avg", "p95", "p99")]


async def test_the_empty_state_names_the_package_of_this_repository(fixed_app):
    app, _ = fixed_app(FixedDataSource(empty=True))
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        text = screen_text(app)
        assert "malti-stack" in text
        assert "pip install malti " not in text and "pip install malti)" not in text


async def test_a_new_range_the_server_cannot_answer_does_not_show_the_old_figures(fixed_app):
    app, source = fixed_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await loaded(pilot)
        assert _card_values(screen)[0] == "5,220"
        source.down = True
        await pilot.press("4")  # 7d, while the server is away
        banner = screen.query_one(Banner)
        await wait_until(pilot, lambda: banner.display, what="the outage banner")
        await pilot.pause(0.2)
        assert screen.query_state.time_range.name == "7d"
        assert _card_values(screen) == ["–"] * 6
        assert screen.dashboard is None
        for table in screen.query(EndpointsTable):
            assert table.row_count == 0
        text = screen_text(app)
        assert "5,220" not in text and "2,400" not in text and "12:00:00" not in text  # nor the 1h update time
        assert "offline, no data yet" in text  # the charts say why they are empty
        assert "No requests in this time range" not in text  # we do not know that
        # Filters take the same path.
        source.down = False
        await pilot.press("r")
        await wait_until(pilot, lambda: _card_values(screen)[0] == "5,220", what="the 7d figures")
        source.down = True
        screen.set_filter("service", "auth-service")
        await wait_until(pilot, lambda: _card_values(screen)[0] == "–", what="the cards to be cleared")
        # Back online: the new selection's figures.
        source.down = False
        await pilot.press("r")
        await wait_until(pilot, lambda: _card_values(screen)[0] == "5,220" and not banner.display)
        assert source.queries[-1].filters.service == "auth-service"


async def test_the_endpoints_table_keeps_its_figures_on_an_80_column_screen(fixed_app):
    app, _ = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("t")
        await pilot.pause(0.2)
        header = next(line for line in screen_text(app).splitlines() if "Endpoint" in line and "Method" in line)
        for column in ("Requests", "Err %", "Avg", "P95", "P99"):
            assert column in header


LONG_ENDPOINT = "/api/v1/organisations/{organisation_id}/projects/{project_id}/x"


async def test_a_long_endpoint_is_cut_instead_of_pushing_the_latencies_off_screen(fixed_app):
    from malti_tui.data import EndpointStat, RequestRecord

    from .fixed_data import ENDPOINTS, FIXED_NOW, fixed_requests

    long_row = EndpointStat(LONG_ENDPOINT, "GET", "organisation-service", 5000, 5, 0.1, 11.0, 10.0, 777.0, 999.0)
    records = [RequestRecord(2000, FIXED_NOW, "organisation-service", "GET", LONG_ENDPOINT, 200, 654.0, "web-app")]
    app, _ = fixed_app(_Custom(endpoints=(long_row, *ENDPOINTS), records=records + fixed_requests()))
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("t")
        await pilot.pause(0.2)
        text = screen_text(app)
        row = next(line for line in text.splitlines() if "/api/v1/organisations" in line)
        assert "…" in row and "777 ms" in row and "999 ms" in row  # P95 and P99 of that row
        for size in ((80, 24), (160, 48)):
            await pilot.resize_terminal(*size)
            await pilot.pause(0.3)
            row = next(line for line in screen_text(app).splitlines() if "/api/v1/" in line)
            assert "777 ms" in row and "999 ms" in row
        # The request log too: the latency stays visible next to a long endpoint.
        await pilot.resize_terminal(80, 24)
        await pilot.press("l")
        await wait_until(pilot, lambda: any("/api/v1/" in line and "654 ms" in line
                                            for line in screen_text(app).splitlines()), what="the log row")


async def test_the_refresh_state_shows_the_update_time_after_a_range_change(fixed_app):
    from malti_tui.widgets.header import RefreshState

    app, _ = fixed_app(auto_refresh=True)
    async with app.run_test(size=(100, 24)) as pilot:
        screen = await loaded(pilot)
        await pilot.press("2")  # 6h: "⟳ 15s" is one character longer than "⟳ 5s"
        await wait_until(pilot, lambda: screen.loads >= 2)
        await pilot.pause(0.2)
        assert "⟳ 15s · 12:00:00" in screen_text(app)
        state = screen.query_one(RefreshState)
        assert state.size.width >= state.render().cell_len


async def test_escape_codes_in_status_codes_never_reach_the_terminal(fixed_app):
    from malti_tui.data import ServiceStatus

    statuses = (ServiceStatus("user-service", 10, 5, 0, 5, {"200": 5, "\x1b[2J\x1b]0;pwned\x07": 3, "5\u202e00": 2}),)
    app, _ = fixed_app(_Custom(statuses=statuses))
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        await pilot.press("h")
        await pilot.pause(0.2)
        text = screen_text(app)
        assert "200×5" in text and "500×2" in text
        await pilot.press("t", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, DrilldownScreen) and app.screen.loads >= 1)
        await pilot.pause(0.2)
        text = screen_text(app)
        assert "500 " in text
        for bad in ("\x1b", "\x07", "\u202e"):
            assert bad not in text


async def test_a_detail_view_opened_offline_says_so(fixed_app):
    from malti_tui.widgets.charts import LatencyChart
    from malti_tui.widgets.status_breakdown import StatusBreakdown

    app, source = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        source.down = True
        await pilot.press("t", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, DrilldownScreen) and app.screen.last_error is not None)
        await pilot.pause(0.2)
        detail = app.screen
        assert "offline" in detail.query_one(StatusBreakdown).render().plain
        assert "offline" in detail.query_one(LatencyChart).render().plain
        text = screen_text(app)
        assert "no requests" not in text and "waiting for data" not in text
        assert _card_values(detail) == ["–"] * 6


async def test_no_matching_requests_is_said_as_such(fixed_app):
    from malti_tui.widgets.charts import ConsumersChart

    app, _ = fixed_app(FixedDataSource(empty=True))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await loaded(pilot)
        await pilot.press("u")
        await pilot.pause(0.2)
        assert "no requests in this range" in screen.query_one(ConsumersChart).render().plain
        assert "waiting for data" not in screen_text(app)


async def test_consumer_counts_are_whole_numbers_on_the_chart(fixed_app):

    from malti_tui.data import ConsumerStat
    from malti_tui.widgets.charts import ConsumersChart

    consumers = (ConsumerStat("web-app", 1006), ConsumerStat("batch", 333), ConsumerStat("cli", 7))
    app, _ = fixed_app(_Custom(consumers=consumers))
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await loaded(pilot)
        await pilot.press("u")
        await pilot.pause(0.3)
        chart = screen.query_one(ConsumersChart).render().plain
        assert "web-app" in chart
        assert not re.search(r"\d\.\d", chart), chart


async def test_the_outage_banner_counts_down_to_the_next_try(fixed_app):
    app, source = fixed_app()
    async with app.run_test(size=(160, 24)) as pilot:
        screen = await loaded(pilot)
        source.down = True
        await pilot.press("r")
        def seconds_left() -> int | None:
            found = re.search(r"next try in (\d+)s", screen_text(app))
            return int(found.group(1)) if found else None

        await wait_until(pilot, lambda: seconds_left() is not None, what="the banner")
        first = seconds_left()
        # a loaded machine may skip a tick: any smaller number shows the countdown runs
        await wait_until(pilot, lambda: (seconds_left() or first) < first, timeout=15, what="the countdown")
        source.down = False
        await wait_until(pilot, lambda: not screen.query_one(Banner).display, timeout=8, what="the retry")


async def test_a_replaced_load_leaves_no_coroutine_unawaited(fixed_app):
    import gc
    import warnings

    app, source = fixed_app(FixedDataSource(delay=0.05))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await loaded(pilot)
            for key in "2345":  # each new range replaces the load queued before it
                screen.action_set_range({"2": "6h", "3": "24h", "4": "7d", "5": "30d"}[key])
            await wait_until(pilot, lambda: screen.loads >= 2)
            assert source.queries[-1].time_range.name == "30d"
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]
