"""Small helpers shared by the server tests: raw HTTP posts, unique markers, counts per view."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from malti_testing import ServerProcess, config_toml, create_database, drop_database, run_sync

INGEST = "/api/v1/ingest"


def unique(prefix: str = "/t") -> str:
    """A fresh endpoint path, so a test finds exactly its own rows in a shared database."""
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


def post_raw(server: ServerProcess, body: bytes, headers: dict[str, str], path: str = INGEST) -> httpx.Response:
    """POST bytes exactly as given (no JSON encoding by the client)."""
    return httpx.post(server.url + path, content=body, headers=headers, timeout=30)


def service_headers(server: ServerProcess, service: str = "auth-service", **extra: str) -> dict[str, str]:
    return {"X-API-Key": server.service_keys[service], "Content-Type": "application/json", **extra}


def counts(server: ServerProcess, endpoint: str) -> dict[str, int]:
    """Rows for ``endpoint`` in the raw table and record counts in both rollup views."""
    raw = server.sql("SELECT count(*) AS n FROM requests WHERE endpoint = $1", endpoint)[0]["n"]
    r5 = server.sql("SELECT coalesce(sum(n), 0) AS n FROM rollup_5min_all WHERE endpoint = $1", endpoint)[0]["n"]
    r1 = server.sql("SELECT coalesce(sum(n), 0) AS n FROM rollup_1h_all WHERE endpoint = $1", endpoint)[0]["n"]
    return {"requests": int(raw), "rollup_5min": int(r5), "rollup_1h": int(r1)}


def nothing_stored(server: ServerProcess, endpoint: str) -> bool:
    return counts(server, endpoint) == {"requests": 0, "rollup_5min": 0, "rollup_1h": 0}


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def admin_sql(admin_url: str, *statements: str) -> None:
    """Run statements on the cluster's admin database (ALTER DATABASE, pg_terminate_backend ...)."""

    async def go():
        import asyncpg

        conn = await asyncpg.connect(admin_url)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    run_sync(go())


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, interval: float = 0.1) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes; returns whether it held."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


@contextlib.contextmanager
def own_server(admin_url: str, folder: Path, **config) -> Iterator[ServerProcess]:
    """A running server with its own config and database, for module-scoped fixtures
    (``start_server`` is per test); config keywords as :func:`malti_testing.config_toml`."""
    path = folder / "malti.toml"
    path.write_text(config_toml(**config))
    server = ServerProcess(database_url=create_database(admin_url), config_path=path,
                           log_path=folder / "server.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        drop_database(admin_url, server.database_url)
