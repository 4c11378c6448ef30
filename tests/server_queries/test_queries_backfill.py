"""schema/007's backfill: a database that holds data when it upgrades answers at once from the new
node/context and weekly levels, with the same figures as before the upgrade and within the histogram's bound of
the exact ones.

Traffic is loaded (folded, partly pending, coarse blocks closed) into a database migrated up to 006;
dashboards are taken there with the levels that existed then; the remaining migrations (007's
backfill) are applied and the same dashboards taken again, now read from the new levels.
"""

from __future__ import annotations

import asyncio
import math
import shutil
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from malti_server.db import migrate, schema_dir
from malti_server.queries import sql as sql_module
from malti_server.queries.dashboard import build_sql, dashboard
from malti_server.queries.params import HOUR, WEEK, ceil_time, floor_time, parse_aggregate
from malti_server.queries.sql import fetch_closed
from malti_testing import create_database, drop_database
from queries_traffic import CLOSE_UPTO, T0, T1, expected, generate, load
from test_queries_accuracy import REL, compare, iso

N_RECORDS = 20_000
NOW = T1 + timedelta(days=1)
NEW_VIEWS = {"rollup_nc_5min_all", "rollup_anc_5min_all", "rollup_anc_1h_all"} | {
    lv.view for lv in sql_module.LEVELS[WEEK]}

CASES = {
    "5min": {"start_time": iso(T0 + timedelta(days=1, hours=2, minutes=7)),
             "end_time": iso(T0 + timedelta(days=2, hours=1, minutes=52))},
    "1hour": {"start_time": iso(T0 - timedelta(hours=1)), "end_time": iso(T1 + timedelta(minutes=30))},
    "week": {"start_time": iso(T0 - timedelta(days=2)), "end_time": iso(CLOSE_UPTO)},
}
FILTERS = {
    "none": {},
    "endpoint+consumer": {"endpoint": "/users/{user_id}", "consumer": "consumer-0"},
    "node": {"node": "node-2"},
    "context": {"context": "ctx-x"},
    "service+node": {"service": "payment-service", "node": "node-1"},
    "node+context": {"node": "node-1", "context": "ctx-y"},
}


@pytest.fixture(scope="module")
def upgraded(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory):
    """(responses before the upgrade, database URL after it, names of the migrations it applied)."""
    old_schema = tmp_path_factory.mktemp("schema_006")
    for path in sorted(schema_dir().glob("*.sql")):
        if path.name < "007":
            shutil.copy(path, old_schema / path.name)
    url = create_database(pg_admin_url)

    async def go():
        conn = await asyncpg.connect(url, server_settings={"timezone": "UTC"})
        try:
            await load(conn, generate(N_RECORDS, seed=11), schema=old_schema)
            before = {}
            with pytest.MonkeyPatch.context() as mp:  # the levels a 006 database has
                for width, levels in sql_module.LEVELS.items():
                    mp.setitem(sql_module.LEVELS, width, [lv for lv in levels if lv.view not in NEW_VIEWS])
                for case, params in CASES.items():
                    for name, filters in FILTERS.items():
                        q = parse_aggregate({**params, **filters}, None, NOW)
                        before[case, name] = await dashboard(conn, q, NOW)
            applied = await migrate(conn)
        finally:
            await conn.close()
        return before, applied

    before, applied = asyncio.run(go())
    yield before, url, applied
    drop_database(pg_admin_url, url)


def same(a, b, where: str, errors: list[str]) -> None:
    """Equal structures; floats equal up to summation order."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            errors.append(f"{where}: keys {sorted(a)} != {sorted(b)}")
        for k in a.keys() & b.keys():
            same(a[k], b[k], f"{where}.{k}", errors)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            errors.append(f"{where}: {len(a)} items != {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]", errors)
    elif isinstance(a, float) and isinstance(b, float):
        if not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
            errors.append(f"{where}: {a} != {b}")
    elif a != b or type(a) is not type(b):
        errors.append(f"{where}: {a!r} != {b!r}")


def test_migration_applies_and_fills_the_new_levels(upgraded) -> None:
    _, url, applied = upgraded
    assert applied and applied[0].startswith("007_")

    async def go():
        conn = await asyncpg.connect(url, server_settings={"timezone": "UTC"})
        try:
            for table in ("rollup_nc_5min", "rollup_anc_5min", "rollup_anc_1h"):
                folded = await conn.fetchval(f"SELECT sum(n) FROM {table}")
                pending = await conn.fetchval("SELECT sum(n) FROM rollup_pending")
                raw = await conn.fetchval("SELECT count(*) FROM requests")
                # the backfill copied the folded records; pending ones are read through the view
                assert folded and pending and folded + pending == raw, (table, folded, pending, raw)
                assert await conn.fetchval(f"SELECT sum(n) FROM {table}_all") == raw
            week = await conn.fetchval("SELECT closed_until FROM malti_rollup_closed WHERE width = '7 days'")
            assert week == floor_time(CLOSE_UPTO, WEEK)
            raw = await conn.fetchval("SELECT count(*) FROM requests WHERE created_at < $1", week)
            for level in sql_module.LEVELS[WEEK]:  # weeks filled from the daily levels
                table = level.view.removesuffix("_all")
                assert await conn.fetchval(f"SELECT sum(n) FROM {table}") > 0, table
                assert await conn.fetchval(f"SELECT sum(n) FROM {level.view} WHERE bucket < $1", week) == raw
        finally:
            await conn.close()

    asyncio.run(go())


@pytest.mark.parametrize("filter_name", list(FILTERS))
@pytest.mark.parametrize("case", list(CASES))
async def test_backfilled_levels_answer_as_before_the_upgrade(upgraded, case: str, filter_name: str) -> None:
    before, url, _ = upgraded
    filters = FILTERS[filter_name]
    q = parse_aggregate({**CASES[case], **filters}, None, NOW)
    conn = await asyncpg.connect(url, server_settings={"timezone": "UTC"})
    try:
        statement, _ = build_sql(q, await fetch_closed(conn))
        after = await dashboard(conn, q, NOW)
        exp = await expected(conn, q.first_bucket, q.stop, q.step, filters,
                             nodes_range=(floor_time(q.first_bucket, HOUR), ceil_time(q.stop, HOUR)))
    finally:
        await conn.close()
    if "node" in filters or "context" in filters:
        time_series = statement.split("\nUNION ALL\n")[0]
        width = "5min" if case == "5min" else "1h"
        view = f"rollup_{'nc' if 'service' in filters else 'anc'}_{width}_all"
        assert f" FROM {view} " in time_series, time_series
    if case == "week":
        assert "_7d_all " in statement
    assert exp["summary"]["n"] > 0
    errors: list[str] = []
    same(before[case, filter_name], after, "response", errors)
    errors += compare(after, exp, REL)
    assert not errors, "\n".join(errors[:20])
