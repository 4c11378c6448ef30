"""Shared fixtures: a real PostgreSQL for the session, fresh databases, real server processes."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from malti_testing import (  # noqa: E402
    EmbeddedCluster,
    ServerProcess,
    config_toml,
    create_database,
    drop_database,
)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """URL of a PostgreSQL server whose databases tests may create: $DATABASE_URL, else embedded."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield external
        return
    # Not under pytest's basetemp: concurrent pytest runs rotate those folders away.
    folder = Path(tempfile.mkdtemp(prefix="malti-test-pg-"))
    cluster = EmbeddedCluster(folder / "pgdata")
    try:
        yield cluster.url
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def database_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty database (no schema: apply it with malti_server.db.migrate)."""
    url = create_database(pg_admin_url)
    yield url
    drop_database(pg_admin_url, url)


def _make_server(admin_url: str, folder: Path, workers: int = 1, env: dict | None = None,
                 database_url: str | None = None, **config) -> ServerProcess:
    config_path = folder / "malti.toml"
    config_path.write_text(config_toml(**config))
    server = ServerProcess(
        database_url=database_url or create_database(admin_url),
        config_path=config_path,
        workers=workers,
        env=env or {},
        log_path=folder / "server.log",
    )
    return server


@pytest.fixture(scope="module")
def malti_server(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A running server with the default test config (tests.malti_testing keys), shared by a module."""
    server = _make_server(pg_admin_url, tmp_path_factory.mktemp("server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        drop_database(pg_admin_url, server.database_url)


@pytest.fixture
def start_server(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServerProcess]]:
    """Factory: ``start_server(workers=2, limits={...}, users={...}, database_url=...)`` → a running server.

    Config keyword arguments go to :func:`malti_testing.config_toml`. Servers stop at teardown.
    """
    started: list[ServerProcess] = []
    created: list[str] = []

    def factory(start: bool = True, **options) -> ServerProcess:
        own_db = "database_url" not in options
        server = _make_server(pg_admin_url, tmp_path_factory.mktemp("server"), **options)
        if own_db:
            created.append(server.database_url)
        started.append(server)
        if start:
            server.start()
        return server

    yield factory
    for server in started:
        server.stop()
    for url in created:
        drop_database(pg_admin_url, url)
