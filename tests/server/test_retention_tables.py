"""Retention finds every rollup level the migrations create (5-minute, hourly, 6-hour, daily)."""

import asyncpg

from malti_server.db import migrate
from malti_server.maintenance import rollup_tables


async def test_retention_covers_every_rollup_level(database_url):
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        tables = set(await rollup_tables(conn))
        levels = {r["name"] for r in await conn.fetch("SELECT name FROM malti_rollup_levels")}
    finally:
        await conn.close()
    assert {"rollup_5min", "rollup_1h"} <= tables
    assert levels and levels <= tables
    assert any(t.endswith("_6h") for t in tables)
    assert "rollup_pending" not in tables
