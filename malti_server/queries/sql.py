"""Building blocks of parameterised SQL: placeholders, filter conditions, rollup level choice.

User input only ever travels as bind parameters ($1, $2, ...). Table and column names come from the
fixed tables below, never from a request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .params import DAY, FIVE_MINUTES, HOUR, SIX_HOURS, WEEK, Filters, ceil_time, floor_time

ALL_DIMS = frozenset({"node", "method", "endpoint", "consumer", "context"})


@dataclass(frozen=True)
class Level:
    """One rollup read view: its bucket width and the dimensions it keeps (service and status always)."""

    view: str
    width: timedelta
    dims: frozenset[str]
    per_service: bool = True  # False: every service merged (only for readers of all services)


def _level(view: str, width: timedelta, *dims: str) -> Level:
    return Level(view, width, frozenset(dims) if dims != ("*",) else ALL_DIMS)


# Smallest first: the first level keeping every needed dimension is the cheapest to read.
LEVELS: dict[timedelta, list[Level]] = {
    FIVE_MINUTES: [
        Level("rollup_all_5min_all", FIVE_MINUTES, frozenset(), per_service=False),
        _level("rollup_svc_5min_all", FIVE_MINUTES),
        Level("rollup_anc_5min_all", FIVE_MINUTES, frozenset({"node", "context"}), per_service=False),
        _level("rollup_nc_5min_all", FIVE_MINUTES, "node", "context"),
        Level("rollup_acon_5min_all", FIVE_MINUTES, frozenset({"consumer"}), per_service=False),
        _level("rollup_con_5min_all", FIVE_MINUTES, "consumer"),
        _level("rollup_ep_5min_all", FIVE_MINUTES, "method", "endpoint"),
        _level("rollup_full_5min_all", FIVE_MINUTES, "*"),
    ],
    HOUR: [
        Level("rollup_all_1h_all", HOUR, frozenset(), per_service=False),
        _level("rollup_svc_1h_all", HOUR),
        Level("rollup_anc_1h_all", HOUR, frozenset({"node", "context"}), per_service=False),
        _level("rollup_nc_1h_all", HOUR, "node", "context"),
        Level("rollup_acon_1h_all", HOUR, frozenset({"consumer"}), per_service=False),
        _level("rollup_con_1h_all", HOUR, "consumer"),
        _level("rollup_ep_1h_all", HOUR, "method", "endpoint"),
        _level("rollup_epcon_1h_all", HOUR, "method", "endpoint", "consumer"),
        _level("rollup_nccon_1h_all", HOUR, "node", "context", "consumer"),
        _level("rollup_ncep_1h_all", HOUR, "node", "context", "method", "endpoint"),
        _level("rollup_full_1h_all", HOUR, "*"),
    ],
    SIX_HOURS: [
        _level("rollup_nc_6h_all", SIX_HOURS, "node", "context"),
        Level("rollup_acon_6h_all", SIX_HOURS, frozenset({"consumer"}), per_service=False),
        _level("rollup_con_6h_all", SIX_HOURS, "consumer"),
        _level("rollup_ep_6h_all", SIX_HOURS, "method", "endpoint"),
        _level("rollup_epcon_6h_all", SIX_HOURS, "method", "endpoint", "consumer"),
        _level("rollup_nccon_6h_all", SIX_HOURS, "node", "context", "consumer"),
        _level("rollup_ncep_6h_all", SIX_HOURS, "node", "context", "method", "endpoint"),
    ],
    DAY: [
        _level("rollup_svc_1d_all", DAY),
        _level("rollup_nc_1d_all", DAY, "node", "context"),
        Level("rollup_acon_1d_all", DAY, frozenset({"consumer"}), per_service=False),
        _level("rollup_con_1d_all", DAY, "consumer"),
        _level("rollup_ep_1d_all", DAY, "method", "endpoint"),
        _level("rollup_epcon_1d_all", DAY, "method", "endpoint", "consumer"),
        _level("rollup_nccon_1d_all", DAY, "node", "context", "consumer"),
        _level("rollup_ncep_1d_all", DAY, "node", "context", "method", "endpoint"),
    ],
    WEEK: [  # schema/007
        _level("rollup_svc_7d_all", WEEK),
        _level("rollup_nc_7d_all", WEEK, "node", "context"),
        Level("rollup_acon_7d_all", WEEK, frozenset({"consumer"}), per_service=False),
        _level("rollup_con_7d_all", WEEK, "consumer"),
        _level("rollup_ep_7d_all", WEEK, "method", "endpoint"),
        _level("rollup_epcon_7d_all", WEEK, "method", "endpoint", "consumer"),
        _level("rollup_nccon_7d_all", WEEK, "node", "context", "consumer"),
        _level("rollup_ncep_7d_all", WEEK, "node", "context", "method", "endpoint"),
    ],
}


def pick_level(width: timedelta, need: frozenset[str], per_service: bool = True) -> Level | None:
    """The cheapest level at ``width`` keeping ``need`` (and each service apart if ``per_service``)."""
    for level in LEVELS[width]:
        if need <= level.dims and (level.per_service or not per_service):
            return level
    return None


Interval = tuple[datetime, datetime]


Closed = Mapping[timedelta, datetime]


async def fetch_closed(conn: Any) -> dict[timedelta, datetime]:
    """How far each coarse width (6 hours, 1 day, 7 days) is complete: schema/005's malti_rollup_closed."""
    return {r["width"]: r["closed_until"] for r in await conn.fetch("SELECT width, closed_until FROM malti_rollup_closed")}


