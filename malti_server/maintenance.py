"""Background jobs of every server process: folding pending rollup rows, creating raw partitions
ahead of time, and retention. Each job takes a session advisory lock with ``pg_try_advisory_lock``,
so when several processes run, one does the work and the others skip that round."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta, timezone

import asyncpg

from .config import SettingsHolder
from .db import COMPACTION_LOCK, RETENTION_LOCK, UNAVAILABLE_ERRORS, Partitions
from .queries.params import DAY, FIVE_MINUTES, HOUR, SIX_HOURS, WEEK

log = logging.getLogger("malti.maintenance")

COMPACT_EVERY = 2.0  # seconds: pending rows stay few, so queries over the views stay fast
COMPACT_AGAIN_AT = 20_000  # a fold that moved this many rows is followed by another at once (catching up)
RETENTION_EVERY = 600.0
IDEMPOTENCY_KEEP = timedelta(hours=24)


async def _with_lock(conn: asyncpg.Connection, lock: int, job):
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock):
        return None
    try:
        return await job()
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", lock)


async def compact(conn: asyncpg.Connection) -> int | None:
    """Fold pending partial rollups into the 5-minute and 1-hour tables (None: another process is on it)."""

    async def job() -> int:
        return await conn.fetchval("SELECT malti_compact_pending()")

    return await _with_lock(conn, COMPACTION_LOCK, job)


#: bucket width of a rollup table, by the suffix of its name
BUCKET_WIDTHS = {"5min": FIVE_MINUTES, "1h": HOUR, "6h": SIX_HOURS, "1d": DAY, "7d": WEEK}


async def rollup_tables(conn: asyncpg.Connection) -> list[str]:
    """Every rollup table: rollup_5min, rollup_1h and the coarser levels (rollup_<level>_<5min|1h|6h|1d|7d>).

    5-minute tables keep ``retention.rollup_5min``; hourly, 6-hour, daily and weekly ones
    ``retention.rollup_1hour``.
    """
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p') AND ns.nspname = current_schema()"
        " AND c.relname ~ '^rollup_([a-z]+_)?(5min|1h|6h|1d|7d)$' ORDER BY 1"
    )
    return [r["relname"] for r in rows]


async def apply_retention(
    conn: asyncpg.Connection, settings_holder: SettingsHolder, partitions: Partitions, storage: str
) -> dict[str, int] | None:
    """Delete data past its retention; returns what was removed (None: another process is on it)."""
    retention = settings_holder.current.retention
    now = datetime.now(timezone.utc)

    async def job() -> dict[str, int]:
        removed: dict[str, int] = {}
        if storage == "postgresql":
            removed["raw_partitions"] = len(
                await partitions.drop_older_than(conn, now - timedelta(seconds=retention.raw))
            )
        else:
            await sync_timescaledb_retention(conn, timedelta(seconds=retention.raw))
        for table in await rollup_tables(conn):
            keep = retention.rollup_5min if table.endswith("5min") else retention.rollup_1hour
            # A row goes once all of its block is past retention: a block that straddles the
            # cutoff stays, or a query covering it whole would read that block as empty although
            # finer levels still hold its later part (up to 6 days of a weekly row).
            # Table names come from the catalog (rollup_*), never from input.
            cutoff = now - timedelta(seconds=keep) - BUCKET_WIDTHS[table.rsplit("_", 1)[1]]
            status = await conn.execute(f'DELETE FROM "{table}" WHERE bucket <= $1', cutoff)
            removed[table] = int(status.split()[-1])
        status = await conn.execute("DELETE FROM ingest_batches WHERE created_at < $1", now - IDEMPOTENCY_KEEP)
        removed["idempotency_keys"] = int(status.split()[-1])
        return removed

    return await _with_lock(conn, RETENTION_LOCK, job)


async def sync_timescaledb_retention(conn: asyncpg.Connection, keep: timedelta) -> None:
    """On TimescaleDB its retention policy drops raw chunks; keep its horizon equal to ``retention.raw``."""
    current = await conn.fetchval(
        "SELECT (config->>'drop_after')::interval FROM timescaledb_information.jobs"
        " WHERE proc_name = 'policy_retention' AND hypertable_name = 'requests'"
    )
    if current != keep:
        async with conn.transaction():
            await conn.execute("SELECT remove_retention_policy('requests', if_exists => true)")
            await conn.execute("SELECT add_retention_policy('requests', drop_after => $1::interval)", keep)
        log.info("TimescaleDB retention policy on requests set to %s", keep)


async def ensure_upcoming_partitions(pool: asyncpg.Pool, partitions: Partitions) -> None:
    today = datetime.now(timezone.utc).date()
    async with pool.acquire() as conn:
        await partitions.ensure(conn, {today - timedelta(days=1), today, today + timedelta(days=1)})


async def run_forever(pool: asyncpg.Pool, settings_holder: SettingsHolder, partitions: Partitions, storage: str) -> None:
    """The maintenance loop of one server process; survives database outages."""
    next_retention = 0.0
    loop = asyncio.get_running_loop()
    while True:
        moved: int | None = None
        try:
            async with pool.acquire() as conn:
                moved = await compact(conn)
                if loop.time() >= next_retention:
                    await ensure_upcoming_partitions(pool, partitions)
                    removed = await apply_retention(conn, settings_holder, partitions, storage)
                    if removed and any(removed.values()):
                        log.info("retention removed %s", removed)
                    next_retention = loop.time() + RETENTION_EVERY
        except asyncio.CancelledError:
            raise
        except UNAVAILABLE_ERRORS as exc:
            log.warning("maintenance skipped, database unavailable: %s", exc)
        except Exception:  # keep the loop alive; the next round retries
            log.exception("maintenance round failed")
            moved = None
        await asyncio.sleep(0.05 if moved is not None and moved >= COMPACT_AGAIN_AT else COMPACT_EVERY)


@contextlib.asynccontextmanager
async def running(pool: asyncpg.Pool, settings_holder: SettingsHolder, partitions: Partitions, storage: str):
    task = asyncio.create_task(run_forever(pool, settings_holder, partitions, storage), name="malti-maintenance")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
