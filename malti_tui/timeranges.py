"""The time ranges the dashboard offers, with their keys and refresh periods.

One place for every range a user can pick: the key that selects it, how far it
looks back, whether it reads the 1-minute realtime endpoint, and how often the
dashboard refreshes while it is shown (short ranges live, long ranges slowly).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class TimeRange:
    """A look-back window of the dashboard."""

    name: str
    """Short name shown in the range bar, e.g. ``"24h"``."""
    key: str
    """The one key that selects it."""
    label: str
    """Long name for help and the command palette."""
    duration: timedelta
    """How far back from now the window starts."""
    refresh_seconds: float
    """Auto-refresh period while this range is shown."""
    realtime: bool = False
    """Read ``/api/v1/metrics/aggregate/realtime`` (1-minute buckets, live)."""


TIME_RANGES: tuple[TimeRange, ...] = (
    TimeRange("1h", "1", "last hour (1-minute buckets, live)", timedelta(hours=1), 5.0, realtime=True),
    TimeRange("6h", "2", "last 6 hours", timedelta(hours=6), 15.0),
    TimeRange("24h", "3", "last 24 hours", timedelta(hours=24), 30.0),
    TimeRange("7d", "4", "last 7 days", timedelta(days=7), 60.0),
    TimeRange("30d", "5", "last 30 days", timedelta(days=30), 120.0),
    TimeRange("3m", "6", "last 3 months", timedelta(days=91), 300.0),
    TimeRange("6m", "7", "last 6 months", timedelta(days=182), 300.0),
    TimeRange("1y", "8", "last year", timedelta(days=365), 600.0),
)

DEFAULT_RANGE = "1h"

_BY_NAME = {time_range.name: time_range for time_range in TIME_RANGES}


def get_range(name: str) -> TimeRange:
    """Return the range called ``name`` (``"1h"``, ``"7d"``, ...).

    Raises:
        ValueError: naming the valid choices when ``name`` is unknown.
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        choices = ", ".join(_BY_NAME)
        raise ValueError(f"unknown time range {name!r}; choose one of {choices}") from None
