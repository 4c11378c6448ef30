"""Test support: a real PostgreSQL (embedded, or $DATABASE_URL), fresh databases, and real
``malti-server`` processes on loopback ports. Used by tests/conftest.py, benchmarks and the demo test.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

SERVICE_KEYS = {
    "auth-service": "test-auth-service-key-0123456789",
    "payment-service": "test-payment-service-key-0123456789",
    "user-service": "test-user-service-key-0123456789",
}
USER_KEYS = {
    "viewer": "test-viewer-key-0123456789",  # reads every service
    "restricted": "test-restricted-key-0123456789",  # reads only auth-service
}
USER_SERVICES = {"restricted": ["auth-service"]}

# Generous limits so tests measure behaviour, not the default budgets (tests of limits set their own).
TEST_LIMITS = {
    "ingest_rate": "100000/minute",
    "metrics_rate": "100000/minute",
    "auth_test_rate": "100000/minute",
    "auth_failure_rate": "100000/minute",
}

_counter = itertools.count()


def run_sync(coro):
    """Run a coroutine to completion from sync code, even when an event loop runs in this thread."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


class EmbeddedCluster:
    """An embedded PostgreSQL in a temporary folder, stopped by :meth:`stop`."""

    def __init__(self, data_dir: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

            self._server = pgserver.get_server(str(data_dir), cleanup_mode="stop")
        self.url = self._server.get_uri()
        from malti_server.embedded import tune

        tune(self._server)

    def stop(self) -> None:
        self._server.cleanup()


async def _create_database(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def create_database(admin_url: str, prefix: str = "malti_test") -> str:
    name = f"{prefix}_{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
    run_sync(_create_database(admin_url, name))
    return with_database(admin_url, name)


def drop_database(admin_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    try:
        run_sync(_drop_database(admin_url, name))
    except Exception:  # best effort: the cluster goes away with the session anyway
        pass


def config_toml(
    services: dict[str, str] | None = None,
    users: dict[str, str] | None = None,
    user_services: dict[str, list[str]] | None = None,
    limits: dict[str, object] | None = None,
    retention: dict[str, str] | None = None,
    thresholds: dict[str, float] | None = None,
    cors_origins: list[str] | None = None,
) -> str:
    services = SERVICE_KEYS if services is None else services
    users = USER_KEYS if users is None else users
    user_services = USER_SERVICES if user_services is None else user_services
    lines = []
    for name, key in services.items():
        lines += [f"[services.{name}]", f'api_key = "{key}"', ""]
    for name, key in users.items():
        lines += [f"[users.{name}]", f'api_key = "{key}"']
        if name in user_services:
            lines.append("services = [" + ", ".join(f'"{s}"' for s in user_services[name]) + "]")
        lines.append("")
    for section, values in (("dashboard.thresholds", thresholds), ("retention", retention),
                            ("limits", {**TEST_LIMITS, **(limits or {})})):
        if values:
            lines.append(f"[{section}]")
            for k, v in values.items():
                lines.append(f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}")
            lines.append("")
    if cors_origins is not None:
        lines += ["[cors]", "allow_origins = [" + ", ".join(f'"{o}"' for o in cors_origins) + "]", ""]
    return "\n".join(lines)


@dataclass
class ServerProcess:
    """A real ``malti-server`` subprocess (uvicorn over loopback) on its own database."""

    database_url: str
    config_path: Path
    port: int = field(default_factory=free_port)
    workers: int = 1
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    service_keys: dict[str, str] = field(default_factory=lambda: dict(SERVICE_KEYS))
    user_keys: dict[str, str] = field(default_factory=lambda: dict(USER_KEYS))
    _proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> ServerProcess:
        if self._proc is not None and self._proc.poll() is None:
            return self
        if self.log_path is None:
            self.log_path = Path(tempfile.mkstemp(prefix="malti-server-", suffix=".log")[1])
        env = {**os.environ, **self.env}
        env.pop("DATABASE_URL", None)
        cmd = [
            sys.executable, "-m", "malti_server",
            "--config", str(self.config_path),
            "--database-url", self.database_url,
            "--port", str(self.port),
            "--workers", str(self.workers),
            "--log-level", "warning",
            "--no-access-log",
        ]
        log = open(self.log_path, "ab")
        self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                      start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"malti-server exited with {self._proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"malti-server did not become healthy in {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 20) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def ingest(self, records: list[dict], service: str | None = None, **kwargs) -> httpx.Response:
        """POST records with the service key of ``service`` (default: the first record's service)."""
        service = service or records[0]["service"]
        headers = {"X-API-Key": self.service_keys[service], **kwargs.pop("headers", {})}
        return httpx.post(self.url + "/api/v1/ingest", json={"requests": records}, headers=headers,
                          timeout=30, **kwargs)

    def get(self, path: str, user: str = "viewer", **params) -> httpx.Response:
        return httpx.get(self.url + path, params=params, headers={"X-API-Key": self.user_keys[user]}, timeout=30)

    def sql(self, query: str, *args):
        """Run one query on the server's database and return the rows (list of asyncpg Records)."""

        async def go():
            import asyncpg

            conn = await asyncpg.connect(self.database_url, server_settings={"timezone": "UTC"})
            try:
                return await conn.fetch(query, *args)
            finally:
                await conn.close()

        return run_sync(go())

    def compact(self) -> None:
        """Fold pending rollup rows now (the server also does it every few seconds)."""
        self.sql("SELECT malti_compact_pending()")


def record(service: str = "auth-service", **fields) -> dict:
    """A valid ingest record with sensible defaults."""
    base = {
        "service": service,
        "node": "node-1",
        "method": "GET",
        "endpoint": "/api/items/{item_id}",
        "status": 200,
        "response_time": 12.5,
        "consumer": "web-app",
        "context": None,
    }
    base.update(fields)
    return base
