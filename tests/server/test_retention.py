"""Retention: raw partitions past the raw retention are dropped, rollup rows past theirs deleted,
old idempotency keys forgotten; the jobs run in one process only (pg_try_advisory_lock)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from malti_server import db, maintenance
from malti_server.config import SettingsHolder
from malti_server.queries.params import DAY, WEEK, floor_time
from malti_server.validation import Columns
from malti_server.writer import store_batch
from malti_testing import config_toml, record
from server_test_helpers import counts, unique, wait_until

RETENTION = {"raw": "1d", "rollup_5min": "2d", "rollup_1hour": "3d"}


def columns(times: list[datetime], endpoint: str) -> Columns:
    n = len(times)
    return Columns(
        created_at=times,
        service=["auth-service"] * n,
        node=["node-1"] * n,
        method=["GET"] * n,
        endpoint=[endpoint] * n,
        status=[200] * n,
        response_time=[10.0] * n,
        consumer=["web-app"] * n,
        context=[None] * n,
    )


@pytest.fixture
async def conn(database_url):
    c = await asyncpg.connect(database_url, server_settings={"timezone": "UTC"})
    await db.migrate(c)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
def holder(tmp_path):
    path = tmp_path / "malti.toml"
    path.write_text(config_toml(retention=RETENTION))
    return SettingsHolder(path)


async def seed(conn: asyncpg.Connection, partitions: db.Partitions) -> dict[str, datetime]:
    """Records 5 days, 2.5 days and 1 minute old (10 each), stored and compacted like ingest does."""
    now = datetime.now(timezone.utc)
    ages = {"/five-days": now - timedelta(days=5), "/sixty-hours": now - timedelta(hours=60),
            "/recent": now - timedelta(minutes=1)}
    await partitions.ensure(conn, {t.date() for t in ages.values()})
    for endpoint, when in ages.items():
        await store_batch(conn, "auth-service", columns([when] * 10, endpoint), f"key{endpoint}")
    assert await maintenance.compact(conn) is not None
    return ages


async def per_endpoint(conn: asyncpg.Connection, table: str) -> dict[str, int]:
    rows = await conn.fetch(f"SELECT endpoint, sum(n)::int AS n FROM {table} GROUP BY 1")
    return {r["endpoint"]: r["n"] for r in rows}


async def raw_partitions(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                            " WHERE i.inhparent = 'requests'::regclass")
    return {r["relname"] for r in rows}


async def test_retention_drops_old_raw_partitions_and_rollup_rows(conn, holder):
    partitions = db.Partitions(enabled=True)
    ages = await seed(conn, partitions)
    old_parts = {db.partition_name(ages["/five-days"].date()), db.partition_name(ages["/sixty-hours"].date())}
    assert old_parts <= await raw_partitions(conn)

    removed = await maintenance.apply_retention(conn, holder, partitions, "postgresql")

    assert removed is not None
    assert removed["raw_partitions"] == 2
    assert not old_parts & await raw_partitions(conn)
    assert db.partition_name(ages["/recent"].date()) in await raw_partitions(conn)
    raw = await conn.fetch("SELECT endpoint, count(*)::int AS n FROM requests GROUP BY 1")
    assert {r["endpoint"]: r["n"] for r in raw} == {"/recent": 10}
    # 5-minute rollups keep 2 days, 1-hour rollups 3 days.
    assert await per_endpoint(conn, "rollup_5min") == {"/recent": 10}
    assert await per_endpoint(conn, "rollup_1h") == {"/recent": 10, "/sixty-hours": 10}
    assert removed["rollup_5min"] >= 2 and removed["rollup_1h"] >= 1


async def test_retention_keeps_coarse_blocks_that_straddle_the_cutoff(conn, holder):
    """A daily or weekly row goes only once its whole block is past retention (3 days here)."""
    partitions = db.Partitions(enabled=True)
    now = datetime.now(timezone.utc)
    cutoff = now - timedelta(days=3)
    day = floor_time(cutoff, DAY)  # the day holding the cutoff
    week = floor_time(cutoff, WEEK)
    ages = {"/straddling-day": day, "/whole-day-past": day - timedelta(days=1),
            "/whole-week-past": week - timedelta(days=1)}
    await partitions.ensure(conn, {t.date() for t in ages.values()})
    for endpoint, when in ages.items():
        await store_batch(conn, "auth-service", columns([when] * 10, endpoint), f"key{endpoint}")
    assert await maintenance.compact(conn) is not None
    assert await per_endpoint(conn, "rollup_ep_1d") == {endpoint: 10 for endpoint in ages}

    await maintenance.apply_retention(conn, holder, partitions, "postgresql")

    # the day holding the cutoff is still partly retained: its row stays whole
    assert await per_endpoint(conn, "rollup_ep_1d") == {"/straddling-day": 10}
    weekly = await per_endpoint(conn, "rollup_ep_7d")
    assert "/whole-week-past" not in weekly
    closed = await conn.fetchval("SELECT closed_until FROM malti_rollup_closed WHERE width = '7 days'")
    if week < day - timedelta(days=1) and week + timedelta(days=7) <= closed:
        # both days lie in the (closed) week holding the cutoff: its row stays
        assert weekly == {"/straddling-day": 10, "/whole-day-past": 10}


async def test_retention_forgets_idempotency_keys_after_a_day(conn, holder):
    partitions = db.Partitions(enabled=True)
    await seed(conn, partitions)
    await conn.execute("UPDATE ingest_batches SET created_at = now() - interval '25 hours' WHERE key = 'key/recent'")
    removed = await maintenance.apply_retention(conn, holder, partitions, "postgresql")
    assert removed["idempotency_keys"] == 1
    keys = {r["key"] for r in await conn.fetch("SELECT key FROM ingest_batches")}
    assert "key/recent" not in keys


async def test_retention_keeps_everything_within_default_retention(conn, tmp_path):
    path = tmp_path / "default.toml"
    path.write_text(config_toml())
    partitions = db.Partitions(enabled=True)
    await seed(conn, partitions)
    removed = await maintenance.apply_retention(conn, SettingsHolder(path), partitions, "postgresql")
    assert removed["raw_partitions"] == 0 and removed["rollup_5min"] == 0 and removed["rollup_1h"] == 0
    assert (await conn.fetchval("SELECT count(*) FROM requests")) == 30


async def test_retention_skips_while_another_process_holds_the_lock(conn, holder, database_url):
    partitions = db.Partitions(enabled=True)
    await seed(conn, partitions)
    other = await asyncpg.connect(database_url)
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", db.RETENTION_LOCK)
        assert await maintenance.apply_retention(conn, holder, partitions, "postgresql") is None
        assert (await conn.fetchval("SELECT count(*) FROM requests")) == 30
        await other.execute("SELECT pg_advisory_unlock($1)", db.RETENTION_LOCK)
    finally:
        await other.close()
    removed = await maintenance.apply_retention(conn, holder, partitions, "postgresql")
    assert removed is not None and removed["raw_partitions"] == 2
    # The lock is released after the job: the next round can take it again.
    assert await maintenance.apply_retention(conn, holder, partitions, "postgresql") is not None


async def test_concurrent_retention_runs_in_one_process_at_a_time(conn, holder, database_url):
    partitions = db.Partitions(enabled=True)
    await seed(conn, partitions)
    other = await asyncpg.connect(database_url, server_settings={"timezone": "UTC"})
    try:
        # A job that holds the lock while the second process tries.
        await conn.execute("SELECT pg_advisory_lock($1)", db.RETENTION_LOCK)
        second = await maintenance.apply_retention(other, holder, db.Partitions(enabled=True), "postgresql")
        assert second is None
        await conn.execute("SELECT pg_advisory_unlock($1)", db.RETENTION_LOCK)
    finally:
        await other.close()


async def test_compaction_skips_while_another_process_holds_the_lock(conn, database_url):
    partitions = db.Partitions(enabled=True)
    now = datetime.now(timezone.utc)
    await partitions.ensure(conn, {now.date()})
    await store_batch(conn, "auth-service", columns([now] * 5, "/pending"))
    other = await asyncpg.connect(database_url)
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", db.COMPACTION_LOCK)
        assert await maintenance.compact(conn) is None
        assert (await conn.fetchval("SELECT count(*) FROM rollup_pending")) > 0
        await other.execute("SELECT pg_advisory_unlock($1)", db.COMPACTION_LOCK)
    finally:
        await other.close()
    assert await maintenance.compact(conn) is not None
    assert (await conn.fetchval("SELECT count(*) FROM rollup_pending")) == 0
    assert await per_endpoint(conn, "rollup_5min") == {"/pending": 5}


def test_server_drops_raw_data_past_short_retention(start_server):
    server = start_server(retention={"raw": "1d"})
    old_ep, new_ep = unique("/old"), unique("/new")
    three_days_ago = (datetime.now(timezone.utc) - timedelta(days=3)).isoformat()
    assert server.ingest([record(endpoint=old_ep, created_at=three_days_ago)] * 5).status_code == 200
    assert server.ingest([record(endpoint=new_ep)] * 5).status_code == 200
    assert counts(server, old_ep)["requests"] == 5
    server.stop()
    server.start()  # the maintenance job runs retention on its first round
    assert wait_until(lambda: counts(server, old_ep)["requests"] == 0, timeout=20), server.log()
    assert counts(server, new_ep)["requests"] == 5
    # Rollups keep their own (default, longer) retention.
    assert counts(server, old_ep)["rollup_1h"] == 5
