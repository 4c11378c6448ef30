"""Database access: the connection pool, schema migrations (applied once, under an advisory lock,
even when several server processes start together) and time partitions of the raw table."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import sysconfig
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import asyncpg

log = logging.getLogger("malti.db")

# Advisory lock ids (arbitrary constants, one per job that must run in one process at a time).
MIGRATION_LOCK = 0x6D616C7469_01
PARTITION_LOCK = 0x6D616C7469_02
COMPACTION_LOCK = 0x6D616C7469_03
RETENTION_LOCK = 0x6D616C7469_04

# Errors that mean "the database is not reachable right now" (answer 503, retry later).
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ObjectNotInPrerequisiteStateError,  # database not accepting connections
)


def schema_dir() -> Path:
    """The folder of numbered SQL migrations: $MALTI_SCHEMA_DIR, else the repository's schema/
    (a checkout or editable install), else <prefix>/share/malti/schema (an installed copy)."""
    env = os.environ.get("MALTI_SCHEMA_DIR")
    if env:
        return Path(env)
    beside = Path(__file__).resolve().parent.parent / "schema"
    if beside.is_dir():
        return beside
    for prefix in (sys.prefix, sys.base_prefix, sysconfig.get_path("data")):
        installed = Path(prefix) / "share" / "malti" / "schema"
        if installed.is_dir():
            return installed
    return beside


async def create_pool(url: str, *, min_size: int = 2, max_size: int = 10, timeout: float = 10) -> asyncpg.Pool:
    """A pool whose sessions work in UTC (buckets and partitions are UTC days and hours)."""
    return await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        command_timeout=60,
        # work_mem: dashboard queries hash-aggregate histogram cells; the default 4 MB spills to disk.
        server_settings={"timezone": "UTC", "application_name": "malti-server", "work_mem": "64MB"},
    )


class MigrationError(Exception):
    """A migration failed (and was rolled back): the database's schema history does not fit this
    version's ``schema/`` files, or the database refused a statement."""

    def __init__(self, name: str, error: asyncpg.PostgresError) -> None:
        super().__init__(f"migration {name} failed: {type(error).__name__}: {error}")
        self.name = name
        self.error = error


async def migrate(conn: asyncpg.Connection, directory: Path | None = None) -> list[str]:
    """Apply the migrations not applied yet, each in its own transaction; return their names."""
    directory = directory or schema_dir()
    files = sorted(p for p in directory.glob("*.sql") if p.name[:3].isdigit())
    if not files:
        raise RuntimeError(f"no migrations found in {directory}")
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for path in files:
            if path.name in done:
                continue
            try:
                async with conn.transaction():
                    await conn.execute(path.read_text(encoding="utf-8"))
                    await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", path.name)
            except asyncpg.PostgresError as exc:
                raise MigrationError(path.name, exc) from exc
            applied.append(path.name)
            log.info("applied migration %s", path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return applied


async def storage_kind(conn: asyncpg.Connection) -> str:
    """"timescaledb" when the raw table is a hypertable, else "postgresql"."""
    row = await conn.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
    return "timescaledb" if row else "postgresql"


def partition_name(day: date) -> str:
    return f"requests_p{day:%Y%m%d}"


class Partitions:
    """Daily partitions of the raw table on plain PostgreSQL (TimescaleDB makes its own chunks).

    Remembers the days known to exist, so ingest pays one set lookup per batch; a missing day is
    created under an advisory lock, safe against other processes doing the same.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._known: set[date] = set()

    async def ensure(self, conn: asyncpg.Connection, days: set[date]) -> None:
        if not self.enabled:
            return
        missing = days - self._known
        if not missing:
            return
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK)
            existing = {
                r["relname"]
                for r in await conn.fetch(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                    " WHERE i.inhparent = 'requests'::regclass"
                )
            }
            for day in sorted(missing):
                name = partition_name(day)
                if name not in existing:
                    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
                    # Identifiers come from a date, never from input text; bounds are literals of it.
                    await conn.execute(
                        f'CREATE TABLE "{name}" PARTITION OF requests FOR VALUES FROM '
                        f"('{start.isoformat()}') TO ('{(start + timedelta(days=1)).isoformat()}')"
                    )
                    log.info("created partition %s", name)
        self._known |= missing

    def forget(self, days: set[date]) -> None:
        """Stop trusting that these days exist (another process may have dropped them)."""
        self._known -= days

    async def drop_older_than(self, conn: asyncpg.Connection, cutoff: datetime) -> list[str]:
        """Drop whole days that end before ``cutoff``; returns the dropped partitions."""
        if not self.enabled:
            return []
        dropped = []
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'requests'::regclass ORDER BY 1"
        )
        for r in rows:
            name = r["relname"]
            try:
                day = datetime.strptime(name, "requests_p%Y%m%d").date()
            except ValueError:
                continue
            end = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=1)
            if end <= cutoff:
                await conn.execute(f'DROP TABLE IF EXISTS "{name}"')
                self._known.discard(day)
                dropped.append(name)
        return dropped