def plan_sources(start: datetime, stop: datetime, finest: timedelta, need: frozenset[str],
                 per_service: bool = True, closed: Closed | None = None) -> list[tuple[Level, list[Interval]]]:
    """Cover [start, stop) (aligned to ``finest``) with the coarsest buckets that fit inside it:
    whole weeks from a 7-day level, then whole days, whole 6-hour blocks, whole hours, the rest at
    ``finest`` (each from the cheapest level keeping ``need``). A 6-hour, 1-day or 7-day level
    serves only blocks before its ``closed`` time (schema/005: later blocks are still being filled
    in finer levels); without ``closed`` none does."""
    widths = [w for w in (WEEK, DAY, SIX_HOURS, HOUR, FIVE_MINUTES) if w >= finest]
    found: dict[Level, list[Interval]] = {}
    closed = closed or {}

    def cover(lo: datetime, hi: datetime, idx: int) -> None:
        if lo >= hi:
            return
        width = widths[idx]
        level = pick_level(width, need, per_service)
        if idx == len(widths) - 1:
            assert level is not None  # the full-dimension levels exist at 5 minutes and 1 hour
            found.setdefault(level, []).append((lo, hi))
            return
        top = hi if width <= HOUR else min(hi, closed.get(width, lo))
        a, b = ceil_time(lo, width), floor_time(top, width)
        if level is None or a >= b:
            cover(lo, hi, idx + 1)
            return
        found.setdefault(level, []).append((a, b))
        cover(lo, a, idx + 1)
        cover(b, hi, idx + 1)

    cover(start, stop, 0)
    return [(level, sorted(intervals)) for level, intervals in found.items()]


class Binds:
    """Collects bind parameters and hands out their placeholders."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any, cast: str = "") -> str:
        self.values.append(value)
        return f"${len(self.values)}{cast}"


def filter_conditions(f: Filters, binds: Binds, dims: frozenset[str] = ALL_DIMS, service_only: bool = False) -> list[str]:
    """Equality conditions for the filters (on the dimensions a source has), and the restriction."""
    conds: list[str] = []
    if f.service is not None:
        conds.append(f"service = {binds(f.service)}")
    elif f.services is not None:
        conds.append(f"service = ANY({binds(sorted(f.services), '::text[]')})")
    if service_only:
        return conds
    for name in ("node", "method", "endpoint", "consumer", "context"):
        value = getattr(f, name)
        if value is not None and name in dims:
            conds.append(f"{name} = {binds(value)}")
    return conds


def time_condition(column: str, intervals: list[Interval], binds: Binds) -> str:
    parts = [f"({column} >= {binds(lo)} AND {column} < {binds(hi)})" for lo, hi in intervals]
    return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"
