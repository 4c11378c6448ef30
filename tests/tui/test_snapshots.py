"""Snapshots of the main screens at 80x24 and 160x48 (pytest-textual-snapshot).

The data is the fixed data set, the clock is frozen and auto-refresh is off,
so every run draws the same screen. Update with ``pytest --snapshot-update``
after an intended visual change and review the SVG diff.
"""

from __future__ import annotations

import pytest

from malti_tui.screens.dashboard import DashboardScreen
from malti_tui.screens.drilldown import DrilldownScreen
from malti_tui.screens.login import LoginScreen

from .conftest import wait_until
from .fixed_data import FixedDataSource

SIZES = [(80, 24), (160, 48)]


async def _dashboard_ready(pilot) -> None:
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, DashboardScreen) and pilot.app.screen.loads >= 1)
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_dashboard_overview(snap_compare, fixed_app, size):
    app, _ = fixed_app()
    assert snap_compare(app, terminal_size=size, run_before=_dashboard_ready)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_dashboard_endpoints_view(snap_compare, fixed_app, size):
    app, _ = fixed_app()

    async def run_before(pilot):
        await _dashboard_ready(pilot)
        await pilot.press("t")
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)


def test_dashboard_status_view(snap_compare, fixed_app):
    app, _ = fixed_app()

    async def run_before(pilot):
        await _dashboard_ready(pilot)
        await pilot.press("h")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_drilldown(snap_compare, fixed_app, size):
    app, _ = fixed_app()

    async def run_before(pilot):
        await _dashboard_ready(pilot)
        await pilot.press("t", "enter")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, DrilldownScreen) and pilot.app.screen.loads >= 1)
        from malti_tui.widgets.request_log import RequestLog

        await wait_until(pilot, lambda: pilot.app.screen.query_one(RequestLog).row_count > 0)
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_login_with_an_error(snap_compare, fixed_app, size):
    app, _ = fixed_app(url="http://malti.test", api_key=None)

    async def run_before(pilot):
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, LoginScreen))
        await pilot.press(*"wrong", "enter")
        await wait_until(pilot, lambda: pilot.app.screen.attempts >= 1 and "refused" in str(
            pilot.app.screen.query_one("#login-message").render()))
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)


def test_empty_state(snap_compare, fixed_app):
    app, _ = fixed_app(FixedDataSource(empty=True))
    assert snap_compare(app, terminal_size=(80, 24), run_before=_dashboard_ready)


def test_light_theme(snap_compare, fixed_app):
    app, _ = fixed_app(theme="malti-light")
    assert snap_compare(app, terminal_size=(80, 24), run_before=_dashboard_ready)


def test_help_screen(snap_compare, fixed_app):
    app, _ = fixed_app()

    async def run_before(pilot):
        await _dashboard_ready(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_endpoint_picker(snap_compare, fixed_app):
    from malti_tui.screens.picker import PickerScreen

    app, _ = fixed_app()

    async def run_before(pilot):
        await _dashboard_ready(pilot)
        await pilot.press("e")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, PickerScreen))
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
