"""Helpers for the TUI tests: build the app on a data source, wait for it, read
what is on screen."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot

from malti_tui.app import MaltiApp
from malti_tui.config import Settings

from .fixed_data import GOOD_KEY, FixedDataSource, fixed_clock


async def wait_until(pilot: Pilot, predicate: Callable[[], object], timeout: float = 15.0, what: str = "") -> None:
    """Let the app run until ``predicate()`` is true (fails after ``timeout`` seconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await pilot.pause(0.05)


def screen_text(app: MaltiApp) -> str:
    """The characters currently on screen, one line per row."""
    return "\n".join("".join(segment.text for segment in strip) for strip in app.screen._compositor.render_strips())


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A private config folder for the saved login."""
    return tmp_path / "config"


@pytest.fixture
def fixed_app(config_dir: Path) -> Callable[..., tuple[MaltiApp, FixedDataSource]]:
    """Factory: an app showing the fixed data set (auto-refresh off, frozen clock)."""

    def make(source: FixedDataSource | None = None, **settings) -> tuple[MaltiApp, FixedDataSource]:
        source = source or FixedDataSource()
        options = {"url": source.url, "api_key": GOOD_KEY, "auto_refresh": False, "config_dir": config_dir}
        options.update(settings)

        def factory(url: str, key: str) -> FixedDataSource:
            source.url, source.api_key = url, key
            return source

        return MaltiApp(Settings(**options), source_factory=factory, clock=fixed_clock), source

    return make
